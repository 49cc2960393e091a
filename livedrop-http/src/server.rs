//! The reference server's wiring: configuration, adapters chosen by configuration,
//! startup (migrations, admin bootstrap, demo data), serving and graceful shutdown.
//! `src/main.rs` is a thin shell over this module, so tests can start a server
//! in-process too.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use chrono::Utc;
use livedrop_core::model::{Actor, DropFilter, DropStatus, Role, User};
use livedrop_core::page::PageRequest;
use livedrop_core::ports::{Cache, Clock, EventBus};
use livedrop_core::service::{Livedrop, NewDrop, NewProduct, Registration, Store};
use livedrop_core::{Config, Ports, SystemClock};
use tokio::net::TcpListener;

use crate::auth::TokenKeys;
use crate::state::{default_checks, AppState, HttpOptions, ReadinessCheck};

/// Configuration of the reference server: every setting is an environment variable
/// and a command-line flag.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "livedrop-http",
    version,
    about = "The livedrop reference HTTP server"
)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "LIVEDROP_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Where the data lives: `sqlite://PATH` (a SQLite file, one process) or
    /// `postgres://…` (several processes); unset = the SQLite file `./livedrop.db`.
    #[arg(long, env = "LIVEDROP_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Keeps everything in memory instead (lost on exit): for trying things out.
    #[arg(long, env = "LIVEDROP_IN_MEMORY", value_parser = clap::builder::BoolishValueParser::new())]
    pub in_memory: bool,
    /// SQLite only: `full` flushes every commit to disk before answering (survives a
    /// power cut); `normal` hands it to the operating system (survives a crash of
    /// the process, not of the machine; faster).
    #[arg(long, env = "LIVEDROP_SQLITE_SYNCHRONOUS", default_value = "full", value_parser = ["full", "normal"])]
    pub sqlite_synchronous: String,
    /// PostgreSQL schema for the tables (created if missing); unset uses the default.
    #[arg(long, env = "LIVEDROP_DATABASE_SCHEMA")]
    pub database_schema: Option<String>,
    /// Most pooled PostgreSQL connections.
    #[arg(long, env = "LIVEDROP_DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,
    /// Redis URL; unset uses an in-process cache.
    #[arg(long, env = "LIVEDROP_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key.
    #[arg(long, env = "LIVEDROP_REDIS_NAMESPACE", default_value = "livedrop")]
    pub redis_namespace: String,
    /// Kafka bootstrap brokers (host:port,…); unset uses an in-process bus.
    #[arg(long, env = "LIVEDROP_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// Prefix of the Kafka topics and consumer groups.
    #[arg(long, env = "LIVEDROP_KAFKA_TOPIC_PREFIX", default_value = "livedrop")]
    pub kafka_topic_prefix: String,
    /// Token guarding /internal/*; unset disables the internal API (403).
    #[arg(long, env = "LIVEDROP_INTERNAL_TOKEN", hide_env_values = true)]
    pub internal_token: Option<String>,
    /// How long an order holds its stock, in seconds.
    #[arg(long, env = "LIVEDROP_HOLD_SECONDS", default_value_t = 600)]
    pub hold_seconds: u64,
    /// POST /orders per user per second (0 = off).
    #[arg(long, env = "LIVEDROP_ORDER_RATE_PER_USER", default_value_t = 10)]
    pub order_rate_per_user: u32,
    /// POST /orders per client address per second (0 = off).
    #[arg(long, env = "LIVEDROP_ORDER_RATE_PER_IP", default_value_t = 0)]
    pub order_rate_per_ip: u32,
    /// Secret signing bearer tokens; unset = random per process (tokens do not
    /// survive a restart nor work across processes).
    #[arg(long, env = "LIVEDROP_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// Bearer token lifetime in seconds.
    #[arg(long, env = "LIVEDROP_TOKEN_TTL_SECONDS", default_value_t = 86_400)]
    pub token_ttl_seconds: u64,
    /// Email of the operator's admin account, created at startup if missing.
    #[arg(long, env = "LIVEDROP_ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// Password of the operator's admin account.
    #[arg(long, env = "LIVEDROP_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Seeds a creator, a buyer, a product and a live drop, and prints curl lines.
    #[arg(long, env = "LIVEDROP_DEMO", value_parser = clap::builder::BoolishValueParser::new())]
    pub demo: bool,
    /// Log filter (tracing `EnvFilter` syntax); falls back to RUST_LOG, then `info`.
    #[arg(long, env = "LIVEDROP_LOG")]
    pub log: Option<String>,
    /// Logs as JSON lines.
    #[arg(long, env = "LIVEDROP_LOG_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    pub log_json: bool,
    /// Seconds a request may take before 408.
    #[arg(long, env = "LIVEDROP_REQUEST_TIMEOUT_SECONDS", default_value_t = 30)]
    pub request_timeout_seconds: u64,
    /// Largest request body in bytes (413 above).
    #[arg(long, env = "LIVEDROP_BODY_LIMIT_BYTES", default_value_t = 64 * 1024)]
    pub body_limit_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8080".into(),
            database_url: None,
            in_memory: false,
            sqlite_synchronous: "full".into(),
            database_schema: None,
            database_max_connections: 10,
            redis_url: None,
            redis_namespace: "livedrop".into(),
            kafka_brokers: None,
            kafka_topic_prefix: "livedrop".into(),
            internal_token: None,
            hold_seconds: 600,
            order_rate_per_user: 10,
            order_rate_per_ip: 0,
            token_secret: None,
            token_ttl_seconds: 86_400,
            admin_email: None,
            admin_password: None,
            demo: false,
            log: None,
            log_json: false,
            request_timeout_seconds: 30,
            body_limit_bytes: 64 * 1024,
        }
    }
}

