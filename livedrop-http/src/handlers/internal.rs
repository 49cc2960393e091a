//! The internal API (guarded by the internal token): stock adjustments, the stock
//! ledger, manual cache invalidation.

use axum::extract::State;
use livedrop_core::service::StockAdjustment;
use livedrop_core::DropId;
use uuid::Uuid;

use crate::body::{AdjustRequest, InvalidateRequest, InvalidatedBody, LedgerEntryBody, ListBody};
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Json, PageParams, Path, Query};
use crate::state::AppState;

/// Restocks (positive delta) or shrinks (negative delta) a variant of a drop, with a
/// reason (`sku` required when the drop has several). A restock serves the variant's
/// waitlist first.
#[utoipa::path(post, path = "/internal/inventory/{drop_id}/adjust", tag = "internal",
    security(("internal" = [])), request_body = AdjustRequest,
    params(("drop_id" = Uuid, Path, description = "Drop id")),
    responses(
        (status = 200, description = "The ledger entry written", body = LedgerEntryBody),
        (status = 401, description = "unauthenticated (token missing or wrong)", body = ErrorBody),
        (status = 403, description = "forbidden (internal API disabled)", body = ErrorBody),
        (status = 400, description = "invalid_input (no sku on a drop of several variants, a bad delta or reason)", body = ErrorBody),
        (status = 404, description = "not_found (drop or variant)", body = ErrorBody),
        (status = 409, description = "insufficient_stock", body = ErrorBody),
    ))]
pub(crate) async fn adjust(
    State(state): State<AppState>,
    Path(drop_id): Path<Uuid>,
    Json(body): Json<AdjustRequest>,
) -> ApiResult<Json<LedgerEntryBody>> {
    let entry = state
        .livedrop()
        .adjust_stock(
            None,
            DropId(drop_id),
            StockAdjustment {
                delta: body.delta,
                reason: body.reason,
                sku: body.sku,
            },
        )
        .await?;
    Ok(Json(entry.into()))
}

/// The drop's ledger of stock movements, newest first.
#[utoipa::path(get, path = "/internal/inventory/{drop_id}/ledger", tag = "internal",
    security(("internal" = [])),
    params(("drop_id" = Uuid, Path, description = "Drop id"), PageParams),
    responses(
        (status = 200, description = "A page", body = ListBody<LedgerEntryBody>),
        (status = 404, description = "not_found", body = ErrorBody),
    ))]
pub(crate) async fn ledger(
    State(state): State<AppState>,
    Path(drop_id): Path<Uuid>,
    Query(params): Query<PageParams>,
) -> ApiResult<Json<ListBody<LedgerEntryBody>>> {
    let page = state
        .livedrop()
        .ledger(None, DropId(drop_id), params.page()?)
        .await?;
    Ok(Json(ListBody::from_page(page, LedgerEntryBody::from)))
}

/// Removes cached entries by key and by prefix.
#[utoipa::path(post, path = "/internal/cache/invalidate", tag = "internal",
    security(("internal" = [])), request_body = InvalidateRequest,
    responses((status = 200, description = "How many entries were removed", body = InvalidatedBody)))]
pub(crate) async fn invalidate(
    State(state): State<AppState>,
    Json(body): Json<InvalidateRequest>,
) -> ApiResult<Json<InvalidatedBody>> {
    if body.keys.len() + body.prefixes.len() > 1000 {
        return Err(crate::error::ApiError::invalid(
            "keys",
            "at most 1000 keys and prefixes per request",
        ));
    }
    if body.prefixes.iter().any(String::is_empty) {
        return Err(crate::error::ApiError::invalid(
            "prefixes",
            "a prefix must not be empty",
        ));
    }
    let removed = state
        .livedrop()
        .invalidate_cache(&body.keys, &body.prefixes)
        .await;
    Ok(Json(InvalidatedBody { removed }))
}
