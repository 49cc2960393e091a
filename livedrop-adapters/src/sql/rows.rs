//! The rows both SQL stores read, and their conversion into the domain. The columns
//! and their meaning are the same on PostgreSQL and SQLite; only how a point in time
//! is stored differs, which each row leaves to its [`Stamp`] type.

use std::collections::HashMap;

use livedrop_core::clock::Timestamp;
use livedrop_core::event::{Event, EventType};
use livedrop_core::id::{DropId, EventId, NotificationId, OrderId, ProductId, UserId};
use livedrop_core::model::{
    self, DropState, DropView, FollowEntry, LedgerEntry, LedgerKind, Notification,
    NotificationKind, Order, OrderStatus, Product, Role, Stock, User,
};
use livedrop_core::ports::OutboxRecord;
use livedrop_core::{StoreError, StoreResult};
use uuid::Uuid;

use super::{to_u32, StockRow};

/// A point in time as a dialect stores it: PostgreSQL's `timestamptz` is the
/// [`Timestamp`] itself, SQLite keeps microseconds since the Unix epoch in an `i64`.
pub(crate) trait Stamp: Copy {
    /// `t` as stored.
    fn stamp(t: Timestamp) -> Self;
    /// The stored time, refused as a backend error when it is out of range.
    fn time(self) -> StoreResult<Timestamp>;
}

impl Stamp for Timestamp {
    fn stamp(t: Timestamp) -> Self {
        t
    }

    fn time(self) -> StoreResult<Timestamp> {
        Ok(self)
    }
}

impl Stamp for i64 {
    fn stamp(t: Timestamp) -> Self {
        t.timestamp_micros()
    }

    fn time(self) -> StoreResult<Timestamp> {
        chrono::DateTime::from_timestamp_micros(self)
            .ok_or_else(|| StoreError::backend(format!("stored time {self} out of range")))
    }
}

/// An optional stored time.
fn time_opt<T: Stamp>(t: Option<T>) -> StoreResult<Option<Timestamp>> {
    t.map(Stamp::time).transpose()
}

/// The keyset bounds of a page: `(at, id)` of the cursor as stored, or NULLs for the
/// first page.
pub(crate) fn after<T: Stamp>(
    page: &livedrop_core::page::PageRequest,
) -> (Option<T>, Option<Uuid>) {
    (page.after.map(|c| T::stamp(c.at)), page.after.map(|c| c.id))
}

/// Names each row type at the calling dialect's `Time`, and the page bounds as
/// stored (`after`).
macro_rules! rows_at_time {
    () => {
        pub(crate) type UserRow = $crate::sql::rows::UserRow<Time>;
        pub(crate) type FollowRow = $crate::sql::rows::FollowRow<Time>;
        pub(crate) type ProductRow = $crate::sql::rows::ProductRow<Time>;
        pub(crate) type DropRow = $crate::sql::rows::DropRow<Time>;
        pub(crate) type OrderRow = $crate::sql::rows::OrderRow<Time>;
        pub(crate) type LedgerRow = $crate::sql::rows::LedgerRow<Time>;
        pub(crate) type NotificationRow = $crate::sql::rows::NotificationRow<Time>;
        pub(crate) type OutboxRow = $crate::sql::rows::OutboxRow<Time>;
        pub(crate) type WaitlistRow = $crate::sql::rows::WaitlistRow<Time>;
        pub(crate) type DrawEntryRow = $crate::sql::rows::DrawEntryRow<Time>;

        /// The keyset bounds of a page as stored.
        pub(crate) fn after(
            page: &::livedrop_core::page::PageRequest,
        ) -> (Option<Time>, Option<::uuid::Uuid>) {
            $crate::sql::rows::after(page)
        }
    };
}

pub(crate) use rows_at_time;

/// Units a buyer holds in a drop (reserved + confirmed).
#[derive(sqlx::FromRow)]
pub(crate) struct HeldRow {
    user_id: Uuid,
    held: i64,
}

impl HeldRow {
    /// Units held, by buyer.
    pub(crate) fn by_user(rows: Vec<HeldRow>) -> HashMap<Uuid, i64> {
        rows.into_iter().map(|r| (r.user_id, r.held)).collect()
    }
}

fn bad(what: &str, value: &str) -> StoreError {
    StoreError::backend(format!("stored {what} {value:?} is not valid"))
}

