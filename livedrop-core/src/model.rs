//! Domain types: users, follows, products, drops, inventory, orders, notifications.
//!
//! These are plain data with the pure rules that belong to them (a drop's status at
//! an instant, an order's transitions). Persistence lives behind the [ports](crate::ports).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::Timestamp;
use crate::id::{DropId, NotificationId, OrderId, ProductId, UserId};
use crate::page::Cursor;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Buys in drops.
    Customer,
    /// Also creates products and schedules drops.
    Creator,
    /// May act on anything; made only by operator bootstrap.
    Admin,
}

impl Role {
    /// The role's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Creator => "creator",
            Role::Admin => "admin",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "customer" => Some(Role::Customer),
            "creator" => Some(Role::Creator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Who performs a command. Every command takes one; authorization lives in the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Actor {
    /// The acting user.
    pub id: UserId,
    /// Their role.
    pub role: Role,
}

impl Actor {
    /// An actor.
    pub fn new(id: UserId, role: Role) -> Self {
        Self { id, role }
    }

    /// Whether the actor is an admin.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Id.
    pub id: UserId,
    /// Email, stored lower-cased; unique.
    pub email: String,
    /// Name shown to others.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// PHC-format argon2 hash.
    pub password_hash: String,
    /// Registration time.
    pub created_at: Timestamp,
}

impl User {
    /// The actor this user acts as.
    pub fn actor(&self) -> Actor {
        Actor::new(self.id, self.role)
    }
}

/// A user as one viewer may see them: the public profile, plus the email only for
/// the user themself and for admins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Id.
    pub id: UserId,
    /// Email; `None` unless the viewer is the user or an admin.
    pub email: Option<String>,
    /// Name shown to others.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// Registration time.
    pub created_at: Timestamp,
}

impl Profile {
    /// What `viewer` (`None`: anonymous) may see of `user`.
    pub fn of(user: User, viewer: Option<&Actor>) -> Self {
        let private = viewer.is_some_and(|v| v.id == user.id || v.is_admin());
        Self {
            id: user.id,
            email: private.then_some(user.email),
            display_name: user.display_name,
            role: user.role,
            created_at: user.created_at,
        }
    }
}

/// One side of a follow relation, as listed: the other user and when the follow began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowEntry {
    /// The follower (in a followers listing) or the creator (in a following listing).
    pub user_id: UserId,
    /// That user's display name.
    pub display_name: String,
    /// When the follow began.
    pub followed_at: Timestamp,
}

impl FollowEntry {
    /// The keyset position of this entry.
    pub fn cursor(&self) -> Cursor {
        Cursor::new(self.followed_at, self.user_id.0)
    }
}

/// A product a creator sells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Id.
    pub id: ProductId,
    /// The creator who owns it.
    pub creator_id: UserId,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Price in integer minor units of `currency`.
    pub price_cents: i64,
    /// ISO-4217 code, upper case.
    pub currency: String,
    /// A CDN address of its image; media is never stored here.
    pub image_url: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last update time.
    pub updated_at: Timestamp,
    /// Incremented by every update; starts at 1.
    pub version: i64,
}

impl Product {
    /// The keyset position of this product.
    pub fn cursor(&self) -> Cursor {
        Cursor::new(self.created_at, self.id.0)
    }

    /// Whether `terms` (lower-cased, non-empty) all occur in the title or description,
    /// case-insensitively: the search semantics every adapter shares.
    pub fn matches(&self, terms: &[String]) -> bool {
        let hay = crate::text::fold_case(&format!("{} {}", self.title, self.description));
        terms.iter().all(|t| hay.contains(t.as_str()))
    }
}

/// Which products to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProductFilter {
    /// Only this creator's products.
    pub creator_id: Option<UserId>,
    /// Search terms: each must occur, case-insensitively, in the title or description.
    /// Terms are lower-cased and non-empty.
    pub terms: Vec<String>,
}

impl ProductFilter {
    /// Splits a free-text query into search terms.
    pub fn with_query(mut self, q: &str) -> Self {
        self.terms = q.split_whitespace().map(crate::text::fold_case).collect();
        self
    }
}

/// The stored lifecycle of a drop, advanced by the scheduler or a cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropState {
    /// Created, not yet started.
    Scheduled,
    /// `drop.started` has been emitted.
    Live,
    /// `drop.ended` has been emitted.
    Ended,
    /// Cancelled by its creator or an admin.
    Cancelled,
}

impl DropState {
    /// The state's storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            DropState::Scheduled => "scheduled",
            DropState::Live => "live",
            DropState::Ended => "ended",
            DropState::Cancelled => "cancelled",
        }
    }

    /// Parses a storage name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "scheduled" => Some(DropState::Scheduled),
            "live" => Some(DropState::Live),
            "ended" => Some(DropState::Ended),
            "cancelled" => Some(DropState::Cancelled),
            _ => None,
        }
    }
}

/// The status users see: derived from the clock, the stock and the stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropStatus {
    /// Not started yet.
    Scheduled,
    /// Taking orders.
    Live,
    /// Within its window with nothing available.
    SoldOut,
    /// Past its end.
    Ended,
    /// Cancelled.
    Cancelled,
}

impl DropStatus {
    /// The status's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DropStatus::Scheduled => "scheduled",
            DropStatus::Live => "live",
            DropStatus::SoldOut => "sold_out",
            DropStatus::Ended => "ended",
            DropStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "scheduled" => Some(DropStatus::Scheduled),
            "live" => Some(DropStatus::Live),
            "sold_out" => Some(DropStatus::SoldOut),
            "ended" => Some(DropStatus::Ended),
            "cancelled" => Some(DropStatus::Cancelled),
            _ => None,
        }
    }
}

/// A time-boxed release of a product in limited stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drop {
    /// Id.
    pub id: DropId,
    /// The product released.
    pub product_id: ProductId,
    /// The product's creator.
    pub creator_id: UserId,
    /// The product's title when the drop was scheduled (for notifications).
    pub title: String,
    /// Unit price, snapshotted from the product when the drop was scheduled.
    pub price_cents: i64,
    /// Currency of `price_cents`.
    pub currency: String,
    /// Orders are accepted from this instant...
    pub starts_at: Timestamp,
    /// ...until this one (exclusive).
    pub ends_at: Timestamp,
    /// The most one user may hold (reserved plus confirmed) in this drop.
    pub per_user_limit: u32,
    /// The stored lifecycle state.
    pub state: DropState,
    /// Creation time.
    pub created_at: Timestamp,
    /// What the drop sells, 1 to 100 variants in the order they were defined, each
    /// with its own stock. A drop created with one stock has one variant,
    /// [`DEFAULT_SKU`].
    #[serde(default = "Variant::only_default")]
    pub variants: Vec<Variant>,
    /// For a draw drop: its entry window, commitment and (once drawn) seed. `None`
    /// for a first-come drop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draw: Option<Draw>,
    /// For a first-come drop behind a waiting room: its admission settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_room: Option<WaitingRoom>,
}

/// How a drop's units are allocated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Allocation {
    /// Whoever orders first, while stock lasts (behind a waiting room if it has one).
    #[default]
    FirstCome,
    /// Entries during a window, then a verifiable random draw.
    Draw,
}

