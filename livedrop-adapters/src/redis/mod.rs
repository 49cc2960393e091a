//! Redis adapters: [`RedisCache`] (the read cache, with fenced writes) and
//! [`RedisGate`] (the early sold-out gate).
//!
//! Both sit on a [`ConnectionManager`], which reconnects by itself after an outage,
//! and bound every command by a short timeout ([`RedisOptions::command_timeout`]) so
//! that a Redis outage turns into a quick [`CacheError`] rather than a stalled read.
//! The caching layer treats those errors as misses and the order path treats gate
//! errors as "admit", so Redis never decides anything on its own.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use livedrop_adapters::redis::{RedisCache, RedisGate, RedisOptions};
//!
//! let cache = RedisCache::connect("redis://127.0.0.1:6379", "livedrop").await?;
//! // The gate can share the cache's connection.
//! let gate = RedisGate::new(cache.connection(), "livedrop", RedisOptions::default());
//! # let _ = gate;
//! # Ok(())
//! # }
//! ```

/// Writes what every Redis adapter shares: `connect` and `connect_with` (a
/// [`connect`]ed manager handed to the adapter's own `new(conn, namespace, options)`)
/// and a `Debug` that shows the namespace and the options, never the connection.
/// `$keeps` says what the adapter keeps under its namespace.
macro_rules! redis_adapter {
    ($name:ident, $keeps:literal) => {
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("namespace", &self.namespace)
                    .field("options", &self.options)
                    .finish_non_exhaustive()
            }
        }

        impl $name {
            #[doc = concat!(
                "Connects to `url` (e.g. `redis://127.0.0.1:6379`) with default options and keeps ",
                $keeps,
                " under `namespace`. Fails with a [`ConnectError`] when the URL is invalid or \
                 the server does not answer."
            )]
            pub async fn connect(url: &str, namespace: &str) -> Result<Self, ConnectError> {
                Self::connect_with(url, namespace, RedisOptions::default()).await
            }

            /// [`connect`](Self::connect) with explicit options.
            pub async fn connect_with(
                url: &str,
                namespace: &str,
                options: RedisOptions,
            ) -> Result<Self, ConnectError> {
                let conn = connect(url, &options).await?;
                Ok(Self::new(conn, namespace, options))
            }
        }
    };
}

mod cache;
mod gate;
#[cfg(feature = "testing")]
pub mod testing;

use std::time::Duration;

use livedrop_core::ports::CacheError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError};

pub use cache::RedisCache;
pub use gate::RedisGate;

/// Tunables shared by the Redis adapters.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Upper bound of every command, reconnection attempts included (default 250 ms).
    /// Past it the call returns a [`CacheError`].
    pub command_timeout: Duration,
    /// Upper bound of [`connect`] as a whole: resolving, connecting and a first
    /// `PING` (default 3 s).
    pub connect_timeout: Duration,
    /// Relative spread applied to every cache TTL, so entries written together do
    /// not expire together (default 0.1: ±10 %).
    pub ttl_jitter: f64,
    /// Lifetime of a key's fence generation counter, refreshed by every `fence`
    /// (default 1 hour). A fenced write whose counter expired is dropped, so this
    /// only needs to exceed the longest load between `fence` and `set`.
    pub generation_ttl: Duration,
    /// Lifetime of a gate entry (default 5 s): a stale "sold out" never outlives it.
    pub gate_ttl: Duration,
    /// Keys asked for per `SCAN` round trip during prefix invalidation (default 500).
    pub scan_count: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            command_timeout: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(3),
            ttl_jitter: 0.1,
            generation_ttl: Duration::from_secs(3600),
            gate_ttl: Duration::from_secs(5),
            scan_count: 500,
        }
    }
}

/// Why connecting to Redis failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is not a Redis URL.
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(#[source] RedisError),
    /// The server could not be reached or did not answer `PING`.
    #[error("Redis server unreachable: {0}")]
    Unreachable(#[source] RedisError),
    /// The server did not answer within [`RedisOptions::connect_timeout`].
    #[error("Redis server did not answer within {0:?}")]
    Timeout(Duration),
}

/// Opens a [`ConnectionManager`] to `url` and checks it with a `PING`.
///
/// The manager reconnects by itself after an outage; commands issued while it is
/// reconnecting fail after [`RedisOptions::command_timeout`].
pub async fn connect(url: &str, options: &RedisOptions) -> Result<ConnectionManager, ConnectError> {
    let client = Client::open(url).map_err(ConnectError::InvalidUrl)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.command_timeout))
        .set_response_timeout(Some(options.command_timeout))
        // Reconnection happens in the background; a few quick attempts per failed
        // command are enough, the next command triggers another round.
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(20))
        .set_max_delay(Duration::from_millis(200));
    let attempt = async {
        let mut manager = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(ConnectError::Unreachable)?;
        redis::cmd("PING")
            .query_async::<String>(&mut manager)
            .await
            .map_err(ConnectError::Unreachable)?;
        Ok(manager)
    };
    tokio::time::timeout(options.connect_timeout, attempt)
        .await
        .map_err(|_| ConnectError::Timeout(options.connect_timeout))?
}

/// Runs one Redis call under `timeout`, mapping every failure to a [`CacheError`].
async fn bounded<T>(
    timeout: Duration,
    what: &'static str,
    call: impl std::future::Future<Output = Result<T, RedisError>>,
) -> Result<T, CacheError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => {
            tracing::debug!(operation = what, error = %err, "redis command failed");
            Err(CacheError(Box::new(err)))
        }
        Err(_) => {
            tracing::debug!(operation = what, ?timeout, "redis command timed out");
            Err(CacheError(Box::new(CommandTimeout { what, timeout })))
        }
    }
}

/// A command that did not complete in time.
#[derive(Debug, thiserror::Error)]
#[error("redis {what} timed out after {timeout:?}")]
struct CommandTimeout {
    what: &'static str,
    timeout: Duration,
}

/// Escapes the glob metacharacters of `SCAN MATCH` in `s`.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape_glob;

    #[test]
    fn glob_metacharacters_are_escaped() {
        assert_eq!(escape_glob("drop:*"), "drop:\\*");
        assert_eq!(escape_glob("a?b[c]d\\"), "a\\?b\\[c\\]d\\\\");
        assert_eq!(escape_glob("plain:key"), "plain:key");
    }
}
