//! The in-memory admission gate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use livedrop_core::model::Stock;
use livedrop_core::ports::{AdmissionGate, CacheError};
use livedrop_core::DropId;
use tokio::time::Instant;

/// An [`AdmissionGate`] in this process's memory, with the Redis gate's semantics:
/// per variant of a drop, the last recorded stock version and its available units; a record of
/// an older version than the one held is ignored; an entry expires `ttl` after its
/// last record (5 s by default), and an unknown or expired variant is admitted.
///
/// Time is tokio's, so a paused runtime (the simulator, tests) controls expiry.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use livedrop_adapters::memory::MemoryGate;
/// use livedrop_core::model::Stock;
/// use livedrop_core::ports::AdmissionGate;
/// use livedrop_core::DropId;
///
/// let gate = MemoryGate::new();
/// let drop = DropId::new();
/// assert!(gate.admit(drop, "m", 1).await?, "unknown drops are admitted");
/// let sold_out = Stock { total: 5, available: 0, reserved: 1, sold: 4 };
/// gate.record(drop, "m", &sold_out, 9).await?;
/// assert!(!gate.admit(drop, "m", 1).await?);
/// assert!(gate.admit(drop, "l", 1).await?, "each size is gated on its own");
/// # Ok::<_, livedrop_core::ports::CacheError>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct MemoryGate {
    ttl: Duration,
    /// Per drop, per variant: looked up by `&str`, so admitting allocates nothing.
    entries: Mutex<HashMap<DropId, HashMap<String, Entry>>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    version: i64,
    available: u32,
    expires: Instant,
}

impl Default for MemoryGate {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryGate {
    /// A gate whose entries live 5 s (the Redis gate's default).
    pub fn new() -> Self {
        Self::with_ttl(Duration::from_secs(5))
    }

    /// A gate whose entries live `ttl` after their last record.
    pub fn with_ttl(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    #[allow(clippy::type_complexity)]
    fn entries(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, HashMap<DropId, HashMap<String, Entry>>>, CacheError>
    {
        self.entries
            .lock()
            .map_err(|_| CacheError("the memory gate's lock is poisoned".into()))
    }
}

#[async_trait]
impl AdmissionGate for MemoryGate {
    async fn admit(&self, drop: DropId, sku: &str, quantity: u32) -> Result<bool, CacheError> {
        let now = Instant::now();
        let entries = self.entries()?;
        Ok(match entries.get(&drop).and_then(|skus| skus.get(sku)) {
            Some(entry) if entry.expires > now => entry.available >= quantity,
            _ => true,
        })
    }

    async fn record(
        &self,
        drop: DropId,
        sku: &str,
        stock: &Stock,
        version: i64,
    ) -> Result<(), CacheError> {
        let now = Instant::now();
        let mut entries = self.entries()?;
        // Forget expired entries, so drops that ended do not accumulate.
        entries.retain(|_, skus| {
            skus.retain(|_, entry| entry.expires > now);
            !skus.is_empty()
        });
        let skus = entries.entry(drop).or_default();
        if skus.get(sku).is_some_and(|e| e.version > version) {
            return Ok(());
        }
        skus.insert(
            sku.to_owned(),
            Entry {
                version,
                available: stock.available,
                expires: now + self.ttl,
            },
        );
        Ok(())
    }
}
