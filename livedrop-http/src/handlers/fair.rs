//! Fair allocation: a buyer's draw entry, a draw's public results, and a buyer's
//! place in a waiting room.

use axum::extract::State;
use livedrop_core::service::EnterDraw;
use livedrop_core::DropId;
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::Auth;
use crate::body::{EntryBody, EntryRequest, ListBody, QueueBody, RankedEntryBody};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

/// `GET /drops/{id}/draw/entries` parameters.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RankQuery {
    /// Items per page, 1 to 100 (default 20).
    pub(crate) limit: Option<u32>,
    /// The `next_cursor` of the previous page: the last rank it held.
    pub(crate) cursor: Option<String>,
}

/// Enters the draw of a draw drop, or replaces the caller's entry (keeping its
/// token), while entries are open (`starts_at` to `entries_close_at`). No stock is
/// reserved: at `entries_close_at` the draw ranks the entries and the winners get
/// reserved orders.
#[utoipa::path(put, path = "/drops/{id}/entries/me", tag = "draws", security(("bearer" = [])),
    request_body = EntryRequest,
    params(("id" = Uuid, Path, description = "Drop id")),
    responses(
        (status = 200, description = "Entered, result pending", body = EntryBody),
        (status = 400, description = "invalid_input (quantity: 0 or above the per-user limit; or no sku on a drop of several variants)", body = ErrorBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 404, description = "not_found (drop or variant)", body = ErrorBody),
        (status = 409, description = "entries_closed, conflict (not a draw)", body = ErrorBody),
    ))]
pub(crate) async fn enter(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<Uuid>,
    Json(body): Json<EntryRequest>,
) -> ApiResult<Json<EntryBody>> {
    let entry = state
        .livedrop()
        .enter_draw(
            &actor,
            DropId(id),
            EnterDraw {
                sku: body.sku,
                quantity: body.quantity,
            },
        )
        .await?;
    Ok(Json(entry.into()))
}

/// The caller's draw entry: `pending` before the draw, then `won` (with the
/// reserved order) or `lost`, with its rank.
#[utoipa::path(get, path = "/drops/{id}/entries/me", tag = "draws", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Drop id")),
    responses(
        (status = 200, description = "The entry", body = EntryBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 404, description = "not_found (no entry)", body = ErrorBody),
    ))]
pub(crate) async fn read(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<EntryBody>> {
    let entry = state.livedrop().draw_entry(&actor, DropId(id)).await?;
    Ok(Json(entry.into()))
}

/// Withdraws the caller's entry while entries are open.
#[utoipa::path(delete, path = "/drops/{id}/entries/me", tag = "draws", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Drop id")),
    responses(
        (status = 204, description = "Withdrawn"),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 404, description = "not_found (drop, or no entry)", body = ErrorBody),
        (status = 409, description = "entries_closed", body = ErrorBody),
    ))]
pub(crate) async fn withdraw(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::http::StatusCode> {
    state.livedrop().withdraw_entry(&actor, DropId(id)).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// A drawn draw's entries in rank order (public; empty before the draw). With the
/// drop's revealed `draw.seed`, anyone can recompute the ranking: entries sort by
/// lower-case hex SHA-256 of `seed + ":" + token`, ascending.
#[utoipa::path(get, path = "/drops/{id}/draw/entries", tag = "draws", params(("id" = Uuid, Path, description = "Drop id"), RankQuery),
    responses(
        (status = 200, description = "A page in rank order; `next_cursor` is the last rank", body = ListBody<RankedEntryBody>),
        (status = 400, description = "invalid_input (limit or cursor)", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = 409, description = "conflict (not a draw)", body = ErrorBody),
    ))]
pub(crate) async fn results(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Query(query): Query<RankQuery>,
) -> ApiResult<Json<ListBody<RankedEntryBody>>> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("limit", "limit must be 1 to 100"));
    }
    let after = match query.cursor.as_deref() {
        None | Some("") => 0,
        Some(c) => c
            .parse::<u64>()
            .map_err(|_| ApiError::invalid("cursor", "cursor is not one this server issued"))?,
    };
    let entries = state
        .livedrop()
        .draw_results(DropId(id), after, limit)
        .await?;
    let next_cursor = if entries.len() == limit as usize {
        entries.last().and_then(|e| e.rank).map(|r| r.to_string())
    } else {
        None
    };
    Ok(Json(ListBody {
        items: entries.into_iter().map(RankedEntryBody::from).collect(),
        next_cursor,
    }))
}

/// Joins the drop's waiting room (joining twice keeps the place). Everyone who
/// joined before `starts_at` is shuffled at the start; later arrivals queue behind.
/// Buyers are admitted at the room's rate; an admitted buyer's `admission_token`
/// goes in the `Admission-Token` header of `POST /orders`.
#[utoipa::path(post, path = "/drops/{id}/queue", tag = "waiting rooms", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Drop id")),
    responses(
        (status = 200, description = "In the queue, with position and wait, or admitted with a token", body = QueueBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = 409, description = "conflict (no waiting room, or not open yet), drop_not_live (ended or cancelled)", body = ErrorBody),
    ))]
pub(crate) async fn join_queue(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<QueueBody>> {
    let status = state.livedrop().join_queue(&actor, DropId(id)).await?;
    Ok(Json(status.into()))
}

/// The caller's place in the drop's waiting room, and the admission token once
/// admitted.
#[utoipa::path(get, path = "/drops/{id}/queue/me", tag = "waiting rooms", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Drop id")),
    responses(
        (status = 200, description = "The place, or the admission", body = QueueBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
        (status = 404, description = "not_found (not in the queue)", body = ErrorBody),
    ))]
pub(crate) async fn queue_me(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<QueueBody>> {
    let status = state.livedrop().queue_status(&actor, DropId(id)).await?;
    Ok(Json(status.into()))
}
