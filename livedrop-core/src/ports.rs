//! Ports: the small object-safe traits the services drive. Adapters implement them
//! (`livedrop-adapters`: memory, PostgreSQL, Redis, Kafka); the conformance suite
//! (`testing` feature) states what every implementation must do.
//!
//! Write methods that change state take the events describing the change and append
//! them to the store's outbox **in the same atomic step** (a database transaction, one
//! critical section in memory). Stock movements additionally append
//! [`Event::stock_moved`] built from the stock before and after.

use std::time::Duration;

use async_trait::async_trait;

use crate::clock::Timestamp;
use crate::error::StoreResult;
use crate::event::Event;
use crate::id::{DropId, EventId, NotificationId, OrderId, ProductId, UserId};
use crate::model::{
    self, AdjustOutcome, Adjustment, DropFilter, DropState, DropView, ExtendOutcome, FanOutBatch,
    FanOutProgress, FollowEntry, JoinOutcome, LedgerEntry, Notification, Order, PlaceOutcome,
    Product, ProductFilter, SettleOutcome, Settlement, Stock, User, WaitlistEntry, WaitlistJoin,
};
use crate::model::{
    DrawEntry, DrawEntryRequest, DrawOutcome, EntryOutcome, QueueEntry, QueueOutcome,
};
use crate::page::{Page, PageRequest};

#[cfg(any(test, feature = "testing"))]
use mockall::automock;

pub use crate::clock::Clock;

/// Users and the follow graph.
#[cfg_attr(any(test, feature = "testing"), automock)]
#[async_trait]
pub trait UserRepository: Send + Sync + 'static {
    /// Stores a new user. An email already registered (compared lower-cased) is
    /// [`StoreError::Conflict`](crate::error::StoreError::Conflict).
    async fn insert_user(&self, user: &User) -> StoreResult<()>;
    /// The user with `id`.
    async fn user(&self, id: UserId) -> StoreResult<Option<User>>;
    /// The user with `email` (already lower-cased by the caller).
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>>;
    /// Makes `follower` follow `creator` at `at`, appending `events` only when the
    /// follow is new. Returns whether it is new; following again changes nothing.
    async fn follow(
        &self,
        follower: UserId,
        creator: UserId,
        at: Timestamp,
        events: &[Event],
    ) -> StoreResult<bool>;
    /// Ends a follow. Returns whether there was one.
    async fn unfollow(&self, follower: UserId, creator: UserId) -> StoreResult<bool>;
    /// Followers of `creator`, newest follow first, keyset by `(followed_at, follower id)`.
    async fn followers(&self, creator: UserId, page: PageRequest)
        -> StoreResult<Page<FollowEntry>>;
    /// Creators `follower` follows, newest first, keyset by `(followed_at, creator id)`.
    async fn following(
        &self,
        follower: UserId,
        page: PageRequest,
    ) -> StoreResult<Page<FollowEntry>>;
}

/// How a conditional product update went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Stored.
    Updated,
    /// The stored version was not `new.version - 1`; nothing changed.
    VersionMismatch {
        /// The stored version.
        current: i64,
    },
    /// No such product.
    NotFound,
}

/// Products.
#[cfg_attr(any(test, feature = "testing"), automock)]
#[async_trait]
pub trait ProductRepository: Send + Sync + 'static {
    /// Stores a new product and appends `events`.
    async fn insert_product(&self, product: &Product, events: &[Event]) -> StoreResult<()>;
    /// The product with `id`.
    async fn product(&self, id: ProductId) -> StoreResult<Option<Product>>;
    /// Replaces the product if the stored version is `product.version - 1`, appending
    /// `events` in the same step.
    async fn update_product(
        &self,
        product: &Product,
        events: &[Event],
    ) -> StoreResult<UpdateOutcome>;
    /// Products matching `filter`, newest first, keyset by `(created_at, id)`.
    async fn list_products(
        &self,
        filter: &ProductFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Product>>;
}

