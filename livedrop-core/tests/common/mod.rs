//! What the core's integration tests share: the in-memory adapters under a manual
//! clock, users written straight to the store, and a drop to order from.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use chrono::Duration;
use livedrop_adapters::memory::{memory_ports, MemoryBus, MemoryStore};
use livedrop_core::model::{Actor, Role};
use livedrop_core::service::{Livedrop, NewDrop, NewProduct};
use livedrop_core::testing::fixtures;
use livedrop_core::{DropId, ManualClock, Ports};

/// Fresh in-memory adapters whose clock stands at [`fixtures::T0`] until moved.
pub struct Memory {
    pub clock: Arc<ManualClock>,
    pub ports: Ports,
    pub store: Arc<MemoryStore>,
    pub bus: Arc<MemoryBus>,
}

impl Memory {
    pub fn new() -> Self {
        let clock = Arc::new(ManualClock::fixed());
        let (ports, store, bus) = memory_ports(clock.clone());
        Self {
            clock,
            ports,
            store,
            bus,
        }
    }
}

/// A user of `role` written straight to the store (no password hashing).
pub async fn user(ports: &Ports, role: Role) -> Actor {
    let user = fixtures::user(role.as_str(), role);
    ports.users.insert_user(&user).await.unwrap();
    user.actor()
}

/// A drop by `creator` of a new product ("Print", €15.00) with `stock` units and
/// `per_user_limit`, starting `starts_in` from now (scheduled when that is in the
/// future, live at once otherwise) and ending an hour after it starts.
pub async fn drop(
    app: &Livedrop,
    creator: &Actor,
    stock: u32,
    per_user_limit: Option<u32>,
    starts_in: Duration,
) -> DropId {
    let product = app
        .create_product(
            creator,
            NewProduct {
                title: "Print".into(),
                description: "A3".into(),
                price_cents: 1_500,
                currency: "EUR".into(),
                image_url: None,
            },
        )
        .await
        .unwrap();
    let starts_at = app.ports().clock.now() + starts_in;
    let view = app
        .schedule_drop(
            creator,
            NewDrop {
                allocation: Default::default(),
                entries_close_at: None,
                waiting_room: None,
                product_id: product.id,
                starts_at: (starts_in > Duration::zero()).then_some(starts_at),
                ends_at: starts_at + Duration::hours(1),
                total_stock: stock,
                variants: Vec::new(),
                per_user_limit,
            },
        )
        .await
        .unwrap();
    view.drop.id
}
