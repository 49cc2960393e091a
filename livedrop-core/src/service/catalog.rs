//! Products and drops: create, update, schedule, cancel, and cached reads.

use serde::{Deserialize, Serialize};

use super::{require_owner, Livedrop};
use crate::cache::{self, DROP_LISTINGS, PRODUCT_LISTINGS};
use crate::clock::Timestamp;
use crate::error::{Error, Result, StoreError};
use crate::event::{Event, EventType};
use crate::id::{DropId, ProductId};
use crate::model::{
    Actor, Allocation, Draw, Drop, DropFilter, DropState, DropView, Product, ProductFilter, Role,
    Stock, Variant, WaitingRoom, DEFAULT_SKU,
};
use crate::page::{Page, PageRequest};
use crate::ports::UpdateOutcome;

/// The most units one drop may hold.
pub(crate) const MAX_STOCK: u32 = 10_000_000;

/// A new product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewProduct {
    /// Title, 1 to 200 characters.
    pub title: String,
    /// Description, up to 5,000 characters.
    pub description: String,
    /// Price in minor units, non-negative.
    pub price_cents: i64,
    /// ISO-4217 code (three letters).
    pub currency: String,
    /// An http(s) address of the image on a CDN.
    pub image_url: Option<String>,
}

/// Changes to a product; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductPatch {
    /// New title.
    pub title: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New price.
    pub price_cents: Option<i64>,
    /// New currency.
    pub currency: Option<String>,
    /// New image address; `Some(None)` removes it.
    pub image_url: Option<Option<String>>,
    /// Apply only if the product is at this version (optimistic concurrency).
    pub expected_version: Option<i64>,
}

/// A new drop of a product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDrop {
    /// The product released.
    pub product_id: ProductId,
    /// Start; `None` means now.
    pub starts_at: Option<Timestamp>,
    /// End (exclusive); after the start and in the future.
    pub ends_at: Timestamp,
    /// Units, 1 to 10,000,000, of the drop's one variant ([`DEFAULT_SKU`]); 0 when
    /// `variants` are given instead.
    #[serde(default)]
    pub total_stock: u32,
    /// The variants sold, 1 to 100, each with its own stock; empty for a drop of one
    /// stock (`total_stock`).
    #[serde(default)]
    pub variants: Vec<NewVariant>,
    /// Most units one buyer may hold across all variants; `None` means no limit
    /// beyond the stock.
    pub per_user_limit: Option<u32>,
    /// First come (the default) or draw.
    #[serde(default)]
    pub allocation: Allocation,
    /// A draw's entry close: after the start, before the end. Required for a draw,
    /// refused otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries_close_at: Option<Timestamp>,
    /// A waiting room in front of a first-come drop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_room: Option<WaitingRoom>,
}

/// The draw record a new drop gets, with its secret seed, or `None` for a
/// first-come drop, checked.
fn check_draw(
    new: &NewDrop,
    (starts_at, ends_at): (Timestamp, Timestamp),
) -> Result<Option<(Draw, String)>> {
    match (new.allocation, new.entries_close_at) {
        (Allocation::FirstCome, None) => Ok(None),
        (Allocation::FirstCome, Some(_)) => Err(Error::invalid(
            "entries_close_at",
            "entries_close_at is for draw drops only",
        )),
        (Allocation::Draw, None) => Err(Error::invalid(
            "entries_close_at",
            "a draw drop needs entries_close_at",
        )),
        (Allocation::Draw, Some(close)) => {
            let close = crate::clock::truncate(close);
            if close <= starts_at || close >= ends_at {
                return Err(Error::invalid(
                    "entries_close_at",
                    "entries_close_at must be after starts_at and before ends_at",
                ));
            }
            if new.waiting_room.is_some() {
                return Err(Error::invalid(
                    "waiting_room",
                    "a waiting room is for first-come drops only",
                ));
            }
            let seed = Draw::new_seed();
            let draw = Draw {
                entries_close_at: close,
                commitment: Draw::commitment_of(&seed),
                seed: None,
                drawn_at: None,
            };
            Ok(Some((draw, seed)))
        }
    }
}

