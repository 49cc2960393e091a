//! Products and drops.

use axum::extract::State;
use axum::http::StatusCode;
use livedrop_core::model::{DropFilter, DropStatus, ProductFilter};
use livedrop_core::service::{NewDrop, NewProduct, NewVariant, ProductPatch};
use livedrop_core::{DropId, ProductId, UserId};
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::Auth;
use crate::body::{
    DropBody, ListBody, NewDropRequest, NewProductRequest, ProductBody, ProductPatchRequest,
};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{page_request, Json, Path, Query};
use crate::state::AppState;

/// `GET /products` parameters.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ProductQuery {
    /// Only this creator's products.
    pub(crate) creator_id: Option<Uuid>,
    /// Search terms; each must occur in the title or description (case-insensitive).
    pub(crate) q: Option<String>,
    /// Items per page, 1 to 100 (default 20).
    pub(crate) limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub(crate) cursor: Option<String>,
}

/// `GET /drops` parameters.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DropQuery {
    /// Only drops with this status now: `scheduled`, `live`, `sold_out`, `ended`, `cancelled`.
    #[param(value_type = Option<String>)]
    pub(crate) status: Option<DropStatus>,
    /// Only this creator's drops.
    pub(crate) creator_id: Option<Uuid>,
    /// Items per page, 1 to 100 (default 20).
    pub(crate) limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub(crate) cursor: Option<String>,
}

/// Creates a product owned by the caller (a creator).
#[utoipa::path(post, path = "/products", tag = "catalog", security(("bearer" = [])),
    request_body = NewProductRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Optional; replays the first response")),
    responses(
        (status = 201, description = "Created", body = ProductBody),
        (status = 400, description = "invalid_input", body = ErrorBody),
        (status = 403, description = "forbidden (customers)", body = ErrorBody),
    ))]
pub(crate) async fn create_product(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Json(body): Json<NewProductRequest>,
) -> ApiResult<(StatusCode, Json<ProductBody>)> {
    let product = state
        .livedrop()
        .create_product(
            &actor,
            NewProduct {
                title: body.title,
                description: body.description,
                price_cents: body.price_cents,
                currency: body.currency,
                image_url: body.image_url,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(product.into())))
}

/// Lists or searches products, newest first.
#[utoipa::path(get, path = "/products", tag = "catalog", params(ProductQuery),
    responses(
        (status = 200, description = "A page", body = ListBody<ProductBody>),
        (status = 400, description = "invalid_input", body = ErrorBody),
    ))]
pub(crate) async fn list_products(
    State(state): State<AppState>,
    Query(query): Query<ProductQuery>,
) -> ApiResult<Json<ListBody<ProductBody>>> {
    let page = page_request(query.limit, query.cursor.as_deref())?;
    let mut filter = ProductFilter {
        creator_id: query.creator_id.map(UserId),
        ..ProductFilter::default()
    };
    if let Some(q) = &query.q {
        filter = filter.with_query(q);
    }
    let page = state.livedrop().list_products(filter, page).await?;
    Ok(Json(ListBody::from_page(page, ProductBody::from)))
}

/// A product.
#[utoipa::path(get, path = "/products/{id}", tag = "catalog",
    params(("id" = Uuid, Path, description = "Product id")),
    responses(
        (status = 200, description = "The product", body = ProductBody),
        (status = 404, description = "not_found", body = ErrorBody),
    ))]
pub(crate) async fn get_product(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<ProductBody>> {
    let product = state.livedrop().product(ProductId(id)).await?;
    Ok(Json(product.into()))
}

/// Changes a product (its creator or an admin).
#[utoipa::path(patch, path = "/products/{id}", tag = "catalog", security(("bearer" = [])),
    request_body = ProductPatchRequest,
    params(("id" = Uuid, Path, description = "Product id")),
    responses(
        (status = 200, description = "The updated product", body = ProductBody),
        (status = 403, description = "forbidden", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = 409, description = "version_conflict", body = ErrorBody),
    ))]
pub(crate) async fn patch_product(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<Uuid>,
    Json(body): Json<ProductPatchRequest>,
) -> ApiResult<Json<ProductBody>> {
    let product = state
        .livedrop()
        .update_product(
            &actor,
            ProductId(id),
            ProductPatch {
                title: body.title,
                description: body.description,
                price_cents: body.price_cents,
                currency: body.currency,
                image_url: body.image_url,
                expected_version: body.expected_version,
            },
        )
        .await?;
    Ok(Json(product.into()))
}

