//! The caching layer's decisions, over a recording in-memory cache: which key each
//! value lives under, what each event invalidates, write-through, cache-aside reads
//! and the breaker that skips a failing cache.
//!
//! `cargo test -p livedrop-core --test cache_layer`
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use livedrop_core::cache::{
    drop_key, invalidations, listing_key, product_key, stock_key, CacheLayer, DROP_LISTINGS,
    PRODUCT_LISTINGS,
};
use livedrop_core::event::{Event, EventType};
use livedrop_core::ports::{Cache, CacheError};
use livedrop_core::{DropId, ProductId};
use serde_json::json;
use uuid::Uuid;

/// A map with the calls it received; `failing` makes every call fail.
#[derive(Default)]
struct Recording {
    map: Mutex<HashMap<String, Vec<u8>>>,
    calls: AtomicUsize,
    failing: AtomicBool,
    invalidate_calls: AtomicUsize,
}

impl Recording {
    fn call(&self) -> Result<(), CacheError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            Err(CacheError("down".into()))
        } else {
            Ok(())
        }
    }
    fn value(&self, key: &str) -> Option<serde_json::Value> {
        let map = self.map.lock().unwrap();
        map.get(key).map(|b| serde_json::from_slice(b).unwrap())
    }
}

#[async_trait]
impl Cache for Recording {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.call()?;
        Ok(self.map.lock().unwrap().get(key).cloned())
    }
    async fn fence(&self, _key: &str) -> Result<u64, CacheError> {
        self.call()?;
        Ok(1)
    }
    async fn set(
        &self,
        key: &str,
        value: &[u8],
        _: Duration,
        _: Option<u64>,
    ) -> Result<bool, CacheError> {
        self.call()?;
        self.map
            .lock()
            .unwrap()
            .insert(key.to_owned(), value.to_vec());
        Ok(true)
    }
    async fn invalidate(&self, keys: &[String]) -> Result<u64, CacheError> {
        self.call()?;
        self.invalidate_calls.fetch_add(1, Ordering::SeqCst);
        let mut map = self.map.lock().unwrap();
        Ok(keys.iter().filter(|k| map.remove(*k).is_some()).count() as u64)
    }
    async fn invalidate_prefix(&self, prefix: &str) -> Result<u64, CacheError> {
        self.call()?;
        let mut map = self.map.lock().unwrap();
        let before = map.len();
        map.retain(|k, _| !k.starts_with(prefix));
        Ok((before - map.len()) as u64)
    }
}

fn layer() -> (Arc<Recording>, CacheLayer) {
    let cache = Arc::new(Recording::default());
    (cache.clone(), CacheLayer::new(cache))
}

const TTL: Duration = Duration::from_secs(60);

#[test]
fn every_entity_has_a_key_of_its_own() {
    let (p1, p2) = (ProductId::new(), ProductId::new());
    let (d1, d2) = (DropId::new(), DropId::new());
    assert_eq!(product_key(p1), format!("product:{p1}"));
    assert_eq!(drop_key(d1), format!("drop:{d1}"));
    // The stock entry holds each variant's stock: a new key, so an entry of the
    // one-stock shape left in a shared cache is never read as the new one.
    assert_eq!(stock_key(d1), format!("stock:v2:{d1}"));
    assert_ne!(product_key(p1), product_key(p2));
    assert_ne!(
        stock_key(d1),
        stock_key(d2),
        "two drops never share a stock entry"
    );
    let a = listing_key(PRODUCT_LISTINGS, &("q", 20));
    assert!(a.starts_with(PRODUCT_LISTINGS) && a.len() > PRODUCT_LISTINGS.len());
    assert_eq!(
        a,
        listing_key(PRODUCT_LISTINGS, &("q", 20)),
        "one query, one key"
    );
    assert_ne!(a, listing_key(PRODUCT_LISTINGS, &("q", 21)));
    assert!(listing_key(DROP_LISTINGS, &1).starts_with(DROP_LISTINGS));
}

#[test]
fn each_event_invalidates_what_it_makes_stale() {
    let id = Uuid::now_v7();
    let drop = Uuid::now_v7();
    let at = chrono::DateTime::from_timestamp(1_893_456_000, 0).unwrap();
    let ev = |kind, payload| Event::new(kind, id, 1, payload, at);
    let none: (Vec<String>, Vec<&str>) = (vec![], vec![]);
    assert_eq!(
        invalidations(&ev(EventType::ProductCreated, json!({}))),
        (vec![], vec![PRODUCT_LISTINGS])
    );
    assert_eq!(
        invalidations(&ev(EventType::ProductUpdated, json!({}))),
        (vec![product_key(id.into())], vec![PRODUCT_LISTINGS])
    );
    for kind in [
        EventType::DropScheduled,
        EventType::DropStarted,
        EventType::DropEnded,
        EventType::DropCancelled,
        EventType::DropSoldOut,
    ] {
        assert_eq!(
            invalidations(&ev(kind, json!({}))),
            (
                vec![drop_key(id.into()), stock_key(id.into())],
                vec![DROP_LISTINGS]
            ),
            "{kind:?}"
        );
    }
    assert_eq!(
        invalidations(&ev(EventType::StockChanged, json!({}))),
        (vec![stock_key(id.into())], vec![])
    );
    for kind in [
        EventType::OrderPlaced,
        EventType::OrderConfirmed,
        EventType::OrderCancelled,
        EventType::OrderExpired,
    ] {
        assert_eq!(
            invalidations(&ev(kind, json!({ "drop_id": drop }))),
            (vec![stock_key(drop.into())], vec![]),
            "{kind:?}"
        );
        assert_eq!(
            invalidations(&ev(kind, json!({}))),
            none,
            "{kind:?} without a drop"
        );
    }
    assert_eq!(invalidations(&ev(EventType::UserFollowed, json!({}))), none);
    assert_eq!(
        invalidations(&ev(EventType::OrderExtended, json!({ "drop_id": drop }))),
        none,
        "a longer hold moves no stock"
    );
}