/// A draw drop's public record: entries are taken from the drop's start until
/// `entries_close_at`; then the draw runs once and reveals `seed`, whose SHA-256
/// (of its hex text) is `commitment`, published at scheduling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Draw {
    /// When entries close and the draw runs.
    pub entries_close_at: Timestamp,
    /// Lower-case hex SHA-256 of the seed's lower-case hex text.
    pub commitment: String,
    /// The seed (64 lower-case hex characters), once drawn.
    #[serde(default)]
    pub seed: Option<String>,
    /// When the draw ran.
    #[serde(default)]
    pub drawn_at: Option<Timestamp>,
}

impl Draw {
    /// The commitment to `seed_hex`: lower-case hex SHA-256 of its text.
    pub fn commitment_of(seed_hex: &str) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(seed_hex.as_bytes()))
    }

    /// A fresh secret seed (32 random bytes, as 64 lower-case hex characters).
    pub fn new_seed() -> String {
        hex::encode(rand::random::<[u8; 32]>())
    }

    /// Whether entries are taken at `now` for a drop starting at `starts_at`.
    pub fn is_open(&self, starts_at: Timestamp, now: Timestamp) -> bool {
        self.drawn_at.is_none() && starts_at <= now && now < self.entries_close_at
    }

    /// The rank key of entry `token` under `seed_hex`: lower-case hex SHA-256 of
    /// `seed + ":" + token`. Entries rank by it ascending, rank 1 first.
    pub fn rank_key(seed_hex: &str, token: &str) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(seed_hex.as_bytes());
        h.update(b":");
        h.update(token.as_bytes());
        hex::encode(h.finalize())
    }

    /// `entries` in rank order under `seed_hex` (ties, which need a SHA-256
    /// collision, by token).
    pub fn ranked(seed_hex: &str, mut entries: Vec<DrawEntry>) -> Vec<DrawEntry> {
        entries.sort_by_cached_key(|e| (Self::rank_key(seed_hex, &e.token), e.token.clone()));
        for (i, entry) in entries.iter_mut().enumerate() {
            entry.rank = Some(i as u64 + 1);
        }
        entries
    }
}

/// A waiting room in front of a first-come drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WaitingRoom {
    /// Buyers admitted per minute, spread evenly: one every `60 / admit_per_minute`
    /// seconds.
    pub admit_per_minute: u32,
    /// How long an admission token is valid from the admission.
    pub token_seconds: u32,
    /// How long before the start buyers may join (they are shuffled at the start).
    pub opens_minutes_before: u32,
}

impl WaitingRoom {
    /// The time between two admissions.
    pub fn interval(&self) -> chrono::Duration {
        chrono::Duration::microseconds(60_000_000 / i64::from(self.admit_per_minute.max(1)))
    }

    /// When the room opens for a drop starting at `starts_at`.
    pub fn opens_at(&self, starts_at: Timestamp) -> Timestamp {
        starts_at - chrono::Duration::minutes(i64::from(self.opens_minutes_before))
    }

    /// When the buyer at `position` (1 first) of the shuffled pre-queue is admitted.
    pub fn pre_queue_slot(&self, starts_at: Timestamp, position: u64) -> Timestamp {
        let steps = i32::try_from(position.saturating_sub(1)).unwrap_or(i32::MAX);
        starts_at + self.interval() * steps
    }

    /// When a buyer who joins at `now` (at or after the start) is admitted: one
    /// interval after the slot of the one before (`previous`: the last slot given,
    /// or the pre-queue's last; `None` when nobody joined before), and not before
    /// `now`. Slots never come closer than one interval, so admissions keep the
    /// rate however many processes hand them out.
    pub fn next_slot(
        &self,
        previous: Option<Timestamp>,
        starts_at: Timestamp,
        now: Timestamp,
    ) -> Timestamp {
        let earliest = previous.map_or(starts_at, |p| p + self.interval());
        crate::clock::truncate(earliest.max(now))
    }
}

impl Drop {
    /// How the drop allocates its units.
    pub fn allocation(&self) -> Allocation {
        if self.draw.is_some() {
            Allocation::Draw
        } else {
            Allocation::FirstCome
        }
    }
}

/// The sku of the variant of a drop created with a single `total_stock`.
pub const DEFAULT_SKU: &str = "default";

/// One thing a drop sells (a size, a colour), with its own stock.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Variant {
    /// 1 to 64 characters of `[A-Za-z0-9._-]`, unique within the drop.
    pub sku: String,
    /// What buyers read, possibly empty.
    pub label: String,
}

impl Variant {
    /// A variant `sku` labelled `label`.
    pub fn new(sku: impl Into<String>, label: impl Into<String>) -> Self {
        Self {
            sku: sku.into(),
            label: label.into(),
        }
    }

    /// The single variant of a drop created with one stock: [`DEFAULT_SKU`], no label.
    pub fn only_default() -> Vec<Variant> {
        vec![Variant::new(DEFAULT_SKU, "")]
    }

    /// Whether `sku` is a well-formed sku: 1 to 64 characters of `[A-Za-z0-9._-]`.
    pub fn is_valid_sku(sku: &str) -> bool {
        (1..=64).contains(&sku.len())
            && sku
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    }
}

impl Drop {
    /// A drop `id` of `product`, open for orders in `[starts_at, ends_at)`: it keeps the
    /// product's creator, title and price as they are now.
    pub(crate) fn of_product(
        id: DropId,
        product: &Product,
        (starts_at, ends_at): (Timestamp, Timestamp),
        per_user_limit: u32,
        state: DropState,
        created_at: Timestamp,
        variants: Vec<Variant>,
    ) -> Self {
        Self {
            draw: None,
            waiting_room: None,
            id,
            product_id: product.id,
            creator_id: product.creator_id,
            title: product.title.clone(),
            price_cents: product.price_cents,
            currency: product.currency.clone(),
            starts_at,
            ends_at,
            per_user_limit,
            state,
            created_at,
            variants,
        }
    }

    /// The variant `sku`, if the drop sells it.
    pub fn variant(&self, sku: &str) -> Option<&Variant> {
        self.variants.iter().find(|v| v.sku == sku)
    }

    /// The index of variant `sku` in `variants`, if the drop sells it.
    pub fn variant_index(&self, sku: &str) -> Option<usize> {
        self.variants.iter().position(|v| v.sku == sku)
    }

    /// The sku an order or adjustment naming `sku` (or none) is for: the named one if
    /// the drop sells it, or the only variant when none is named.
    pub fn resolve_sku(&self, sku: Option<&str>) -> SkuResolution<'_> {
        match sku {
            Some(sku) => match self.variant(sku) {
                Some(v) => SkuResolution::Found(&v.sku),
                None => SkuResolution::Unknown,
            },
            None => match self.variants.as_slice() {
                [only] => SkuResolution::Found(&only.sku),
                _ => SkuResolution::Required,
            },
        }
    }

    /// The keyset position of this drop.
    pub fn cursor(&self) -> Cursor {
        Cursor::new(self.created_at, self.id.0)
    }

    /// Whether the drop takes orders at `now`: not cancelled and within its window.
    /// Stock is checked separately, atomically, by the store.
    pub fn accepts_orders_at(&self, now: Timestamp) -> bool {
        self.state != DropState::Cancelled && self.starts_at <= now && now < self.ends_at
    }

    /// The status at `now` given `stock`.
    pub fn status_at(&self, now: Timestamp, stock: &Stock) -> DropStatus {
        if self.state == DropState::Cancelled {
            DropStatus::Cancelled
        } else if now >= self.ends_at {
            DropStatus::Ended
        } else if now < self.starts_at {
            DropStatus::Scheduled
        } else if stock.available == 0 {
            DropStatus::SoldOut
        } else {
            DropStatus::Live
        }
    }
}