/// Schedules a drop of one of the caller's products: either `total_stock` units of
/// one variant (sku `default`), or `variants`, each with its own stock.
#[utoipa::path(post, path = "/drops", tag = "drops", security(("bearer" = [])),
    request_body = NewDropRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Optional; replays the first response")),
    responses(
        (status = 201, description = "Scheduled (live at once when starts_at is omitted)", body = DropBody),
        (status = 400, description = "invalid_input (both or neither of total_stock and variants, 0 or more than 100 variants, a malformed or repeated sku, a draw without entries_close_at in (starts_at, ends_at), entries_close_at on a first-come drop, a waiting room on a draw or out of bounds)", body = ErrorBody),
        (status = 403, description = "forbidden", body = ErrorBody),
        (status = 404, description = "not_found (product)", body = ErrorBody),
    ))]
pub(crate) async fn create_drop(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Json(body): Json<NewDropRequest>,
) -> ApiResult<(StatusCode, Json<DropBody>)> {
    // The body's shape (which of the two stock forms) is the transport's to check;
    // the core validates what the forms hold.
    let variants = match (body.total_stock, body.variants) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "variants",
                "give either total_stock or variants, not both",
            ))
        }
        (_, Some(variants)) if variants.is_empty() => {
            return Err(ApiError::invalid(
                "variants",
                "a drop has 1 to 100 variants",
            ))
        }
        (_, variants) => variants.unwrap_or_default(),
    };
    let livedrop = state.livedrop();
    let view = livedrop
        .schedule_drop(
            &actor,
            NewDrop {
                product_id: ProductId(body.product_id),
                starts_at: body.starts_at,
                ends_at: body.ends_at,
                total_stock: body.total_stock.unwrap_or(0),
                variants: variants
                    .into_iter()
                    .map(|v| NewVariant {
                        sku: v.sku,
                        label: v.label,
                        total_stock: v.total_stock,
                    })
                    .collect(),
                per_user_limit: body.per_user_limit,
                allocation: body.allocation.unwrap_or_default(),
                entries_close_at: body.entries_close_at,
                waiting_room: body.waiting_room.map(Into::into),
            },
        )
        .await?;
    let now = livedrop.now();
    let body = DropBody::at(view, now).counted(livedrop).await?;
    Ok((StatusCode::CREATED, Json(body)))
}

/// Lists drops, newest first.
#[utoipa::path(get, path = "/drops", tag = "drops", params(DropQuery),
    responses(
        (status = 200, description = "A page", body = ListBody<DropBody>),
        (status = 400, description = "invalid_input (e.g. an unknown status)", body = ErrorBody),
    ))]
pub(crate) async fn list_drops(
    State(state): State<AppState>,
    Query(query): Query<DropQuery>,
) -> ApiResult<Json<ListBody<DropBody>>> {
    let page = page_request(query.limit, query.cursor.as_deref())?;
    let filter = DropFilter {
        status: query.status,
        creator_id: query.creator_id.map(UserId),
    };
    let livedrop = state.livedrop();
    let page = livedrop.list_drops(filter, page).await?;
    let now = livedrop.now();
    let mut list = ListBody::from_page(page, |v| DropBody::at(v, now));
    for item in &mut list.items {
        *item = item.clone().counted(livedrop).await?;
    }
    Ok(Json(list))
}

/// A drop with its live stock.
#[utoipa::path(get, path = "/drops/{id}", tag = "drops",
    params(("id" = Uuid, Path, description = "Drop id")),
    responses(
        (status = 200, description = "The drop", body = DropBody),
        (status = 404, description = "not_found", body = ErrorBody),
    ))]
pub(crate) async fn get_drop(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<DropBody>> {
    let livedrop = state.livedrop();
    let view = livedrop.drop_view(DropId(id)).await?;
    let now = livedrop.now();
    Ok(Json(DropBody::at(view, now).counted(livedrop).await?))
}

/// Cancels a drop (its creator or an admin); cancelling again changes nothing.
#[utoipa::path(post, path = "/drops/{id}/cancel", tag = "drops", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Drop id")),
    responses(
        (status = 200, description = "The cancelled drop", body = DropBody),
        (status = 403, description = "forbidden", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = 409, description = "conflict (ended)", body = ErrorBody),
    ))]
pub(crate) async fn cancel_drop(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<DropBody>> {
    let livedrop = state.livedrop();
    let view = livedrop.cancel_drop(&actor, DropId(id)).await?;
    let now = livedrop.now();
    Ok(Json(DropBody::at(view, now).counted(livedrop).await?))
}
