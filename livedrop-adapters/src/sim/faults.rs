//! Fault-injecting decorators for every port, all deciding from one seeded
//! [`Injector`].
//!
//! Each decorator wraps a real adapter and, per call, may add latency, fail before the
//! call reaches the adapter (nothing happened), or fail after it returned (the write
//! happened, the caller sees `unavailable`: an ambiguous commit). Cache and bus
//! outages are windows of virtual time during which every call to them fails.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use livedrop_core::event::Event;
use livedrop_core::id::{DropId, NotificationId, OrderId, ProductId, UserId};
use livedrop_core::model::{
    self, AdjustOutcome, Adjustment, DropFilter, DropState, DropView, ExtendOutcome, FanOutBatch,
    FanOutProgress, FollowEntry, JoinOutcome, LedgerEntry, Notification, Order, PlaceOutcome,
    Product, ProductFilter, SettleOutcome, Settlement, Stock, User, WaitlistEntry, WaitlistJoin,
};
use livedrop_core::model::{
    DrawEntry, DrawEntryRequest, DrawOutcome, EntryOutcome, QueueEntry, QueueOutcome,
};
use livedrop_core::page::{Page, PageRequest};
use livedrop_core::ports::{
    AdmissionGate, BeginOutcome, Cache, CacheError, Claim, DropRepository, EventBus,
    IdempotencyStore, InventoryRepository, NotificationRepository, OrderRepository, Outbox,
    OutboxRecord, ProductRepository, Subscription, UpdateOutcome, UserRepository,
    WaitlistRepository,
};
use livedrop_core::ports::{DrawRepository, QueueRepository};
use livedrop_core::service::Store;
use livedrop_core::{StoreError, StoreResult, Timestamp};
use rand::rngs::StdRng;
use rand::Rng;
use tokio::time::Instant;

/// How often each kind of fault happens. Every rate is a probability in `0..=1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultRates {
    /// A store, cache, bus or gate call fails before reaching the adapter.
    pub fail_before: f64,
    /// A write reaches the adapter and succeeds, then the caller sees `unavailable`.
    pub fail_after: f64,
    /// A call is delayed by up to [`FaultRates::max_latency`] of virtual time.
    pub latency: f64,
    /// The longest injected delay.
    pub max_latency: Duration,
    /// Per step: the cache goes down for a few seconds.
    pub cache_outage: f64,
    /// Per step: the bus goes down for a few seconds.
    pub bus_outage: f64,
    /// Per request: the client gives up after a tiny random wait (its future is dropped).
    pub abandon: f64,
    /// Per step: the clock jumps forward by seconds to minutes.
    pub clock_jump: f64,
    /// Per step: the clock steps back by up to a few seconds (NTP correcting a fast
    /// wall clock).
    pub clock_step_back: f64,
    /// Per step: a process is killed mid-operation.
    pub crash: f64,
    /// Per step: a process shuts down gracefully (possibly during a retry backoff).
    pub shutdown: f64,
}

impl FaultRates {
    /// No faults at all.
    pub fn none() -> Self {
        Self {
            fail_before: 0.0,
            fail_after: 0.0,
            latency: 0.0,
            max_latency: Duration::ZERO,
            cache_outage: 0.0,
            bus_outage: 0.0,
            abandon: 0.0,
            clock_jump: 0.0,
            clock_step_back: 0.0,
            crash: 0.0,
            shutdown: 0.0,
        }
    }