/// How [`Drop::resolve_sku`] read a requested sku.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkuResolution<'a> {
    /// The variant's sku.
    Found(&'a str),
    /// The drop does not sell this sku.
    Unknown,
    /// None named, and the drop has several variants.
    Required,
}

/// The inventory of a drop or of one of its variants.
///
/// Invariant: `available + reserved + sold == total`, each non-negative, at every instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stock {
    /// All units of the drop.
    pub total: u32,
    /// Units anyone may still order.
    pub available: u32,
    /// Units held by orders awaiting payment.
    pub reserved: u32,
    /// Units paid for.
    pub sold: u32,
}

impl Stock {
    /// Fresh stock of `total` units, all available.
    pub fn new(total: u32) -> Self {
        Self {
            total,
            available: total,
            reserved: 0,
            sold: 0,
        }
    }

    /// Whether the invariant holds.
    pub fn is_consistent(&self) -> bool {
        u64::from(self.available) + u64::from(self.reserved) + u64::from(self.sold)
            == u64::from(self.total)
    }

    /// The sum of `parts` (a drop's stock from its variants'), saturating.
    pub fn sum<'a>(parts: impl IntoIterator<Item = &'a Stock>) -> Stock {
        parts.into_iter().fold(Stock::default(), |acc, s| Stock {
            total: acc.total.saturating_add(s.total),
            available: acc.available.saturating_add(s.available),
            reserved: acc.reserved.saturating_add(s.reserved),
            sold: acc.sold.saturating_add(s.sold),
        })
    }
}

/// A drop together with its stock, as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropView {
    /// The drop.
    pub drop: Drop,
    /// Its stock when read: the sum of `variant_stock`.
    pub stock: Stock,
    /// The stock of each of `drop.variants`, in the same order.
    #[serde(default)]
    pub variant_stock: Vec<Stock>,
}

impl DropView {
    /// A view of `drop` whose variants hold `variant_stock` (in `drop.variants`
    /// order); the drop's stock is their sum.
    pub fn new(drop: Drop, variant_stock: Vec<Stock>) -> Self {
        Self {
            stock: Stock::sum(&variant_stock),
            drop,
            variant_stock,
        }
    }

    /// Each variant with its stock.
    pub fn variants(&self) -> impl Iterator<Item = (&Variant, Stock)> {
        self.drop.variants.iter().zip(
            self.variant_stock
                .iter()
                .copied()
                .chain(std::iter::repeat(Stock::default())),
        )
    }

    /// The stock of variant `sku`, if the drop sells it.
    pub fn stock_of(&self, sku: &str) -> Option<Stock> {
        self.variants().find(|(v, _)| v.sku == sku).map(|(_, s)| s)
    }

    /// The status at `now`.
    pub fn status_at(&self, now: Timestamp) -> DropStatus {
        self.drop.status_at(now, &self.stock)
    }
}

/// Which drops to list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DropFilter {
    /// Only drops with this status at the listing instant.
    pub status: Option<DropStatus>,
    /// Only this creator's drops.
    pub creator_id: Option<UserId>,
}

impl DropFilter {
    /// Whether `view` passes the filter at `now`.
    pub fn accepts(&self, view: &DropView, now: Timestamp) -> bool {
        self.creator_id.is_none_or(|c| c == view.drop.creator_id)
            && self.status.is_none_or(|s| s == view.status_at(now))
    }
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Stock held until `reserved_until`.
    Reserved,
    /// Paid: the held units are sold.
    Confirmed,
    /// Cancelled by its buyer: the held units returned.
    Cancelled,
    /// The hold ran out: the held units returned.
    Expired,
}

impl OrderStatus {
    /// The status's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Reserved => "reserved",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Expired => "expired",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reserved" => Some(OrderStatus::Reserved),
            "confirmed" => Some(OrderStatus::Confirmed),
            "cancelled" => Some(OrderStatus::Cancelled),
            "expired" => Some(OrderStatus::Expired),
            _ => None,
        }
    }

    /// Whether the order counts toward the per-user limit.
    pub fn holds_stock(self) -> bool {
        matches!(self, OrderStatus::Reserved | OrderStatus::Confirmed)
    }
}

/// An order in a drop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Id.
    pub id: OrderId,
    /// The buyer.
    pub user_id: UserId,
    /// The drop ordered from.
    pub drop_id: DropId,
    /// The variant ordered.
    #[serde(default = "default_sku")]
    pub sku: String,
    /// Units ordered.
    pub quantity: u32,
    /// Unit price in minor units.
    pub unit_price_cents: i64,
    /// `quantity * unit_price_cents`.
    pub total_cents: i64,
    /// Currency of the prices.
    pub currency: String,
    /// Status.
    pub status: OrderStatus,
    /// The buyer's idempotency key; unique per buyer.
    pub idempotency_key: String,
    /// Fingerprint of the request that created the order.
    pub fingerprint: String,
    /// When the hold runs out if not confirmed.
    pub reserved_until: Timestamp,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last status change.
    pub updated_at: Timestamp,
    /// When the hold was extended, if it was (at most once per order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_at: Option<Timestamp>,
}

impl Order {
    /// The keyset position of this order.
    pub fn cursor(&self) -> Cursor {
        Cursor::new(self.created_at, self.id.0)
    }

    /// What extending this order's hold by `by` at `now` does, checking in this
    /// order: not `reserved` → `NotReserved`, or `HoldExpired` when its status is
    /// `expired`; `now` at or after `reserved_until` → `HoldExpired`; extended before
    /// → `AlreadyExtended`; otherwise `Extended` with `reserved_until` moved by `by`
    /// (truncated to microseconds, saturating) and `extended_at = now`. The stores
    /// decide with it on the order as read under their lock, and write what it
    /// returns.
    pub fn extension(&self, by: chrono::Duration, now: Timestamp) -> ExtendOutcome {
        match self.status {
            OrderStatus::Reserved => {}
            OrderStatus::Expired => return ExtendOutcome::HoldExpired(self.clone()),
            OrderStatus::Confirmed | OrderStatus::Cancelled => {
                return ExtendOutcome::NotReserved(self.clone())
            }
        }
        if now >= self.reserved_until {
            return ExtendOutcome::HoldExpired(self.clone());
        }
        if self.extended_at.is_some() {
            return ExtendOutcome::AlreadyExtended(self.clone());
        }
        ExtendOutcome::Extended(Order {
            reserved_until: crate::clock::truncate(
                self.reserved_until
                    .checked_add_signed(by)
                    .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC),
            ),
            extended_at: Some(now),
            ..self.clone()
        })
    }
}