#[derive(sqlx::FromRow)]
pub(crate) struct UserRow<T> {
    id: Uuid,
    email: String,
    display_name: String,
    role: String,
    password_hash: String,
    created_at: T,
}

impl<T: Stamp> UserRow<T> {
    pub(crate) const COLUMNS: &'static str =
        "id, email, display_name, role, password_hash, created_at";

    pub(crate) fn into_user(self) -> StoreResult<User> {
        Ok(User {
            id: UserId(self.id),
            role: Role::parse(&self.role).ok_or_else(|| bad("role", &self.role))?,
            email: self.email,
            display_name: self.display_name,
            password_hash: self.password_hash,
            created_at: self.created_at.time()?,
        })
    }
}

/// One side of the follow graph: the other user, joined with their display name.
#[derive(sqlx::FromRow)]
pub(crate) struct FollowRow<T> {
    user_id: Uuid,
    display_name: String,
    followed_at: T,
}

impl<T: Stamp> FollowRow<T> {
    pub(crate) fn into_entry(self) -> StoreResult<FollowEntry> {
        Ok(FollowEntry {
            user_id: UserId(self.user_id),
            display_name: self.display_name,
            followed_at: self.followed_at.time()?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ProductRow<T> {
    id: Uuid,
    creator_id: Uuid,
    title: String,
    description: String,
    price_cents: i64,
    currency: String,
    image_url: Option<String>,
    created_at: T,
    updated_at: T,
    version: i64,
}

impl<T: Stamp> ProductRow<T> {
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
            created_at: self.created_at.time()?,
            updated_at: self.updated_at.time()?,
            version: self.version,
        })
    }
}

/// A drop joined with one of its variants' inventory rows (`d` and `i` in
/// queries): a drop reads as one row per variant, ordered by `i.position`.
#[derive(sqlx::FromRow)]
pub(crate) struct DropRow<T> {
    id: Uuid,
    product_id: Uuid,
    creator_id: Uuid,
    title: String,
    price_cents: i64,
    currency: String,
    starts_at: T,
    ends_at: T,
    per_user_limit: i64,
    state: String,
    created_at: T,
    draw_entries_close_at: Option<T>,
    draw_commitment: Option<String>,
    draw_seed: Option<String>,
    drawn_at: Option<T>,
    room_admit_per_minute: Option<i64>,
    room_token_seconds: Option<i64>,
    room_opens_minutes_before: Option<i64>,
    pub(crate) sku: String,
    label: String,
    #[sqlx(flatten)]
    pub(crate) stock: StockRow,
}

impl<T: Stamp> DropRow<T> {
    /// Columns of `drops d JOIN inventory i`.
    pub(crate) const COLUMNS: &'static str = "d.id, d.product_id, d.creator_id, d.title, \
         d.price_cents, d.currency, d.starts_at, d.ends_at, d.per_user_limit, d.state, \
         d.created_at, d.draw_entries_close_at, d.draw_commitment, d.draw_seed, d.drawn_at, \
         d.room_admit_per_minute, d.room_token_seconds, d.room_opens_minutes_before, \
         i.sku, i.label, i.total_stock, i.available, i.reserved, i.sold, \
         i.version";

    /// The drop of this row, selling `variants`.
    fn to_drop(&self, variants: Vec<model::Variant>) -> StoreResult<model::Drop> {
        Ok(model::Drop {
            id: DropId(self.id),
            product_id: ProductId(self.product_id),
            creator_id: UserId(self.creator_id),
            title: self.title.clone(),
            price_cents: self.price_cents,
            currency: self.currency.clone(),
            starts_at: self.starts_at.time()?,
            ends_at: self.ends_at.time()?,
            per_user_limit: to_u32(self.per_user_limit)?,
            state: DropState::parse(&self.state).ok_or_else(|| bad("drop state", &self.state))?,
            created_at: self.created_at.time()?,
            variants,
            draw: self.draw()?,
            waiting_room: self.waiting_room()?,
        })
    }

    /// The draw record of a draw drop (its close time and commitment are set).
    fn draw(&self) -> StoreResult<Option<model::Draw>> {
        let (Some(close), Some(commitment)) =
            (self.draw_entries_close_at, self.draw_commitment.as_ref())
        else {
            return Ok(None);
        };
        Ok(Some(model::Draw {
            entries_close_at: close.time()?,
            commitment: commitment.clone(),
            seed: self.draw_seed.clone(),
            drawn_at: time_opt(self.drawn_at)?,
        }))
    }

