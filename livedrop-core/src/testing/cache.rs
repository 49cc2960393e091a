//! Cache cases: TTLs, invalidation by key and prefix, fenced writes.
//!
//! Every case writes under a fresh random key namespace, so a shared cache server
//! may serve several cases at once. TTL waits are real-time (a cache server keeps
//! its own clock), with margins of several seconds on both sides of the TTL.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::ports::Cache;

const LONG: Duration = Duration::from_secs(300);

/// A key namespace no other case uses.
fn namespace() -> String {
    format!("ld-conformance:{}:", Uuid::new_v4().simple())
}

async fn get(cache: &dyn Cache, key: &str) -> Option<Vec<u8>> {
    cache.get(key).await.expect("cache get")
}

async fn set(cache: &dyn Cache, key: &str, value: &[u8], fence: Option<u64>) -> bool {
    cache.set(key, value, LONG, fence).await.expect("cache set")
}

/// A value set is read back; a second set overwrites it; unknown keys are misses.
pub async fn cache_round_trip(cache: &Arc<dyn Cache>) {
    let cache: &dyn Cache = cache.as_ref();
    let ns = namespace();
    let key = format!("{ns}product:1");
    assert_eq!(get(cache, &key).await, None);
    assert!(set(cache, &key, b"first", None).await);
    assert_eq!(get(cache, &key).await, Some(b"first".to_vec()));
    assert!(set(cache, &key, b"second", None).await);
    assert_eq!(get(cache, &key).await, Some(b"second".to_vec()));
    let empty = format!("{ns}empty");
    assert!(set(cache, &empty, b"", None).await);
    assert_eq!(
        get(cache, &empty).await,
        Some(Vec::new()),
        "empty values are values"
    );
    assert_eq!(get(cache, &format!("{ns}other")).await, None);
}

/// An entry disappears after its TTL; one with a longer TTL stays.
///
/// Margins are wide: the first read comes right after the set, well inside the
/// 5 s TTL, so only a machine stalled for seconds between two calls could see the
/// entry expire early; the second read comes 1 s past the TTL and its jitter.
pub async fn cache_ttl_expiry(cache: &Arc<dyn Cache>) {
    let cache: &dyn Cache = cache.as_ref();
    let ns = namespace();
    let short = format!("{ns}short");
    let long = format!("{ns}long");
    let ttl = Duration::from_secs(5);
    let stored_at = tokio::time::Instant::now();
    assert!(cache.set(&short, b"s", ttl, None).await.expect("cache set"));
    assert!(set(cache, &long, b"l", None).await);
    assert_eq!(
        get(cache, &short).await,
        Some(b"s".to_vec()),
        "present before its TTL"
    );
    tokio::time::sleep_until(stored_at + ttl + ttl / 10 + Duration::from_secs(1)).await;
    assert_eq!(get(cache, &short).await, None, "gone after its TTL");
    assert_eq!(get(cache, &long).await, Some(b"l".to_vec()));
}

/// Invalidating keys removes exactly those, counting the values removed.
pub async fn cache_invalidate_keys(cache: &Arc<dyn Cache>) {
    let cache: &dyn Cache = cache.as_ref();
    let ns = namespace();
    let key = |k: &str| format!("{ns}{k}");
    for k in ["a", "b", "c"] {
        assert!(set(cache, &key(k), k.as_bytes(), None).await);
    }
    let removed = cache
        .invalidate(&[key("a"), key("b"), key("missing")])
        .await
        .expect("invalidate");
    assert_eq!(removed, 2);
    assert_eq!(get(cache, &key("a")).await, None);
    assert_eq!(get(cache, &key("b")).await, None);
    assert_eq!(get(cache, &key("c")).await, Some(b"c".to_vec()));
    assert_eq!(cache.invalidate(&[]).await.expect("invalidate nothing"), 0);
}

/// Invalidating a prefix removes every key under it and nothing else.
pub async fn cache_invalidate_prefix(cache: &Arc<dyn Cache>) {
    let cache: &dyn Cache = cache.as_ref();
    let ns = namespace();
    let key = |k: &str| format!("{ns}{k}");
    for k in [
        "drops:1",
        "drops:2",
        "drops:list:live",
        "dropsy",
        "products:1",
    ] {
        assert!(set(cache, &key(k), b"v", None).await);
    }
    let removed = cache
        .invalidate_prefix(&key("drops:"))
        .await
        .expect("invalidate prefix");
    assert_eq!(removed, 3);
    for k in ["drops:1", "drops:2", "drops:list:live"] {
        assert_eq!(get(cache, &key(k)).await, None, "{k} is under the prefix");
    }
    for k in ["dropsy", "products:1"] {
        assert_eq!(get(cache, &key(k)).await, Some(b"v".to_vec()), "{k} is not");
    }
}

/// A fenced set is dropped when its key was invalidated after the fence was taken.
pub async fn cache_fence_dropped_after_key_invalidation(cache: &Arc<dyn Cache>) {
    let cache: &dyn Cache = cache.as_ref();
    let ns = namespace();
    let key = format!("{ns}drop:7");
    assert!(set(cache, &key, b"v1", None).await);
    let fence = cache.fence(&key).await.expect("fence");
    cache
        .invalidate(std::slice::from_ref(&key))
        .await
        .expect("invalidate");
    assert!(
        !set(cache, &key, b"stale", Some(fence)).await,
        "a set fenced before an invalidation is dropped"
    );
    assert_eq!(get(cache, &key).await, None);
    let fresh = cache.fence(&key).await.expect("fence");
    assert!(
        set(cache, &key, b"v2", Some(fresh)).await,
        "a fence taken after is valid"
    );
    assert_eq!(get(cache, &key).await, Some(b"v2".to_vec()));
}

