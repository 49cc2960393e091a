//! Orders: placement (row-lock strategy; the group strategy lives in `group`),
//! settlement and hold expiry.

use std::collections::BTreeMap;

use async_trait::async_trait;
use livedrop_core::clock::Timestamp;
use livedrop_core::event::{Event, EventType};
use livedrop_core::id::{OrderId, UserId};
use livedrop_core::model::{
    ExtendOutcome, Order, OrderStatus, PlaceOutcome, SettleOutcome, Settlement,
};
use livedrop_core::page::{Page, PageRequest};
use livedrop_core::ports::OrderRepository;
use livedrop_core::{StoreError, StoreResult};
use sqlx::PgConnection;
use uuid::Uuid;

use super::dialect::{append_events, DropRow, OrderColumns, OrderRow, StockRow};
use super::{after, map_sqlx_error, overfetch, to_u32, PgStore, ReserveStrategy};
use crate::sql::{refusal, reserved};

/// Statuses that hold stock and count toward the per-user limit.
pub(crate) const HOLDING: &str = "('reserved', 'confirmed')";

/// The drop and its inventory, the inventory row locked for the transaction.
pub(crate) async fn lock_drop(conn: &mut PgConnection, drop: Uuid) -> StoreResult<Option<DropRow>> {
    let sql = format!(
        "SELECT {} FROM drops d JOIN inventory i ON i.drop_id = d.id WHERE d.id = $1 \
         FOR UPDATE OF i",
        DropRow::COLUMNS
    );
    sqlx::query_as::<_, DropRow>(&sql)
        .bind(drop)
        .fetch_optional(conn)
        .await
        .map_err(map_sqlx_error)
}

/// The buyer's order with `key`, if any.
pub(crate) async fn order_by_key(
    conn: &mut PgConnection,
    user: UserId,
    key: &str,
) -> StoreResult<Option<Order>> {
    let sql = format!(
        "SELECT {} FROM orders WHERE user_id = $1 AND idempotency_key = $2",
        OrderRow::COLUMNS
    );
    sqlx::query_as::<_, OrderRow>(&sql)
        .bind(user.0)
        .bind(key)
        .fetch_optional(conn)
        .await
        .map_err(map_sqlx_error)?
        .map(OrderRow::into_order)
        .transpose()
}

async fn order_for_update(conn: &mut PgConnection, id: OrderId) -> StoreResult<Option<Order>> {
    let sql = format!(
        "SELECT {} FROM orders WHERE id = $1 FOR UPDATE",
        OrderRow::COLUMNS
    );
    sqlx::query_as::<_, OrderRow>(&sql)
        .bind(id.0)
        .fetch_optional(conn)
        .await
        .map_err(map_sqlx_error)?
        .map(OrderRow::into_order)
        .transpose()
}

async fn lock_stock(conn: &mut PgConnection, drop: Uuid) -> StoreResult<StockRow> {
    let sql = format!(
        "SELECT {} FROM inventory WHERE drop_id = $1 FOR UPDATE",
        StockRow::COLUMNS
    );
    sqlx::query_as::<_, StockRow>(&sql)
        .bind(drop)
        .fetch_one(conn)
        .await
        .map_err(map_sqlx_error)
}

async fn write_stock(conn: &mut PgConnection, drop: Uuid, row: &StockRow) -> StoreResult<()> {
    sqlx::query(
        "UPDATE inventory SET available = $2, reserved = $3, sold = $4, version = $5 \
         WHERE drop_id = $1",
    )
    .bind(drop)
    .bind(row.available)
    .bind(row.reserved)
    .bind(row.sold)
    .bind(row.version)
    .execute(conn)
    .await
    .map_err(map_sqlx_error)?;
    Ok(())
}

async fn set_status(
    conn: &mut PgConnection,
    ids: &[Uuid],
    status: OrderStatus,
    now: Timestamp,
) -> StoreResult<()> {
    sqlx::query("UPDATE orders SET status = $2, updated_at = $3 WHERE id = ANY($1)")
        .bind(ids)
        .bind(status.as_str())
        .bind(now)
        .execute(conn)
        .await
        .map_err(map_sqlx_error)?;
    Ok(())
}

