//! Orders: the bodies [`order_ports!`](crate::sql::orders::order_ports) shares with
//! the SQLite store, and placement here: the row-lock strategy (the group strategy
//! lives in `group`).

use livedrop_core::clock::Timestamp;
use livedrop_core::model::{Order, PlaceOutcome};
use livedrop_core::{StoreError, StoreResult};
use sqlx::PgConnection;

use super::dialect::{self, OrderColumns};
use super::{map_sqlx_error, Inner, PgStore, ReserveStrategy};
use crate::sql::{Batcher, Placement};

crate::sql::orders::order_ports!(PgStore, Inner);
crate::sql::waitlist::waitlist_ports!(PgStore);
crate::sql::fair::fair_ports!(PgStore);

impl PgStore {
    /// Places `order` with the store's [`ReserveStrategy`].
    async fn place(&self, order: &Order, now: Timestamp) -> StoreResult<PlaceOutcome> {
        match self.inner.strategy {
            ReserveStrategy::RowLock => self.place_row_lock(order, now).await,
            ReserveStrategy::Group { max_batch, .. } => {
                self.place_grouped(order, now, max_batch).await
            }
        }
    }

    /// [`ReserveStrategy::RowLock`]: one transaction per order, under the buyer's
    /// lock and its variant's row lock.
    pub(crate) async fn place_row_lock(
        &self,
        order: &Order,
        now: Timestamp,
    ) -> StoreResult<PlaceOutcome> {
        let one = [Placement {
            order: order.clone(),
            now,
        }];
        for _ in 0..crate::sql::HANDOFF_ATTEMPTS {
            // `None`: the same key was just used on another drop by a concurrent
            // transaction; deciding again finds it.
            if let Some(mut outcomes) = self
                .inner
                .decide(order.drop_id, &one, &mut crate::sql::Turn::first())
                .await?
            {
                return outcomes
                    .pop()
                    .ok_or_else(|| StoreError::backend("no outcome for the order"));
            }
        }
        Err(StoreError::Conflict("idempotency key raced".into()))
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
