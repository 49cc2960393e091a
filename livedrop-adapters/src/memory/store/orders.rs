//! Orders, the reservations they hold, and idempotency keys.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use livedrop_core::event::EventType;
use livedrop_core::id::{OrderId, UserId};
use livedrop_core::model::{
    ExtendOutcome, Order, OrderStatus, PlaceOutcome, SettleOutcome, Settlement,
};
use livedrop_core::page::{Page, PageRequest};
use livedrop_core::ports::{BeginOutcome, Claim, IdempotencyStore, OrderRepository};
use livedrop_core::service::{key_outcome, order_record};
use livedrop_core::{StoreError, StoreResult, Timestamp};
use serde_json::Value;

use super::{keyset_page, lease_end, Appended, Buyers, IdempotencyRecord, Key, MemoryStore, State};

impl State {
    /// Moves a reserved order to `status` at `now`: releases its hold, moves its
    /// units (to sold when confirmed, back to its variant's waitlist and then
    /// available otherwise, offers held for `hold`) and appends the order event, the
    /// hand-off's events, then the stock events. Returns the updated order.
    fn finish_hold(
        &mut self,
        id: OrderId,
        status: OrderStatus,
        now: Timestamp,
        hold: chrono::Duration,
    ) -> Option<Order> {
        let shared = self.orders.get_mut(id.0).get_mut(&id)?;
        debug_assert_eq!(shared.status, OrderStatus::Reserved);
        let row = self.drops.get_mut(&shared.drop_id)?;
        let variant = row.variant(&shared.sku)?;
        row.holds.remove(&(shared.reserved_until, id.0));
        let order = Arc::make_mut(shared);
        order.status = status;
        order.updated_at = now;
        let shared = shared.clone();
        let order = Order::clone(&shared);
        let q = order.quantity;
        if !status.holds_stock() {
            if let Some(held) = row.held.get_mut(&order.user_id) {
                *held = held.saturating_sub(q);
            }
        }
        let kind = match status {
            OrderStatus::Confirmed => EventType::OrderConfirmed,
            OrderStatus::Cancelled => EventType::OrderCancelled,
            OrderStatus::Expired | OrderStatus::Reserved => EventType::OrderExpired,
        };
        self.push(Appended::order(kind, shared, now));
        let confirmed = status == OrderStatus::Confirmed;
        let hand_off = (!confirmed).then_some(hold);
        self.move_stock(order.drop_id, variant, now, hand_off, |s| {
            s.reserved -= q;
            if confirmed {
                s.sold += q;
            } else {
                s.available += q;
            }
        });
        Some(order)
    }
}

impl Buyers {
    /// Indexes `order` under its buyer: by its idempotency `key` and in their listing.
    pub(super) fn index(&mut self, order: &Order, key: String) {
        debug_assert_eq!(key, order.idempotency_key);
        self.order_keys
            .entry(order.user_id)
            .or_default()
            .insert(key, order.id);
        self.user_orders
            .entry(order.user_id)
            .or_default()
            .insert((order.created_at, order.id.0));
    }

    /// Finishes the buyer's key of `order` with the answer `outcome` (a refusal:
    /// a placed order is its own record, see [`IdempotencyStore::begin`] here).
    fn keep_refusal(&mut self, order: &Order, outcome: &PlaceOutcome, now: Timestamp) {
        let Some(response) = order_record(outcome, order.quantity) else {
            return;
        };
        self.idempotency.entry(order.user_id).or_default().insert(
            order.idempotency_key.clone(),
            IdempotencyRecord {
                fingerprint: order.fingerprint.clone(),
                claim: Claim::new(),
                response: Some(response),
                lease_until: now,
                created_at: now,
            },
        );
    }

    /// The id of the order `user` placed under `key`.
    fn order_under(&self, user: UserId, key: &str) -> Option<OrderId> {
        self.order_keys.get(&user)?.get(key).copied()
    }
}

impl State {
    /// The order with `id`, copied out of its shard.
    fn order(&self, id: OrderId) -> Option<Order> {
        self.orders.lock(id.0).get(&id).map(|o| Order::clone(o))
    }
}

