//! The Redis admission gate.

use async_trait::async_trait;
use livedrop_core::model::Stock;
use livedrop_core::ports::{AdmissionGate, CacheError};
use livedrop_core::DropId;
use redis::aio::ConnectionManager;
use redis::Script;

use super::{bounded, connect, ConnectError, RedisOptions};

/// Stores (version, available) unless a newer version is stored, and (re)arms the
/// entry's expiry. KEYS[1] = gate key; ARGV = version, available, TTL ms.
const RECORD: &str = r"
local stored = redis.call('HGET', KEYS[1], 'v')
if stored and tonumber(stored) > tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'a', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

/// 0 only when a stored `available` is below the requested quantity.
/// KEYS[1] = gate key; ARGV[1] = quantity.
const ADMIT: &str = r"
local available = redis.call('HGET', KEYS[1], 'a')
if available and tonumber(available) < tonumber(ARGV[1]) then
  return 0
end
return 1
";

/// An [`AdmissionGate`] in Redis, shared by every server process.
///
/// Each variant of a drop has its own hash at `<ns>:gate:<drop id>:<sku>` holding the
/// variant's last recorded stock version and available units (a sku is
/// `[A-Za-z0-9._-]`, so no two variants share a key), and versions of one variant
/// never order another's. [`record`](AdmissionGate::record) and
/// [`admit`](AdmissionGate::admit) are one Lua script each, so a recorded version
/// never goes backwards under concurrent writers. Entries expire after
/// [`RedisOptions::gate_ttl`] (5 s by default): that is the longest a stale
/// "sold out" (for instance after a restock whose record was lost) can refuse
/// orders. Unknown or expired drops and variants are admitted.
///
/// Errors (Redis down, timeout) surface as [`CacheError`]; callers admit on error.
#[derive(Clone)]
pub struct RedisGate {
    conn: ConnectionManager,
    namespace: String,
    options: RedisOptions,
    record: Script,
    admit: Script,
}

redis_adapter!(RedisGate, "its entries");

impl RedisGate {
    /// A gate over an existing connection (for instance [`RedisCache::connection`](super::RedisCache::connection)).
    pub fn new(conn: ConnectionManager, namespace: &str, options: RedisOptions) -> Self {
        Self {
            conn,
            namespace: namespace.to_owned(),
            options,
            record: Script::new(RECORD),
            admit: Script::new(ADMIT),
        }
    }

    fn key(&self, drop: DropId, sku: &str) -> String {
        format!("{}:gate:{drop}:{sku}", self.namespace)
    }
}

#[async_trait]
impl AdmissionGate for RedisGate {
    async fn admit(&self, drop: DropId, sku: &str, quantity: u32) -> Result<bool, CacheError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.admit.key(self.key(drop, sku));
        invocation.arg(quantity);
        let admitted: i64 = bounded(
            self.options.command_timeout,
            "gate admit",
            invocation.invoke_async(&mut conn),
        )
        .await?;
        Ok(admitted == 1)
    }

    async fn record(
        &self,
        drop: DropId,
        sku: &str,
        stock: &Stock,
        version: i64,
    ) -> Result<(), CacheError> {
        let mut conn = self.conn.clone();
        let ttl_ms = self.options.gate_ttl.as_millis().max(1) as u64;
        let mut invocation = self.record.key(self.key(drop, sku));
        invocation.arg(version).arg(stock.available).arg(ttl_ms);
        let stored: i64 = bounded(
            self.options.command_timeout,
            "gate record",
            invocation.invoke_async(&mut conn),
        )
        .await?;
        if stored == 0 {
            tracing::trace!(%drop, sku, version, "gate kept a newer stock version");
        }
        Ok(())
    }
}