impl PgStore {
    /// [`ReserveStrategy::RowLock`]: one transaction per order under the row lock.
    pub(crate) async fn place_row_lock(
        &self,
        order: &Order,
        now: Timestamp,
    ) -> StoreResult<PlaceOutcome> {
        let mut tx = self.inner.pool.begin().await.map_err(map_sqlx_error)?;
        if let Some(existing) = order_by_key(&mut tx, order.user_id, &order.idempotency_key).await?
        {
            tx.rollback().await.map_err(map_sqlx_error)?;
            return Ok(PlaceOutcome::Duplicate(existing));
        }
        let Some(row) = lock_drop(&mut tx, order.drop_id.0).await? else {
            tx.rollback().await.map_err(map_sqlx_error)?;
            return Ok(PlaceOutcome::DropNotFound);
        };
        // A transaction with the same key may have committed while this one waited
        // for the lock: under the lock, the key is decided before anything else.
        if let Some(existing) = order_by_key(&mut tx, order.user_id, &order.idempotency_key).await?
        {
            tx.rollback().await.map_err(map_sqlx_error)?;
            return Ok(PlaceOutcome::Duplicate(existing));
        }
        let drop = row.to_drop()?;
        let held: i64 = sqlx::query_scalar(&format!(
            "SELECT COALESCE(SUM(quantity), 0)::int8 FROM orders \
             WHERE drop_id = $1 AND user_id = $2 AND status IN {HOLDING}"
        ))
        .bind(order.drop_id.0)
        .bind(order.user_id.0)
        .fetch_one(&mut *tx)
        .await
        .map_err(map_sqlx_error)?;
        let before = row.stock.stock()?;
        if let Some(no) = refusal(&drop, now, to_u32(held)?, before.available, order.quantity) {
            tx.rollback().await.map_err(map_sqlx_error)?;
            return Ok(no);
        }
        let mut stock = row.stock;
        let (_, after) = stock.reserve(order.quantity)?;
        write_stock(&mut tx, order.drop_id.0, &stock).await?;
        let placed = reserved(order);
        let inserted = insert_orders(&mut tx, std::slice::from_ref(&placed)).await?;
        if inserted != 1 {
            // The same key was just used on another drop by a concurrent transaction.
            tx.rollback().await.map_err(map_sqlx_error)?;
            let mut conn = self.inner.pool.acquire().await.map_err(map_sqlx_error)?;
            return match order_by_key(&mut conn, order.user_id, &order.idempotency_key).await? {
                Some(existing) => Ok(PlaceOutcome::Duplicate(existing)),
                None => Err(StoreError::Conflict("idempotency key raced".into())),
            };
        }
        let mut events = vec![Event::order(EventType::OrderPlaced, &placed, now)];
        events.extend(Event::stock_moved(
            order.drop_id.0,
            &before,
            &after,
            stock.version,
            now,
        ));
        append_events(&mut tx, &events).await?;
        tx.commit().await.map_err(map_sqlx_error)?;
        Ok(PlaceOutcome::Placed(placed))
    }
}

/// Inserts `orders` with one multi-row insert, skipping any whose (buyer, key) exists.
/// Returns how many were inserted.
pub(crate) async fn insert_orders(conn: &mut PgConnection, orders: &[Order]) -> StoreResult<u64> {
    let o = OrderColumns::new(orders);
    let drop = orders.first().map(|o| o.drop_id.0);
    let done = sqlx::query(
        "INSERT INTO orders (id, user_id, drop_id, quantity, unit_price_cents, total_cents, \
                             currency, status, idempotency_key, fingerprint, reserved_until, \
                             created_at, updated_at) \
         SELECT o.id, o.user_id, $1, o.q, o.unit, o.total, o.cur, 'reserved', o.key, o.fp, \
                o.until, o.created, o.updated \
         FROM UNNEST($2::uuid[], $3::uuid[], $4::int8[], $5::int8[], $6::int8[], $7::text[], \
                     $8::text[], $9::text[], $10::timestamptz[], $11::timestamptz[], \
                     $12::timestamptz[]) \
              AS o(id, user_id, q, unit, total, cur, key, fp, until, created, updated) \
         ON CONFLICT (user_id, idempotency_key) DO NOTHING",
    )
    .bind(drop)
    .bind(&o.ids)
    .bind(&o.users)
    .bind(&o.quantities)
    .bind(&o.units)
    .bind(&o.totals)
    .bind(&o.currencies)
    .bind(&o.keys)
    .bind(&o.fingerprints)
    .bind(&o.until)
    .bind(&o.created)
    .bind(&o.updated)
    .execute(conn)
    .await
    .map_err(map_sqlx_error)?;
    Ok(done.rows_affected())
}

