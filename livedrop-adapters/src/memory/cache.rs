//! [`MemoryCache`]: an in-process [`Cache`] with TTLs, fences and prefix invalidation.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

// Tokio's instant follows the virtual clock of a paused runtime (simulation) and the
// wall clock otherwise.
use tokio::time::Instant;

use async_trait::async_trait;
use livedrop_core::ports::{Cache, CacheError};

/// How long an invalidation is remembered for fencing. A fence older than this is
/// treated as stale: its `set` is dropped, which only costs a cache miss.
const FENCE_HORIZON: Duration = Duration::from_secs(60);

/// The entry count below which expired entries are only evicted lazily.
const MIN_SWEEP: usize = 1024;

/// An in-process cache with real TTLs, fenced writes and prefix invalidation.
///
/// Every invalidation advances one generation counter and records the generation
/// against the key or prefix it hit; [`Cache::fence`] hands out the current
/// generation, and a fenced [`Cache::set`] is dropped (returning `Ok(false)`) when
/// its key, or a prefix of it, was invalidated after the fence was taken. That is
/// what keeps a slow loader from writing back a value older than an invalidation.
///
/// Memory stays bounded by live data: expired entries are dropped when read, and
/// all of them are swept whenever the map doubles past its last live size;
/// invalidation records older than a minute are forgotten (fences older than that
/// count as stale).
///
/// ```
/// use std::time::Duration;
/// use livedrop_adapters::memory::MemoryCache;
/// use livedrop_core::ports::Cache;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let cache = MemoryCache::new();
/// let ttl = Duration::from_secs(60);
///
/// // A loader takes a fence before reading the store...
/// let fence = cache.fence("drop:42").await?;
/// // ...meanwhile a write invalidates every drop entry...
/// cache.invalidate_prefix("drop:").await?;
/// // ...so the loader's now-stale value is not stored.
/// assert!(!cache.set("drop:42", b"old", ttl, Some(fence)).await?);
/// assert_eq!(cache.get("drop:42").await?, None);
///
/// // A write-through set needs no fence.
/// assert!(cache.set("drop:42", b"new", ttl, None).await?);
/// assert_eq!(cache.get("drop:42").await?, Some(b"new".to_vec()));
/// # Ok::<_, livedrop_core::ports::CacheError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Default)]
pub struct MemoryCache {
    state: Mutex<CacheState>,
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expires: Instant,
}

/// When a key or prefix was last invalidated.
#[derive(Debug, Clone, Copy)]
struct Mark {
    generation: u64,
    at: Instant,
}

#[derive(Debug, Default)]
struct CacheState {
    entries: HashMap<String, Entry>,
    /// Sweep expired entries when `entries` grows past this.
    sweep_at: usize,
    generation: u64,
    keys: HashMap<String, Mark>,
    prefixes: HashMap<String, Mark>,
    /// Fences below this are stale: the marks that could refute them were forgotten.
    floor: u64,
    /// Forget old marks when there are more than this.
    prune_at: usize,
}

impl CacheState {
    fn is_stale(&self, key: &str, fence: u64) -> bool {
        fence < self.floor
            || self.keys.get(key).is_some_and(|m| m.generation > fence)
            || self
                .prefixes
                .iter()
                .any(|(p, m)| m.generation > fence && key.starts_with(p.as_str()))
    }

    fn mark(&mut self, now: Instant) -> Mark {
        self.generation += 1;
        Mark {
            generation: self.generation,
            at: now,
        }
    }

    fn sweep(&mut self, now: Instant) {
        self.entries.retain(|_, e| e.expires > now);
        self.sweep_at = (self.entries.len() * 2).max(MIN_SWEEP);
    }