/// A new drop's waiting room, checked.
fn check_waiting_room(room: Option<WaitingRoom>) -> Result<Option<WaitingRoom>> {
    let Some(room) = room else {
        return Ok(None);
    };
    if !(1..=60_000).contains(&room.admit_per_minute) {
        return Err(Error::invalid(
            "waiting_room",
            "admit_per_minute must be 1 to 60000",
        ));
    }
    if !(10..=86_400).contains(&room.token_seconds) {
        return Err(Error::invalid(
            "waiting_room",
            "token_seconds must be 10 to 86400",
        ));
    }
    if room.opens_minutes_before > 10_080 {
        return Err(Error::invalid(
            "waiting_room",
            "opens_minutes_before must be at most 10080 (a week)",
        ));
    }
    Ok(Some(room))
}

/// A variant of a new drop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewVariant {
    /// 1 to 64 characters of `[A-Za-z0-9._-]`, unique within the drop.
    pub sku: String,
    /// What buyers read, up to 200 characters; may be empty.
    #[serde(default)]
    pub label: String,
    /// Units, 1 to 10,000,000.
    pub total_stock: u32,
}

/// The most variants one drop offers.
pub const MAX_VARIANTS: usize = 100;

/// The variants and their initial stock a new drop asks for, checked.
fn check_variants(new: &NewDrop) -> Result<(Vec<Variant>, Vec<u32>)> {
    let requested: Vec<NewVariant> = match (new.total_stock, new.variants.is_empty()) {
        (0, true) => {
            return Err(Error::invalid(
                "total_stock",
                "total_stock must be 1 to 10000000 (or give variants)",
            ))
        }
        (total, true) => vec![NewVariant {
            sku: DEFAULT_SKU.to_owned(),
            label: String::new(),
            total_stock: total,
        }],
        (0, false) => new.variants.clone(),
        (_, false) => {
            return Err(Error::invalid(
                "variants",
                "give either total_stock or variants, not both",
            ))
        }
    };
    if requested.len() > MAX_VARIANTS {
        return Err(Error::invalid("variants", "a drop has 1 to 100 variants"));
    }
    let mut seen = std::collections::HashSet::new();
    let mut variants = Vec::with_capacity(requested.len());
    let mut stock = Vec::with_capacity(requested.len());
    for v in requested {
        if !Variant::is_valid_sku(&v.sku) {
            return Err(Error::invalid(
                "variants",
                format!(
                    "sku {:?} must be 1 to 64 characters of letters, digits, '.', '_' and '-'",
                    v.sku.chars().take(80).collect::<String>()
                ),
            ));
        }
        if !seen.insert(v.sku.clone()) {
            return Err(Error::invalid(
                "variants",
                format!(
                    "sku {:?} appears twice; skus are unique within a drop",
                    v.sku
                ),
            ));
        }
        crate::text::check_line("label", &v.label)?;
        let label = v.label.trim();
        if label.chars().count() > 200 {
            return Err(Error::invalid(
                "label",
                "label must be at most 200 characters",
            ));
        }
        if v.total_stock == 0 || v.total_stock > MAX_STOCK {
            return Err(Error::invalid(
                "total_stock",
                "total_stock must be 1 to 10000000",
            ));
        }
        variants.push(Variant::new(v.sku, label));
        stock.push(v.total_stock);
    }
    Ok((variants, stock))
}

fn check_title(title: &str) -> Result<String> {
    crate::text::check_line("title", title)?;
    let title = title.trim();
    if title.is_empty() || title.chars().count() > 200 {
        return Err(Error::invalid("title", "title must be 1 to 200 characters"));
    }
    Ok(title.to_owned())
}

fn check_description(description: &str) -> Result<String> {
    crate::text::check_text("description", description)?;
    if description.chars().count() > 5_000 {
        return Err(Error::invalid(
            "description",
            "description must be at most 5000 characters",
        ));
    }
    Ok(description.to_owned())
}

fn check_price(price_cents: i64) -> Result<i64> {
    if !(0..=1_000_000_000_000).contains(&price_cents) {
        return Err(Error::invalid(
            "price_cents",
            "price_cents must be between 0 and 10^12",
        ));
    }
    Ok(price_cents)
}

fn check_currency(currency: &str) -> Result<String> {
    let currency = currency.trim().to_uppercase();
    if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(Error::invalid(
            "currency",
            "currency must be a three-letter ISO-4217 code",
        ));
    }
    Ok(currency)
}

fn check_image_url(url: Option<String>) -> Result<Option<String>> {
    match url {
        None => Ok(None),
        Some(url) => {
            let ok = url.len() <= 2048
                && (url.starts_with("https://") || url.starts_with("http://"))
                && url
                    .split_once("://")
                    .is_some_and(|(_, rest)| !rest.is_empty())
                && !url.chars().any(|c| c.is_whitespace() || c.is_control());
            if ok {
                Ok(Some(url))
            } else {
                Err(Error::invalid(
                    "image_url",
                    "image_url must be an http(s) address",
                ))
            }
        }
    }
}

