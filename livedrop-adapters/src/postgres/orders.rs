//! Orders: the bodies [`order_ports!`](crate::sql::orders::order_ports) shares with
//! the SQLite store, and placement here: the row-lock strategy (the group strategy
//! lives in `group`).

use livedrop_core::clock::Timestamp;
use livedrop_core::event::{Event, EventType};
use livedrop_core::model::{Order, PlaceOutcome};
use livedrop_core::{StoreError, StoreResult};
use sqlx::PgConnection;

use super::dialect::{self, append_events, OrderColumns};
use super::{map_sqlx_error, to_u32, Inner, PgStore, ReserveStrategy};
use crate::sql::orders::HOLDING;
use crate::sql::{refusal, reserved};

crate::sql::orders::order_ports!(PgStore, Inner);

impl PgStore {
    /// Places `order` with the store's [`ReserveStrategy`].
    async fn place(&self, order: &Order, now: Timestamp) -> StoreResult<PlaceOutcome> {
        match self.inner.strategy {
            ReserveStrategy::RowLock => self.place_row_lock(order, now).await,
            ReserveStrategy::Group { max_batch } => self.place_grouped(order, now, max_batch).await,
        }
    }

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
        let Some(row) = drop_row(&mut tx, order.drop_id.0).await? else {
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
    let sql = OrderColumns::insert(2);
    let done = o
        .bind(sqlx::query(&sql).bind(drop))
        .execute(conn)
        .await
        .map_err(map_sqlx_error)?;
    Ok(done.rows_affected())
}
