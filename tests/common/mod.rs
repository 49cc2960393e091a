//! Shared set-up for the integration tests: livedrop on in-memory adapters.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use chrono::Duration;
use livedrop::adapters::memory::{memory_ports, MemoryBus, MemoryStore};
use livedrop::core::model::{Actor, DropView, Order, Product, Role, Stock};
use livedrop::core::service::{Livedrop, NewDrop, NewProduct, NewVariant, PlaceOrder};
use livedrop::core::testing::fixtures;
use livedrop::core::{Config, ManualClock, Ports};

/// A livedrop instance on fresh in-memory adapters with a manual clock.
pub struct World {
    pub app: Livedrop,
    pub ports: Ports,
    /// The in-memory store, when the world runs on one.
    pub store: Option<Arc<MemoryStore>>,
    pub bus: Arc<MemoryBus>,
    pub clock: Arc<ManualClock>,
    /// The PostgreSQL schema of a world on PostgreSQL, dropped with the world.
    #[cfg(feature = "postgres")]
    pub schema: Option<livedrop::adapters::postgres::testing::TestSchema>,
}

impl World {
    pub fn new() -> Self {
        Self::with_config(Config::default())
    }

    pub fn with_config(config: Config) -> Self {
        let clock = Arc::new(ManualClock::fixed());
        let (ports, store, bus) = memory_ports(clock.clone());
        Self::from_ports(ports, store, bus, clock, config)
    }

    /// A world on fresh in-memory adapters with some ports replaced by `wrap`
    /// (a mock, or a wrapper that fails on purpose).
    pub fn with_ports(config: Config, wrap: impl FnOnce(Ports) -> Ports) -> Self {
        let clock = Arc::new(ManualClock::fixed());
        let (ports, store, bus) = memory_ports(clock.clone());
        Self::from_ports(wrap(ports), store, bus, clock, config)
    }

    /// Another livedrop on this in-memory world's store, bus and clock, its ports
    /// (this world's) changed by `wrap`: what the same data looks like through a
    /// failing port, or once the port recovers.
    pub fn sharing(&self, wrap: impl FnOnce(Ports) -> Ports) -> Self {
        let store = self.store.clone().expect("an in-memory world");
        Self::from_ports(
            wrap(self.ports.clone()),
            store,
            self.bus.clone(),
            self.clock.clone(),
            Config::default(),
        )
    }

    pub fn from_ports(
        ports: Ports,
        store: Arc<MemoryStore>,
        bus: Arc<MemoryBus>,
        clock: Arc<ManualClock>,
        config: Config,
    ) -> Self {
        let app = Livedrop::new(ports.clone(), config);
        Self {
            app,
            ports,
            store: Some(store),
            bus,
            clock,
            #[cfg(feature = "postgres")]
            schema: None,
        }
    }

    /// The same world on a PostgreSQL store in a fresh schema (in-memory cache and
    /// bus), or `None` when `LIVEDROP_TEST_DATABASE_URL` is unset.
    #[cfg(feature = "postgres")]
    pub async fn postgres() -> Option<Self> {
        Self::postgres_with(livedrop::adapters::postgres::ReserveStrategy::RowLock).await
    }

    /// [`World::postgres`] deciding orders with `strategy`.
    #[cfg(feature = "postgres")]
    pub async fn postgres_with(
        strategy: livedrop::adapters::postgres::ReserveStrategy,
    ) -> Option<Self> {
        use livedrop::adapters::postgres::testing::TestSchema;
        use livedrop::adapters::postgres::PgOptions;
        let schema = TestSchema::new("a PostgreSQL world").await?;
        let store = schema
            .connect(PgOptions {
                strategy,
                ..schema.options()
            })
            .await;
        store.migrate().await.expect("migrations");
        Some(Self {
            schema: Some(schema),
            ..Self::on_store(Arc::new(store))
        })
    }

    /// The same world on a SQLite store in a fresh temporary file (in-memory cache
    /// and bus); the file goes with the world.
    #[cfg(feature = "sqlite")]
    pub async fn sqlite() -> Self {
        use livedrop::adapters::sqlite::{SqliteOptions, SqliteStore};
        let store = SqliteStore::temporary(SqliteOptions::default())
            .await
            .expect("a SQLite store in a temporary directory");
        Self::on_store(Arc::new(store))
    }

    /// A world on `store` with an in-memory cache and bus.
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    fn on_store<S: livedrop::core::service::Store>(store: Arc<S>) -> Self {
        use livedrop::adapters::memory::MemoryCache;
        let clock = Arc::new(ManualClock::fixed());
        let bus = Arc::new(MemoryBus::new());
        let ports = Ports::from_store(
            store,
            Arc::new(MemoryCache::new()),
            bus.clone(),
            clock.clone(),
        );
        Self {
            app: Livedrop::new(ports.clone(), Config::default()),
            ports,
            store: None,
            bus,
            clock,
            #[cfg(feature = "postgres")]
            schema: None,
        }
    }

