//! Work that runs without any request: the drop scheduler, the hold sweeper, the
//! outbox relay and the event consumers (cache invalidation, notifications, live feed).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Livedrop;
use crate::error::{Result, StoreResult};
use crate::event::{DrawPayload, Event, EventPayload, StockPayload, WaitlistPayload};
use crate::id::{DropId, NotificationId, UserId};
use crate::model::{Drop, FanOutBatch, FanOutShard, Notification, NotificationKind, Order};
use crate::ports::{EventBus, Outbox, Subscription};

/// Consumer group that keeps caches and the admission gate fresh.
pub const CACHE_GROUP: &str = "livedrop-cache";
/// Consumer group that writes notifications.
pub const NOTIFY_GROUP: &str = "livedrop-notify";

/// Handles to the background tasks; [`Background::shutdown`] stops them cleanly.
pub struct Background {
    token: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    /// The token that stops every task when cancelled.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Stops every task at once, wherever it is, without letting it finish its step:
    /// what a killed process does. Nothing is committed or released on the way out.
    pub fn abort(self) {
        for task in self.tasks {
            task.abort();
        }
    }

    /// Stops every task and waits for them (each finishes its current step).
    pub async fn shutdown(self) {
        self.token.cancel();
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "background task ended abnormally");
            }
        }
    }
}

/// Publishes outbox events through the bus: at least once, in outbox order.
///
/// With no shared broker ([`Config::follow_outbox`](super::Config::follow_outbox)) the
/// relay also writes the notifications each event calls for
/// ([`Livedrop::notify_for`]) before it marks the event published
/// ([`OutboxRelay::notifying`]): an in-process bus dies with its process, so the
/// outbox's `published` mark is the only record every process shares of an event's
/// effects being done. A relay stopped mid-way leaves its batch unpublished and the
/// next relay, in any process, handles it again; notifications are deduplicated by
/// the store, so handling twice writes nothing twice.
pub struct OutboxRelay {
    outbox: Arc<dyn Outbox>,
    bus: Arc<dyn EventBus>,
    batch: u32,
    notify: Option<Livedrop>,
}

impl OutboxRelay {
    /// A relay moving up to `batch` events per step.
    pub fn new(outbox: Arc<dyn Outbox>, bus: Arc<dyn EventBus>, batch: u32) -> Self {
        Self {
            outbox,
            bus,
            batch: batch.max(1),
            notify: None,
        }
    }

    /// The same relay, writing the notifications of each event through `app` before
    /// marking it published (see the [type docs](OutboxRelay)).
    pub fn notifying(mut self, app: Livedrop) -> Self {
        self.notify = Some(app);
        self
    }

    /// Publishes one batch and marks it published. Returns how many events moved.
    /// If publishing fails nothing is marked, so the batch is sent again later. A
    /// [notifying](OutboxRelay::notifying) relay retries an event whose notifications
    /// meet a transient error until they are written.
    pub async fn relay_once(&self) -> StoreResult<usize> {
        let never = CancellationToken::new();
        Ok(self.step(&never).await?.unwrap_or(0))
    }

    /// One batch: `None` when `token` was cancelled before the batch's notifications
    /// were written (nothing is marked published then).
    async fn step(&self, token: &CancellationToken) -> StoreResult<Option<usize>> {
        let records = self.outbox.pending(self.batch).await?;
        if records.is_empty() {
            return Ok(Some(0));
        }
        let events: Vec<Event> = records.iter().map(|r| r.event.clone()).collect();
        self.bus.publish(&events).await?;
        if let Some(app) = &self.notify {
            for event in &events {
                if !app.handle_until_done(event, Role::Notify, token).await {
                    return Ok(None);
                }
            }
        }
        let seqs: Vec<i64> = records.iter().map(|r| r.seq).collect();
        self.outbox.mark_published(&seqs).await?;
        Ok(Some(records.len()))
    }

