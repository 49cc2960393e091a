//! What the SQL stores (PostgreSQL, SQLite) share, so that each thing they both do
//! is said once:
//!
//! - [`rows`]: the rows both read and their conversion into the domain, generic over
//!   how a point in time is stored ([`rows::Stamp`]);
//! - [`catalog`], [`orders`], [`waitlist`], [`outbox`]: the bodies of the repository ports, written
//!   once (SQL with `$n` parameters, which both dialects read) and expanded for each
//!   store by a macro, where only the connection types and the store's `dialect`
//!   module differ;
//! - keyset paging ([`keyset_page`]), one-row reads ([`optional_row`]) and the sorting
//!   of sqlx errors ([`sort_error`]);
//! - about orders: a variant's stock row, the refusal rules checked under the
//!   buyers' and variants' locks, the decision of a batch in arrival order, the
//!   plan of a waitlist hand-off ([`plan_waitlist`]), and group reserve's combiner,
//!   which turns the concurrent `place_order` calls of this process on one drop into
//!   one transaction per batch.
//!
//! A store supplies the batch decision ([`Batcher::decide`]: one transaction that
//! decides every order of the batch in arrival order against committed state); this
//! module queues the calls, runs one combiner task per hot drop, answers each caller
//! and retires the task when its drop cools down.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use livedrop_core::clock::Timestamp;
use livedrop_core::event::{Event, EventType};
use livedrop_core::id::DropId;
use livedrop_core::model::{self, Order, OrderStatus, PlaceOutcome, Stock};
use livedrop_core::{StoreError, StoreResult};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use uuid::Uuid;

pub(crate) mod catalog;
pub(crate) mod fair;
pub(crate) mod orders;
pub(crate) mod outbox;
pub(crate) mod rows;
pub(crate) mod waitlist;

/// A combiner that saw no order for this long retires (its drop cooled down).
const IDLE: Duration = Duration::from_secs(2);
/// Attempts at a batch that lost an idempotency-key race to another transaction,
/// and at handing an order to a combiner that was retiring.
const ATTEMPTS: usize = 3;

/// Attempts at a settlement, sweep or restock whose waitlist hand-off met a buyer
/// who joined after the buyers' locks were taken.
pub(crate) const HANDOFF_ATTEMPTS: usize = 8;

static NEXT_QUEUE: AtomicU64 = AtomicU64::new(1);

/// Sorts a sqlx error into the core's store errors, the same way for both dialects:
/// the database cannot serve now (I/O, TLS, pool timeout, closed pool, a worker that
/// died, or a database error whose code `unavailable` accepts) →
/// [`StoreError::Unavailable`] (`"database"`); a unique violation →
/// [`StoreError::Conflict`] saying `conflict` of it; anything else →
/// [`StoreError::Backend`].
pub(crate) fn sort_error(
    e: sqlx::Error,
    unavailable: fn(&str) -> bool,
    conflict: fn(&dyn sqlx::error::DatabaseError) -> String,
) -> StoreError {
    match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::unavailable("database", e),
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(conflict(db.as_ref()))
        }
        sqlx::Error::Database(db) if db.code().as_deref().is_some_and(unavailable) => {
            StoreError::unavailable("database", e)
        }
        _ => StoreError::backend(e),
    }
}

/// Whether the database answers (for readiness checks).
pub(crate) async fn ping<DB>(
    pool: &sqlx::Pool<DB>,
    map_err: fn(sqlx::Error) -> StoreError,
) -> StoreResult<()>
where
    DB: sqlx::Database,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(map_err)
}

/// A failed migration as a store error: a statement's failure as `map_err` sorts
/// it, anything else (a changed or missing migration) as a backend error.
pub(crate) fn migrate_error(
    e: sqlx::migrate::MigrateError,
    map_err: fn(sqlx::Error) -> StoreError,
) -> StoreError {
    match e {
        sqlx::migrate::MigrateError::Execute(e) => map_err(e),
        other => StoreError::backend(other),
    }
}

/// Asserts what every store's `map_sqlx_error` says of a pool that cannot serve:
/// the database is unavailable.
#[cfg(test)]
pub(crate) fn assert_pool_failures_unavailable(map_sqlx_error: fn(sqlx::Error) -> StoreError) {
    assert!(map_sqlx_error(sqlx::Error::PoolTimedOut).is_unavailable());
    assert!(map_sqlx_error(sqlx::Error::PoolClosed).is_unavailable());
}

/// `v` as a stored count, which is never negative nor past `u32::MAX` (CHECKs).
pub(crate) fn to_u32(v: i64) -> StoreResult<u32> {
    u32::try_from(v).map_err(|_| StoreError::backend(format!("count {v} out of range")))
}

/// Rows fetched for a page: one more than the limit, telling whether another exists.
pub(crate) fn overfetch(page: &livedrop_core::page::PageRequest) -> i64 {
    i64::from(page.limit) + 1
}

/// How a listing turns its rows into items (`into`) and names an item's place
/// (`cursor`).
pub(crate) type Listing<R, T> = (
    fn(R) -> StoreResult<T>,
    fn(&T) -> livedrop_core::page::Cursor,
);

