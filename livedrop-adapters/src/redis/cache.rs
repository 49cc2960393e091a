//! The Redis read cache.

use std::time::Duration;

use async_trait::async_trait;
use livedrop_core::ports::{Cache, CacheError};
use rand::Rng;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

use super::{bounded, connect, escape_glob, ConnectError, RedisOptions};

/// Returns a key's generation, creating it at 0 on the first fence, and refreshes
/// its lifetime. KEYS[1] = generation key; ARGV[1] = its TTL in ms.
const FENCE: &str = r"
local g = redis.call('GET', KEYS[1])
if not g then
  g = '0'
  redis.call('SET', KEYS[1], g, 'PX', ARGV[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return tonumber(g)
";

/// Writes a value only if its generation still equals the fence. A missing
/// generation (expired) refuses the write: dropping a cache fill is always safe.
/// KEYS[1] = value key, KEYS[2] = generation key; ARGV = value, TTL ms, fence.
const FENCED_SET: &str = r"
local g = redis.call('GET', KEYS[2])
if (not g) or g ~= ARGV[3] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// Deletes values and bumps the generations that exist. KEYS = value keys, then
/// generation keys, in two halves. Returns how many values were removed.
///
/// Generations go first: a fenced write that runs after this script sees the new
/// generation; one that ran before wrote a value this script deletes.
const INVALIDATE: &str = r"
local n = #KEYS / 2
for i = n + 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('INCR', KEYS[i])
  end
end
local removed = 0
for i = 1, n do
  removed = removed + redis.call('UNLINK', KEYS[i])
end
return removed
";

/// Bumps the generations among KEYS that still exist.
const BUMP: &str = r"
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('INCR', KEYS[i])
  end
end
return #KEYS
";

/// A [`Cache`] in Redis.
///
/// Every key lives under the instance's namespace: values at `<ns>:v:<key>`, fence
/// generations at `<ns>:g:<key>`. Two instances with different namespaces never see
/// each other's entries, so tests isolate by namespace.
///
/// - TTLs get a random spread of ±[`RedisOptions::ttl_jitter`].
/// - [`fence`](Cache::fence) returns the key's generation counter, created at 0 on
///   the first fence with its own TTL ([`RedisOptions::generation_ttl`]);
///   invalidations bump the generations of the keys they remove, and a fenced
///   [`set`](Cache::set) is one Lua script that writes only while the generation
///   still equals the fence.
/// - [`invalidate_prefix`](Cache::invalidate_prefix) walks the namespace with
///   `SCAN MATCH … COUNT` (never `KEYS`), bumping the generations found under the
///   prefix first, then `UNLINK`ing the values.
/// - Every command is bounded by [`RedisOptions::command_timeout`]; during an outage
///   calls fail fast with a [`CacheError`] and the same instance recovers on its own.
#[derive(Clone)]
pub struct RedisCache {
    conn: ConnectionManager,
    namespace: String,
    options: RedisOptions,
    fence: Script,
    fenced_set: Script,
    invalidate: Script,
    bump: Script,
}

redis_adapter!(RedisCache, "every key");

impl RedisCache {
    /// A cache over an existing connection (see [`connect`](super::connect)).
    pub fn new(conn: ConnectionManager, namespace: &str, options: RedisOptions) -> Self {
        Self {
            conn,
            namespace: namespace.to_owned(),
            options,
            fence: Script::new(FENCE),
            fenced_set: Script::new(FENCED_SET),
            invalidate: Script::new(INVALIDATE),
            bump: Script::new(BUMP),
        }
    }

    /// The underlying connection, to share it with a [`RedisGate`](super::RedisGate).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The namespace every key lives under.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn value_key(&self, key: &str) -> String {
        format!("{}:v:{key}", self.namespace)
    }

    fn generation_key(&self, key: &str) -> String {
        format!("{}:g:{key}", self.namespace)
    }

    fn jittered_ms(&self, ttl: Duration) -> u64 {
        let base = ttl.as_secs_f64() * 1000.0;
        let spread = self.options.ttl_jitter.clamp(0.0, 0.9);
        let factor = if spread > 0.0 {
            rand::thread_rng().gen_range(1.0 - spread..=1.0 + spread)
        } else {
            1.0
        };
        ((base * factor).round() as u64).max(1)
    }

    /// Every key of the namespace matching `pattern` (already escaped), walked with
    /// `SCAN`, one bounded round trip per page.
    async fn scan(&self, pattern: &str) -> Result<Vec<String>, CacheError> {
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut found = Vec::new();
        loop {
            let page: (u64, Vec<String>) = bounded(
                self.options.command_timeout,
                "scan",
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(self.options.scan_count)
                    .query_async(&mut conn),
            )
            .await?;
            found.extend(page.1);
            cursor = page.0;
            if cursor == 0 {
                break;
            }
        }
        // SCAN may return a key more than once.
        found.sort_unstable();
        found.dedup();
        Ok(found)
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let mut conn = self.conn.clone();
        let key = self.value_key(key);
        bounded(
            self.options.command_timeout,
            "get",
            conn.get::<_, Option<Vec<u8>>>(key),
        )
        .await
    }

    async fn fence(&self, key: &str) -> Result<u64, CacheError> {
        let mut conn = self.conn.clone();
        let generation_ttl = self.options.generation_ttl.as_millis().max(1) as u64;
        let mut invocation = self.fence.key(self.generation_key(key));
        invocation.arg(generation_ttl);
        bounded(
            self.options.command_timeout,
            "fence",
            invocation.invoke_async::<u64>(&mut conn),
        )
        .await
    }

    async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        fence: Option<u64>,
    ) -> Result<bool, CacheError> {
        let mut conn = self.conn.clone();
        let ttl_ms = self.jittered_ms(ttl);
        let value_key = self.value_key(key);
        match fence {
            None => {
                bounded(
                    self.options.command_timeout,
                    "set",
                    redis::cmd("SET")
                        .arg(&value_key)
                        .arg(value)
                        .arg("PX")
                        .arg(ttl_ms)
                        .query_async::<()>(&mut conn),
                )
                .await?;
                Ok(true)
            }
            Some(fence) => {
                let mut invocation = self.fenced_set.key(&value_key);
                invocation
                    .key(self.generation_key(key))
                    .arg(value)
                    .arg(ttl_ms)
                    .arg(fence.to_string());
                let stored: i64 = bounded(
                    self.options.command_timeout,
                    "fenced set",
                    invocation.invoke_async(&mut conn),
                )
                .await?;
                Ok(stored == 1)
            }
        }
    }

    async fn invalidate(&self, keys: &[String]) -> Result<u64, CacheError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn.clone();
        let mut invocation = self.invalidate.prepare_invoke();
        for key in keys {
            invocation.key(self.value_key(key));
        }
        for key in keys {
            invocation.key(self.generation_key(key));
        }
        bounded(
            self.options.command_timeout,
            "invalidate",
            invocation.invoke_async::<u64>(&mut conn),
        )
        .await
    }

    async fn invalidate_prefix(&self, prefix: &str) -> Result<u64, CacheError> {
        let mut conn = self.conn.clone();
        let namespace = escape_glob(&self.namespace);
        let prefix = escape_glob(prefix);

        // Generations first (see INVALIDATE): a fill that started before this call
        // either fails its fence or lands before the value sweep below removes it.
        let generations = self.scan(&format!("{namespace}:g:{prefix}*")).await?;
        for batch in generations.chunks(self.options.scan_count.max(1)) {
            let mut invocation = self.bump.prepare_invoke();
            for key in batch {
                invocation.key(key);
            }
            bounded(
                self.options.command_timeout,
                "bump generations",
                invocation.invoke_async::<u64>(&mut conn),
            )
            .await?;
        }

        let values = self.scan(&format!("{namespace}:v:{prefix}*")).await?;
        let mut removed = 0;
        for batch in values.chunks(self.options.scan_count.max(1)) {
            removed += bounded(
                self.options.command_timeout,
                "unlink",
                redis::cmd("UNLINK")
                    .arg(batch)
                    .query_async::<u64>(&mut conn),
            )
            .await?;
        }
        tracing::debug!(
            namespace = %self.namespace,
            removed,
            generations = generations.len(),
            "invalidated cache prefix"
        );
        Ok(removed)
    }
}
