//! Drops, holds and notifications moving with the clock, driven by the background
//! tasks; idempotency and authorization through the services.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use chrono::Duration as Span;
use common::{order_of, ClockExt, World};
use livedrop::core::event::EventType;
use livedrop::core::model::{Actor, DropStatus, NotificationKind, OrderStatus, Role};
use livedrop::core::service::{Livedrop, NewDrop, PlaceOrder, StockAdjustment};
use livedrop::core::{Config, Error, PageRequest, UserId};

fn fast() -> Config {
    Config {
        tick: Duration::from_millis(20),
        ..Config::default()
    }
}

/// Polls `check` every 20 ms for up to 5 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..250 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Waits (as [`eventually`]) until `user` holds a notification of `kind`.
async fn eventually_notified(app: &Livedrop, user: Actor, kind: NotificationKind) {
    eventually(&format!("a {kind:?} notification"), || {
        let app = app.clone();
        async move {
            let page = app
                .notifications(&user, false, PageRequest::default())
                .await
                .unwrap();
            page.items.iter().any(|n| n.kind == kind)
        }
    })
    .await;
}

/// A restock of `delta` units.
fn restock(delta: i64) -> StockAdjustment {
    StockAdjustment {
        delta,
        reason: "restock".into(),
        sku: None,
    }
}

