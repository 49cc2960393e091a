//! Builders of domain values for tests: deterministic times, unique emails.

use chrono::{DateTime, TimeDelta};
use uuid::Uuid;

use crate::clock::Timestamp;
use crate::id::{DropId, NotificationId, OrderId, ProductId, UserId};
use crate::model::{self, DropState, Notification, NotificationKind, Order, OrderStatus, Product};
use crate::model::{Role, User};

/// The instant every case is built around: 2030-01-01T00:00:00Z, the same as
/// [`ManualClock::fixed`](crate::clock::ManualClock::fixed).
pub const T0: Timestamp = match DateTime::from_timestamp(1_893_456_000, 0) {
    Some(t) => t,
    None => DateTime::UNIX_EPOCH,
};

/// The default hold of an order: 10 minutes.
pub const HOLD: TimeDelta = TimeDelta::minutes(10);

/// `secs` seconds after [`T0`] (before it when negative).
pub fn at(secs: i64) -> Timestamp {
    T0 + TimeDelta::seconds(secs)
}

/// A user named `name` with a unique lower-case email, registered at [`T0`].
pub fn user(name: &str, role: Role) -> User {
    User {
        id: UserId::new(),
        email: format!(
            "{}-{}@example.com",
            name.to_lowercase(),
            Uuid::new_v4().simple()
        ),
        display_name: name.to_owned(),
        role,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        created_at: T0,
    }
}

/// A product of `creator` created (and last updated) at `created_at`, version 1.
pub fn product(creator: UserId, title: &str, description: &str, created_at: Timestamp) -> Product {
    Product {
        id: ProductId::new(),
        creator_id: creator,
        title: title.to_owned(),
        description: description.to_owned(),
        price_cents: 2_500,
        currency: "EUR".to_owned(),
        image_url: Some("https://cdn.example.com/p.jpg".to_owned()),
        created_at,
        updated_at: created_at,
        version: 1,
    }
}

/// A drop of `product` open for orders in `[starts_at, ends_at)`.
pub fn drop_of(
    product: &Product,
    starts_at: Timestamp,
    ends_at: Timestamp,
    per_user_limit: u32,
    state: DropState,
    created_at: Timestamp,
) -> model::Drop {
    model::Drop::of_product(
        DropId::new(),
        product,
        (starts_at, ends_at),
        per_user_limit,
        state,
        created_at,
        model::Variant::only_default(),
    )
}

/// The same drop selling `skus` (labelled like their skus) instead of one variant.
pub fn with_variants(drop: model::Drop, skus: &[&str]) -> model::Drop {
    model::Drop {
        variants: skus
            .iter()
            .map(|sku| model::Variant::new(*sku, sku.to_uppercase()))
            .collect(),
        ..drop
    }
}

/// A drop live at [`T0`] (from an hour before to an hour after, created two hours
/// before) of a product and creator that are not stored: for tests of orders alone.
pub fn live_drop(per_user_limit: u32) -> model::Drop {
    let product = product(UserId::new(), "Hoodie", "", at(-7_200));
    drop_of(
        &product,
        at(-3_600),
        at(3_600),
        per_user_limit,
        DropState::Live,
        at(-7_200),
    )
}

/// A reserved order of `quantity` units by `user` in `drop`, placed at `now` with
/// idempotency key `key` and a hold of [`HOLD`].
pub fn order(user: UserId, drop: &model::Drop, quantity: u32, key: &str, now: Timestamp) -> Order {
    Order {
        id: OrderId::new(),
        user_id: user,
        drop_id: drop.id,
        sku: drop.variants[0].sku.clone(),
        quantity,
        unit_price_cents: drop.price_cents,
        total_cents: drop.price_cents * i64::from(quantity),
        currency: drop.currency.clone(),
        status: OrderStatus::Reserved,
        idempotency_key: key.to_owned(),
        fingerprint: format!("{}:{quantity}", drop.id),
        reserved_until: now + HOLD,
        created_at: now,
        updated_at: now,
        extended_at: None,
    }
}

/// An unread notification for `user` with `dedup_key`, created at `created_at`.
pub fn notification(user: UserId, dedup_key: &str, created_at: Timestamp) -> Notification {
    Notification {
        id: NotificationId::new(),
        user_id: user,
        kind: NotificationKind::DropLive,
        payload: serde_json::json!({ "key": dedup_key }),
        dedup_key: dedup_key.to_owned(),
        created_at,
        read_at: None,
    }
}
