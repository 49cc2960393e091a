//! `GET /drops/{id}/events`: Server-Sent Events of one drop's stock and status.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use livedrop_core::event::{Event, EventType, StockPayload};
use livedrop_core::model::{Drop, DropStatus, DropView, Stock};
use livedrop_core::ports::Clock;
use livedrop_core::service::Livedrop;
use livedrop_core::DropId;
use serde_json::json;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::body::StockBody;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::Path;
use crate::state::AppState;

/// How often the stream re-evaluates a status that changes with the clock alone.
const STATUS_TICK: Duration = Duration::from_secs(1);

/// The drop's stock and status as they change: first the current `stock` and
/// `status`, then a `stock` event (`{"drop_id","stock","status"}`) per stock change
/// and a `status` event (`{"drop_id","status"}`) per status change, with keep-alive
/// comments. Ends when the server shuts down.
#[utoipa::path(get, path = "/drops/{id}/events", tag = "drops",
    params(("id" = Uuid, Path, description = "Drop id")),
    responses(
        (status = 200, description = "text/event-stream of `stock` and `status` events", content_type = "text/event-stream"),
        (status = 404, description = "not_found", body = ErrorBody),
    ))]
pub async fn drop_events(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let drop_id = DropId(id);
    let livedrop = state.livedrop().clone();
    // Subscribe before reading the snapshot so no change falls in between.
    let rx = livedrop.live_events();
    let view = authoritative_view(&livedrop, drop_id).await?;
    let feed = Feed::new(livedrop, rx, view, state.shutdown_token());
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        feed.next().await.map(|event| (Ok(event), feed))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn authoritative_view(livedrop: &Livedrop, id: DropId) -> Result<DropView, ApiError> {
    livedrop
        .ports()
        .drops
        .drop_view(id)
        .await
        .map_err(livedrop_core::Error::from)?
        .ok_or_else(|| livedrop_core::Error::not_found("drop").into())
}

struct Feed {
    livedrop: Livedrop,
    clock: Arc<dyn Clock>,
    rx: broadcast::Receiver<Event>,
    drop: Drop,
    stock: Stock,
    /// The stock version of the last `stock.changed` applied; older ones are dropped.
    stock_version: i64,
    /// The status last sent in a `status` event.
    status: DropStatus,
    pending: VecDeque<SseEvent>,
    shutdown: CancellationToken,
    tick: tokio::time::Interval,
}

impl Feed {
    fn new(
        livedrop: Livedrop,
        rx: broadcast::Receiver<Event>,
        view: DropView,
        shutdown: CancellationToken,
    ) -> Self {
        let clock = livedrop.ports().clock.clone();
        let status = view.status_at(clock.now());
        let mut tick = tokio::time::interval(STATUS_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut feed = Self {
            livedrop,
            clock,
            rx,
            drop: view.drop,
            stock: view.stock,
            stock_version: 0,
            status,
            pending: VecDeque::new(),
            shutdown,
            tick,
        };
        feed.push_stock();
        feed.push_status();
        feed
    }

    fn push_stock(&mut self) {
        let data = json!({
            "drop_id": self.drop.id,
            "stock": StockBody::from(self.stock),
            "status": self.drop.status_at(self.clock.now(), &self.stock),
        });
        self.pending
            .push_back(SseEvent::default().event("stock").data(data.to_string()));
    }

    fn push_status(&mut self) {
        let data = json!({ "drop_id": self.drop.id, "status": self.status });
        self.pending
            .push_back(SseEvent::default().event("status").data(data.to_string()));
    }

    /// Emits a `status` event if the status at this instant differs from the last sent.
    fn refresh_status(&mut self) {
        let now = self.clock.now();
        let status = self.drop.status_at(now, &self.stock);
        if status != self.status {
            self.status = status;
            self.push_status();
        }
    }

    fn apply(&mut self, event: &Event) {
        if event.drop_id() != Some(self.drop.id.0) {
            return;
        }
        match event.kind {
            EventType::StockChanged | EventType::DropSoldOut => {
                let Ok(payload) = serde_json::from_value::<StockPayload>(event.payload.clone())
                else {
                    return;
                };
                if event.version < self.stock_version || payload.stock == self.stock {
                    return;
                }
                self.stock_version = event.version;
                self.stock = payload.stock;
                self.push_stock();
                self.refresh_status();
            }
            EventType::DropScheduled
            | EventType::DropStarted
            | EventType::DropEnded
            | EventType::DropCancelled => {
                if let Ok(drop) = serde_json::from_value::<Drop>(event.payload.clone()) {
                    self.drop = drop;
                }
                self.refresh_status();
            }
            _ => {}
        }
    }

    async fn resync(&mut self) {
        match authoritative_view(&self.livedrop, self.drop.id).await {
            Ok(view) => {
                self.drop = view.drop;
                if view.stock != self.stock {
                    self.stock = view.stock;
                    self.push_stock();
                }
                self.refresh_status();
            }
            Err(e) => {
                tracing::warn!(drop = %self.drop.id, code = e.code(), "live view resync failed")
            }
        }
    }

    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                received = self.rx.recv() => match received {
                    Ok(event) => self.apply(&event),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(drop = %self.drop.id, missed, "live view lagged; resyncing");
                        self.resync().await;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.tick.tick() => self.refresh_status(),
            }
        }
    }
}
