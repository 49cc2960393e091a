//! Watching one drop: its stock and status as they change, for live views (the
//! reference server's Server-Sent Events, or an embedder's own). A projection of
//! [`Livedrop::live_events`] over one drop's authoritative snapshot.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tokio::sync::broadcast;

use super::Livedrop;
use crate::error::{Error, Result};
use crate::event::{Event, EventPayload};
use crate::id::DropId;
use crate::model::{Drop, DropStatus, DropView, Stock};

/// How often a watch re-evaluates a status that changes with the clock alone
/// (a scheduled drop going live, a live one ending).
const STATUS_TICK: Duration = Duration::from_secs(1);

/// What a watcher of one drop sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropUpdate {
    /// The drop's stock, first as it was when the watch began, then after each change,
    /// with the drop's status at that instant.
    Stock {
        /// The drop.
        drop_id: DropId,
        /// Its stock: the sum of its variants'.
        stock: Stock,
        /// Each variant's sku and stock, in `Drop::variants` order.
        variants: Vec<(String, Stock)>,
        /// Its status with that stock, now.
        status: DropStatus,
    },
    /// The drop's status, first as it was when the watch began, then after each change
    /// (by an event, or by the clock alone).
    Status {
        /// The drop.
        drop_id: DropId,
        /// Its new status.
        status: DropStatus,
    },
}

/// The updates of one drop, from [`Livedrop::watch_drop`]. Never ends on its own
/// while the process's live feed runs: the consumer stops it by dropping it.
pub struct DropWatch {
    updates: BoxStream<'static, DropUpdate>,
}

impl std::fmt::Debug for DropWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DropWatch").finish_non_exhaustive()
    }
}

impl Stream for DropWatch {
    type Item = DropUpdate;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<DropUpdate>> {
        self.updates.poll_next_unpin(cx)
    }
}

impl Livedrop {
    /// Watches drop `id`: first its current stock and status (read from the store,
    /// not the cache), then a [`DropUpdate::Stock`] per stock change and a
    /// [`DropUpdate::Status`] per status change. Fed by the live feed of
    /// [`Livedrop::spawn_background`]; a watcher that falls behind re-reads the drop
    /// instead of losing changes. `not_found` when there is no such drop.
    pub async fn watch_drop(&self, id: DropId) -> Result<DropWatch> {
        // Subscribe before reading the snapshot so no change falls in between.
        let rx = self.live_events();
        let view = self.authoritative_view(id).await?;
        let watcher = Watcher::new(self.clone(), rx, view);
        let updates = futures::stream::unfold(watcher, |mut watcher| async move {
            watcher.next().await.map(|update| (update, watcher))
        });
        Ok(DropWatch {
            updates: updates.boxed(),
        })
    }

    async fn authoritative_view(&self, id: DropId) -> Result<DropView> {
        self.ports()
            .drops
            .drop_view(id)
            .await?
            .ok_or_else(|| Error::not_found("drop"))
    }
}

/// The state of one watch: the drop as last seen and the updates not yet taken.
struct Watcher {
    livedrop: Livedrop,
    rx: broadcast::Receiver<Event>,
    drop: Drop,
    /// Each variant's stock, in `drop.variants` order.
    variant_stock: Vec<Stock>,
    /// Per variant, the stock version of the last `stock.changed` applied; older ones
    /// are dropped.
    stock_versions: Vec<i64>,
    /// The status last reported.
    status: DropStatus,
    pending: VecDeque<DropUpdate>,
    tick: tokio::time::Interval,
}

