//! The caching layer: cache-aside reads with single flight, write-through on writes,
//! event-driven invalidation, and a breaker so a failing cache never slows or fails
//! a read. Inventory decisions never read the cache.
//!
//! Keys:
//!
//! | key | value | TTL | invalidated by |
//! | --- | --- | --- | --- |
//! | `product:{id}` | product | `entity_ttl` | `product.updated` (and written through) |
//! | `products:{hash}` | a product listing or search page | `listing_ttl` | `product.*` |
//! | `drop:{id}` | drop definition | `entity_ttl` | `drop.*` (and written through) |
//! | `stock:v2:{id}` | the stock of each of a drop's variants | `stock_ttl` | `stock.changed`, `order.*`, `drop.*` |
//! | `drops:{hash}` | a drop listing page | `listing_ttl` | `drop.*` |
//!
//! Displayed stock therefore lags the store by at most the event delivery time, and
//! never more than `stock_ttl` after the last change; listings by at most `listing_ttl`.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// Tokio's instant is the wall clock on a normal runtime and the virtual clock on a
// paused one, so the breaker follows simulated time in deterministic runs.
use tokio::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::error::{Error, Result};
use crate::event::{Event, EventType};
use crate::id::{DropId, ProductId};
use crate::ports::Cache;

/// Key of a cached product.
pub fn product_key(id: ProductId) -> String {
    format!("product:{id}")
}

/// Key of a cached drop definition.
pub fn drop_key(id: DropId) -> String {
    format!("drop:{id}")
}

/// Key of a cached stock view.
pub fn stock_key(id: DropId) -> String {
    format!("stock:v2:{id}")
}

/// Prefix of cached product listings and searches.
pub const PRODUCT_LISTINGS: &str = "products:";
/// Prefix of cached drop listings.
pub const DROP_LISTINGS: &str = "drops:";

/// Key of a cached listing page: `prefix` plus a digest of the query.
pub fn listing_key(prefix: &str, query: &impl Serialize) -> String {
    let bytes = serde_json::to_vec(query).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    format!("{prefix}{}", hex::encode(&digest[..12]))
}

/// What `event` makes stale: exact keys and key prefixes.
pub fn invalidations(event: &Event) -> (Vec<String>, Vec<&'static str>) {
    let id = event.aggregate_id;
    match event.kind {
        EventType::ProductCreated => (vec![], vec![PRODUCT_LISTINGS]),
        EventType::ProductUpdated => (vec![product_key(id.into())], vec![PRODUCT_LISTINGS]),
        EventType::DropScheduled
        | EventType::DropDrawn
        | EventType::DropStarted
        | EventType::DropEnded
        | EventType::DropCancelled
        | EventType::DropSoldOut => (
            vec![drop_key(id.into()), stock_key(id.into())],
            vec![DROP_LISTINGS],
        ),
        EventType::StockChanged => (vec![stock_key(id.into())], vec![]),
        EventType::OrderPlaced
        | EventType::OrderConfirmed
        | EventType::OrderCancelled
        | EventType::OrderExpired => match event.drop_id() {
            Some(drop) => (vec![stock_key(drop.into())], vec![]),
            None => (vec![], vec![]),
        },
        // A longer hold moves no stock; a hand-off's stock and order come with their
        // own `stock.changed` and `order.placed`.
        EventType::OrderExtended
        | EventType::UserFollowed
        | EventType::WaitlistOffered
        | EventType::WaitlistSkipped
        | EventType::WaitlistClosed
        | EventType::DrawWon
        | EventType::DrawLost => (vec![], vec![]),
    }
}

/// Hit, miss and error counts of the caching layer.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Reads served from the cache.
    pub hits: AtomicU64,
    /// Reads that went to the store (once per single-flight group).
    pub misses: AtomicU64,
    /// Cache calls that failed (the read was served from the store).
    pub errors: AtomicU64,
}

