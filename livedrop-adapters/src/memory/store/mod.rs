//! [`MemoryStore`]: every repository port over one state, which the order path
//! shares, locking per buyer shard, drop and order shard, and every other write
//! takes whole.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::Duration;

use async_trait::async_trait;
use livedrop_core::event::{Event, EventType};
use livedrop_core::id::{DropId, EventId, NotificationId, OrderId, ProductId, UserId};
use livedrop_core::model::{
    self, Handoff, LedgerEntry, Notification, Order, OrderStatus, Product, Stock, User,
    WaitlistEntry,
};
use livedrop_core::page::{Cursor, Page, PageRequest};
use livedrop_core::ports::{Claim, Outbox, OutboxRecord};
use livedrop_core::{StoreResult, Timestamp};
use serde_json::Value;
use tokio::sync::Notify;
use uuid::Uuid;

/// The store's hash indexes: foldhash, seeded per map, instead of SipHash.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

mod catalog;
mod fair;
mod notifications;
mod orders;
mod users;
mod waitlists;

/// A keyset sort key: `(timestamp, id)`, listed in descending order.
type Key = (Timestamp, Uuid);

/// An in-memory store implementing every repository port of livedrop.
///
/// Every write method is one atomic step, so it behaves like one database
/// transaction: the state change and the events describing it are appended to the
/// in-memory outbox together, and concurrent callers see each write either entirely
/// or not at all. Uniqueness rules match the PostgreSQL schema (lower-cased email,
/// one order per buyer and idempotency key, one follow per pair, one notification
/// per user and dedup key), and listings are keyset-paginated newest first by
/// `(created_at, id)`.
///
/// Referential integrity (a follow of an unknown user, an order of an unknown
/// buyer) is not enforced: the services check it before writing.
///
/// Published outbox records are dropped, so memory grows with live data only.
///
/// # Locking
///
/// The order path takes no lock across unrelated drops. The state sits behind one
/// [`RwLock`]: the order path ([`OrderRepository::place_order`],
/// [`IdempotencyStore`], order and stock reads, the outbox) shares it and locks only
/// what it touches, always in this order:
///
/// 1. the buyer's shard (their idempotency keys and order index),
/// 2. the drop's row (its definition, stock, units held per buyer and reserved
///    orders' hold ends),
/// 3. the order's shard (orders by id),
/// 4. the outbox, only to hand out positions.
///
/// So orders on two drops by two buyers meet only at the outbox, for a push.
/// Everything else (drops starting and ending, settling, expiring, adjusting,
/// draws, waitlists, users, follows, notifications) takes the state exclusively, as
/// one transaction over every table would.
///
/// The critical sections are kept short for hot drops: an order's writes are built
/// before any lock is taken, and the order and stock events are kept as what they
/// describe (with their ids fixed) and serialized when the outbox is read, outside
/// every lock.
///
/// [`OrderRepository::place_order`]: livedrop_core::ports::OrderRepository::place_order
/// [`IdempotencyStore`]: livedrop_core::ports::IdempotencyStore
///
/// ```
/// use std::sync::Arc;
/// use livedrop_adapters::memory::MemoryStore;
/// use livedrop_core::model::{Role, User};
/// use livedrop_core::ports::{Outbox, UserRepository};
/// use livedrop_core::{Clock, ManualClock, StoreError, UserId};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = Arc::new(MemoryStore::new());
/// let now = ManualClock::fixed().now();
/// let user = User {
///     id: UserId::new(),
///     email: "ada@example.com".into(),
///     display_name: "Ada".into(),
///     role: Role::Customer,
///     password_hash: "$argon2id$…".into(),
///     created_at: now,
/// };
/// store.insert_user(&user).await?;
/// assert_eq!(store.user_by_email("ada@example.com").await?, Some(user.clone()));
///
/// // Emails are unique, compared lower-cased.
/// let twin = User { id: UserId::new(), email: "ADA@example.com".into(), ..user };
/// assert!(matches!(store.insert_user(&twin).await, Err(StoreError::Conflict(_))));
/// assert_eq!(store.backlog().await?, 0);
/// # Ok::<_, StoreError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: RwLock<State>,
    appended: Notify,
    /// Relays inside [`Outbox::wait_for_append`]: with none, an append skips
    /// `notify_waiters` (which takes the notifier's own lock) and leaves only the
    /// permit of `notify_one`.
    waiting: AtomicUsize,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stock version of the drop's variant `sku`: incremented by every movement
    /// of its stock, and the `version` of the [`Event::stock_moved`] events it
    /// appends. `None` for an unknown drop or variant.
    pub fn stock_version(&self, drop: DropId, sku: &str) -> Option<i64> {
        let state = self.read();
        let row = state.drops.lock(drop)?;
        Some(row.variants[row.variant(sku)?].version)
    }

    /// Idempotency keys claimed and neither completed nor released, as `(user, key)`
    /// in a stable order, whether or not their lease has run out: what requests that
    /// went away without giving their claim back left behind.
    pub fn pending_claims(&self) -> Vec<(UserId, String)> {
        let state = self.read();
        let mut pending: Vec<(UserId, String)> = state
            .buyers
            .iter()
            .flat_map(|shard| {
                shard
                    .idempotency
                    .iter()
                    .flat_map(|(user, keys)| {
                        keys.iter()
                            .filter(|(_, record)| record.response.is_none())
                            .map(|(key, _)| (*user, key.clone()))
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        pending.sort();
        pending
    }

    /// The state shared: the order path and reads, which lock what they touch.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read()
    }

    /// Runs `f` with the state to itself, as one atomic step, and wakes outbox
    /// waiters if it appended events.
    fn write<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let (result, appended) = {
            let mut state = self.state.write();
            let before = state.log.get_mut().next_seq;
            let result = f(&mut state);
            (result, state.log.get_mut().next_seq != before)
        };
        if appended {
            self.announce();
        }
        result
    }

    /// Wakes outbox waiters after an append.
    fn announce(&self) {
        // `notify_waiters` wakes every relay waiting now (a relay counts itself in
        // `waiting` before it starts to wait, so none is missed); `notify_one` leaves
        // a permit for a relay between `pending` and `wait_for_append`, so no append
        // goes unnoticed (a spurious wake-up at worst).
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.appended.notify_waiters();
        }
        self.appended.notify_one();
    }
}