/// The code of the error `result` must be.
#[track_caller]
fn refusal<T: std::fmt::Debug>(result: Result<T, Error>) -> &'static str {
    result.unwrap_err().code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_drop_goes_live_by_itself_and_every_follower_hears_once() {
    let world = World::with_config(Config {
        fan_out_batch: 2,
        ..fast()
    });
    let creator = world.user(Role::Creator).await;
    let mut followers = Vec::new();
    for _ in 0..5 {
        let f = world.user(Role::Customer).await;
        world.app.follow(&f, creator.id).await.unwrap();
        world.app.follow(&f, creator.id).await.unwrap(); // idempotent
        followers.push(f);
    }
    let now = world.clock.now_ts();
    // Starts in ten minutes, ends an hour after.
    let drop = world
        .drop_starting(&creator, 10, Some(2), Some(Span::minutes(10)))
        .await;
    assert_eq!(drop.status_at(now), DropStatus::Scheduled);
    let mut audit = world.ports.bus.subscribe("audit").await.unwrap();
    let background = world.app.spawn_background();

    // Before the start, orders are refused.
    let err = world
        .order(&followers[0], Some("early"), &drop, 1)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::DropNotLive {
            status: DropStatus::Scheduled
        }
    );

    world.clock.advance(Span::minutes(10));
    for follower in &followers {
        eventually_notified(&world.app, *follower, NotificationKind::DropLive).await;
    }
    let view = world.app.drop_view(drop.drop.id).await.unwrap();
    assert_eq!(view.status_at(world.clock.now_ts()), DropStatus::Live);
    world
        .order(&followers[0], Some("now"), &drop, 1)
        .await
        .unwrap();

    // The drop ends by itself too.
    world.clock.advance(Span::minutes(60));
    let mut kinds: Vec<EventType> = Vec::new();
    let drain = |kinds: &mut Vec<EventType>, event: livedrop::core::event::Event| {
        if event.aggregate_id == drop.drop.id.0 {
            kinds.push(event.kind);
        }
    };
    for _ in 0..250 {
        while let Some(event) = audit.next(Duration::from_millis(10)).await.unwrap() {
            drain(&mut kinds, event);
        }
        if kinds.contains(&EventType::DropEnded) {
            break;
        }
    }
    // With the background stopped nothing more is published: what the subscription
    // still holds is the rest of the drop's events, duplicates included.
    background.shutdown().await;
    while let Some(event) = audit.next(Duration::from_millis(50)).await.unwrap() {
        drain(&mut kinds, event);
    }
    let count = |kind: EventType| kinds.iter().filter(|k| **k == kind).count();
    assert_eq!(
        (count(EventType::DropStarted), count(EventType::DropEnded)),
        (1, 1),
        "drop.started and drop.ended exactly once: {kinds:?}"
    );

    // Every follower, every notification: one drop_scheduled and one drop_live each,
    // about this drop.
    for (i, follower) in followers.iter().enumerate() {
        let page = world
            .app
            .notifications(follower, false, PageRequest::default())
            .await
            .unwrap();
        for kind in [NotificationKind::DropScheduled, NotificationKind::DropLive] {
            let got: Vec<_> = page.items.iter().filter(|n| n.kind == kind).collect();
            assert_eq!(got.len(), 1, "follower {i}: one {kind:?}, got {got:?}");
            assert_eq!(got[0].payload["drop_id"], drop.drop.id.to_string());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_hold_returns_its_stock_without_any_request() {
    let world = World::with_config(fast());
    let drop = world.creators_drop(3, None).await;
    let buyer = world.user(Role::Customer).await;
    let order = world.order(&buyer, Some("k"), &drop, 3).await.unwrap();
    assert_eq!(order.reserved_until, order.created_at + Span::minutes(10));
    let background = world.app.spawn_background();
    world.clock.advance(Span::minutes(10));
    let inventory = world.ports.inventory.clone();
    let id = drop.drop.id;
    eventually("the stock to return", || {
        let inventory = inventory.clone();
        async move { inventory.stock(id).await.unwrap().unwrap()[0].available == 3 }
    })
    .await;
    let order = world.app.order(&buyer, order.id).await.unwrap();
    assert_eq!(order.status, OrderStatus::Expired);
    eventually_notified(&world.app, buyer, NotificationKind::OrderExpired).await;
    // Confirming after expiry is refused.
    assert_eq!(
        refusal(world.app.confirm_order(&buyer, order.id).await),
        "order_not_reserved"
    );
    background.shutdown().await;
}

#[tokio::test]
async fn keys_replay_refuse_reuse_and_report_in_flight() {
    let world = World::new();
    let drop = world.creators_drop(2, None).await;
    let buyer = world.user(Role::Customer).await;
    let one = || order_of(&drop, 1);
    let by_buyer = |key: Option<&'static str>, request: PlaceOrder| {
        let app = world.app.clone();
        async move { app.place_order(&buyer, key, request).await }
    };

    let missing = by_buyer(None, one()).await.unwrap_err();
    assert_eq!(missing, Error::IdempotencyKeyMissing);
    let first = by_buyer(Some("a"), one()).await.unwrap();
    let again = by_buyer(Some("a"), one()).await.unwrap();
    assert_eq!(first, again);
    let stock = world.stock(&drop).await;
    assert_eq!(stock.reserved, 1, "a replay reserves nothing");
    let reused = by_buyer(Some("a"), order_of(&drop, 2)).await.unwrap_err();
    assert_eq!(reused, Error::IdempotencyKeyReused);

    // Another user's identical key is theirs alone.
    let someone = world.user(Role::Customer).await;
    world.order(&someone, Some("a"), &drop, 1).await.unwrap();

    // A rejection is replayed too, even after stock comes back.
    let err = by_buyer(Some("b"), one()).await.unwrap_err();
    assert_eq!(err.code(), "out_of_stock");
    world
        .app
        .adjust_stock(None, drop.drop.id, restock(5))
        .await
        .unwrap();
    assert_eq!(by_buyer(Some("b"), one()).await.unwrap_err(), err);

    // A key held by a request still running is in flight until its lease runs out.
    let now = world.clock.now_ts();
    let fingerprint = one().fingerprint();
    world
        .ports
        .idempotency
        .begin(buyer.id, "c", &fingerprint, now, Duration::from_secs(30))
        .await
        .unwrap();
    let in_flight = by_buyer(Some("c"), one()).await.unwrap_err();
    assert_eq!(in_flight, Error::IdempotencyKeyInFlight);
    world.clock.advance(Span::seconds(31));
    by_buyer(Some("c"), one())
        .await
        .expect("an abandoned key is taken over");
}

#[tokio::test]
async fn authorization_lives_in_the_core() {
    let world = World::new();
    let creator = world.user(Role::Creator).await;
    let rival = world.user(Role::Creator).await;
    let customer = world.user(Role::Customer).await;
    let admin = world.user(Role::Admin).await;
    let drop = world.live_drop(&creator, 5, None).await;

    let product = world.app.product(drop.drop.product_id).await.unwrap();
    let new_drop = NewDrop {
        allocation: Default::default(),
        entries_close_at: None,
        waiting_room: None,
        product_id: product.id,
        starts_at: None,
        ends_at: world.clock.now_ts() + Span::hours(1),
        total_stock: 1,
        variants: Vec::new(),
        per_user_limit: None,
    };
    let adjustment = restock(1);
    for (case, code) in [
        (
            "a rival schedules",
            refusal(world.app.schedule_drop(&rival, new_drop.clone()).await),
        ),
        (
            "a customer schedules",
            refusal(world.app.schedule_drop(&customer, new_drop).await),
        ),
        (
            "a rival cancels",
            refusal(world.app.cancel_drop(&rival, drop.drop.id).await),
        ),
        (
            "the creator adjusts stock",
            refusal(
                world
                    .app
                    .adjust_stock(Some(&creator), drop.drop.id, adjustment)
                    .await,
            ),
        ),
    ] {
        assert_eq!(code, "forbidden", "{case}");
    }

    let order = world.order(&customer, Some("k"), &drop, 1).await.unwrap();
    assert_eq!(
        refusal(world.app.order(&rival, order.id).await),
        "not_found"
    );
    assert_eq!(
        refusal(world.app.cancel_order(&rival, order.id).await),
        "not_found"
    );
    assert_eq!(
        world.app.order(&admin, order.id).await.unwrap().id,
        order.id
    );

    let cancelled = world.app.cancel_drop(&admin, drop.drop.id).await.unwrap();
    assert_eq!(
        cancelled.status_at(world.clock.now_ts()),
        DropStatus::Cancelled
    );
    let err = world
        .order(&customer, Some("k2"), &drop, 1)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::DropNotLive {
            status: DropStatus::Cancelled
        }
    );
    // The hold taken before the cancel still settles, once.
    for attempt in ["first", "repeated"] {
        let confirmed = world.app.confirm_order(&customer, order.id).await.unwrap();
        assert_eq!(
            confirmed.status,
            OrderStatus::Confirmed,
            "{attempt} confirm"
        );
    }
    assert_eq!(
        refusal(world.app.cancel_order(&customer, order.id).await),
        "order_not_reserved"
    );
}