/// A keyset page, newest first: runs `query` (bound up to the cursor's parameters)
/// with one more parameter, the limit plus one, on `pool`; converts each row with
/// `into` and cuts the page at `page.limit`, its next cursor from `cursor`.
pub(crate) async fn keyset_page<'q, DB, R, T>(
    pool: &sqlx::Pool<DB>,
    query: sqlx::query::QueryAs<'q, DB, R, <DB as sqlx::Database>::Arguments<'q>>,
    page: &livedrop_core::page::PageRequest,
    (into, cursor): Listing<R, T>,
    map_err: fn(sqlx::Error) -> StoreError,
) -> StoreResult<livedrop_core::page::Page<T>>
where
    DB: sqlx::Database,
    R: for<'r> sqlx::FromRow<'r, DB::Row> + Send + Unpin,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let items = query
        .bind(overfetch(page))
        .fetch_all(pool)
        .await
        .map_err(map_err)?
        .into_iter()
        .map(into)
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(livedrop_core::page::Page::from_overfetch(
        items, page.limit, cursor,
    ))
}

/// The row `query` reads through `conn`, if any, converted by `into`.
pub(crate) async fn optional_row<'q, 'c, DB, E, R, T>(
    conn: E,
    query: sqlx::query::QueryAs<'q, DB, R, <DB as sqlx::Database>::Arguments<'q>>,
    into: fn(R) -> StoreResult<T>,
    map_err: fn(sqlx::Error) -> StoreError,
) -> StoreResult<Option<T>>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'c, Database = DB>,
    R: for<'r> sqlx::FromRow<'r, DB::Row> + Send + Unpin,
    <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
{
    query
        .fetch_optional(conn)
        .await
        .map_err(map_err)?
        .map(into)
        .transpose()
}

/// An inventory row's counts and version: one variant's stock.
#[derive(sqlx::FromRow, Clone, Copy, Debug)]
pub(crate) struct StockRow {
    pub(crate) total_stock: i64,
    pub(crate) available: i64,
    pub(crate) reserved: i64,
    pub(crate) sold: i64,
    pub(crate) version: i64,
}

impl StockRow {
    pub(crate) const COLUMNS: &'static str = "total_stock, available, reserved, sold, version";

    pub(crate) fn stock(&self) -> StoreResult<Stock> {
        Ok(Stock {
            total: to_u32(self.total_stock)?,
            available: to_u32(self.available)?,
            reserved: to_u32(self.reserved)?,
            sold: to_u32(self.sold)?,
        })
    }

    /// Moves `quantity` available units to reserved, bumping the version; returns
    /// the stock before and after.
    pub(crate) fn reserve(&mut self, quantity: u32) -> StoreResult<(Stock, Stock)> {
        let before = self.stock()?;
        self.take(quantity);
        self.version += 1;
        Ok((before, self.stock()?))
    }

    /// Moves `quantity` available units to reserved within a movement already
    /// counted in the version (a waitlist hand-off).
    pub(crate) fn take(&mut self, quantity: u32) {
        let q = i64::from(quantity);
        self.available -= q;
        self.reserved += q;
    }

    /// Moves `quantity` reserved units back to available (or to sold when `sell`),
    /// bumping the version; returns the stock before and after.
    pub(crate) fn release(&mut self, quantity: u32, sell: bool) -> StoreResult<(Stock, Stock)> {
        let before = self.stock()?;
        let q = i64::from(quantity);
        self.reserved -= q;
        if sell {
            self.sold += q;
        } else {
            self.available += q;
        }
        self.version += 1;
        Ok((before, self.stock()?))
    }
}

/// One variant's inventory row: its sku and stock.
#[derive(sqlx::FromRow, Clone, Debug)]
pub(crate) struct VariantRow {
    pub(crate) sku: String,
    #[sqlx(flatten)]
    pub(crate) stock: StockRow,
}

impl VariantRow {
    pub(crate) const COLUMNS: &'static str = "sku, total_stock, available, reserved, sold, version";
}

/// A batch buyer's idempotency key as stored (`idempotency_keys`).
#[derive(Debug, Clone)]
pub(crate) struct KeyRow {
    /// The fingerprint of the request that claimed or finished it.
    pub(crate) fingerprint: String,
    /// Finished, with `response`; else claimed until `lease_until`.
    pub(crate) completed: bool,
    /// The claim's lease.
    pub(crate) lease_until: Option<Timestamp>,
    /// The finished key's response.
    pub(crate) response: Option<serde_json::Value>,
}

/// A key a batch finishes in its transaction: the answer of its order
/// ([`livedrop_core::service::order_record`]).
#[derive(Debug, Clone)]
pub(crate) struct FinishedKey {
    /// The buyer.
    pub(crate) user: Uuid,
    /// The key.
    pub(crate) key: String,
    /// The order's fingerprint.
    pub(crate) fingerprint: String,
    /// The answer kept under the key.
    pub(crate) response: serde_json::Value,
    /// When: a claim whose lease ended by then is taken over.
    pub(crate) at: Timestamp,
}

/// What the keys already hold decide for `r`, before its drop is looked at: an
/// order under its key (`known`) → `Duplicate`; a key finished or claimed (`keys`)
/// → `Replayed`, `KeyReused` or `KeyInFlight` (a claim whose lease ended by `r.now`
/// decides nothing: the batch takes it over).
pub(crate) fn prior_outcome(
    known: &HashMap<(Uuid, String), Order>,
    keys: &HashMap<(Uuid, String), KeyRow>,
    r: &Placement,
) -> Option<PlaceOutcome> {
    let key = (r.order.user_id.0, r.order.idempotency_key.clone());
    if let Some(existing) = known.get(&key) {
        return Some(PlaceOutcome::Duplicate(existing.clone()));
    }
    let row = keys.get(&key)?;
    let response = row
        .completed
        .then(|| row.response.clone().unwrap_or(serde_json::Value::Null));
    livedrop_core::service::key_outcome(
        &row.fingerprint,
        response.as_ref(),
        row.lease_until,
        &r.order.fingerprint,
        r.now,
    )
}

