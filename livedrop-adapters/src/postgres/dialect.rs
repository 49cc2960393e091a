//! What the SQL bodies PostgreSQL shares with SQLite (`crate::sql`) take from
//! PostgreSQL: how a time is stored (`timestamptz`), the rows at that type, list
//! parameters (arrays), row locks (`FOR UPDATE`), and the multi-row statements every
//! write shares (events into the outbox, placed orders, a batch's reads and write)
//! as `UNNEST` of column arrays.

use livedrop_core::clock::Timestamp;
use livedrop_core::event::Event;
use livedrop_core::model::{Order, OrderStatus};
use livedrop_core::StoreResult;
use sqlx::PgConnection;
use uuid::Uuid;

pub(crate) use super::map_sqlx_error;

/// A point in time as stored: `timestamptz`.
pub(crate) type Time = Timestamp;
crate::sql::rows::rows_at_time!();

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

/// The most holds one `expire_holds` call takes: its `limit`, unbounded here.
pub(crate) const MAX_SWEEP: u32 = u32::MAX;

/// A connection (or a transaction's).
pub(crate) type Conn = PgConnection;

pub(crate) use super::group::{held_units, known_keys, known_orders, write_batch};
pub(crate) use super::orders::insert_orders;

/// Whether [`lock_buyers`] takes locks (a hand-off must then have locked every buyer
/// it serves).
pub(crate) const BUYER_LOCKS: bool = true;

/// Serializes this transaction with every other that decides on what the buyers of
/// `pairs` (drop, buyer) hold in their drops: a transaction-scoped advisory lock per
/// pair, on a hash of both, taken in ascending key order (no deadlock between
/// takers), and always before any variant row lock. Two orders of one buyer for two
/// variants, in two processes, so never pass the per-user limit together, while
/// orders of different buyers and variants do not wait for each other.
pub(crate) async fn lock_buyers(
    conn: &mut PgConnection,
    pairs: &[(Uuid, Uuid)],
) -> StoreResult<()> {
    if pairs.is_empty() {
        return Ok(());
    }
    let drops: Vec<Uuid> = pairs.iter().map(|(d, _)| *d).collect();
    let users: Vec<Uuid> = pairs.iter().map(|(_, u)| *u).collect();
    // The sorted subquery feeds the locking projection in key order.
    sqlx::query(
        "SELECT count(*) FROM ( \
             SELECT pg_advisory_xact_lock(k.key) FROM ( \
                 SELECT DISTINCT hashtextextended(p.d::text || ':' || p.u::text, 0) AS key \
                 FROM UNNEST($1::uuid[], $2::uuid[]) AS p(d, u) \
                 ORDER BY key) AS k) AS locked",
    )
    .bind(&drops)
    .bind(&users)
    .execute(conn)
    .await
    .map_err(map_sqlx_error)?;
    Ok(())
}

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

/// A statement with its parameters.
type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// `$n` for each of `count` parameters from `first` on, each cast to its array type.
fn arrays(first: usize, types: &[&str]) -> String {
    types
        .iter()
        .enumerate()
        .map(|(i, ty)| format!("${}::{ty}[]", first + i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Events as column arrays, for `UNNEST` inserts.
pub(crate) struct EventColumns<'a> {
    ids: Vec<Uuid>,
    types: Vec<&'static str>,
    aggregates: Vec<Uuid>,
    versions: Vec<i64>,
    occurred: Vec<Timestamp>,
    payloads: Vec<&'a serde_json::Value>,
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

    /// The insert of the events into the outbox, in order, reading their six arrays
    /// from parameter `$first` on.
    pub(crate) fn insert(first: usize) -> String {
        format!(
            "INSERT INTO outbox (event_id, event_type, aggregate_id, version, occurred_at, \
                                 payload) \
             SELECT e.id, e.kind, e.agg, e.ver, e.at, e.payload \
             FROM UNNEST({}) WITH ORDINALITY AS e(id, kind, agg, ver, at, payload, ord) \
             ORDER BY e.ord",
            arrays(
                first,
                &["uuid", "text", "uuid", "int8", "timestamptz", "jsonb"]
            )
        )
    }

    /// Binds the arrays next, in the order [`insert`](Self::insert) reads them.
    pub(crate) fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.ids)
            .bind(&self.types)
            .bind(&self.aggregates)
            .bind(&self.versions)
            .bind(&self.occurred)
            .bind(&self.payloads)
    }
}

/// Orders as column arrays, for `UNNEST` inserts.
pub(crate) struct OrderColumns<'a> {
    ids: Vec<Uuid>,
    users: Vec<Uuid>,
    skus: Vec<&'a str>,
    quantities: Vec<i64>,
    units: Vec<i64>,
    totals: Vec<i64>,
    currencies: Vec<&'a str>,
    keys: Vec<&'a str>,
    fingerprints: Vec<&'a str>,
    until: Vec<Timestamp>,
    created: Vec<Timestamp>,
    updated: Vec<Timestamp>,
}

impl<'a> OrderColumns<'a> {
    pub(crate) fn new(orders: &'a [Order]) -> Self {
        Self {
            ids: orders.iter().map(|o| o.id.0).collect(),
            users: orders.iter().map(|o| o.user_id.0).collect(),
            skus: orders.iter().map(|o| o.sku.as_str()).collect(),
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

    /// The insert of the orders (status `reserved`, on the drop `$1`), skipping any
    /// whose (buyer, key) exists, reading their twelve arrays from parameter `$first`
    /// on.
    pub(crate) fn insert(first: usize) -> String {
        format!(
            "INSERT INTO orders (id, user_id, drop_id, sku, quantity, unit_price_cents, \
                                 total_cents, currency, status, idempotency_key, fingerprint, \
                                 reserved_until, created_at, updated_at) \
             SELECT o.id, o.user_id, $1, o.sku, o.q, o.unit, o.total, o.cur, 'reserved', \
                    o.key, o.fp, o.until, o.created, o.updated \
             FROM UNNEST({}) \
                  AS o(id, user_id, sku, q, unit, total, cur, key, fp, until, created, \
                       updated) \
             ON CONFLICT (user_id, idempotency_key) DO NOTHING",
            arrays(
                first,
                &[
                    "uuid",
                    "uuid",
                    "text",
                    "int8",
                    "int8",
                    "int8",
                    "text",
                    "text",
                    "text",
                    "timestamptz",
                    "timestamptz",
                    "timestamptz",
                ]
            )
        )
    }

    /// Binds the arrays next, in the order [`insert`](Self::insert) reads them.
    pub(crate) fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.ids)
            .bind(&self.users)
            .bind(&self.skus)
            .bind(&self.quantities)
            .bind(&self.units)
            .bind(&self.totals)
            .bind(&self.currencies)
            .bind(&self.keys)
            .bind(&self.fingerprints)
            .bind(&self.until)
            .bind(&self.created)
            .bind(&self.updated)
    }
}

/// Appends `events` to the outbox, in order, with one multi-row insert on `conn`
/// (the caller's transaction).
pub(crate) async fn append_events(conn: &mut PgConnection, events: &[Event]) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let e = EventColumns::new(events);
    let sql = EventColumns::insert(1);
    e.bind(sqlx::query(&sql))
        .execute(conn)
        .await
        .map_err(map_sqlx_error)?;
    Ok(())
}

/// Locks a drop's row for the caller's write transaction (draws, waiting rooms):
/// `NO KEY UPDATE`, so inserts referencing the drop (orders) do not wait for it.
pub(crate) const LOCK_DROP: &str = " FOR NO KEY UPDATE";
