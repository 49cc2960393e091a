//! The order service's decisions over the in-memory store: key and quantity checks,
//! the idempotency protocol (replay, reuse, release on a transient failure, the
//! store's own duplicate check after a lost key record), the early gate's answer,
//! the hold, who may see an order, and settlement outcomes.
//!
//! `cargo test -p livedrop-core --test order_service`
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Duration;
use common::Memory;
use livedrop_core::model::{
    Actor, ExtendOutcome, Order, OrderStatus, PlaceOutcome, Role, SettleOutcome, Settlement, Stock,
};
use livedrop_core::page::{Page, PageRequest};
use livedrop_core::ports::{AdmissionGate, CacheError, OrderRepository};
use livedrop_core::service::{check_idempotency_key, Livedrop, PlaceOrder, Ports, StockAdjustment};
use livedrop_core::{
    Clock, Config, DropId, Error, ManualClock, OrderId, StoreError, StoreResult, Timestamp, UserId,
};

/// The memory store's orders, failing `place_order` as unavailable while `down`.
struct Flaky {
    inner: Arc<dyn OrderRepository>,
    down: AtomicBool,
}

#[async_trait]
impl OrderRepository for Flaky {
    async fn place_order(&self, order: &Order, now: Timestamp) -> StoreResult<PlaceOutcome> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::unavailable("database", "down"));
        }
        self.inner.place_order(order, now).await
    }
    async fn order(&self, id: OrderId) -> StoreResult<Option<Order>> {
        self.inner.order(id).await
    }
    async fn orders_for_user(&self, user: UserId, page: PageRequest) -> StoreResult<Page<Order>> {
        self.inner.orders_for_user(user, page).await
    }
    async fn settle_order(
        &self,
        id: OrderId,
        settlement: Settlement,
        now: Timestamp,
        hold: Duration,
    ) -> StoreResult<SettleOutcome> {
        self.inner.settle_order(id, settlement, now, hold).await
    }
    async fn expire_holds(
        &self,
        now: Timestamp,
        limit: u32,
        hold: Duration,
    ) -> StoreResult<Vec<Order>> {
        self.inner.expire_holds(now, limit, hold).await
    }
    async fn extend_hold(
        &self,
        id: OrderId,
        by: Duration,
        now: Timestamp,
    ) -> StoreResult<ExtendOutcome> {
        self.inner.extend_hold(id, by, now).await
    }
}

/// A gate that turns every order away.
struct Closed;

#[async_trait]
impl AdmissionGate for Closed {
    async fn admit(&self, _: DropId, _: &str, _: u32) -> Result<bool, CacheError> {
        Ok(false)
    }
    async fn record(&self, _: DropId, _: &str, _: &Stock, _: i64) -> Result<(), CacheError> {
        Ok(())
    }
}

struct World {
    app: Livedrop,
    clock: Arc<ManualClock>,
    flaky: Arc<Flaky>,
    drop: DropId,
    creator: Actor,
}

async fn world_with(stock: u32, limit: Option<u32>, gate: Option<Arc<dyn AdmissionGate>>) -> World {
    let Memory {
        clock, mut ports, ..
    } = Memory::new();
    let flaky = Arc::new(Flaky {
        inner: ports.orders.clone(),
        down: AtomicBool::new(false),
    });
    ports.orders = flaky.clone();
    let ports: Ports = match gate {
        Some(gate) => ports.with_gate(gate),
        None => ports,
    };
    let app = Livedrop::new(ports, Config::default());
    let creator = common::user(app.ports(), Role::Creator).await;
    let drop = common::drop(&app, &creator, stock, limit, Duration::zero()).await;
    World {
        app,
        clock,
        flaky,
        drop,
        creator,
    }
}

async fn world(stock: u32) -> World {
    world_with(stock, None, None).await
}

fn buyer() -> Actor {
    Actor::new(UserId::new(), Role::Customer)
}

impl World {
    fn req(&self, quantity: u32) -> PlaceOrder {
        PlaceOrder {
            admission_token: None,
            drop_id: self.drop,
            quantity,
            sku: None,
        }
    }
    async fn stock(&self) -> Stock {
        let stock = self
            .app
            .ports()
            .inventory
            .stock(self.drop)
            .await
            .unwrap()
            .unwrap();
        Stock::sum(&stock)
    }
}