/// Whether no order of `batch` can take its buyer past the drop's per-user limit,
/// whatever each buyer holds, so the batch need not read what they hold: a buyer
/// holds at most the units the drop has reserved and sold (`view`, read after the
/// buyers' locks, so with every order they placed), and the batch adds at most its
/// own units. A drop without a limit of its own has one as large as its stock, so
/// a hot drop read this way skips a sum over its orders that grows with every sale.
pub(crate) fn limit_out_of_reach(view: &model::DropView, batch: &[Placement]) -> bool {
    let held_at_most = u64::from(view.stock.reserved) + u64::from(view.stock.sold);
    let batch_units: u64 = batch.iter().map(|r| u64::from(r.order.quantity)).sum();
    held_at_most + batch_units <= u64::from(view.drop.per_user_limit)
}

/// What a batch decided, to be written in its transaction.
pub(crate) struct BatchDecision {
    /// One outcome per order of the batch, in order.
    pub(crate) outcomes: Vec<PlaceOutcome>,
    /// The orders to insert (status `reserved`).
    pub(crate) placed: Vec<Order>,
    /// `order.placed` and stock events, in order.
    pub(crate) events: Vec<Event>,
    /// The variant rows the batch moved, after the batch, in sku order.
    pub(crate) stock: Vec<VariantRow>,
    /// The keys the batch finishes, one per decided order.
    pub(crate) keys: Vec<FinishedKey>,
}

/// Decides `batch` on a drop whose touched variant rows (`stock`, by sku) are held,
/// in arrival order: first what the buyer's key holds ([`prior_outcome`]: `known`
/// orders on any drop, `keys` as stored); otherwise the variant, liveness, the
/// per-user limit (`held`: units each buyer holds in the drop, all variants) and the
/// variant's stock, each order seeing the ones decided before it. Each `Placed`,
/// `LimitExceeded` and `OutOfStock` finishes its key.
pub(crate) fn decide_batch(
    drop: &model::Drop,
    mut stock: BTreeMap<String, StockRow>,
    mut known: HashMap<(Uuid, String), Order>,
    mut keys: HashMap<(Uuid, String), KeyRow>,
    mut held: HashMap<Uuid, i64>,
    batch: &[Placement],
) -> StoreResult<BatchDecision> {
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut placed: Vec<Order> = Vec::new();
    let mut events = Vec::new();
    let mut finished = Vec::new();
    let mut moved = std::collections::BTreeSet::new();
    for r in batch {
        if let Some(outcome) = prior_outcome(&known, &keys, r) {
            outcomes.push(outcome);
            continue;
        }
        let key = (r.order.user_id.0, r.order.idempotency_key.clone());
        let mut finish = |outcome: &PlaceOutcome| {
            let Some(response) = livedrop_core::service::order_record(outcome, r.order.quantity)
            else {
                return;
            };
            keys.insert(
                key.clone(),
                KeyRow {
                    fingerprint: r.order.fingerprint.clone(),
                    completed: true,
                    lease_until: None,
                    response: Some(response.clone()),
                },
            );
            finished.push(FinishedKey {
                user: key.0,
                key: key.1.clone(),
                fingerprint: r.order.fingerprint.clone(),
                response,
                at: r.now,
            });
        };
        // The drop's variants are its inventory rows: a sku without a row is not one.
        let Some(row) = stock.get_mut(&r.order.sku) else {
            outcomes.push(PlaceOutcome::UnknownVariant);
            continue;
        };
        let units = held.entry(key.0).or_insert(0);
        if let Some(no) = refusal(
            drop,
            r.now,
            to_u32(*units)?,
            to_u32(row.available)?,
            r.order.quantity,
        ) {
            finish(&no);
            outcomes.push(no);
            continue;
        }
        let (before, after) = row.reserve(r.order.quantity)?;
        *units += i64::from(r.order.quantity);
        let order = reserved(&r.order);
        events.push(Event::order(EventType::OrderPlaced, &order, r.now));
        events.extend(Event::stock_moved(
            drop.id.0,
            &order.sku,
            &before,
            &after,
            row.version,
            r.now,
        ));
        moved.insert(order.sku.clone());
        let outcome = PlaceOutcome::Placed(order.clone());
        finish(&outcome);
        known.insert(key, order.clone());
        placed.push(order);
        outcomes.push(outcome);
    }
    let stock = stock
        .into_iter()
        .filter(|(sku, _)| moved.contains(sku))
        .map(|(sku, stock)| VariantRow { sku, stock })
        .collect();
    Ok(BatchDecision {
        outcomes,
        placed,
        events,
        stock,
        keys: finished,
    })
}