type Flight = Arc<OnceCell<Result<Option<Arc<Vec<u8>>>>>>;

/// A value decoded from a key's cached bytes, kept with those bytes.
struct Decoded {
    bytes: Vec<u8>,
    value: Arc<dyn Any + Send + Sync>,
}

/// How many keys keep their last decoded value; past it, the memo starts over.
const MEMO_KEYS: usize = 1024;

/// Cache-aside reads over a [`Cache`] port with single flight and a breaker.
pub struct CacheLayer {
    cache: Arc<dyn Cache>,
    flights: Mutex<HashMap<String, Flight>>,
    /// Per key, the value last decoded from a hit and the bytes it came from. A hot
    /// key (a drop under an order rush) returns the same bytes on every hit; decoding
    /// is deterministic, so bytes equal to the remembered ones answer the remembered
    /// value and the JSON is not parsed again. The cache stays the authority: every
    /// read still asks it, and other bytes are decoded afresh.
    decoded: Mutex<HashMap<String, Decoded>>,
    open_until: Mutex<Option<Instant>>,
    /// Whether `open_until` may be set: while the cache has not failed, a read
    /// checks this flag instead of taking the lock and reading the clock.
    tripped: AtomicBool,
    stats: Arc<CacheStats>,
}

/// The leader of a single-flight load. Dropping it, whether the load finished or the
/// leader's future was dropped at any await, ends the flight: later readers start a
/// fresh load instead of joining a finished (or abandoned) one. Readers already
/// waiting keep their handle; one of them takes the load over if the leader left.
struct Leader<'a> {
    flights: &'a Mutex<HashMap<String, Flight>>,
    key: &'a str,
    flight: Flight,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if flights
            .get(self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            flights.remove(self.key);
        }
    }
}

/// How long the cache is skipped after it failed.
const BREAKER: Duration = Duration::from_secs(1);