    /// Rates drawn from `rng`: each kind is off in about a third of runs, otherwise
    /// on at a rate up to its cap, so runs mix quiet and hostile conditions.
    pub fn drawn(rng: &mut StdRng) -> Self {
        let mut rate = |cap: f64| {
            if rng.gen_bool(1.0 / 3.0) {
                0.0
            } else {
                rng.gen_range(0.0..cap)
            }
        };
        let fail_before = rate(0.08);
        let fail_after = rate(0.08);
        let latency = rate(0.5);
        let cache_outage = rate(0.04);
        let bus_outage = rate(0.04);
        let abandon = rate(0.2);
        let clock_jump = rate(0.03);
        let crash = rate(0.03);
        let shutdown = rate(0.02);
        let clock_step_back = rate(0.03);
        let max_latency = Duration::from_millis(rng.gen_range(1..400));
        Self {
            fail_before,
            fail_after,
            latency,
            max_latency,
            cache_outage,
            bus_outage,
            abandon,
            clock_jump,
            clock_step_back,
            crash,
            shutdown,
        }
    }
}

/// How many faults of each kind were injected.
#[derive(Debug, Default)]
pub struct FaultCounts {
    /// Calls failed before their effect.
    pub before: AtomicU64,
    /// Calls failed after their effect.
    pub after: AtomicU64,
    /// Calls delayed.
    pub delayed: AtomicU64,
    /// Calls refused by an outage window.
    pub outage: AtomicU64,
}

/// The source of every fault decision: one seeded generator, shared by every decorator
/// of a run. On a single-threaded runtime the calls reach it in a fixed order, so a
/// seed decides every fault.
#[derive(Debug)]
pub struct Injector {
    rng: Mutex<StdRng>,
    rates: FaultRates,
    enabled: AtomicBool,
    cache_down_until: Mutex<Option<Instant>>,
    bus_down_until: Mutex<Option<Instant>>,
    counts: FaultCounts,
    journal: Mutex<BTreeMap<i64, Event>>,
    excused: Mutex<BTreeSet<(UserId, String)>>,
    settling: tokio_util::sync::CancellationToken,
}

/// Where an injected failure strikes a call: before it reaches the adapter (nothing
/// happened) or after it returned (it happened, the caller is told otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strike {
    Before,
    After,
}

/// What happens to one call.
#[derive(Debug, Clone, Copy)]
struct Plan {
    delay: Option<Duration>,
    before: bool,
    after: bool,
}

