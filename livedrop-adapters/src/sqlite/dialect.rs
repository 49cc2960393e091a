//! What the SQL bodies SQLite shares with PostgreSQL (`crate::sql`) take from
//! SQLite: how a time is stored (microseconds since the Unix epoch), the rows at that
//! type, list parameters (JSON arrays), row locks (none: a write transaction holds
//! the database's write lock), and the multi-row statements every write shares
//! (events into the outbox, placed orders, a batch's reads and write).

use crate::sql::rows::Stamp;
use livedrop_core::clock::Timestamp;
use livedrop_core::event::Event;
use livedrop_core::model::{Order, OrderStatus};
use livedrop_core::StoreResult;
use sqlx::types::Json;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};
use uuid::Uuid;

pub(crate) use super::map_sqlx_error;
use super::micros;

/// A point in time as stored: microseconds since the Unix epoch.
pub(crate) type Time = i64;
crate::sql::rows::rows_at_time!();

/// The database.
pub(crate) type Db = sqlx::Sqlite;

/// `t` as stored.
pub(crate) fn stamp(t: Timestamp) -> Time {
    Stamp::stamp(t)
}

/// A list bound as one parameter (a JSON array), read in SQL through [`each`].
pub(crate) fn list<T: serde::Serialize>(items: &[T]) -> Json<&[T]> {
    Json(items)
}

/// The list parameter `param` as a table `t` of one column, `value`.
pub(crate) fn each(param: &str, _of: &str) -> String {
    format!("json_each({param}) AS t")
}

/// Where `needle` first occurs in `haystack` (from 1), or 0.
pub(crate) fn position(haystack: &str, needle: &str) -> String {
    format!("instr({haystack}, {needle})")
}

/// Nothing: a write transaction holds the database's write lock from its first
/// statement (`BEGIN IMMEDIATE`), so what it reads stays as read until it ends.
pub(crate) const FOR_UPDATE: &str = "";

/// [`FOR_UPDATE`]: nothing, sweepers are serialized by the write lock.
pub(crate) const FOR_UPDATE_SKIP_LOCKED: &str = "";

/// The most holds one `expire_holds` call takes, so that its status update stays
/// within SQLite's parameters.
pub(crate) const MAX_SWEEP: u32 = 10_000;

/// A connection (or a transaction's).
pub(crate) type Conn = SqliteConnection;

pub(crate) use super::orders::{held_units, known_keys, known_orders, write_batch};

/// Whether [`lock_buyers`] takes locks: no, every write transaction already holds
/// the database's one write lock.
pub(crate) const BUYER_LOCKS: bool = false;

/// Nothing: the write lock serializes every buyer's orders already.
pub(crate) async fn lock_buyers(
    _conn: &mut SqliteConnection,
    _pairs: &[(Uuid, Uuid)],
) -> StoreResult<()> {
    Ok(())
}

/// Sets the status of the orders `ids`.
pub(crate) async fn set_status(
    conn: &mut SqliteConnection,
    ids: &[Uuid],
    status: OrderStatus,
    now: Timestamp,
) -> StoreResult<()> {
    let mut update = QueryBuilder::<Sqlite>::new("UPDATE orders SET status = ");
    update
        .push_bind(status.as_str())
        .push(", updated_at = ")
        .push_bind(micros(now))
        .push(" WHERE id IN (");
    let mut list = update.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    update.push(")");
    update.build().execute(conn).await.map_err(map_sqlx_error)?;
    Ok(())
}

/// Rows per multi-row insert: SQLite binds at most 32,766 parameters per statement.
const ROWS_PER_INSERT: usize = 2_000;

/// Appends `events` to the outbox, in order, with multi-row inserts on `conn` (the
/// caller's transaction).
pub(crate) async fn append_events(
    conn: &mut SqliteConnection,
    events: &[Event],
) -> StoreResult<()> {
    for chunk in events.chunks(ROWS_PER_INSERT) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO outbox (event_id, event_type, aggregate_id, version, occurred_at, \
             payload) ",
        );
        insert.push_values(chunk, |mut row, e| {
            row.push_bind(e.id.0)
                .push_bind(e.kind.as_str())
                .push_bind(e.aggregate_id)
                .push_bind(e.version)
                .push_bind(micros(e.occurred_at))
                .push_bind(sqlx::types::Json(&e.payload));
        });
        insert
            .build()
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx_error)?;
    }
    Ok(())
}

/// Inserts `orders` (status `reserved`) with multi-row inserts, skipping any whose
/// (buyer, key) exists. Returns how many were inserted.
pub(crate) async fn insert_orders(
    conn: &mut SqliteConnection,
    orders: &[Order],
) -> StoreResult<u64> {
    let mut inserted = 0;
    for chunk in orders.chunks(ROWS_PER_INSERT / 2) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO orders (id, user_id, drop_id, sku, quantity, unit_price_cents, \
             total_cents, currency, status, idempotency_key, fingerprint, reserved_until, \
             created_at, updated_at) ",
        );
        insert.push_values(chunk, |mut row, o| {
            row.push_bind(o.id.0)
                .push_bind(o.user_id.0)
                .push_bind(o.drop_id.0)
                .push_bind(o.sku.as_str())
                .push_bind(i64::from(o.quantity))
                .push_bind(o.unit_price_cents)
                .push_bind(o.total_cents)
                .push_bind(o.currency.as_str())
                .push_bind(OrderStatus::Reserved.as_str())
                .push_bind(o.idempotency_key.as_str())
                .push_bind(o.fingerprint.as_str())
                .push_bind(micros(o.reserved_until))
                .push_bind(micros(o.created_at))
                .push_bind(micros(o.updated_at));
        });
        insert.push(" ON CONFLICT (user_id, idempotency_key) DO NOTHING");
        inserted += insert
            .build()
            .execute(&mut *conn)
            .await
            .map_err(map_sqlx_error)?
            .rows_affected();
    }
    Ok(inserted)
}

/// Locks a drop's row for the caller's write transaction: nothing to add, the
/// transaction holds the database's one write lock.
pub(crate) const LOCK_DROP: &str = "";