/// A part of the state with a lock of its own, taken by the order path while it
/// shares the state, and reached without locking by whoever has the state to itself.
#[derive(Debug, Default)]
struct Locked<T>(Mutex<T>);

impl<T> Locked<T> {
    fn new(value: T) -> Self {
        Self(Mutex::new(value))
    }

    fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock()
    }

    fn get_mut(&mut self) -> &mut T {
        self.0.get_mut()
    }
}

/// How many shards the buyers' keys and the orders are spread over.
const SHARDS: usize = 64;

/// A map split into [`SHARDS`] parts, each locked on its own, by a key's low bits.
#[derive(Debug)]
struct Shards<T>(Box<[Locked<T>]>);

impl<T: Default> Default for Shards<T> {
    fn default() -> Self {
        Self((0..SHARDS).map(|_| Locked::default()).collect())
    }
}

impl<T> Shards<T> {
    /// The index of `key`'s shard: ids here are random in their low bits (v4 and v7
    /// UUIDs).
    fn slot(&self, key: Uuid) -> usize {
        (key.as_u64_pair().1 as usize) % self.0.len()
    }

    fn lock(&self, key: Uuid) -> MutexGuard<'_, T> {
        self.0[self.slot(key)].lock()
    }

    fn get_mut(&mut self, key: Uuid) -> &mut T {
        let slot = self.slot(key);
        self.0[slot].get_mut()
    }

    /// Every shard, locked one at a time.
    fn iter(&self) -> impl Iterator<Item = MutexGuard<'_, T>> {
        self.0.iter().map(Locked::lock)
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.0.iter_mut().map(Locked::get_mut)
    }
}

/// The drops by id, each row locked on its own.
#[derive(Debug, Default)]
struct Drops(HashMap<DropId, Locked<DropRow>>);

impl Drops {
    fn contains_key(&self, id: &DropId) -> bool {
        self.0.contains_key(id)
    }

    fn insert(&mut self, id: DropId, row: DropRow) {
        self.0.insert(id, Locked::new(row));
    }

    fn lock(&self, id: DropId) -> Option<MutexGuard<'_, DropRow>> {
        self.0.get(&id).map(Locked::lock)
    }

    fn get_mut(&mut self, id: &DropId) -> Option<&mut DropRow> {
        self.0.get_mut(id).map(Locked::get_mut)
    }

    /// Every row, locked one at a time.
    fn rows(&self) -> impl Iterator<Item = MutexGuard<'_, DropRow>> {
        self.0.values().map(Locked::lock)
    }

    fn rows_mut(&mut self) -> impl Iterator<Item = &mut DropRow> {
        self.0.values_mut().map(Locked::get_mut)
    }
}