    /// Relays until `token` is cancelled: wakes on appends, backs off on failures.
    pub async fn run(self, token: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100));
        while !token.is_cancelled() {
            match self.step(&token).await {
                Ok(None) => return,
                Ok(Some(n)) if n >= self.batch as usize => continue,
                Ok(Some(_)) => {
                    backoff.reset();
                    tokio::select! {
                        biased;
                        _ = token.cancelled() => return,
                        _ = self.outbox.wait_for_append(Duration::from_secs(1)) => {}
                    }
                }
                Err(e) => {
                    let wait = backoff.next();
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "outbox relay failed; events stay in the outbox");
                    if !pause(&token, wait).await {
                        return;
                    }
                }
            }
        }
    }
}

/// Reads every committed outbox event once, in append order, from where it started:
/// the way one process sees every event when the bus is not shared.
///
/// Positions come from a sequence taken at insert, so a transaction may commit an
/// event at a lower position after a higher one was read. Positions skipped that way
/// are asked for again on each poll until they appear or [`OutboxFollower::GAP_WAIT`]
/// passes (a rolled-back append leaves a gap that never fills).
pub struct OutboxFollower {
    outbox: Arc<dyn Outbox>,
    after: Option<i64>,
    gaps: BTreeMap<i64, tokio::time::Instant>,
    batch: u32,
}

impl OutboxFollower {
    /// How long a skipped position is waited for.
    pub const GAP_WAIT: Duration = Duration::from_secs(30);
    /// The most skipped positions remembered at once.
    const MAX_GAPS: usize = 10_000;

    /// A follower that starts at the outbox's head on its first poll.
    pub fn new(outbox: Arc<dyn Outbox>, batch: u32) -> Self {
        Self {
            outbox,
            after: None,
            gaps: BTreeMap::new(),
            batch: batch.max(1),
        }
    }

    /// Events committed since the last poll (none on the first, which finds the head).
    pub async fn poll(&mut self) -> StoreResult<Vec<Event>> {
        let now = tokio::time::Instant::now();
        self.gaps
            .retain(|_, since| now.duration_since(*since) < Self::GAP_WAIT);
        let Some(after) = self.after else {
            self.after = Some(self.outbox.head().await?);
            return Ok(Vec::new());
        };
        let also: Vec<i64> = self.gaps.keys().copied().collect();
        let records = self.outbox.appended_since(after, &also, self.batch).await?;
        let mut head = after;
        let mut events = Vec::with_capacity(records.len());
        for record in records {
            if self.gaps.remove(&record.seq).is_none() {
                if record.seq <= head {
                    continue;
                }
                for missing in (head + 1)..record.seq {
                    if self.gaps.len() >= Self::MAX_GAPS {
                        break;
                    }
                    self.gaps.insert(missing, now);
                }
                head = record.seq;
            }
            events.push(record.event);
        }
        self.after = Some(head);
        Ok(events)
    }

    /// Positions waited for, for tests and diagnostics.
    pub fn gaps(&self) -> usize {
        self.gaps.len()
    }
}

/// Sleeps for `span` unless `token` is cancelled first (cancellation wins a tie).
/// Returns whether to go on.
async fn pause(token: &CancellationToken, span: Duration) -> bool {
    tokio::select! {
        biased;
        _ = token.cancelled() => false,
        _ = tokio::time::sleep(span) => true,
    }
}

/// Runs `step` after `first`, then again `interval` after each step ends, until `token`
/// is cancelled (a running step finishes first). Each step logs its own failures.
async fn every<F, Fut>(first: Duration, interval: Duration, token: CancellationToken, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if !first.is_zero() && !pause(&token, first).await {
        return;
    }
    loop {
        step().await;
        if !pause(&token, interval).await {
            return;
        }
    }
}

/// The waits between retries of the background loops: `first`, then doubling up to
/// [`Backoff::MAX`], back to `first` after a success. No jitter: a simulation seed
/// replays the same waits.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    first: Duration,
    next: Duration,
}

impl Backoff {
    /// The longest wait.
    const MAX: Duration = Duration::from_secs(5);

    fn new(first: Duration) -> Self {
        Self { first, next: first }
    }

    /// The wait before the next retry; the one after is twice as long.
    fn next(&mut self) -> Duration {
        let wait = self.next;
        self.next = (wait * 2).min(Self::MAX);
        wait
    }

    /// Back to the first wait, after a success.
    fn reset(&mut self) {
        self.next = self.first;
    }
}

#[derive(Clone, Copy)]
enum Role {
    Cache,
    Notify,
}

