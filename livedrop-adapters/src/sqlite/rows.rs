//! Row types, their conversion into the domain, and the multi-row inserts the
//! writes share (events into the outbox, placed orders).

pub(crate) use crate::sql::StockRow;
use livedrop_core::event::Event;
use livedrop_core::id::{DropId, NotificationId, OrderId, ProductId, UserId};
use livedrop_core::model::{
    self, DropState, DropView, LedgerEntry, LedgerKind, Notification, NotificationKind, Order,
    OrderStatus, Product, Role, Stock, User,
};
use livedrop_core::{StoreError, StoreResult};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};
use uuid::Uuid;

use super::{map_sqlx_error, micros, timestamp, to_u32};

/// Rows per multi-row insert: SQLite binds at most 32,766 parameters per statement.
const ROWS_PER_INSERT: usize = 2_000;

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
    created_at: i64,
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
            created_at: timestamp(self.created_at)?,
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
    created_at: i64,
    updated_at: i64,
    version: i64,
}

impl ProductRow {
    pub(crate) const COLUMNS: &'static str = "id, creator_id, title, description, price_cents, \
         currency, image_url, created_at, updated_at, version";

    pub(crate) fn into_product(self) -> StoreResult<Product> {
        Ok(Product {
            id: ProductId(self.id),
            creator_id: UserId(self.creator_id),
            title: self.title,
            description: self.description,
            price_cents: self.price_cents,
            currency: self.currency,
            image_url: self.image_url,
            created_at: timestamp(self.created_at)?,
            updated_at: timestamp(self.updated_at)?,
            version: self.version,
        })
    }
}

/// What text search scans: `"title description"` lower-cased as
/// [`Product::matches`] does (SQLite's `lower()` only folds ASCII).
pub(crate) fn search_text(product: &Product) -> String {
    format!("{} {}", product.title, product.description).to_lowercase()
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
    starts_at: i64,
    ends_at: i64,
    per_user_limit: i64,
    state: String,
    created_at: i64,
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
            starts_at: timestamp(self.starts_at)?,
            ends_at: timestamp(self.ends_at)?,
            per_user_limit: to_u32(self.per_user_limit)?,
            state: DropState::parse(&self.state).ok_or_else(|| bad("drop state", &self.state))?,
            created_at: timestamp(self.created_at)?,
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
    reserved_until: i64,
    created_at: i64,
    updated_at: i64,
    extended_at: Option<i64>,
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
            reserved_until: timestamp(self.reserved_until)?,
            created_at: timestamp(self.created_at)?,
            updated_at: timestamp(self.updated_at)?,
            extended_at: self.extended_at.map(timestamp).transpose()?,
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
    created_at: i64,
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
            created_at: timestamp(self.created_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct NotificationRow {
    id: Uuid,
    user_id: Uuid,
    kind: String,
    payload: sqlx::types::Json<serde_json::Value>,
    dedup_key: String,
    created_at: i64,
    read_at: Option<i64>,
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
            payload: self.payload.0,
            dedup_key: self.dedup_key,
            created_at: timestamp(self.created_at)?,
            read_at: self.read_at.map(timestamp).transpose()?,
        })
    }
}

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
            "INSERT INTO orders (id, user_id, drop_id, quantity, unit_price_cents, \
             total_cents, currency, status, idempotency_key, fingerprint, reserved_until, \
             created_at, updated_at) ",
        );
        insert.push_values(chunk, |mut row, o| {
            row.push_bind(o.id.0)
                .push_bind(o.user_id.0)
                .push_bind(o.drop_id.0)
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
