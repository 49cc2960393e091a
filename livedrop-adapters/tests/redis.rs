//! `RedisCache` and `RedisGate` against a real Redis: the cache and gate
//! conformance suites, then what only Redis does (namespaces, jittered TTLs, scans,
//! generations).
//!
//! ```text
//! LIVEDROP_TEST_REDIS_URL=redis://127.0.0.1:6379 \
//!     cargo test -p livedrop-adapters --features redis --test redis
//! ```
//!
//! Unset: every test prints why it skips. Set but unreachable: every test fails.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use livedrop_adapters::redis::{ConnectError, RedisCache, RedisGate, RedisOptions};
use livedrop_core::ports::{AdmissionGate, Cache};
use redis::AsyncCommands;

const URL_VAR: &str = livedrop_core::testing::env::REDIS_URL;

fn redis_url() -> Option<String> {
    livedrop_core::testing::env::service_var(URL_VAR, "a Redis test (e.g. redis://127.0.0.1:6379)")
}

/// A namespace no other test (or test run) uses.
fn namespace(test: &str) -> String {
    format!("ldtest:{test}:{}", uuid::Uuid::new_v4().simple())
}

async fn cache_with(test: &str, options: RedisOptions) -> Option<RedisCache> {
    let url = redis_url()?;
    let cache = RedisCache::connect_with(&url, &namespace(test), options)
        .await
        .unwrap_or_else(|err| panic!("{URL_VAR}={url} is set but Redis is unusable: {err}"));
    Some(cache)
}

async fn cache(test: &str) -> Option<RedisCache> {
    cache_with(test, RedisOptions::default()).await
}

