//! Orders: placement (one order per transaction, or batches of a hot drop through
//! the combiner), settlement and hold expiry. Every write holds the database's write
//! lock from its first statement (`BEGIN IMMEDIATE`), so what it reads is what it
//! decides on.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use livedrop_core::clock::Timestamp;
use livedrop_core::event::{Event, EventType};
use livedrop_core::id::{DropId, OrderId, UserId};
use livedrop_core::model::{
    ExtendOutcome, Order, OrderStatus, PlaceOutcome, SettleOutcome, Settlement,
};
use livedrop_core::page::{Page, PageRequest};
use livedrop_core::ports::OrderRepository;
use livedrop_core::{StoreError, StoreResult};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use uuid::Uuid;

use super::dialect::{append_events, insert_orders, DropRow, OrderRow, StockRow};
use super::{after, map_sqlx_error, micros, overfetch, Inner, SqliteStore};
use crate::sql::{self, decide_batch, Batcher, Combiners, Placement};

/// Statuses that hold stock and count toward the per-user limit.
const HOLDING: &str = "('reserved', 'confirmed')";

/// The order `id`, read through `conn` (a reader, or the caller's write transaction).
async fn order_row<'c, E>(conn: E, id: OrderId) -> StoreResult<Option<Order>>
where
    E: sqlx::Executor<'c, Database = Sqlite>,
{
    let sql = format!("SELECT {} FROM orders WHERE id = ?1", OrderRow::COLUMNS);
    sqlx::query_as::<_, OrderRow>(&sql)
        .bind(id.0)
        .fetch_optional(conn)
        .await
        .map_err(map_sqlx_error)?
        .map(OrderRow::into_order)
        .transpose()
}

/// The drop and its inventory, read inside the caller's write transaction.
async fn drop_row(conn: &mut SqliteConnection, drop: Uuid) -> StoreResult<Option<DropRow>> {
    let sql = format!(
        "SELECT {} FROM drops d JOIN inventory i ON i.drop_id = d.id WHERE d.id = ?1",
        DropRow::COLUMNS
    );
    sqlx::query_as::<_, DropRow>(&sql)
        .bind(drop)
        .fetch_optional(conn)
        .await
        .map_err(map_sqlx_error)
}

async fn stock_row(conn: &mut SqliteConnection, drop: Uuid) -> StoreResult<StockRow> {
    let sql = format!(
        "SELECT {} FROM inventory WHERE drop_id = ?1",
        StockRow::COLUMNS
    );
    sqlx::query_as::<_, StockRow>(&sql)
        .bind(drop)
        .fetch_one(conn)
        .await
        .map_err(map_sqlx_error)
}

