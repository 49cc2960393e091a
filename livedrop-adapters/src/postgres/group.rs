//! Group reserve: one combiner task per hot drop turns the concurrent `place_order`
//! calls of this process into one transaction per batch.
//!
//! Every decision is still made under the buyers' locks and the rows of the variants
//! ordered, against what is committed, so other processes (with either strategy)
//! stay correct alongside; the batch only shares the locks, the round trips and the
//! commit. The batch's
//! transaction is the one both SQL stores run (`sql::orders`); here are its
//! PostgreSQL statements: the batch's known keys, the units its buyers hold, and the
//! write of stock, orders and events in one round trip.

use std::collections::HashMap;

use livedrop_core::event::Event;
use livedrop_core::id::DropId;
use livedrop_core::model::{Order, PlaceOutcome};
use livedrop_core::StoreResult;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::dialect::{EventColumns, OrderColumns, OrderRow, VariantRow};
use super::{map_sqlx_error, PgStore};
use crate::sql::orders::HOLDING;
use crate::sql::rows::HeldRow;
use crate::sql::{self, Placement};

impl PgStore {
    /// [`ReserveStrategy::Group`](super::ReserveStrategy::Group): queues the order to
    /// its drop's combiner and waits for the decision.
    pub(crate) async fn place_grouped(
        &self,
        order: &Order,
        now: livedrop_core::Timestamp,
        max_batch: usize,
    ) -> StoreResult<PlaceOutcome> {
        match sql::place(&self.inner, order, now, max_batch).await {
            Some(outcome) => outcome,
            // Still racing retirements: decide this order on its own.
            None => self.place_row_lock(order, now).await,
        }
    }
}

/// Orders that exist under the (buyer, key) pairs of `batch`, on any drop.
pub(crate) async fn known_orders(
    conn: &mut PgConnection,
    batch: &[Placement],
) -> StoreResult<HashMap<(Uuid, String), Order>> {
    let users: Vec<Uuid> = batch.iter().map(|r| r.order.user_id.0).collect();
    let keys: Vec<&str> = batch
        .iter()
        .map(|r| r.order.idempotency_key.as_str())
        .collect();
    let sql = format!(
        "SELECT {} FROM orders WHERE (user_id, idempotency_key) IN \
             (SELECT * FROM UNNEST($1::uuid[], $2::text[]))",
        OrderRow::COLUMNS
    );
    let rows = sqlx::query_as::<_, OrderRow>(&sql)
        .bind(&users)
        .bind(&keys)
        .fetch_all(conn)
        .await
        .map_err(map_sqlx_error)?;
    OrderRow::by_key(rows)
}

/// Units each of `users` holds in `drop`, all variants (reserved + confirmed).
pub(crate) async fn held_units(
    conn: &mut PgConnection,
    drop: Uuid,
    users: &[Uuid],
) -> StoreResult<HashMap<Uuid, i64>> {
    let sql = format!(
        "SELECT user_id, COALESCE(SUM(quantity), 0)::int8 AS held FROM orders \
         WHERE drop_id = $1 AND user_id = ANY($2) AND status IN {HOLDING} GROUP BY user_id"
    );
    let rows = sqlx::query_as::<_, HeldRow>(&sql)
        .bind(drop)
        .bind(users)
        .fetch_all(conn)
        .await
        .map_err(map_sqlx_error)?;
    Ok(HeldRow::by_user(rows))
}

/// Sets the held variant rows `stock`, inserts `orders` (skipping any whose key
/// exists) and appends `events`, in one round trip. Returns how many orders were
/// inserted.
pub(crate) async fn write_batch(
    conn: &mut PgConnection,
    drop: DropId,
    stock: &[VariantRow],
    orders: &[Order],
    events: &[Event],
) -> StoreResult<u64> {
    let o = OrderColumns::new(orders);
    let e = EventColumns::new(events);
    let skus: Vec<&str> = stock.iter().map(|v| v.sku.as_str()).collect();
    let available: Vec<i64> = stock.iter().map(|v| v.stock.available).collect();
    let reserved: Vec<i64> = stock.iter().map(|v| v.stock.reserved).collect();
    let versions: Vec<i64> = stock.iter().map(|v| v.stock.version).collect();
    let sql = format!(
        "WITH stock AS ( \
             UPDATE inventory AS i SET available = s.available, reserved = s.reserved, \
                 version = s.version \
             FROM UNNEST($2::text[], $3::int8[], $4::int8[], $5::int8[]) \
                  AS s(sku, available, reserved, version) \
             WHERE i.drop_id = $1 AND i.sku = s.sku \
         ), placed AS ({} RETURNING 1), appended AS ({}) \
         SELECT count(*) FROM placed",
        OrderColumns::insert(6),
        EventColumns::insert(18)
    );
    let query = sqlx::query(&sql)
        .bind(drop.0)
        .bind(&skus)
        .bind(&available)
        .bind(&reserved)
        .bind(&versions);
    let inserted: i64 = e
        .bind(o.bind(query))
        .fetch_one(conn)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(map_sqlx_error)?;
    Ok(u64::try_from(inserted).unwrap_or(0))
}
