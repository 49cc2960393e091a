//! Row types, their conversion into the domain, and the outbox append every write shares.

pub(crate) use crate::sql::StockRow;
use livedrop_core::clock::Timestamp;
use livedrop_core::event::Event;
use livedrop_core::id::{DropId, NotificationId, OrderId, ProductId, UserId};
use livedrop_core::model::{
    self, DropState, DropView, LedgerEntry, LedgerKind, Notification, NotificationKind, Order,
    OrderStatus, Product, Role, Stock, User,
};
use livedrop_core::{StoreError, StoreResult};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{map_sqlx_error, to_u32};

fn bad(what: &str, value: &str) -> StoreError {
    StoreError::backend(format!("stored {what} {value:?} is not valid"))
}

#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    id: Uuid,
    email: String,
    display_name: String,
    role: String,
    password_hash: String,
    created_at: Timestamp,
}

impl UserRow {
    pub(crate) const COLUMNS: &'static str =
        "id, email, display_name, role, password_hash, created_at";

    pub(crate) fn into_user(self) -> StoreResult<User> {
        Ok(User {
            id: UserId(self.id),
            role: Role::parse(&self.role).ok_or_else(|| bad("role", &self.role))?,
            email: self.email,
            display_name: self.display_name,
            password_hash: self.password_hash,
            created_at: self.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ProductRow {
    id: Uuid,
    creator_id: Uuid,
    title: String,
    description: String,
    price_cents: i64,
    currency: String,
    image_url: Option<String>,
    created_at: Timestamp,
    updated_at: Timestamp,
    version: i64,
}

impl ProductRow {
    pub(crate) const COLUMNS: &'static str = "id, creator_id, title, description, price_cents, \
         currency, image_url, created_at, updated_at, version";

    pub(crate) fn into_product(self) -> Product {
        Product {
            id: ProductId(self.id),
            creator_id: UserId(self.creator_id),
            title: self.title,
            description: self.description,
            price_cents: self.price_cents,
            currency: self.currency,
            image_url: self.image_url,
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version,
        }
    }
}

/// A drop joined with its inventory row (`d` and `i` in queries).
#[derive(sqlx::FromRow)]
pub(crate) struct DropRow {
    id: Uuid,
    product_id: Uuid,
    creator_id: Uuid,
    title: String,
    price_cents: i64,
    currency: String,
    starts_at: Timestamp,
    ends_at: Timestamp,
    per_user_limit: i64,
    state: String,
    created_at: Timestamp,
    #[sqlx(flatten)]
    pub(crate) stock: StockRow,
}

impl DropRow {
    /// Columns of `drops d JOIN inventory i`.
    pub(crate) const COLUMNS: &'static str = "d.id, d.product_id, d.creator_id, d.title, \
         d.price_cents, d.currency, d.starts_at, d.ends_at, d.per_user_limit, d.state, \
         d.created_at, i.total_stock, i.available, i.reserved, i.sold, i.version";

    pub(crate) fn to_drop(&self) -> StoreResult<model::Drop> {
        Ok(model::Drop {
            id: DropId(self.id),
            product_id: ProductId(self.product_id),
            creator_id: UserId(self.creator_id),
            title: self.title.clone(),
            price_cents: self.price_cents,
            currency: self.currency.clone(),
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            per_user_limit: to_u32(self.per_user_limit)?,
            state: DropState::parse(&self.state).ok_or_else(|| bad("drop state", &self.state))?,
            created_at: self.created_at,
        })
    }

    pub(crate) fn into_view(self) -> StoreResult<DropView> {
        Ok(DropView {
            drop: self.to_drop()?,
            stock: self.stock.stock()?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct OrderRow {
    id: Uuid,
    user_id: Uuid,
    drop_id: Uuid,
    quantity: i64,
    unit_price_cents: i64,
    total_cents: i64,
    currency: String,
    status: String,
    idempotency_key: String,
    fingerprint: String,
    reserved_until: Timestamp,
    created_at: Timestamp,
    updated_at: Timestamp,
    extended_at: Option<Timestamp>,
}

impl OrderRow {
    pub(crate) const COLUMNS: &'static str = "id, user_id, drop_id, quantity, unit_price_cents, \
         total_cents, currency, status, idempotency_key, fingerprint, reserved_until, \
         created_at, updated_at, extended_at";

    pub(crate) fn into_order(self) -> StoreResult<Order> {
        Ok(Order {
            id: OrderId(self.id),
            user_id: UserId(self.user_id),
            drop_id: DropId(self.drop_id),
            quantity: to_u32(self.quantity)?,
            unit_price_cents: self.unit_price_cents,
            total_cents: self.total_cents,
            status: OrderStatus::parse(&self.status)
                .ok_or_else(|| bad("order status", &self.status))?,
            currency: self.currency,
            idempotency_key: self.idempotency_key,
            fingerprint: self.fingerprint,
            reserved_until: self.reserved_until,
            created_at: self.created_at,
            updated_at: self.updated_at,
            extended_at: self.extended_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct LedgerRow {
    id: Uuid,
    drop_id: Uuid,
    kind: String,
    delta: i64,
    reason: String,
    actor_id: Option<Uuid>,
    total: i64,
    available: i64,
    reserved: i64,
    sold: i64,
    created_at: Timestamp,
}

impl LedgerRow {
    pub(crate) const COLUMNS: &'static str =
        "id, drop_id, kind, delta, reason, actor_id, total, available, reserved, sold, created_at";

    pub(crate) fn into_entry(self) -> StoreResult<LedgerEntry> {
        Ok(LedgerEntry {
            id: self.id,
            drop_id: DropId(self.drop_id),
            kind: LedgerKind::parse(&self.kind).ok_or_else(|| bad("ledger kind", &self.kind))?,
            delta: self.delta,
            reason: self.reason,
            actor_id: self.actor_id.map(UserId),
            stock_after: Stock {
                total: to_u32(self.total)?,
                available: to_u32(self.available)?,
                reserved: to_u32(self.reserved)?,
                sold: to_u32(self.sold)?,
            },
            created_at: self.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct NotificationRow {
    id: Uuid,
    user_id: Uuid,
    kind: String,
    payload: serde_json::Value,
    dedup_key: String,
    created_at: Timestamp,
    read_at: Option<Timestamp>,
}

impl NotificationRow {
    pub(crate) const COLUMNS: &'static str =
        "id, user_id, kind, payload, dedup_key, created_at, read_at";

    pub(crate) fn into_notification(self) -> StoreResult<Notification> {
        Ok(Notification {
            id: NotificationId(self.id),
            user_id: UserId(self.user_id),
            kind: NotificationKind::parse(&self.kind)
                .ok_or_else(|| bad("notification kind", &self.kind))?,
            payload: self.payload,
            dedup_key: self.dedup_key,
            created_at: self.created_at,
            read_at: self.read_at,
        })
    }
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
