//! Orders: place (idempotent, rate limited), read, confirm, cancel.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use livedrop_core::service::PlaceOrder;
use livedrop_core::{DropId, OrderId};
use uuid::Uuid;

use crate::auth::Auth;
use crate::body::{ListBody, NewOrderRequest, OrderBody};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, PageParams, Path, Query};
use crate::state::AppState;

/// The client's address, when the server was started with connection info.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientIp(pub(crate) Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// The `Idempotency-Key` header.
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The header carrying a waiting room's admission token on `POST /orders`.
pub(crate) const ADMISSION_TOKEN: &str = "admission-token";

/// Places an order, reserving stock for the hold period.
#[utoipa::path(post, path = "/orders", tag = "orders", security(("bearer" = [])),
    request_body = NewOrderRequest,
    params(
        ("Idempotency-Key" = String, Header, description = "Required; scoped to the user, kept 24 h"),
        ("Admission-Token" = Option<String>, Header, description = "Required on a drop behind a waiting room: the `admission_token` of `POST /drops/{id}/queue` for this buyer and drop"),
    ),
    responses(
        (status = 201, description = "Reserved (a retry with the same key replays this)", body = OrderBody),
        (status = 400, description = "idempotency_key_missing, invalid_input (a malformed sku, or none on a drop of several variants)", body = ErrorBody),
        (status = 403, description = "admission_required (a waiting-room drop, without a valid Admission-Token for this buyer and drop)", body = ErrorBody),
        (status = 404, description = "not_found (drop, or variant: an sku the drop does not sell)", body = ErrorBody),
        (status = 409, description = "out_of_stock, drop_not_live, drop_is_draw (enter its draw instead), per_user_limit_exceeded, idempotency_key_in_flight", body = ErrorBody),
        (status = 422, description = "idempotency_key_reused", body = ErrorBody),
        (status = 429, description = "rate_limited (see Retry-After)", body = ErrorBody),
    ))]
pub(crate) async fn place_order(
    State(state): State<AppState>,
    Auth(actor): Auth,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Json(body): Json<NewOrderRequest>,
) -> ApiResult<(StatusCode, Json<OrderBody>)> {
    state.limits().check(actor.id, ip)?;
    let key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::invalid(
                "Idempotency-Key",
                "Idempotency-Key must be visible ASCII characters",
            )
        })?),
    };
    let admission_token = match headers.get(ADMISSION_TOKEN) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    ApiError::invalid(
                        "Admission-Token",
                        "Admission-Token must be visible ASCII characters",
                    )
                })?
                .to_owned(),
        ),
    };
    let request = PlaceOrder {
        drop_id: DropId(body.drop_id),
        quantity: body.quantity,
        sku: body.sku,
        admission_token,
    };
    // Counted per answer: an idempotent replay counts again (the core does not say
    // whether a result was replayed).
    match state.livedrop().place_order(&actor, key, request).await {
        Ok(order) => {
            metrics::counter!("livedrop_orders_placed_total").increment(1);
            Ok((StatusCode::CREATED, Json(order.into())))
        }
        Err(e) => {
            metrics::counter!("livedrop_orders_rejected_total", "code" => e.code()).increment(1);
            Err(e.into())
        }
    }
}

/// The caller's orders, newest first.
#[utoipa::path(get, path = "/orders", tag = "orders", security(("bearer" = [])), params(PageParams),
    responses((status = 200, description = "A page", body = ListBody<OrderBody>)))]
pub(crate) async fn my_orders(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Query(params): Query<PageParams>,
) -> ApiResult<Json<ListBody<OrderBody>>> {
    let page = state.livedrop().my_orders(&actor, params.page()?).await?;
    Ok(Json(ListBody::from_page(page, OrderBody::from)))
}

/// One of the caller's orders (others' orders are 404).
#[utoipa::path(get, path = "/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Order id")),
    responses(
        (status = 200, description = "The order", body = OrderBody),
        (status = 404, description = "not_found", body = ErrorBody),
    ))]
pub(crate) async fn get_order(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<OrderBody>> {
    let order = state.livedrop().order(&actor, OrderId(id)).await?;
    Ok(Json(order.into()))
}

/// Confirms a reserved order (payment done).
#[utoipa::path(post, path = "/orders/{id}/confirm", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Order id")),
    responses(
        (status = 200, description = "Confirmed", body = OrderBody),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = 409, description = "order_not_reserved, hold_expired", body = ErrorBody),
    ))]
pub(crate) async fn confirm_order(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<OrderBody>> {
    let order = state.livedrop().confirm_order(&actor, OrderId(id)).await?;
    metrics::counter!("livedrop_orders_settled_total", "action" => "confirm").increment(1);
    Ok(Json(order.into()))
}

/// Cancels a reserved order; its units return to the variant (to its first waiting
/// buyers, if any, as a reserved order each).
#[utoipa::path(post, path = "/orders/{id}/cancel", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Order id")),
    responses(
        (status = 200, description = "Cancelled", body = OrderBody),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = 409, description = "order_not_reserved", body = ErrorBody),
    ))]
pub(crate) async fn cancel_order(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<OrderBody>> {
    let order = state.livedrop().cancel_order(&actor, OrderId(id)).await?;
    metrics::counter!("livedrop_orders_settled_total", "action" => "cancel").increment(1);
    Ok(Json(order.into()))
}

/// Extends a reserved order's hold by the hold period, once per order (a checkout
/// that leaves for a payment page and comes back).
#[utoipa::path(post, path = "/orders/{id}/extend", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Order id")),
    responses(
        (status = 200, description = "Extended: `reserved_until` moved by the hold period, `extended_at` set", body = OrderBody),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = 409, description = "order_not_reserved, hold_expired, already_extended", body = ErrorBody),
    ))]
pub(crate) async fn extend_order(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<OrderBody>> {
    let order = state.livedrop().extend_order(&actor, OrderId(id)).await?;
    metrics::counter!("livedrop_orders_extended_total").increment(1);
    Ok(Json(order.into()))
}