/// Drops and their lifecycle.
#[cfg_attr(any(test, feature = "testing"), automock)]
#[async_trait]
pub trait DropRepository: Send + Sync + 'static {
    /// Stores a new drop whose variant `drop.variants[i]` has `stock[i]` units, all
    /// available (`stock` has one number per variant), an initial ledger entry per
    /// variant (kind `initial`, reason "initial stock"), and appends `events`.
    async fn insert_drop(
        &self,
        drop: &model::Drop,
        stock: &[u32],
        events: &[Event],
    ) -> StoreResult<()>;
    /// The drop with `id`, without stock.
    async fn drop_by_id(&self, id: DropId) -> StoreResult<Option<model::Drop>>;
    /// The drop with `id` and its current stock.
    async fn drop_view(&self, id: DropId) -> StoreResult<Option<DropView>>;
    /// Drops passing `filter` at `now` (see [`DropFilter::accepts`]), newest first,
    /// keyset by `(created_at, id)`.
    async fn list_drops(
        &self,
        filter: &DropFilter,
        now: Timestamp,
        page: PageRequest,
    ) -> StoreResult<Page<DropView>>;
    /// Moves the drop's stored state to `to` only if it is one of `from`, appending
    /// `events` in the same step. Returns whether it moved: of several processes racing
    /// the same transition, exactly one sees `true`. A move to `ended` or `cancelled`
    /// closes the drop's waitlists in the same step: every entry ends, each with
    /// `waitlist.closed` ([`Event::waitlist`], dated as the first of `events`, or at
    /// the drop's end when there are none) appended after `events`.
    async fn transition(
        &self,
        id: DropId,
        from: &[DropState],
        to: DropState,
        events: &[Event],
    ) -> StoreResult<bool>;
    /// Drops whose stored state lags the clock: `scheduled` with `starts_at <= now`, or
    /// `live` with `ends_at <= now`; at most `limit`, oldest start first.
    async fn due_transitions(&self, now: Timestamp, limit: u32) -> StoreResult<Vec<model::Drop>>;
}

/// Stock outside orders.
#[cfg_attr(any(test, feature = "testing"), automock)]
#[async_trait]
pub trait InventoryRepository: Send + Sync + 'static {
    /// The current stock of each of the drop's variants, in `Drop::variants` order.
    async fn stock(&self, drop: DropId) -> StoreResult<Option<Vec<Stock>>>;
    /// Restocks (`delta > 0`: the variant's total and available grow) or shrinks
    /// (`delta < 0`: total and available shrink, refused with `Insufficient` past what
    /// is available) variant `adjustment.sku` (`UnknownVariant` when the drop has no
    /// such variant), atomically with a ledger entry and [`Event::stock_moved`]. A
    /// restock of a live drop serves the variant's waitlist in the same step, as
    /// [`OrderRepository::settle_order`] documents.
    async fn adjust(&self, adjustment: &Adjustment) -> StoreResult<AdjustOutcome>;
    /// The drop's ledger, newest first, keyset by `(created_at, id)`.
    async fn ledger(&self, drop: DropId, page: PageRequest) -> StoreResult<Page<LedgerEntry>>;
}