#[async_trait]
impl OrderRepository for MemoryStore {
    async fn place_order(&self, order: &Order, now: Timestamp) -> StoreResult<PlaceOutcome> {
        // What a placement writes is built before any lock, so the critical section
        // only checks and moves: the stored order (one copy, shared by the index and
        // the `order.placed` event, which go unused when the order is refused) and
        // its key.
        let stored = Order {
            status: OrderStatus::Reserved,
            extended_at: None,
            ..order.clone()
        };
        let indexed = Arc::new(stored.clone());
        let key = stored.idempotency_key.clone();
        let placed = Appended::order(EventType::OrderPlaced, indexed.clone(), now);
        let user = stored.user_id;
        {
            // The order path's locks, in their order (see `MemoryStore`): the
            // buyer's shard, the drop's row, the order's shard, the outbox.
            let state = self.read();
            let mut buyers = state.buyers.lock(user.0);
            let existing = buyers
                .order_under(user, &stored.idempotency_key)
                .and_then(|id| state.order(id));
            if let Some(existing) = existing {
                return Ok(PlaceOutcome::Duplicate(existing));
            }
            let user_keys = buyers.idempotency.get(&user);
            if let Some(record) = user_keys.and_then(|keys| keys.get(&stored.idempotency_key)) {
                let decided = key_outcome(
                    &record.fingerprint,
                    record.response.as_ref(),
                    Some(record.lease_until),
                    &stored.fingerprint,
                    now,
                );
                if let Some(outcome) = decided {
                    return Ok(outcome);
                }
            }
            let Some(mut row) = state.drops.lock(stored.drop_id) else {
                return Ok(PlaceOutcome::DropNotFound);
            };
            let Some(variant) = row.variant(&stored.sku) else {
                return Ok(PlaceOutcome::UnknownVariant);
            };
            if !row.drop.accepts_orders_at(now) {
                return Ok(PlaceOutcome::NotLive);
            }
            let held = row.held.get(&user).copied().unwrap_or(0);
            let limit = row.drop.per_user_limit;
            if u64::from(held) + u64::from(stored.quantity) > u64::from(limit) {
                let refused = PlaceOutcome::LimitExceeded { limit, held };
                buyers.keep_refusal(&stored, &refused, now);
                return Ok(refused);
            }
            let available = row.variants[variant].stock.available;
            if available < stored.quantity {
                let refused = PlaceOutcome::OutOfStock { available };
                buyers.keep_refusal(&stored, &refused, now);
                return Ok(refused);
            }
            let mut orders = state.orders.lock(stored.id.0);
            if orders.contains_key(&stored.id) {
                return Err(StoreError::Conflict(format!("order {} exists", stored.id)));
            }

            // The order is the key's record: a claim it took over goes.
            if let Some(keys) = buyers.idempotency.get_mut(&user) {
                keys.remove(stored.idempotency_key.as_str());
                if keys.is_empty() {
                    buyers.idempotency.remove(&user);
                }
            }
            let q = stored.quantity;
            let before = row.variants[variant].stock;
            let stock = &mut row.variants[variant].stock;
            stock.available -= q;
            stock.reserved += q;
            row.hold(&indexed);
            orders.insert(indexed.id, indexed.clone());
            {
                let mut log = state.log.lock();
                log.push(placed);
                row.stock_moved(variant, before, now, |entry| log.push(entry));
            }
            drop((orders, row));
            // Only the buyer's shard, still held, reads the buyer's indexes: they are
            // written after the drop's row is let go.
            buyers.index(&indexed, key);
        }
        self.announce();
        Ok(PlaceOutcome::Placed(stored))
    }

    async fn order(&self, id: OrderId) -> StoreResult<Option<Order>> {
        Ok(self.read().order(id))
    }

    async fn order_by_key(&self, user: UserId, key: &str) -> StoreResult<Option<Order>> {
        let state = self.read();
        let buyers = state.buyers.lock(user.0);
        Ok(buyers.order_under(user, key).and_then(|id| state.order(id)))
    }

    async fn orders_for_user(&self, user: UserId, page: PageRequest) -> StoreResult<Page<Order>> {
        let state = self.read();
        let buyers = state.buyers.lock(user.0);
        Ok(keyset_page(
            buyers.user_orders.get(&user),
            page,
            |(_, id)| state.order(OrderId(*id)),
            Order::cursor,
        ))
    }

    async fn settle_order(
        &self,
        id: OrderId,
        settlement: Settlement,
        now: Timestamp,
        hold: chrono::Duration,
    ) -> StoreResult<SettleOutcome> {
        self.write(|state| {
            let Some(order) = state.orders.get_mut(id.0).get(&id) else {
                return Ok(SettleOutcome::NotFound);
            };
            let target = match settlement {
                Settlement::Confirm => OrderStatus::Confirmed,
                Settlement::Cancel => OrderStatus::Cancelled,
            };
            if order.status == target {
                return Ok(SettleOutcome::Unchanged(Order::clone(order)));
            }
            if order.status != OrderStatus::Reserved {
                return Ok(SettleOutcome::Conflict(Order::clone(order)));
            }
            let expired = settlement == Settlement::Confirm && now >= order.reserved_until;
            let status = if expired {
                OrderStatus::Expired
            } else {
                target
            };
            match state.finish_hold(id, status, now, hold) {
                Some(order) if expired => Ok(SettleOutcome::HoldExpired(order)),
                Some(order) => Ok(SettleOutcome::Settled(order)),
                None => Ok(SettleOutcome::NotFound),
            }
        })
    }

