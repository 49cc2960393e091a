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