/// Why an order cannot be placed on a drop whose variant row is held, checked in
/// the contract's order (liveness, per-user limit, stock); `None` when it can.
pub(crate) fn refusal(
    drop: &model::Drop,
    now: Timestamp,
    held: u32,
    available: u32,
    quantity: u32,
) -> Option<PlaceOutcome> {
    if !drop.accepts_orders_at(now) {
        Some(PlaceOutcome::NotLive)
    } else if u64::from(held) + u64::from(quantity) > u64::from(drop.per_user_limit) {
        Some(PlaceOutcome::LimitExceeded {
            limit: drop.per_user_limit,
            held,
        })
    } else if available < quantity {
        Some(PlaceOutcome::OutOfStock { available })
    } else {
        None
    }
}

/// What serving a variant's waitlist decided ([`plan_waitlist`]).
pub(crate) struct HandoffPlan {
    /// The orders the offers place (status `reserved`).
    pub(crate) orders: Vec<Order>,
    /// The buyers whose entries end (served or skipped).
    pub(crate) ended: Vec<Uuid>,
    /// `order.placed` and `waitlist.offered` per offer, `waitlist.skipped` per skip,
    /// in line order.
    pub(crate) events: Vec<Event>,
}

/// Serves variant `sku`'s line (`waiting`, in join order, each with the units its
/// buyer holds in the drop) with `free` units that just came back, as
/// [`model::plan_handoff`] decides, moving the offered units from available to
/// reserved in `stock` (within the movement that freed them: no version bump).
pub(crate) fn plan_waitlist(
    drop: &model::Drop,
    stock: &mut StockRow,
    free: u32,
    waiting: Vec<(model::WaitlistEntry, u32)>,
    now: Timestamp,
    hold: chrono::Duration,
) -> HandoffPlan {
    let mut plan = HandoffPlan {
        orders: Vec::new(),
        ended: Vec::new(),
        events: Vec::new(),
    };
    for step in model::plan_handoff(free, drop.per_user_limit, waiting) {
        match step {
            model::Handoff::Offer { entry, quantity } => {
                let order = Order::waitlist_offer(drop, &entry, quantity, now, hold);
                stock.take(quantity);
                plan.events
                    .push(Event::order(EventType::OrderPlaced, &order, now));
                plan.events.push(Event::waitlist(
                    EventType::WaitlistOffered,
                    &entry,
                    Some(&order),
                    now,
                ));
                plan.ended.push(entry.user_id.0);
                plan.orders.push(order);
            }
            model::Handoff::Skip { entry, .. } => {
                plan.events.push(Event::waitlist(
                    EventType::WaitlistSkipped,
                    &entry,
                    None,
                    now,
                ));
                plan.ended.push(entry.user_id.0);
            }
        }
    }
    plan
}

/// The order as stored when placed.
pub(crate) fn reserved(order: &Order) -> Order {
    Order {
        status: OrderStatus::Reserved,
        extended_at: None,
        ..order.clone()
    }
}

/// One order waiting in a batch.
pub(crate) struct Placement {
    /// The order to place.
    pub(crate) order: Order,
    /// The caller's time of decision.
    pub(crate) now: Timestamp,
}

struct Request {
    placement: Placement,
    reply: oneshot::Sender<StoreResult<PlaceOutcome>>,
}

/// The queue of one drop's combiner.
struct Queue {
    id: u64,
    tx: mpsc::UnboundedSender<Request>,
}

/// The combiner queues of one store, one per drop with orders in flight, and where
/// their batches spent their time.
#[derive(Default)]
pub(crate) struct Combiners {
    queues: Mutex<HashMap<DropId, Queue>>,
    profile: Mutex<BatchProfile>,
}

impl Combiners {
    /// Queues registered now: one per drop whose combiner has not retired.
    pub(crate) fn len(&self) -> usize {
        self.queues.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The time of every batch transaction decided so far, by step.
    pub(crate) fn profile(&self) -> BatchProfile {
        *self.profile.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds one batch transaction's steps to the profile.
    pub(crate) fn record(&self, orders: usize, steps: &BatchSteps) {
        let one = BatchProfile {
            batches: 1,
            orders: orders as u64,
            steps: steps.took,
            rows_held: steps.rows_held(),
        };
        *self.profile.lock().unwrap_or_else(|p| p.into_inner()) += &one;
    }
}

/// The steps of one batch transaction, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStep {
    /// A pooled connection and `BEGIN`.
    Begin,
    /// The buyers' locks (waiting for another transaction's buyers included).
    BuyerLocks,
    /// The orders and idempotency keys already stored under the batch's keys.
    Known,
    /// The variant rows, locked (waiting for another writer included).
    StockRows,
    /// The drop and its variants, and the units the batch's buyers hold.
    DropView,
    /// Deciding every order in arrival order, in this process.
    Decide,
    /// The one statement writing stock, orders, events and keys.
    Write,
    /// `COMMIT` (or the rollback of a batch with nothing to write).
    Commit,
}

impl BatchStep {
    /// Every step, in the order a batch runs them.
    pub const ALL: [BatchStep; 8] = [
        BatchStep::Begin,
        BatchStep::BuyerLocks,
        BatchStep::Known,
        BatchStep::StockRows,
        BatchStep::DropView,
        BatchStep::Decide,
        BatchStep::Write,
        BatchStep::Commit,
    ];

    /// The step's name, in `snake_case`.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStep::Begin => "begin",
            BatchStep::BuyerLocks => "buyer_locks",
            BatchStep::Known => "known",
            BatchStep::StockRows => "stock_rows",
            BatchStep::DropView => "drop_view",
            BatchStep::Decide => "decide",
            BatchStep::Write => "write",
            BatchStep::Commit => "commit",
        }
    }
}