impl Watcher {
    fn new(livedrop: Livedrop, rx: broadcast::Receiver<Event>, view: DropView) -> Self {
        let status = view.status_at(livedrop.now());
        let mut tick = tokio::time::interval(STATUS_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stock_versions = vec![0; view.variant_stock.len()];
        let mut watcher = Self {
            livedrop,
            rx,
            drop: view.drop,
            variant_stock: view.variant_stock,
            stock_versions,
            status,
            pending: VecDeque::new(),
            tick,
        };
        watcher.push_stock();
        watcher.push_status();
        watcher
    }

    fn stock(&self) -> Stock {
        Stock::sum(&self.variant_stock)
    }

    fn push_stock(&mut self) {
        let stock = self.stock();
        let variants = self
            .drop
            .variants
            .iter()
            .zip(&self.variant_stock)
            .map(|(v, s)| (v.sku.clone(), *s))
            .collect();
        self.pending.push_back(DropUpdate::Stock {
            drop_id: self.drop.id,
            stock,
            variants,
            status: self.drop.status_at(self.livedrop.now(), &stock),
        });
    }

    fn push_status(&mut self) {
        self.pending.push_back(DropUpdate::Status {
            drop_id: self.drop.id,
            status: self.status,
        });
    }

    /// Reports the status if the status at this instant differs from the last reported.
    fn refresh_status(&mut self) {
        let status = self.drop.status_at(self.livedrop.now(), &self.stock());
        if status != self.status {
            self.status = status;
            self.push_status();
        }
    }

    /// Applies one event of the live feed. Returns whether the drop must be re-read:
    /// an event of this drop whose payload cannot be read.
    fn apply(&mut self, event: &Event) -> bool {
        // The cheap filter first: most of the feed concerns other drops.
        if event.drop_id() != Some(self.drop.id.0) {
            return false;
        }
        let payload = match event.decode() {
            Ok(payload) => payload,
            Err(e) => {
                tracing::debug!(drop = %self.drop.id, event = %event.id, error = %e, "unreadable event; resyncing");
                return true;
            }
        };
        match payload {
            EventPayload::StockChanged(moved) | EventPayload::DropSoldOut(moved) => {
                let Some(i) = self.drop.variants.iter().position(|v| v.sku == moved.sku) else {
                    return true;
                };
                let (Some(stock), Some(version)) = (
                    self.variant_stock.get_mut(i),
                    self.stock_versions.get_mut(i),
                ) else {
                    return true;
                };
                if event.version < *version || moved.stock == *stock {
                    return false;
                }
                *version = event.version;
                *stock = moved.stock;
                self.push_stock();
                self.refresh_status();
            }
            EventPayload::DropScheduled(drop)
            | EventPayload::DropStarted(drop)
            | EventPayload::DropEnded(drop)
            | EventPayload::DropCancelled(drop) => {
                self.drop = drop;
                self.refresh_status();
            }
            // The stock an order or a hand-off moves arrives as its `stock.changed`;
            // an extension moves none.
            EventPayload::WaitlistOffered(_)
            | EventPayload::WaitlistSkipped(_)
            | EventPayload::WaitlistClosed(_)
            | EventPayload::OrderPlaced(_)
            | EventPayload::OrderConfirmed(_)
            | EventPayload::OrderCancelled(_)
            | EventPayload::OrderExpired(_)
            | EventPayload::OrderExtended(_) => {}
            // Not of a drop: filtered out above.
            EventPayload::ProductCreated(_)
            | EventPayload::ProductUpdated(_)
            | EventPayload::UserFollowed(_) => {}
        }
        false
    }

    /// Re-reads the drop after missed events.
    async fn resync(&mut self) {
        match self.livedrop.authoritative_view(self.drop.id).await {
            Ok(view) => {
                self.drop = view.drop;
                if view.variant_stock != self.variant_stock {
                    self.stock_versions = vec![0; view.variant_stock.len()];
                    self.variant_stock = view.variant_stock;
                    self.push_stock();
                }
                self.refresh_status();
            }
            Err(e) => {
                tracing::warn!(drop = %self.drop.id, code = e.code(), "live view resync failed")
            }
        }
    }

    /// The next update; `None` once the live feed is closed.
    async fn next(&mut self) -> Option<DropUpdate> {
        loop {
            if let Some(update) = self.pending.pop_front() {
                return Some(update);
            }
            tokio::select! {
                received = self.rx.recv() => match received {
                    Ok(event) => {
                        if self.apply(&event) {
                            self.resync().await;
                        }
                    }
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
