//! Wiring: the ports the settings name, built per backend (memory, SQLite,
//! PostgreSQL, Redis, Kafka), with each backend's readiness probe and the closer
//! that shuts it down after serving. Every failure carries its cause through
//! `anyhow::Context`, so the binary prints it as one line.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
#[cfg(feature = "kafka")]
use std::time::Duration;

use anyhow::bail;
#[cfg(any(
    feature = "sqlite",
    feature = "postgres",
    feature = "redis",
    feature = "kafka"
))]
use anyhow::Context;
use livedrop_core::ports::{AdmissionGate, Cache, Clock, EventBus};
use livedrop_core::service::Livedrop;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use livedrop_core::service::Store;
use livedrop_core::{Ports, SystemClock};

use crate::settings::Settings;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use crate::state::describe;
use crate::state::{default_checks, ReadinessCheck};

/// Work to do once serving stopped: closing a backend's connections.
pub(crate) type Closer = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The store of a server started without LIVEDROP_DATABASE_URL nor --in-memory.
const DEFAULT_SQLITE_URL: &str = "sqlite://./livedrop.db";

/// Backends chosen by configuration.
pub(crate) struct Wiring {
    /// The ports the services run on.
    pub(crate) ports: Ports,
    /// Probes of the backends that offer one better than the generic probes.
    checks: Vec<ReadinessCheck>,
    /// Closers of the backends, run after serving.
    pub(crate) closers: Vec<Closer>,
}

impl Wiring {
    /// The readiness probes: the generic ones over `livedrop`, each replaced by the
    /// backend's own probe of the same name when it has one.
    pub(crate) fn readiness(&self, livedrop: &Livedrop) -> Vec<ReadinessCheck> {
        let mut checks = default_checks(livedrop);
        for check in &self.checks {
            checks.retain(|c| c.name != check.name);
            checks.push(check.clone());
        }
        checks
    }
}

/// Connects the backends `settings` name (running the store's migrations).
pub(crate) async fn wire(settings: &Settings) -> anyhow::Result<Wiring> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut spot = Spot {
        checks: Vec::new(),
        closers: Vec::new(),
    };

    let (cache, gate) = cache_port(settings).await?;
    let bus = bus_port(settings, &mut spot).await?;

    let url = settings.database_url.as_deref().filter(|u| !u.is_empty());
    let mut ports = match url {
        _ if settings.in_memory => {
            if url.is_some() {
                bail!("--in-memory and LIVEDROP_DATABASE_URL both name a store; choose one");
            }
            tracing::info!("store: in memory (--in-memory); data is lost on exit");
            let store = Arc::new(livedrop_adapters::memory::MemoryStore::new());
            Ports::from_store(store, cache, bus, clock)
        }
        None => {
            let store = sqlite_store(settings, DEFAULT_SQLITE_URL, &mut spot).await?;
            Ports::from_store(store, cache, bus, clock)
        }
        Some(url) if url.starts_with("sqlite:") => {
            let store = sqlite_store(settings, url, &mut spot).await?;
            Ports::from_store(store, cache, bus, clock)
        }
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let store = postgres_store(settings, url, &mut spot).await?;
            Ports::from_store(store, cache, bus, clock)
        }
        Some(_) => bail!(
            "LIVEDROP_DATABASE_URL must start with sqlite:// (a file) or postgres:// (a server)"
        ),
    };
    if let Some(gate) = gate {
        ports = ports.with_gate(gate);
    }
    Ok(Wiring {
        ports,
        checks: spot.checks,
        closers: spot.closers,
    })
}

/// Where a backend adds its readiness probe and its closer.
struct Spot {
    checks: Vec<ReadinessCheck>,
    closers: Vec<Closer>,
}

/// A store both SQL backends are: pinged by readiness, closed after serving.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
trait Pool: Store + Clone + Send + Sync + 'static {
    fn ping(&self) -> impl Future<Output = livedrop_core::StoreResult<()>> + Send;
    fn close(&self) -> impl Future<Output = ()> + Send;
}

#[cfg(feature = "sqlite")]
impl Pool for livedrop_adapters::sqlite::SqliteStore {
    fn ping(&self) -> impl Future<Output = livedrop_core::StoreResult<()>> + Send {
        livedrop_adapters::sqlite::SqliteStore::ping(self)
    }
    fn close(&self) -> impl Future<Output = ()> + Send {
        livedrop_adapters::sqlite::SqliteStore::close(self)
    }
}