/// What `--demo` created, for the curl walk-through.
#[derive(Debug, Clone)]
pub struct Demo {
    /// The demo creator.
    pub creator: User,
    /// A bearer token of the creator.
    pub creator_token: String,
    /// The demo buyer (follows the creator).
    pub buyer: User,
    /// A bearer token of the buyer.
    pub buyer_token: String,
    /// The product.
    pub product_id: uuid::Uuid,
    /// The live drop.
    pub drop_id: uuid::Uuid,
}

/// A configured server, bound to its address, not yet serving.
pub struct Server {
    state: AppState,
    listener: TcpListener,
    local_addr: SocketAddr,
    demo: Option<Demo>,
    closers: Vec<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// Backends chosen by configuration.
struct Wiring {
    ports: Ports,
    checks: Vec<ReadinessCheck>,
    closers: Vec<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>,
}

async fn wire(settings: &Settings) -> anyhow::Result<Wiring> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut checks = Vec::new();
    let mut closers: Vec<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> = Vec::new();

    let (cache, gate) = cache_port(settings).await?;
    let bus = bus_port(settings, &mut checks).await?;

    let url = settings.database_url.as_deref().filter(|u| !u.is_empty());
    let mut ports = match url {
        _ if settings.in_memory => {
            if url.is_some() {
                return Err(anyhow!(
                    "--in-memory and LIVEDROP_DATABASE_URL both name a store; choose one"
                ));
            }
            tracing::info!("store: in memory (--in-memory); data is lost on exit");
            from_store(
                Arc::new(livedrop_adapters::memory::MemoryStore::new()),
                cache,
                bus,
                clock,
            )
        }
        None => {
            let store = StoreSpot {
                checks: &mut checks,
                closers: &mut closers,
            };
            sqlite_ports(settings, DEFAULT_SQLITE_URL, store, cache, bus, clock).await?
        }
        Some(url) if url.starts_with("sqlite:") => {
            let store = StoreSpot {
                checks: &mut checks,
                closers: &mut closers,
            };
            sqlite_ports(settings, url, store, cache, bus, clock).await?
        }
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let store = StoreSpot {
                checks: &mut checks,
                closers: &mut closers,
            };
            postgres_ports(settings, url, store, cache, bus, clock).await?
        }
        Some(_) => {
            return Err(anyhow!(
                "LIVEDROP_DATABASE_URL must start with sqlite:// (a file) or postgres:// (a server)"
            ))
        }
    };
    if let Some(gate) = gate {
        ports = ports.with_gate(gate);
    }
    Ok(Wiring {
        ports,
        checks,
        closers,
    })
}