#[test]
fn fingerprints_tell_requests_apart() {
    let (d1, d2) = (DropId::new(), DropId::new());
    let f = |drop_id, quantity| {
        PlaceOrder {
            admission_token: None,
            drop_id,
            quantity,
            sku: None,
        }
        .fingerprint()
    };
    assert_eq!(f(d1, 1), f(d1, 1));
    assert_ne!(f(d1, 1), f(d1, 2));
    assert_ne!(f(d1, 1), f(d2, 1));
    assert_eq!(f(d1, 1).len(), 64);
    assert!(f(d1, 1).bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn idempotency_keys_are_1_to_255_visible_ascii_characters() {
    assert_eq!(
        check_idempotency_key(None),
        Err(Error::IdempotencyKeyMissing)
    );
    assert_eq!(check_idempotency_key(Some("k-1")), Ok("k-1"));
    let longest = "k".repeat(255);
    assert_eq!(check_idempotency_key(Some(&longest)), Ok(longest.as_str()));
    for bad in ["", "a b", "é", "tab\t", &"k".repeat(256)] {
        let err = check_idempotency_key(Some(bad)).unwrap_err();
        assert_eq!(err.code(), "invalid_input", "{bad:?}");
    }
}

#[tokio::test]
async fn quantities_are_1_to_10000() {
    let w = world(3).await;
    for q in [0, 10_001] {
        let err = w
            .app
            .place_order(&buyer(), Some("q"), w.req(q))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "invalid_input", "{q}");
    }
    let err = w
        .app
        .place_order(&buyer(), Some("q"), w.req(10_000))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        "per_user_limit_exceeded",
        "10000 is a valid quantity"
    );
    let order = w
        .app
        .place_order(&buyer(), Some("q"), w.req(1))
        .await
        .unwrap();
    assert_eq!(order.quantity, 1);
}

#[tokio::test]
async fn an_order_reserves_for_the_hold_period() {
    let w = world(5).await;
    let b = buyer();
    let order = w.app.place_order(&b, Some("k"), w.req(2)).await.unwrap();
    let now = w.clock.now();
    assert_eq!(order.status, OrderStatus::Reserved);
    assert_eq!(order.reserved_until, now + Duration::minutes(10));
    assert_eq!((order.unit_price_cents, order.total_cents), (1_500, 3_000));
    assert_eq!((order.user_id, order.drop_id), (b.id, w.drop));
    assert_eq!(w.stock().await.reserved, 2);
    assert_eq!(w.app.order(&b, order.id).await.unwrap(), order);
    let mine = w.app.my_orders(&b, PageRequest::first(10)).await.unwrap();
    assert_eq!(mine.items, vec![order]);
}

#[tokio::test]
async fn a_replay_returns_the_first_outcome_and_a_reused_key_is_refused() {
    let w = world(1).await;
    let (a, b) = (buyer(), buyer());
    let first = w.app.place_order(&a, Some("k"), w.req(1)).await.unwrap();
    assert_eq!(
        w.app.place_order(&a, Some("k"), w.req(1)).await.unwrap(),
        first
    );
    assert_eq!(
        w.app.place_order(&a, Some("k"), w.req(2)).await,
        Err(Error::IdempotencyKeyReused)
    );
    // A rejection is replayed too, even after stock comes back.
    let sold_out = w
        .app
        .place_order(&b, Some("k"), w.req(1))
        .await
        .unwrap_err();
    assert_eq!(sold_out.code(), "out_of_stock");
    let restock = StockAdjustment {
        delta: 5,
        reason: "found more".into(),
        sku: None,
    };
    w.app.adjust_stock(None, w.drop, restock).await.unwrap();
    assert_eq!(
        w.app.place_order(&b, Some("k"), w.req(1)).await,
        Err(sold_out)
    );
    assert_eq!(w.stock().await.reserved, 1);
}

#[tokio::test]
async fn a_transient_failure_releases_the_key_for_a_retry() {
    let w = world(2).await;
    let b = buyer();
    w.flaky.down.store(true, Ordering::SeqCst);
    let err = w
        .app
        .place_order(&b, Some("k"), w.req(1))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    w.flaky.down.store(false, Ordering::SeqCst);
    let order = w.app.place_order(&b, Some("k"), w.req(1)).await.unwrap();
    assert_eq!(order.quantity, 1);
    assert_eq!(w.stock().await.reserved, 1);
}

