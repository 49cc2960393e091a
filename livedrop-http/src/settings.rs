//! The server's settings: each one an environment variable and a command-line flag
//! (read by clap), and their translation into the typed values the other modules
//! take (a socket address, the core's `Config`, token keys, `HttpOptions`). Every
//! refused value is one clear error naming its variable.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail};
use livedrop_core::service::AdmissionKey;
use livedrop_core::Config;

use crate::auth::TokenKeys;
use crate::state::{HttpOptions, ReadinessCheck};

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
    /// Serves the storefront page at `/` (`--storefront false` or
    /// `LIVEDROP_STOREFRONT=0` turns it off; the API is unchanged either way).
    #[arg(long, env = "LIVEDROP_STOREFRONT", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub storefront: bool,
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
            storefront: true,
            log: None,
            log_json: false,
            request_timeout_seconds: 30,
            body_limit_bytes: 64 * 1024,
        }
    }
}

/// The operator's admin account to create at startup.
pub(crate) struct AdminAccount<'a> {
    pub(crate) email: &'a str,
    pub(crate) password: &'a str,
}

impl Settings {
    /// The address to listen on.
    pub(crate) fn socket_addr(&self) -> anyhow::Result<SocketAddr> {
        self.addr.parse().map_err(|_| {
            anyhow!(
                "LIVEDROP_ADDR {:?} is not a socket address like 127.0.0.1:8080",
                self.addr
            )
        })
    }

    /// Refuses settings that cannot work whatever the backends: zero lifetimes.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        if self.token_ttl_seconds == 0 {
            bail!("LIVEDROP_TOKEN_TTL_SECONDS must be at least 1");
        }
        if self.hold_seconds == 0 {
            bail!("LIVEDROP_HOLD_SECONDS must be at least 1");
        }
        Ok(())
    }

    /// The core's tunables. Replicas on one PostgreSQL with no broker share no bus:
    /// each follows the outbox itself so its live feed and cache see every committed
    /// event.
    pub(crate) fn core_config(&self) -> Config {
        let shared_database = self
            .database_url
            .as_deref()
            .is_some_and(|url| url.starts_with("postgres"));
        Config {
            hold: Duration::from_secs(self.hold_seconds),
            follow_outbox: shared_database && self.kafka_brokers.is_none(),
            admission_key: self.admission_key(),
            ..Config::default()
        }
    }

    /// The key signing waiting-room admission tokens: derived from
    /// `LIVEDROP_TOKEN_SECRET` with a domain-separating hash (never the raw secret,
    /// which also signs bearer tokens), so servers sharing the secret accept each
    /// other's admissions; random per process when unset.
    pub(crate) fn admission_key(&self) -> AdmissionKey {
        match &self.token_secret {
            Some(secret) => AdmissionKey::new(&admission_key_bytes(secret)),
            None => AdmissionKey::random(),
        }
    }

    /// The admin account to bootstrap, if both of its settings are given.
    pub(crate) fn admin(&self) -> anyhow::Result<Option<AdminAccount<'_>>> {
        match (&self.admin_email, &self.admin_password) {
            (Some(email), Some(password)) => Ok(Some(AdminAccount { email, password })),
            (None, None) => Ok(None),
            _ => bail!("set both LIVEDROP_ADMIN_EMAIL and LIVEDROP_ADMIN_PASSWORD, or neither"),
        }
    }

    /// The keys signing bearer tokens: from the configured secret, or a random one
    /// (tokens then die with the process).
    pub(crate) fn token_keys(&self) -> anyhow::Result<TokenKeys> {
        let ttl = Duration::from_secs(self.token_ttl_seconds);
        match &self.token_secret {
            Some(secret) if secret.len() >= 16 => Ok(TokenKeys::new(secret.as_bytes(), ttl)),
            Some(_) => bail!("LIVEDROP_TOKEN_SECRET must be at least 16 bytes"),
            None => {
                tracing::warn!("LIVEDROP_TOKEN_SECRET unset: signing tokens with a random secret; tokens will not survive a restart nor work on other processes");
                Ok(TokenKeys::random(ttl))
            }
        }
    }

    /// The HTTP layer's options with `tokens` and the `readiness` probes.
    pub(crate) fn http_options(
        &self,
        tokens: TokenKeys,
        readiness: Vec<ReadinessCheck>,
    ) -> HttpOptions {
        let internal_token = self.internal_token.clone().filter(|t| !t.is_empty());
        if internal_token.is_none() {
            tracing::info!("LIVEDROP_INTERNAL_TOKEN unset: the internal API answers 403");
        }
        HttpOptions {
            tokens,
            internal_token,
            order_rate_per_user: self.order_rate_per_user,
            order_rate_per_ip: self.order_rate_per_ip,
            body_limit: self.body_limit_bytes,
            request_timeout: Duration::from_secs(self.request_timeout_seconds.max(1)),
            readiness,
            storefront: self.storefront,
        }
    }
}

/// The admission key's bytes for `secret`: SHA-256 over a domain label and the
/// secret, so the bearer-token key and the admission key never coincide.
fn admission_key_bytes(secret: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(b"livedrop:admission-key:v1\0");
    hash.update(secret.as_bytes());
    hash.finalize().into()
}