/// A fenced set is dropped when a prefix of its key was invalidated after the fence.
pub async fn cache_fence_dropped_after_prefix_invalidation(cache: &Arc<dyn Cache>) {
    let cache: &dyn Cache = cache.as_ref();
    let ns = namespace();
    let key = format!("{ns}drops:list:live");
    let fence = cache.fence(&key).await.expect("fence");
    cache
        .invalidate_prefix(&format!("{ns}drops:"))
        .await
        .expect("invalidate prefix");
    assert!(!set(cache, &key, b"stale", Some(fence)).await);
    assert_eq!(get(cache, &key).await, None);

    // An unrelated prefix does not spoil the fence.
    let other = format!("{ns}products:list");
    let fence = cache.fence(&other).await.expect("fence");
    cache
        .invalidate_prefix(&format!("{ns}drops:"))
        .await
        .expect("invalidate prefix");
    assert!(set(cache, &other, b"ok", Some(fence)).await);
    assert_eq!(get(cache, &other).await, Some(b"ok".to_vec()));
}

/// A fence with no invalidation of its key in between stores, even when other
/// keys were invalidated.
pub async fn cache_fence_kept_without_invalidation(cache: &Arc<dyn Cache>) {
    let cache: &dyn Cache = cache.as_ref();
    let ns = namespace();
    let key = format!("{ns}product:9");
    let fence = cache.fence(&key).await.expect("fence");
    cache
        .invalidate(&[format!("{ns}product:10")])
        .await
        .expect("invalidate");
    assert!(set(cache, &key, b"v", Some(fence)).await);
    assert_eq!(get(cache, &key).await, Some(b"v".to_vec()));
}

/// A set without a fence always stores, right after an invalidation too.
pub async fn cache_unfenced_set_always_stores(cache: &Arc<dyn Cache>) {
    let cache: &dyn Cache = cache.as_ref();
    let ns = namespace();
    let key = format!("{ns}drop:3");
    cache
        .invalidate(std::slice::from_ref(&key))
        .await
        .expect("invalidate");
    cache
        .invalidate_prefix(&ns)
        .await
        .expect("invalidate prefix");
    assert!(set(cache, &key, b"v", None).await);
    assert_eq!(get(cache, &key).await, Some(b"v".to_vec()));
}

/// A prefix is literal text: glob characters (`*`, `?`) in it match only
/// themselves.
pub async fn cache_prefix_is_literal(cache: &Arc<dyn Cache>) {
    let cache: &dyn Cache = cache.as_ref();
    let ns = namespace();
    let key = |k: &str| format!("{ns}{k}");
    for k in ["a*b", "a*c", "axb", "a?b"] {
        assert!(set(cache, &key(k), b"v", None).await);
    }
    let removed = |prefix: String| async move {
        cache
            .invalidate_prefix(&prefix)
            .await
            .expect("invalidate prefix")
    };
    assert_eq!(removed(key("a*")).await, 2);
    assert!(get(cache, &key("axb")).await.is_some());
    assert!(get(cache, &key("a?b")).await.is_some());
    assert_eq!(removed(key("a?")).await, 1);
    assert!(get(cache, &key("axb")).await.is_some());
}

/// Readers fill a key (fence, read the source, fenced set) while a writer changes
/// the source and invalidates the key, all at once on several tasks: once all are
/// done, the cache holds nothing or the source's last value, never an older one.
pub async fn cache_fills_racing_an_invalidation_never_leave_a_stale_value(cache: &Arc<dyn Cache>) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let ns = namespace();
    let mut filled = 0;
    for round in 0..20 {
        let key = format!("{ns}hot:{round}");
        let source = Arc::new(AtomicU64::new(0));
        // Readers fill until the writer is done, and not after: the last fill races
        // the last invalidation.
        let done = Arc::new(AtomicBool::new(false));
        let mut readers = Vec::new();
        for _ in 0..8 {
            let (cache, key, source) = (Arc::clone(cache), key.clone(), Arc::clone(&source));
            let done = Arc::clone(&done);
            readers.push(tokio::spawn(async move {
                let mut stored = 0;
                while !done.load(Ordering::SeqCst) {
                    let fence = cache.fence(&key).await.expect("fence");
                    let value = source.load(Ordering::SeqCst);
                    // Widens the window between reading the source and filling, so
                    // the writer's invalidations land inside it (not a timing claim).
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    if set(cache.as_ref(), &key, &value.to_be_bytes(), Some(fence)).await {
                        stored += 1;
                    }
                }
                stored
            }));
        }
        let writer = {
            let (cache, key, source) = (Arc::clone(cache), key.clone(), Arc::clone(&source));
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                for _ in 0..20 {
                    source.fetch_add(1, Ordering::SeqCst);
                    cache
                        .invalidate(std::slice::from_ref(&key))
                        .await
                        .expect("invalidate");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                done.store(true, Ordering::SeqCst);
            })
        };
        for reader in readers {
            filled += reader.await.expect("reader task");
        }
        writer.await.expect("writer task");
        let last = source.load(Ordering::SeqCst);
        if let Some(bytes) = get(cache.as_ref(), &key).await {
            let cached = u64::from_be_bytes(bytes.as_slice().try_into().expect("8 bytes"));
            assert_eq!(cached, last, "round {round}: a stale fill survived");
        }
    }
    // The readers did fill: the race was between real writes.
    assert!(filled > 0);
}