impl Injector {
    /// An injector drawing from `rng` at `rates`, enabled.
    pub fn new(rng: StdRng, rates: FaultRates) -> Self {
        Self {
            rng: Mutex::new(rng),
            rates,
            enabled: AtomicBool::new(true),
            cache_down_until: Mutex::new(None),
            bus_down_until: Mutex::new(None),
            counts: FaultCounts::default(),
            journal: Mutex::new(BTreeMap::new()),
            excused: Mutex::new(BTreeSet::new()),
            settling: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Cancelled when the run stops injecting faults for good and lets the system
    /// settle: outside fault sources (a task killing database connections) stop then.
    pub fn settling(&self) -> tokio_util::sync::CancellationToken {
        self.settling.clone()
    }

    pub(crate) fn settle(&self) {
        self.set_enabled(false);
        self.settling.cancel();
    }

    /// The rates.
    pub fn rates(&self) -> &FaultRates {
        &self.rates
    }

    /// The counts of injected faults.
    pub fn counts(&self) -> &FaultCounts {
        &self.counts
    }

    /// Turns every fault on or off (outages end when turned off).
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
        if !on {
            *lock(&self.cache_down_until) = None;
            *lock(&self.bus_down_until) = None;
        }
    }

    /// Whether faults are on.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }

    /// Draws a probability from the run's generator: `true` with probability `p`.
    /// Always draws, so the sequence of draws does not depend on the rates.
    pub fn roll(&self, p: f64) -> bool {
        let x: f64 = lock(&self.rng).gen();
        x < p
    }

    /// A uniform draw in `0..n` (0 when `n` is 0).
    pub fn pick(&self, n: usize) -> usize {
        lock(&self.rng).gen_range(0..n.max(1))
    }

    /// A uniform `u64`: what a run uses where the services would draw their own
    /// randomness (a waiting room's shuffle keys), so the seed decides it too.
    pub fn random_u64(&self) -> u64 {
        lock(&self.rng).gen()
    }

    /// `bytes` uniform random bytes as lower-case hex, from the run's seed.
    pub fn random_hex(&self, bytes: usize) -> String {
        let mut rng = lock(&self.rng);
        (0..bytes)
            .map(|_| format!("{:02x}", rng.gen::<u8>()))
            .collect()
    }

    /// A uniform duration up to `max`.
    pub fn duration_up_to(&self, max: Duration) -> Duration {
        let micros = u64::try_from(max.as_micros()).unwrap_or(u64::MAX).max(1);
        Duration::from_micros(lock(&self.rng).gen_range(0..micros))
    }

    /// Makes the cache fail for `span` from now.
    pub fn cache_outage(&self, span: Duration) {
        *lock(&self.cache_down_until) = Some(Instant::now() + span);
    }

    /// Makes the bus fail for `span` from now.
    pub fn bus_outage(&self, span: Duration) {
        *lock(&self.bus_down_until) = Some(Instant::now() + span);
    }

    fn down(&self, window: &Mutex<Option<Instant>>) -> bool {
        let down = self.enabled() && lock(window).is_some_and(|until| Instant::now() < until);
        if down {
            self.counts.outage.fetch_add(1, Ordering::Relaxed);
        }
        down
    }

    fn plan(&self, write: bool) -> Plan {
        let delayed = self.roll(self.rates.latency);
        let delay = self.duration_up_to(self.rates.max_latency);
        let before = self.roll(self.rates.fail_before);
        let after = self.roll(self.rates.fail_after);
        if !self.enabled() {
            return Plan {
                delay: None,
                before: false,
                after: false,
            };
        }
        Plan {
            delay: delayed.then_some(delay),
            before,
            after: write && after,
        }
    }

    /// Every event the relays read from the outbox, by outbox position: what the
    /// store committed (once the outbox has drained).
    pub fn committed_events(&self) -> Vec<Event> {
        lock(&self.journal).values().cloned().collect()
    }

    fn observe(&self, records: &[OutboxRecord]) {
        let mut journal = lock(&self.journal);
        for r in records {
            journal.entry(r.seq).or_insert_with(|| r.event.clone());
        }
    }

    /// Runs `call` under a plan: maybe delayed, maybe refused before it runs, maybe
    /// reported failed after it succeeded. `fault` makes the error for either strike.
    async fn inject<T, E>(
        &self,
        write: bool,
        call: impl Future<Output = Result<T, E>>,
        fault: impl FnOnce(Strike) -> E,
    ) -> Result<T, E> {
        let plan = self.plan(write);
        if let Some(delay) = plan.delay {
            self.counts.delayed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
        }
        if plan.before {
            self.counts.before.fetch_add(1, Ordering::Relaxed);
            return Err(fault(Strike::Before));
        }
        let value = call.await?;
        if plan.after {
            self.counts.after.fetch_add(1, Ordering::Relaxed);
            return Err(fault(Strike::After));
        }
        Ok(value)
    }

    /// [`Injector::inject`] for a store call, failing as an unavailable database.
    async fn guard<T>(
        &self,
        write: bool,
        call: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        self.inject(write, call, |_| injected()).await
    }

    /// Like [`Injector::guard`] for a call on the idempotency key `(user, key)`, which
    /// remembers the faults that leave the key claimed with nobody to give it back: a
    /// `begin` that claimed it and reported failure, a `complete` or `release` that
    /// failed before reaching the store.
    async fn guard_claim<T>(
        &self,
        user: UserId,
        key: &str,
        begin: bool,
        call: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let stranding = if begin { Strike::After } else { Strike::Before };
        self.inject(WRITE, call, |strike| {
            if strike == stranding {
                lock(&self.excused).insert((user, key.to_owned()));
            }
            injected()
        })
        .await
    }

    /// Idempotency keys an injected fault may have left claimed with nobody to give
    /// them back (a `begin` that claimed and reported failure, a `complete` or
    /// `release` that failed before reaching the store): the only claims a run may
    /// end with.
    pub fn excused_claims(&self) -> BTreeSet<(UserId, String)> {
        lock(&self.excused).clone()
    }

    /// Like [`Injector::guard`] for the cache and the gate, which fail with
    /// [`CacheError`] and also during a cache outage.
    async fn guard_cache<T>(
        &self,
        write: bool,
        call: impl Future<Output = Result<T, CacheError>>,
    ) -> Result<T, CacheError> {
        if self.down(&self.cache_down_until) {
            return Err(CacheError("simulated cache outage".into()));
        }
        self.inject(write, call, |strike| {
            CacheError(match strike {
                Strike::Before => "simulated cache failure".into(),
                Strike::After => "simulated cache failure after the write".into(),
            })
        })
        .await
    }

    async fn guard_bus<T>(
        &self,
        write: bool,
        call: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        if self.down(&self.bus_down_until) {
            return Err(StoreError::unavailable(
                "event bus",
                "simulated broker outage",
            ));
        }
        self.guard(write, call).await
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn injected() -> StoreError {
    StoreError::unavailable("database", "simulated fault")
}

const READ: bool = false;
const WRITE: bool = true;

/// Declares a decorator `$name` over an `Arc<$inner>` that draws every fault from a
/// shared [`Injector`], with its `Debug` and its `new`.
macro_rules! decorator {
    ($(#[$doc:meta])* $name:ident $(<$param:ident: $bound:ident>)? ($inner:ty)) => {
        $(#[$doc])*
        pub struct $name $(<$param>)? {
            inner: Arc<$inner>,
            faults: Arc<Injector>,
        }

        impl $(<$param>)? std::fmt::Debug for $name $(<$param>)? {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }

        impl $(<$param: $bound>)? $name $(<$param>)? {
            /// `inner` with faults from `faults`.
            pub fn new(inner: Arc<$inner>, faults: Arc<Injector>) -> Self {
                Self { inner, faults }
            }
        }
    };
}

decorator! {
    /// Every repository port and the outbox of a store, with faults.
    FaultyStore<S: Store>(S)
}

#[async_trait]
impl<S: Store> UserRepository for FaultyStore<S> {
    async fn insert_user(&self, user: &User) -> StoreResult<()> {
        self.faults.guard(WRITE, self.inner.insert_user(user)).await
    }
    async fn user(&self, id: UserId) -> StoreResult<Option<User>> {
        self.faults.guard(READ, self.inner.user(id)).await
    }
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        self.faults
            .guard(READ, self.inner.user_by_email(email))
            .await
    }
    async fn follow(
        &self,
        follower: UserId,
        creator: UserId,
        at: Timestamp,
        events: &[Event],
    ) -> StoreResult<bool> {
        let call = self.inner.follow(follower, creator, at, events);
        self.faults.guard(WRITE, call).await
    }
    async fn unfollow(&self, follower: UserId, creator: UserId) -> StoreResult<bool> {
        let call = self.inner.unfollow(follower, creator);
        self.faults.guard(WRITE, call).await
    }
    async fn followers(
        &self,
        creator: UserId,
        page: PageRequest,
    ) -> StoreResult<Page<FollowEntry>> {
        self.faults
            .guard(READ, self.inner.followers(creator, page))
            .await
    }
    async fn following(
        &self,
        follower: UserId,
        page: PageRequest,
    ) -> StoreResult<Page<FollowEntry>> {
        let call = self.inner.following(follower, page);
        self.faults.guard(READ, call).await
    }
}

#[async_trait]
impl<S: Store> ProductRepository for FaultyStore<S> {
    async fn insert_product(&self, product: &Product, events: &[Event]) -> StoreResult<()> {
        let call = self.inner.insert_product(product, events);
        self.faults.guard(WRITE, call).await
    }
    async fn product(&self, id: ProductId) -> StoreResult<Option<Product>> {
        self.faults.guard(READ, self.inner.product(id)).await
    }
    async fn update_product(
        &self,
        product: &Product,
        events: &[Event],
    ) -> StoreResult<UpdateOutcome> {
        let call = self.inner.update_product(product, events);
        self.faults.guard(WRITE, call).await
    }
    async fn list_products(
        &self,
        filter: &ProductFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Product>> {
        let call = self.inner.list_products(filter, page);
        self.faults.guard(READ, call).await
    }
}

#[async_trait]
impl<S: Store> DropRepository for FaultyStore<S> {
    async fn insert_drop(
        &self,
        drop: &model::Drop,
        stock: &[u32],
        events: &[Event],
    ) -> StoreResult<()> {
        let call = self.inner.insert_drop(drop, stock, events);
        self.faults.guard(WRITE, call).await
    }
    async fn drop_by_id(&self, id: DropId) -> StoreResult<Option<model::Drop>> {
        self.faults.guard(READ, self.inner.drop_by_id(id)).await
    }
    async fn drop_view(&self, id: DropId) -> StoreResult<Option<DropView>> {
        self.faults.guard(READ, self.inner.drop_view(id)).await
    }
    async fn list_drops(
        &self,
        filter: &DropFilter,
        now: Timestamp,
        page: PageRequest,
    ) -> StoreResult<Page<DropView>> {
        let call = self.inner.list_drops(filter, now, page);
        self.faults.guard(READ, call).await
    }
    async fn transition(
        &self,
        id: DropId,
        from: &[DropState],
        to: DropState,
        events: &[Event],
    ) -> StoreResult<bool> {
        let call = self.inner.transition(id, from, to, events);
        self.faults.guard(WRITE, call).await
    }
    async fn due_transitions(&self, now: Timestamp, limit: u32) -> StoreResult<Vec<model::Drop>> {
        let call = self.inner.due_transitions(now, limit);
        self.faults.guard(READ, call).await
    }
}

#[async_trait]
impl<S: Store> InventoryRepository for FaultyStore<S> {
    async fn stock(&self, drop: DropId) -> StoreResult<Option<Vec<Stock>>> {
        self.faults.guard(READ, self.inner.stock(drop)).await
    }
    async fn adjust(&self, adjustment: &Adjustment) -> StoreResult<AdjustOutcome> {
        self.faults
            .guard(WRITE, self.inner.adjust(adjustment))
            .await
    }
    async fn ledger(&self, drop: DropId, page: PageRequest) -> StoreResult<Page<LedgerEntry>> {
        self.faults.guard(READ, self.inner.ledger(drop, page)).await
    }
}

#[async_trait]
impl<S: Store> OrderRepository for FaultyStore<S> {
    async fn place_order(&self, order: &Order, now: Timestamp) -> StoreResult<PlaceOutcome> {
        let call = self.inner.place_order(order, now);
        self.faults.guard(WRITE, call).await
    }
    async fn order(&self, id: OrderId) -> StoreResult<Option<Order>> {
        self.faults.guard(READ, self.inner.order(id)).await
    }
    async fn orders_for_user(&self, user: UserId, page: PageRequest) -> StoreResult<Page<Order>> {
        let call = self.inner.orders_for_user(user, page);
        self.faults.guard(READ, call).await
    }
    async fn order_by_key(&self, user: UserId, key: &str) -> StoreResult<Option<Order>> {
        self.faults
            .guard(READ, self.inner.order_by_key(user, key))
            .await
    }
    async fn settle_order(
        &self,
        id: OrderId,
        settlement: Settlement,
        now: Timestamp,
        hold: chrono::Duration,
    ) -> StoreResult<SettleOutcome> {
        let call = self.inner.settle_order(id, settlement, now, hold);
        self.faults.guard(WRITE, call).await
    }
    async fn expire_holds(
        &self,
        now: Timestamp,
        limit: u32,
        hold: chrono::Duration,
    ) -> StoreResult<Vec<Order>> {
        let call = self.inner.expire_holds(now, limit, hold);
        self.faults.guard(WRITE, call).await
    }
    async fn extend_hold(
        &self,
        id: OrderId,
        by: chrono::Duration,
        now: Timestamp,
    ) -> StoreResult<ExtendOutcome> {
        let call = self.inner.extend_hold(id, by, now);
        self.faults.guard(WRITE, call).await
    }
}

#[async_trait]
impl<S: Store> WaitlistRepository for FaultyStore<S> {
    async fn join_waitlist(&self, join: &WaitlistJoin) -> StoreResult<JoinOutcome> {
        self.faults
            .guard(WRITE, self.inner.join_waitlist(join))
            .await
    }
    async fn waitlist_entry(
        &self,
        drop: DropId,
        user: UserId,
    ) -> StoreResult<Option<WaitlistEntry>> {
        let call = self.inner.waitlist_entry(drop, user);
        self.faults.guard(READ, call).await
    }
    async fn leave_waitlist(&self, drop: DropId, user: UserId) -> StoreResult<bool> {
        let call = self.inner.leave_waitlist(drop, user);
        self.faults.guard(WRITE, call).await
    }
}

#[async_trait]
impl<S: Store> DrawRepository for FaultyStore<S> {
    async fn insert_draw_drop(
        &self,
        drop: &model::Drop,
        stock: &[u32],
        _seed: &str,
        events: &[Event],
    ) -> StoreResult<()> {
        // The draw's seed (and so its winners) follows from the run's seed, like
        // every other random choice, so a seed replays the same run; the stored drop
        // and its `drop.scheduled` commit to it.
        let seed = self.faults.random_hex(32);
        let commitment = model::Draw::commitment_of(&seed);
        let mut drop = drop.clone();
        if let Some(draw) = &mut drop.draw {
            draw.commitment.clone_from(&commitment);
        }
        let events: Vec<Event> = events
            .iter()
            .cloned()
            .map(|mut e| {
                if let Some(draw) = e.payload.get_mut("draw") {
                    draw["commitment"] = serde_json::Value::String(commitment.clone());
                }
                e
            })
            .collect();
        let call = self.inner.insert_draw_drop(&drop, stock, &seed, &events);
        self.faults.guard(WRITE, call).await
    }
    async fn enter_draw(&self, request: &DrawEntryRequest) -> StoreResult<EntryOutcome> {
        // Entry tokens too (they rank the entries under the seed).
        let request = DrawEntryRequest {
            token: self.faults.random_hex(16),
            ..request.clone()
        };
        self.faults
            .guard(WRITE, self.inner.enter_draw(&request))
            .await
    }
    async fn withdraw_entry(
        &self,
        drop: DropId,
        user: UserId,
        now: Timestamp,
    ) -> StoreResult<EntryOutcome> {
        let call = self.inner.withdraw_entry(drop, user, now);
        self.faults.guard(WRITE, call).await
    }
    async fn draw_entry(&self, drop: DropId, user: UserId) -> StoreResult<Option<DrawEntry>> {
        let call = self.inner.draw_entry(drop, user);
        self.faults.guard(READ, call).await
    }
    async fn draw_entries(
        &self,
        drop: DropId,
        after_rank: u64,
        limit: u32,
    ) -> StoreResult<Vec<DrawEntry>> {
        let call = self.inner.draw_entries(drop, after_rank, limit);
        self.faults.guard(READ, call).await
    }
    async fn draw_counts(&self, drop: DropId) -> StoreResult<(u64, u64)> {
        self.faults.guard(READ, self.inner.draw_counts(drop)).await
    }
    async fn due_draws(&self, now: Timestamp, limit: u32) -> StoreResult<Vec<DropId>> {
        self.faults
            .guard(READ, self.inner.due_draws(now, limit))
            .await
    }
    async fn run_draw(
        &self,
        id: DropId,
        now: Timestamp,
        hold: chrono::Duration,
    ) -> StoreResult<DrawOutcome> {
        let call = self.inner.run_draw(id, now, hold);
        self.faults.guard(WRITE, call).await
    }
}

#[async_trait]
impl<S: Store> QueueRepository for FaultyStore<S> {
    async fn join_queue(
        &self,
        drop: DropId,
        user: UserId,
        now: Timestamp,
        _shuffle_key: u64,
    ) -> StoreResult<QueueOutcome> {
        // The pre-queue's order follows from the run's seed, like every other random
        // choice, so a seed replays the same admissions.
        let shuffle_key = self.faults.random_u64();
        let call = self.inner.join_queue(drop, user, now, shuffle_key);
        self.faults.guard(WRITE, call).await
    }
    async fn queue_entry(&self, drop: DropId, user: UserId) -> StoreResult<Option<QueueEntry>> {
        let call = self.inner.queue_entry(drop, user);
        self.faults.guard(READ, call).await
    }
    async fn admitted_through(&self, drop: DropId, now: Timestamp) -> StoreResult<u64> {
        let call = self.inner.admitted_through(drop, now);
        self.faults.guard(READ, call).await
    }
}

#[async_trait]
impl<S: Store> IdempotencyStore for FaultyStore<S> {
    async fn begin(
        &self,
        user: UserId,
        key: &str,
        fingerprint: &str,
        now: Timestamp,
        lease: Duration,
    ) -> StoreResult<BeginOutcome> {
        let call = self.inner.begin(user, key, fingerprint, now, lease);
        self.faults.guard_claim(user, key, true, call).await
    }
    async fn complete(
        &self,
        user: UserId,
        key: &str,
        claim: Claim,
        response: &serde_json::Value,
    ) -> StoreResult<bool> {
        let call = self.inner.complete(user, key, claim, response);
        self.faults.guard_claim(user, key, false, call).await
    }
    async fn release(&self, user: UserId, key: &str, claim: Claim) -> StoreResult<bool> {
        let call = self.inner.release(user, key, claim);
        self.faults.guard_claim(user, key, false, call).await
    }
    async fn purge(&self, cutoff: Timestamp) -> StoreResult<u64> {
        self.faults.guard(WRITE, self.inner.purge(cutoff)).await
    }
}

#[async_trait]
impl<S: Store> NotificationRepository for FaultyStore<S> {
    async fn insert_notification(&self, notification: &Notification) -> StoreResult<bool> {
        let call = self.inner.insert_notification(notification);
        self.faults.guard(WRITE, call).await
    }
    async fn fan_out(&self, batch: &FanOutBatch) -> StoreResult<FanOutProgress> {
        self.faults.guard(WRITE, self.inner.fan_out(batch)).await
    }
    async fn notifications(
        &self,
        user: UserId,
        unread_only: bool,
        page: PageRequest,
    ) -> StoreResult<Page<Notification>> {
        let call = self.inner.notifications(user, unread_only, page);
        self.faults.guard(READ, call).await
    }
    async fn mark_read(
        &self,
        user: UserId,
        id: NotificationId,
        at: Timestamp,
    ) -> StoreResult<Option<Notification>> {
        let call = self.inner.mark_read(user, id, at);
        self.faults.guard(WRITE, call).await
    }
    async fn mark_all_read(&self, user: UserId, at: Timestamp) -> StoreResult<u64> {
        self.faults
            .guard(WRITE, self.inner.mark_all_read(user, at))
            .await
    }
}

#[async_trait]
impl<S: Store> Outbox for FaultyStore<S> {
    async fn pending(&self, limit: u32) -> StoreResult<Vec<OutboxRecord>> {
        let records = self.faults.guard(READ, self.inner.pending(limit)).await?;
        self.faults.observe(&records);
        Ok(records)
    }
    async fn mark_published(&self, seqs: &[i64]) -> StoreResult<()> {
        let call = self.inner.mark_published(seqs);
        self.faults.guard(WRITE, call).await
    }
    async fn backlog(&self) -> StoreResult<u64> {
        self.faults.guard(READ, self.inner.backlog()).await
    }
    async fn wait_for_append(&self, timeout: Duration) {
        self.inner.wait_for_append(timeout).await;
    }
    async fn appended_since(
        &self,
        after: i64,
        also: &[i64],
        limit: u32,
    ) -> StoreResult<Vec<OutboxRecord>> {
        let call = self.inner.appended_since(after, also, limit);
        self.faults.guard(READ, call).await
    }
    async fn head(&self) -> StoreResult<i64> {
        self.faults.guard(READ, self.inner.head()).await
    }
    async fn prune_published(&self, cutoff: Timestamp) -> StoreResult<u64> {
        let call = self.inner.prune_published(cutoff);
        self.faults.guard(WRITE, call).await
    }
}

decorator! {
    /// A cache with faults and outage windows.
    FaultyCache(dyn Cache)
}

#[async_trait]
impl Cache for FaultyCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.faults.guard_cache(READ, self.inner.get(key)).await
    }
    async fn fence(&self, key: &str) -> Result<u64, CacheError> {
        self.faults.guard_cache(READ, self.inner.fence(key)).await
    }
    async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        fence: Option<u64>,
    ) -> Result<bool, CacheError> {
        let call = self.inner.set(key, value, ttl, fence);
        self.faults.guard_cache(WRITE, call).await
    }
    async fn invalidate(&self, keys: &[String]) -> Result<u64, CacheError> {
        self.faults
            .guard_cache(WRITE, self.inner.invalidate(keys))
            .await
    }
    async fn invalidate_prefix(&self, prefix: &str) -> Result<u64, CacheError> {
        let call = self.inner.invalidate_prefix(prefix);
        self.faults.guard_cache(WRITE, call).await
    }
}

decorator! {
    /// An admission gate with faults (the caller admits when the gate fails).
    FaultyGate(dyn AdmissionGate)
}

#[async_trait]
impl AdmissionGate for FaultyGate {
    async fn admit(&self, drop: DropId, sku: &str, quantity: u32) -> Result<bool, CacheError> {
        self.faults
            .guard_cache(READ, self.inner.admit(drop, sku, quantity))
            .await
    }
    async fn record(
        &self,
        drop: DropId,
        sku: &str,
        stock: &Stock,
        version: i64,
    ) -> Result<(), CacheError> {
        let call = self.inner.record(drop, sku, stock, version);
        self.faults.guard_cache(WRITE, call).await
    }
}

decorator! {
    /// An event bus with faults and outage windows. Live subscriptions (what Server-Sent
    /// Events read) only see latency: a live view has no history to resume from, so a
    /// failing live read would be indistinguishable from a lost event.
    FaultyBus(dyn EventBus)
}

#[async_trait]
impl EventBus for FaultyBus {
    async fn publish(&self, events: &[Event]) -> StoreResult<()> {
        self.faults
            .guard_bus(WRITE, self.inner.publish(events))
            .await
    }
    async fn subscribe(&self, group: &str) -> StoreResult<Box<dyn Subscription>> {
        let inner = self
            .faults
            .guard_bus(READ, self.inner.subscribe(group))
            .await?;
        Ok(Box::new(FaultySubscription {
            inner,
            faults: self.faults.clone(),
        }))
    }
    async fn subscribe_live(&self) -> StoreResult<Box<dyn Subscription>> {
        self.inner.subscribe_live().await
    }
}

struct FaultySubscription {
    inner: Box<dyn Subscription>,
    faults: Arc<Injector>,
}

#[async_trait]
impl Subscription for FaultySubscription {
    async fn next(&mut self, timeout: Duration) -> StoreResult<Option<Event>> {
        let call = self.inner.next(timeout);
        self.faults.guard_bus(READ, call).await
    }
    async fn commit(&mut self) -> StoreResult<()> {
        self.faults.guard_bus(WRITE, self.inner.commit()).await
    }
    async fn close(self: Box<Self>) {
        self.inner.close().await;
    }
}