/// Orders whose every placement is stored and then answered `unavailable`, as when
/// the connection drops between the commit and its answer.
struct AnswerLost(std::sync::Arc<dyn livedrop::core::ports::OrderRepository>);

#[async_trait::async_trait]
impl livedrop::core::ports::OrderRepository for AnswerLost {
    async fn place_order(
        &self,
        order: &livedrop::core::model::Order,
        now: livedrop::core::Timestamp,
    ) -> livedrop::core::StoreResult<livedrop::core::model::PlaceOutcome> {
        self.0.place_order(order, now).await?;
        Err(livedrop::core::StoreError::unavailable(
            "database",
            "connection reset after commit",
        ))
    }
    async fn order(
        &self,
        id: livedrop::core::OrderId,
    ) -> livedrop::core::StoreResult<Option<livedrop::core::model::Order>> {
        self.0.order(id).await
    }
    async fn order_by_key(
        &self,
        user: livedrop::core::UserId,
        key: &str,
    ) -> livedrop::core::StoreResult<Option<livedrop::core::model::Order>> {
        self.0.order_by_key(user, key).await
    }
    async fn orders_for_user(
        &self,
        user: livedrop::core::UserId,
        page: PageRequest,
    ) -> livedrop::core::StoreResult<livedrop::core::Page<livedrop::core::model::Order>> {
        self.0.orders_for_user(user, page).await
    }
    async fn settle_order(
        &self,
        id: livedrop::core::OrderId,
        settlement: livedrop::core::model::Settlement,
        now: livedrop::core::Timestamp,
        hold: chrono::Duration,
    ) -> livedrop::core::StoreResult<livedrop::core::model::SettleOutcome> {
        self.0.settle_order(id, settlement, now, hold).await
    }
    async fn expire_holds(
        &self,
        now: livedrop::core::Timestamp,
        limit: u32,
        hold: chrono::Duration,
    ) -> livedrop::core::StoreResult<Vec<livedrop::core::model::Order>> {
        self.0.expire_holds(now, limit, hold).await
    }
    async fn extend_hold(
        &self,
        id: livedrop::core::OrderId,
        by: chrono::Duration,
        now: livedrop::core::Timestamp,
    ) -> livedrop::core::StoreResult<livedrop::core::model::ExtendOutcome> {
        self.0.extend_hold(id, by, now).await
    }
}