/// Orders and the reservations they hold.
#[cfg_attr(any(test, feature = "testing"), automock)]
#[async_trait]
pub trait OrderRepository: Send + Sync + 'static {
    /// Places `order` (status `reserved`) as one atomic step, checking in this order:
    ///
    /// 1. the buyer already has an order with `order.idempotency_key` → `Duplicate`;
    ///    else the buyer's [idempotency key](IdempotencyStore) `order.idempotency_key`
    ///    is finished with `order.fingerprint` → `Replayed` with its stored response,
    ///    finished or claimed with another fingerprint → `KeyReused`, claimed under a
    ///    lease that has not run out at `now` → `KeyInFlight` (a claim whose lease ran
    ///    out is taken over by this decision);
    /// 2. no such drop → `DropNotFound`;
    /// 3. the drop has no variant `order.sku` → `UnknownVariant`;
    /// 4. the drop does not [accept orders](model::Drop::accepts_orders_at) at `now` → `NotLive`;
    /// 5. units the buyer holds in the drop, across all its variants (reserved +
    ///    confirmed), plus `order.quantity` exceed the drop's `per_user_limit` →
    ///    `LimitExceeded`;
    /// 6. fewer than `order.quantity` of the variant available → `OutOfStock`;
    /// 7. otherwise the variant's `available -= q`, `reserved += q`, the order is
    ///    stored, and `order.placed` then [`Event::stock_moved`] are appended →
    ///    `Placed`.
    ///
    /// The outcomes `Placed`, `LimitExceeded` and `OutOfStock` are the key's final
    /// answer: in the same atomic step the store finishes the buyer's idempotency
    /// key with `order.fingerprint` and the response
    /// [`order_record`](crate::service::order_record) gives, as
    /// [`IdempotencyStore::complete`] would, so the order path needs no claim of its
    /// own and every later request under the key (an order, or any other operation
    /// through [`IdempotencyStore::begin`]) meets that answer.
    ///
    /// Correct under any concurrency and across processes sharing the store: two
    /// orders of one buyer for two variants never pass the limit together. Orders of
    /// different variants do not wait on one lock (PostgreSQL keeps a stock row per
    /// variant).
    async fn place_order(&self, order: &Order, now: Timestamp) -> StoreResult<PlaceOutcome>;
    /// The order with `id`.
    async fn order(&self, id: OrderId) -> StoreResult<Option<Order>>;
    /// The buyer's order placed under idempotency `key`, if any. The default walks
    /// [`orders_for_user`](Self::orders_for_user); stores override it with a lookup.
    async fn order_by_key(&self, user: UserId, key: &str) -> StoreResult<Option<Order>> {
        let mut page = PageRequest::first(100);
        loop {
            let found = self.orders_for_user(user, page).await?;
            if let Some(order) = found.items.into_iter().find(|o| o.idempotency_key == key) {
                return Ok(Some(order));
            }
            match found.next_cursor {
                Some(cursor) => page = page.after(Some(cursor)),
                None => return Ok(None),
            }
        }
    }
    /// The buyer's orders, newest first, keyset by `(created_at, id)`.
    async fn orders_for_user(&self, user: UserId, page: PageRequest) -> StoreResult<Page<Order>>;
    /// Settles a reserved order atomically:
    ///
    /// - already in the settlement's target status → `Unchanged`;
    /// - not `reserved` → `Conflict`;
    /// - `Confirm` at or after `reserved_until` → the order expires instead
    ///   (reserved → available, `order.expired` + stock events) → `HoldExpired`;
    /// - `Confirm`: reserved → sold, status `confirmed`, `order.confirmed`;
    ///   `Cancel`: reserved → available, status `cancelled`, `order.cancelled`;
    ///   each followed by [`Event::stock_moved`] → `Settled`.
    ///
    /// **Waitlist hand-off.** Units that come back to a variant of a drop that
    /// [accepts orders](model::Drop::accepts_orders_at) at `now` (here, in
    /// [`expire_holds`](Self::expire_holds) and in a restock) go to the variant's
    /// waitlist in the same atomic step, as [`model::plan_handoff`] decides on the
    /// entries in join order: an offer stores [`Order::waitlist_offer`] (held for
    /// `hold`) and appends `order.placed` and `waitlist.offered`; a skip appends
    /// `waitlist.skipped`; either ends the entry. Only what no entry takes reaches
    /// `available`, and the movement's [`Event::stock_moved`] carries the stock
    /// after the hand-off.
    async fn settle_order(
        &self,
        id: OrderId,
        settlement: Settlement,
        now: Timestamp,
        hold: chrono::Duration,
    ) -> StoreResult<SettleOutcome>;
    /// Expires up to `limit` reserved orders with `reserved_until <= now`: each returns
    /// its units exactly once (even with several sweepers at once), with
    /// `order.expired` and stock events, handing them to the variant's waitlist as
    /// [`settle_order`](Self::settle_order) documents. Returns the orders expired by
    /// this call.
    async fn expire_holds(
        &self,
        now: Timestamp,
        limit: u32,
        hold: chrono::Duration,
    ) -> StoreResult<Vec<Order>>;
    /// Extends a reserved order's hold by `by`, once per order, atomically: decided by
    /// [`Order::extension`] on the order as stored, in its check order (not reserved →
    /// `NotReserved`, or `HoldExpired` when expired; `now` at or after
    /// `reserved_until` → `HoldExpired`; extended before → `AlreadyExtended`); no
    /// such order → `NotFound`. Otherwise `reserved_until` moves by `by`,
    /// `extended_at = now` and `order.extended` is appended → `Extended`. No stock
    /// moves.
    ///
    /// Serialized with [`settle_order`](Self::settle_order) and
    /// [`expire_holds`](Self::expire_holds) on the order, under any concurrency and
    /// across processes: of concurrent extensions exactly one is `Extended`, and an
    /// extension racing a sweep at or after the old `reserved_until` ends either
    /// extended (the sweep leaves the order reserved) or expired (the extension is
    /// `HoldExpired`), never both.
    async fn extend_hold(
        &self,
        id: OrderId,
        by: chrono::Duration,
        now: Timestamp,
    ) -> StoreResult<ExtendOutcome>;
}

