//! [`MemoryStore`]: every repository port over one mutex-guarded state.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use livedrop_core::event::Event;
use livedrop_core::id::{DropId, NotificationId, OrderId, ProductId, UserId};
use livedrop_core::model::{self, LedgerEntry, Notification, Order, Product, Stock, User};
use livedrop_core::page::{Cursor, Page, PageRequest};
use livedrop_core::ports::{Claim, Outbox, OutboxRecord};
use livedrop_core::{StoreResult, Timestamp};
use serde_json::Value;
use tokio::sync::Notify;
use uuid::Uuid;

mod catalog;
mod notifications;
mod orders;
mod users;

/// A keyset sort key: `(timestamp, id)`, listed in descending order.
type Key = (Timestamp, Uuid);

/// An in-memory store implementing every repository port of livedrop.
///
/// All state lives behind one [`std::sync::Mutex`]; every write method is a single
/// critical section, so it behaves like one database transaction: the state change
/// and the events describing it are appended to the in-memory outbox together, and
/// concurrent callers see each write either entirely or not at all. Uniqueness rules
/// match the PostgreSQL schema (lower-cased email, one order per buyer and
/// idempotency key, one follow per pair, one notification per user and dedup key),
/// and listings are keyset-paginated newest first by `(created_at, id)`.
///
/// Referential integrity (a follow of an unknown user, an order of an unknown
/// buyer) is not enforced: the services check it before writing.
///
/// Published outbox records are dropped, so memory grows with live data only.
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
    state: Mutex<State>,
    appended: Notify,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The drop's stock version: incremented by every stock movement, and the
    /// `version` of the [`Event::stock_moved`] events it appends. `None` for an
    /// unknown drop.
    pub fn stock_version(&self, drop: DropId) -> Option<i64> {
        self.lock().drops.get(&drop).map(|row| row.version)
    }

    /// Idempotency keys claimed and neither completed nor released, as `(user, key)`
    /// in a stable order, whether or not their lease has run out: what requests that
    /// went away without giving their claim back left behind.
    pub fn pending_claims(&self) -> Vec<(UserId, String)> {
        let state = self.lock();
        let mut pending: Vec<(UserId, String)> = state
            .idempotency
            .iter()
            .flat_map(|(user, keys)| {
                keys.iter()
                    .filter(|(_, record)| record.response.is_none())
                    .map(|(key, _)| (*user, key.clone()))
            })
            .collect();
        pending.sort();
        pending
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic inside a critical section cannot leave a half-applied write behind
        // that a later caller could not read: every write checks before it mutates.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` as one atomic step and wakes outbox waiters if it appended events.
    fn write<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let (result, appended) = {
            let mut state = self.lock();
            let before = state.next_seq;
            let result = f(&mut state);
            (result, state.next_seq != before)
        };
        if appended {
            // `notify_waiters` wakes every relay waiting now; `notify_one` leaves a
            // permit for a relay between `pending` and `wait_for_append`, so no
            // append goes unnoticed (a spurious wake-up at worst).
            self.appended.notify_waiters();
            self.appended.notify_one();
        }
        result
    }
}

/// A drop with its stock, stock version and ledger.
#[derive(Debug)]
struct DropRow {
    drop: model::Drop,
    stock: Stock,
    version: i64,
    ledger: BTreeMap<Key, LedgerEntry>,
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
    /// Per follower: `(followed_at, creator)`.
    following: HashMap<UserId, BTreeSet<Key>>,

    products: HashMap<ProductId, Product>,
    product_index: BTreeSet<Key>,

    drops: HashMap<DropId, DropRow>,
    drop_index: BTreeSet<Key>,
    /// `(starts_at, id)` of drops whose state is `scheduled` or `live`.
    open_drops: BTreeSet<Key>,
    ledger_ids: HashSet<Uuid>,

    orders: HashMap<OrderId, Order>,
    order_keys: HashMap<UserId, HashMap<String, OrderId>>,
    user_orders: HashMap<UserId, BTreeSet<Key>>,
    /// Units each buyer holds (reserved plus confirmed) per drop.
    held: HashMap<(DropId, UserId), u32>,
    /// `(reserved_until, id)` of reserved orders.
    holds: BTreeSet<Key>,

    idempotency: HashMap<UserId, HashMap<String, IdempotencyRecord>>,

    notifications: HashMap<NotificationId, Notification>,
    notification_keys: HashMap<UserId, HashSet<String>>,
    user_notifications: HashMap<UserId, BTreeSet<Key>>,
    unread: HashMap<UserId, BTreeSet<Key>>,

