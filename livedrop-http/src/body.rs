//! Request and response bodies of the HTTP contract. Field names are part of the
//! contract; ids are UUID strings, times RFC 3339.

use chrono::{DateTime, Utc};
use livedrop_core::model::{
    Allocation, DrawEntry, DrawResult, DropStatus, DropView, FollowEntry, LedgerEntry, LedgerKind,
    Notification, NotificationKind, Order, OrderStatus, Product, Profile, Role, Stock, User,
    WaitingRoom, WaitlistEntry,
};
use livedrop_core::page::Page;
use livedrop_core::service::{Livedrop, QueueState, QueueStatus};
use livedrop_core::Timestamp;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// A self-registration role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RegisterRole {
    /// Buys in drops.
    Customer,
    /// Also sells.
    Creator,
}

impl From<RegisterRole> for Role {
    fn from(r: RegisterRole) -> Self {
        match r {
            RegisterRole::Customer => Role::Customer,
            RegisterRole::Creator => Role::Creator,
        }
    }
}

/// `POST /users`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterRequest {
    /// Email; unique, case-insensitive.
    pub(crate) email: String,
    /// Password, 8 to 256 characters.
    pub(crate) password: String,
    /// Name shown to others.
    pub(crate) display_name: String,
    /// `customer` or `creator`.
    pub(crate) role: RegisterRole,
}

/// A user as others see it (never the password hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct UserBody {
    /// Id.
    pub(crate) id: Uuid,
    /// Email, lower-cased.
    pub(crate) email: String,
    /// Display name.
    pub(crate) display_name: String,
    /// `customer`, `creator` or `admin`.
    #[schema(value_type = String, example = "creator")]
    pub(crate) role: Role,
    /// Registration time.
    pub(crate) created_at: DateTime<Utc>,
}

impl From<User> for UserBody {
    fn from(u: User) -> Self {
        Self {
            id: u.id.0,
            email: u.email,
            display_name: u.display_name,
            role: u.role,
            created_at: u.created_at,
        }
    }
}

/// `GET /users/{id}`: the public profile; `email` only for the user themself and admins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct ProfileBody {
    /// Id.
    pub(crate) id: Uuid,
    /// Email, lower-cased: present only when the viewer is the user or an admin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) email: Option<String>,
    /// Display name.
    pub(crate) display_name: String,
    /// `customer`, `creator` or `admin`.
    #[schema(value_type = String, example = "creator")]
    pub(crate) role: Role,
    /// Registration time.
    pub(crate) created_at: DateTime<Utc>,
}

impl From<Profile> for ProfileBody {
    fn from(p: Profile) -> Self {
        Self {
            id: p.id.0,
            email: p.email,
            display_name: p.display_name,
            role: p.role,
            created_at: p.created_at,
        }
    }
}

/// `POST /sessions`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    /// Email.
    pub(crate) email: String,
    /// Password.
    pub(crate) password: String,
}

/// A session: the bearer token and who it is for.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct SessionBody {
    /// Send as `Authorization: Bearer <token>`.
    pub(crate) token: String,
    /// When the token stops working.
    pub(crate) expires_at: DateTime<Utc>,
    /// The user.
    pub(crate) user: UserBody,
}

/// One follow relation as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct FollowBody {
    /// The other user (a follower, or a followed creator).
    pub(crate) user_id: Uuid,
    /// Their display name.
    pub(crate) display_name: String,
    /// When the follow began.
    pub(crate) followed_at: DateTime<Utc>,
}

impl From<FollowEntry> for FollowBody {
    fn from(f: FollowEntry) -> Self {
        Self {
            user_id: f.user_id.0,
            display_name: f.display_name,
            followed_at: f.followed_at,
        }
    }
}