    /// A user stored directly (no password hashing: fast enough for thousands of cases).
    pub async fn user(&self, role: Role) -> Actor {
        let user = fixtures::user(role.as_str(), role);
        self.ports.users.insert_user(&user).await.unwrap();
        user.actor()
    }

    pub async fn product(&self, creator: &Actor) -> Product {
        self.app
            .create_product(
                creator,
                NewProduct {
                    title: "Limited hoodie".into(),
                    description: "Numbered, organic cotton".into(),
                    price_cents: 4_500,
                    currency: "EUR".into(),
                    image_url: Some("https://cdn.example.com/hoodie.png".into()),
                },
            )
            .await
            .unwrap()
    }

    /// `buyer` orders `quantity` units of `drop`.
    pub async fn order(
        &self,
        buyer: &Actor,
        key: Option<&str>,
        drop: &DropView,
        quantity: u32,
    ) -> Result<Order, livedrop::core::Error> {
        self.app
            .place_order(buyer, key, order_of(drop, quantity))
            .await
    }

    /// The drop's stock as the inventory holds it: the sum of its variants', each
    /// checked against the invariant.
    pub async fn stock(&self, drop: &DropView) -> Stock {
        Stock::sum(&self.variant_stock(drop).await)
    }

    /// The stock of each of the drop's variants as the inventory holds it, each
    /// checked against the invariant.
    pub async fn variant_stock(&self, drop: &DropView) -> Vec<Stock> {
        let stock = self
            .ports
            .inventory
            .stock(drop.drop.id)
            .await
            .unwrap()
            .expect("the drop's stock");
        for s in &stock {
            assert!(s.is_consistent(), "stock invariant broken: {s:?}");
        }
        stock
    }

    /// A live drop of `stock` units lasting one hour, by a new creator.
    pub async fn creators_drop(&self, stock: u32, per_user_limit: Option<u32>) -> DropView {
        let creator = self.user(Role::Creator).await;
        self.live_drop(&creator, stock, per_user_limit).await
    }

    /// A live drop of `stock` units lasting one hour.
    pub async fn live_drop(
        &self,
        creator: &Actor,
        stock: u32,
        per_user_limit: Option<u32>,
    ) -> DropView {
        self.drop_starting(creator, stock, per_user_limit, None)
            .await
    }

    /// A drop of `stock` units lasting one hour from its start: `starts_in` from
    /// now (scheduled for later), or now when `None` (live at once).
    pub async fn drop_starting(
        &self,
        creator: &Actor,
        stock: u32,
        per_user_limit: Option<u32>,
        starts_in: Option<Duration>,
    ) -> DropView {
        let product = self.product(creator).await;
        let starts_at = starts_in.map(|d| self.clock.now_ts() + d);
        let start = starts_at.unwrap_or_else(|| self.clock.now_ts());
        self.app
            .schedule_drop(
                creator,
                NewDrop {
                    allocation: Default::default(),
                    entries_close_at: None,
                    waiting_room: None,
                    product_id: product.id,
                    starts_at,
                    ends_at: start + Duration::hours(1),
                    total_stock: stock,
                    variants: Vec::new(),
                    per_user_limit,
                },
            )
            .await
            .unwrap()
    }

    /// A drop selling `variants` (sku, units), lasting one hour from its start:
    /// `starts_in` from now, or now when `None`.
    pub async fn sized_drop(
        &self,
        creator: &Actor,
        variants: &[(&str, u32)],
        per_user_limit: Option<u32>,
        starts_in: Option<Duration>,
    ) -> DropView {
        let product = self.product(creator).await;
        let starts_at = starts_in.map(|d| self.clock.now_ts() + d);
        let start = starts_at.unwrap_or_else(|| self.clock.now_ts());
        self.app
            .schedule_drop(
                creator,
                NewDrop {
                    allocation: Default::default(),
                    entries_close_at: None,
                    waiting_room: None,
                    product_id: product.id,
                    starts_at,
                    ends_at: start + Duration::hours(1),
                    total_stock: 0,
                    variants: variants
                        .iter()
                        .map(|(sku, units)| NewVariant {
                            sku: (*sku).to_owned(),
                            label: sku.to_uppercase(),
                            total_stock: *units,
                        })
                        .collect(),
                    per_user_limit,
                },
            )
            .await
            .unwrap()
    }
}

/// An order of `quantity` units of `drop`.
pub fn order_of(drop: &DropView, quantity: u32) -> PlaceOrder {
    PlaceOrder {
        admission_token: None,
        drop_id: drop.drop.id,
        quantity,
        sku: None,
    }
}

/// An order of `quantity` units of variant `sku` of `drop`.
pub fn sized_order(drop: &DropView, sku: &str, quantity: u32) -> PlaceOrder {
    PlaceOrder {
        admission_token: None,
        drop_id: drop.drop.id,
        quantity,
        sku: Some(sku.to_owned()),
    }
}

pub mod model;

pub trait ClockExt {
    fn now_ts(&self) -> livedrop::core::Timestamp;
}

impl ClockExt for ManualClock {
    fn now_ts(&self) -> livedrop::core::Timestamp {
        livedrop::core::Clock::now(self)
    }
}
