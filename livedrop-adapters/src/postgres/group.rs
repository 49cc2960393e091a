//! Group reserve: one combiner task per hot drop turns the concurrent `place_order`
//! calls of this process into one transaction per batch.
//!
//! Every decision is still made under the drop's inventory row lock, against what is
//! committed, so other processes (with either strategy) stay correct alongside; the
//! batch only shares the lock, the round trips and the commit.

use std::collections::HashMap;

use async_trait::async_trait;
use livedrop_core::event::Event;
use livedrop_core::id::DropId;
use livedrop_core::model::{Order, PlaceOutcome};
use livedrop_core::StoreResult;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::dialect::{EventColumns, OrderColumns, OrderRow, StockRow};
use super::orders::{lock_drop, HOLDING};
use super::{map_sqlx_error, Inner, PgStore};
use crate::sql::{self, decide_batch, Batcher, Combiners, Placement};

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

#[async_trait]
impl Batcher for Inner {
    fn combiners(&self) -> &Combiners {
        &self.combiners
    }

    async fn decide(
        &self,
        drop: DropId,
        batch: &[Placement],
    ) -> StoreResult<Option<Vec<PlaceOutcome>>> {
        decide(self, drop, batch).await
    }
}

/// Decides and writes one batch in one transaction. `Ok(None)`: a concurrent
/// transaction took one of the batch's idempotency keys first; nothing was written.
async fn decide(
    inner: &Inner,
    drop: DropId,
    batch: &[Placement],
) -> StoreResult<Option<Vec<PlaceOutcome>>> {
    let users: Vec<Uuid> = batch.iter().map(|r| r.order.user_id.0).collect();
    let keys: Vec<&str> = batch
        .iter()
        .map(|r| r.order.idempotency_key.as_str())
        .collect();
    let mut tx = inner.pool.begin().await.map_err(map_sqlx_error)?;

    // 1. Orders that already exist under a key of the batch (any drop).
    let sql = format!(
        "SELECT {} FROM orders WHERE (user_id, idempotency_key) IN \
             (SELECT * FROM UNNEST($1::uuid[], $2::text[]))",
        OrderRow::COLUMNS
    );
    let mut known: HashMap<(Uuid, String), Order> = HashMap::new();
    for row in sqlx::query_as::<_, OrderRow>(&sql)
        .bind(&users)
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await
        .map_err(map_sqlx_error)?
    {
        let o = row.into_order()?;
        known.insert((o.user_id.0, o.idempotency_key.clone()), o);
    }

    // 2. The row lock: from here on the batch sees every committed order of the drop.
    let locked = lock_drop(&mut tx, drop.0).await?;
    let Some(row) = locked else {
        tx.rollback().await.map_err(map_sqlx_error)?;
        return Ok(Some(
            batch
                .iter()
                .map(
                    |r| match known.get(&(r.order.user_id.0, r.order.idempotency_key.clone())) {
                        Some(o) => PlaceOutcome::Duplicate(o.clone()),
                        None => PlaceOutcome::DropNotFound,
                    },
                )
                .collect(),
        ));
    };
    let the_drop = row.to_drop()?;

    // 3. Units each buyer of the batch holds in the drop.
    let mut held: HashMap<Uuid, i64> = HashMap::new();
    for r in sqlx::query(&format!(
        "SELECT user_id, COALESCE(SUM(quantity), 0)::int8 AS held FROM orders \
         WHERE drop_id = $1 AND user_id = ANY($2) AND status IN {HOLDING} GROUP BY user_id"
    ))
    .bind(drop.0)
    .bind(&users)
    .fetch_all(&mut *tx)
    .await
    .map_err(map_sqlx_error)?
    {
        let user: Uuid = r.try_get("user_id").map_err(map_sqlx_error)?;
        let units: i64 = r.try_get("held").map_err(map_sqlx_error)?;
        held.insert(user, units);
    }

    // 4. Decide in arrival order.
    let decision = decide_batch(&the_drop, row.stock, known, held, batch)?;
    if decision.placed.is_empty() {
        tx.rollback().await.map_err(map_sqlx_error)?;
        return Ok(Some(decision.outcomes));
    }

    // 5. Write, in one statement: the stock once, every order, every event.
    let inserted = write_batch(
        &mut tx,
        drop,
        &decision.stock,
        &decision.placed,
        &decision.events,
    )
    .await?;
    if inserted != decision.placed.len() as u64 {
        tx.rollback().await.map_err(map_sqlx_error)?;
        return Ok(None);
    }
    tx.commit().await.map_err(map_sqlx_error)?;
    Ok(Some(decision.outcomes))
}

/// Sets the locked stock row, inserts `orders` (skipping any whose key exists) and
/// appends `events`, in one round trip. Returns how many orders were inserted.
async fn write_batch(
    conn: &mut PgConnection,
    drop: DropId,
    stock: &StockRow,
    orders: &[Order],
    events: &[Event],
) -> StoreResult<u64> {
    let o = OrderColumns::new(orders);
    let e = EventColumns::new(events);
    let inserted: i64 = sqlx::query_scalar(
        "WITH stock AS ( \
             UPDATE inventory SET available = $2, reserved = $3, version = $4 \
             WHERE drop_id = $1 \
         ), placed AS ( \
             INSERT INTO orders (id, user_id, drop_id, quantity, unit_price_cents, \
                                 total_cents, currency, status, idempotency_key, fingerprint, \
                                 reserved_until, created_at, updated_at) \
             SELECT o.id, o.user_id, $1, o.q, o.unit, o.total, o.cur, 'reserved', o.key, \
                    o.fp, o.until, o.created, o.updated \
             FROM UNNEST($5::uuid[], $6::uuid[], $7::int8[], $8::int8[], $9::int8[], \
                         $10::text[], $11::text[], $12::text[], $13::timestamptz[], \
                         $14::timestamptz[], $15::timestamptz[]) \
                  AS o(id, user_id, q, unit, total, cur, key, fp, until, created, updated) \
             ON CONFLICT (user_id, idempotency_key) DO NOTHING \
             RETURNING 1 \
         ), appended AS ( \
             INSERT INTO outbox (event_id, event_type, aggregate_id, version, occurred_at, \
                                 payload) \
             SELECT e.id, e.kind, e.agg, e.ver, e.at, e.payload \
             FROM UNNEST($16::uuid[], $17::text[], $18::uuid[], $19::int8[], \
                         $20::timestamptz[], $21::jsonb[]) \
                  WITH ORDINALITY AS e(id, kind, agg, ver, at, payload, ord) \
             ORDER BY e.ord \
         ) \
         SELECT count(*) FROM placed",
    )
    .bind(drop.0)
    .bind(stock.available)
    .bind(stock.reserved)
    .bind(stock.version)
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
    .bind(&e.ids)
    .bind(&e.types)
    .bind(&e.aggregates)
    .bind(&e.versions)
    .bind(&e.occurred)
    .bind(&e.payloads)
    .fetch_one(conn)
    .await
    .map_err(map_sqlx_error)?;
    Ok(u64::try_from(inserted).unwrap_or(0))
}