    async fn expire_holds(
        &self,
        now: Timestamp,
        limit: u32,
        hold: chrono::Duration,
    ) -> StoreResult<Vec<Order>> {
        self.write(|state| {
            // The holds due first over every drop: each drop's first `limit`, merged.
            let limit = limit as usize;
            let mut due: Vec<Key> = state
                .drops
                .rows_mut()
                .flat_map(|row| {
                    row.holds
                        .iter()
                        .take_while(|(until, _)| *until <= now)
                        .take(limit)
                        .copied()
                        .collect::<Vec<_>>()
                })
                .collect();
            due.sort_unstable();
            due.truncate(limit);
            Ok(due
                .into_iter()
                .filter_map(|(_, id)| {
                    state.finish_hold(OrderId(id), OrderStatus::Expired, now, hold)
                })
                .collect())
        })
    }

    async fn extend_hold(
        &self,
        id: OrderId,
        by: chrono::Duration,
        now: Timestamp,
    ) -> StoreResult<ExtendOutcome> {
        self.write(|state| {
            let Some(order) = state.orders.get_mut(id.0).get_mut(&id) else {
                return Ok(ExtendOutcome::NotFound);
            };
            let outcome = order.extension(by, now);
            if let ExtendOutcome::Extended(extended) = &outcome {
                let was = order.reserved_until;
                let shared = Arc::new(extended.clone());
                *order = shared.clone();
                if let Some(row) = state.drops.get_mut(&extended.drop_id) {
                    row.holds.remove(&(was, id.0));
                    row.holds.insert((extended.reserved_until, id.0));
                }
                state.push(Appended::order(EventType::OrderExtended, shared, now));
            }
            Ok(outcome)
        })
    }
}

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn begin(
        &self,
        user: UserId,
        key: &str,
        fingerprint: &str,
        now: Timestamp,
        lease: Duration,
    ) -> StoreResult<BeginOutcome> {
        let claim = Claim::new();
        let state = self.read();
        let mut buyers = state.buyers.lock(user.0);
        // An order placed under the key is its record.
        let order = buyers.order_under(user, key).and_then(|id| state.order(id));
        if let Some(order) = order {
            if order.fingerprint != fingerprint {
                return Ok(BeginOutcome::Mismatch);
            }
            let quantity = order.quantity;
            if let Some(record) = order_record(&PlaceOutcome::Placed(order), quantity) {
                return Ok(BeginOutcome::Replay(record));
            }
        }
        let keys = buyers.idempotency.entry(user).or_default();
        let Some(record) = keys.get_mut(key) else {
            keys.insert(
                key.to_owned(),
                IdempotencyRecord {
                    fingerprint: fingerprint.to_owned(),
                    claim,
                    response: None,
                    lease_until: lease_end(now, lease),
                    created_at: now,
                },
            );
            return Ok(BeginOutcome::Started(claim));
        };
        if record.fingerprint != fingerprint {
            return Ok(BeginOutcome::Mismatch);
        }
        if let Some(response) = &record.response {
            return Ok(BeginOutcome::Replay(response.clone()));
        }
        if record.lease_until > now {
            return Ok(BeginOutcome::InFlight);
        }
        // The owner's lease ran out (it died): this caller takes the key over.
        record.lease_until = lease_end(now, lease);
        record.claim = claim;
        Ok(BeginOutcome::Started(claim))
    }

    async fn complete(
        &self,
        user: UserId,
        key: &str,
        claim: Claim,
        response: &Value,
    ) -> StoreResult<bool> {
        let state = self.read();
        let mut buyers = state.buyers.lock(user.0);
        match buyers
            .idempotency
            .get_mut(&user)
            .and_then(|keys| keys.get_mut(key))
        {
            Some(record) if record.claim == claim && record.response.is_none() => {
                record.response = Some(response.clone());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, user: UserId, key: &str, claim: Claim) -> StoreResult<bool> {
        let state = self.read();
        let mut buyers = state.buyers.lock(user.0);
        let Some(keys) = buyers.idempotency.get_mut(&user) else {
            return Ok(false);
        };
        // A completed key keeps its response, and a taken-over claim is the new
        // holder's: only our own open claim is given up.
        let ours = keys
            .get(key)
            .is_some_and(|r| r.response.is_none() && r.claim == claim);
        if ours {
            keys.remove(key);
        }
        if keys.is_empty() {
            buyers.idempotency.remove(&user);
        }
        Ok(ours)
    }

    async fn purge(&self, cutoff: Timestamp) -> StoreResult<u64> {
        self.write(|state| {
            let mut purged = 0u64;
            for buyers in state.buyers.iter_mut() {
                buyers.idempotency.retain(|_, keys| {
                    let before = keys.len();
                    keys.retain(|_, record| record.created_at >= cutoff);
                    purged += (before - keys.len()) as u64;
                    !keys.is_empty()
                });
            }
            Ok(purged)
        })
    }
}