/// Where a store's group-reserve batch transactions spent their time, summed over
/// every batch since the store was built (wall time, so a step that waits for a
/// lock or a round trip counts its wait). For diagnostics and benchmarks:
/// `later.since(&earlier)` is what happened in between.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BatchProfile {
    /// Batch transactions run (retried ones count each attempt).
    pub batches: u64,
    /// Orders in those batches.
    pub orders: u64,
    /// Time per step, indexed like [`BatchStep::ALL`].
    pub steps: [Duration; 8],
    /// Time the variant rows were held locked: from the moment they were locked
    /// until the commit returned.
    pub rows_held: Duration,
}

impl BatchProfile {
    /// The time spent in `step`.
    pub fn step(&self, step: BatchStep) -> Duration {
        self.steps[step as usize]
    }

    /// The time of every step together.
    pub fn total(&self) -> Duration {
        self.steps.iter().sum()
    }

    /// What was added between `earlier` and `self`.
    pub fn since(&self, earlier: &BatchProfile) -> BatchProfile {
        let mut steps = self.steps;
        for (s, e) in steps.iter_mut().zip(earlier.steps) {
            *s = s.saturating_sub(e);
        }
        BatchProfile {
            batches: self.batches.saturating_sub(earlier.batches),
            orders: self.orders.saturating_sub(earlier.orders),
            steps,
            rows_held: self.rows_held.saturating_sub(earlier.rows_held),
        }
    }
}

impl std::ops::AddAssign<&BatchProfile> for BatchProfile {
    /// Adds `other`'s batches, orders and times to these.
    fn add_assign(&mut self, other: &BatchProfile) {
        self.batches += other.batches;
        self.orders += other.orders;
        for (s, o) in self.steps.iter_mut().zip(other.steps) {
            *s += o;
        }
        self.rows_held += other.rows_held;
    }
}

/// A stopwatch over the steps of one batch transaction.
pub(crate) struct BatchSteps {
    took: [Duration; 8],
    lap: std::time::Instant,
    locked: Option<std::time::Instant>,
}

impl BatchSteps {
    /// Starts timing the first step.
    pub(crate) fn start() -> Self {
        BatchSteps {
            took: [Duration::ZERO; 8],
            lap: std::time::Instant::now(),
            locked: None,
        }
    }

    /// Ends `step` now (and starts timing the next).
    pub(crate) fn done(&mut self, step: BatchStep) {
        let now = std::time::Instant::now();
        self.took[step as usize] += now - self.lap;
        self.lap = now;
        if step == BatchStep::StockRows {
            self.locked = Some(now);
        }
    }

    fn rows_held(&self) -> Duration {
        self.locked.map_or(Duration::ZERO, |at| self.lap - at)
    }
}

/// A store that decides batches of orders on one drop.
#[async_trait]
pub(crate) trait Batcher: Send + Sync + 'static {
    /// The store's combiner queues.
    fn combiners(&self) -> &Combiners;

    /// How many batches of one drop may be in flight at once: more than one only
    /// where another transaction can do its first steps while one holds the
    /// variant rows (not SQLite, whose one writer holds the whole database).
    fn in_flight(&self) -> usize {
        1
    }

    /// Decides and writes `batch` (orders on `drop`, in arrival order) in one
    /// transaction, returning one outcome per order, taking the buyers' locks and
    /// then the variant rows only in its `turn`. `Ok(None)`: a concurrent
    /// transaction took one of the batch's idempotency keys first and nothing was
    /// written; the batch is tried again.
    async fn decide(
        &self,
        drop: DropId,
        batch: &[Placement],
        turn: &mut Turn,
    ) -> StoreResult<Option<Vec<PlaceOutcome>>>;
}

/// How far a batch transaction has gone, for the batch behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stage {
    /// Not locked anything yet.
    Started,
    /// Holds its buyers' locks.
    Buyers,
    /// Holds its variant rows (and its buyers' locks).
    Rows,
}

/// A batch's place behind the batch of the same drop started before it, when
/// several are in flight ([`Batcher::in_flight`]): it takes its buyers' locks only
/// once the one ahead holds its own, and locks the variant rows only once the one
/// ahead holds them. So the orders of one drop are decided in the order their
/// batches formed (the database queues the row lock in request order), and no
/// batch waits for one behind it: the batch ahead never needs a lock the batch
/// behind holds, so the two cannot deadlock. The batch ahead ending, however it
/// ends, lets the batch behind go on.
pub(crate) struct Turn {
    ahead: Option<watch::Receiver<Stage>>,
    own: watch::Sender<Stage>,
}

impl Turn {
    /// A batch with none ahead of it (one decided on its own).
    pub(crate) fn first() -> Self {
        Turn::behind(None).0
    }

    /// A batch behind `ahead`, and what the batch behind it waits on.
    fn behind(ahead: Option<watch::Receiver<Stage>>) -> (Self, watch::Receiver<Stage>) {
        let (own, rx) = watch::channel(Stage::Started);
        (Turn { ahead, own }, rx)
    }

    /// Waits until the batch ahead has reached `stage` or ended.
    pub(crate) async fn wait(&mut self, stage: Stage) {
        if let Some(ahead) = &mut self.ahead {
            // `Err`: the batch ahead ended (its sender dropped).
            let _ = ahead.wait_for(|s| *s >= stage).await;
        }
    }

    /// This batch has reached `stage`.
    pub(crate) fn reached(&self, stage: Stage) {
        self.own.send_replace(stage);
    }
}