/// `POST /products`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewProductRequest {
    /// Title, 1 to 200 characters.
    pub(crate) title: String,
    /// Description, up to 5,000 characters.
    #[serde(default)]
    pub(crate) description: String,
    /// Price in minor units.
    pub(crate) price_cents: i64,
    /// ISO-4217 code.
    pub(crate) currency: String,
    /// An http(s) CDN address.
    #[serde(default)]
    pub(crate) image_url: Option<String>,
}

fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `PATCH /products/{id}`: absent fields stay; `"image_url": null` removes the image.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProductPatchRequest {
    /// New title.
    #[serde(default)]
    pub(crate) title: Option<String>,
    /// New description.
    #[serde(default)]
    pub(crate) description: Option<String>,
    /// New price.
    #[serde(default)]
    pub(crate) price_cents: Option<i64>,
    /// New currency.
    #[serde(default)]
    pub(crate) currency: Option<String>,
    /// New image address, or `null` to remove it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub(crate) image_url: Option<Option<String>>,
    /// Apply only if the product is at this version (else 409 `version_conflict`).
    #[serde(default)]
    pub(crate) expected_version: Option<i64>,
}

/// A product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct ProductBody {
    /// Id.
    pub(crate) id: Uuid,
    /// Owner.
    pub(crate) creator_id: Uuid,
    /// Title.
    pub(crate) title: String,
    /// Description.
    pub(crate) description: String,
    /// Price in minor units.
    pub(crate) price_cents: i64,
    /// ISO-4217 code.
    pub(crate) currency: String,
    /// CDN address of the image.
    pub(crate) image_url: Option<String>,
    /// Creation time.
    pub(crate) created_at: DateTime<Utc>,
    /// Last update.
    pub(crate) updated_at: DateTime<Utc>,
    /// Incremented by every update.
    pub(crate) version: i64,
}

impl From<Product> for ProductBody {
    fn from(p: Product) -> Self {
        Self {
            id: p.id.0,
            creator_id: p.creator_id.0,
            title: p.title,
            description: p.description,
            price_cents: p.price_cents,
            currency: p.currency,
            image_url: p.image_url,
            created_at: p.created_at,
            updated_at: p.updated_at,
            version: p.version,
        }
    }
}

/// `POST /drops`: either `total_stock` (one variant, sku `default`) or `variants`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewDropRequest {
    /// The product released.
    pub(crate) product_id: Uuid,
    /// Start; omitted means now.
    #[serde(default)]
    pub(crate) starts_at: Option<DateTime<Utc>>,
    /// End (exclusive).
    pub(crate) ends_at: DateTime<Utc>,
    /// Units of the drop's one variant (sku `default`), 1 to 10,000,000; leave out
    /// when giving `variants`.
    #[serde(default)]
    pub(crate) total_stock: Option<u32>,
    /// 1 to 100 variants (sizes, colours), each with its own stock; leave out when
    /// giving `total_stock`.
    #[serde(default)]
    pub(crate) variants: Option<Vec<NewVariantRequest>>,
    /// Most units one buyer may hold across all variants; omitted means the whole
    /// stock.
    #[serde(default)]
    pub(crate) per_user_limit: Option<u32>,
    /// `first_come` (default) or `draw`.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "draw")]
    pub(crate) allocation: Option<Allocation>,
    /// A draw's entry close: after `starts_at`, before `ends_at`; draws only.
    #[serde(default)]
    pub(crate) entries_close_at: Option<DateTime<Utc>>,
    /// A waiting room in front of a first-come drop.
    #[serde(default)]
    pub(crate) waiting_room: Option<WaitingRoomBody>,
}

/// A waiting room's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitingRoomBody {
    /// Buyers admitted per minute, spread evenly (1 to 60,000).
    pub(crate) admit_per_minute: u32,
    /// How long an admission token is valid (10 to 86,400 seconds).
    pub(crate) token_seconds: u32,
    /// How long before the start buyers may join; everyone who joined before the
    /// start is shuffled at the start.
    pub(crate) opens_minutes_before: u32,
}