pub(crate) fn default_sku() -> String {
    DEFAULT_SKU.to_owned()
}

/// What the store did with a hold extension ([`Order::extension`] decides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtendOutcome {
    /// The hold now runs until the returned order's `reserved_until`.
    Extended(Order),
    /// The order is confirmed or cancelled; nothing changed.
    NotReserved(Order),
    /// The hold ran out (the order is expired, or reserved past its `reserved_until`
    /// and not swept yet); nothing changed.
    HoldExpired(Order),
    /// The hold was extended before; nothing changed.
    AlreadyExtended(Order),
    /// No such order.
    NotFound,
}

/// What the store did with a new order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaceOutcome {
    /// Stock reserved, order stored.
    Placed(Order),
    /// The buyer already has an order with this idempotency key; nothing changed.
    Duplicate(Order),
    /// Fewer units available than requested; nothing changed.
    OutOfStock {
        /// Units available when checked.
        available: u32,
    },
    /// The drop does not take orders now (cancelled, not started or ended).
    NotLive,
    /// The order would take the buyer past the per-user limit.
    LimitExceeded {
        /// The drop's limit.
        limit: u32,
        /// Units the buyer already holds (reserved plus confirmed).
        held: u32,
    },
    /// No such drop.
    DropNotFound,
    /// The drop does not sell `order.sku`.
    UnknownVariant,
    /// The buyer's idempotency key holds a finished outcome of a request with the
    /// order's fingerprint (a refusal the store recorded, or another operation's
    /// stored response): its record, as
    /// [`Livedrop::idempotently`](crate::service::Livedrop::idempotently) stores it.
    /// Nothing changed.
    Replayed(serde_json::Value),
    /// The buyer's idempotency key belongs to a request with another fingerprint.
    /// Nothing changed.
    KeyReused,
    /// The buyer's idempotency key is claimed by a request still running (its lease
    /// has not run out). Nothing changed.
    KeyInFlight,
}

/// A buyer's or payment's decision on a reserved order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Settlement {
    /// Payment done: reserved units become sold.
    Confirm,
    /// Buyer gives up: reserved units return to available.
    Cancel,
}

/// What the store did with a settlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleOutcome {
    /// The order moved to its new status.
    Settled(Order),
    /// The order was already in the requested status; nothing changed.
    Unchanged(Order),
    /// The order is in a status the settlement cannot leave from; nothing changed.
    Conflict(Order),
    /// Confirm came after the hold ran out: the store expired the order instead.
    HoldExpired(Order),
    /// No such order.
    NotFound,
}

/// The kind of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// A followed creator scheduled a drop.
    DropScheduled,
    /// A followed creator's drop went live.
    DropLive,
    /// A drop is running low.
    LowStock,
    /// A drop sold out.
    SoldOut,
    /// The user's order was confirmed.
    OrderConfirmed,
    /// The user's hold expired.
    OrderExpired,
    /// Units the user waited for came back: a reserved order holds them now.
    WaitlistOffer,
    /// The user's waitlist entry ended unserved: an offer would pass the per-user limit.
    WaitlistSkipped,
    /// The user's waitlist entry ended with the drop.
    WaitlistClosed,
    /// The user's draw entry won: a reserved order holds its units.
    DrawWon,
    /// The user's draw entry did not win.
    DrawLost,
}

impl NotificationKind {
    /// The kind's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::DropScheduled => "drop_scheduled",
            NotificationKind::DropLive => "drop_live",
            NotificationKind::LowStock => "low_stock",
            NotificationKind::SoldOut => "sold_out",
            NotificationKind::OrderConfirmed => "order_confirmed",
            NotificationKind::OrderExpired => "order_expired",
            NotificationKind::WaitlistOffer => "waitlist_offer",
            NotificationKind::WaitlistSkipped => "waitlist_skipped",
            NotificationKind::WaitlistClosed => "waitlist_closed",
            NotificationKind::DrawWon => "draw_won",
            NotificationKind::DrawLost => "draw_lost",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "drop_scheduled" => Some(NotificationKind::DropScheduled),
            "drop_live" => Some(NotificationKind::DropLive),
            "low_stock" => Some(NotificationKind::LowStock),
            "sold_out" => Some(NotificationKind::SoldOut),
            "order_confirmed" => Some(NotificationKind::OrderConfirmed),
            "order_expired" => Some(NotificationKind::OrderExpired),
            "waitlist_offer" => Some(NotificationKind::WaitlistOffer),
            "waitlist_skipped" => Some(NotificationKind::WaitlistSkipped),
            "waitlist_closed" => Some(NotificationKind::WaitlistClosed),
            "draw_won" => Some(NotificationKind::DrawWon),
            "draw_lost" => Some(NotificationKind::DrawLost),
            _ => None,
        }
    }
}

/// A message for one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Id.
    pub id: NotificationId,
    /// Recipient.
    pub user_id: UserId,
    /// Kind.
    pub kind: NotificationKind,
    /// Kind-specific data.
    pub payload: serde_json::Value,
    /// Deduplication key: one notification per (user, key), so re-delivered events
    /// never notify twice.
    pub dedup_key: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// When the recipient read it.
    pub read_at: Option<Timestamp>,
}

impl Notification {
    /// The keyset position of this notification.
    pub fn cursor(&self) -> Cursor {
        Cursor::new(self.created_at, self.id.0)
    }
}

/// One batch of a fan-out: a notification for each of up to `limit` followers of
/// `creator_id` in `shard`, in follower id order, starting after `after`.
///
/// Id order, not the followers listing's newest-first order: a batch then notifies
/// one stretch of user ids, so its rows land in one stretch of every index of the
/// notifications led by the user, where newest-first order would scatter each batch
/// over all of them (on PostgreSQL a million-follower fan-out took twice as long
/// into a table that already held a notification per follower).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanOutBatch {
    /// Whose followers.
    pub creator_id: UserId,
    /// The notification kind.
    pub kind: NotificationKind,
    /// The notification payload.
    pub payload: serde_json::Value,
    /// Per-recipient deduplication key.
    pub dedup_key: String,
    /// Resume after this follower: the last one the previous batch of the walk
    /// visited.
    pub after: Option<UserId>,
    /// Followers per batch.
    pub limit: u32,
    /// Creation time of the notifications.
    pub at: Timestamp,
    /// The part of the audience the batch walks ([`FanOutShard::WHOLE`]: every
    /// follower). `after` is a position in this shard's walk.
    pub shard: FanOutShard,
}

/// A part of a creator's audience that a fan-out walks on its own, with its own
/// cursor: the followers whose [`FanOutShard::of`] is this shard's index. The shards
/// of one [`FanOutShard::split`] are disjoint and together hold every follower, so
/// they can be walked at once without two batches ever visiting the same follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FanOutShard {
    index: u32,
    count: u32,
}

impl FanOutShard {
    /// The whole audience, one walk.
    pub const WHOLE: Self = Self { index: 0, count: 1 };

    /// The audience cut in `count` shards (`0` counts as `1`), in index order.
    pub fn split(count: u32) -> impl Iterator<Item = Self> {
        let count = count.max(1);
        (0..count).map(move |index| Self { index, count })
    }