/// A copy of an error for each caller of a failed batch.
fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable { what, source } => {
            StoreError::unavailable(what, source.to_string())
        }
        StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
        StoreError::NotFound => StoreError::NotFound,
        other => StoreError::backend(other.to_string()),
    }
}

/// Queues `order` to its drop's combiner and waits for the decision. `None` when the
/// order could not be handed to a combiner (each was retiring as it was asked): the
/// caller decides the order on its own.
pub(crate) async fn place<B: Batcher>(
    batcher: &Arc<B>,
    order: &Order,
    now: Timestamp,
    max_batch: usize,
) -> Option<StoreResult<PlaceOutcome>> {
    let (reply, answer) = oneshot::channel();
    let mut request = Request {
        placement: Placement {
            order: order.clone(),
            now,
        },
        reply,
    };
    // A send fails only if the combiner retired between lookup and send; the next
    // lookup starts a fresh one.
    for _ in 0..ATTEMPTS {
        let tx = queue(batcher, order.drop_id, max_batch);
        match tx.send(request) {
            Ok(()) => {
                return Some(answer.await.unwrap_or_else(|_| {
                    Err(StoreError::backend(
                        "the drop's order combiner stopped before answering",
                    ))
                }))
            }
            Err(mpsc::error::SendError(back)) => request = back,
        }
    }
    None
}

fn queue<B: Batcher>(
    batcher: &Arc<B>,
    drop: DropId,
    max_batch: usize,
) -> mpsc::UnboundedSender<Request> {
    let mut queues = batcher
        .combiners()
        .queues
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(q) = queues.get(&drop) {
        if !q.tx.is_closed() {
            return q.tx.clone();
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let id = NEXT_QUEUE.fetch_add(1, Ordering::Relaxed);
    queues.insert(drop, Queue { id, tx: tx.clone() });
    tokio::spawn(combine(Arc::clone(batcher), drop, id, rx, max_batch.max(1)));
    tx
}

/// The combiner of one drop: takes whatever queued while the batches in flight ran
/// (up to `max_batch`), decides it in one transaction (up to
/// [`Batcher::in_flight`] at once, each in its [`Turn`]), answers, repeats.
async fn combine<B: Batcher>(
    batcher: Arc<B>,
    drop: DropId,
    id: u64,
    mut rx: mpsc::UnboundedReceiver<Request>,
    max_batch: usize,
) {
    let slots = Arc::new(Semaphore::new(batcher.in_flight().max(1)));
    let mut ahead: Option<watch::Receiver<Stage>> = None;
    loop {
        let first = match tokio::time::timeout(IDLE, rx.recv()).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(_) => {
                // Retire: unregister, refuse new sends, then serve what slipped in.
                {
                    let mut queues = batcher
                        .combiners()
                        .queues
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    if queues.get(&drop).is_some_and(|q| q.id == id) {
                        queues.remove(&drop);
                    }
                }
                rx.close();
                let mut rest = Vec::new();
                while let Ok(r) = rx.try_recv() {
                    rest.push(r);
                }
                // Behind whatever is still in flight.
                let _all = slots.acquire_many(batcher.in_flight().max(1) as u32).await;
                while !rest.is_empty() {
                    let tail = rest.split_off(rest.len().min(max_batch));
                    run_batch(batcher.as_ref(), drop, rest, Turn::first()).await;
                    rest = tail;
                }
                return;
            }
        };
        // A free slot; what queues meanwhile joins this batch.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        // Let callers just answered by the previous batch queue their next order.
        tokio::task::yield_now().await;
        let mut batch = Vec::with_capacity(max_batch.min(64));
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let (turn, next) = Turn::behind(ahead.take());
        ahead = Some(next);
        let batcher = Arc::clone(&batcher);
        tokio::spawn(async move {
            let _slot = slot;
            run_batch(batcher.as_ref(), drop, batch, turn).await;
        });
    }
}

async fn run_batch<B: Batcher>(batcher: &B, drop: DropId, batch: Vec<Request>, mut turn: Turn) {
    // A caller whose future was dropped while its order queued (its client went
    // away) leaves no work behind: its order is not placed, and its key, released
    // by the caller's guard, places it on a retry.
    let batch: Vec<Request> = batch
        .into_iter()
        .filter(|r| {
            let gone = r.reply.is_closed();
            if gone {
                tracing::debug!(%drop, "the order of a caller that went away is skipped");
            }
            !gone
        })
        .collect();
    if batch.is_empty() {
        return;
    }
    let (placements, replies): (Vec<Placement>, Vec<_>) =
        batch.into_iter().map(|r| (r.placement, r.reply)).unzip();
    let mut result = Err(StoreError::backend("no attempt"));
    for attempt in 0..ATTEMPTS {
        result = batcher.decide(drop, &placements, &mut turn).await;
        match &result {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) => tracing::debug!(attempt, %drop, "idempotency key race; batch retried"),
        }
    }
    match result {
        Ok(Some(outcomes)) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // A caller that went away no longer needs its answer.
                let _ = reply.send(Ok(outcome));
            }
        }
        Ok(None) => {
            for reply in replies {
                let _ = reply.send(Err(StoreError::Conflict(
                    "idempotency key raced repeatedly".into(),
                )));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, %drop, "order batch failed");
            for reply in replies {
                let _ = reply.send(Err(copy_error(&e)));
            }
        }
    }
}

