//! The conformance suite every adapter runs, and mocks of the ports.
//!
//! The suite states, as plain `pub async fn`s over the ports, the semantics every
//! implementation must share: atomic reservation, idempotent order creation, hold
//! expiry, keyset pagination, fan-out batches, the outbox, cache TTLs and fences,
//! consumer groups, the admission gate's versions. A backend runs the whole list with one macro call in an
//! integration test, so no case is ever copied per backend:
//!
//! ```ignore
//! use std::sync::Arc;
//! use livedrop_core::ports::{AdmissionGate, Cache, EventBus};
//! use livedrop_core::testing::Repos;
//!
//! async fn store() -> Option<Repos> {
//!     // `None` when the backend's environment (a database URL, …) is absent.
//!     Some(Repos::from_store(Arc::new(my_backend::Store::connect_fresh().await?)))
//! }
//! async fn cache() -> Option<Arc<dyn Cache>> { /* … */ }
//! async fn bus() -> Option<Arc<dyn EventBus>> { /* … */ }
//! async fn gate() -> Option<Arc<dyn AdmissionGate>> { /* … */ }
//!
//! livedrop_core::store_conformance!(store);
//! livedrop_core::cache_conformance!(cache);
//! livedrop_core::bus_conformance!(bus);
//! livedrop_core::gate_conformance!(gate);
//! ```
//!
//! Each macro expands into a module (`store_conformance`, `cache_conformance`,
//! `bus_conformance`, `gate_conformance`) holding one `#[tokio::test(flavor = "multi_thread")]` per case;
//! the calling crate needs `tokio` with the `macros` and `rt-multi-thread` features.
//! The factory is called once per case and must return an isolated backend: a fresh
//! store, a cache key namespace or bus topic namespace of its own. When it returns
//! `None` the case prints why it was skipped and passes — or fails, when
//! `LIVEDROP_TEST_REQUIRE=1` asks that nothing skip ([`mod@env`]).
//!
//! Cases never read the wall clock for domain time: they pass explicit timestamps
//! around [`fixtures::T0`]. Only the cache TTL and bus cases wait, briefly, in real
//! time, and every wait is bounded so a broken backend fails instead of hanging.
//!
//! The ports' [mockall](https://docs.rs/mockall) mocks (`MockUserRepository`, …)
//! live next to the traits in [`crate::ports`] under the same feature.

use std::sync::Arc;

use crate::ports::{
    DrawRepository, DropRepository, IdempotencyStore, InventoryRepository, NotificationRepository,
    OrderRepository, Outbox, ProductRepository, QueueRepository, UserRepository,
    WaitlistRepository,
};
use crate::service::{Ports, Store};

pub mod bus;
pub mod cache;
pub mod env;
pub mod fixtures;
pub mod gate;
mod macros;
pub mod store;

/// The eight repository ports a store implements, as the store suite drives them.
#[derive(Clone)]
pub struct Repos {
    /// Users and follows.
    pub users: Arc<dyn UserRepository>,
    /// Products.
    pub products: Arc<dyn ProductRepository>,
    /// Drops.
    pub drops: Arc<dyn DropRepository>,
    /// Stock adjustments and the ledger.
    pub inventory: Arc<dyn InventoryRepository>,
    /// Orders.
    pub orders: Arc<dyn OrderRepository>,
    /// Waitlists.
    pub waitlists: Arc<dyn WaitlistRepository>,
    /// Draws.
    pub draws: Arc<dyn DrawRepository>,
    /// Waiting rooms.
    pub queues: Arc<dyn QueueRepository>,
    /// Idempotency keys.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Notifications.
    pub notifications: Arc<dyn NotificationRepository>,
    /// The outbox.
    pub outbox: Arc<dyn Outbox>,
}

impl Repos {
    /// Every repository port from one store.
    pub fn from_store<S: Store>(store: Arc<S>) -> Self {
        Self {
            users: store.clone(),
            products: store.clone(),
            drops: store.clone(),
            inventory: store.clone(),
            orders: store.clone(),
            waitlists: store.clone(),
            draws: store.clone(),
            queues: store.clone(),
            idempotency: store.clone(),
            notifications: store.clone(),
            outbox: store,
        }
    }

    /// The repository ports of a [`Ports`] bundle.
    pub fn from_ports(ports: &Ports) -> Self {
        Self {
            users: ports.users.clone(),
            products: ports.products.clone(),
            drops: ports.drops.clone(),
            inventory: ports.inventory.clone(),
            orders: ports.orders.clone(),
            waitlists: ports.waitlists.clone(),
            draws: ports.draws.clone(),
            queues: ports.queues.clone(),
            idempotency: ports.idempotency.clone(),
            notifications: ports.notifications.clone(),
            outbox: ports.outbox.clone(),
        }
    }
}
