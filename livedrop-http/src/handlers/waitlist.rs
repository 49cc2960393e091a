//! A buyer's place on a drop's waitlist: join (or change), read, leave.

use axum::extract::State;
use axum::http::StatusCode;
use livedrop_core::service::JoinWaitlist;
use livedrop_core::DropId;
use uuid::Uuid;

use crate::auth::Auth;
use crate::body::{WaitlistBody, WaitlistRequest};
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Json, Path};
use crate::state::AppState;

/// Waits for units of a sold-out variant of a live first-come drop. Units that come
/// back (a cancel, an expired hold, a restock) go to those waiting in join order,
/// each as a reserved order with a `waitlist_offer` notification naming it. Joining
/// again with the same sku replaces the quantity and keeps the place; another sku
/// takes a place at the end of that variant's line.
#[utoipa::path(put, path = "/drops/{id}/waitlist/me", tag = "drops", security(("bearer" = [])),
    request_body = WaitlistRequest,
    params(("id" = Uuid, Path, description = "Drop id")),
    responses(
        (status = 200, description = "Waiting, with the place in the variant's line", body = WaitlistBody),
        (status = 400, description = "invalid_input (quantity, a malformed sku, or none on a drop of several variants)", body = ErrorBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 404, description = "not_found (drop or variant)", body = ErrorBody),
        (status = 409, description = "variant_available (order it instead), drop_not_live, per_user_limit_exceeded", body = ErrorBody),
    ))]
pub(crate) async fn join(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<Uuid>,
    Json(body): Json<WaitlistRequest>,
) -> ApiResult<Json<WaitlistBody>> {
    let entry = state
        .livedrop()
        .join_waitlist(
            &actor,
            DropId(id),
            JoinWaitlist {
                sku: body.sku,
                quantity: body.quantity,
            },
        )
        .await?;
    Ok(Json(entry.into()))
}

/// The caller's place on the drop's waitlist.
#[utoipa::path(get, path = "/drops/{id}/waitlist/me", tag = "drops", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Drop id")),
    responses(
        (status = 200, description = "Waiting, with the current place", body = WaitlistBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 404, description = "not_found (not waiting: never joined, left, or served)", body = ErrorBody),
    ))]
pub(crate) async fn read(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<WaitlistBody>> {
    let entry = state.livedrop().waitlist_entry(&actor, DropId(id)).await?;
    Ok(Json(entry.into()))
}

/// Leaves the drop's waitlist.
#[utoipa::path(delete, path = "/drops/{id}/waitlist/me", tag = "drops", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Drop id")),
    responses(
        (status = 204, description = "No longer waiting"),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 404, description = "not_found (not waiting)", body = ErrorBody),
    ))]
pub(crate) async fn leave(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    state.livedrop().leave_waitlist(&actor, DropId(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