/// The refusal every store gives to a restock that would take a stock past what it
/// can hold (rather than the CHECK constraint's backend error).
pub(crate) fn restock_overflow(
    adjustment: &model::Adjustment,
    total_stock: i64,
) -> Option<StoreError> {
    // Only a restock can pass the ceiling: the stock never starts above it.
    (total_stock.saturating_add(adjustment.delta) > i64::from(u32::MAX)).then(|| {
        StoreError::Conflict(format!(
            "a restock of {} overflows the stock of variant {} of drop {}",
            adjustment.delta, adjustment.sku, adjustment.drop_id
        ))
    })
}

/// `key` as a stored `i64` in the same order (the sign bit flipped).
pub(crate) fn shuffle_key(key: u64) -> i64 {
    (key ^ (1 << 63)) as i64
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use livedrop_core::id::UserId;
    use livedrop_core::model::{DropState, Role};
    use livedrop_core::testing::fixtures::{self, T0};
    use tokio::sync::Semaphore;

    /// Places every order it is given, recording each batch's size; the first batch
    /// waits until the test lets it go.
    struct Recorder {
        combiners: Combiners,
        batches: Mutex<Vec<usize>>,
        first: Semaphore,
    }

    #[async_trait]
    impl Batcher for Recorder {
        fn combiners(&self) -> &Combiners {
            &self.combiners
        }

        async fn decide(
            &self,
            _drop: DropId,
            batch: &[Placement],
            _turn: &mut Turn,
        ) -> StoreResult<Option<Vec<PlaceOutcome>>> {
            let n = {
                let mut batches = self.batches.lock().unwrap();
                batches.push(batch.len());
                batches.len()
            };
            if n == 1 {
                self.first.acquire().await.unwrap().forget();
            }
            Ok(Some(
                batch
                    .iter()
                    .map(|p| PlaceOutcome::Placed(reserved(&p.order)))
                    .collect(),
            ))
        }
    }

    fn orders(n: usize) -> Vec<Order> {
        let creator = fixtures::user("Creator", Role::Creator);
        let product = fixtures::product(creator.id, "Tee", "", T0);
        let drop = fixtures::drop_of(&product, T0, fixtures::at(3_600), 10, DropState::Live, T0);
        (0..n)
            .map(|i| fixtures::order(UserId::new(), &drop, 1, &format!("k{i}"), T0))
            .collect()
    }

    /// The per-user limit is out of reach exactly while every unit the drop holds plus
    /// the batch's units fit under it.
    #[test]
    fn the_limit_is_out_of_reach_only_while_every_held_unit_and_the_batch_fit_under_it() {
        let creator = fixtures::user("Creator", Role::Creator);
        let product = fixtures::product(creator.id, "Tee", "", T0);
        let mut drop =
            fixtures::drop_of(&product, T0, fixtures::at(3_600), 10, DropState::Live, T0);
        drop.per_user_limit = 6;
        let stock = |reserved: u32, sold: u32| {
            model::DropView::new(
                drop.clone(),
                vec![Stock {
                    total: 10,
                    available: 10 - reserved - sold,
                    reserved,
                    sold,
                }],
            )
        };
        let batch = |quantities: &[u32]| -> Vec<Placement> {
            quantities
                .iter()
                .enumerate()
                .map(|(i, q)| Placement {
                    order: fixtures::order(UserId::new(), &drop, *q, &format!("k{i}"), T0),
                    now: T0,
                })
                .collect()
        };
        // 2 reserved + 1 sold + 3 ordered = 6: no buyer can pass 6.
        assert!(limit_out_of_reach(&stock(2, 1), &batch(&[1, 2])));
        // One more unit held, or one more ordered, and one buyer might.
        assert!(!limit_out_of_reach(&stock(3, 1), &batch(&[1, 2])));
        assert!(!limit_out_of_reach(&stock(2, 1), &batch(&[1, 3])));
        assert!(!limit_out_of_reach(&stock(2, 2), &batch(&[1, 2])));
    }

    /// Orders that queue while a batch runs are decided together, at most `max_batch`
    /// at a time, by the drop's one combiner; every caller gets its own answer, and the
    /// combiner unregisters once its drop cools down.
    #[tokio::test(start_paused = true)]
    async fn queued_orders_are_combined_up_to_the_batch_size_then_the_combiner_retires() {
        let batcher = Arc::new(Recorder {
            combiners: Combiners::default(),
            batches: Mutex::new(Vec::new()),
            first: Semaphore::new(0),
        });
        let orders = orders(10);
        let mut calls = Vec::new();
        for (i, order) in orders.iter().enumerate() {
            let (b, o) = (Arc::clone(&batcher), order.clone());
            calls.push(tokio::spawn(async move { place(&b, &o, T0, 4).await }));
            if i == 0 {
                // The first order is decided alone; the rest queue behind it.
                for _ in 0..1_000 {
                    if !batcher.batches.lock().unwrap().is_empty() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                assert_eq!(
                    *batcher.batches.lock().unwrap(),
                    vec![1],
                    "the first order reaches the store on its own"
                );
            }
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(batcher.combiners.len(), 1, "one combiner per drop");
        batcher.first.add_permits(1);
        for (call, order) in calls.into_iter().zip(&orders) {
            match call.await.unwrap() {
                Some(Ok(PlaceOutcome::Placed(placed))) => assert_eq!(placed.id, order.id),
                other => panic!("expected the order placed by its batch, got {other:?}"),
            }
        }
        assert_eq!(*batcher.batches.lock().unwrap(), vec![1, 4, 4, 1]);
        tokio::time::sleep(IDLE * 2).await;
        assert_eq!(batcher.combiners.len(), 0, "an idle combiner retires");
    }

    /// Two batches in flight, each logging the locks it takes in its turn; the first
    /// stops before its rows until the test lets it go.
    struct Lined {
        combiners: Combiners,
        log: Mutex<Vec<(&'static str, usize)>>,
        started: AtomicU64,
        rows: Semaphore,
    }

    #[async_trait]
    impl Batcher for Lined {
        fn combiners(&self) -> &Combiners {
            &self.combiners
        }

        fn in_flight(&self) -> usize {
            2
        }

        async fn decide(
            &self,
            _drop: DropId,
            batch: &[Placement],
            turn: &mut Turn,
        ) -> StoreResult<Option<Vec<PlaceOutcome>>> {
            let n = self.started.fetch_add(1, Ordering::SeqCst) as usize + 1;
            turn.wait(Stage::Buyers).await;
            self.log.lock().unwrap().push(("buyers", n));
            turn.reached(Stage::Buyers);
            if n == 1 {
                self.rows.acquire().await.unwrap().forget();
            }
            turn.wait(Stage::Rows).await;
            self.log.lock().unwrap().push(("rows", n));
            turn.reached(Stage::Rows);
            Ok(Some(
                batch
                    .iter()
                    .map(|p| PlaceOutcome::Placed(reserved(&p.order)))
                    .collect(),
            ))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_in_flight_behind_another_takes_the_rows_after_it() {
        let batcher = Arc::new(Lined {
            combiners: Combiners::default(),
            log: Mutex::new(Vec::new()),
            started: AtomicU64::new(0),
            rows: Semaphore::new(0),
        });
        let settle = || async {
            for _ in 0..100 {
                tokio::task::yield_now().await;
            }
        };
        let mut calls = Vec::new();
        for order in orders(3) {
            let b = Arc::clone(&batcher);
            calls.push(tokio::spawn(async move { place(&b, &order, T0, 4).await }));
            settle().await;
        }
        // The first batch holds its buyers and waits before its rows; the second
        // took its buyers behind it and waits for its turn at the rows; the third
        // order queues, as both slots are taken.
        assert_eq!(batcher.started.load(Ordering::SeqCst), 2);
        assert_eq!(
            *batcher.log.lock().unwrap(),
            vec![("buyers", 1), ("buyers", 2)]
        );
        batcher.rows.add_permits(1);
        for call in calls {
            assert!(matches!(
                call.await.unwrap(),
                Some(Ok(PlaceOutcome::Placed(_)))
            ));
        }
        assert_eq!(
            *batcher.log.lock().unwrap(),
            vec![
                ("buyers", 1),
                ("buyers", 2),
                ("rows", 1),
                ("rows", 2),
                ("buyers", 3),
                ("rows", 3)
            ]
        );
    }

    #[test]
    fn a_profile_adds_each_step_and_the_rows_held_and_gives_intervals() {
        let combiners = Combiners::default();
        let mut steps = BatchSteps::start();
        std::thread::sleep(Duration::from_millis(2));
        steps.done(BatchStep::Begin);
        std::thread::sleep(Duration::from_millis(2));
        steps.done(BatchStep::StockRows);
        std::thread::sleep(Duration::from_millis(3));
        steps.done(BatchStep::Write);
        steps.done(BatchStep::Commit);
        let begin = steps.took[BatchStep::Begin as usize];
        let rows = steps.took[BatchStep::StockRows as usize];
        let write = steps.took[BatchStep::Write as usize];
        assert!(begin >= Duration::from_millis(2) && rows >= Duration::from_millis(2));
        assert!(write >= Duration::from_millis(3));
        assert_eq!(steps.took[BatchStep::Decide as usize], Duration::ZERO);
        // Held from the moment the rows were locked to the end of the commit.
        let held = steps.rows_held();
        assert_eq!(held, write + steps.took[BatchStep::Commit as usize]);

        combiners.record(3, &steps);
        let first = combiners.profile();
        combiners.record(5, &steps);
        let both = combiners.profile();
        assert_eq!((first.batches, first.orders), (1, 3));
        assert_eq!((both.batches, both.orders), (2, 8));
        assert_eq!(both.step(BatchStep::Begin), begin * 2);
        assert_eq!(both.step(BatchStep::Write), write * 2);
        assert_eq!(both.rows_held, held * 2);
        assert_eq!(both.total(), first.total() * 2);
        assert!(first.total() >= begin + rows + write);
        let between = both.since(&first);
        assert_eq!((between.batches, between.orders), (1, 5));
        assert_eq!(between.step(BatchStep::StockRows), rows);
        assert_eq!(between.rows_held, held);
        assert_eq!(between.total(), first.total());
    }

    /// A batch whose batch ahead ended without reaching a stage (it failed) goes on.
    #[tokio::test]
    async fn the_batch_ahead_ending_lets_the_next_go() {
        let (ahead, rx) = Turn::behind(None);
        let (mut next, _) = Turn::behind(Some(rx));
        ahead.reached(Stage::Buyers);
        next.wait(Stage::Buyers).await;
        drop(ahead);
        next.wait(Stage::Rows).await;
    }
}
