//! The services: every command and query of livedrop, over the [ports](crate::ports).
//!
//! [`Livedrop`] is the entry point: build it from a [`Ports`] bundle and a [`Config`],
//! call its commands with an [`Actor`](crate::model::Actor), and run its
//! [background tasks](Livedrop::spawn_background) (drop scheduler, hold sweeper,
//! outbox relay, event consumer).

use std::sync::Arc;
use std::time::Duration;

use crate::ports::{
    AdmissionGate, Cache, Clock, DropRepository, EventBus, IdempotencyStore, InventoryRepository,
    NotificationRepository, OpenGate, OrderRepository, Outbox, ProductRepository, UserRepository,
};

/// Every port the services use.
#[derive(Clone)]
pub struct Ports {
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
    /// Idempotency keys.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Notifications.
    pub notifications: Arc<dyn NotificationRepository>,
    /// The outbox the relay drains.
    pub outbox: Arc<dyn Outbox>,
    /// The read cache.
    pub cache: Arc<dyn Cache>,
    /// The event bus.
    pub bus: Arc<dyn EventBus>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The early sold-out gate ([`OpenGate`] unless set).
    pub gate: Arc<dyn AdmissionGate>,
}

/// A type implementing every repository port, such as one database.
pub trait Store:
    UserRepository
    + ProductRepository
    + DropRepository
    + InventoryRepository
    + OrderRepository
    + IdempotencyStore
    + NotificationRepository
    + Outbox
{
}

impl<T> Store for T where
    T: UserRepository
        + ProductRepository
        + DropRepository
        + InventoryRepository
        + OrderRepository
        + IdempotencyStore
        + NotificationRepository
        + Outbox
{
}

impl Ports {
    /// Bundles one store implementing every repository port with a cache, a bus and a clock.
    pub fn from_store<S: Store>(
        store: Arc<S>,
        cache: Arc<dyn Cache>,
        bus: Arc<dyn EventBus>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            users: store.clone(),
            products: store.clone(),
            drops: store.clone(),
            inventory: store.clone(),
            orders: store.clone(),
            idempotency: store.clone(),
            notifications: store.clone(),
            outbox: store,
            cache,
            bus,
            clock,
            gate: Arc::new(OpenGate),
        }
    }

    /// Replaces the admission gate.
    pub fn with_gate(mut self, gate: Arc<dyn AdmissionGate>) -> Self {
        self.gate = gate;
        self
    }
}

/// Tunables of the services.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long an order holds its stock before it expires (default 10 minutes).
    pub hold: Duration,
    /// How long an idempotency key stays claimed by a request that never finished
    /// (its process died) before a retry may take it over (default 30 s).
    pub idempotency_lease: Duration,
    /// How long idempotency keys are kept (default 24 hours).
    pub idempotency_retention: Duration,
    /// TTL of cached products and drop definitions (default 60 s).
    pub entity_ttl: Duration,
    /// TTL of cached stock views: the most displayed stock may lag (default 1 s).
    pub stock_ttl: Duration,
    /// TTL of cached listings and search results (default 2 s).
    pub listing_ttl: Duration,
    /// Followers notified per fan-out batch (default 1,000).
    pub fan_out_batch: u32,
    /// How often the scheduler and sweeper look for due work (default 200 ms).
    pub tick: Duration,
    /// Events the relay publishes per batch (default 500).
    pub relay_batch: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            hold: Duration::from_secs(600),
            idempotency_lease: Duration::from_secs(30),
            idempotency_retention: Duration::from_secs(24 * 3600),
            entity_ttl: Duration::from_secs(60),
            stock_ttl: Duration::from_secs(1),
            listing_ttl: Duration::from_secs(2),
            fan_out_batch: 1_000,
            tick: Duration::from_millis(200),
            relay_batch: 500,
        }
    }
}
