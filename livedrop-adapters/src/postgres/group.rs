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

use livedrop_core::id::DropId;
use livedrop_core::model::{Order, PlaceOutcome};
use livedrop_core::{StoreResult, Timestamp};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::dialect::{EventColumns, OrderColumns, OrderRow};
use super::{map_sqlx_error, PgStore};
use crate::sql::orders::HOLDING;
use crate::sql::rows::HeldRow;
use crate::sql::{self, BatchDecision, KeyRow, Placement};

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

/// The (buyer, key) pairs of `batch` as two columns, for `UNNEST`.
fn key_columns(batch: &[Placement]) -> (Vec<Uuid>, Vec<&str>) {
    batch
        .iter()
        .map(|r| (r.order.user_id.0, r.order.idempotency_key.as_str()))
        .unzip()
}

/// Orders that exist under the (buyer, key) pairs of `batch`, on any drop.
pub(crate) async fn known_orders(
    conn: &mut PgConnection,
    batch: &[Placement],
) -> StoreResult<HashMap<(Uuid, String), Order>> {
    let (users, keys) = key_columns(batch);
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

/// The idempotency keys of the batch's buyers as stored, by (buyer, key).
pub(crate) async fn known_keys(
    conn: &mut PgConnection,
    batch: &[Placement],
) -> StoreResult<HashMap<(Uuid, String), KeyRow>> {
    let (users, keys) = key_columns(batch);
    let rows = sqlx::query(
        "SELECT user_id, key, fingerprint, state, lease_until, response FROM idempotency_keys \
         WHERE (user_id, key) IN (SELECT * FROM UNNEST($1::uuid[], $2::text[]))",
    )
    .bind(&users)
    .bind(&keys)
    .fetch_all(conn)
    .await
    .map_err(map_sqlx_error)?;
    rows.into_iter()
        .map(|row| {
            let state: String = row.try_get("state")?;
            Ok((
                (row.try_get("user_id")?, row.try_get("key")?),
                KeyRow {
                    fingerprint: row.try_get("fingerprint")?,
                    completed: state == "completed",
                    lease_until: row.try_get("lease_until")?,
                    response: row.try_get("response")?,
                },
            ))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(map_sqlx_error)
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

/// Writes `decision`: sets the held variant rows it moved, inserts its orders
/// (skipping any whose key exists), appends its events and finishes its keys (taking
/// over claims whose lease ended, leaving any other key as it is), in one round trip. Returns how many
/// orders were inserted and how many keys finished.
pub(crate) async fn write_batch(
    conn: &mut PgConnection,
    drop: DropId,
    decision: &BatchDecision,
) -> StoreResult<(u64, u64)> {
    let BatchDecision {
        stock,
        placed: orders,
        events,
        keys,
        ..
    } = decision;
    let o = OrderColumns::new(orders);
    let e = EventColumns::new(events);
    let key_users: Vec<Uuid> = keys.iter().map(|k| k.user).collect();
    let key_names: Vec<&str> = keys.iter().map(|k| k.key.as_str()).collect();
    let key_prints: Vec<&str> = keys.iter().map(|k| k.fingerprint.as_str()).collect();
    let key_answers: Vec<&serde_json::Value> = keys.iter().map(|k| &k.response).collect();
    let key_times: Vec<Timestamp> = keys.iter().map(|k| k.at).collect();
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
         ), placed AS ({} RETURNING 1), appended AS ({}), finished AS ( \
             INSERT INTO idempotency_keys AS k (user_id, key, fingerprint, state, \
                                                lease_until, response, created_at, claim) \
             SELECT u, n, f, 'completed', NULL, r, t, NULL \
             FROM UNNEST($24::uuid[], $25::text[], $26::text[], $27::jsonb[], \
                         $28::timestamptz[]) AS x(u, n, f, r, t) \
             ON CONFLICT (user_id, key) DO UPDATE \
                 SET state = 'completed', lease_until = NULL, claim = NULL, \
                     response = EXCLUDED.response \
                 WHERE k.state = 'in_flight' AND k.fingerprint = EXCLUDED.fingerprint \
                   AND k.lease_until <= EXCLUDED.created_at \
             RETURNING 1 \
         ) \
         SELECT (SELECT count(*) FROM placed), (SELECT count(*) FROM finished)",
        OrderColumns::insert(6),
        EventColumns::insert(18)
    );
    let query = sqlx::query(&sql)
        .bind(drop.0)
        .bind(&skus)
        .bind(&available)
        .bind(&reserved)
        .bind(&versions);
    let row = e
        .bind(o.bind(query))
        .bind(&key_users)
        .bind(&key_names)
        .bind(&key_prints)
        .bind(&key_answers)
        .bind(&key_times)
        .fetch_one(conn)
        .await
        .map_err(map_sqlx_error)?;
    let inserted: i64 = row.try_get(0).map_err(map_sqlx_error)?;
    let finished: i64 = row.try_get(1).map_err(map_sqlx_error)?;
    Ok((
        u64::try_from(inserted).unwrap_or(0),
        u64::try_from(finished).unwrap_or(0),
    ))
}