/// A plain connection to inspect what the adapters wrote (in a test that found
/// Redis configured).
async fn raw() -> redis::aio::MultiplexedConnection {
    let url = redis_url().expect("Redis is configured");
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn factory() -> Option<Arc<dyn Cache>> {
    let cache = cache("conformance").await?;
    Some(Arc::new(cache))
}

livedrop_core::cache_conformance!(|| factory());

#[tokio::test]
async fn namespaces_isolate_instances() {
    let (Some(a), Some(b)) = (cache("iso-a").await, cache("iso-b").await) else {
        return;
    };
    a.set("shared", b"from a", Duration::from_secs(5), None)
        .await
        .unwrap();
    assert_eq!(b.get("shared").await.unwrap(), None);
    assert_eq!(b.invalidate_prefix("").await.unwrap(), 0);
    assert_eq!(
        a.get("shared").await.unwrap().as_deref(),
        Some(&b"from a"[..])
    );
    assert_eq!(a.invalidate_prefix("").await.unwrap(), 1);
}

/// Expiry itself is the suite's `cache_ttl_expiry`; this is the jitter Redis adds.
#[tokio::test]
async fn ttls_are_jittered_within_ten_percent() {
    let Some(cache) = cache("ttl").await else {
        return;
    };
    let mut conn = raw().await;
    let mut ttls = Vec::new();
    for i in 0..40 {
        let key = format!("long{i}");
        cache
            .set(&key, b"x", Duration::from_secs(100), None)
            .await
            .unwrap();
        let pttl: i64 = conn
            .pttl(format!("{}:v:{key}", cache.namespace()))
            .await
            .unwrap();
        assert!(
            (89_000..=110_000).contains(&pttl),
            "TTL {pttl} ms is outside 100 s ± 10 %"
        );
        ttls.push(pttl);
    }
    ttls.sort_unstable();
    assert!(
        ttls[ttls.len() - 1] - ttls[0] > 1_000,
        "TTLs are not spread: {ttls:?}"
    );
    cache.invalidate_prefix("").await.unwrap();
}

/// A fence is a generation of its key (the suite's `cache_fence_*` cases check
/// what it guards): a made-up future generation never matches.
#[tokio::test]
async fn a_made_up_fence_never_matches() {
    let Some(cache) = cache("fence").await else {
        return;
    };
    let ttl = Duration::from_secs(5);
    let fence = cache.fence("p:1").await.unwrap();
    assert!(cache.set("p:1", b"fresh", ttl, Some(fence)).await.unwrap());
    let stale = cache.fence("p:1").await.unwrap();
    assert_eq!(cache.invalidate(&["p:1".to_owned()]).await.unwrap(), 1);
    let next = cache.fence("p:1").await.unwrap();
    assert_ne!(next, stale, "an invalidation moves the generation on");
    assert!(cache.set("p:1", b"newer", ttl, Some(next)).await.unwrap());
    // A fence of another key is not a fence of this one... unless it happens to
    // carry the same generation; a made-up future generation never matches.
    assert!(!cache
        .set("p:1", b"forged", ttl, Some(next + 1))
        .await
        .unwrap());
    cache.invalidate_prefix("").await.unwrap();
}

#[tokio::test]
async fn invalidating_a_never_fenced_key_creates_no_generation() {
    let Some(cache) = cache("nogen").await else {
        return;
    };
    cache
        .set("plain", b"x", Duration::from_secs(5), None)
        .await
        .unwrap();
    assert_eq!(
        cache
            .invalidate(&["plain".to_owned(), "absent".to_owned()])
            .await
            .unwrap(),
        1
    );
    let mut conn = raw().await;
    let generations: u64 = conn
        .exists(&[
            format!("{}:g:plain", cache.namespace()),
            format!("{}:g:absent", cache.namespace()),
        ])
        .await
        .unwrap();
    assert_eq!(generations, 0);
}

#[tokio::test]
async fn prefix_invalidation_scans_values_and_generations() {
    let Some(cache) = cache_with(
        "prefix",
        RedisOptions {
            scan_count: 50,
            ..RedisOptions::default()
        },
    )
    .await
    else {
        return;
    };
    let ttl = Duration::from_secs(30);
    for i in 0..300 {
        cache
            .set(&format!("drop:{i}"), b"v", ttl, None)
            .await
            .unwrap();
    }
    cache.set("product:1", b"keep", ttl, None).await.unwrap();
    // A load in flight under the prefix, for a key not cached yet.
    let in_flight = cache.fence("drop:loading").await.unwrap();

    assert_eq!(cache.invalidate_prefix("drop:").await.unwrap(), 300);
    assert_eq!(cache.get("drop:7").await.unwrap(), None);
    assert!(!cache
        .set("drop:loading", b"stale", ttl, Some(in_flight))
        .await
        .unwrap());
    assert_eq!(
        cache.get("product:1").await.unwrap().as_deref(),
        Some(&b"keep"[..])
    );
    assert_eq!(cache.invalidate_prefix("drop:").await.unwrap(), 0);
    cache.invalidate_prefix("").await.unwrap();
}

#[tokio::test]
async fn connect_reports_bad_url_and_unreachable_server() {
    if redis_url().is_none() {
        return;
    }
    let bad = RedisCache::connect("not-a-url", "x").await.unwrap_err();
    assert!(matches!(bad, ConnectError::InvalidUrl(_)), "{bad}");

    let started = std::time::Instant::now();
    let down = RedisCache::connect("redis://127.0.0.1:1", "x")
        .await
        .unwrap_err();
    assert!(
        matches!(
            down,
            ConnectError::Unreachable(_) | ConnectError::Timeout(_)
        ),
        "{down}"
    );
    // A liveness bound (the connect gives up instead of hanging), not a speed claim.
    assert!(started.elapsed() < Duration::from_secs(30), "{down}");
}

/// A gate with the default options (entries live 5 s), as the suite expects.
async fn gate_factory() -> Option<Arc<dyn AdmissionGate>> {
    let url = redis_url()?;
    let gate = RedisGate::connect_with(&url, &namespace("gate"), RedisOptions::default())
        .await
        .unwrap_or_else(|err| panic!("{URL_VAR}={url} is set but Redis is unusable: {err}"));
    Some(Arc::new(gate))
}

livedrop_core::gate_conformance!(|| gate_factory());