fn require_seller(actor: &Actor) -> Result<()> {
    match actor.role {
        Role::Creator | Role::Admin => Ok(()),
        Role::Customer => Err(Error::forbidden("only creators can sell")),
    }
}

impl Livedrop {
    /// Creates a product owned by the actor (a creator or an admin).
    pub async fn create_product(&self, actor: &Actor, new: NewProduct) -> Result<Product> {
        require_seller(actor)?;
        let now = self.now();
        let keyed = super::idempotency::keyed_id("product").map(ProductId);
        let product = Product {
            id: keyed.unwrap_or_default(),
            creator_id: actor.id,
            title: check_title(&new.title)?,
            description: check_description(&new.description)?,
            price_cents: check_price(new.price_cents)?,
            currency: check_currency(&new.currency)?,
            image_url: check_image_url(new.image_url)?,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        let event = Event::product(EventType::ProductCreated, &product, now);
        match self
            .ports()
            .products
            .insert_product(&product, &[event])
            .await
        {
            Ok(()) => {}
            // An earlier run under this idempotency key created it.
            Err(StoreError::Conflict(_)) if keyed.is_some() => {
                let existing = self.product(product.id).await?;
                require_owner(actor, existing.creator_id, "product")?;
                return Ok(existing);
            }
            Err(e) => return Err(e.into()),
        }
        let ttl = self.config().entity_ttl;
        self.cache()
            .put(&cache::product_key(product.id), &product, ttl)
            .await;
        self.cache().invalidate(&[], &[PRODUCT_LISTINGS]).await;
        Ok(product)
    }

    /// Changes a product (its creator or an admin). Without `expected_version` the
    /// patch applies to whatever version is current.
    pub async fn update_product(
        &self,
        actor: &Actor,
        id: ProductId,
        patch: ProductPatch,
    ) -> Result<Product> {
        for _ in 0..5 {
            let current = self
                .ports()
                .products
                .product(id)
                .await?
                .ok_or_else(|| Error::not_found("product"))?;
            require_owner(actor, current.creator_id, "product")?;
            if let Some(expected) = patch.expected_version {
                if expected != current.version {
                    return Err(Error::VersionConflict {
                        current: current.version,
                    });
                }
            }
            let now = self.now();
            let mut next = current.clone();
            if let Some(title) = &patch.title {
                next.title = check_title(title)?;
            }
            if let Some(description) = &patch.description {
                next.description = check_description(description)?;
            }
            if let Some(price) = patch.price_cents {
                next.price_cents = check_price(price)?;
            }
            if let Some(currency) = &patch.currency {
                next.currency = check_currency(currency)?;
            }
            if let Some(image_url) = &patch.image_url {
                next.image_url = check_image_url(image_url.clone())?;
            }
            next.version = current.version + 1;
            next.updated_at = now.max(current.updated_at);
            let event = Event::product(EventType::ProductUpdated, &next, now);
            match self
                .ports()
                .products
                .update_product(&next, &[event])
                .await?
            {
                UpdateOutcome::Updated => {
                    let ttl = self.config().entity_ttl;
                    self.cache().put(&cache::product_key(id), &next, ttl).await;
                    self.cache().invalidate(&[], &[PRODUCT_LISTINGS]).await;
                    return Ok(next);
                }
                UpdateOutcome::NotFound => return Err(Error::not_found("product")),
                UpdateOutcome::VersionMismatch { current } => {
                    if patch.expected_version.is_some() {
                        return Err(Error::VersionConflict { current });
                    }
                }
            }
        }
        Err(Error::Conflict {
            message: "the product is being changed concurrently; retry".into(),
        })
    }

    /// The product with `id` (cached).
    pub async fn product(&self, id: ProductId) -> Result<Product> {
        let key = cache::product_key(id);
        let ttl = self.config().entity_ttl;
        self.cached_entity(&key, ttl, "product", || self.ports().products.product(id))
            .await
    }

    /// Products matching `filter`, newest first (cached, including searches).
    pub async fn list_products(
        &self,
        filter: ProductFilter,
        page: PageRequest,
    ) -> Result<Page<Product>> {
        if filter.terms.len() > 16 || filter.terms.iter().any(|t| t.chars().count() > 100) {
            return Err(Error::invalid(
                "q",
                "q must have at most 16 terms of at most 100 characters",
            ));
        }
        for term in &filter.terms {
            crate::text::check_line("q", term)?;
        }
        let key = cache::listing_key(
            PRODUCT_LISTINGS,
            &(&filter, page.limit, page.after.map(|c| c.to_string())),
        );
        let ttl = self.config().listing_ttl;
        let products = self.ports().products.clone();
        let page = self
            .cache()
            .get_or_load(&key, ttl, || async move {
                Ok(Some(products.list_products(&filter, page).await?))
            })
            .await?;
        Ok(page.unwrap_or(Page {
            items: vec![],
            next_cursor: None,
        }))
    }

    /// Schedules a drop of one of the actor's products. A drop starting now goes live
    /// at once; a later one goes live at its start by the scheduler.
    pub async fn schedule_drop(&self, actor: &Actor, new: NewDrop) -> Result<DropView> {
        require_seller(actor)?;
        let product = self.product(new.product_id).await?;
        require_owner(actor, product.creator_id, "product")?;
        let now = self.now();
        let starts_at = crate::clock::truncate(new.starts_at.unwrap_or(now));
        let ends_at = crate::clock::truncate(new.ends_at);
        for (field, at) in [("starts_at", starts_at), ("ends_at", ends_at)] {
            if !crate::clock::is_storable(at) {
                return Err(Error::invalid(
                    field,
                    format!("{field} must be between years 1 and 9999"),
                ));
            }
        }
        if ends_at <= starts_at {
            return Err(Error::invalid("ends_at", "ends_at must be after starts_at"));
        }
        if ends_at <= now {
            return Err(Error::invalid("ends_at", "ends_at must be in the future"));
        }
        let (variants, stock) = check_variants(&new)?;
        let per_user_limit = new
            .per_user_limit
            .unwrap_or_else(|| stock.iter().copied().fold(0, u32::saturating_add));
        if per_user_limit == 0 {
            return Err(Error::invalid(
                "per_user_limit",
                "per_user_limit must be at least 1",
            ));
        }
        let draw = check_draw(&new, (starts_at, ends_at))?;
        let waiting_room = check_waiting_room(new.waiting_room)?;
        let keyed = super::idempotency::keyed_id("drop").map(DropId);
        let mut drop = Drop::of_product(
            keyed.unwrap_or_default(),
            &product,
            (starts_at, ends_at),
            per_user_limit,
            DropState::Scheduled,
            now,
            variants,
        );
        drop.waiting_room = waiting_room;
        drop.draw = draw.as_ref().map(|(record, _)| record.clone());
        let event = Event::drop(EventType::DropScheduled, &drop, now);
        let inserted = match &draw {
            Some((_, seed)) => {
                self.ports()
                    .draws
                    .insert_draw_drop(&drop, &stock, seed, &[event])
                    .await
            }
            None => {
                self.ports()
                    .drops
                    .insert_drop(&drop, &stock, &[event])
                    .await
            }
        };
        match inserted {
            Ok(()) => {}
            // An earlier run under this idempotency key scheduled it.
            Err(StoreError::Conflict(_)) if keyed.is_some() => {
                let existing = self.drop_view(drop.id).await?;
                require_owner(actor, existing.drop.creator_id, "drop")?;
                return Ok(existing);
            }
            Err(e) => return Err(e.into()),
        }
        self.cache().invalidate(&[], &[DROP_LISTINGS]).await;
        if starts_at <= now {
            self.advance_drop(&drop, now).await?;
        }
        self.drop_view(drop.id).await
    }

    /// Moves a drop's stored state along the clock, emitting `drop.started` /
    /// `drop.ended`. Safe to race: the store's conditional transition picks one winner.
    pub(super) async fn advance_drop(&self, drop: &Drop, now: Timestamp) -> Result<bool> {
        let (from, to, kind) = match drop.state {
            DropState::Scheduled if now >= drop.ends_at => {
                (DropState::Scheduled, DropState::Ended, EventType::DropEnded)
            }
            DropState::Scheduled if now >= drop.starts_at => (
                DropState::Scheduled,
                DropState::Live,
                EventType::DropStarted,
            ),
            DropState::Live if now >= drop.ends_at => {
                (DropState::Live, DropState::Ended, EventType::DropEnded)
            }
            _ => return Ok(false),
        };
        let mut next = drop.clone();
        next.state = to;
        let event = Event::drop(kind, &next, now);
        let moved = self
            .ports()
            .drops
            .transition(drop.id, &[from], to, &[event])
            .await?;
        if moved {
            tracing::info!(drop = %drop.id, state = to.as_str(), "drop advanced");
            let ttl = self.config().entity_ttl;
            self.cache()
                .put(&cache::drop_key(drop.id), &next, ttl)
                .await;
            self.cache().invalidate(&[], &[DROP_LISTINGS]).await;
        }
        Ok(moved)
    }

    /// Cancels a drop (its creator or an admin). Cancelling again changes nothing;
    /// an ended drop cannot be cancelled. Existing holds run their course.
    pub async fn cancel_drop(&self, actor: &Actor, id: DropId) -> Result<DropView> {
        let drop = self
            .ports()
            .drops
            .drop_by_id(id)
            .await?
            .ok_or_else(|| Error::not_found("drop"))?;
        require_owner(actor, drop.creator_id, "drop")?;
        match drop.state {
            DropState::Cancelled => return self.drop_view(id).await,
            DropState::Ended => {
                return Err(Error::Conflict {
                    message: "the drop has ended and cannot be cancelled".into(),
                })
            }
            DropState::Scheduled | DropState::Live => {}
        }
        let now = self.now();
        let mut next = drop.clone();
        next.state = DropState::Cancelled;
        let event = Event::drop(EventType::DropCancelled, &next, now);
        let moved = self
            .ports()
            .drops
            .transition(
                id,
                &[DropState::Scheduled, DropState::Live],
                DropState::Cancelled,
                &[event],
            )
            .await?;
        self.cache()
            .invalidate(
                &[cache::drop_key(id), cache::stock_key(id)],
                &[DROP_LISTINGS],
            )
            .await;
        let view = self.drop_view(id).await?;
        if !moved && view.drop.state != DropState::Cancelled {
            return Err(Error::Conflict {
                message: "the drop has ended and cannot be cancelled".into(),
            });
        }
        Ok(view)
    }

    /// The drop's definition (cached).
    pub async fn drop_definition(&self, id: DropId) -> Result<Drop> {
        let key = cache::drop_key(id);
        let ttl = self.config().entity_ttl;
        self.cached_entity(&key, ttl, "drop", || self.ports().drops.drop_by_id(id))
            .await
    }

    /// The drop's stock for display, summed over its variants (cached; lags by at
    /// most the stock TTL).
    pub async fn displayed_stock(&self, id: DropId) -> Result<Stock> {
        Ok(Stock::sum(&self.displayed_variant_stock(id).await?))
    }

    /// The stock of each of the drop's variants for display, in `Drop::variants`
    /// order (cached; lags by at most the stock TTL).
    pub async fn displayed_variant_stock(&self, id: DropId) -> Result<Vec<Stock>> {
        let key = cache::stock_key(id);
        let ttl = self.config().stock_ttl;
        self.cached_entity(&key, ttl, "drop", || self.ports().inventory.stock(id))
            .await
    }

    /// One entity through the cache under `key`: `load` from the store on a miss,
    /// `not_found(what)` when it does not exist.
    async fn cached_entity<T, Fut>(
        &self,
        key: &str,
        ttl: std::time::Duration,
        what: &'static str,
        load: impl FnOnce() -> Fut,
    ) -> Result<T>
    where
        T: Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = crate::error::StoreResult<Option<T>>>,
    {
        self.cache()
            .get_or_load(key, ttl, || async move { Ok(load().await?) })
            .await?
            .ok_or_else(|| Error::not_found(what))
    }

    /// The drop with its live stock (both cached).
    pub async fn drop_view(&self, id: DropId) -> Result<DropView> {
        let drop = self.drop_definition(id).await?;
        let stock = self.displayed_variant_stock(id).await?;
        Ok(DropView::new(drop, stock))
    }

    /// Drops passing `filter` now, newest first (cached).
    pub async fn list_drops(
        &self,
        filter: DropFilter,
        page: PageRequest,
    ) -> Result<Page<DropView>> {
        let key = cache::listing_key(
            DROP_LISTINGS,
            &(&filter, page.limit, page.after.map(|c| c.to_string())),
        );
        let ttl = self.config().listing_ttl;
        let drops = self.ports().drops.clone();
        let now = self.now();
        let page = self
            .cache()
            .get_or_load(&key, ttl, || async move {
                Ok(Some(drops.list_drops(&filter, now, page).await?))
            })
            .await?;
        Ok(page.unwrap_or(Page {
            items: vec![],
            next_cursor: None,
        }))
    }
}