/// A drop with its variants' stock and waitlists, its ledger, and what its orders
/// hold.
#[derive(Debug)]
struct DropRow {
    drop: model::Drop,
    /// One per `drop.variants`, in the same order.
    variants: Vec<VariantRow>,
    /// Units each buyer holds (reserved plus confirmed).
    held: HashMap<UserId, u32>,
    /// `(reserved_until, id)` of the drop's reserved orders.
    holds: BTreeSet<Key>,
    ledger: BTreeMap<Key, LedgerEntry>,
    /// Who waits, for which variant: one entry per buyer.
    waiting: HashMap<UserId, Waiting>,
    /// A draw drop's secret seed and entries.
    draw: Option<DrawBook>,
    /// A waiting room's queue.
    queue: Queue,
}

/// A draw drop's secret seed and entries.
#[derive(Debug, Default)]
struct DrawBook {
    seed: String,
    entries: HashMap<UserId, model::DrawEntry>,
    /// After the draw: the entrants in rank order.
    ranked: Vec<UserId>,
}

/// A waiting room's queue.
#[derive(Debug, Default)]
struct Queue {
    /// Who joined before the start, by `(shuffle key, user)`, with when.
    pre: BTreeMap<(u64, UserId), Timestamp>,
    /// Who joined from the start on, in join order: `(user, joined_at, admit_at)`.
    post: Vec<(UserId, Timestamp, Timestamp)>,
    /// Where each member is.
    members: HashMap<UserId, Member>,
}

/// Where a buyer is in a queue.
#[derive(Debug, Clone, Copy)]
enum Member {
    /// In the pre-queue, under this shuffle key.
    Pre(u64),
    /// At this index of the later arrivals.
    Post(usize),
}

impl DropRow {
    /// The index of variant `sku` in `drop.variants`.
    fn variant(&self, sku: &str) -> Option<usize> {
        self.drop.variants.iter().position(|v| v.sku == sku)
    }

    /// Bumps the stock version of variant `variant`, whose stock was `before`, and
    /// hands `push` the [`Event::stock_moved`] entries with its stock now. Returns
    /// that stock.
    fn stock_moved(
        &mut self,
        variant: usize,
        before: Stock,
        at: Timestamp,
        mut push: impl FnMut(Arc<Appended>),
    ) -> Stock {
        let drop = self.drop.id;
        let v = &mut self.variants[variant];
        v.version += 1;
        let after = v.stock;
        debug_assert!(after.is_consistent(), "stock invariant broken: {after:?}");
        for kind in Event::stock_moved_types(&before, &after) {
            push(Arc::new(Appended::Stock {
                id: EventId::new(),
                kind: *kind,
                drop,
                sku: v.sku.clone(),
                stock: after,
                version: v.version,
                at,
            }));
        }
        after
    }

    /// Counts `order`'s units as held by its buyer and its hold end as due.
    fn hold(&mut self, order: &Order) {
        *self.held.entry(order.user_id).or_default() += order.quantity;
        self.holds.insert((order.reserved_until, order.id.0));
    }

    fn variant_stock(&self) -> Vec<Stock> {
        self.variants.iter().map(|v| v.stock).collect()
    }

    /// The entry of `user` as the port returns it, with its position in the line.
    fn entry(&self, user: UserId) -> Option<WaitlistEntry> {
        let waiting = self.waiting.get(&user)?;
        let line = &self.variants[waiting.variant].line;
        let ahead = line.range(..waiting.seq).count() as u64;
        Some(waiting.entry(self, user, ahead + 1))
    }
}

/// One variant's stock, stock version and waitlist.
#[derive(Debug)]
struct VariantRow {
    sku: Arc<str>,
    stock: Stock,
    version: i64,
    /// Join sequence → buyer, in join order.
    line: BTreeMap<u64, UserId>,
}

/// A buyer's place in one variant's line.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    variant: usize,
    seq: u64,
    quantity: u32,
    joined_at: Timestamp,
}

impl Waiting {
    fn entry(&self, row: &DropRow, user: UserId, position: u64) -> WaitlistEntry {
        WaitlistEntry {
            drop_id: row.drop.id,
            sku: row.variants[self.variant].sku.to_string(),
            user_id: user,
            quantity: self.quantity,
            joined_at: self.joined_at,
            position,
        }
    }
}

/// A claimed or completed idempotency key.
#[derive(Debug)]
struct IdempotencyRecord {
    fingerprint: String,
    claim: Claim,
    response: Option<Value>,
    lease_until: Timestamp,
    created_at: Timestamp,
}