/// Buyers waiting for units of sold-out variants, in join order per variant.
#[cfg_attr(any(test, feature = "testing"), automock)]
#[async_trait]
pub trait WaitlistRepository: Send + Sync + 'static {
    /// Puts `join.user_id` on the waitlist of variant `join.sku`, atomically, checking
    /// in this order: no such drop → `DropNotFound`; no such variant →
    /// `UnknownVariant`; the drop does not accept orders at `join.at` → `NotLive`; the
    /// variant has units available → `VariantAvailable`; the buyer's held units
    /// (reserved + confirmed, all variants) plus `join.quantity` exceed the limit →
    /// `LimitExceeded`. Otherwise `Joined`: a buyer already waiting in the drop for
    /// the same sku keeps its place with the new quantity; for another sku, the old
    /// entry is replaced by one at the end of the new variant's line. Join order is
    /// the order of the calls that created the places, even within one instant.
    async fn join_waitlist(&self, join: &WaitlistJoin) -> StoreResult<JoinOutcome>;
    /// The buyer's entry in the drop's waitlists, with its current position, if any.
    async fn waitlist_entry(
        &self,
        drop: DropId,
        user: UserId,
    ) -> StoreResult<Option<WaitlistEntry>>;
    /// Ends the buyer's entry in the drop's waitlists. Returns whether there was one.
    async fn leave_waitlist(&self, drop: DropId, user: UserId) -> StoreResult<bool>;
}

/// Draw drops: their secret seed, entries, the draw (exactly once) and its results.
///
/// **Hand-off after a draw.** Units a draw drop's order gives back (a winner's hold
/// expires or is cancelled, in [`OrderRepository::settle_order`] and
/// [`OrderRepository::expire_holds`]; a restock) go, in the same atomic step and
/// while the drop [accepts orders](model::Drop::accepts_orders_at), to the entries
/// that have not won, in rank order, as [`model::plan_draw`] decides: each winner
/// gets [`Order::draw_win`] (held for the call's `hold`), `order.placed` and
/// `draw.won` ([`Event::draw`]); its entry becomes `won` with the order's id. Draw
/// drops have no waitlist.
#[cfg_attr(any(test, feature = "testing"), automock)]
#[async_trait]
pub trait DrawRepository: Send + Sync + 'static {
    /// Stores a new draw drop (`drop.draw` set) exactly as
    /// [`DropRepository::insert_drop`] stores a drop, with its secret `seed` (64
    /// lower-case hex characters; its commitment is `drop.draw.commitment`), which
    /// no read returns until the draw reveals it.
    async fn insert_draw_drop(
        &self,
        drop: &model::Drop,
        stock: &[u32],
        seed: &str,
        events: &[Event],
    ) -> StoreResult<()>;
    /// Enters the buyer in the draw, or replaces the buyer's entry (keeping its
    /// token and taking the new sku, quantity and `entered_at`), atomically, checking
    /// in this order: no such drop → `DropNotFound`; not a draw → `NotDraw`; no such
    /// variant → `UnknownVariant`; cancelled, drawn, or `request.at` outside
    /// `[starts_at, entries_close_at)` → `EntriesClosed`; `quantity` above the
    /// per-user limit → `LimitExceeded`. Otherwise `Done` with the entry (result
    /// `pending`). Reserves no stock.
    async fn enter_draw(&self, request: &DrawEntryRequest) -> StoreResult<EntryOutcome>;
    /// Withdraws the buyer's entry while entries are open at `now`: the same checks
    /// as [`enter_draw`](Self::enter_draw) but the variant and limit, then `NoEntry`
    /// when the buyer has none; `Done` with the entry withdrawn.
    async fn withdraw_entry(
        &self,
        drop: DropId,
        user: UserId,
        now: Timestamp,
    ) -> StoreResult<EntryOutcome>;
    /// The buyer's entry, with its result, rank and order once drawn.
    async fn draw_entry(&self, drop: DropId, user: UserId) -> StoreResult<Option<DrawEntry>>;
    /// After the draw, up to `limit` entries with a rank above `after_rank`, in rank
    /// order. Before the draw, none.
    async fn draw_entries(
        &self,
        drop: DropId,
        after_rank: u64,
        limit: u32,
    ) -> StoreResult<Vec<DrawEntry>>;
    /// How many entries the draw has, and how many of them won so far.
    async fn draw_counts(&self, drop: DropId) -> StoreResult<(u64, u64)>;
    /// Draw drops not cancelled whose entries closed at or before `now` and that
    /// were not drawn yet; at most `limit`, earliest close first.
    async fn due_draws(&self, now: Timestamp, limit: u32) -> StoreResult<Vec<DropId>>;
    /// Runs the draw of drop `id` at `now`, exactly once across any number of
    /// callers and processes, atomically: entries ranked by
    /// [`Draw::ranked`](model::Draw::ranked) over the stored seed; winners as
    /// [`model::plan_draw`] decides on the variants' available units, each with
    /// [`Order::draw_win`] held for `hold`; every entry gets its rank and result
    /// (`won` with its order id, or `lost`); the drop's `draw.seed` and `drawn_at`
    /// are set. Appends `drop.drawn` (the drop as drawn), then per entry in rank
    /// order `order.placed` + `draw.won` or `draw.lost`, then
    /// [`Event::stock_moved`] per variant that moved. `NotDue` before
    /// `entries_close_at`, for a cancelled drop or one that is not a draw.
    async fn run_draw(
        &self,
        id: DropId,
        now: Timestamp,
        hold: chrono::Duration,
    ) -> StoreResult<DrawOutcome>;
}