    /// The waiting room's settings, when the drop has one.
    fn waiting_room(&self) -> StoreResult<Option<model::WaitingRoom>> {
        let (Some(rate), Some(token), Some(opens)) = (
            self.room_admit_per_minute,
            self.room_token_seconds,
            self.room_opens_minutes_before,
        ) else {
            return Ok(None);
        };
        Ok(Some(model::WaitingRoom {
            admit_per_minute: to_u32(rate)?,
            token_seconds: to_u32(token)?,
            opens_minutes_before: to_u32(opens)?,
        }))
    }

    /// The drops of `rows` (each drop's rows together, its variants in position
    /// order), with each variant's stock, in the rows' order.
    pub(crate) fn views(rows: Vec<Self>) -> StoreResult<Vec<DropView>> {
        let mut views = Vec::new();
        let mut rows = rows.into_iter().peekable();
        while let Some(first) = rows.next() {
            let mut variants = vec![model::Variant::new(&first.sku, &first.label)];
            let mut stock = vec![first.stock.stock()?];
            while let Some(next) = rows.next_if(|r| r.id == first.id) {
                variants.push(model::Variant::new(next.sku, next.label));
                stock.push(next.stock.stock()?);
            }
            views.push(DropView::new(first.to_drop(variants)?, stock));
        }
        Ok(views)
    }