/// A sold-out gate driven by the test: it refuses every order while `sold_out`
/// is set, and never answers while `stall` is.
#[derive(Default)]
struct SwitchedGate {
    sold_out: std::sync::atomic::AtomicBool,
    stall: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl livedrop::core::ports::AdmissionGate for SwitchedGate {
    async fn admit(
        &self,
        _: livedrop::core::DropId,
        _: &str,
        _: u32,
    ) -> Result<bool, livedrop::core::ports::CacheError> {
        use std::sync::atomic::Ordering;
        if self.stall.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        Ok(!self.sold_out.load(Ordering::SeqCst))
    }
    async fn record(
        &self,
        _: livedrop::core::DropId,
        _: &str,
        _: &livedrop::core::model::Stock,
        _: i64,
    ) -> Result<(), livedrop::core::ports::CacheError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_retry_after_a_lost_answer_gets_its_order_before_any_refusal() {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    let placed = World::new();
    let drop = placed.creators_drop(2, Some(1)).await;
    let buyers = [
        placed.user(Role::Customer).await,
        placed.user(Role::Customer).await,
        placed.user(Role::Customer).await,
    ];

    // Both units go to orders whose answers are lost: each buyer sees `unavailable`.
    let gate = Arc::new(SwitchedGate::default());
    let lossy = placed.sharing(|mut ports| {
        ports.orders = Arc::new(AnswerLost(ports.orders.clone()));
        ports.with_gate(gate.clone())
    });
    for (buyer, key) in buyers[..2].iter().zip(["a", "b"]) {
        let err = lossy.order(buyer, Some(key), &drop, 1).await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
    }
    let stored = |i: usize, key: &'static str| {
        let placed = &placed;
        let id = buyers[i].id;
        async move {
            placed
                .ports
                .orders
                .order_by_key(id, key)
                .await
                .unwrap()
                .unwrap()
        }
    };
    let (a, b) = (stored(0, "a").await, stored(1, "b").await);

    // The sold-out gate now refuses the drop: the retry still gets its order.
    gate.sold_out.store(true, Ordering::SeqCst);
    assert_eq!(
        lossy.order(&buyers[0], Some("a"), &drop, 1).await.unwrap(),
        a
    );
    // The drop ended: the retry still gets its order.
    placed.clock.advance(Span::hours(2));
    assert_eq!(
        lossy.order(&buyers[1], Some("b"), &drop, 1).await.unwrap(),
        b
    );
    // A key with no order is refused as before.
    assert!(matches!(
        lossy
            .order(&buyers[2], Some("c"), &drop, 1)
            .await
            .unwrap_err(),
        Error::DropNotLive { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_handler_gives_up_at_shutdown_is_not_committed() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use livedrop::core::model::DropState;
    use livedrop::core::ports::MockNotificationRepository;
    use livedrop::core::service::NOTIFY_GROUP;
    use livedrop::core::testing::fixtures;

    let attempts = Arc::new(AtomicUsize::new(0));
    let mut failing = MockNotificationRepository::new();
    let seen = attempts.clone();
    failing.expect_insert_notification().returning(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
        Err(livedrop::core::StoreError::unavailable(
            "database",
            "connection refused",
        ))
    });
    let world = World::with_ports(fast(), |mut ports| {
        ports.notifications = Arc::new(failing);
        ports
    });
    // Nothing is written through the services: the event below is the only one, so
    // the notifier is stuck on it when the shutdown comes.
    let now = world.clock.now_ts();
    let creator = fixtures::user("creator", Role::Creator);
    let product = fixtures::product(creator.id, "Hoodie", "Warm", now);
    let drop = fixtures::drop_of(&product, now, now + Span::hours(1), 1, DropState::Live, now);
    let order = fixtures::order(UserId::new(), &drop, 1, "k", now);
    let confirmed =
        livedrop::core::Event::order(EventType::OrderConfirmed, &order, world.clock.now_ts());

    let background = world.app.spawn_background();
    world
        .ports
        .bus
        .publish(std::slice::from_ref(&confirmed))
        .await
        .unwrap();
    eventually("the notifier to try the event", || {
        let attempts = attempts.clone();
        async move { attempts.load(Ordering::SeqCst) > 0 }
    })
    .await;
    background.shutdown().await;

    // Whoever resumes the group gets the event again: it was never handled.
    let mut resumed = world.ports.bus.subscribe(NOTIFY_GROUP).await.unwrap();
    let mut redelivered = false;
    while let Some(event) = resumed.next(Duration::from_millis(200)).await.unwrap() {
        redelivered |= event.id == confirmed.id;
    }
    assert!(redelivered, "the unhandled event was committed at shutdown");
}

#[tokio::test]
async fn an_order_abandoned_mid_request_leaves_its_key_free() {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    let gate = Arc::new(SwitchedGate::default());
    let world = World::with_ports(Config::default(), |ports| ports.with_gate(gate.clone()));
    let drop = world.creators_drop(5, None).await;
    let buyer = world.user(Role::Customer).await;
    let one = || order_of(&drop, 1);

    // The client goes away while its order waits at an await inside the claim.
    gate.stall.store(true, Ordering::SeqCst);
    // The gate never answers, so this always times out.
    let abandoned = tokio::time::timeout(
        Duration::from_millis(50),
        world.app.place_order(&buyer, Some("k"), one()),
    )
    .await;
    assert!(abandoned.is_err(), "the request was abandoned");
    tokio::task::yield_now().await;

    // Its retry, well within the lease, runs instead of answering "in flight".
    gate.stall.store(false, Ordering::SeqCst);
    let order = world
        .app
        .place_order(&buyer, Some("k"), one())
        .await
        .expect("the abandoned key was released");
    assert_eq!(
        world
            .app
            .place_order(&buyer, Some("k"), one())
            .await
            .unwrap(),
        order,
        "and is then replayed"
    );
}

/// Stock adjustments whose first answer is lost after the write.
struct FirstAdjustLost {
    inner: std::sync::Arc<dyn livedrop::core::ports::InventoryRepository>,
    lost: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl livedrop::core::ports::InventoryRepository for FirstAdjustLost {
    async fn stock(
        &self,
        drop: livedrop::core::DropId,
    ) -> livedrop::core::StoreResult<Option<Vec<livedrop::core::model::Stock>>> {
        self.inner.stock(drop).await
    }
    async fn adjust(
        &self,
        adjustment: &livedrop::core::model::Adjustment,
    ) -> livedrop::core::StoreResult<livedrop::core::model::AdjustOutcome> {
        let outcome = self.inner.adjust(adjustment).await?;
        if self.lost.swap(true, std::sync::atomic::Ordering::SeqCst) {
            Ok(outcome)
        } else {
            Err(livedrop::core::StoreError::unavailable(
                "database",
                "connection reset after commit",
            ))
        }
    }
    async fn ledger(
        &self,
        drop: livedrop::core::DropId,
        page: PageRequest,
    ) -> livedrop::core::StoreResult<livedrop::core::Page<livedrop::core::model::LedgerEntry>> {
        self.inner.ledger(drop, page).await
    }
}

#[tokio::test]
async fn a_restock_whose_answer_was_lost_is_not_applied_twice_for_its_key() {
    use std::sync::Arc;

    let world = World::with_ports(Config::default(), |mut ports| {
        ports.inventory = Arc::new(FirstAdjustLost {
            inner: ports.inventory.clone(),
            lost: std::sync::atomic::AtomicBool::new(false),
        });
        ports
    });
    let drop = world.creators_drop(10, None).await;
    let operator = UserId(uuid::Uuid::from_u128(u128::MAX));
    let restock = || {
        world.app.idempotently(operator, "restock-1", "fp", || {
            world.app.adjust_stock(None, drop.drop.id, restock(5))
        })
    };
    let first = restock().await.unwrap_err();
    assert!(first.is_transient(), "{first:?}");
    let retry = restock().await.unwrap();
    assert!(!retry.replayed);
    let again = restock().await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.value, retry.value);

    let stock = world.ports.inventory.stock(drop.drop.id).await.unwrap();
    assert_eq!(stock.unwrap()[0].total, 15, "the restock applied once");
    let shown = world.app.displayed_stock(drop.drop.id).await.unwrap();
    assert_eq!(shown.total, 15, "and shows");
    let ledger = world
        .ports
        .inventory
        .ledger(drop.drop.id, PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(ledger.items.len(), 2, "the initial entry and one restock");
}