impl CacheLayer {
    /// A layer over `cache`.
    pub fn new(cache: Arc<dyn Cache>) -> Self {
        Self {
            cache,
            flights: Mutex::new(HashMap::new()),
            decoded: Mutex::new(HashMap::new()),
            open_until: Mutex::new(None),
            tripped: AtomicBool::new(false),
            stats: Arc::new(CacheStats::default()),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<CacheStats> {
        &self.stats
    }

    /// How many single-flight loads are registered right now. Zero whenever no read
    /// is running: a load whose caller went away must not stay behind.
    pub fn in_flight(&self) -> usize {
        self.flights.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn available(&self) -> bool {
        if !self.tripped.load(Ordering::Acquire) {
            return true;
        }
        let mut open = self.open_until.lock().unwrap_or_else(|p| p.into_inner());
        match *open {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                *open = None;
                self.tripped.store(false, Ordering::Release);
                true
            }
            None => true,
        }
    }

    fn failed(&self, op: &str, error: &dyn std::fmt::Display) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(op, %error, "cache failed; serving from the store");
        let mut open = self.open_until.lock().unwrap_or_else(|p| p.into_inner());
        *open = Some(Instant::now() + BREAKER);
        self.tripped.store(true, Ordering::Release);
    }

    /// The value under `key`, loading it with `load` on a miss. Concurrent misses of
    /// one key in this process share a single load. A failing cache is skipped.
    pub async fn get_or_load<T, F, Fut>(
        &self,
        key: &str,
        ttl: Duration,
        load: F,
    ) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>>>,
    {
        let use_cache = self.available();
        if use_cache {
            match self.cache.get(key).await {
                Ok(Some(bytes)) => match self.decode(key, bytes) {
                    Ok(value) => {
                        self.stats.hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(Some(value));
                    }
                    Err(error) => tracing::warn!(key, %error, "undecodable cache entry; reloading"),
                },
                Ok(None) => {}
                Err(error) => self.failed("get", &error),
            }
        }

        let (flight, _leader) = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            match flights.get(key) {
                Some(f) => (f.clone(), None),
                None => {
                    let f: Flight = Arc::new(OnceCell::new());
                    flights.insert(key.to_owned(), f.clone());
                    let guard = Leader {
                        flights: &self.flights,
                        key,
                        flight: f.clone(),
                    };
                    (f, Some(guard))
                }
            }
        };
        let outcome = flight
            .get_or_init(|| async {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                let fence = if use_cache && self.available() {
                    match self.cache.fence(key).await {
                        Ok(f) => Some(f),
                        Err(error) => {
                            self.failed("fence", &error);
                            None
                        }
                    }
                } else {
                    None
                };
                let value = load().await?;
                let Some(value) = value else { return Ok(None) };
                let bytes = serde_json::to_vec(&value)
                    .map_err(|e| Error::internal(format!("cannot encode a cache value: {e}")))?;
                if let Some(fence) = fence {
                    if let Err(error) = self.cache.set(key, &bytes, ttl, Some(fence)).await {
                        self.failed("set", &error);
                    }
                }
                Ok(Some(Arc::new(bytes)))
            })
            .await
            .clone();
        match outcome? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::internal(format!("cannot decode a loaded value: {e}"))),
        }
    }

    /// `bytes` read under `key`, decoded: the remembered value when they are the
    /// bytes it was decoded from, else parsed (and remembered).
    fn decode<T>(&self, key: &str, bytes: Vec<u8>) -> serde_json::Result<T>
    where
        T: DeserializeOwned + Clone + Send + Sync + 'static,
    {
        let remembered = {
            let decoded = self.decoded.lock().unwrap_or_else(|p| p.into_inner());
            decoded
                .get(key)
                .filter(|d| d.bytes == bytes)
                .map(|d| d.value.clone())
        };
        if let Some(value) = remembered.as_deref().and_then(|v| v.downcast_ref::<T>()) {
            return Ok(value.clone());
        }
        let value: T = serde_json::from_slice(&bytes)?;
        let mut decoded = self.decoded.lock().unwrap_or_else(|p| p.into_inner());
        if decoded.len() >= MEMO_KEYS && !decoded.contains_key(key) {
            decoded.clear();
        }
        decoded.insert(
            key.to_owned(),
            Decoded {
                bytes,
                value: Arc::new(value.clone()),
            },
        );
        Ok(value)
    }

    /// Writes `value` through under `key`. Failures are logged, never returned.
    pub async fn put<T: Serialize>(&self, key: &str, value: &T, ttl: Duration) {
        if !self.available() {
            return;
        }
        let Ok(bytes) = serde_json::to_vec(value) else {
            return;
        };
        if let Err(error) = self.cache.set(key, &bytes, ttl, None).await {
            self.failed("set", &error);
        }
    }

    /// Invalidates `keys` and `prefixes`. Returns how many entries were removed.
    /// Failures are logged; entries then expire by their TTL.
    pub async fn invalidate(&self, keys: &[String], prefixes: &[&str]) -> u64 {
        let mut removed = 0;
        if !keys.is_empty() {
            match self.cache.invalidate(keys).await {
                Ok(n) => removed += n,
                Err(error) => self.failed("invalidate", &error),
            }
        }
        for prefix in prefixes {
            match self.cache.invalidate_prefix(prefix).await {
                Ok(n) => removed += n,
                Err(error) => self.failed("invalidate_prefix", &error),
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::ports::{CacheError, MockCache};

    fn down() -> CacheError {
        CacheError("connection refused".into())
    }

    /// On paused time: the load's 100 ms only pass once no reader can run, that is
    /// once every other reader waits on the flight, however slow the machine.
    #[tokio::test(start_paused = true)]
    async fn a_stampede_on_one_key_loads_once() {
        let mut cache = MockCache::new();
        cache.expect_get().returning(|_| Ok(None));
        cache.expect_fence().returning(|_| Ok(7));
        cache.expect_set().returning(|_, _, _, fence| {
            assert_eq!(fence, Some(7), "fills are fenced");
            Ok(true)
        });
        let layer = Arc::new(CacheLayer::new(Arc::new(cache)));
        let loads = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Barrier::new(64));
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (layer, loads, gate) = (layer.clone(), loads.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                gate.wait().await;
                layer
                    .get_or_load("product:1", Duration::from_secs(5), || async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok(Some(42u32))
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), Some(42));
        }
        assert_eq!(
            loads.load(Ordering::SeqCst),
            1,
            "one load for the whole stampede"
        );
        assert_eq!(layer.stats().misses.load(Ordering::Relaxed), 1);
    }

    /// Hits decode what the cache holds now: the same bytes answer the value decoded
    /// before, other bytes (or another type asked of them) are decoded afresh.
    #[tokio::test]
    async fn hits_answer_what_the_cache_holds_now() {
        let mut cache = MockCache::new();
        let reads = Arc::new(AtomicUsize::new(0));
        let held = ["7", "7", "8", "8", "8"];
        let seen = reads.clone();
        cache.expect_get().returning(move |_| {
            let at = seen.fetch_add(1, Ordering::SeqCst);
            Ok(Some(held[at].as_bytes().to_vec()))
        });
        let layer = CacheLayer::new(Arc::new(cache));
        let no_load = || async { panic!("every read is a hit") };
        let ttl = Duration::from_secs(5);
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(layer.get_or_load::<u32, _, _>("k", ttl, no_load).await);
        }
        let got: Vec<Option<u32>> = got.into_iter().map(|r| r.expect("hit")).collect();
        assert_eq!(got, [Some(7), Some(7), Some(8), Some(8)]);
        let wider = layer
            .get_or_load::<u64, _, _>("k", ttl, || async { panic!("a hit") })
            .await;
        assert_eq!(wider.expect("hit"), Some(8), "same bytes, another type");
        assert_eq!(reads.load(Ordering::SeqCst), 5, "every read asks the cache");
        assert_eq!(layer.stats().hits.load(Ordering::Relaxed), 5);
    }

    /// A reader whose future is dropped at each await of a load (the cache read, the
    /// fence, the store load, the fill) leaves no flight behind, and the next reader
    /// loads fresh data instead of joining the abandoned flight.
    #[tokio::test(start_paused = true)]
    async fn a_dropped_reader_leaves_no_flight_behind() {
        use crate::ports::Cache;

        /// A cache whose first call named by `stall` waits for a wake-up that never comes.
        struct Stalling {
            stall: &'static str,
            armed: std::sync::atomic::AtomicBool,
            gate: tokio::sync::Notify,
        }
        impl Stalling {
            async fn maybe_stall(&self, call: &str) {
                if self.stall == call && self.armed.swap(false, Ordering::SeqCst) {
                    self.gate.notified().await;
                }
            }
        }
        #[async_trait::async_trait]
        impl Cache for Stalling {
            async fn get(&self, _: &str) -> Result<Option<Vec<u8>>, CacheError> {
                self.maybe_stall("get").await;
                Ok(None)
            }
            async fn fence(&self, _: &str) -> Result<u64, CacheError> {
                self.maybe_stall("fence").await;
                Ok(1)
            }
            async fn set(
                &self,
                _: &str,
                _: &[u8],
                _: Duration,
                _: Option<u64>,
            ) -> Result<bool, CacheError> {
                self.maybe_stall("set").await;
                // Never stores: every read below goes to the store.
                Ok(false)
            }
            async fn invalidate(&self, _: &[String]) -> Result<u64, CacheError> {
                Ok(0)
            }
            async fn invalidate_prefix(&self, _: &str) -> Result<u64, CacheError> {
                Ok(0)
            }
        }

        for stall in ["get", "fence", "load", "set"] {
            let layer = CacheLayer::new(Arc::new(Stalling {
                stall,
                armed: std::sync::atomic::AtomicBool::new(true),
                gate: tokio::sync::Notify::new(),
            }));
            let never = tokio::sync::Notify::new();
            let abandoned = tokio::time::timeout(
                Duration::from_secs(1),
                layer.get_or_load("stock:1", Duration::from_secs(5), || async {
                    if stall == "load" {
                        never.notified().await;
                    }
                    Ok(Some(1u32))
                }),
            )
            .await;
            assert!(abandoned.is_err(), "{stall}: the reader was abandoned");
            assert_eq!(layer.in_flight(), 0, "{stall}: no flight stays behind");

            for fresh in [2u32, 3] {
                let read = layer
                    .get_or_load("stock:1", Duration::from_secs(5), || async {
                        Ok(Some(fresh))
                    })
                    .await
                    .unwrap();
                assert_eq!(read, Some(fresh), "{stall}: later reads load fresh data");
                assert_eq!(layer.in_flight(), 0, "{stall}");
            }
        }
    }

    #[tokio::test]
    async fn a_failing_cache_never_fails_a_read() {
        let mut cache = MockCache::new();
        cache.expect_get().times(1).returning(|_| Err(down()));
        cache.expect_fence().never();
        cache.expect_set().never();
        let layer = CacheLayer::new(Arc::new(cache));
        for _ in 0..3 {
            let value = layer
                .get_or_load("product:1", Duration::from_secs(5), || async {
                    Ok(Some("from the store".to_owned()))
                })
                .await
                .unwrap();
            assert_eq!(value.as_deref(), Some("from the store"));
        }
        // The breaker skipped the cache after the first failure.
        assert_eq!(layer.stats().errors.load(Ordering::Relaxed), 1);
        assert_eq!(layer.stats().misses.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_hit_skips_the_store() {
        let mut cache = MockCache::new();
        cache
            .expect_get()
            .returning(|_| Ok(Some(serde_json::to_vec(&5u8).unwrap())));
        let layer = CacheLayer::new(Arc::new(cache));
        let value: Option<u8> = layer
            .get_or_load("k", Duration::from_secs(1), || async {
                panic!("the store must not be read on a hit")
            })
            .await
            .unwrap();
        assert_eq!(value, Some(5));
        assert_eq!(layer.stats().hits.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn store_errors_reach_the_caller() {
        let mut cache = MockCache::new();
        cache.expect_get().returning(|_| Ok(None));
        cache.expect_fence().returning(|_| Ok(0));
        let layer = CacheLayer::new(Arc::new(cache));
        let result: Result<Option<u8>> = layer
            .get_or_load("k", Duration::from_secs(1), || async {
                Err(Error::unavailable("database"))
            })
            .await;
        assert_eq!(result.unwrap_err().code(), "unavailable");
    }

    #[test]
    fn events_invalidate_what_they_make_stale() {
        let drop = uuid::Uuid::now_v7();
        let at = chrono::Utc::now();
        let started = Event::new(EventType::DropStarted, drop, 1, serde_json::Value::Null, at);
        let (keys, prefixes) = invalidations(&started);
        assert!(keys.contains(&drop_key(drop.into())) && keys.contains(&stock_key(drop.into())));
        assert_eq!(prefixes, vec![DROP_LISTINGS]);

        let placed = Event::new(
            EventType::OrderPlaced,
            uuid::Uuid::now_v7(),
            1,
            serde_json::json!({ "drop_id": drop.to_string() }),
            at,
        );
        assert_eq!(
            invalidations(&placed),
            (vec![stock_key(drop.into())], vec![])
        );

        let updated = Event::new(
            EventType::ProductUpdated,
            drop,
            2,
            serde_json::Value::Null,
            at,
        );
        assert_eq!(
            invalidations(&updated),
            (vec![product_key(drop.into())], vec![PRODUCT_LISTINGS])
        );
    }
}