impl Livedrop {
    /// Starts the drop scheduler, the hold sweeper, housekeeping, the outbox relay and
    /// the event consumers, each its own task.
    pub fn spawn_background(&self) -> Background {
        let token = CancellationToken::new();
        let mut tasks = Vec::new();

        // The drop scheduler, the hold sweeper and housekeeping each run on their own,
        // so a long sweep or purge never delays a drop going live.
        let config = self.config();
        let tick = config.tick;
        tasks.push(
            self.spawn_every(Duration::ZERO, tick, &token, |this| async move {
                if let Err(e) = this.tick_scheduler().await {
                    tracing::warn!(error = %e.detailed(), "drop scheduler step failed");
                }
            }),
        );
        tasks.push(
            self.spawn_every(Duration::ZERO, tick, &token, |this| async move {
                if let Err(e) = this.sweep_holds().await {
                    tracing::warn!(error = %e.detailed(), "hold sweeper step failed");
                }
            }),
        );
        let housekeeping = config.housekeeping_interval;
        tasks.push(
            self.spawn_every(housekeeping, housekeeping, &token, |this| async move {
                this.housekeeping().await
            }),
        );

        // With no shared broker the bus is this process's alone and dies with it: the
        // relay writes notifications before it marks events published, and this
        // process's cache and live feed follow the outbox. No consumer group runs.
        let follow = self.config().follow_outbox;
        let mut relay = OutboxRelay::new(
            self.ports().outbox.clone(),
            self.ports().bus.clone(),
            self.config().relay_batch,
        );
        if follow {
            relay = relay.notifying(self.clone());
        }
        tasks.push(tokio::spawn(relay.run(token.clone())));

        let groups = if follow {
            vec![]
        } else {
            vec![(NOTIFY_GROUP, Role::Notify), (CACHE_GROUP, Role::Cache)]
        };
        for (group, role) in groups {
            let this = self.clone();
            let t = token.clone();
            tasks.push(tokio::spawn(
                async move { this.consume(group, role, t).await },
            ));
        }

        let this = self.clone();
        let t = token.clone();
        if follow {
            tasks.push(tokio::spawn(async move { this.follow_outbox(t).await }));
        } else {
            tasks.push(tokio::spawn(async move { this.feed_live(t).await }));
        }

        Background { token, tasks }
    }