/// Everything the store holds, with the indexes a database would keep.
#[derive(Debug, Default)]
struct State {
    users: HashMap<UserId, User>,
    emails: HashMap<String, UserId>,
    follows: HashMap<(UserId, UserId), Timestamp>,
    /// Per creator: `(followed_at, follower)`.
    followers: HashMap<UserId, BTreeSet<Key>>,
    /// Per creator: the followers by id (the fan-out's walk).
    audiences: HashMap<UserId, BTreeSet<UserId>>,
    /// Per follower: `(followed_at, creator)`.
    following: HashMap<UserId, BTreeSet<Key>>,

    products: HashMap<ProductId, Product>,
    product_index: BTreeSet<Key>,

    drops: Drops,
    drop_index: BTreeSet<Key>,
    /// `(starts_at, id)` of drops whose state is `scheduled` or `live`.
    open_drops: BTreeSet<Key>,
    ledger_ids: HashSet<Uuid>,

    /// Orders by id, sharded by id. Shared with the events that carry them: an
    /// order placed is allocated once for both, and a later change copies it
    /// (`Arc::make_mut`) while its event keeps the order as it was.
    orders: Shards<HashMap<OrderId, Arc<Order>>>,
    /// Buyers' keys and order indexes, sharded by buyer.
    buyers: Shards<Buyers>,
    /// The last waitlist join sequence handed out.
    wait_seq: u64,

    notifications: HashMap<NotificationId, Notification>,
    notification_keys: HashMap<UserId, HashSet<String>>,
    user_notifications: HashMap<UserId, BTreeSet<Key>>,
    unread: HashMap<UserId, BTreeSet<Key>>,

    log: Locked<Log>,
}

/// One shard of the buyers: their idempotency keys and orders, by buyer.
#[derive(Debug, Default)]
struct Buyers {
    order_keys: HashMap<UserId, HashMap<String, OrderId>>,
    user_orders: HashMap<UserId, BTreeSet<Key>>,
    idempotency: HashMap<UserId, HashMap<String, IdempotencyRecord>>,
}

/// The outbox: every appended event by position.
#[derive(Debug, Default)]
struct Log {
    outbox: Unpublished,
    /// The latest appended events, published or not, for outbox followers.
    recent: VecDeque<(i64, Arc<Appended>)>,
    next_seq: i64,
}

impl Log {
    fn push(&mut self, entry: Arc<Appended>) {
        self.next_seq += 1;
        if self.recent.len() == FOLLOW_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back((self.next_seq, entry.clone()));
        self.outbox.push(self.next_seq, entry);
    }
}

/// The events not yet marked published, by position. Positions are appended in
/// order, so the queue holds every position from `first` on, a published one as
/// `None` until the front is trimmed past it: appending is a push at the back.
#[derive(Debug, Default)]
struct Unpublished {
    entries: VecDeque<Option<Arc<Appended>>>,
    /// The position of `entries[0]`.
    first: i64,
    /// How many entries are `Some`.
    count: usize,
}

impl Unpublished {
    fn push(&mut self, seq: i64, entry: Arc<Appended>) {
        if self.entries.is_empty() {
            self.first = seq;
        }
        debug_assert_eq!(seq, self.first + self.entries.len() as i64);
        self.entries.push_back(Some(entry));
        self.count += 1;
    }

    fn remove(&mut self, seq: i64) {
        let Some(slot) = usize::try_from(seq - self.first)
            .ok()
            .and_then(|at| self.entries.get_mut(at))
        else {
            return;
        };
        if slot.take().is_some() {
            self.count -= 1;
        }
        while matches!(self.entries.front(), Some(None)) {
            self.entries.pop_front();
            self.first += 1;
        }
    }

    fn oldest(&self, limit: usize) -> Vec<(i64, Arc<Appended>)> {
        (self.first..)
            .zip(&self.entries)
            .filter_map(|(seq, entry)| Some((seq, entry.clone()?)))
            .take(limit)
            .collect()
    }
}

/// An event as the outbox keeps it. Order and stock events, the ones every order
/// appends, are kept as what they describe and built into an [`Event`] when read,
/// outside the critical section that appended them; their id is fixed at the append,
/// so every read builds the same event.
#[derive(Debug)]
enum Appended {
    /// Built by the caller.
    Event(Event),
    /// [`Event::order`] of `order`.
    Order {
        id: EventId,
        kind: EventType,
        order: Arc<Order>,
        at: Timestamp,
    },
    /// [`Event::stock`] of a variant's stock after a movement.
    Stock {
        id: EventId,
        kind: EventType,
        drop: DropId,
        sku: Arc<str>,
        stock: Stock,
        version: i64,
        at: Timestamp,
    },
}

impl Appended {
    /// [`Event::order`] of `order`, with its id drawn now.
    fn order(kind: EventType, order: Arc<Order>, at: Timestamp) -> Arc<Self> {
        Arc::new(Appended::Order {
            id: EventId::new(),
            kind,
            order,
            at,
        })
    }