    outbox: BTreeMap<i64, Event>,
    /// The latest appended events, published or not, for outbox followers.
    recent: VecDeque<(i64, Event)>,
    next_seq: i64,
}

/// How many of the latest events followers can still read.
const FOLLOW_WINDOW: usize = 65_536;

impl State {
    fn append(&mut self, events: impl IntoIterator<Item = Event>) {
        for event in events {
            self.next_seq += 1;
            if self.recent.len() == FOLLOW_WINDOW {
                self.recent.pop_front();
            }
            self.recent.push_back((self.next_seq, event.clone()));
            self.outbox.insert(self.next_seq, event);
        }
    }

    /// Applies `change` to the drop's stock, bumps its stock version and appends
    /// [`Event::stock_moved`]. Returns the stock after, or `None` for an unknown drop.
    fn move_stock(
        &mut self,
        drop: DropId,
        at: Timestamp,
        change: impl FnOnce(&mut Stock),
    ) -> Option<Stock> {
        let row = self.drops.get_mut(&drop)?;
        let before = row.stock;
        change(&mut row.stock);
        row.version += 1;
        let (after, version) = (row.stock, row.version);
        debug_assert!(after.is_consistent(), "stock invariant broken: {after:?}");
        self.append(Event::stock_moved(drop.0, &before, &after, version, at));
        Some(after)
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
        let state = self.lock();
        Ok(state
            .outbox
            .iter()
            .take(limit as usize)
            .map(|(seq, event)| OutboxRecord {
                seq: *seq,
                event: event.clone(),
            })
            .collect())
    }

    async fn mark_published(&self, seqs: &[i64]) -> StoreResult<()> {
        let mut state = self.lock();
        for seq in seqs {
            state.outbox.remove(seq);
        }
        Ok(())
    }

    async fn backlog(&self) -> StoreResult<u64> {
        Ok(self.lock().outbox.len() as u64)
    }

    async fn appended_since(
        &self,
        after: i64,
        _also: &[i64],
        limit: u32,
    ) -> StoreResult<Vec<OutboxRecord>> {
        // Appends commit in position order here, so there are never gaps to revisit.
        let state = self.lock();
        let start = state.recent.partition_point(|(seq, _)| *seq <= after);
        Ok(state
            .recent
            .iter()
            .skip(start)
            .take(limit as usize)
            .map(|(seq, event)| OutboxRecord {
                seq: *seq,
                event: event.clone(),
            })
            .collect())
    }

    async fn head(&self) -> StoreResult<i64> {
        Ok(self.lock().next_seq)
    }

    async fn wait_for_append(&self, timeout: Duration) {
        // A timeout is the documented way out: nothing to report.
        let _ = tokio::time::timeout(timeout, self.appended.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use livedrop_core::model::{Adjustment, DropState, OrderStatus, Role};
    use livedrop_core::ports::{DropRepository, InventoryRepository, OrderRepository};
    use livedrop_core::testing::fixtures::{self, at, T0};

    #[tokio::test]
    async fn stock_versions_count_every_movement() {
        let store = MemoryStore::new();
        let creator = fixtures::user("c", Role::Creator);
        let product = fixtures::product(creator.id, "P", "d", at(-100));
        let drop = fixtures::drop_of(&product, at(-10), at(100), 5, DropState::Live, at(-50));
        store.insert_drop(&drop, 5, &[]).await.expect("insert");
        assert_eq!(store.stock_version(drop.id), Some(1));
        let order = fixtures::order(UserId::new(), &drop, 1, "k", T0);
        store.place_order(&order, T0).await.expect("place");
        let adjustment = Adjustment {
            drop_id: drop.id,
            delta: 2,
            reason: "r".into(),
            actor_id: None,
            entry_id: Uuid::now_v7(),
            at: at(1),
        };
        store.adjust(&adjustment).await.expect("adjust");
        assert_eq!(store.stock_version(drop.id), Some(3));
        let pending = store.pending(100).await.expect("pending");
        let versions: Vec<i64> = pending.iter().map(|r| r.event.version).collect();
        assert_eq!(
            versions,
            vec![1, 2, 3],
            "order.placed, then two stock.changed"
        );
        assert_eq!(store.stock_version(DropId::new()), None);
        let stored = store.order(order.id).await.expect("order").expect("exists");
        assert_eq!(stored.status, OrderStatus::Reserved);
    }
}