impl From<WaitingRoomBody> for WaitingRoom {
    fn from(r: WaitingRoomBody) -> Self {
        Self {
            admit_per_minute: r.admit_per_minute,
            token_seconds: r.token_seconds,
            opens_minutes_before: r.opens_minutes_before,
        }
    }
}

impl From<WaitingRoom> for WaitingRoomBody {
    fn from(r: WaitingRoom) -> Self {
        Self {
            admit_per_minute: r.admit_per_minute,
            token_seconds: r.token_seconds,
            opens_minutes_before: r.opens_minutes_before,
        }
    }
}

/// A draw drop's public record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct DrawBody {
    /// Lower-case hex SHA-256 of the seed's lower-case hex text, published at
    /// scheduling.
    pub(crate) commitment: String,
    /// The seed (64 lower-case hex characters); null until the draw.
    pub(crate) seed: Option<String>,
    /// When entries close and the draw runs.
    pub(crate) entries_close_at: DateTime<Utc>,
    /// When the draw ran; null before.
    pub(crate) drawn_at: Option<DateTime<Utc>>,
    /// Entries taken.
    pub(crate) entries: u64,
    /// Entries that won so far.
    pub(crate) winners: u64,
}

/// `PUT /drops/{id}/entries/me`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EntryRequest {
    /// The variant; required when the drop has several.
    #[serde(default)]
    pub(crate) sku: Option<String>,
    /// Units wanted (all or nothing), default 1, within the per-user limit.
    #[serde(default)]
    pub(crate) quantity: Option<u32>,
}

/// The caller's draw entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct EntryBody {
    /// The drop.
    pub(crate) drop_id: Uuid,
    /// The variant wanted.
    pub(crate) sku: String,
    /// Units wanted.
    pub(crate) quantity: u32,
    /// The random public entry token (32 lower-case hex), kept on replacement.
    pub(crate) token: String,
    /// When entered (or last replaced).
    pub(crate) entered_at: DateTime<Utc>,
    /// `pending`, `won` or `lost`.
    #[schema(value_type = String, example = "pending")]
    pub(crate) result: DrawResult,
    /// Rank once drawn (1 first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rank: Option<u64>,
    /// The reserved order a win placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) order_id: Option<Uuid>,
}

impl From<DrawEntry> for EntryBody {
    fn from(e: DrawEntry) -> Self {
        Self {
            drop_id: e.drop_id.0,
            sku: e.sku,
            quantity: e.quantity,
            token: e.token,
            entered_at: e.entered_at,
            result: e.result,
            rank: e.rank,
            order_id: e.order_id.map(|o| o.0),
        }
    }
}

/// One entry of a drawn draw, public.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct RankedEntryBody {
    /// The entry's public token.
    pub(crate) token: String,
    /// The variant wanted.
    pub(crate) sku: String,
    /// Units wanted.
    pub(crate) quantity: u32,
    /// Rank (1 first): by lower-case hex SHA-256 of `seed + ":" + token`, ascending.
    pub(crate) rank: u64,
    /// `won` or `lost`.
    #[schema(value_type = String, example = "won")]
    pub(crate) result: DrawResult,
}

impl From<DrawEntry> for RankedEntryBody {
    fn from(e: DrawEntry) -> Self {
        Self {
            token: e.token,
            sku: e.sku,
            quantity: e.quantity,
            rank: e.rank.unwrap_or(0),
            result: e.result,
        }
    }
}

/// A buyer's place in a waiting room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct QueueBody {
    /// `waiting`, `admitted` or `expired` (the admission ran out).
    #[schema(value_type = String, example = "waiting")]
    pub(crate) status: QueueState,
    /// Place in the queue (1 first); before the start it may change until the
    /// shuffle.
    pub(crate) position: u64,
    /// Seconds until admission (0 once admitted).
    pub(crate) estimated_wait_seconds: u64,
    /// Once admitted: the token to send as `Admission-Token` on `POST /orders`.
    pub(crate) admission_token: Option<String>,
    /// When the admission (or the token once admitted) expires.
    pub(crate) expires_at: DateTime<Utc>,
}