    fn event(&self) -> Event {
        match self {
            Appended::Event(event) => event.clone(),
            Appended::Order {
                id,
                kind,
                order,
                at,
            } => Event {
                id: *id,
                ..Event::order(*kind, order, *at)
            },
            Appended::Stock {
                id,
                kind,
                drop,
                sku,
                stock,
                version,
                at,
            } => Event {
                id: *id,
                ..Event::stock(*kind, drop.0, sku, stock, *version, *at)
            },
        }
    }
}

/// The outbox records of `entries`, built outside the lock they were read under.
fn records(entries: Vec<(i64, Arc<Appended>)>) -> Vec<OutboxRecord> {
    entries
        .into_iter()
        .map(|(seq, entry)| OutboxRecord {
            seq,
            event: entry.event(),
        })
        .collect()
}

/// How many of the latest events followers can still read.
const FOLLOW_WINDOW: usize = 65_536;

impl State {
    fn append(&mut self, events: impl IntoIterator<Item = Event>) {
        for event in events {
            self.push(Arc::new(Appended::Event(event)));
        }
    }

    /// Appends [`Event::order`] of `order`.
    fn append_order(&mut self, kind: EventType, order: &Order, at: Timestamp) {
        self.push(Appended::order(kind, Arc::new(order.clone()), at));
    }

    fn push(&mut self, entry: Arc<Appended>) {
        self.log.get_mut().push(entry);
    }

    /// Applies `change` to the stock of the drop's variant `variant`, hands what it
    /// made available to the variant's waitlist (or, for a drawn drop, to the entries
    /// that have not won) when `hand_off` holds the offers' hold (see
    /// [`State::hand_off`], [`State::draw_hand_off`]), bumps the variant's stock
    /// version and appends [`Event::stock_moved`] with the stock after both. Returns
    /// the stock after, or `None` for an unknown drop.
    fn move_stock(
        &mut self,
        drop: DropId,
        variant: usize,
        at: Timestamp,
        hand_off: Option<chrono::Duration>,
        change: impl FnOnce(&mut Stock),
    ) -> Option<Stock> {
        let row = self.drops.get_mut(&drop)?;
        let before = row.variants[variant].stock;
        change(&mut row.variants[variant].stock);
        let is_draw = row.draw.is_some();
        match hand_off {
            Some(hold) if is_draw => self.draw_hand_off(drop, variant, at, hold),
            Some(hold) => self.hand_off(drop, variant, at, hold),
            None => {}
        }
        self.stock_moved(drop, variant, before, at)
    }

    /// [`DropRow::stock_moved`] of the drop, appending its events. `None` for an
    /// unknown drop.
    fn stock_moved(
        &mut self,
        drop: DropId,
        variant: usize,
        before: Stock,
        at: Timestamp,
    ) -> Option<Stock> {
        let row = self.drops.get_mut(&drop)?;
        let log = self.log.get_mut();
        Some(row.stock_moved(variant, before, at, |entry| log.push(entry)))
    }

    /// Stores a new reserved order and its indexes, counting its units as held.
    fn insert_order(&mut self, order: Order) {
        let key = order.idempotency_key.clone();
        self.buyers.get_mut(order.user_id.0).index(&order, key);
        if let Some(row) = self.drops.get_mut(&order.drop_id) {
            row.hold(&order);
        }
        self.orders
            .get_mut(order.id.0)
            .insert(order.id, Arc::new(order));
    }