    /// Which shard this is, `0..count`.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// How many shards the audience is cut in.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The index of the shard holding `follower` when the audience is cut in `count`
    /// (`0` counts as `1`): the last two bytes of its id read as a big-endian number,
    /// modulo `count`. Every store computes exactly this (PostgreSQL in SQL), so the
    /// shards mean the same followers whichever store walks them.
    pub fn of(follower: UserId, count: u32) -> u32 {
        let bytes = follower.0.as_bytes();
        u32::from(u16::from_be_bytes([bytes[14], bytes[15]])) % count.max(1)
    }

    /// Whether `follower` is in this shard.
    pub fn contains(&self, follower: UserId) -> bool {
        self.count <= 1 || Self::of(follower, self.count) == self.index
    }
}

/// How far a fan-out batch went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanOutProgress {
    /// Followers visited in this batch.
    pub scanned: u32,
    /// Notifications inserted (followers already notified for the key are skipped).
    pub inserted: u32,
    /// The last follower visited, where the next batch starts after; `None` when
    /// every follower was visited.
    pub next: Option<UserId>,
}

/// Why stock moved outside an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    /// The drop was created with its initial stock.
    Initial,
    /// Units added.
    Restock,
    /// Units removed from what is available.
    Shrink,
}

impl LedgerKind {
    /// The kind's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerKind::Initial => "initial",
            LedgerKind::Restock => "restock",
            LedgerKind::Shrink => "shrink",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "initial" => Some(LedgerKind::Initial),
            "restock" => Some(LedgerKind::Restock),
            "shrink" => Some(LedgerKind::Shrink),
            _ => None,
        }
    }
}

/// An audit record of a stock movement outside orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Id.
    pub id: Uuid,
    /// The drop.
    pub drop_id: DropId,
    /// The variant whose stock moved.
    #[serde(default = "default_sku")]
    pub sku: String,
    /// Kind.
    pub kind: LedgerKind,
    /// Signed change of `total` (and of `available`).
    pub delta: i64,
    /// Why, as the operator wrote it.
    pub reason: String,
    /// Who did it, when known.
    pub actor_id: Option<UserId>,
    /// The variant's stock right after the movement.
    pub stock_after: Stock,
    /// When.
    pub created_at: Timestamp,
}

impl LedgerEntry {
    /// The keyset position of this entry.
    pub fn cursor(&self) -> Cursor {
        Cursor::new(self.created_at, self.id)
    }
}

/// A stock movement outside orders, as requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjustment {
    /// The drop.
    pub drop_id: DropId,
    /// The variant whose stock moves.
    pub sku: String,
    /// Positive restocks, negative shrinks available stock.
    pub delta: i64,
    /// Why.
    pub reason: String,
    /// Who.
    pub actor_id: Option<UserId>,
    /// Id of the ledger entry to write.
    pub entry_id: Uuid,
    /// When.
    pub at: Timestamp,
    /// The hold of orders a restock hands to the variant's waitlist.
    pub hold: chrono::Duration,
}

impl Adjustment {
    /// The ledger entry this adjustment writes, given the drop's stock right after it:
    /// a restock when `delta` is zero or more, a shrink below.
    pub fn ledger_entry(&self, stock_after: Stock) -> LedgerEntry {
        LedgerEntry {
            id: self.entry_id,
            drop_id: self.drop_id,
            sku: self.sku.clone(),
            kind: if self.delta >= 0 {
                LedgerKind::Restock
            } else {
                LedgerKind::Shrink
            },
            delta: self.delta,
            reason: self.reason.clone(),
            actor_id: self.actor_id,
            stock_after,
            created_at: self.at,
        }
    }
}

/// What the store did with an adjustment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdjustOutcome {
    /// Applied and recorded.
    Applied(LedgerEntry),
    /// A shrink larger than what is available; nothing changed.
    Insufficient {
        /// Units available when checked.
        available: u32,
    },
    /// No such drop.
    DropNotFound,
    /// The drop does not sell `adjustment.sku`.
    UnknownVariant,
}

/// A buyer waiting for units of a sold-out variant (first-come drops).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitlistEntry {
    /// The drop.
    pub drop_id: DropId,
    /// The variant waited for.
    pub sku: String,
    /// Who waits: one entry per buyer and drop.
    pub user_id: UserId,
    /// Units wanted; an offer may hold fewer.
    pub quantity: u32,
    /// When the buyer took this place (joining again with the same sku keeps it).
    pub joined_at: Timestamp,
    /// The place in the variant's line when read: 1 is served first.
    pub position: u64,
}

/// A request to wait for a variant, as the service checked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitlistJoin {
    /// The drop.
    pub drop_id: DropId,
    /// The variant.
    pub sku: String,
    /// Who.
    pub user_id: UserId,
    /// Units wanted, at least 1.
    pub quantity: u32,
    /// When.
    pub at: Timestamp,
}

/// What the store did with a [`WaitlistJoin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    /// Waiting (a new place, or the buyer's place kept with the new quantity).
    Joined(WaitlistEntry),
    /// No such drop.
    DropNotFound,
    /// The drop does not sell the sku.
    UnknownVariant,
    /// The drop does not take orders at the join's instant.
    NotLive,
    /// The variant has units anyone may order now: buy them instead.
    VariantAvailable {
        /// Units available when checked.
        available: u32,
    },
    /// The buyer already holds so much that an offer of `quantity` would pass the limit.
    LimitExceeded {
        /// The drop's limit.
        limit: u32,
        /// Units the buyer holds (reserved plus confirmed).
        held: u32,
    },
}

/// What serving a variant's waitlist does with one entry ([`plan_handoff`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handoff {
    /// The entry gets a reserved order of `quantity` units and ends.
    Offer {
        /// The entry served.
        entry: WaitlistEntry,
        /// Units offered: as many as were free, up to the entry's quantity.
        quantity: u32,
    },
    /// The per-user limit refuses the offer: the entry ends without one.
    Skip {
        /// The entry ended.
        entry: WaitlistEntry,
        /// The drop's limit.
        limit: u32,
        /// Units the buyer held.
        held: u32,
    },
}

/// Serving a variant's waitlist with `free` units that just came back: entries in join
/// order, each with the units its buyer holds in the drop (reserved plus confirmed).
/// Each entry is offered as many units as are free up to its quantity, or skipped when
/// the offer would take its buyer past `per_user_limit`, until no unit is free. What
/// is not offered stays available. Every store decides a hand-off with this, in the
/// same atomic step as the movement that freed the units.
pub fn plan_handoff(
    mut free: u32,
    per_user_limit: u32,
    waiting: impl IntoIterator<Item = (WaitlistEntry, u32)>,
) -> Vec<Handoff> {
    let mut plan = Vec::new();
    for (entry, held) in waiting {
        if free == 0 {
            break;
        }
        let quantity = free.min(entry.quantity);
        if u64::from(held) + u64::from(quantity) > u64::from(per_user_limit) {
            plan.push(Handoff::Skip {
                entry,
                limit: per_user_limit,
                held,
            });
            continue;
        }
        free -= quantity;
        plan.push(Handoff::Offer { entry, quantity });
    }
    plan
}