impl From<QueueStatus> for QueueBody {
    fn from(q: QueueStatus) -> Self {
        Self {
            status: q.status,
            position: q.position,
            estimated_wait_seconds: q.estimated_wait_seconds,
            admission_token: q.admission_token,
            expires_at: q.expires_at,
        }
    }
}

/// A variant of `POST /drops`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewVariantRequest {
    /// 1 to 64 characters of `[A-Za-z0-9._-]`, unique within the drop.
    #[schema(example = "size-42")]
    pub(crate) sku: String,
    /// What buyers read, up to 200 characters; may be empty or left out.
    #[serde(default)]
    #[schema(example = "EU 42")]
    pub(crate) label: String,
    /// Units, 1 to 10,000,000.
    pub(crate) total_stock: u32,
}

/// A drop's stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct StockBody {
    /// All units.
    pub(crate) total: u32,
    /// Units anyone may order.
    pub(crate) available: u32,
    /// Units held by unpaid orders.
    pub(crate) reserved: u32,
    /// Units paid for.
    pub(crate) sold: u32,
}

impl From<Stock> for StockBody {
    fn from(s: Stock) -> Self {
        Self {
            total: s.total,
            available: s.available,
            reserved: s.reserved,
            sold: s.sold,
        }
    }
}

/// One variant of a drop with its own stock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct VariantBody {
    /// Unique within the drop; `default` for a drop created with one `total_stock`.
    #[schema(example = "size-42")]
    pub(crate) sku: String,
    /// What buyers read, possibly empty.
    pub(crate) label: String,
    /// The variant's stock (`available + reserved + sold = total`).
    pub(crate) stock: StockBody,
}

/// A drop with its stock; `status` is computed at response time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct DropBody {
    /// Id.
    pub(crate) id: Uuid,
    /// The product released.
    pub(crate) product_id: Uuid,
    /// The product's creator.
    pub(crate) creator_id: Uuid,
    /// Orders accepted from…
    pub(crate) starts_at: DateTime<Utc>,
    /// …until (exclusive).
    pub(crate) ends_at: DateTime<Utc>,
    /// `scheduled`, `live`, `sold_out`, `ended` or `cancelled`.
    #[schema(value_type = String, example = "live")]
    pub(crate) status: DropStatus,
    /// Most units one buyer may hold.
    pub(crate) per_user_limit: u32,
    /// Stock: the sum of the variants'.
    pub(crate) stock: StockBody,
    /// What the drop sells, in the order defined, each with its stock.
    pub(crate) variants: Vec<VariantBody>,
    /// `first_come` or `draw`.
    #[schema(value_type = String, example = "first_come")]
    pub(crate) allocation: Allocation,
    /// A draw drop's commitment, seed (once drawn) and counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) draw: Option<DrawBody>,
    /// A waiting room's settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) waiting_room: Option<WaitingRoomBody>,
}

impl DropBody {
    /// The body of `view` with its status at `now`.
    pub(crate) fn at(view: DropView, now: Timestamp) -> Self {
        let status = view.status_at(now);
        Self {
            id: view.drop.id.0,
            product_id: view.drop.product_id.0,
            creator_id: view.drop.creator_id.0,
            starts_at: view.drop.starts_at,
            ends_at: view.drop.ends_at,
            status,
            per_user_limit: view.drop.per_user_limit,
            allocation: view.drop.allocation(),
            draw: view.drop.draw.as_ref().map(|d| DrawBody {
                commitment: d.commitment.clone(),
                seed: d.seed.clone(),
                entries_close_at: d.entries_close_at,
                drawn_at: d.drawn_at,
                entries: 0,
                winners: 0,
            }),
            waiting_room: view.drop.waiting_room.map(Into::into),
            stock: view.stock.into(),
            variants: view
                .variants()
                .map(|(variant, stock)| VariantBody {
                    sku: variant.sku.clone(),
                    label: variant.label.clone(),
                    stock: stock.into(),
                })
                .collect(),
        }
    }
}