    /// Spawns a task that runs `step` on a clone of this service every `interval`, the
    /// first time after `first`, until `token` is cancelled.
    fn spawn_every<F, Fut>(
        &self,
        first: Duration,
        interval: Duration,
        token: &CancellationToken,
        step: F,
    ) -> JoinHandle<()>
    where
        F: Fn(Livedrop) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let this = self.clone();
        tokio::spawn(every(first, interval, token.clone(), move || {
            step(this.clone())
        }))
    }

    /// One scheduler step: drops whose start or end has passed move to `live` or
    /// `ended`, emitting `drop.started` / `drop.ended` once, and draws whose entries
    /// closed run (once). Returns how many moved or were drawn.
    pub async fn tick_scheduler(&self) -> Result<usize> {
        let now = self.now();
        let due = self
            .ports()
            .drops
            .due_transitions(now, self.config().scheduler_batch.max(1))
            .await?;
        let mut moved = 0;
        for drop in due {
            if self.advance_drop(&drop, now).await? {
                moved += 1;
            }
        }
        Ok(moved + self.run_due_draws().await?)
    }

    /// One sweeper step: every hold that ran out returns its stock. Returns how many.
    pub async fn sweep_holds(&self) -> Result<usize> {
        let batch = self.config().sweep_batch.max(1);
        let mut total = 0;
        loop {
            let expired = self
                .ports()
                .orders
                .expire_holds(self.now(), batch, self.hold())
                .await?;
            total += expired.len();
            for order in &expired {
                tracing::debug!(order = %order.id, "hold expired");
            }
            if expired.len() < batch as usize {
                return Ok(total);
            }
        }
    }

    /// One housekeeping step: [`purge_idempotency_keys`](Self::purge_idempotency_keys)
    /// and [`prune_outbox`](Self::prune_outbox), the second even if the first failed.
    async fn housekeeping(&self) {
        if let Err(e) = self.purge_idempotency_keys().await {
            tracing::warn!(error = %e.detailed(), "idempotency purge failed");
        }
        if let Err(e) = self.prune_outbox().await {
            tracing::warn!(error = %e.detailed(), "outbox pruning failed");
        }
    }

    /// Deletes idempotency keys older than the retention period. Returns how many.
    pub async fn purge_idempotency_keys(&self) -> Result<u64> {
        let cutoff = self.retention_cutoff(self.config().idempotency_retention);
        Ok(self.ports().idempotency.purge(cutoff).await?)
    }

    /// Deletes outbox events published longer ago than the retention period.
    /// Returns how many.
    pub async fn prune_outbox(&self) -> Result<u64> {
        let cutoff = self.retention_cutoff(self.config().outbox_retention);
        Ok(self.ports().outbox.prune_published(cutoff).await?)
    }

    /// The instant before which what is kept for `retention` may go (a retention too
    /// long to represent counts as 24 hours).
    fn retention_cutoff(&self, retention: Duration) -> crate::clock::Timestamp {
        let retention =
            chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::hours(24));
        self.now() - retention
    }

    async fn consume(&self, group: &'static str, role: Role, token: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100));
        while !token.is_cancelled() {
            let subscription = tokio::select! {
                biased;
                _ = token.cancelled() => return,
                s = self.ports().bus.subscribe(group) => s,
            };
            let mut subscription = match subscription {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(group, error = %e, "cannot subscribe; retrying");
                    if !pause(&token, backoff.next()).await {
                        return;
                    }
                    continue;
                }
            };
            backoff.reset();
            let failed = self.drain(&mut *subscription, role, &token).await;
            subscription.close().await;
            if failed && !pause(&token, Duration::from_millis(500)).await {
                return;
            }
        }
    }

    /// Handles events until cancelled (returns false) or the subscription fails (true).
    /// The bus has dropped redeliveries of recent events already
    /// ([`Deduplicated`](crate::ports::Deduplicated)); what comes again after a
    /// resubscription is handled again, which every handler makes harmless.
    async fn drain(
        &self,
        subscription: &mut dyn Subscription,
        role: Role,
        token: &CancellationToken,
    ) -> bool {
        let mut uncommitted = 0usize;
        loop {
            let next = tokio::select! {
                biased;
                _ = token.cancelled() => {
                    if uncommitted > 0 {
                        let _ = subscription.commit().await;
                    }
                    return false;
                }
                n = subscription.next(Duration::from_millis(500)) => n,
            };
            match next {
                Ok(Some(event)) => {
                    if !self.handle_until_done(&event, role, token).await {
                        // Shut down before the event's effects were stored: leave it
                        // (and those before it) uncommitted, so the group delivers it
                        // again to whoever resumes.
                        return false;
                    }
                    uncommitted += 1;
                    if uncommitted >= 100 {
                        if let Err(e) = subscription.commit().await {
                            tracing::warn!(error = %e, "offset commit failed");
                        }
                        uncommitted = 0;
                    }
                }
                Ok(None) => {
                    if uncommitted > 0 {
                        if let Err(e) = subscription.commit().await {
                            tracing::warn!(error = %e, "offset commit failed");
                        }
                        uncommitted = 0;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "event subscription failed; resubscribing");
                    return true;
                }
            }
        }
    }

    /// Handles one event, retrying while the store is unavailable: an event is
    /// committed only after its effects are stored, so none is lost. Returns `false`
    /// when shutdown came first and the event was not handled: it must not be
    /// committed.
    async fn handle_until_done(
        &self,
        event: &Event,
        role: Role,
        token: &CancellationToken,
    ) -> bool {
        let mut backoff = Backoff::new(Duration::from_millis(100));
        loop {
            let result = match role {
                Role::Cache => {
                    self.apply_to_cache(event).await;
                    Ok(())
                }
                Role::Notify => self.notify_for(event).await,
            };
            match result {
                Ok(()) => return true,
                Err(e) if e.is_transient() => {
                    tracing::warn!(event = %event.id, error = %e.detailed(), "event handling failed; retrying");
                    if !pause(token, backoff.next()).await {
                        tracing::info!(event = %event.id, "shutting down; the event stays uncommitted");
                        return false;
                    }
                }
                Err(e) => {
                    tracing::error!(event = %event.id, kind = %event.kind, error = %e.detailed(), "event cannot be handled; skipped");
                    return true;
                }
            }
        }
    }

    /// Invalidates what `event` makes stale and feeds the admission gate.
    ///
    /// Invalidation needs only the envelope ([`cache::invalidations`](crate::cache::invalidations)),
    /// so it happens even for a payload this version cannot read; the gate needs the
    /// stock a `stock.changed` carries.
    pub async fn apply_to_cache(&self, event: &Event) {
        let (keys, prefixes) = crate::cache::invalidations(event);
        self.cache().invalidate(&keys, &prefixes).await;
        let stock: StockPayload = match event.decode() {
            Ok(EventPayload::StockChanged(stock)) => stock,
            // The gate is fed from `stock.changed` alone: a `drop.sold_out` comes with
            // a `stock.changed` of the same version and stock.
            Ok(
                EventPayload::DropSoldOut(_)
                | EventPayload::ProductCreated(_)
                | EventPayload::ProductUpdated(_)
                | EventPayload::DropScheduled(_)
                | EventPayload::DropStarted(_)
                | EventPayload::DropEnded(_)
                | EventPayload::DropCancelled(_)
                | EventPayload::OrderPlaced(_)
                | EventPayload::OrderConfirmed(_)
                | EventPayload::OrderCancelled(_)
                | EventPayload::OrderExpired(_)
                | EventPayload::OrderExtended(_)
                | EventPayload::UserFollowed(_)
                | EventPayload::WaitlistOffered(_)
                | EventPayload::WaitlistSkipped(_)
                | EventPayload::WaitlistClosed(_)
                | EventPayload::DropDrawn(_)
                | EventPayload::DrawWon(_)
                | EventPayload::DrawLost(_),
            ) => return,
            Err(e) => {
                // Invalidated above all the same; only the advisory gate misses it.
                tracing::debug!(event = %event.id, error = %e, "admission gate not updated");
                return;
            }
        };
        if let Err(e) = self
            .ports()
            .gate
            .record(
                DropId(stock.drop_id),
                &stock.sku,
                &stock.stock,
                event.version,
            )
            .await
        {
            tracing::debug!(error = %e, "admission gate not updated");
        }
    }

    /// Writes the notifications `event` calls for: `drop_live` (and `drop_scheduled`
    /// for a later start) to every follower of the creator, in batches; order
    /// confirmations and expiries to the buyer; `low_stock` and `sold_out` to the creator.
    /// An event whose payload cannot be read is logged and skipped: retrying would
    /// not make it readable.
    pub async fn notify_for(&self, event: &Event) -> Result<()> {
        let payload = match event.decode() {
            Ok(payload) => payload,
            Err(e) => {
                tracing::warn!(event = %event.id, error = %e, "no notifications for an unreadable event");
                return Ok(());
            }
        };
        match payload {
            EventPayload::DropStarted(drop) => {
                self.fan_out(&drop, NotificationKind::DropLive).await
            }
            EventPayload::DropScheduled(drop) => {
                if drop.starts_at > event.occurred_at {
                    self.fan_out(&drop, NotificationKind::DropScheduled).await
                } else {
                    // Scheduled to start at once: its `drop.started` tells followers.
                    Ok(())
                }
            }
            EventPayload::OrderConfirmed(order) => {
                self.notify_order(&order, NotificationKind::OrderConfirmed)
                    .await
            }
            EventPayload::OrderExpired(order) => {
                self.notify_order(&order, NotificationKind::OrderExpired)
                    .await
            }
            EventPayload::WaitlistOffered(entry) => {
                self.notify_waitlist(event, entry, NotificationKind::WaitlistOffer)
                    .await
            }
            EventPayload::WaitlistSkipped(entry) => {
                self.notify_waitlist(event, entry, NotificationKind::WaitlistSkipped)
                    .await
            }
            EventPayload::WaitlistClosed(entry) => {
                self.notify_waitlist(event, entry, NotificationKind::WaitlistClosed)
                    .await
            }
            EventPayload::DrawWon(draw) => {
                self.notify_draw(event, draw, NotificationKind::DrawWon)
                    .await
            }
            EventPayload::DrawLost(draw) => {
                self.notify_draw(event, draw, NotificationKind::DrawLost)
                    .await
            }
            EventPayload::DropSoldOut(stock) => {
                self.notify_creator(stock, NotificationKind::SoldOut).await
            }
            EventPayload::StockChanged(stock) => {
                let s = stock.stock;
                if s.available > 0 && s.available <= (s.total / 10).max(1) {
                    self.notify_creator(stock, NotificationKind::LowStock).await
                } else {
                    Ok(())
                }
            }
            // No notification is written for these.
            EventPayload::ProductCreated(_)
            | EventPayload::ProductUpdated(_)
            | EventPayload::DropEnded(_)
            | EventPayload::DropCancelled(_)
            | EventPayload::OrderPlaced(_)
            | EventPayload::OrderCancelled(_)
            | EventPayload::OrderExtended(_)
            | EventPayload::UserFollowed(_)
            | EventPayload::DropDrawn(_) => Ok(()),
        }
    }

    /// Tells the buyer of `order` about it (`order_confirmed`, `order_expired`).
    async fn notify_order(&self, order: &Order, kind: NotificationKind) -> Result<()> {
        let payload = serde_json::json!({
            "order_id": order.id,
            "drop_id": order.drop_id,
            "quantity": order.quantity,
            "status": order.status,
        });
        self.notify_one(
            order.user_id,
            kind,
            payload,
            format!("{}:{}", kind.as_str(), order.id),
        )
        .await
    }

    /// Tells the drop's creator about a variant's stock (`sold_out`, `low_stock`).
    async fn notify_creator(&self, moved: StockPayload, kind: NotificationKind) -> Result<()> {
        let drop = self.drop_definition(DropId(moved.drop_id)).await?;
        let body = serde_json::json!({
            "drop_id": drop.id,
            "title": drop.title,
            "sku": moved.sku,
            "stock": moved.stock,
        });
        // One per drop for a drop of one variant (as before variants), else one per
        // variant.
        let dedup_key = if drop.variants.len() == 1 {
            format!("{}:{}", kind.as_str(), drop.id)
        } else {
            format!("{}:{}:{}", kind.as_str(), drop.id, moved.sku)
        };
        self.notify_one(drop.creator_id, kind, body, dedup_key)
            .await
    }

    /// Tells an entrant how the draw went for it (`draw_won` names the order).
    async fn notify_draw(
        &self,
        event: &Event,
        draw: DrawPayload,
        kind: NotificationKind,
    ) -> Result<()> {
        let drop = self.drop_definition(draw.entry.drop_id).await?;
        let body = serde_json::json!({
            "drop_id": draw.entry.drop_id,
            "title": drop.title,
            "sku": draw.entry.sku,
            "quantity": draw.entry.quantity,
            "token": draw.entry.token,
            "rank": draw.entry.rank,
            "order_id": draw.order.as_ref().map(|o| o.id),
            "reserved_until": draw.order.as_ref().map(|o| o.reserved_until),
        });
        self.notify_one(
            draw.entry.user_id,
            kind,
            body,
            format!("{}:{}", kind.as_str(), event.id),
        )
        .await
    }

    /// Tells a waiting buyer how its entry ended (`waitlist_offer` names the order).
    async fn notify_waitlist(
        &self,
        event: &Event,
        entry: WaitlistPayload,
        kind: NotificationKind,
    ) -> Result<()> {
        let drop = self.drop_definition(entry.drop_id).await?;
        let body = serde_json::json!({
            "drop_id": entry.drop_id,
            "title": drop.title,
            "sku": entry.sku,
            "quantity": entry.quantity,
            "order_id": entry.order.as_ref().map(|o| o.id),
            "order_quantity": entry.order.as_ref().map(|o| o.quantity),
            "reserved_until": entry.order.as_ref().map(|o| o.reserved_until),
        });
        self.notify_one(
            entry.user_id,
            kind,
            body,
            format!("{}:{}", kind.as_str(), event.id),
        )
        .await
    }

    async fn notify_one(
        &self,
        user: UserId,
        kind: NotificationKind,
        payload: serde_json::Value,
        dedup_key: String,
    ) -> Result<()> {
        let notification = Notification {
            id: NotificationId::new(),
            user_id: user,
            kind,
            payload,
            dedup_key,
            created_at: self.now(),
            read_at: None,
        };
        self.ports()
            .notifications
            .insert_notification(&notification)
            .await?;
        Ok(())
    }

    /// Notifies every follower of the drop's creator:
    /// [`fan_out_shards`](super::Config::fan_out_shards) walks at once, each over its
    /// own shard of the audience, one batch at a time, each batch twice the one before
    /// (from [`fan_out_batch`](super::Config::fan_out_batch) to
    /// [`fan_out_max_batch`](super::Config::fan_out_max_batch)). Every batch is its
    /// own short step and skips followers notified already, so a fan-out cut short
    /// (an error, a dead process) is simply run again from the start.
    async fn fan_out(&self, drop: &Drop, kind: NotificationKind) -> Result<()> {
        let batch = FanOutBatch {
            creator_id: drop.creator_id,
            kind,
            payload: serde_json::json!({
                "drop_id": drop.id,
                "product_id": drop.product_id,
                "title": drop.title,
                "starts_at": drop.starts_at,
                "ends_at": drop.ends_at,
            }),
            dedup_key: format!("{}:{}", kind.as_str(), drop.id),
            after: None,
            limit: self.config().fan_out_batch.max(1),
            at: self.now(),
            shard: FanOutShard::WHOLE,
        };
        let walks = FanOutShard::split(self.config().fan_out_shards).map(|shard| {
            self.fan_out_walk(FanOutBatch {
                shard,
                ..batch.clone()
            })
        });
        let notified: u64 = futures::future::try_join_all(walks).await?.iter().sum();
        tracing::info!(drop = %drop.id, kind = kind.as_str(), notified, "fan-out done");
        Ok(())
    }

    /// Walks `batch.shard` of the audience from `batch`, each batch twice the one
    /// before up to [`fan_out_max_batch`](super::Config::fan_out_max_batch). Returns
    /// how many notifications it wrote.
    async fn fan_out_walk(&self, mut batch: FanOutBatch) -> Result<u64> {
        let most = self.config().fan_out_max_batch.max(batch.limit);
        let mut notified = 0u64;
        loop {
            let progress = self.ports().notifications.fan_out(&batch).await?;
            notified += u64::from(progress.inserted);
            match progress.next {
                Some(next) => batch.after = Some(next),
                None => return Ok(notified),
            }
            batch.limit = batch.limit.saturating_mul(2).min(most);
        }
    }

    /// This process's live feed and cache invalidation, from the outbox itself
    /// ([`Config::follow_outbox`](super::Config::follow_outbox)).
    async fn follow_outbox(&self, token: CancellationToken) {
        let mut follower =
            OutboxFollower::new(self.ports().outbox.clone(), self.config().relay_batch);
        let interval = self.config().follow_interval;
        let mut backoff = Backoff::new(interval);
        loop {
            let wait = match follower.poll().await {
                Ok(events) => {
                    backoff.reset();
                    let full = events.len() >= self.config().relay_batch as usize;
                    for event in events {
                        self.apply_to_cache(&event).await;
                        // No receivers is fine: nobody is watching.
                        let _ = self.inner.live.send(event);
                    }
                    if full {
                        continue;
                    }
                    interval
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outbox follower failed; retrying");
                    backoff.next()
                }
            };
            if !pause(&token, wait).await {
                return;
            }
        }
    }

    async fn feed_live(&self, token: CancellationToken) {
        while !token.is_cancelled() {
            let subscription = tokio::select! {
                biased;
                _ = token.cancelled() => return,
                s = self.ports().bus.subscribe_live() => s,
            };
            let mut subscription = match subscription {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open the live feed; retrying");
                    if !pause(&token, Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            };
            loop {
                let next = tokio::select! {
                    biased;
                    _ = token.cancelled() => break,
                    n = subscription.next(Duration::from_millis(500)) => n,
                };
                match next {
                    Ok(Some(event)) => {
                        // No receivers is fine: nobody is watching.
                        let _ = self.inner.live.send(event);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "live feed failed; reopening");
                        break;
                    }
                }
            }
            subscription.close().await;
        }
    }
}