impl Order {
    /// The reserved order a waitlist hand-off gives `entry`'s buyer: `quantity` units
    /// of its variant at the drop's price, held for `hold` from `now`, under the
    /// idempotency key `waitlist:<order id>` (a fresh id, so never a buyer's own key).
    pub fn waitlist_offer(
        drop: &Drop,
        entry: &WaitlistEntry,
        quantity: u32,
        now: Timestamp,
        hold: chrono::Duration,
    ) -> Order {
        let id = OrderId::new();
        Order {
            id,
            user_id: entry.user_id,
            drop_id: drop.id,
            sku: entry.sku.clone(),
            quantity,
            unit_price_cents: drop.price_cents,
            total_cents: drop.price_cents.saturating_mul(i64::from(quantity)),
            currency: drop.currency.clone(),
            status: OrderStatus::Reserved,
            idempotency_key: format!("waitlist:{id}"),
            fingerprint: WAITLIST_FINGERPRINT.to_owned(),
            reserved_until: crate::clock::truncate(now + hold),
            created_at: now,
            updated_at: now,
            extended_at: None,
        }
    }
}

/// The fingerprint of an order a waitlist hand-off placed.
pub const WAITLIST_FINGERPRINT: &str = "waitlist";

/// Where a draw entry stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrawResult {
    /// Not drawn yet.
    #[default]
    Pending,
    /// Won: `order_id` holds its units for the payment window.
    Won,
    /// Not allocated (yet: units a winner gives back go to the next in rank).
    Lost,
}

impl DrawResult {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DrawResult::Pending => "pending",
            DrawResult::Won => "won",
            DrawResult::Lost => "lost",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DrawResult::Pending),
            "won" => Some(DrawResult::Won),
            "lost" => Some(DrawResult::Lost),
            _ => None,
        }
    }
}

/// A buyer's entry in a draw: one per buyer and drop.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DrawEntry {
    /// The drop.
    pub drop_id: DropId,
    /// The buyer.
    pub user_id: UserId,
    /// The variant wanted.
    pub sku: String,
    /// Units wanted (all or nothing).
    pub quantity: u32,
    /// The random public entry token (32 lower-case hex characters), kept when the
    /// entry is replaced.
    pub token: String,
    /// When entered (or last replaced).
    pub entered_at: Timestamp,
    /// Where it stands.
    pub result: DrawResult,
    /// Its rank once drawn (1 first).
    pub rank: Option<u64>,
    /// The order a win placed.
    pub order_id: Option<OrderId>,
}

impl DrawEntry {
    /// A fresh public entry token: 16 random bytes as 32 lower-case hex characters.
    pub fn new_token() -> String {
        hex::encode(rand::random::<[u8; 16]>())
    }
}

/// A request to enter (or replace an entry in) a draw, as the service checked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrawEntryRequest {
    /// The drop.
    pub drop_id: DropId,
    /// The buyer.
    pub user_id: UserId,
    /// The variant.
    pub sku: String,
    /// Units, at least 1.
    pub quantity: u32,
    /// The token a new entry gets (a replaced entry keeps its own).
    pub token: String,
    /// When.
    pub at: Timestamp,
}

/// What the store did with a [`DrawEntryRequest`] or a withdrawal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryOutcome {
    /// Entered, replaced (same token), or withdrawn (the entry as it was).
    Done(DrawEntry),
    /// No such drop.
    DropNotFound,
    /// The drop is not a draw.
    NotDraw,
    /// The drop does not sell the sku.
    UnknownVariant,
    /// Outside `[starts_at, entries_close_at)`, or drawn, or the drop is cancelled.
    EntriesClosed,
    /// More units than the per-user limit.
    LimitExceeded {
        /// The drop's limit.
        limit: u32,
    },
    /// (Withdrawal) the buyer has no entry.
    NoEntry,
}

/// What running a draw did.
// Returned once per draw run: boxing the drawn drop would save nothing worth a
// pointer chase for its readers.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrawOutcome {
    /// This call ran the draw: the drop as drawn (seed revealed) and its entries in
    /// rank order with their results.
    Drawn {
        /// The drop after the draw.
        drop: Drop,
        /// Every entry, in rank order.
        entries: Vec<DrawEntry>,
    },
    /// The draw ran before (another process, an earlier call); nothing changed.
    AlreadyDrawn,
    /// Entries are still open, or the drop is not a draw or cancelled; nothing changed.
    NotDue,
    /// No such drop.
    DropNotFound,
}

/// Which ranked entries a draw (or units given back after it) makes winners:
/// `ranked` in rank order, each winning when its variant still has its whole
/// quantity free in `free` (units per variant index, by `variant_of`), which it
/// then takes. Entries already won are skipped. Returns the indexes of the winners
/// in `ranked`, in rank order. Every store decides a draw, and each hand-off after
/// it, with this.
pub fn plan_draw(
    ranked: &[DrawEntry],
    free: &mut [u32],
    variant_of: impl Fn(&str) -> Option<usize>,
) -> Vec<usize> {
    let mut winners = Vec::new();
    for (i, entry) in ranked.iter().enumerate() {
        if entry.result == DrawResult::Won {
            continue;
        }
        let Some(units) = variant_of(&entry.sku).and_then(|v| free.get_mut(v)) else {
            continue;
        };
        if *units >= entry.quantity {
            *units -= entry.quantity;
            winners.push(i);
        }
    }
    winners
}

impl Order {
    /// The reserved order a draw win gives `entry`'s buyer: its whole quantity at the
    /// drop's price, held for `hold` (the payment window) from `now`, under the
    /// idempotency key `draw:<order id>`.
    pub fn draw_win(
        drop: &Drop,
        entry: &DrawEntry,
        now: Timestamp,
        hold: chrono::Duration,
    ) -> Order {
        let id = OrderId::new();
        Order {
            id,
            user_id: entry.user_id,
            drop_id: drop.id,
            sku: entry.sku.clone(),
            quantity: entry.quantity,
            unit_price_cents: drop.price_cents,
            total_cents: drop.price_cents.saturating_mul(i64::from(entry.quantity)),
            currency: drop.currency.clone(),
            status: OrderStatus::Reserved,
            idempotency_key: format!("draw:{id}"),
            fingerprint: DRAW_FINGERPRINT.to_owned(),
            reserved_until: crate::clock::truncate(now + hold),
            created_at: now,
            updated_at: now,
            extended_at: None,
        }
    }
}

/// The fingerprint of an order a draw win placed.
pub const DRAW_FINGERPRINT: &str = "draw";

/// A buyer's place in a drop's waiting room.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QueueEntry {
    /// The drop.
    pub drop_id: DropId,
    /// The buyer.
    pub user_id: UserId,
    /// When the buyer joined.
    pub joined_at: Timestamp,
    /// The place in the queue (1 first). Before the start, among those who joined
    /// so far in their shuffled order, so it may change until the start.
    pub position: u64,
    /// When the buyer is (or was) admitted: before the start, as the position gives
    /// it so far.
    pub admit_at: Timestamp,
}

