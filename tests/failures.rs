//! Failure paths of the ports, driven with mockall mocks: a cache outage, a failing
//! event bus, an unavailable repository.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{sized_order, World};
use livedrop::adapters::memory::MemoryBus;
use livedrop::core::event::EventType;
use livedrop::core::model::Role;
use livedrop::core::ports::{
    CacheError, EventBus, MockCache, MockEventBus, MockIdempotencyStore, MockOrderRepository,
};
use livedrop::core::service::OutboxRelay;
use livedrop::core::{Config, Error, StoreError};

fn refused() -> CacheError {
    CacheError("connection refused".into())
}

#[tokio::test]
async fn reads_are_served_from_the_repository_while_the_cache_is_down() {
    let mut cache = MockCache::new();
    cache.expect_get().returning(|_| Err(refused()));
    cache.expect_fence().returning(|_| Err(refused()));
    cache.expect_set().returning(|_, _, _, _| Err(refused()));
    cache.expect_invalidate().returning(|_| Err(refused()));
    cache
        .expect_invalidate_prefix()
        .returning(|_| Err(refused()));
    let world = World::with_ports(Config::default(), |mut ports| {
        ports.cache = Arc::new(cache);
        ports
    });

    let drop = world.creators_drop(5, None).await;
    let product = world.app.product(drop.drop.product_id).await.unwrap();
    assert_eq!(product.title, "Limited hoodie");
    let view = world.app.drop_view(drop.drop.id).await.unwrap();
    assert_eq!(view.stock.available, 5);
    let listed = world
        .app
        .list_drops(Default::default(), Default::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);

    // Orders do not depend on the cache at all.
    let buyer = world.user(Role::Customer).await;
    let order = world.order(&buyer, Some("k"), &drop, 2).await.unwrap();
    assert_eq!(order.quantity, 2);
    assert!(
        world
            .app
            .cache()
            .stats()
            .errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

#[tokio::test]
async fn a_failing_bus_never_blocks_an_order_and_loses_no_event() {
    let world = World::new();
    let drop = world.creators_drop(5, None).await;
    let buyer = world.user(Role::Customer).await;

    let mut broken = MockEventBus::new();
    broken
        .expect_publish()
        .returning(|_| Err(StoreError::unavailable("event bus", "broker down")));
    let relay = OutboxRelay::new(world.ports.outbox.clone(), Arc::new(broken), 100);

    let order = world
        .order(&buyer, Some("k1"), &drop, 1)
        .await
        .expect("the order commits while the bus is down");

    let err = relay.relay_once().await.unwrap_err();
    assert!(err.is_unavailable());
    let pending = world.ports.outbox.pending(1_000).await.unwrap();
    assert!(pending
        .iter()
        .any(|r| r.event.kind == EventType::OrderPlaced && r.event.aggregate_id == order.id.0));
    let backlog = world.ports.outbox.backlog().await.unwrap();
    assert_eq!(backlog as usize, pending.len());

    // The bus comes back: every held event is delivered, in order.
    let healthy = Arc::new(MemoryBus::new());
    let mut watcher = healthy.subscribe("audit").await.unwrap();
    let relay = OutboxRelay::new(world.ports.outbox.clone(), healthy.clone(), 100);
    let mut moved = 0;
    loop {
        let n = relay.relay_once().await.unwrap();
        if n == 0 {
            break;
        }
        moved += n;
    }
    assert_eq!(moved, pending.len());
    assert_eq!(world.ports.outbox.backlog().await.unwrap(), 0);
    let mut seen = Vec::new();
    while let Some(event) = watcher
        .next(std::time::Duration::from_millis(50))
        .await
        .unwrap()
    {
        seen.push(event.id);
    }
    let expected: Vec<_> = pending.iter().map(|r| r.event.id).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn an_unavailable_repository_is_a_clear_error_and_frees_the_key() {
    let world_setup = World::new();
    let drop = world_setup.creators_drop(5, None).await;
    let buyer = world_setup.user(Role::Customer).await;

    let mut orders = MockOrderRepository::new();
    orders
        .expect_place_order()
        .times(1)
        .returning(|_, _| Err(StoreError::unavailable("database", "connection refused")));
    let world = world_setup.sharing(|mut ports| {
        ports.orders = Arc::new(orders);
        ports
    });
    let err = world
        .order(&buyer, Some("retry-me"), &drop, 1)
        .await
        .unwrap_err();
    assert_eq!(err, Error::unavailable("database"));
    assert_eq!(err.code(), "unavailable");

    // The database returns: the same key runs afresh instead of replaying the failure.
    let world = world_setup.sharing(|ports| ports);
    let order = world
        .order(&buyer, Some("retry-me"), &drop, 1)
        .await
        .unwrap();
    assert_eq!(order.quantity, 1);
}

#[tokio::test]
async fn an_unavailable_idempotency_store_fails_only_what_it_must_keep() {
    // An order's key is kept by the order store in the order's own step: an
    // unavailable key store does not stop orders, and a retry still replays.
    let mut idempotency = MockIdempotencyStore::new();
    idempotency
        .expect_begin()
        .returning(|_, _, _, _, _| Err(StoreError::unavailable("database", "pool timed out")));
    let world = World::with_ports(Config::default(), |mut ports| {
        ports.idempotency = Arc::new(idempotency);
        ports
    });
    let drop = world.creators_drop(5, None).await;
    let buyer = world.user(Role::Customer).await;
    let first = world.order(&buyer, Some("k"), &drop, 1).await.unwrap();
    let again = world.order(&buyer, Some("k"), &drop, 1).await.unwrap();
    assert_eq!(again, first, "the retry replays the order");
    let stock = world.stock(&drop).await;
    assert_eq!(stock.reserved, 1, "one reservation");
    // A refusal decided before the order store (no such variant) is kept through
    // the key store: while it is unavailable the answer is `unavailable`, never a
    // refusal a retry might not meet again.
    let err = world
        .app
        .place_order(&buyer, Some("other"), sized_order(&drop, "no-such-size", 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unavailable");
    assert_eq!(world.stock(&drop).await, stock, "nothing else moved");
}