fn from_store<S: Store>(
    store: Arc<S>,
    cache: Arc<dyn Cache>,
    bus: Arc<dyn EventBus>,
    clock: Arc<dyn Clock>,
) -> Ports {
    Ports::from_store(store, cache, bus, clock)
}

/// The store of a server started without LIVEDROP_DATABASE_URL nor --in-memory.
pub const DEFAULT_SQLITE_URL: &str = "sqlite://./livedrop.db";

/// Where a store adds its readiness check and its closer.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
struct StoreSpot<'a> {
    checks: &'a mut Vec<ReadinessCheck>,
    closers: &'a mut Vec<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>,
}

#[cfg(feature = "sqlite")]
async fn sqlite_ports(
    settings: &Settings,
    url: &str,
    spot: StoreSpot<'_>,
    cache: Arc<dyn Cache>,
    bus: Arc<dyn EventBus>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Ports> {
    use livedrop_adapters::sqlite::{path_of_url, SqliteOptions, SqliteStore};
    let path = path_of_url(url).map_err(|e| anyhow!("LIVEDROP_DATABASE_URL: {}", cause(&e)))?;
    let options = SqliteOptions {
        sync_commits: settings.sqlite_synchronous != "normal",
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(&path, options)
        .await
        .map_err(|e| anyhow!("cannot open the SQLite store: {}", cause(&e)))?;
    store
        .migrate()
        .await
        .map_err(|e| anyhow!("SQLite migrations failed: {}", describe(&e)))?;
    let shown = std::path::absolute(&path).unwrap_or(path);
    tracing::info!(
        file = %shown.display(),
        synchronous = %settings.sqlite_synchronous,
        "store: SQLite file (one process; LIVEDROP_DATABASE_URL=postgres://… for several), migrations applied"
    );
    let ping = store.clone();
    spot.checks.push(ReadinessCheck::new("store", move || {
        let ping = ping.clone();
        async move { ping.ping().await.map_err(|e| describe(&e)) }
    }));
    let closing = store.clone();
    spot.closers
        .push(Box::pin(async move { closing.close().await }));
    Ok(from_store(Arc::new(store), cache, bus, clock))
}

#[cfg(not(feature = "sqlite"))]
async fn sqlite_ports(
    _: &Settings,
    _: &str,
    _: StoreSpot<'_>,
    _: Arc<dyn Cache>,
    _: Arc<dyn EventBus>,
    _: Arc<dyn Clock>,
) -> anyhow::Result<Ports> {
    Err(anyhow!(
        "this build has no SQLite support (cargo feature `sqlite`): set LIVEDROP_DATABASE_URL=postgres://… or pass --in-memory"
    ))
}

/// A store error as an operator reads it: an unavailable store's own sentence, or
/// the error and its sources.
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
fn cause(e: &livedrop_core::StoreError) -> String {
    match e {
        livedrop_core::StoreError::Unavailable { source, .. } => describe(source.as_ref()),
        other => describe(other),
    }
}

#[cfg(feature = "postgres")]
async fn postgres_ports(
    settings: &Settings,
    url: &str,
    spot: StoreSpot<'_>,
    cache: Arc<dyn Cache>,
    bus: Arc<dyn EventBus>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Ports> {
    use livedrop_adapters::postgres::{PgOptions, PgStore};
    let options = PgOptions {
        max_connections: settings.database_max_connections,
        schema: settings.database_schema.clone(),
        ..PgOptions::default()
    };
    let store = PgStore::connect(url, options)
        .await
        .map_err(|e| anyhow!("cannot connect to PostgreSQL: {}", describe(&e)))?;
    store
        .migrate()
        .await
        .map_err(|e| anyhow!("PostgreSQL migrations failed: {}", describe(&e)))?;
    tracing::info!(schema = ?settings.database_schema, "store: PostgreSQL, migrations applied");
    let ping = store.clone();
    spot.checks.push(ReadinessCheck::new("store", move || {
        let ping = ping.clone();
        async move { ping.ping().await.map_err(|e| describe(&e)) }
    }));
    let closing = store.clone();
    spot.closers
        .push(Box::pin(async move { closing.close().await }));
    Ok(from_store(Arc::new(store), cache, bus, clock))
}

#[cfg(not(feature = "postgres"))]
async fn postgres_ports(
    _: &Settings,
    _: &str,
    _: StoreSpot<'_>,
    _: Arc<dyn Cache>,
    _: Arc<dyn EventBus>,
    _: Arc<dyn Clock>,
) -> anyhow::Result<Ports> {
    Err(anyhow!(
        "LIVEDROP_DATABASE_URL is set but this build has no PostgreSQL support (cargo feature `postgres`)"
    ))
}

type GatePort = Option<Arc<dyn livedrop_core::ports::AdmissionGate>>;

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
        .map_err(|e| anyhow!("cannot connect to Redis: {e}"))?;
    let gate = RedisGate::new(cache.connection(), &settings.redis_namespace, options);
    tracing::info!(namespace = %settings.redis_namespace, "cache: Redis, with the sold-out gate");
    Ok((Arc::new(cache), Some(Arc::new(gate))))
}

#[cfg(not(feature = "redis"))]
async fn redis_ports(_: &Settings, _: &str) -> anyhow::Result<(Arc<dyn Cache>, GatePort)> {
    Err(anyhow!(
        "LIVEDROP_REDIS_URL is set but this build has no Redis support (cargo feature `redis`)"
    ))
}

async fn bus_port(
    settings: &Settings,
    checks: &mut Vec<ReadinessCheck>,
) -> anyhow::Result<Arc<dyn EventBus>> {
    match &settings.kafka_brokers {
        None => {
            tracing::info!("event bus: in process (LIVEDROP_KAFKA_BROKERS unset)");
            Ok(Arc::new(livedrop_adapters::memory::MemoryBus::new()))
        }
        Some(brokers) => kafka_port(settings, brokers, checks).await,
    }
}

#[cfg(feature = "kafka")]
async fn kafka_port(
    settings: &Settings,
    brokers: &str,
    checks: &mut Vec<ReadinessCheck>,
) -> anyhow::Result<Arc<dyn EventBus>> {
    use livedrop_adapters::kafka::{KafkaBus, KafkaOptions};
    let options = KafkaOptions {
        topic_prefix: settings.kafka_topic_prefix.clone(),
        ..KafkaOptions::default()
    };
    let bus = KafkaBus::connect(brokers, options)
        .await
        .map_err(|e| anyhow!("cannot connect to Kafka: {e}"))?;
    tracing::info!(brokers, prefix = %settings.kafka_topic_prefix, "event bus: Kafka");
    let list: Vec<String> = brokers.split(',').map(|b| b.trim().to_owned()).collect();
    checks.push(ReadinessCheck::new("bus", move || {
        let list = list.clone();
        async move { broker_reachable(&list).await }
    }));
    Ok(Arc::new(bus))
}

#[cfg(not(feature = "kafka"))]
async fn kafka_port(
    _: &Settings,
    _: &str,
    _: &mut Vec<ReadinessCheck>,
) -> anyhow::Result<Arc<dyn EventBus>> {
    Err(anyhow!(
        "LIVEDROP_KAFKA_BROKERS is set but this build has no Kafka support (cargo feature `kafka`)"
    ))
}

/// Whether any bootstrap broker accepts a TCP connection (the bus adapter offers
/// no ping; a refused connection is what an outage looks like from here).
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
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

/// An error and its sources on one line.
#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Connects the configured backends (running migrations), bootstraps the admin,
/// seeds the demo if asked, and binds the address. Every failure is one clear line.
pub async fn build(settings: &Settings) -> anyhow::Result<Server> {
    let addr: SocketAddr = settings.addr.parse().map_err(|_| {
        anyhow!(
            "LIVEDROP_ADDR {:?} is not a socket address like 127.0.0.1:8080",
            settings.addr
        )
    })?;
    if settings.token_ttl_seconds == 0 {
        return Err(anyhow!("LIVEDROP_TOKEN_TTL_SECONDS must be at least 1"));
    }
    if settings.hold_seconds == 0 {
        return Err(anyhow!("LIVEDROP_HOLD_SECONDS must be at least 1"));
    }
    let wiring = wire(settings).await?;
    // Replicas on one PostgreSQL with no broker share no bus: each follows the
    // outbox itself so its live feed and cache see every committed event.
    let shared_database = settings
        .database_url
        .as_deref()
        .is_some_and(|url| url.starts_with("postgres"));
    let config = Config {
        hold: Duration::from_secs(settings.hold_seconds),
        follow_outbox: shared_database && settings.kafka_brokers.is_none(),
        ..Config::default()
    };
    let livedrop = Livedrop::new(wiring.ports, config);

    match (&settings.admin_email, &settings.admin_password) {
        (Some(email), Some(password)) => {
            let admin = livedrop
                .bootstrap_admin(email, password, "Administrator")
                .await
                .map_err(|e| anyhow!("admin bootstrap for {email} failed: {e}"))?;
            tracing::info!(admin = %admin.id, email = %admin.email, "admin account ready");
        }
        (None, None) => {}
        _ => {
            return Err(anyhow!(
                "set both LIVEDROP_ADMIN_EMAIL and LIVEDROP_ADMIN_PASSWORD, or neither"
            ))
        }
    }

    let ttl = Duration::from_secs(settings.token_ttl_seconds);
    let tokens = match &settings.token_secret {
        Some(secret) if secret.len() >= 16 => TokenKeys::new(secret.as_bytes(), ttl),
        Some(_) => return Err(anyhow!("LIVEDROP_TOKEN_SECRET must be at least 16 bytes")),
        None => {
            tracing::warn!("LIVEDROP_TOKEN_SECRET unset: signing tokens with a random secret; tokens will not survive a restart nor work on other processes");
            TokenKeys::random(ttl)
        }
    };
    let mut checks = default_checks(&livedrop);
    // Adapter-specific probes replace the generic ones of the same name.
    for check in wiring.checks {
        checks.retain(|c| c.name != check.name);
        checks.push(check);
    }
    let options = HttpOptions {
        tokens,
        internal_token: settings.internal_token.clone().filter(|t| !t.is_empty()),
        order_rate_per_user: settings.order_rate_per_user,
        order_rate_per_ip: settings.order_rate_per_ip,
        body_limit: settings.body_limit_bytes,
        request_timeout: Duration::from_secs(settings.request_timeout_seconds.max(1)),
        readiness: checks,
    };
    if options.internal_token.is_none() {
        tracing::info!("LIVEDROP_INTERNAL_TOKEN unset: the internal API answers 403");
    }
    let state = AppState::new(livedrop, options);
    let demo = if settings.demo {
        Some(
            seed_demo(&state)
                .await
                .map_err(|e| anyhow!("demo seeding failed: {e}"))?,
        )
    } else {
        None
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local_addr = listener.local_addr().context("no local address")?;
    Ok(Server {
        state,
        listener,
        local_addr,
        demo,
        closers: wiring.closers,
    })
}

/// Creates (or reuses) the demo creator and buyer, a product and a drop live now;
/// when an earlier start seeded a drop that has not ended, reuses it instead.
pub async fn seed_demo(state: &AppState) -> Result<Demo, livedrop_core::Error> {
    let livedrop = state.livedrop();
    let password = "demo-password";
    let creator = demo_user(
        livedrop,
        "creator@demo.livedrop",
        "Demo Creator",
        Role::Creator,
        password,
    )
    .await?;
    let buyer = demo_user(
        livedrop,
        "buyer@demo.livedrop",
        "Demo Buyer",
        Role::Customer,
        password,
    )
    .await?;
    livedrop.follow(&buyer.actor(), creator.id).await?;
    let actor = creator.actor();
    let token = |a: &Actor| {
        state
            .tokens()
            .issue(a)
            .map(|(t, _)| t)
            .map_err(|_| livedrop_core::Error::Internal)
    };
    // A durable store keeps the demo: seed it once, reuse it on later starts while
    // its drop can still be shown.
    let seeded = livedrop
        .list_drops(
            DropFilter {
                status: None,
                creator_id: Some(creator.id),
            },
            PageRequest::first(1),
        )
        .await?
        .items
        .into_iter()
        .next()
        .filter(|v| {
            !matches!(
                v.status_at(Utc::now()),
                DropStatus::Ended | DropStatus::Cancelled
            )
        });
    if let Some(view) = seeded {
        tracing::info!(drop = %view.drop.id, "demo data already seeded; reusing it");
        return Ok(Demo {
            creator_token: token(&actor)?,
            buyer_token: token(&buyer.actor())?,
            creator,
            buyer,
            product_id: view.drop.product_id.0,
            drop_id: view.drop.id.0,
        });
    }
    let product = livedrop
        .create_product(
            &actor,
            NewProduct {
                title: "Demo hoodie".into(),
                description: "Heavyweight cotton, limited run".into(),
                price_cents: 4_900,
                currency: "EUR".into(),
                image_url: Some("https://cdn.example.com/demo-hoodie.jpg".into()),
            },
        )
        .await?;
    let view = livedrop
        .schedule_drop(
            &actor,
            NewDrop {
                product_id: product.id,
                starts_at: None,
                ends_at: Utc::now() + chrono::Duration::hours(24),
                total_stock: 100,
                per_user_limit: Some(5),
            },
        )
        .await?;
    Ok(Demo {
        creator_token: token(&actor)?,
        buyer_token: token(&buyer.actor())?,
        creator,
        buyer,
        product_id: product.id.0,
        drop_id: view.drop.id.0,
    })
}

async fn demo_user(
    livedrop: &Livedrop,
    email: &str,
    name: &str,
    role: Role,
    password: &str,
) -> Result<User, livedrop_core::Error> {
    match livedrop
        .register(Registration {
            email: email.into(),
            password: password.into(),
            display_name: name.into(),
            role,
        })
        .await
    {
        Ok(user) => Ok(user),
        Err(livedrop_core::Error::EmailTaken) => livedrop.authenticate(email, password).await,
        Err(e) => Err(e),
    }
}

impl Server {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The router's state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// What `--demo` seeded.
    pub fn demo(&self) -> Option<&Demo> {
        self.demo.as_ref()
    }

    /// Runs the background tasks and serves until `shutdown` completes; then stops
    /// accepting, ends live streams, drains in-flight requests, stops the background
    /// tasks and closes the backends.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Server {
            state,
            listener,
            local_addr,
            closers,
            ..
        } = self;
        let background = state.livedrop().spawn_background();
        let housekeeping = {
            let state = state.clone();
            let token = state.shutdown_token();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = every.tick() => state.limits().retain_recent(),
                    }
                }
            })
        };
        let token = state.shutdown_token();
        let app = crate::router(state.clone());
        tracing::info!(addr = %local_addr, "serving");
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight requests");
            token.cancel();
        })
        .await;
        state.shutdown_token().cancel();
        let _ = housekeeping.await;
        background.shutdown().await;
        for close in closers {
            close.await;
        }
        tracing::info!("stopped");
        served.context("the server failed")
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