    /// The one drop of `rows`, if any (see [`DropRow::views`]).
    pub(crate) fn view(rows: Vec<Self>) -> StoreResult<Option<DropView>> {
        Ok(Self::views(rows)?.into_iter().next())
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct OrderRow<T> {
    id: Uuid,
    user_id: Uuid,
    drop_id: Uuid,
    sku: String,
    quantity: i64,
    unit_price_cents: i64,
    total_cents: i64,
    currency: String,
    status: String,
    idempotency_key: String,
    fingerprint: String,
    reserved_until: T,
    created_at: T,
    updated_at: T,
    extended_at: Option<T>,
}

impl<T: Stamp> OrderRow<T> {
    pub(crate) const COLUMNS: &'static str = "id, user_id, drop_id, sku, quantity, \
         unit_price_cents, total_cents, currency, status, idempotency_key, fingerprint, reserved_until, \
         created_at, updated_at, extended_at";

    pub(crate) fn into_order(self) -> StoreResult<Order> {
        Ok(Order {
            id: OrderId(self.id),
            user_id: UserId(self.user_id),
            drop_id: DropId(self.drop_id),
            sku: self.sku,
            quantity: to_u32(self.quantity)?,
            unit_price_cents: self.unit_price_cents,
            total_cents: self.total_cents,
            status: OrderStatus::parse(&self.status)
                .ok_or_else(|| bad("order status", &self.status))?,
            currency: self.currency,
            idempotency_key: self.idempotency_key,
            fingerprint: self.fingerprint,
            reserved_until: self.reserved_until.time()?,
            created_at: self.created_at.time()?,
            updated_at: self.updated_at.time()?,
            extended_at: time_opt(self.extended_at)?,
        })
    }

    /// The orders of `rows`, by (buyer, idempotency key).
    pub(crate) fn by_key(rows: Vec<Self>) -> StoreResult<HashMap<(Uuid, String), Order>> {
        rows.into_iter()
            .map(|row| {
                let o = row.into_order()?;
                Ok(((o.user_id.0, o.idempotency_key.clone()), o))
            })
            .collect()
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct LedgerRow<T> {
    id: Uuid,
    drop_id: Uuid,
    sku: String,
    kind: String,
    delta: i64,
    reason: String,
    actor_id: Option<Uuid>,
    total: i64,
    available: i64,
    reserved: i64,
    sold: i64,
    created_at: T,
}

impl<T: Stamp> LedgerRow<T> {
    pub(crate) const COLUMNS: &'static str =
        "id, drop_id, sku, kind, delta, reason, actor_id, total, available, reserved, sold, \
         created_at";

    pub(crate) fn into_entry(self) -> StoreResult<LedgerEntry> {
        Ok(LedgerEntry {
            id: self.id,
            drop_id: DropId(self.drop_id),
            sku: self.sku,
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
            created_at: self.created_at.time()?,
        })
    }
}

/// A waitlist entry (`w` in queries) with its place in its variant's line.
#[derive(sqlx::FromRow)]
pub(crate) struct WaitlistRow<T> {
    drop_id: Uuid,
    sku: String,
    user_id: Uuid,
    quantity: i64,
    joined_at: T,
    position: i64,
}

impl<T: Stamp> WaitlistRow<T> {
    /// Columns of `waitlist w`, and `position`: 1 plus the entries of the same
    /// variant with a lower `seq`.
    pub(crate) const COLUMNS: &'static str = "w.drop_id, w.sku, w.user_id, w.quantity, \
         w.joined_at, (SELECT count(*) FROM waitlist b \
                       WHERE b.drop_id = w.drop_id AND b.sku = w.sku AND b.seq < w.seq) + 1 \
         AS position";

    /// Columns of `waitlist w` for a whole line read in `seq` order, whose
    /// positions the reader counts (`position` reads 0).
    pub(crate) const LINE_COLUMNS: &'static str =
        "w.drop_id, w.sku, w.user_id, w.quantity, w.joined_at, CAST(0 AS BIGINT) AS position";

    pub(crate) fn into_entry(self) -> StoreResult<model::WaitlistEntry> {
        Ok(model::WaitlistEntry {
            drop_id: DropId(self.drop_id),
            sku: self.sku,
            user_id: UserId(self.user_id),
            quantity: to_u32(self.quantity)?,
            joined_at: self.joined_at.time()?,
            position: u64::try_from(self.position).map_err(|_| {
                StoreError::backend(format!("position {} out of range", self.position))
            })?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct NotificationRow<T> {
    id: Uuid,
    user_id: Uuid,
    kind: String,
    #[sqlx(json)]
    payload: serde_json::Value,
    dedup_key: String,
    created_at: T,
    read_at: Option<T>,
}

impl<T: Stamp> NotificationRow<T> {
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
            created_at: self.created_at.time()?,
            read_at: time_opt(self.read_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct OutboxRow<T> {
    seq: i64,
    event_id: Uuid,
    event_type: String,
    aggregate_id: Uuid,
    version: i64,
    occurred_at: T,
    #[sqlx(json)]
    payload: serde_json::Value,
}

impl<T: Stamp> OutboxRow<T> {
    pub(crate) const COLUMNS: &'static str =
        "seq, event_id, event_type, aggregate_id, version, occurred_at, payload";

    /// The relay's read: the oldest `$1` records not yet published, in append order.
    pub(crate) fn pending() -> String {
        format!(
            "SELECT {} FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1",
            Self::COLUMNS
        )
    }

    pub(crate) fn into_record(self) -> StoreResult<OutboxRecord> {
        let kind: EventType = self.event_type.parse().map_err(StoreError::backend)?;
        Ok(OutboxRecord {
            seq: self.seq,
            event: Event {
                id: EventId(self.event_id),
                kind,
                occurred_at: self.occurred_at.time()?,
                aggregate_id: self.aggregate_id,
                version: self.version,
                payload: self.payload,
            },
        })
    }
}

/// A draw entry (`e` in queries).
#[derive(sqlx::FromRow)]
pub(crate) struct DrawEntryRow<T> {
    drop_id: Uuid,
    user_id: Uuid,
    sku: String,
    quantity: i64,
    token: String,
    entered_at: T,
    result: String,
    rank: Option<i64>,
    order_id: Option<Uuid>,
}

impl<T: Stamp> DrawEntryRow<T> {
    /// Columns of `draw_entries e`.
    pub(crate) const COLUMNS: &'static str = "e.drop_id, e.user_id, e.sku, e.quantity, e.token, \
         e.entered_at, e.result, e.rank, e.order_id";

    pub(crate) fn into_entry(self) -> StoreResult<model::DrawEntry> {
        Ok(model::DrawEntry {
            drop_id: DropId(self.drop_id),
            user_id: UserId(self.user_id),
            sku: self.sku,
            quantity: to_u32(self.quantity)?,
            token: self.token,
            entered_at: self.entered_at.time()?,
            result: model::DrawResult::parse(&self.result)
                .ok_or_else(|| bad("draw result", &self.result))?,
            rank: self
                .rank
                .map(|r| {
                    u64::try_from(r)
                        .map_err(|_| StoreError::backend(format!("rank {r} out of range")))
                })
                .transpose()?,
            order_id: self.order_id.map(OrderId),
        })
    }
}
