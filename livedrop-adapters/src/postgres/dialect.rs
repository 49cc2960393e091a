//! What the SQL bodies PostgreSQL shares with SQLite (`crate::sql`) take from
//! PostgreSQL: how a time is stored (`timestamptz`), the rows at that type, and the
//! multi-row inserts every write shares (events into the outbox, placed orders) as
//! `UNNEST` of column arrays.

use crate::sql::rows;
pub(crate) use crate::sql::StockRow;
use livedrop_core::clock::Timestamp;
use livedrop_core::event::Event;
use livedrop_core::model::{Order, OrderStatus};
use livedrop_core::page::PageRequest;
use livedrop_core::StoreResult;
use sqlx::PgConnection;
use uuid::Uuid;

pub(crate) use super::map_sqlx_error;

/// A point in time as stored: `timestamptz`.
pub(crate) type Time = Timestamp;
pub(crate) type UserRow = rows::UserRow<Time>;
pub(crate) type FollowRow = rows::FollowRow<Time>;
pub(crate) type ProductRow = rows::ProductRow<Time>;
pub(crate) type DropRow = rows::DropRow<Time>;
pub(crate) type OrderRow = rows::OrderRow<Time>;
pub(crate) type LedgerRow = rows::LedgerRow<Time>;
pub(crate) type NotificationRow = rows::NotificationRow<Time>;
pub(crate) type OutboxRow = rows::OutboxRow<Time>;

/// The keyset bounds of a page as stored.
pub(crate) fn after(page: &PageRequest) -> (Option<Time>, Option<Uuid>) {
    rows::after(page)
}

/// The database.
pub(crate) type Db = sqlx::Postgres;

/// `t` as stored.
pub(crate) fn stamp(t: Timestamp) -> Time {
    t
}

/// A list bound as one parameter, read in SQL through [`each`].
pub(crate) fn list<T>(items: &[T]) -> &[T] {
    items
}

/// The list parameter `param` (an array of `of`) as a table `t` of one column, `value`.
pub(crate) fn each(param: &str, of: &str) -> String {
    format!("UNNEST({param}::{of}[]) AS t(value)")
}

/// Where `needle` first occurs in `haystack` (from 1), or 0.
pub(crate) fn position(haystack: &str, needle: &str) -> String {
    format!("strpos({haystack}, {needle})")
}

/// Locks the rows a read in a write transaction selects, until it ends.
pub(crate) const FOR_UPDATE: &str = " FOR UPDATE";

/// [`FOR_UPDATE`], passing over rows another transaction holds.
pub(crate) const FOR_UPDATE_SKIP_LOCKED: &str = " FOR UPDATE SKIP LOCKED";

/// Locks the rows of table `alias` only, in a read that joins tables.
pub(crate) fn lock_of(alias: &str) -> String {
    format!(" FOR UPDATE OF {alias}")
}

/// The most holds one `expire_holds` call takes: its `limit`, unbounded here.
pub(crate) const MAX_SWEEP: u32 = u32::MAX;

/// A connection (or a transaction's).
pub(crate) type Conn = PgConnection;

pub(crate) use super::group::{held_units, known_orders, write_batch};

/// Sets the status of the orders `ids`.
pub(crate) async fn set_status(
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

/// Events as column arrays, for `UNNEST` inserts.
pub(crate) struct EventColumns<'a> {
    pub(crate) ids: Vec<Uuid>,
    pub(crate) types: Vec<&'static str>,
    pub(crate) aggregates: Vec<Uuid>,
    pub(crate) versions: Vec<i64>,
    pub(crate) occurred: Vec<Timestamp>,
    pub(crate) payloads: Vec<&'a serde_json::Value>,
}

impl<'a> EventColumns<'a> {
    pub(crate) fn new(events: &'a [Event]) -> Self {
        Self {
            ids: events.iter().map(|e| e.id.0).collect(),
            types: events.iter().map(|e| e.kind.as_str()).collect(),
            aggregates: events.iter().map(|e| e.aggregate_id).collect(),
            versions: events.iter().map(|e| e.version).collect(),
            occurred: events.iter().map(|e| e.occurred_at).collect(),
            payloads: events.iter().map(|e| &e.payload).collect(),
        }
    }
}

/// Orders as column arrays, for `UNNEST` inserts.
pub(crate) struct OrderColumns<'a> {
    pub(crate) ids: Vec<Uuid>,
    pub(crate) users: Vec<Uuid>,
    pub(crate) quantities: Vec<i64>,
    pub(crate) units: Vec<i64>,
    pub(crate) totals: Vec<i64>,
    pub(crate) currencies: Vec<&'a str>,
    pub(crate) keys: Vec<&'a str>,
    pub(crate) fingerprints: Vec<&'a str>,
    pub(crate) until: Vec<Timestamp>,
    pub(crate) created: Vec<Timestamp>,
    pub(crate) updated: Vec<Timestamp>,
}

impl<'a> OrderColumns<'a> {
    pub(crate) fn new(orders: &'a [Order]) -> Self {
        Self {
            ids: orders.iter().map(|o| o.id.0).collect(),
            users: orders.iter().map(|o| o.user_id.0).collect(),
            quantities: orders.iter().map(|o| i64::from(o.quantity)).collect(),
            units: orders.iter().map(|o| o.unit_price_cents).collect(),
            totals: orders.iter().map(|o| o.total_cents).collect(),
            currencies: orders.iter().map(|o| o.currency.as_str()).collect(),
            keys: orders.iter().map(|o| o.idempotency_key.as_str()).collect(),
            fingerprints: orders.iter().map(|o| o.fingerprint.as_str()).collect(),
            until: orders.iter().map(|o| o.reserved_until).collect(),
            created: orders.iter().map(|o| o.created_at).collect(),
            updated: orders.iter().map(|o| o.updated_at).collect(),
        }
    }
}

/// Appends `events` to the outbox, in order, with one multi-row insert on `conn`
/// (the caller's transaction).
pub(crate) async fn append_events(conn: &mut PgConnection, events: &[Event]) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let e = EventColumns::new(events);
    sqlx::query(
        "INSERT INTO outbox (event_id, event_type, aggregate_id, version, occurred_at, payload) \
         SELECT e.id, e.kind, e.agg, e.ver, e.at, e.payload \
         FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::int8[], $5::timestamptz[], \
                     $6::jsonb[]) WITH ORDINALITY AS e(id, kind, agg, ver, at, payload, ord) \
         ORDER BY e.ord",
    )
    .bind(&e.ids)
    .bind(&e.types)
    .bind(&e.aggregates)
    .bind(&e.versions)
    .bind(&e.occurred)
    .bind(&e.payloads)
    .execute(conn)
    .await
    .map_err(map_sqlx_error)?;
    Ok(())
}
