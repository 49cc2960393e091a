//! A Redis outage in the middle of a `RedisCache`'s life: calls fail fast while the
//! server is down, and the same instance works again once it is back.
//!
//! Stops and restarts the local Redis server that `LIVEDROP_TEST_REDIS_URL` names
//! (its port taken from the URL), so it lives in its own test binary:
//!
//! ```text
//! LIVEDROP_TEST_REDIS_URL=redis://127.0.0.1:6379 \
//!     cargo test -p livedrop-adapters --features redis,testing --test redis_outage
//! ```
//!
//! A URL naming a server this test cannot stop and restart (not on loopback, or not
//! TCP) fails the test instead of letting it pass unexercised.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use livedrop_adapters::redis::testing::LocalRedis;
use livedrop_adapters::redis::{RedisCache, RedisGate, RedisOptions};
use livedrop_core::model::{Stock, DEFAULT_SKU};
use livedrop_core::ports::{AdmissionGate, Cache};
use livedrop_core::DropId;

const URL_VAR: &str = livedrop_core::testing::env::REDIS_URL;

/// A liveness bound, not a speed claim: a call on a dead Redis must fail rather than
/// wait for it (the adapter's own timeouts are a few hundred milliseconds; measured
/// figures are in BENCHMARKS.md). Ten seconds only catches a hang.
const LIVENESS: Duration = Duration::from_secs(10);

/// Runs `call` and checks that it fails instead of hanging.
async fn fails_fast<T: std::fmt::Debug, E>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, E>>,
) {
    let started = Instant::now();
    let outcome = call.await;
    let took = started.elapsed();
    assert!(
        outcome.is_err(),
        "{what} succeeded while Redis is down: {:?}",
        outcome.ok()
    );
    eprintln!("{what} failed in {took:?} while Redis is down");
    assert!(
        took < LIVENESS,
        "{what} took {took:?} to fail while Redis is down: it hangs"
    );
}

#[tokio::test]
async fn calls_fail_fast_while_redis_is_down_and_the_same_instance_recovers() {
    let Some(url) = livedrop_core::testing::env::service_var(URL_VAR, "the Redis outage test")
    else {
        return;
    };
    // A set variable is a promise the test can run: a Redis it cannot stop and
    // restart fails the test rather than letting it pass unexercised.
    let server = LocalRedis::from_url(&url);
    let namespace = format!("ldtest:outage:{}", uuid::Uuid::new_v4().simple());
    let options = RedisOptions::default();
    let cache = RedisCache::connect_with(&url, &namespace, options.clone())
        .await
        .unwrap_or_else(|err| panic!("{URL_VAR}={url} is set but Redis is unusable: {err}"));
    let gate = RedisGate::new(cache.connection(), &namespace, options);
    let ttl = Duration::from_secs(30);
    let drop = DropId::new();

    assert!(cache.set("before", b"1", ttl, None).await.unwrap());
    assert!(cache.get("before").await.unwrap().is_some());

    let _restart = server.restart_on_drop();
    server.shut_down();

    for _ in 0..3 {
        fails_fast("get", cache.get("before")).await;
        fails_fast("set", cache.set("k", b"v", ttl, None)).await;
        fails_fast("fence", cache.fence("k")).await;
        fails_fast("invalidate", cache.invalidate(&["k".to_owned()])).await;
        fails_fast("invalidate_prefix", cache.invalidate_prefix("")).await;
        fails_fast("gate admit", gate.admit(drop, DEFAULT_SKU, 1)).await;
        fails_fast(
            "gate record",
            gate.record(drop, DEFAULT_SKU, &Stock::new(1), 1),
        )
        .await;
    }

    server.start();
    assert!(server.ping(), "Redis did not come back");

    // The connection manager reconnects on its own; allow it a few attempts, within
    // a liveness bound (it recovers at all, without a new instance).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match cache.get("before").await {
            Ok(value) => {
                // Started without persistence: the old value is gone.
                assert_eq!(value, None);
                break;
            }
            Err(err) => {
                assert!(
                    Instant::now() < deadline,
                    "the cache did not recover within 30 s: {err}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let fence = cache.fence("after").await.unwrap();
    assert!(cache.set("after", b"2", ttl, Some(fence)).await.unwrap());
    assert_eq!(
        cache.get("after").await.unwrap().as_deref(),
        Some(&b"2"[..])
    );
    assert_eq!(cache.invalidate_prefix("").await.unwrap(), 1);

    gate.record(drop, DEFAULT_SKU, &Stock::new(0), 2)
        .await
        .unwrap();
    assert!(!gate.admit(drop, DEFAULT_SKU, 1).await.unwrap());
}