#[cfg(feature = "postgres")]
impl Pool for livedrop_adapters::postgres::PgStore {
    fn ping(&self) -> impl Future<Output = livedrop_core::StoreResult<()>> + Send {
        livedrop_adapters::postgres::PgStore::ping(self)
    }
    fn close(&self) -> impl Future<Output = ()> + Send {
        livedrop_adapters::postgres::PgStore::close(self)
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl Spot {
    /// Registers `store`'s `store` probe and its closer; hands it back shared.
    fn add_pool<P: Pool>(&mut self, store: P) -> Arc<P> {
        let ping = store.clone();
        self.checks.push(ReadinessCheck::new("store", move || {
            let ping = ping.clone();
            async move { ping.ping().await.map_err(describe) }
        }));
        let closing = store.clone();
        self.closers
            .push(Box::pin(async move { closing.close().await }));
        Arc::new(store)
    }
}

#[cfg(feature = "sqlite")]
async fn sqlite_store(
    settings: &Settings,
    url: &str,
    spot: &mut Spot,
) -> anyhow::Result<Arc<impl Store>> {
    use livedrop_adapters::sqlite::{path_of_url, SqliteOptions, SqliteStore};
    let path = path_of_url(url).context("LIVEDROP_DATABASE_URL")?;
    let options = SqliteOptions {
        sync_commits: settings.sqlite_synchronous != "normal",
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(&path, options)
        .await
        .context("cannot open the SQLite store")?;
    store.migrate().await.context("SQLite migrations failed")?;
    let shown = std::path::absolute(&path).unwrap_or(path);
    tracing::info!(
        file = %shown.display(),
        synchronous = %settings.sqlite_synchronous,
        "store: SQLite file (one process; LIVEDROP_DATABASE_URL=postgres://… for several), migrations applied"
    );
    Ok(spot.add_pool(store))
}

#[cfg(not(feature = "sqlite"))]
async fn sqlite_store(
    _: &Settings,
    _: &str,
    _: &mut Spot,
) -> anyhow::Result<Arc<livedrop_adapters::memory::MemoryStore>> {
    bail!(
        "this build has no SQLite support (cargo feature `sqlite`): set LIVEDROP_DATABASE_URL=postgres://… or pass --in-memory"
    )
}

#[cfg(feature = "postgres")]
async fn postgres_store(
    settings: &Settings,
    url: &str,
    spot: &mut Spot,
) -> anyhow::Result<Arc<impl Store>> {
    use livedrop_adapters::postgres::{PgOptions, PgStore};
    let options = PgOptions {
        max_connections: settings.database_max_connections,
        schema: settings.database_schema.clone(),
        ..PgOptions::default()
    };
    let store = PgStore::connect(url, options)
        .await
        .context("cannot connect to PostgreSQL")?;
    store
        .migrate()
        .await
        .context("PostgreSQL migrations failed")?;
    tracing::info!(schema = ?settings.database_schema, "store: PostgreSQL, migrations applied");
    Ok(spot.add_pool(store))
}

#[cfg(not(feature = "postgres"))]
async fn postgres_store(
    _: &Settings,
    _: &str,
    _: &mut Spot,
) -> anyhow::Result<Arc<livedrop_adapters::memory::MemoryStore>> {
    bail!("LIVEDROP_DATABASE_URL is set but this build has no PostgreSQL support (cargo feature `postgres`)")
}

type GatePort = Option<Arc<dyn AdmissionGate>>;

async fn cache_port(settings: &Settings) -> anyhow::Result<(Arc<dyn Cache>, GatePort)> {
    match &settings.redis_url {
        None => {
            tracing::info!("cache: in process (LIVEDROP_REDIS_URL unset)");
            Ok((
                Arc::new(livedrop_adapters::memory::MemoryCache::new()),
                None,
            ))
        }
        Some(url) => redis_ports(settings, url).await,
    }
}

#[cfg(feature = "redis")]
async fn redis_ports(settings: &Settings, url: &str) -> anyhow::Result<(Arc<dyn Cache>, GatePort)> {
    use livedrop_adapters::redis::{RedisCache, RedisGate, RedisOptions};
    let options = RedisOptions::default();
    let cache = RedisCache::connect_with(url, &settings.redis_namespace, options.clone())
        .await
        .context("cannot connect to Redis")?;
    let gate = RedisGate::new(cache.connection(), &settings.redis_namespace, options);
    tracing::info!(namespace = %settings.redis_namespace, "cache: Redis, with the sold-out gate");
    Ok((Arc::new(cache), Some(Arc::new(gate))))
}

#[cfg(not(feature = "redis"))]
async fn redis_ports(_: &Settings, _: &str) -> anyhow::Result<(Arc<dyn Cache>, GatePort)> {
    bail!("LIVEDROP_REDIS_URL is set but this build has no Redis support (cargo feature `redis`)")
}

async fn bus_port(settings: &Settings, spot: &mut Spot) -> anyhow::Result<Arc<dyn EventBus>> {
    match &settings.kafka_brokers {
        None => {
            tracing::info!("event bus: in process (LIVEDROP_KAFKA_BROKERS unset)");
            Ok(Arc::new(livedrop_adapters::memory::MemoryBus::new()))
        }
        Some(brokers) => kafka_port(settings, brokers, spot).await,
    }
}

#[cfg(feature = "kafka")]
async fn kafka_port(
    settings: &Settings,
    brokers: &str,
    spot: &mut Spot,
) -> anyhow::Result<Arc<dyn EventBus>> {
    use livedrop_adapters::kafka::{KafkaBus, KafkaOptions};
    let options = KafkaOptions {
        topic_prefix: settings.kafka_topic_prefix.clone(),
        ..KafkaOptions::default()
    };
    let bus = KafkaBus::connect(brokers, options)
        .await
        .context("cannot connect to Kafka")?;
    tracing::info!(brokers, prefix = %settings.kafka_topic_prefix, "event bus: Kafka");
    let list: Vec<String> = brokers.split(',').map(|b| b.trim().to_owned()).collect();
    spot.checks.push(ReadinessCheck::new("bus", move || {
        let list = list.clone();
        async move { broker_reachable(&list).await }
    }));
    Ok(Arc::new(bus))
}

#[cfg(not(feature = "kafka"))]
async fn kafka_port(_: &Settings, _: &str, _: &mut Spot) -> anyhow::Result<Arc<dyn EventBus>> {
    bail!(
        "LIVEDROP_KAFKA_BROKERS is set but this build has no Kafka support (cargo feature `kafka`)"
    )
}

/// Whether any bootstrap broker accepts a TCP connection (the bus adapter offers
/// no ping; a refused connection is what an outage looks like from here).
#[cfg(feature = "kafka")]
async fn broker_reachable(brokers: &[String]) -> Result<(), String> {
    let mut last = String::from("no broker configured");
    for broker in brokers {
        match tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(broker.as_str()),
        )
        .await
        {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => last = format!("{broker}: {e}"),
            Err(_) => last = format!("{broker}: connect timed out"),
        }
    }
    Err(last)
}