impl DropBody {
    /// Fills a draw drop's entry and winner counts.
    pub(crate) async fn counted(mut self, livedrop: &Livedrop) -> livedrop_core::Result<Self> {
        if let Some(draw) = &mut self.draw {
            let (entries, winners) = livedrop.draw_counts(livedrop_core::DropId(self.id)).await?;
            draw.entries = entries;
            draw.winners = winners;
        }
        Ok(self)
    }
}

/// `POST /orders`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewOrderRequest {
    /// The drop to order from.
    pub(crate) drop_id: Uuid,
    /// Units, 1 to 10,000.
    pub(crate) quantity: u32,
    /// The variant; required when the drop has several, may be left out otherwise.
    #[serde(default)]
    #[schema(example = "size-42")]
    pub(crate) sku: Option<String>,
}

/// An order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct OrderBody {
    /// Id.
    pub(crate) id: Uuid,
    /// The buyer.
    pub(crate) user_id: Uuid,
    /// The drop.
    pub(crate) drop_id: Uuid,
    /// The variant ordered (`default` on a drop of one stock).
    pub(crate) sku: String,
    /// Units.
    pub(crate) quantity: u32,
    /// Unit price in minor units.
    pub(crate) unit_price_cents: i64,
    /// `quantity × unit_price_cents`.
    pub(crate) total_cents: i64,
    /// ISO-4217 code.
    pub(crate) currency: String,
    /// `reserved`, `confirmed`, `cancelled` or `expired`.
    #[schema(value_type = String, example = "reserved")]
    pub(crate) status: OrderStatus,
    /// When the hold runs out unless confirmed.
    pub(crate) reserved_until: DateTime<Utc>,
    /// Creation time.
    pub(crate) created_at: DateTime<Utc>,
    /// When the hold was extended (`POST /orders/{id}/extend`, once per order);
    /// absent while it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) extended_at: Option<DateTime<Utc>>,
}

impl From<Order> for OrderBody {
    fn from(o: Order) -> Self {
        Self {
            id: o.id.0,
            user_id: o.user_id.0,
            drop_id: o.drop_id.0,
            sku: o.sku,
            quantity: o.quantity,
            unit_price_cents: o.unit_price_cents,
            total_cents: o.total_cents,
            currency: o.currency,
            status: o.status,
            reserved_until: o.reserved_until,
            created_at: o.created_at,
            extended_at: o.extended_at,
        }
    }
}

/// A notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct NotificationBody {
    /// Id.
    pub(crate) id: Uuid,
    /// `drop_scheduled`, `drop_live`, `low_stock`, `sold_out`, `order_confirmed`,
    /// `order_expired`, `waitlist_offer` (payload `order_id` names the reserved order),
    /// `waitlist_skipped`, `waitlist_closed`.
    #[schema(value_type = String, example = "drop_live")]
    pub(crate) kind: NotificationKind,
    /// Kind-specific data.
    #[schema(value_type = Object)]
    pub(crate) payload: serde_json::Value,
    /// Creation time.
    pub(crate) created_at: DateTime<Utc>,
    /// When it was read, or null.
    pub(crate) read_at: Option<DateTime<Utc>>,
}

impl From<Notification> for NotificationBody {
    fn from(n: Notification) -> Self {
        Self {
            id: n.id.0,
            kind: n.kind,
            payload: n.payload,
            created_at: n.created_at,
            read_at: n.read_at,
        }
    }
}

/// `POST /notifications/read-all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct MarkedBody {
    /// How many notifications were unread.
    pub(crate) marked: u64,
}