/// Waiting rooms: who waits for a first-come drop, in which order, admitted when.
///
/// Order: those who joined before `starts_at` by their `shuffle_key` (then user id):
/// a uniformly random order, fixed at the start; then later arrivals in join order
/// (a join stamped before the start once a later arrival holds a slot, from a
/// process whose clock is behind, is a later arrival too).
/// Admission times: the pre-queue's `position` is admitted at
/// [`WaitingRoom::pre_queue_slot`](model::WaitingRoom::pre_queue_slot); a later
/// arrival gets [`WaitingRoom::next_slot`](model::WaitingRoom::next_slot) after the
/// slot before it, decided once, at its join, serialized per drop across
/// processes, so no two slots are closer than the room's interval.
#[cfg_attr(any(test, feature = "testing"), automock)]
#[async_trait]
pub trait QueueRepository: Send + Sync + 'static {
    /// Puts `user` in the drop's waiting room at `now`, atomically: no such drop →
    /// `DropNotFound`; no waiting room → `NoWaitingRoom`; cancelled, or at or after
    /// `ends_at` → `Closed`; before the room opens → `NotOpen`. A buyer already in
    /// the queue keeps the place. Otherwise `Joined` with the entry.
    async fn join_queue(
        &self,
        drop: DropId,
        user: UserId,
        now: Timestamp,
        shuffle_key: u64,
    ) -> StoreResult<QueueOutcome>;
    /// The buyer's place, as of now for a pre-queue that is still filling.
    async fn queue_entry(&self, drop: DropId, user: UserId) -> StoreResult<Option<QueueEntry>>;
    /// How many of the drop's queue are admitted at `now` (admission time at or
    /// before it).
    async fn admitted_through(&self, drop: DropId, now: Timestamp) -> StoreResult<u64>;
}

/// Proof of holding an idempotency key: a fresh token for every
/// [`BeginOutcome::Started`], so a holder whose lease was taken over can no longer
/// complete or release the new holder's claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Claim(pub uuid::Uuid);

impl Claim {
    /// A fresh, unguessable claim token.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4())
    }
}

impl Default for Claim {
    fn default() -> Self {
        Self::new()
    }
}

/// How claiming an idempotency key went.
#[derive(Debug, Clone, PartialEq)]
pub enum BeginOutcome {
    /// The caller owns the key now, under this claim, and must `complete` or
    /// `release` it (or let its lease run out).
    Started(Claim),
    /// The key finished before with this fingerprint; here is the stored response.
    Replay(serde_json::Value),
    /// Another request holds the key and its lease has not run out.
    InFlight,
    /// The key was used with a different fingerprint.
    Mismatch,
}