/// What the store did with a queue join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueOutcome {
    /// In the queue (joining twice keeps the place).
    Joined(QueueEntry),
    /// No such drop.
    DropNotFound,
    /// The drop has no waiting room.
    NoWaitingRoom,
    /// The room is not open yet.
    NotOpen {
        /// When it opens.
        opens_at: Timestamp,
    },
    /// The drop ended or was cancelled.
    Closed,
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn drop_at(start: Timestamp) -> Drop {
        Drop {
            id: DropId::new(),
            product_id: ProductId::new(),
            creator_id: UserId::new(),
            title: "t".into(),
            price_cents: 100,
            currency: "EUR".into(),
            starts_at: start,
            ends_at: start + Duration::hours(1),
            per_user_limit: 2,
            state: DropState::Scheduled,
            created_at: start,
            variants: Variant::only_default(),
            draw: None,
            waiting_room: None,
        }
    }

    fn waiting(quantity: u32) -> WaitlistEntry {
        WaitlistEntry {
            drop_id: DropId::new(),
            sku: "m".into(),
            user_id: UserId::new(),
            quantity,
            joined_at: chrono::DateTime::UNIX_EPOCH,
            position: 1,
        }
    }

    #[test]
    fn a_hand_off_serves_in_line_until_no_unit_is_free() {
        let (a, b, c, d) = (waiting(2), waiting(3), waiting(1), waiting(1));
        let plan = plan_handoff(
            4,
            3,
            [(a.clone(), 0), (b.clone(), 1), (c.clone(), 0), (d, 0)],
        );
        assert_eq!(
            plan,
            vec![
                Handoff::Offer {
                    entry: a,
                    quantity: 2
                },
                // 2 free of the 3 wanted would take B to 3 held: within the limit.
                Handoff::Offer {
                    entry: b,
                    quantity: 2
                },
            ],
            "served in order, the last partly; C and D keep waiting"
        );
        assert!(plan_handoff(0, 5, [(c.clone(), 0)]).is_empty());
    }

    #[test]
    fn a_hand_off_skips_an_entry_the_limit_refuses_and_goes_on() {
        let (a, b) = (waiting(2), waiting(1));
        let plan = plan_handoff(2, 2, [(a.clone(), 1), (b.clone(), 2), (waiting(1), 0)]);
        assert_eq!(plan.len(), 3);
        assert_eq!(
            plan[0],
            Handoff::Skip {
                entry: a,
                limit: 2,
                held: 1
            },
            "2 more would make 3 held, past the limit of 2"
        );
        assert_eq!(
            plan[1],
            Handoff::Skip {
                entry: b,
                limit: 2,
                held: 2
            }
        );
        assert!(matches!(plan[2], Handoff::Offer { quantity: 1, .. }));
        // Exactly at the limit is allowed.
        let at_limit = plan_handoff(1, 2, [(waiting(1), 1)]);
        assert!(matches!(at_limit[..], [Handoff::Offer { quantity: 1, .. }]));
    }

    #[test]
    fn a_sku_resolves_to_the_named_or_the_only_variant() {
        let one = drop_at(chrono::DateTime::UNIX_EPOCH);
        assert_eq!(one.resolve_sku(None), SkuResolution::Found(DEFAULT_SKU));
        assert_eq!(
            one.resolve_sku(Some("default")),
            SkuResolution::Found("default")
        );
        assert_eq!(one.resolve_sku(Some("m")), SkuResolution::Unknown);
        let sized = Drop {
            variants: vec![Variant::new("s", "Small"), Variant::new("m", "Medium")],
            ..one
        };
        assert_eq!(sized.resolve_sku(None), SkuResolution::Required);
        assert_eq!(sized.resolve_sku(Some("m")), SkuResolution::Found("m"));
        assert_eq!(sized.resolve_sku(Some("xl")), SkuResolution::Unknown);
        assert_eq!(sized.variant("s").map(|v| v.label.as_str()), Some("Small"));
    }

    #[test]
    fn a_sku_is_one_to_64_of_letters_digits_dot_dash_underscore() {
        for good in ["a", "EU-42.5_w", &"x".repeat(64)] {
            assert!(Variant::is_valid_sku(good), "{good}");
        }
        for bad in ["", "a b", "é", "a/b", &"x".repeat(65), "a\0"] {
            assert!(!Variant::is_valid_sku(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_draw_commits_to_its_seed_and_ranks_by_it() {
        let seed = Draw::new_seed();
        assert_eq!(seed.len(), 64);
        let commitment = Draw::commitment_of(&seed);
        assert_eq!(commitment.len(), 64);
        assert_ne!(commitment, Draw::commitment_of(&Draw::new_seed()));
        // sha256("abc") in hex: the commitment is the digest of the seed's text.
        assert_eq!(
            Draw::commitment_of("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Draw::rank_key("abc", "x"), Draw::commitment_of("abc:x"));
        let entry = |token: &str| DrawEntry {
            drop_id: DropId::new(),
            user_id: UserId::new(),
            sku: "m".into(),
            quantity: 1,
            token: token.into(),
            entered_at: chrono::DateTime::UNIX_EPOCH,
            result: DrawResult::Pending,
            rank: None,
            order_id: None,
        };
        let ranked = Draw::ranked("abc", vec![entry("a"), entry("b"), entry("c")]);
        let mut want: Vec<(String, &str)> = ["a", "b", "c"]
            .into_iter()
            .map(|t| (Draw::rank_key("abc", t), t))
            .collect();
        want.sort();
        assert_eq!(
            ranked.iter().map(|e| e.token.as_str()).collect::<Vec<_>>(),
            want.iter().map(|(_, t)| *t).collect::<Vec<_>>()
        );
        assert_eq!(
            ranked.iter().map(|e| e.rank).collect::<Vec<_>>(),
            vec![Some(1), Some(2), Some(3)]
        );
    }

    #[test]
    fn a_draw_awards_whole_quantities_in_rank_order() {
        let entry = |sku: &str, quantity: u32, result: DrawResult| DrawEntry {
            drop_id: DropId::new(),
            user_id: UserId::new(),
            sku: sku.into(),
            quantity,
            token: String::new(),
            entered_at: chrono::DateTime::UNIX_EPOCH,
            result,
            rank: None,
            order_id: None,
        };
        let ranked = [
            entry("s", 2, DrawResult::Pending),
            entry("s", 2, DrawResult::Pending),
            entry("s", 1, DrawResult::Pending),
            entry("m", 1, DrawResult::Won),
            entry("m", 1, DrawResult::Pending),
            entry("xl", 1, DrawResult::Pending),
        ];
        let mut free = [3, 1];
        let variant = |sku: &str| match sku {
            "s" => Some(0),
            "m" => Some(1),
            _ => None,
        };
        assert_eq!(
            plan_draw(&ranked, &mut free, variant),
            vec![0, 2, 4],
            "the second 2 does not fit in the 1 left; a won entry is passed over"
        );
        assert_eq!(free, [0, 0]);
    }

    #[test]
    fn a_waiting_room_spaces_admissions_by_its_rate() {
        let room = WaitingRoom {
            admit_per_minute: 120,
            token_seconds: 60,
            opens_minutes_before: 10,
        };
        let t0 = chrono::DateTime::UNIX_EPOCH + Duration::days(1);
        assert_eq!(room.interval(), Duration::milliseconds(500));
        assert_eq!(room.opens_at(t0), t0 - Duration::minutes(10));
        assert_eq!(room.pre_queue_slot(t0, 1), t0);
        assert_eq!(room.pre_queue_slot(t0, 3), t0 + Duration::seconds(1));
        assert_eq!(room.next_slot(None, t0, t0 - Duration::seconds(5)), t0);
        assert_eq!(
            room.next_slot(Some(t0 + Duration::seconds(1)), t0, t0),
            t0 + Duration::milliseconds(1500)
        );
        assert_eq!(
            room.next_slot(Some(t0), t0, t0 + Duration::seconds(9)),
            t0 + Duration::seconds(9),
            "not before the join"
        );
    }

    #[test]
    fn a_drop_view_sums_its_variants() {
        let drop = Drop {
            variants: vec![Variant::new("s", ""), Variant::new("m", "")],
            ..drop_at(chrono::DateTime::UNIX_EPOCH)
        };
        let s = Stock {
            total: 3,
            available: 1,
            reserved: 1,
            sold: 1,
        };
        let view = DropView::new(drop, vec![s, Stock::new(4)]);
        assert_eq!(
            view.stock,
            Stock {
                total: 7,
                available: 5,
                reserved: 1,
                sold: 1
            }
        );
        assert_eq!(view.stock_of("m"), Some(Stock::new(4)));
        assert_eq!(view.stock_of("xl"), None);
        assert_eq!(view.variants().count(), 2);
    }

    #[test]
    fn a_waitlist_offer_is_a_fresh_reserved_order_at_the_drop_price() {
        let t0 = crate::clock::truncate(chrono::Utc::now());
        let drop = drop_at(t0);
        let entry = waiting(3);
        let order = Order::waitlist_offer(&drop, &entry, 2, t0, Duration::minutes(10));
        assert_eq!(
            (order.quantity, order.total_cents, order.status),
            (2, 200, OrderStatus::Reserved)
        );
        assert_eq!((order.user_id, order.sku.as_str()), (entry.user_id, "m"));
        assert_eq!(order.reserved_until, t0 + Duration::minutes(10));
        assert_eq!(order.idempotency_key, format!("waitlist:{}", order.id));
        let again = Order::waitlist_offer(&drop, &entry, 2, t0, Duration::minutes(10));
        assert_ne!(again.idempotency_key, order.idempotency_key);
    }

    #[test]
    fn an_extension_is_decided_by_status_then_time_then_once() {
        let t0 = crate::clock::truncate(chrono::Utc::now());
        let hold = Duration::minutes(10);
        let order = Order {
            id: OrderId::new(),
            user_id: UserId::new(),
            drop_id: DropId::new(),
            sku: DEFAULT_SKU.into(),
            quantity: 1,
            unit_price_cents: 100,
            total_cents: 100,
            currency: "EUR".into(),
            status: OrderStatus::Reserved,
            idempotency_key: "k".into(),
            fingerprint: "f".into(),
            reserved_until: t0 + hold,
            created_at: t0,
            updated_at: t0,
            extended_at: None,
        };
        let later = t0 + Duration::minutes(9);
        let extended = Order {
            reserved_until: t0 + hold + hold,
            extended_at: Some(later),
            ..order.clone()
        };
        assert_eq!(
            order.extension(hold, later),
            ExtendOutcome::Extended(extended.clone())
        );
        assert_eq!(
            extended.extension(hold, later),
            ExtendOutcome::AlreadyExtended(extended.clone())
        );
        // At the end of the hold, expired comes before extended.
        assert_eq!(
            extended.extension(hold, extended.reserved_until),
            ExtendOutcome::HoldExpired(extended.clone())
        );
        assert_eq!(
            order.extension(hold, order.reserved_until),
            ExtendOutcome::HoldExpired(order.clone())
        );
        for (status, want) in [
            (OrderStatus::Expired, "hold expired"),
            (OrderStatus::Confirmed, "not reserved"),
            (OrderStatus::Cancelled, "not reserved"),
        ] {
            let settled = Order {
                status,
                ..order.clone()
            };
            let got = match settled.extension(hold, t0) {
                ExtendOutcome::HoldExpired(o) if o == settled => "hold expired",
                ExtendOutcome::NotReserved(o) if o == settled => "not reserved",
                other => panic!("{status:?}: {other:?}"),
            };
            assert_eq!(got, want, "{status:?}");
        }
        let forever = Order {
            reserved_until: chrono::DateTime::<chrono::Utc>::MAX_UTC - Duration::minutes(1),
            ..order.clone()
        };
        match forever.extension(hold, t0) {
            ExtendOutcome::Extended(o) => assert!(o.reserved_until > forever.reserved_until),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn status_follows_the_clock_and_the_stock() {
        let t0 = chrono::Utc::now();
        let mut drop = drop_at(t0);
        let stock = Stock::new(3);
        assert_eq!(
            drop.status_at(t0 - Duration::seconds(1), &stock),
            DropStatus::Scheduled
        );
        assert_eq!(drop.status_at(t0, &stock), DropStatus::Live);
        let empty = Stock {
            available: 0,
            reserved: 1,
            sold: 2,
            total: 3,
        };
        assert_eq!(drop.status_at(t0, &empty), DropStatus::SoldOut);
        assert_eq!(drop.status_at(drop.ends_at, &stock), DropStatus::Ended);
        assert!(drop.accepts_orders_at(t0) && !drop.accepts_orders_at(drop.ends_at));
        drop.state = DropState::Cancelled;
        assert_eq!(drop.status_at(t0, &stock), DropStatus::Cancelled);
        assert!(!drop.accepts_orders_at(t0));
    }

    #[test]
    fn stock_invariant() {
        assert!(Stock::new(5).is_consistent());
        let broken = Stock {
            total: 5,
            available: 5,
            reserved: 1,
            sold: 0,
        };
        assert!(!broken.is_consistent());
    }

    #[test]
    fn wire_names_round_trip() {
        for s in ["scheduled", "live", "sold_out", "ended", "cancelled"] {
            assert_eq!(DropStatus::parse(s).map(DropStatus::as_str), Some(s));
        }
        for s in ["reserved", "confirmed", "cancelled", "expired"] {
            assert_eq!(OrderStatus::parse(s).map(OrderStatus::as_str), Some(s));
        }
        for s in ["customer", "creator", "admin"] {
            assert_eq!(Role::parse(s).map(Role::as_str), Some(s));
        }
        assert_eq!(DropStatus::parse("bogus"), None);
    }

    #[test]
    fn search_matches_every_term_in_title_or_description() {
        let t0 = chrono::Utc::now();
        let product = Product {
            id: ProductId::new(),
            creator_id: UserId::new(),
            title: "Blue Hoodie".into(),
            description: "Organic cotton".into(),
            price_cents: 1,
            currency: "EUR".into(),
            image_url: None,
            created_at: t0,
            updated_at: t0,
            version: 1,
        };
        let f = ProductFilter::default().with_query("  hoodie  COTTON ");
        assert!(product.matches(&f.terms));
        assert!(!product.matches(&ProductFilter::default().with_query("hoodie wool").terms));
    }
}