    /// Serves variant `variant`'s waitlist with its available units, as
    /// [`model::plan_handoff`] decides, if the drop takes orders at `now`: offers
    /// become reserved orders (held for `hold`) with `order.placed` and
    /// `waitlist.offered`, skips append `waitlist.skipped`; both end their entry.
    fn hand_off(&mut self, drop: DropId, variant: usize, now: Timestamp, hold: chrono::Duration) {
        let Some(row) = self.drops.get_mut(&drop) else {
            return;
        };
        let row = &*row;
        let v = &row.variants[variant];
        if v.line.is_empty() || v.stock.available == 0 || !row.drop.accepts_orders_at(now) {
            return;
        }
        let waiting = v.line.values().enumerate().filter_map(|(i, user)| {
            let entry = row.waiting.get(user)?.entry(row, *user, i as u64 + 1);
            let holds = row.held.get(user).copied().unwrap_or(0);
            Some((entry, holds))
        });
        let plan = model::plan_handoff(v.stock.available, row.drop.per_user_limit, waiting);
        let definition = row.drop.clone();
        for step in plan {
            let (entry, offered) = match step {
                Handoff::Offer { entry, quantity } => {
                    let order = Order::waitlist_offer(&definition, &entry, quantity, now, hold);
                    (entry, Some(order))
                }
                Handoff::Skip { entry, .. } => (entry, None),
            };
            if let Some(row) = self.drops.get_mut(&drop) {
                if let Some(waiting) = row.waiting.remove(&entry.user_id) {
                    row.variants[variant].line.remove(&waiting.seq);
                }
                if let Some(order) = &offered {
                    let stock = &mut row.variants[variant].stock;
                    stock.available -= order.quantity;
                    stock.reserved += order.quantity;
                }
            }
            match offered {
                Some(order) => {
                    debug_assert_eq!(order.status, OrderStatus::Reserved);
                    self.insert_order(order.clone());
                    self.append_order(EventType::OrderPlaced, &order, now);
                    self.append([Event::waitlist(
                        EventType::WaitlistOffered,
                        &entry,
                        Some(&order),
                        now,
                    )]);
                }
                None => self.append([Event::waitlist(
                    EventType::WaitlistSkipped,
                    &entry,
                    None,
                    now,
                )]),
            }
        }
    }
}

/// Walks `index` newest first from the page's cursor, keeping the items `fetch`
/// returns, and builds the page.
fn keyset_page<T>(
    index: Option<&BTreeSet<Key>>,
    page: PageRequest,
    mut fetch: impl FnMut(&Key) -> Option<T>,
    key: impl Fn(&T) -> Cursor,
) -> Page<T> {
    let want = page.limit as usize + 1;
    let items: Vec<T> = match index {
        None => Vec::new(),
        Some(index) => {
            let upper = match page.after {
                // Exactly the keys the cursor precedes: `(at, id) < (cursor.at, cursor.id)`.
                Some(c) => Bound::Excluded((c.at, c.id)),
                None => Bound::Unbounded,
            };
            index
                .range((Bound::Unbounded, upper))
                .rev()
                .filter_map(&mut fetch)
                .take(want)
                .collect()
        }
    };
    Page::from_overfetch(items, page.limit, key)
}