/// Idempotency keys, scoped per user, kept at least until purged.
#[cfg_attr(any(test, feature = "testing"), automock)]
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `(user, key)` for a request with `fingerprint`, atomically:
    /// unknown key → stored in flight with a lease until `now + lease` → `Started`;
    /// different fingerprint → `Mismatch`; completed → `Replay`; in flight with a live
    /// lease → `InFlight`; in flight with an expired lease (its owner died) → the lease
    /// is taken over under a new claim → `Started`. Of concurrent claims exactly one
    /// gets `Started`. Every `Started` carries a new [`Claim`].
    async fn begin(
        &self,
        user: UserId,
        key: &str,
        fingerprint: &str,
        now: Timestamp,
        lease: Duration,
    ) -> StoreResult<BeginOutcome>;
    /// Stores the response of a key still claimed under `claim`; later claims replay
    /// it. Returns whether stored: `false` when the claim was taken over (or the key
    /// released or completed), which then changes nothing.
    async fn complete(
        &self,
        user: UserId,
        key: &str,
        claim: Claim,
        response: &serde_json::Value,
    ) -> StoreResult<bool>;
    /// Gives up a key still claimed under `claim` without a response, so a retry runs
    /// afresh. Returns whether released: `false` when the claim was taken over (or the
    /// key completed), which then changes nothing.
    async fn release(&self, user: UserId, key: &str, claim: Claim) -> StoreResult<bool>;
    /// Deletes keys created before `cutoff`. Returns how many.
    async fn purge(&self, cutoff: Timestamp) -> StoreResult<u64>;
}

/// Notifications.
#[cfg_attr(any(test, feature = "testing"), automock)]
#[async_trait]
pub trait NotificationRepository: Send + Sync + 'static {
    /// Stores `notification` unless the user already has one with its `dedup_key`.
    /// Returns whether it was stored.
    async fn insert_notification(&self, notification: &Notification) -> StoreResult<bool>;
    /// One batch of a fan-out (see [`FanOutBatch`]): one short atomic step, never the
    /// whole audience at once. Followers already notified for the key are skipped.
    async fn fan_out(&self, batch: &FanOutBatch) -> StoreResult<FanOutProgress>;
    /// The user's notifications (only unread ones if `unread_only`), newest first,
    /// keyset by `(created_at, id)`.
    async fn notifications(
        &self,
        user: UserId,
        unread_only: bool,
        page: PageRequest,
    ) -> StoreResult<Page<Notification>>;
    /// Marks one of the user's notifications read (keeping an earlier `read_at`).
    /// Returns the notification, or `None` if the user has no such notification.
    async fn mark_read(
        &self,
        user: UserId,
        id: NotificationId,
        at: Timestamp,
    ) -> StoreResult<Option<Notification>>;
    /// Marks all the user's unread notifications read. Returns how many.
    async fn mark_all_read(&self, user: UserId, at: Timestamp) -> StoreResult<u64>;
}

/// An event waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRecord {
    /// Position in the outbox; increasing in append order.
    pub seq: i64,
    /// The event.
    pub event: Event,
}

/// The outbox the relay drains.
#[cfg_attr(any(test, feature = "testing"), automock)]
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Up to `limit` unpublished events, in append order (so per aggregate, in order).
    async fn pending(&self, limit: u32) -> StoreResult<Vec<OutboxRecord>>;
    /// Marks events published; they are never returned by `pending` again.
    async fn mark_published(&self, seqs: &[i64]) -> StoreResult<()>;
    /// How many events wait.
    async fn backlog(&self) -> StoreResult<u64>;
    /// Waits until an append may have happened, or `timeout` passed. Spurious wake-ups
    /// are allowed; a relay calls `pending` after each.
    async fn wait_for_append(&self, timeout: Duration);
    /// Events appended after position `after`, plus those at the positions in `also`
    /// (skipped earlier because their transaction had not committed yet), published
    /// or not, in append order, at most `limit`: what a process that follows the
    /// outbox itself reads (see [`OutboxFollower`](crate::service::OutboxFollower)).
    /// Stores that cannot serve followers keep this default, which returns nothing.
    async fn appended_since(
        &self,
        _after: i64,
        _also: &[i64],
        _limit: u32,
    ) -> StoreResult<Vec<OutboxRecord>> {
        Ok(Vec::new())
    }
    /// The highest position appended so far (0 for none): where a new follower starts.
    async fn head(&self) -> StoreResult<i64> {
        Ok(0)
    }
    /// Deletes events published before `cutoff` (unpublished events are never
    /// deleted). Returns how many. Stores that drop events once published keep this
    /// default.
    async fn prune_published(&self, _cutoff: Timestamp) -> StoreResult<u64> {
        Ok(0)
    }
}

