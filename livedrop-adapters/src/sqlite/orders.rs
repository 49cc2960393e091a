//! Orders: the bodies [`order_ports!`](crate::sql::orders::order_ports) shares with
//! the PostgreSQL store, and placement here (one order per transaction, or batches
//! of a hot drop through the combiner). Every write holds the database's write lock
//! from its first statement (`BEGIN IMMEDIATE`), so what it reads is what it decides
//! on.

use std::collections::HashMap;

use livedrop_core::clock::Timestamp;
use livedrop_core::id::DropId;
use livedrop_core::model::{Order, PlaceOutcome};
use livedrop_core::{StoreError, StoreResult};
use sqlx::types::Json;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use uuid::Uuid;

use super::dialect::{self, append_events, insert_orders, OrderRow};
use super::{map_sqlx_error, micros, timestamp, Inner, SqliteStore};
use crate::sql::orders::HOLDING;
use crate::sql::rows::HeldRow;
use crate::sql::{self, BatchDecision, Batcher, FinishedKey, KeyRow, Placement};

crate::sql::orders::order_ports!(SqliteStore, Inner);
crate::sql::waitlist::waitlist_ports!(SqliteStore);
crate::sql::fair::fair_ports!(SqliteStore);

impl SqliteStore {
    /// Places `order`: through its drop's combiner when batching, else alone.
    async fn place(&self, order: &Order, now: Timestamp) -> StoreResult<PlaceOutcome> {
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
            .decide(order.drop_id, &one, &mut crate::sql::Turn::first())
            .await?
            .ok_or_else(|| StoreError::Conflict("idempotency key raced".into()))?;
        outcomes
            .pop()
            .ok_or_else(|| StoreError::backend("no outcome for the order"))
    }
}

/// Appends the (buyer, key) pairs of `batch` as `VALUES` rows and closes the list.
fn push_key_pairs<'q>(query: &mut QueryBuilder<'q, Sqlite>, batch: &'q [Placement]) {
    let mut pairs = query.separated(", ");
    for r in batch {
        pairs.push("(");
        pairs.push_bind_unseparated(r.order.user_id.0);
        pairs.push_unseparated(", ");
        pairs.push_bind_unseparated(r.order.idempotency_key.as_str());
        pairs.push_unseparated(")");
    }
    query.push(")");
}

/// Orders that exist under the (buyer, key) pairs of `batch`, on any drop.
pub(crate) async fn known_orders(
    conn: &mut SqliteConnection,
    batch: &[Placement],
) -> StoreResult<HashMap<(Uuid, String), Order>> {
    let mut query = QueryBuilder::<Sqlite>::new(format!(
        "SELECT {} FROM orders WHERE (user_id, idempotency_key) IN (VALUES ",
        OrderRow::COLUMNS
    ));
    push_key_pairs(&mut query, batch);
    let rows = query
        .build_query_as::<OrderRow>()
        .fetch_all(&mut *conn)
        .await
        .map_err(map_sqlx_error)?;
    OrderRow::by_key(rows)
}

/// The idempotency keys of the batch's buyers as stored, by (buyer, key).
pub(crate) async fn known_keys(
    conn: &mut SqliteConnection,
    batch: &[Placement],
) -> StoreResult<HashMap<(Uuid, String), KeyRow>> {
    let mut query = QueryBuilder::<Sqlite>::new(
        "SELECT user_id, key, fingerprint, state, lease_until, response FROM idempotency_keys \
         WHERE (user_id, key) IN (VALUES ",
    );
    push_key_pairs(&mut query, batch);
    let rows = query
        .build()
        .fetch_all(&mut *conn)
        .await
        .map_err(map_sqlx_error)?;
    let mut keys = HashMap::with_capacity(rows.len());
    for row in rows {
        let get = |column: &str| -> StoreResult<Option<i64>> {
            row.try_get(column).map_err(map_sqlx_error)
        };
        let lease_until = get("lease_until")?.map(timestamp).transpose()?;
        let state: String = row.try_get("state").map_err(map_sqlx_error)?;
        let response: Option<Json<serde_json::Value>> =
            row.try_get("response").map_err(map_sqlx_error)?;
        keys.insert(
            (
                row.try_get("user_id").map_err(map_sqlx_error)?,
                row.try_get("key").map_err(map_sqlx_error)?,
            ),
            KeyRow {
                fingerprint: row.try_get("fingerprint").map_err(map_sqlx_error)?,
                completed: state == "completed",
                lease_until,
                response: response.map(|r| r.0),
            },
        );
    }
    Ok(keys)
}

/// Units each of `users` holds in `drop`, all variants (reserved + confirmed).
pub(crate) async fn held_units(
    conn: &mut SqliteConnection,
    drop: Uuid,
    users: &[Uuid],
) -> StoreResult<HashMap<Uuid, i64>> {
    let mut query = QueryBuilder::<Sqlite>::new(format!(
        "SELECT user_id, SUM(quantity) AS held FROM orders \
         WHERE status IN {HOLDING} AND drop_id = "
    ));
    query.push_bind(drop).push(" AND user_id IN (");
    let mut list = query.separated(", ");
    for user in users {
        list.push_bind(*user);
    }
    query.push(") GROUP BY user_id");
    let rows = query
        .build_query_as::<HeldRow>()
        .fetch_all(&mut *conn)
        .await
        .map_err(map_sqlx_error)?;
    Ok(HeldRow::by_user(rows))
}

/// Writes a decided batch in the caller's write transaction: the variant rows it
/// moved, every order (skipping any whose key exists), every event, every key's
/// answer (taking over claims whose lease ended, leaving any other key as it is).
/// Returns how many orders were inserted and how many keys finished.
pub(crate) async fn write_batch(
    conn: &mut SqliteConnection,
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
    for variant in stock {
        write_stock(conn, drop.0, &variant.sku, &variant.stock).await?;
    }
    let inserted = insert_orders(conn, orders).await?;
    append_events(conn, events).await?;
    let finished = finish_keys(conn, keys).await?;
    Ok((inserted, finished))
}

/// Finishes `keys` with their answers, with one multi-row upsert.
async fn finish_keys(conn: &mut SqliteConnection, keys: &[FinishedKey]) -> StoreResult<u64> {
    if keys.is_empty() {
        return Ok(0);
    }
    let mut query = QueryBuilder::<Sqlite>::new(
        "INSERT INTO idempotency_keys AS k (user_id, key, fingerprint, state, lease_until, \
                                           response, created_at, claim) ",
    );
    query.push_values(keys, |mut row, k| {
        row.push_bind(k.user)
            .push_bind(k.key.as_str())
            .push_bind(k.fingerprint.as_str())
            .push("'completed'")
            .push("NULL")
            .push_bind(Json(&k.response))
            .push_bind(micros(k.at))
            .push("NULL");
    });
    query.push(
        " ON CONFLICT (user_id, key) DO UPDATE \
             SET state = 'completed', lease_until = NULL, claim = NULL, \
                 response = excluded.response \
             WHERE k.state = 'in_flight' AND k.fingerprint = excluded.fingerprint \
               AND k.lease_until <= excluded.created_at",
    );
    let done = query
        .build()
        .execute(&mut *conn)
        .await
        .map_err(map_sqlx_error)?;
    Ok(done.rows_affected())
}