/// `POST /internal/inventory/{drop_id}/adjust`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdjustRequest {
    /// Positive restocks, negative shrinks available stock.
    pub(crate) delta: i64,
    /// Why; kept in the ledger.
    pub(crate) reason: String,
    /// The variant whose stock moves; required when the drop has several.
    #[serde(default)]
    pub(crate) sku: Option<String>,
}

/// An audit record of a stock movement outside orders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct LedgerEntryBody {
    /// Id.
    pub(crate) id: Uuid,
    /// The drop.
    pub(crate) drop_id: Uuid,
    /// The variant whose stock moved.
    pub(crate) sku: String,
    /// `initial`, `restock` or `shrink`.
    #[schema(value_type = String, example = "restock")]
    pub(crate) kind: LedgerKind,
    /// Signed change of total and available.
    pub(crate) delta: i64,
    /// Why.
    pub(crate) reason: String,
    /// Who, when known.
    pub(crate) actor_id: Option<Uuid>,
    /// The variant's stock right after.
    pub(crate) stock_after: StockBody,
    /// When.
    pub(crate) created_at: DateTime<Utc>,
}

impl From<LedgerEntry> for LedgerEntryBody {
    fn from(e: LedgerEntry) -> Self {
        Self {
            id: e.id,
            drop_id: e.drop_id.0,
            sku: e.sku,
            kind: e.kind,
            delta: e.delta,
            reason: e.reason,
            actor_id: e.actor_id.map(|a| a.0),
            stock_after: e.stock_after.into(),
            created_at: e.created_at,
        }
    }
}

/// `PUT /drops/{id}/waitlist/me`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitlistRequest {
    /// The sold-out variant to wait for; required when the drop has several.
    #[serde(default)]
    #[schema(example = "size-42")]
    pub(crate) sku: Option<String>,
    /// Units wanted, 1 to 10,000 (an offer may hold fewer).
    pub(crate) quantity: u32,
}

/// The caller's place on a drop's waitlist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct WaitlistBody {
    /// The drop.
    pub(crate) drop_id: Uuid,
    /// The variant waited for.
    pub(crate) sku: String,
    /// Units wanted.
    pub(crate) quantity: u32,
    /// Place in the variant's line; 1 is served first.
    pub(crate) position: u64,
    /// When the place was taken (joining again with the same sku keeps it).
    pub(crate) joined_at: DateTime<Utc>,
}

impl From<WaitlistEntry> for WaitlistBody {
    fn from(e: WaitlistEntry) -> Self {
        Self {
            drop_id: e.drop_id.0,
            sku: e.sku,
            quantity: e.quantity,
            position: e.position,
            joined_at: e.joined_at,
        }
    }
}

/// `POST /internal/cache/invalidate`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InvalidateRequest {
    /// Exact keys, e.g. `drop:<id>`.
    #[serde(default)]
    pub(crate) keys: Vec<String>,
    /// Key prefixes, e.g. `products:`.
    #[serde(default)]
    pub(crate) prefixes: Vec<String>,
}

/// What an invalidation removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct InvalidatedBody {
    /// Entries removed.
    pub(crate) removed: u64,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct ListBody<T> {
    /// Items, newest first.
    pub(crate) items: Vec<T>,
    /// Pass as `?cursor=` for the next page; null on the last page.
    pub(crate) next_cursor: Option<String>,
}

impl<T> ListBody<T> {
    /// A page of core items mapped to bodies.
    pub(crate) fn from_page<U>(page: Page<U>, f: impl FnMut(U) -> T) -> Self {
        Self {
            next_cursor: page.next_cursor.map(|c| c.to_string()),
            items: page.items.into_iter().map(f).collect(),
        }
    }
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct HealthBody {
    /// `ok`.
    pub(crate) status: String,
    /// Each checked dependency and its state (`ok`), for `/readyz`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) checks: Vec<CheckBody>,
}

/// One readiness check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct CheckBody {
    /// The dependency: `store`, `cache`, `bus`.
    pub(crate) name: String,
    /// `ok` or `failing`.
    pub(crate) status: String,
}