#[tokio::test]
async fn a_lost_key_record_still_finds_the_order_the_store_holds() {
    let w = world(3).await;
    let b = buyer();
    let first = w.app.place_order(&b, Some("k"), w.req(1)).await.unwrap();
    // Key records are gone (purged, or never stored: the order is its own record):
    // the store's unique (buyer, key) decides.
    let far = w.clock.now() + Duration::days(3650);
    w.app.ports().idempotency.purge(far).await.unwrap();
    assert_eq!(
        w.app.place_order(&b, Some("k"), w.req(1)).await.unwrap(),
        first
    );
    w.app.ports().idempotency.purge(far).await.unwrap();
    assert_eq!(
        w.app.place_order(&b, Some("k"), w.req(2)).await,
        Err(Error::IdempotencyKeyReused)
    );
    assert_eq!(w.stock().await.reserved, 1, "no second reservation");
}

#[tokio::test]
async fn a_closed_gate_answers_out_of_stock_with_fewer_than_requested() {
    let w = world_with(5, None, Some(Arc::new(Closed))).await;
    match w.app.place_order(&buyer(), Some("k"), w.req(3)).await {
        Err(Error::OutOfStock {
            available,
            requested,
        }) => {
            assert_eq!((available, requested), (2, 3));
        }
        other => panic!("expected out_of_stock, got {other:?}"),
    }
    assert_eq!(w.stock().await.available, 5, "the gate reserves nothing");
}

#[tokio::test]
async fn orders_are_taken_only_while_the_drop_is_live() {
    let w = world(5).await;
    w.clock.advance(Duration::hours(2));
    let err = w
        .app
        .place_order(&buyer(), Some("late"), w.req(1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "drop_not_live");
}

#[tokio::test]
async fn the_per_user_limit_is_reported_with_what_is_held() {
    let w = world_with(10, Some(2), None).await;
    let b = buyer();
    w.app.place_order(&b, Some("a"), w.req(2)).await.unwrap();
    assert_eq!(
        w.app.place_order(&b, Some("b"), w.req(1)).await,
        Err(Error::PerUserLimitExceeded {
            limit: 2,
            held: 2,
            requested: 1
        })
    );
}

#[tokio::test]
async fn only_the_buyer_or_an_admin_sees_and_settles_an_order() {
    let w = world(5).await;
    let b = buyer();
    let order = w.app.place_order(&b, Some("k"), w.req(1)).await.unwrap();
    let stranger = buyer();
    assert_eq!(
        w.app.order(&stranger, order.id).await.unwrap_err().code(),
        "not_found"
    );
    assert_eq!(
        w.app.order(&w.creator, order.id).await.unwrap_err().code(),
        "not_found"
    );
    let admin = Actor::new(UserId::new(), Role::Admin);
    assert_eq!(w.app.order(&admin, order.id).await.unwrap().id, order.id);
    assert_eq!(
        w.app
            .cancel_order(&stranger, order.id)
            .await
            .unwrap_err()
            .code(),
        "not_found"
    );
    let confirmed = w.app.confirm_order(&b, order.id).await.unwrap();
    assert_eq!(confirmed.status, OrderStatus::Confirmed);
    assert_eq!(
        w.app.confirm_order(&b, order.id).await.unwrap().status,
        OrderStatus::Confirmed
    );
    assert_eq!(
        w.app.cancel_order(&b, order.id).await.unwrap_err().code(),
        "order_not_reserved"
    );
    let stock = w.stock().await;
    assert_eq!((stock.sold, stock.reserved), (1, 0));

    let second = w.app.place_order(&b, Some("k2"), w.req(2)).await.unwrap();
    let cancelled = w.app.cancel_order(&b, second.id).await.unwrap();
    assert_eq!(cancelled.status, OrderStatus::Cancelled);
    assert_eq!(w.stock().await.available, 4);

    let third = w.app.place_order(&b, Some("k3"), w.req(1)).await.unwrap();
    w.clock.advance(Duration::minutes(11));
    assert_eq!(
        w.app.confirm_order(&b, third.id).await,
        Err(Error::HoldExpired)
    );
    assert_eq!(
        w.app.order(&b, OrderId::new()).await.unwrap_err().code(),
        "not_found"
    );
}