/// A cache failure. Never fatal: the caching layer falls back to the store.
#[derive(Debug, thiserror::Error)]
#[error("cache unavailable: {0}")]
pub struct CacheError(#[source] pub crate::error::BoxError);

/// A key-value cache with TTLs and fenced writes.
#[cfg_attr(any(test, feature = "testing"), automock)]
#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// The value under `key`, if present and not expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError>;
    /// A fence token for `key`: take it before loading from the store, pass it to
    /// `set`, and the write is dropped if `key` was invalidated in between.
    async fn fence(&self, key: &str) -> Result<u64, CacheError>;
    /// Stores `value` under `key` for `ttl`. With a fence, stores only if `key` was not
    /// invalidated (by key or prefix) since the fence was taken. Returns whether stored.
    async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        fence: Option<u64>,
    ) -> Result<bool, CacheError>;
    /// Removes `keys` and invalidates their fences. Returns how many values were removed.
    async fn invalidate(&self, keys: &[String]) -> Result<u64, CacheError>;
    /// Removes every key starting with `prefix` and invalidates their fences.
    async fn invalidate_prefix(&self, prefix: &str) -> Result<u64, CacheError>;
}

/// Publishes events to subscribers.
///
/// Delivery is at least once: a relay that retries a publish sends an event twice,
/// and a group member that resumes after the last commit receives again what its
/// predecessor had not committed. Every subscription an implementation returns drops
/// an event id it returned recently, through [`Deduplicated`] (the one place where a
/// duplicate is dropped); what comes again after that window, or to another member,
/// is handled again, which the consumers make harmless.
#[cfg_attr(any(test, feature = "testing"), automock)]
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publishes `events` in order, durably for the bus: once this returns, every
    /// subscription group will see them. Partitioned by aggregate id, so one
    /// aggregate's events keep their order.
    async fn publish(&self, events: &[Event]) -> StoreResult<()>;
    /// Joins consumer group `group`. A group resumes after the last committed event;
    /// each event goes to one member of a group.
    async fn subscribe(&self, group: &str) -> StoreResult<Box<dyn Subscription>>;
    /// A private subscription for this process alone that sees events published from
    /// now on (no history, no group sharing, nothing to commit): for live views such
    /// as Server-Sent Events. The default joins a fresh unique group.
    async fn subscribe_live(&self) -> StoreResult<Box<dyn Subscription>> {
        self.subscribe(&format!("live-{}", uuid::Uuid::now_v7().simple()))
            .await
    }
}

/// A member of a consumer group.
#[async_trait]
pub trait Subscription: Send {
    /// The next event, waiting up to `timeout`; `None` when none arrived in time.
    async fn next(&mut self, timeout: Duration) -> StoreResult<Option<Event>>;
    /// Commits every event returned so far: a restarted member resumes after them.
    async fn commit(&mut self) -> StoreResult<()>;
    /// Leaves the group. Must not hang: a bounded, clean close.
    async fn close(self: Box<Self>);
}

/// How many event ids a [`Deduplicated`] subscription remembers unless its bus is told
/// otherwise: far more than a relay batch or the events a member holds uncommitted,
/// the windows duplicates come in.
pub const DEFAULT_DEDUP_CAPACITY: usize = 10_000;

/// A [`Subscription`] that drops an event whose id it returned among the last
/// `capacity` distinct ids: a relay's retried publish, a redelivery after a rebalance.
/// Every [`EventBus`] wraps the subscriptions it hands out in it, so a duplicate
/// delivery is dropped in this one place. A dropped duplicate still counts as
/// received: [`commit`](Subscription::commit) moves past it.
pub struct Deduplicated<S> {
    inner: S,
    recent: hashlink::LruCache<EventId, ()>,
}

impl<S> Deduplicated<S> {
    /// `inner`, dropping repeats among the last `capacity` ids (at least one).
    pub fn new(inner: S, capacity: usize) -> Self {
        Self {
            inner,
            recent: hashlink::LruCache::new(capacity.max(1)),
        }
    }

    /// The wrapped subscription.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Deduplicated<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deduplicated")
            .field("inner", &self.inner)
            .field("remembered", &self.recent.len())
            .field("capacity", &self.recent.capacity())
            .finish()
    }
}

