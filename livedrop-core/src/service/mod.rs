//! The services: every command and query of livedrop, over the [ports](crate::ports).
//!
//! [`Livedrop`] is the entry point: build it from a [`Ports`] bundle and a [`Config`],
//! call its commands with an [`Actor`], and run its
//! [background tasks](Livedrop::spawn_background) (drop scheduler, hold sweeper,
//! outbox relay, event consumer).

use std::sync::Arc;
use std::time::Duration;

use crate::ports::{
    AdmissionGate, Cache, Clock, DrawRepository, DropRepository, EventBus, IdempotencyStore,
    InventoryRepository, NotificationRepository, OpenGate, OrderRepository, Outbox,
    ProductRepository, QueueRepository, UserRepository, WaitlistRepository,
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

/// Declares [`Store`] as every port of one list, and implements it for every type
/// that implements them all.
macro_rules! store_of {
    ($first:ident $(+ $port:ident)*) => {
        /// A type implementing every repository port, such as one database.
        pub trait Store: $first $(+ $port)* {}

        impl<T> Store for T where T: $first $(+ $port)* {}
    };
}

store_of!(
    UserRepository
        + ProductRepository
        + DropRepository
        + InventoryRepository
        + OrderRepository
        + WaitlistRepository
        + DrawRepository
        + QueueRepository
        + IdempotencyStore
        + NotificationRepository
        + Outbox
);

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
            waitlists: store.clone(),
            draws: store.clone(),
            queues: store.clone(),
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
    /// Followers notified by the first batch of each fan-out walk (default 1,000):
    /// small, so the first followers hear of a drop at once. Each later batch of the
    /// walk is twice the one before, up to [`fan_out_max_batch`](Self::fan_out_max_batch).
    pub fan_out_batch: u32,
    /// The most followers one fan-out batch notifies (default 10,000; never below
    /// [`fan_out_batch`](Self::fan_out_batch)). Larger batches spend less per
    /// follower on round trips and commits; each is still one short transaction
    /// (about a tenth of a second on PostgreSQL at the default).
    pub fan_out_max_batch: u32,
    /// How many walks of one fan-out run at once (default 2), each over its own
    /// [`FanOutShard`](crate::model::FanOutShard) of the audience with its own store
    /// connection while it runs. Inserting notifications keeps a database core busy
    /// per walk: more walks finish sooner and leave less of the database to orders.
    pub fan_out_shards: u32,
    /// How often the drop scheduler and, separately, the hold sweeper look for due
    /// work (default 200 ms).
    pub tick: Duration,
    /// Drops the scheduler moves per step, at most (default 100).
    pub scheduler_batch: u32,
    /// Holds the sweeper expires per store call; a step repeats while calls come back
    /// full (default 500).
    pub sweep_batch: u32,
    /// How often housekeeping purges old idempotency keys and prunes the outbox,
    /// first one interval after start (default 5 minutes).
    pub housekeeping_interval: Duration,
    /// Events the relay publishes per batch (default 500).
    pub relay_batch: u32,
    /// How long published events stay in the outbox for inspection (default 24 hours).
    pub outbox_retention: Duration,
    /// Whether this process follows the outbox itself for its live feed and cache
    /// invalidation, instead of the bus (default `false`). Turn it on when the bus is
    /// not shared by every process on the store (several processes on one database
    /// with no broker): each then still sees every committed event, and the outbox
    /// relay writes each event's notifications before it marks the event published
    /// (no consumer group runs on a bus that dies with its process).
    pub follow_outbox: bool,
    /// How often an outbox follower looks for new events (default 100 ms): the most
    /// a process's live feed and cache invalidation lag behind a commit.
    pub follow_interval: Duration,
    /// The key signing waiting-room admission tokens (HMAC-SHA256). Processes that
    /// share a store must share it; the default is random per process.
    pub admission_key: AdmissionKey,
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
            fan_out_max_batch: 10_000,
            fan_out_shards: 2,
            tick: Duration::from_millis(200),
            scheduler_batch: 100,
            sweep_batch: 500,
            housekeeping_interval: Duration::from_secs(300),
            relay_batch: 500,
            outbox_retention: Duration::from_secs(24 * 3600),
            follow_outbox: false,
            follow_interval: Duration::from_millis(100),
            admission_key: AdmissionKey::random(),
        }
    }
}

mod background;
mod catalog;
mod fair;
mod health;
mod idempotency;
mod inventory;
mod notifications;
mod orders;
mod users;
mod waitlist;
mod watch;

pub use background::{Background, OutboxFollower, OutboxRelay, CACHE_GROUP, NOTIFY_GROUP};
pub use catalog::{NewDrop, NewProduct, NewVariant, ProductPatch, MAX_VARIANTS};
pub use fair::{AdmissionKey, EnterDraw, QueueState, QueueStatus};
pub use idempotency::{key_outcome, order_record, Idempotent};
pub use inventory::StockAdjustment;
pub use orders::{check_idempotency_key, PlaceOrder};
pub use users::Registration;
pub use waitlist::JoinWaitlist;
pub use watch::{DropUpdate, DropWatch};

use tokio::sync::broadcast;

use crate::cache::CacheLayer;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::model::Actor;

/// The livedrop services over a set of ports. Cheap to clone; no global state.
#[derive(Clone)]
pub struct Livedrop {
    inner: Arc<Inner>,
}

struct Inner {
    ports: Ports,
    config: Config,
    cache: CacheLayer,
    live: broadcast::Sender<Event>,
}

impl Livedrop {
    /// Services over `ports` tuned by `config`.
    pub fn new(ports: Ports, config: Config) -> Self {
        let cache = CacheLayer::new(ports.cache.clone());
        let (live, _) = broadcast::channel(4096);
        Self {
            inner: Arc::new(Inner {
                ports,
                config,
                cache,
                live,
            }),
        }
    }

    /// The ports.
    pub fn ports(&self) -> &Ports {
        &self.inner.ports
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The caching layer (for its statistics and manual invalidation).
    pub fn cache(&self) -> &CacheLayer {
        &self.inner.cache
    }

    /// Events as this process sees them from the bus, for live views (Server-Sent
    /// Events). Fed by [`Livedrop::spawn_background`]; lagging receivers lose the
    /// oldest events, never block the feed.
    pub fn live_events(&self) -> broadcast::Receiver<Event> {
        self.inner.live.subscribe()
    }

    /// The current time on the services' clock (what statuses are computed at).
    pub fn now(&self) -> crate::clock::Timestamp {
        self.inner.ports.clock.now()
    }

    fn hold(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.inner.config.hold).unwrap_or(chrono::Duration::minutes(10))
    }
}

/// Refuses unless the actor is `owner` or an admin.
fn require_owner(actor: &Actor, owner: crate::id::UserId, what: &str) -> Result<()> {
    if actor.is_admin() || actor.id == owner {
        Ok(())
    } else {
        Err(Error::forbidden(format!(
            "only its creator or an admin may change this {what}"
        )))
    }
}