#[async_trait]
impl OrderRepository for PgStore {
    async fn place_order(&self, order: &Order, now: Timestamp) -> StoreResult<PlaceOutcome> {
        match self.inner.strategy {
            ReserveStrategy::RowLock => self.place_row_lock(order, now).await,
            ReserveStrategy::Group { max_batch } => self.place_grouped(order, now, max_batch).await,
        }
    }

    async fn order(&self, id: OrderId) -> StoreResult<Option<Order>> {
        let sql = format!("SELECT {} FROM orders WHERE id = $1", OrderRow::COLUMNS);
        sqlx::query_as::<_, OrderRow>(&sql)
            .bind(id.0)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(map_sqlx_error)?
            .map(OrderRow::into_order)
            .transpose()
    }

    async fn order_by_key(&self, user: UserId, key: &str) -> StoreResult<Option<Order>> {
        let mut conn = self.inner.pool.acquire().await.map_err(map_sqlx_error)?;
        order_by_key(&mut conn, user, key).await
    }

    async fn orders_for_user(&self, user: UserId, page: PageRequest) -> StoreResult<Page<Order>> {
        let sql = format!(
            "SELECT {} FROM orders WHERE user_id = $1 \
               AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid)) \
             ORDER BY created_at DESC, id DESC LIMIT $4",
            OrderRow::COLUMNS
        );
        let (at, id) = after(&page);
        let rows = sqlx::query_as::<_, OrderRow>(&sql)
            .bind(user.0)
            .bind(at)
            .bind(id)
            .bind(overfetch(&page))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(map_sqlx_error)?;
        let items = rows
            .into_iter()
            .map(OrderRow::into_order)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, page.limit, Order::cursor))
    }

    async fn settle_order(
        &self,
        id: OrderId,
        settlement: Settlement,
        now: Timestamp,
    ) -> StoreResult<SettleOutcome> {
        let mut tx = self.inner.pool.begin().await.map_err(map_sqlx_error)?;
        let Some(order) = order_for_update(&mut tx, id).await? else {
            tx.rollback().await.map_err(map_sqlx_error)?;
            return Ok(SettleOutcome::NotFound);
        };
        let target = match settlement {
            Settlement::Confirm => OrderStatus::Confirmed,
            Settlement::Cancel => OrderStatus::Cancelled,
        };
        if order.status == target {
            tx.rollback().await.map_err(map_sqlx_error)?;
            return Ok(SettleOutcome::Unchanged(order));
        }
        if order.status != OrderStatus::Reserved {
            tx.rollback().await.map_err(map_sqlx_error)?;
            return Ok(SettleOutcome::Conflict(order));
        }
        // Order row, then inventory row: the same lock order as the sweeper.
        let mut stock = lock_stock(&mut tx, order.drop_id.0).await?;
        let expired = settlement == Settlement::Confirm && now >= order.reserved_until;
        let (status, kind) = if expired {
            (OrderStatus::Expired, EventType::OrderExpired)
        } else if settlement == Settlement::Confirm {
            (OrderStatus::Confirmed, EventType::OrderConfirmed)
        } else {
            (OrderStatus::Cancelled, EventType::OrderCancelled)
        };
        let sell = status == OrderStatus::Confirmed;
        let (before, after) = stock.release(order.quantity, sell)?;
        write_stock(&mut tx, order.drop_id.0, &stock).await?;
        set_status(&mut tx, &[order.id.0], status, now).await?;
        let settled = Order {
            status,
            updated_at: now,
            ..order
        };
        let mut events = vec![Event::order(kind, &settled, now)];
        events.extend(Event::stock_moved(
            settled.drop_id.0,
            &before,
            &after,
            stock.version,
            now,
        ));
        append_events(&mut tx, &events).await?;
        tx.commit().await.map_err(map_sqlx_error)?;
        Ok(if expired {
            SettleOutcome::HoldExpired(settled)
        } else {
            SettleOutcome::Settled(settled)
        })
    }

    async fn expire_holds(&self, now: Timestamp, limit: u32) -> StoreResult<Vec<Order>> {
        let mut tx = self.inner.pool.begin().await.map_err(map_sqlx_error)?;
        // Rows another sweeper (or a settlement) holds are skipped, so each hold is
        // returned by exactly one transaction.
        let sql = format!(
            "SELECT {} FROM orders WHERE status = 'reserved' AND reserved_until <= $1 \
             ORDER BY reserved_until, id LIMIT $2 FOR UPDATE SKIP LOCKED",
            OrderRow::COLUMNS
        );
        let due = sqlx::query_as::<_, OrderRow>(&sql)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(map_sqlx_error)?
            .into_iter()
            .map(OrderRow::into_order)
            .collect::<StoreResult<Vec<_>>>()?;
        if due.is_empty() {
            tx.rollback().await.map_err(map_sqlx_error)?;
            return Ok(Vec::new());
        }
        let mut by_drop: BTreeMap<Uuid, Vec<Order>> = BTreeMap::new();
        for order in due {
            by_drop.entry(order.drop_id.0).or_default().push(order);
        }
        let mut expired = Vec::new();
        let mut events = Vec::new();
        // Inventory rows in id order, so concurrent sweepers never deadlock.
        for (drop, orders) in by_drop {
            let mut stock = lock_stock(&mut tx, drop).await?;
            for order in orders {
                let (before, after) = stock.release(order.quantity, false)?;
                let order = Order {
                    status: OrderStatus::Expired,
                    updated_at: now,
                    ..order
                };
                events.push(Event::order(EventType::OrderExpired, &order, now));
                events.extend(Event::stock_moved(
                    drop,
                    &before,
                    &after,
                    stock.version,
                    now,
                ));
                expired.push(order);
            }
            write_stock(&mut tx, drop, &stock).await?;
        }
        let ids: Vec<Uuid> = expired.iter().map(|o| o.id.0).collect();
        set_status(&mut tx, &ids, OrderStatus::Expired, now).await?;
        append_events(&mut tx, &events).await?;
        tx.commit().await.map_err(map_sqlx_error)?;
        tracing::debug!(count = expired.len(), "expired holds");
        // The order every store returns: by hold end, then id (locking went by drop).
        expired.sort_by_key(|o: &Order| (o.reserved_until, o.id.0));
        Ok(expired)
    }

    async fn extend_hold(
        &self,
        id: OrderId,
        by: chrono::Duration,
        now: Timestamp,
    ) -> StoreResult<ExtendOutcome> {
        let mut tx = self.inner.pool.begin().await.map_err(map_sqlx_error)?;
        // The order row's lock orders this with settlements and sweepers: a sweeper
        // skips the row while it is locked, and one that locked it first has expired
        // it by the time this read returns (the row as committed).
        let Some(order) = order_for_update(&mut tx, id).await? else {
            tx.rollback().await.map_err(map_sqlx_error)?;
            return Ok(ExtendOutcome::NotFound);
        };
        let outcome = order.extension(by, now);
        let ExtendOutcome::Extended(extended) = &outcome else {
            tx.rollback().await.map_err(map_sqlx_error)?;
            return Ok(outcome);
        };
        sqlx::query("UPDATE orders SET reserved_until = $2, extended_at = $3 WHERE id = $1")
            .bind(id.0)
            .bind(extended.reserved_until)
            .bind(extended.extended_at)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx_error)?;
        append_events(
            &mut tx,
            &[Event::order(EventType::OrderExtended, extended, now)],
        )
        .await?;
        tx.commit().await.map_err(map_sqlx_error)?;
        Ok(outcome)
    }
}