#[tokio::test]
async fn a_miss_loads_once_and_stores_then_hits() {
    let (cache, layer) = layer();
    let loads = AtomicUsize::new(0);
    let load = || async {
        loads.fetch_add(1, Ordering::SeqCst);
        Ok(Some(json!({"n": 7})))
    };
    let got: Option<serde_json::Value> = layer.get_or_load("k", TTL, load).await.unwrap();
    assert_eq!(got, Some(json!({"n": 7})));
    assert_eq!(
        cache.value("k"),
        Some(json!({"n": 7})),
        "the loaded value is stored"
    );
    let again: Option<serde_json::Value> = layer
        .get_or_load("k", TTL, || async { panic!("a hit must not load") })
        .await
        .unwrap();
    assert_eq!(again, Some(json!({"n": 7})));
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let stats = layer.stats();
    assert_eq!(stats.hits.load(Ordering::Relaxed), 1);
    assert_eq!(stats.misses.load(Ordering::Relaxed), 1);
    assert_eq!(stats.errors.load(Ordering::Relaxed), 0);

    let missing: Option<serde_json::Value> = layer
        .get_or_load("none", TTL, || async { Ok(None) })
        .await
        .unwrap();
    assert_eq!(missing, None);
    assert_eq!(cache.value("none"), None, "nothing found, nothing stored");
}

#[tokio::test]
async fn put_writes_through_and_later_reads_hit() {
    let (cache, layer) = layer();
    layer.put("p", &json!({"title": "Tee"}), TTL).await;
    assert_eq!(cache.value("p"), Some(json!({"title": "Tee"})));
    let got: Option<serde_json::Value> = layer
        .get_or_load("p", TTL, || async { panic!("written through: no load") })
        .await
        .unwrap();
    assert_eq!(got, Some(json!({"title": "Tee"})));
}

#[tokio::test]
async fn invalidate_counts_what_it_removed_and_skips_empty_key_lists() {
    let (cache, layer) = layer();
    for key in [
        "a",
        "b",
        "products:1",
        "products:2",
        "products:3",
        "drops:1",
    ] {
        layer.put(key, &1, TTL).await;
    }
    assert_eq!(layer.invalidate(&[], &[]).await, 0);
    assert_eq!(
        cache.invalidate_calls.load(Ordering::SeqCst),
        0,
        "no keys, no call"
    );
    assert_eq!(
        layer
            .invalidate(&["a".into(), "zz".into()], &[PRODUCT_LISTINGS])
            .await,
        4
    );
    assert_eq!(
        layer
            .invalidate(&["b".into()], &[PRODUCT_LISTINGS, DROP_LISTINGS])
            .await,
        2
    );
    assert_eq!(cache.map.lock().unwrap().len(), 0);
}

#[tokio::test]
async fn a_failing_cache_is_skipped_for_a_while_and_reads_still_load() {
    let (cache, layer) = layer();
    cache.failing.store(true, Ordering::SeqCst);
    let got: Option<u32> = layer
        .get_or_load("k", TTL, || async { Ok(Some(1)) })
        .await
        .unwrap();
    assert_eq!(got, Some(1), "a cache outage never fails a read");
    assert_eq!(layer.stats().errors.load(Ordering::Relaxed), 1);
    let calls = cache.calls.load(Ordering::SeqCst);
    assert_eq!(
        calls, 1,
        "after the failed get, the breaker skips fence and set"
    );

    // While the breaker is open the cache is not asked at all, even once it is back.
    cache.failing.store(false, Ordering::SeqCst);
    let got: Option<u32> = layer
        .get_or_load("k", TTL, || async { Ok(Some(2)) })
        .await
        .unwrap();
    assert_eq!(got, Some(2));
    layer.put("w", &3, TTL).await;
    assert_eq!(
        cache.calls.load(Ordering::SeqCst),
        calls,
        "open breaker: no cache call"
    );
    assert_eq!(cache.value("w"), None);

    // The breaker closes after its one-second window (waited with a wide margin).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    layer.put("w", &4, TTL).await;
    assert_eq!(
        cache.value("w"),
        Some(json!(4)),
        "closed again: written through"
    );
    let got: Option<u32> = layer
        .get_or_load("w", TTL, || async { panic!("cached: no load") })
        .await
        .unwrap();
    assert_eq!(got, Some(4));
}
