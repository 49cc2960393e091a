//! `GET /drops/{id}/events`: Server-Sent Events of one drop's stock and status, a
//! transport of the core's [`Livedrop::watch_drop`](livedrop_core::service::Livedrop::watch_drop).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use livedrop_core::service::DropUpdate;
use livedrop_core::DropId;
use serde_json::json;
use uuid::Uuid;

use crate::body::StockBody;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::Path;
use crate::state::AppState;

/// The drop's stock and status as they change: first the current `stock` and
/// `status`, then a `stock` event (`{"drop_id","stock","variants","status"}`, where
/// `stock` is the sum and `variants` is `[{"sku","stock"}]`) per stock change
/// and a `status` event (`{"drop_id","status"}`) per status change; on a drop
/// behind a waiting room, a `queue` event (`{"drop_id","admitted_through"}`) when
/// the stream begins and whenever more buyers are admitted, so a waiting page knows
/// when to ask `GET /drops/{id}/queue/me` again; with keep-alive comments. Ends when the server shuts down.
#[utoipa::path(get, path = "/drops/{id}/events", tag = "drops",
    params(("id" = Uuid, Path, description = "Drop id")),
    responses(
        (status = 200, description = "text/event-stream of `stock`, `status` and `queue` events", content_type = "text/event-stream"),
        (status = 404, description = "not_found", body = ErrorBody),
    ))]
pub(crate) async fn drop_events(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let watch = state.livedrop().watch_drop(DropId(id)).await?;
    let stream = watch
        .take_until(state.shutdown_token().cancelled_owned())
        .map(|update| Ok(sse_event(update)));
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn sse_event(update: DropUpdate) -> SseEvent {
    let (name, data) = match update {
        DropUpdate::Stock {
            drop_id,
            stock,
            variants,
            status,
        } => {
            let variants: Vec<_> = variants
                .into_iter()
                .map(|(sku, stock)| json!({ "sku": sku, "stock": StockBody::from(stock) }))
                .collect();
            (
                "stock",
                json!({
                    "drop_id": drop_id,
                    "stock": StockBody::from(stock),
                    "variants": variants,
                    "status": status,
                }),
            )
        }
        DropUpdate::Status { drop_id, status } => {
            ("status", json!({ "drop_id": drop_id, "status": status }))
        }
        DropUpdate::Queue {
            drop_id,
            admitted_through,
        } => (
            "queue",
            json!({ "drop_id": drop_id, "admitted_through": admitted_through }),
        ),
    };
    SseEvent::default().event(name).data(data.to_string())
}