#[async_trait]
impl<S: Subscription> Subscription for Deduplicated<S> {
    async fn next(&mut self, timeout: Duration) -> StoreResult<Option<Event>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(event) = self.inner.next(left).await? else {
                return Ok(None);
            };
            if self.recent.insert(event.id, ()).is_none() {
                return Ok(Some(event));
            }
            tracing::debug!(event = %event.id, kind = %event.kind, "dropped a duplicate event");
        }
    }

    async fn commit(&mut self) -> StoreResult<()> {
        self.inner.commit().await
    }

    async fn close(self: Box<Self>) {
        let Self { inner, .. } = *self;
        Box::new(inner).close().await;
    }
}

/// An early "no" for orders on a drop known to be sold out, before they reach the
/// authoritative store. A gate may only refuse what would fail anyway (on data at
/// most its documented lag old); it never admits on its own: every admitted order is
/// still decided by [`OrderRepository::place_order`].
#[cfg_attr(any(test, feature = "testing"), automock)]
#[async_trait]
pub trait AdmissionGate: Send + Sync + 'static {
    /// `false` when the gate knows fewer than `quantity` units of variant `sku` are
    /// available. Unknown drops and variants are admitted. Errors are treated as
    /// "admit" by the caller.
    async fn admit(&self, drop: DropId, sku: &str, quantity: u32) -> Result<bool, CacheError>;
    /// Records variant `sku`'s authoritative stock after a change; `version` is the
    /// variant's stock version, and an older version never overwrites a newer one.
    async fn record(
        &self,
        drop: DropId,
        sku: &str,
        stock: &Stock,
        version: i64,
    ) -> Result<(), CacheError>;
}

/// The gate that admits everything: the default.
#[derive(Debug, Default, Clone, Copy)]
pub struct OpenGate;

#[async_trait]
impl AdmissionGate for OpenGate {
    async fn admit(&self, _drop: DropId, _sku: &str, _quantity: u32) -> Result<bool, CacheError> {
        Ok(true)
    }
    async fn record(
        &self,
        _drop: DropId,
        _sku: &str,
        _stock: &Stock,
        _version: i64,
    ) -> Result<(), CacheError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::event::EventType;

    /// A subscription that returns a fixed list of events, then nothing.
    #[derive(Debug, Default)]
    struct Scripted {
        events: VecDeque<Event>,
        returned: usize,
        committed: usize,
    }

    #[async_trait]
    impl Subscription for Scripted {
        async fn next(&mut self, _timeout: Duration) -> StoreResult<Option<Event>> {
            let next = self.events.pop_front();
            self.returned += usize::from(next.is_some());
            Ok(next)
        }
        async fn commit(&mut self) -> StoreResult<()> {
            self.committed = self.returned;
            Ok(())
        }
        async fn close(self: Box<Self>) {}
    }

    fn event() -> Event {
        Event::new(
            EventType::UserFollowed,
            uuid::Uuid::now_v7(),
            1,
            serde_json::json!({}),
            chrono::DateTime::UNIX_EPOCH,
        )
    }

    async fn all(sub: &mut Deduplicated<Scripted>) -> Vec<EventId> {
        let mut got = Vec::new();
        while let Some(event) = sub.next(Duration::ZERO).await.expect("next") {
            got.push(event.id);
        }
        got
    }

    #[tokio::test]
    async fn repeats_are_dropped_and_still_committed() {
        let (a, b) = (event(), event());
        let script = [&a, &a, &b, &a, &b].map(|e| (*e).clone());
        let mut sub = Deduplicated::new(
            Scripted {
                events: script.into(),
                ..Scripted::default()
            },
            DEFAULT_DEDUP_CAPACITY,
        );
        assert_eq!(all(&mut sub).await, vec![a.id, b.id]);
        sub.commit().await.expect("commit");
        assert_eq!(
            sub.get_ref().committed,
            5,
            "the commit moves past the dropped duplicates too"
        );
    }

    #[tokio::test]
    async fn only_the_last_ids_up_to_the_capacity_are_remembered() {
        let (a, b, c) = (event(), event(), event());
        let script = [&a, &a, &b, &c, &a, &c].map(|e| (*e).clone());
        let mut sub = Deduplicated::new(
            Scripted {
                events: script.into(),
                ..Scripted::default()
            },
            2,
        );
        // `a` falls out of the window when `c` arrives; `c` is still known after.
        assert_eq!(all(&mut sub).await, vec![a.id, b.id, c.id, a.id]);
    }
}