    fn prune_marks(&mut self, now: Instant) {
        let mut forgotten = self.floor;
        let mut keep = |m: &Mark| {
            let keep = now.duration_since(m.at) < FENCE_HORIZON;
            if !keep {
                forgotten = forgotten.max(m.generation);
            }
            keep
        };
        self.keys.retain(|_, m| keep(m));
        self.prefixes.retain(|_, m| keep(m));
        self.floor = forgotten;
        self.prune_at = ((self.keys.len() + self.prefixes.len()) * 2).max(MIN_SWEEP);
    }

    fn after_invalidation(&mut self, now: Instant) {
        if self.keys.len() + self.prefixes.len() > self.prune_at.max(MIN_SWEEP) {
            self.prune_marks(now);
        }
    }
}

impl MemoryCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many entries are held, expired ones not yet evicted included.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let mut state = self.lock();
        let now = Instant::now();
        match state.entries.get(key) {
            Some(e) if e.expires > now => Ok(Some(e.value.clone())),
            Some(_) => {
                state.entries.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn fence(&self, _key: &str) -> Result<u64, CacheError> {
        Ok(self.lock().generation)
    }

    async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        fence: Option<u64>,
    ) -> Result<bool, CacheError> {
        let mut state = self.lock();
        if fence.is_some_and(|f| state.is_stale(key, f)) {
            return Ok(false);
        }
        let now = Instant::now();
        // A TTL too large for `Instant` means "practically forever".
        let expires = now
            .checked_add(ttl)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
        state.entries.insert(
            key.to_owned(),
            Entry {
                value: value.to_vec(),
                expires,
            },
        );
        if state.entries.len() > state.sweep_at.max(MIN_SWEEP) {
            state.sweep(now);
        }
        Ok(true)
    }

    async fn invalidate(&self, keys: &[String]) -> Result<u64, CacheError> {
        let mut state = self.lock();
        let now = Instant::now();
        let mark = state.mark(now);
        let mut removed = 0;
        for key in keys {
            if let Some(e) = state.entries.remove(key) {
                removed += u64::from(e.expires > now);
            }
            state.keys.insert(key.clone(), mark);
        }
        state.after_invalidation(now);
        Ok(removed)
    }

    async fn invalidate_prefix(&self, prefix: &str) -> Result<u64, CacheError> {
        let mut state = self.lock();
        let now = Instant::now();
        let mark = state.mark(now);
        let mut removed = 0;
        state.entries.retain(|k, e| {
            let hit = k.starts_with(prefix);
            removed += u64::from(hit && e.expires > now);
            !hit
        });
        state.prefixes.insert(prefix.to_owned(), mark);
        state.after_invalidation(now);
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn expired_entries_are_swept_past_the_threshold() {
        let cache = MemoryCache::new();
        for i in 0..MIN_SWEEP {
            let key = format!("k{i}");
            assert!(cache
                .set(&key, b"v", Duration::from_millis(1), None)
                .await
                .expect("set"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(cache
            .set("fresh", b"v", Duration::from_secs(60), None)
            .await
            .expect("set"));
        assert_eq!(
            cache.len(),
            1,
            "expired entries evicted once past the threshold"
        );
        assert_eq!(cache.get("k0").await.expect("get"), None);
    }

    #[tokio::test]
    async fn forgotten_invalidations_make_old_fences_stale() {
        let cache = MemoryCache::new();
        let fence = cache.fence("a").await.expect("fence");
        cache
            .invalidate(&["b".to_owned()])
            .await
            .expect("invalidate");
        {
            let mut state = cache.lock();
            let later = Instant::now() + FENCE_HORIZON + Duration::from_secs(1);
            state.prune_marks(later);
            assert!(state.keys.is_empty(), "old marks forgotten");
        }
        assert!(
            !cache
                .set("a", b"v", Duration::from_secs(60), Some(fence))
                .await
                .expect("set"),
            "a fence older than the forgotten marks is stale"
        );
        let fresh = cache.fence("a").await.expect("fence");
        assert!(cache
            .set("a", b"v", Duration::from_secs(60), Some(fresh))
            .await
            .expect("set"));
    }
}