fn lease_end(now: Timestamp, lease: Duration) -> Timestamp {
    chrono::TimeDelta::from_std(lease)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

#[async_trait]
impl Outbox for MemoryStore {
    async fn pending(&self, limit: u32) -> StoreResult<Vec<OutboxRecord>> {
        let entries = self.read().log.lock().outbox.oldest(limit as usize);
        Ok(records(entries))
    }

    async fn mark_published(&self, seqs: &[i64]) -> StoreResult<()> {
        let state = self.read();
        let mut log = state.log.lock();
        for seq in seqs {
            log.outbox.remove(*seq);
        }
        Ok(())
    }

    async fn backlog(&self) -> StoreResult<u64> {
        Ok(self.read().log.lock().outbox.count as u64)
    }

    async fn appended_since(
        &self,
        after: i64,
        _also: &[i64],
        limit: u32,
    ) -> StoreResult<Vec<OutboxRecord>> {
        // Positions are handed out under the outbox's lock with the append, so they
        // commit in position order here and there are never gaps to revisit.
        let entries = {
            let state = self.read();
            let log = state.log.lock();
            let start = log.recent.partition_point(|(seq, _)| *seq <= after);
            log.recent
                .iter()
                .skip(start)
                .take(limit as usize)
                .map(|(seq, entry)| (*seq, entry.clone()))
                .collect()
        };
        Ok(records(entries))
    }

    async fn head(&self) -> StoreResult<i64> {
        Ok(self.read().log.lock().next_seq)
    }

    async fn wait_for_append(&self, timeout: Duration) {
        /// Counts a relay in `waiting` until it stops waiting, however it stops.
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        // A timeout is the documented way out: nothing to report.
        let _ = tokio::time::timeout(timeout, self.appended.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use livedrop_core::model::{Adjustment, DropState, OrderStatus, PlaceOutcome, Role};
    use livedrop_core::ports::{
        BeginOutcome, DropRepository, IdempotencyStore, InventoryRepository, OrderRepository,
    };
    use livedrop_core::testing::fixtures::{self, at, T0};
    use livedrop_core::StoreError;

    /// A store with one live drop of 5 units.
    async fn live_drop_of_five() -> (MemoryStore, model::Drop) {
        let store = MemoryStore::new();
        let creator = fixtures::user("c", Role::Creator);
        let product = fixtures::product(creator.id, "P", "d", at(-100));
        let drop = fixtures::drop_of(&product, at(-10), at(100), 5, DropState::Live, at(-50));
        store.insert_drop(&drop, &[5], &[]).await.expect("insert");
        (store, drop)
    }

    /// A second live drop of 5 units in `store`.
    async fn another_drop(store: &MemoryStore) -> model::Drop {
        let creator = fixtures::user("d", Role::Creator);
        let product = fixtures::product(creator.id, "Q", "d", at(-100));
        let drop = fixtures::drop_of(&product, at(-10), at(100), 5, DropState::Live, at(-50));
        store.insert_drop(&drop, &[5], &[]).await.expect("insert");
        drop
    }

    /// Places `order` on a thread of its own and reports the outcome on the channel.
    fn place_elsewhere(
        store: &Arc<MemoryStore>,
        order: Order,
    ) -> std::sync::mpsc::Receiver<PlaceOutcome> {
        let (tx, rx) = std::sync::mpsc::channel();
        let store = store.clone();
        std::thread::spawn(move || {
            let placed = futures::executor::block_on(store.place_order(&order, T0));
            let _ = tx.send(placed.expect("place"));
        });
        rx
    }

    #[tokio::test]
    async fn an_order_waits_for_its_own_drop_only() {
        let (store, busy) = live_drop_of_five().await;
        let store = Arc::new(store);
        let free = another_drop(&store).await;
        let on_busy = fixtures::order(UserId::new(), &busy, 1, "a", T0);
        let on_free = fixtures::order(UserId::new(), &free, 1, "b", T0);
        let wait = Duration::from_secs(10);

        let waiting = {
            let state = store.read();
            let _row = state.drops.lock(busy.id).expect("row");
            // Another drop's order goes through while this drop's row is held...
            let placed = place_elsewhere(&store, on_free).recv_timeout(wait);
            assert!(
                matches!(placed, Ok(PlaceOutcome::Placed(_))),
                "an order on an unrelated drop waited: {placed:?}"
            );
            // ...and an order on this drop waits for it.
            let waiting = place_elsewhere(&store, on_busy);
            assert!(
                waiting.recv_timeout(Duration::from_millis(200)).is_err(),
                "an order went past its drop's row lock"
            );
            waiting
        };
        assert!(matches!(
            waiting.recv_timeout(wait),
            Ok(PlaceOutcome::Placed(_))
        ));
        assert_eq!(
            store.stock(busy.id).await.expect("stock").expect("drop")[0].reserved,
            1
        );
        assert_eq!(
            store.stock(free.id).await.expect("stock").expect("drop")[0].reserved,
            1
        );
        assert_eq!(store.backlog().await.expect("backlog"), 4);
    }

    #[tokio::test]
    async fn holds_expire_earliest_first_over_every_drop() {
        let (store, first) = live_drop_of_five().await;
        let second = another_drop(&store).await;
        let mut ends = Vec::new();
        for (drop, ends_in) in [(&first, 30), (&second, 10), (&first, 20), (&second, 40)] {
            let order = Order {
                reserved_until: at(ends_in),
                ..fixtures::order(UserId::new(), drop, 1, "k", T0)
            };
            store.place_order(&order, T0).await.expect("place");
            ends.push((ends_in, order.id));
        }
        ends.sort();
        let expired = store
            .expire_holds(at(35), 2, fixtures::HOLD)
            .await
            .expect("expire");
        let ids: Vec<OrderId> = expired.iter().map(|o| o.id).collect();
        assert_eq!(ids, vec![ends[0].1, ends[1].1], "the two due first");
        let rest = store
            .expire_holds(at(35), 10, fixtures::HOLD)
            .await
            .expect("expire");
        assert_eq!(
            rest.iter().map(|o| o.id).collect::<Vec<_>>(),
            vec![ends[2].1]
        );
        assert!(rest.iter().all(|o| o.status == OrderStatus::Expired));
        let reserved = |stock: Option<Vec<Stock>>| stock.expect("drop")[0].reserved;
        assert_eq!(reserved(store.stock(first.id).await.expect("stock")), 0);
        assert_eq!(reserved(store.stock(second.id).await.expect("stock")), 1);
    }

    #[tokio::test]
    async fn a_drop_is_inserted_once() {
        let (store, drop) = live_drop_of_five().await;
        let again = store.insert_drop(&drop, &[9], &[]).await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
        let stock = store.stock(drop.id).await.expect("stock").expect("drop");
        assert_eq!(stock[0].total, 5, "the first insert stands");
    }

    #[tokio::test]
    async fn pending_claims_are_the_open_ones_of_every_buyer() {
        let store = MemoryStore::new();
        let lease = Duration::from_secs(30);
        let (ada, bob) = (UserId::new(), UserId::new());
        let mut claims = Vec::new();
        for (user, key) in [(ada, "a1"), (ada, "a2"), (bob, "b1")] {
            match store.begin(user, key, "f", T0, lease).await.expect("begin") {
                BeginOutcome::Started(claim) => claims.push(claim),
                other => panic!("{other:?}"),
            }
        }
        let done = store
            .complete(ada, "a1", claims[0], &Value::Null)
            .await
            .expect("complete");
        assert!(done);
        let mut open = vec![(ada, "a2".to_owned()), (bob, "b1".to_owned())];
        open.sort();
        assert_eq!(store.pending_claims(), open);
        assert!(store.release(bob, "b1", claims[2]).await.expect("release"));
        assert_eq!(store.pending_claims(), vec![(ada, "a2".to_owned())]);
    }

    fn entry(n: i64) -> Arc<Appended> {
        Arc::new(Appended::Event(Event::new(
            EventType::StockChanged,
            Uuid::nil(),
            n,
            Value::Null,
            T0,
        )))
    }

    #[test]
    fn unpublished_events_keep_their_positions_when_published_out_of_order() {
        let mut outbox = Unpublished::default();
        for seq in 5..10 {
            outbox.push(seq, entry(seq));
        }
        let positions = |o: &Unpublished| o.oldest(10).iter().map(|(s, _)| *s).collect::<Vec<_>>();
        outbox.remove(7);
        outbox.remove(7);
        outbox.remove(42);
        outbox.remove(1);
        assert_eq!((positions(&outbox), outbox.count), (vec![5, 6, 8, 9], 4));
        outbox.remove(5);
        outbox.remove(6);
        assert_eq!(outbox.first, 8, "the published front is trimmed");
        assert_eq!(outbox.entries.len(), 2);
        let oldest = outbox.oldest(1);
        assert_eq!(oldest.len(), 1);
        assert_eq!((oldest[0].0, oldest[0].1.event().version), (8, 8));
        outbox.remove(8);
        outbox.remove(9);
        assert_eq!((outbox.count, outbox.entries.len()), (0, 0));
        // Empty, it starts again at the next position appended.
        outbox.push(12, entry(12));
        assert_eq!(positions(&outbox), vec![12]);
    }

    #[tokio::test]
    async fn an_order_event_is_built_the_same_at_every_read() {
        let (store, drop) = live_drop_of_five().await;
        let order = fixtures::order(UserId::new(), &drop, 1, "k", T0);
        store.place_order(&order, T0).await.expect("place");
        let first = store.pending(10).await.expect("pending");
        let again = store.appended_since(0, &[], 10).await.expect("since");
        assert_eq!(first.len(), 2);
        assert_eq!(
            first, again,
            "one id and payload per event, however often read"
        );
        assert_eq!(first[0].event.kind, EventType::OrderPlaced);
        assert_eq!(first[0].event.aggregate_id, order.id.0);
        assert_eq!(
            first[1].event.decode().expect("stock"),
            livedrop_core::event::EventPayload::StockChanged(livedrop_core::event::StockPayload {
                drop_id: drop.id.0,
                sku: model::DEFAULT_SKU.into(),
                stock: Stock {
                    available: 4,
                    reserved: 1,
                    sold: 0,
                    total: 5
                },
            })
        );
    }

    #[tokio::test]
    async fn stock_versions_count_every_movement() {
        let (store, drop) = live_drop_of_five().await;
        assert_eq!(store.stock_version(drop.id, model::DEFAULT_SKU), Some(1));
        let order = fixtures::order(UserId::new(), &drop, 1, "k", T0);
        store.place_order(&order, T0).await.expect("place");
        let adjustment = Adjustment {
            drop_id: drop.id,
            sku: model::DEFAULT_SKU.into(),
            delta: 2,
            reason: "r".into(),
            actor_id: None,
            entry_id: Uuid::now_v7(),
            at: at(1),
            hold: fixtures::HOLD,
        };
        store.adjust(&adjustment).await.expect("adjust");
        assert_eq!(store.stock_version(drop.id, model::DEFAULT_SKU), Some(3));
        assert_eq!(store.stock_version(drop.id, "xl"), None);
        let pending = store.pending(100).await.expect("pending");
        let versions: Vec<i64> = pending.iter().map(|r| r.event.version).collect();
        assert_eq!(
            versions,
            vec![1, 2, 3],
            "order.placed, then two stock.changed"
        );
        assert_eq!(store.stock_version(DropId::new(), model::DEFAULT_SKU), None);
        let stored = store.order(order.id).await.expect("order").expect("exists");
        assert_eq!(stored.status, OrderStatus::Reserved);
    }
}