async fn write_stock(conn: &mut SqliteConnection, drop: Uuid, row: &StockRow) -> StoreResult<()> {
    sqlx::query(
        "UPDATE inventory SET available = ?2, reserved = ?3, sold = ?4, version = ?5 \
         WHERE drop_id = ?1",
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

/// Orders that exist under the (buyer, key) pairs of `batch`, on any drop.
async fn known_orders(
    conn: &mut SqliteConnection,
    batch: &[Placement],
) -> StoreResult<HashMap<(Uuid, String), Order>> {
    let mut query = QueryBuilder::<Sqlite>::new(format!(
        "SELECT {} FROM orders WHERE (user_id, idempotency_key) IN (VALUES ",
        OrderRow::COLUMNS
    ));
    let mut pairs = query.separated(", ");
    for r in batch {
        pairs.push("(");
        pairs.push_bind_unseparated(r.order.user_id.0);
        pairs.push_unseparated(", ");
        pairs.push_bind_unseparated(r.order.idempotency_key.as_str());
        pairs.push_unseparated(")");
    }
    query.push(")");
    let mut known = HashMap::new();
    for row in query
        .build_query_as::<OrderRow>()
        .fetch_all(&mut *conn)
        .await
        .map_err(map_sqlx_error)?
    {
        let o = row.into_order()?;
        known.insert((o.user_id.0, o.idempotency_key.clone()), o);
    }
    Ok(known)
}

/// Units each buyer of `batch` holds in `drop` (reserved + confirmed).
async fn held_units(
    conn: &mut SqliteConnection,
    drop: Uuid,
    batch: &[Placement],
) -> StoreResult<HashMap<Uuid, i64>> {
    let mut query = QueryBuilder::<Sqlite>::new(format!(
        "SELECT user_id, SUM(quantity) AS held FROM orders \
         WHERE status IN {HOLDING} AND drop_id = "
    ));
    query.push_bind(drop).push(" AND user_id IN (");
    let mut users = query.separated(", ");
    for r in batch {
        users.push_bind(r.order.user_id.0);
    }
    query.push(") GROUP BY user_id");
    let mut held = HashMap::new();
    for r in query
        .build()
        .fetch_all(&mut *conn)
        .await
        .map_err(map_sqlx_error)?
    {
        let user: Uuid = r.try_get("user_id").map_err(map_sqlx_error)?;
        let units: i64 = r.try_get("held").map_err(map_sqlx_error)?;
        held.insert(user, units);
    }
    Ok(held)
}

#[async_trait]
impl Batcher for Inner {
    fn combiners(&self) -> &Combiners {
        &self.combiners
    }

    /// Decides and writes `batch` in one write transaction. Other writers wait for
    /// the database's write lock, so no key can be taken in between: the result is
    /// never `Ok(None)`.
    async fn decide(
        &self,
        drop: DropId,
        batch: &[Placement],
    ) -> StoreResult<Option<Vec<PlaceOutcome>>> {
        let mut tx = self.write().await?;
        let known = known_orders(&mut tx, batch).await?;
        let Some(row) = drop_row(&mut tx, drop.0).await? else {
            tx.rollback().await.map_err(map_sqlx_error)?;
            let key = |r: &Placement| (r.order.user_id.0, r.order.idempotency_key.clone());
            return Ok(Some(
                batch
                    .iter()
                    .map(|r| match known.get(&key(r)) {
                        Some(o) => PlaceOutcome::Duplicate(o.clone()),
                        None => PlaceOutcome::DropNotFound,
                    })
                    .collect(),
            ));
        };
        let held = held_units(&mut tx, drop.0, batch).await?;
        let decision = decide_batch(&row.to_drop()?, row.stock, known, held, batch)?;
        if decision.placed.is_empty() {
            tx.rollback().await.map_err(map_sqlx_error)?;
            return Ok(Some(decision.outcomes));
        }
        write_stock(&mut tx, drop.0, &decision.stock).await?;
        let inserted = insert_orders(&mut tx, &decision.placed).await?;
        if inserted != decision.placed.len() as u64 {
            // Unreachable under the write lock; refuse rather than half-write.
            tx.rollback().await.map_err(map_sqlx_error)?;
            return Ok(None);
        }
        append_events(&mut tx, &decision.events).await?;
        self.commit(tx, true).await?;
        Ok(Some(decision.outcomes))
    }
}

#[async_trait]
impl OrderRepository for SqliteStore {
    async fn place_order(&self, order: &Order, now: Timestamp) -> StoreResult<PlaceOutcome> {
        let max_batch = self.inner.max_batch;
        if max_batch > 1 {
            if let Some(outcome) = sql::place(&self.inner, order, now, max_batch).await {
                return outcome;
            }
        }
        // One order, one transaction.
        let one = [Placement {
            order: order.clone(),
            now,
        }];
        let mut outcomes = self
            .inner
            .decide(order.drop_id, &one)
            .await?
            .ok_or_else(|| StoreError::Conflict("idempotency key raced".into()))?;
        outcomes
            .pop()
            .ok_or_else(|| StoreError::backend("no outcome for the order"))
    }

    async fn order(&self, id: OrderId) -> StoreResult<Option<Order>> {
        order_row(&self.inner.readers, id).await
    }

    async fn orders_for_user(&self, user: UserId, page: PageRequest) -> StoreResult<Page<Order>> {
        let sql = format!(
            "SELECT {} FROM orders WHERE user_id = ?1 \
               AND (?2 IS NULL OR (created_at, id) < (?2, ?3)) \
             ORDER BY created_at DESC, id DESC LIMIT ?4",
            OrderRow::COLUMNS
        );
        let (at, id) = after(&page);
        let rows = sqlx::query_as::<_, OrderRow>(&sql)
            .bind(user.0)
            .bind(at)
            .bind(id)
            .bind(overfetch(&page))
            .fetch_all(&self.inner.readers)
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
        let mut tx = self.inner.write().await?;
        let Some(order) = order_row(&mut *tx, id).await? else {
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
        let mut stock = stock_row(&mut tx, order.drop_id.0).await?;
        let expired = settlement == Settlement::Confirm && now >= order.reserved_until;
        let (status, kind) = if expired {
            (OrderStatus::Expired, EventType::OrderExpired)
        } else if settlement == Settlement::Confirm {
            (OrderStatus::Confirmed, EventType::OrderConfirmed)
        } else {
            (OrderStatus::Cancelled, EventType::OrderCancelled)
        };
        let (before, after) = stock.release(order.quantity, status == OrderStatus::Confirmed)?;
        write_stock(&mut tx, order.drop_id.0, &stock).await?;
        sqlx::query("UPDATE orders SET status = ?2, updated_at = ?3 WHERE id = ?1")
            .bind(order.id.0)
            .bind(status.as_str())
            .bind(micros(now))
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx_error)?;
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
        self.inner.commit(tx, true).await?;
        Ok(if expired {
            SettleOutcome::HoldExpired(settled)
        } else {
            SettleOutcome::Settled(settled)
        })
    }

    async fn expire_holds(&self, now: Timestamp, limit: u32) -> StoreResult<Vec<Order>> {
        let mut tx = self.inner.write().await?;
        // Under the write lock: each hold is returned by exactly one transaction.
        let sql = format!(
            "SELECT {} FROM orders WHERE status = 'reserved' AND reserved_until <= ?1 \
             ORDER BY reserved_until, id LIMIT ?2",
            OrderRow::COLUMNS
        );
        let due = sqlx::query_as::<_, OrderRow>(&sql)
            .bind(micros(now))
            // Bounded so the status update below stays within SQLite's parameters.
            .bind(i64::from(limit.min(10_000)))
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
        for (drop, orders) in by_drop {
            let mut stock = stock_row(&mut tx, drop).await?;
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
        let mut update =
            QueryBuilder::<Sqlite>::new("UPDATE orders SET status = 'expired', updated_at = ");
        update.push_bind(micros(now)).push(" WHERE id IN (");
        let mut ids = update.separated(", ");
        for order in &expired {
            ids.push_bind(order.id.0);
        }
        update.push(")");
        update
            .build()
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx_error)?;
        append_events(&mut tx, &events).await?;
        self.inner.commit(tx, true).await?;
        tracing::debug!(count = expired.len(), "expired holds");
        Ok(expired)
    }

    async fn extend_hold(
        &self,
        id: OrderId,
        by: chrono::Duration,
        now: Timestamp,
    ) -> StoreResult<ExtendOutcome> {
        // Under the write lock: settlements and sweepers see the order before or after.
        let mut tx = self.inner.write().await?;
        let Some(order) = order_row(&mut *tx, id).await? else {
            tx.rollback().await.map_err(map_sqlx_error)?;
            return Ok(ExtendOutcome::NotFound);
        };
        let outcome = order.extension(by, now);
        let ExtendOutcome::Extended(extended) = &outcome else {
            tx.rollback().await.map_err(map_sqlx_error)?;
            return Ok(outcome);
        };
        sqlx::query("UPDATE orders SET reserved_until = ?2, extended_at = ?3 WHERE id = ?1")
            .bind(id.0)
            .bind(micros(extended.reserved_until))
            .bind(extended.extended_at.map(micros))
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx_error)?;
        append_events(
            &mut tx,
            &[Event::order(EventType::OrderExtended, extended, now)],
        )
        .await?;
        self.inner.commit(tx, true).await?;
        Ok(outcome)
    }
}
