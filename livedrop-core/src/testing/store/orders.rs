//! Orders: the placement checks, events, per-user limit, races, settlement, listings,
//! hold expiry and hold extension.

use super::*;
use crate::model::ExtendOutcome;

/// Every outcome of `place_order`, and the documented order of the checks.
pub async fn orders_place_checks_in_documented_order(repos: &Repos) {
    let drop = live_drop(repos, 5, 2).await;
    let buyer = seed_user(repos, "Buyer", Role::Customer).await;

    let first = fixtures::order(buyer.id, &drop, 1, "k1", T0);
    let stored = placed(repos, &first, T0).await;
    assert_eq!(stored, first, "the order is stored as given, reserved");
    assert_eq!(
        repos.orders.order(first.id).await.expect("order"),
        Some(first.clone())
    );

    // 1. Duplicate comes first: even a different quantity or an unknown drop.
    let retry = fixtures::order(buyer.id, &drop, 2, "k1", at(1));
    assert_eq!(
        place(repos, &retry, at(1)).await,
        PlaceOutcome::Duplicate(first.clone())
    );
    let elsewhere = model::Drop {
        id: DropId::new(),
        ..drop.clone()
    };
    let retry = fixtures::order(buyer.id, &elsewhere, 1, "k1", at(1));
    assert_eq!(
        place(repos, &retry, at(1)).await,
        PlaceOutcome::Duplicate(first.clone())
    );
    assert_eq!(repos.orders.order(retry.id).await.expect("order"), None);

    // 2. Unknown drop.
    let lost = fixtures::order(buyer.id, &elsewhere, 1, "k2", at(1));
    assert_eq!(place(repos, &lost, at(1)).await, PlaceOutcome::DropNotFound);

    // 3. Outside the window [starts_at, ends_at), even past the per-user limit.
    for (now, key) in [
        (at(-601), "early"),
        (at(3600), "at-end"),
        (at(3700), "late"),
    ] {
        let o = fixtures::order(buyer.id, &drop, 5, key, now);
        assert_eq!(place(repos, &o, now).await, PlaceOutcome::NotLive, "{key}");
    }
    let at_start = fixtures::order(buyer.id, &drop, 1, "at-start", at(-600));
    placed(repos, &at_start, at(-600)).await;

    // 4. Per-user limit before stock.
    let over = fixtures::order(buyer.id, &drop, 1, "k3", at(2));
    assert_eq!(
        place(repos, &over, at(2)).await,
        PlaceOutcome::LimitExceeded { limit: 2, held: 2 }
    );
    let tiny = live_drop(repos, 1, 1).await;
    let greedy = fixtures::order(buyer.id, &tiny, 2, "k4", at(2));
    assert_eq!(
        place(repos, &greedy, at(2)).await,
        PlaceOutcome::LimitExceeded { limit: 1, held: 0 }
    );

    // 5. Stock.
    let roomy = live_drop(repos, 2, 5).await;
    let big = fixtures::order(buyer.id, &roomy, 3, "k5", at(3));
    assert_eq!(
        place(repos, &big, at(3)).await,
        PlaceOutcome::OutOfStock { available: 2 }
    );
    assert_eq!(
        stock_of(repos, roomy.id).await,
        Stock::new(2),
        "a refusal changes nothing"
    );

    // A cancelled drop is not live.
    assert!(repos
        .drops
        .transition(roomy.id, &[DropState::Live], DropState::Cancelled, &[])
        .await
        .expect("cancel"));
    let late = fixtures::order(buyer.id, &roomy, 1, "k6", at(4));
    assert_eq!(place(repos, &late, at(4)).await, PlaceOutcome::NotLive);

    assert_eq!(stock_of(repos, drop.id).await, stock(5, 3, 2, 0));
    assert_eq!(stock_of(repos, tiny.id).await, Stock::new(1));
    let mine = repos
        .orders
        .orders_for_user(buyer.id, PageRequest::first(100))
        .await
        .expect("orders");
    assert_eq!(mine.items.len(), 2, "only placed orders are stored");
}

/// A placed order appends `order.placed` then `stock.changed` (then `drop.sold_out`
/// when it takes the last unit); refusals append nothing.
pub async fn orders_place_appends_events(repos: &Repos) {
    let drop = live_drop(repos, 2, 2).await;
    let a = seed_user(repos, "A", Role::Customer).await;
    let b = seed_user(repos, "B", Role::Customer).await;
    drain(repos).await;

    let first = placed(repos, &fixtures::order(a.id, &drop, 1, "k", T0), T0).await;
    let events = drain(repos).await;
    assert_eq!(
        kinds(&events),
        vec![EventType::OrderPlaced, EventType::StockChanged]
    );
    assert_eq!(events[0].aggregate_id, first.id.0);
    let payload = events[0].decode().expect("order payload");
    assert_eq!(payload, EventPayload::OrderPlaced(first.clone()));
    assert_eq!(events[1].aggregate_id, drop.id.0);
    let moved = stock_payload(&events[1]);
    assert_eq!(moved.drop_id, drop.id.0);
    assert_eq!(moved.stock, stock(2, 1, 1, 0));
    let v1 = events[1].version;

    let second = placed(repos, &fixtures::order(b.id, &drop, 1, "k", at(1)), at(1)).await;
    let events = drain(repos).await;
    assert_eq!(
        kinds(&events),
        vec![
            EventType::OrderPlaced,
            EventType::StockChanged,
            EventType::DropSoldOut
        ]
    );
    assert_eq!(events[0].aggregate_id, second.id.0);
    assert_eq!(stock_payload(&events[1]).stock, stock(2, 0, 2, 0));
    assert_eq!(stock_payload(&events[2]).stock, stock(2, 0, 2, 0));
    assert!(events[1].version > v1, "stock versions increase");
    assert_eq!(events[2].version, events[1].version);

    let refused = fixtures::order(a.id, &drop, 1, "k2", at(2));
    assert_eq!(
        place(repos, &refused, at(2)).await,
        PlaceOutcome::OutOfStock { available: 0 }
    );
    let duplicate = fixtures::order(a.id, &drop, 1, "k", at(2));
    assert!(matches!(
        place(repos, &duplicate, at(2)).await,
        PlaceOutcome::Duplicate(_)
    ));
    assert!(drain(repos).await.is_empty(), "refusals append nothing");

    let view = repos
        .drops
        .drop_view(drop.id)
        .await
        .expect("view")
        .expect("exists");
    assert_eq!(view.status_at(at(2)), DropStatus::SoldOut);
    assert!(view.stock.is_consistent());
}

/// A placement always stores a fresh reservation: whatever status or extension the
/// request carries, the order is `reserved`, not extended, and reads back so.
pub async fn orders_place_stores_a_fresh_reservation(repos: &Repos) {
    let drop = live_drop(repos, 3, 3).await;
    let buyer = seed_user(repos, "Buyer", Role::Customer).await;
    let request = Order {
        status: OrderStatus::Confirmed,
        extended_at: Some(T0),
        ..fixtures::order(buyer.id, &drop, 1, "k", T0)
    };
    let order = placed(repos, &request, T0).await;
    let want = Order {
        status: OrderStatus::Reserved,
        extended_at: None,
        ..request
    };
    assert_eq!(order, want);
    assert_eq!(stored(repos, order.id).await, want);
    assert_eq!(stock_of(repos, drop.id).await, stock(3, 2, 1, 0));
}

/// The per-user limit counts reserved plus confirmed units; cancelled and expired
/// orders free their units.
pub async fn orders_limit_counts_reserved_and_confirmed(repos: &Repos) {
    let drop = live_drop(repos, 10, 3).await;
    let buyer = seed_user(repos, "Buyer", Role::Customer).await;
    let a = placed(repos, &fixtures::order(buyer.id, &drop, 2, "a", T0), T0).await;
    assert!(matches!(
        settle(repos, a.id, Settlement::Confirm, at(1)).await,
        SettleOutcome::Settled(_)
    ));
    let b = fixtures::order(buyer.id, &drop, 2, "b", at(2));
    assert_eq!(
        place(repos, &b, at(2)).await,
        PlaceOutcome::LimitExceeded { limit: 3, held: 2 },
        "confirmed units count"
    );
    let b = placed(
        repos,
        &fixtures::order(buyer.id, &drop, 1, "b1", at(2)),
        at(2),
    )
    .await;
    let c = fixtures::order(buyer.id, &drop, 1, "c", at(3));
    assert_eq!(
        place(repos, &c, at(3)).await,
        PlaceOutcome::LimitExceeded { limit: 3, held: 3 },
        "reserved units count"
    );
    assert!(matches!(
        settle(repos, b.id, Settlement::Cancel, at(4)).await,
        SettleOutcome::Settled(_)
    ));
    let c = placed(
        repos,
        &fixtures::order(buyer.id, &drop, 1, "c1", at(5)),
        at(5),
    )
    .await;
    let expired = repos
        .orders
        .expire_holds(c.reserved_until, 100, fixtures::HOLD)
        .await
        .expect("expire");
    assert_eq!(expired.iter().map(|o| o.id).collect::<Vec<_>>(), vec![c.id]);
    placed(
        repos,
        &fixtures::order(buyer.id, &drop, 1, "d", at(700)),
        at(700),
    )
    .await;
    assert_eq!(stock_of(repos, drop.id).await, stock(10, 7, 1, 2));
}

/// 200 buyers race for 50 units: exactly 50 orders, never an oversell.
pub async fn orders_race_never_oversells(repos: &Repos) {
    let drop = live_drop(repos, 50, 1).await;
    let mut buyers = Vec::new();
    for i in 0..200 {
        buyers.push(seed_user(repos, &format!("buyer{i}"), Role::Customer).await);
    }
    drain(repos).await;
    let tasks = buyers.iter().map(|buyer| {
        let orders = repos.orders.clone();
        let order = fixtures::order(buyer.id, &drop, 1, "race", T0);
        tokio::spawn(async move { orders.place_order(&order, T0).await.expect("place order") })
    });
    let outcomes: Vec<PlaceOutcome> = joined(tasks).await;
    let mut placed = 0;
    for outcome in &outcomes {
        match outcome {
            PlaceOutcome::Placed(_) => placed += 1,
            PlaceOutcome::OutOfStock { available: 0 } => {}
            other => panic!("unexpected outcome in a race: {other:?}"),
        }
    }
    assert_eq!(placed, 50, "exactly the stock is sold");
    assert_eq!(stock_of(repos, drop.id).await, stock(50, 0, 50, 0));

    let events = drain(repos).await;
    let count = |kind: EventType| events.iter().filter(|e| e.kind == kind).count();
    assert_eq!(count(EventType::OrderPlaced), 50);
    assert_eq!(count(EventType::StockChanged), 50);
    assert_eq!(count(EventType::DropSoldOut), 1);
    let versions: HashSet<i64> = events
        .iter()
        .filter(|e| e.kind == EventType::StockChanged)
        .map(|e| e.version)
        .collect();
    assert_eq!(
        versions.len(),
        50,
        "each stock movement has its own version"
    );
}

/// Concurrent placements with one idempotency key: one order, the rest duplicates of it.
pub async fn orders_same_key_race_places_once(repos: &Repos) {
    let drop = live_drop(repos, 10, 5).await;
    let buyer = seed_user(repos, "Buyer", Role::Customer).await;
    let tasks = (0..16).map(|_| {
        let orders = repos.orders.clone();
        let order = fixtures::order(buyer.id, &drop, 1, "same-key", T0);
        tokio::spawn(async move { orders.place_order(&order, T0).await.expect("place order") })
    });
    let outcomes: Vec<PlaceOutcome> = joined(tasks).await;
    let winners: Vec<&Order> = outcomes
        .iter()
        .filter_map(|o| match o {
            PlaceOutcome::Placed(order) => Some(order),
            _ => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "exactly one placement: {outcomes:?}");
    let winner = winners[0];
    for outcome in &outcomes {
        match outcome {
            PlaceOutcome::Placed(_) => {}
            PlaceOutcome::Duplicate(o) => assert_eq!(o.id, winner.id),
            other => panic!("expected Duplicate, got {other:?}"),
        }
    }
    assert_eq!(stock_of(repos, drop.id).await, stock(10, 9, 1, 0));
    let mine = repos
        .orders
        .orders_for_user(buyer.id, PageRequest::first(100))
        .await
        .expect("orders");
    assert_eq!(mine.items.len(), 1);
}

/// An order's answer is kept under its key in the step that decides it: a placed
/// order and the refusals `LimitExceeded` and `OutOfStock` are what every later
/// request under the key meets (an order: `Duplicate` or `Replayed`, another
/// fingerprint `KeyReused`; any operation through `begin`: `Replay` or `Mismatch`),
/// even after the stock changes. A live claim of the key is `KeyInFlight` and
/// decides nothing; a claim whose lease ran out is taken over, its holder fenced.
pub async fn orders_keep_their_answer_under_the_key(repos: &Repos) {
    const LEASE: Duration = Duration::from_secs(30);
    let drop = live_drop(repos, 3, 5).await;
    let buyer = seed_user(repos, "Buyer", Role::Customer).await;
    let record = |outcome: &PlaceOutcome, q: u32| {
        crate::service::order_record(outcome, q).expect("a kept answer")
    };
    let begin = |key: &'static str, fingerprint: String, now: Timestamp| async move {
        repos
            .idempotency
            .begin(buyer.id, key, &fingerprint, now, LEASE)
            .await
            .expect("begin")
    };

    // Out of stock: kept, and met again after units come back.
    let big = fixtures::order(buyer.id, &drop, 4, "big", T0);
    let refused = place(repos, &big, T0).await;
    assert_eq!(refused, PlaceOutcome::OutOfStock { available: 3 });
    let kept = record(&refused, 4);
    let again = fixtures::order(buyer.id, &drop, 4, "big", at(1));
    assert_eq!(
        place(repos, &again, at(1)).await,
        PlaceOutcome::Replayed(kept.clone())
    );
    let other = fixtures::order(buyer.id, &drop, 1, "big", at(1));
    assert_eq!(place(repos, &other, at(1)).await, PlaceOutcome::KeyReused);
    assert_eq!(
        begin("big", big.fingerprint.clone(), at(1)).await,
        BeginOutcome::Replay(kept)
    );
    assert_eq!(
        begin("big", "another request".into(), at(1)).await,
        BeginOutcome::Mismatch
    );

    // Placed: the order is the answer for any operation under the key.
    let first = placed(
        repos,
        &fixtures::order(buyer.id, &drop, 1, "ok", at(2)),
        at(2),
    )
    .await;
    assert_eq!(
        begin("ok", first.fingerprint.clone(), at(3)).await,
        BeginOutcome::Replay(record(&PlaceOutcome::Placed(first.clone()), 1))
    );
    assert_eq!(
        begin("ok", "another request".into(), at(3)).await,
        BeginOutcome::Mismatch
    );

    // Over the limit: kept, and met again after the held unit is cancelled.
    let greedy = fixtures::order(buyer.id, &drop, 5, "greedy", at(4));
    let refused = place(repos, &greedy, at(4)).await;
    assert_eq!(refused, PlaceOutcome::LimitExceeded { limit: 5, held: 1 });
    let kept = record(&refused, 5);
    repos
        .orders
        .settle_order(first.id, Settlement::Cancel, at(5), fixtures::HOLD)
        .await
        .expect("cancel");
    assert_eq!(
        place(repos, &greedy, at(6)).await,
        PlaceOutcome::Replayed(kept)
    );
    let stock = repos
        .inventory
        .stock(drop.id)
        .await
        .expect("stock")
        .expect("the drop's stock");
    assert_eq!(
        (stock[0].available, stock[0].reserved),
        (3, 0),
        "refusals and replays reserve nothing"
    );

    // A live claim: in flight, nothing decided; once its lease ran out, taken over.
    let claim = match begin("claimed", format!("{}:1", drop.id), at(10)).await {
        BeginOutcome::Started(claim) => claim,
        other => panic!("expected Started, got {other:?}"),
    };
    let waiting = fixtures::order(buyer.id, &drop, 1, "claimed", at(11));
    assert_eq!(
        place(repos, &waiting, at(11)).await,
        PlaceOutcome::KeyInFlight
    );
    assert_eq!(repos.orders.order(waiting.id).await.expect("order"), None);
    let foreign = fixtures::order(buyer.id, &drop, 2, "claimed", at(11));
    assert_eq!(
        place(repos, &foreign, at(11)).await,
        PlaceOutcome::KeyReused
    );
    let late = fixtures::order(buyer.id, &drop, 1, "claimed", at(45));
    let taken = placed(repos, &late, at(45)).await;
    assert!(
        !repos
            .idempotency
            .complete(buyer.id, "claimed", claim, &json!("stale"))
            .await
            .expect("complete"),
        "the dead claim's holder is fenced"
    );
    assert_eq!(
        begin("claimed", late.fingerprint.clone(), at(46)).await,
        BeginOutcome::Replay(record(&PlaceOutcome::Placed(taken), 1))
    );
}

/// One buyer's concurrent orders never exceed the per-user limit.
pub async fn orders_user_limit_race(repos: &Repos) {
    let drop = live_drop(repos, 100, 3).await;
    let buyer = seed_user(repos, "Buyer", Role::Customer).await;
    let tasks = (0..20).map(|i| {
        let orders = repos.orders.clone();
        let order = fixtures::order(buyer.id, &drop, 1, &format!("k{i}"), T0);
        tokio::spawn(async move { orders.place_order(&order, T0).await.expect("place order") })
    });
    let mut placed = 0;
    for outcome in join_all(tasks).await {
        match outcome.expect("task") {
            PlaceOutcome::Placed(_) => placed += 1,
            PlaceOutcome::LimitExceeded { limit: 3, held: 3 } => {}
            other => panic!("unexpected outcome: {other:?}"),
        }
    }
    assert_eq!(placed, 3);
    assert_eq!(stock_of(repos, drop.id).await, stock(100, 97, 3, 0));
}

/// Every outcome of `settle_order`, with its stock movement and events.
pub async fn orders_settle_outcomes(repos: &Repos) {
    let drop = live_drop(repos, 10, 10).await;
    let buyer = seed_user(repos, "Buyer", Role::Customer).await;
    let a = placed(repos, &fixtures::order(buyer.id, &drop, 2, "a", T0), T0).await;
    let b = placed(repos, &fixtures::order(buyer.id, &drop, 3, "b", T0), T0).await;
    let c = placed(repos, &fixtures::order(buyer.id, &drop, 1, "c", T0), T0).await;
    assert_eq!(stock_of(repos, drop.id).await, stock(10, 4, 6, 0));
    // Every settlement's stock event carries a version above the one before: caches
    // fence their fills by it, so a version that stands still or goes back would let a
    // stale stock win.
    let mut version = last_stock_version(&drain(repos).await);

    let confirmed = match settle(repos, a.id, Settlement::Confirm, at(1)).await {
        SettleOutcome::Settled(o) => o,
        other => panic!("expected Settled, got {other:?}"),
    };
    assert_eq!(confirmed.status, OrderStatus::Confirmed);
    assert_eq!(confirmed.updated_at, at(1));
    assert_eq!(stock_of(repos, drop.id).await, stock(10, 4, 4, 2));
    let events = drain(repos).await;
    assert_eq!(
        kinds(&events),
        vec![EventType::OrderConfirmed, EventType::StockChanged]
    );
    assert_eq!(events[0].aggregate_id, a.id.0);
    assert_eq!(stock_payload(&events[1]).stock, stock(10, 4, 4, 2));
    version = next_stock_version(&events, version);

    assert!(matches!(
        settle(repos, a.id, Settlement::Confirm, at(2)).await,
        SettleOutcome::Unchanged(o) if o.status == OrderStatus::Confirmed
    ));
    assert!(matches!(
        settle(repos, a.id, Settlement::Cancel, at(2)).await,
        SettleOutcome::Conflict(o) if o.status == OrderStatus::Confirmed
    ));

    assert!(matches!(
        settle(repos, b.id, Settlement::Cancel, at(3)).await,
        SettleOutcome::Settled(o) if o.status == OrderStatus::Cancelled
    ));
    assert_eq!(stock_of(repos, drop.id).await, stock(10, 7, 1, 2));
    let events = drain(repos).await;
    assert_eq!(
        kinds(&events),
        vec![EventType::OrderCancelled, EventType::StockChanged]
    );
    version = next_stock_version(&events, version);
    assert!(matches!(
        settle(repos, b.id, Settlement::Cancel, at(4)).await,
        SettleOutcome::Unchanged(o) if o.status == OrderStatus::Cancelled
    ));
    assert!(matches!(
        settle(repos, b.id, Settlement::Confirm, at(4)).await,
        SettleOutcome::Conflict(o) if o.status == OrderStatus::Cancelled
    ));

    // Confirming at the end of the hold expires the order instead.
    let expired = match settle(repos, c.id, Settlement::Confirm, c.reserved_until).await {
        SettleOutcome::HoldExpired(o) => o,
        other => panic!("expected HoldExpired, got {other:?}"),
    };
    assert_eq!(expired.status, OrderStatus::Expired);
    assert_eq!(stock_of(repos, drop.id).await, stock(10, 8, 0, 2));
    let events = drain(repos).await;
    assert_eq!(
        kinds(&events),
        vec![EventType::OrderExpired, EventType::StockChanged]
    );
    next_stock_version(&events, version);
    assert_eq!(
        repos
            .orders
            .order(c.id)
            .await
            .expect("order")
            .map(|o| o.status),
        Some(OrderStatus::Expired)
    );
    assert!(matches!(
        settle(repos, c.id, Settlement::Confirm, at(700)).await,
        SettleOutcome::Conflict(o) if o.status == OrderStatus::Expired
    ));
    assert!(matches!(
        settle(repos, c.id, Settlement::Cancel, at(700)).await,
        SettleOutcome::Conflict(o) if o.status == OrderStatus::Expired
    ));
    assert_eq!(
        settle(repos, OrderId::new(), Settlement::Confirm, at(5)).await,
        SettleOutcome::NotFound
    );
    assert!(
        drain(repos).await.is_empty(),
        "no-op settlements append nothing"
    );
    assert_eq!(
        repos
            .orders
            .expire_holds(at(10_000), 100, fixtures::HOLD)
            .await
            .expect("expire"),
        Vec::<Order>::new(),
        "settled orders hold nothing"
    );
    assert_eq!(stock_of(repos, drop.id).await, stock(10, 8, 0, 2));
}

/// The highest version among the `stock.changed` events in `events`.
fn last_stock_version(events: &[Event]) -> i64 {
    events
        .iter()
        .filter(|e| e.kind == EventType::StockChanged)
        .map(|e| e.version)
        .max()
        .expect("a stock.changed event")
}

/// The version of the one `stock.changed` event in `events`, checked to be above `after`.
fn next_stock_version(events: &[Event], after: i64) -> i64 {
    let version = last_stock_version(events);
    assert!(
        version > after,
        "stock version {version} does not follow {after}"
    );
    version
}

/// A buyer's orders, newest first by `(created_at, id)`, across pages.
pub async fn orders_list_for_user(repos: &Repos) {
    let d1 = live_drop(repos, 100, 100).await;
    let d2 = live_drop(repos, 100, 100).await;
    let buyer = seed_user(repos, "Buyer", Role::Customer).await;
    let other = seed_user(repos, "Other", Role::Customer).await;
    let mut mine = HashMap::new();
    for i in 0..12 {
        let drop = if i % 2 == 0 { &d1 } else { &d2 };
        let now = at(i / 3);
        let o = placed(
            repos,
            &fixtures::order(buyer.id, drop, 1, &format!("k{i}"), now),
            now,
        )
        .await;
        mine.insert(o.id, o);
    }
    placed(repos, &fixtures::order(other.id, &d1, 1, "k0", T0), T0).await;

    let listed = all_pages!(5, |page| repos.orders.orders_for_user(buyer.id, page));
    assert_eq!(listed.len(), 12);
    for order in &listed {
        assert_eq!(mine.get(&order.id), Some(order), "listed as placed");
    }
    let keys: Vec<Cursor> = listed.iter().map(Order::cursor).collect();
    assert_newest_first(&keys, "orders");
    assert_eq!(
        repos.orders.order(OrderId::new()).await.expect("order"),
        None
    );
    let nobody = repos
        .orders
        .orders_for_user(UserId::new(), PageRequest::first(5))
        .await
        .expect("orders");
    assert!(nobody.items.is_empty());
    assert_eq!(nobody.next_cursor, None);
}

/// Due holds expire exactly once, even with two sweepers at once, returning their
/// units; `limit` bounds one sweep.
pub async fn holds_expire_exactly_once(repos: &Repos) {
    let drop = live_drop(repos, 200, 200).await;
    let mut orders = Vec::new();
    for i in 0..30 {
        let buyer = seed_user(repos, &format!("buyer{i}"), Role::Customer).await;
        let mut order = fixtures::order(buyer.id, &drop, 1 + (i % 3) as u32, "k", at(-10));
        order.reserved_until = at(i);
        orders.push(placed(repos, &order, at(-10)).await);
    }
    let held: u32 = orders.iter().map(|o| o.quantity).sum();
    assert_eq!(
        stock_of(repos, drop.id).await,
        stock(200, 200 - held, held, 0)
    );
    drain(repos).await;

    let sweep_at = at(15);
    let due: HashSet<OrderId> = orders
        .iter()
        .filter(|o| o.reserved_until <= sweep_at)
        .map(|o| o.id)
        .collect();
    let sweepers = (0..2).map(|_| {
        let repo = repos.orders.clone();
        tokio::spawn(async move {
            repo.expire_holds(sweep_at, 1_000, fixtures::HOLD)
                .await
                .expect("expire")
        })
    });
    let swept: Vec<Vec<Order>> = joined(sweepers).await;
    let total = swept[0].len() + swept[1].len();
    let ids: HashSet<OrderId> = swept.iter().flatten().map(|o| o.id).collect();
    assert_eq!(ids, due, "every due hold expires");
    assert_eq!(total, due.len(), "each hold expires exactly once");
    assert!(swept
        .iter()
        .flatten()
        .all(|o| o.status == OrderStatus::Expired && o.updated_at == sweep_at));

    let still: u32 = orders
        .iter()
        .filter(|o| !due.contains(&o.id))
        .map(|o| o.quantity)
        .sum();
    assert_eq!(
        stock_of(repos, drop.id).await,
        stock(200, 200 - still, still, 0)
    );
    let events = drain(repos).await;
    let expired_events = events
        .iter()
        .filter(|e| e.kind == EventType::OrderExpired)
        .count();
    assert_eq!(expired_events, due.len());
    for order in &orders {
        let stored = repos
            .orders
            .order(order.id)
            .await
            .expect("order")
            .expect("exists");
        let want = if due.contains(&order.id) {
            OrderStatus::Expired
        } else {
            OrderStatus::Reserved
        };
        assert_eq!(stored.status, want);
    }
    assert!(repos
        .orders
        .expire_holds(sweep_at, 1_000, fixtures::HOLD)
        .await
        .expect("expire")
        .is_empty());

    let first = repos
        .orders
        .expire_holds(at(100), 5, fixtures::HOLD)
        .await
        .expect("expire");
    assert_eq!(first.len(), 5, "at most limit");
    let rest = repos
        .orders
        .expire_holds(at(100), 1_000, fixtures::HOLD)
        .await
        .expect("expire");
    assert_eq!(first.len() + rest.len(), orders.len() - due.len());
    assert_eq!(stock_of(repos, drop.id).await, Stock::new(200));
}

async fn extend(repos: &Repos, id: OrderId, now: Timestamp) -> ExtendOutcome {
    repos
        .orders
        .extend_hold(id, fixtures::HOLD, now)
        .await
        .expect("extend hold")
}

async fn stored(repos: &Repos, id: OrderId) -> Order {
    repos
        .orders
        .order(id)
        .await
        .expect("order")
        .expect("the order exists")
}

/// A reserved order's hold is extended once: `reserved_until` moves by the period,
/// `extended_at` is set, `order.extended` is appended, no stock moves; a second
/// extension is refused and the sweeper keeps to the new end.
pub async fn orders_extend_once(repos: &Repos) {
    let drop = live_drop(repos, 5, 5).await;
    let buyer = seed_user(repos, "Buyer", Role::Customer).await;
    let order = placed(repos, &fixtures::order(buyer.id, &drop, 2, "k", T0), T0).await;
    assert_eq!(order.extended_at, None, "a new order is not extended");
    drain(repos).await;

    let extended = match extend(repos, order.id, at(60)).await {
        ExtendOutcome::Extended(o) => o,
        other => panic!("expected Extended, got {other:?}"),
    };
    let want = Order {
        reserved_until: order.reserved_until + fixtures::HOLD,
        extended_at: Some(at(60)),
        ..order.clone()
    };
    assert_eq!(extended, want, "only the hold's end and extended_at change");
    assert_eq!(stored(repos, order.id).await, want);
    assert_eq!(stock_of(repos, drop.id).await, stock(5, 3, 2, 0));
    let events = drain(repos).await;
    assert_eq!(kinds(&events), vec![EventType::OrderExtended]);
    assert_eq!(events[0].aggregate_id, order.id.0);
    assert_eq!(events[0].drop_id(), Some(drop.id.0));
    let payload: Order = serde_json::from_value(events[0].payload.clone()).expect("order payload");
    assert_eq!(payload, want);

    assert_eq!(
        extend(repos, order.id, at(61)).await,
        ExtendOutcome::AlreadyExtended(want.clone())
    );
    assert_eq!(
        extend(repos, OrderId::new(), at(61)).await,
        ExtendOutcome::NotFound
    );
    assert!(drain(repos).await.is_empty(), "refusals append nothing");
    assert_eq!(stored(repos, order.id).await, want);

    // The sweeper goes by the new end.
    let swept = repos
        .orders
        .expire_holds(order.reserved_until, 100, fixtures::HOLD)
        .await
        .expect("expire");
    assert!(swept.is_empty(), "not due at the old end: {swept:?}");
    let swept = repos
        .orders
        .expire_holds(want.reserved_until, 100, fixtures::HOLD)
        .await
        .expect("expire");
    assert_eq!(
        swept.iter().map(|o| o.id).collect::<Vec<_>>(),
        vec![order.id]
    );
    assert_eq!(swept[0].extended_at, Some(at(60)));
    assert_eq!(stock_of(repos, drop.id).await, Stock::new(5));
}

/// Only a reserved order whose hold has not run out is extended: at or after
/// `reserved_until` (swept or not) it is `HoldExpired`, confirmed or cancelled it is
/// `NotReserved`; refusals change nothing.
pub async fn orders_extend_refusals(repos: &Repos) {
    let drop = live_drop(repos, 10, 10).await;
    let buyer = seed_user(repos, "Buyer", Role::Customer).await;
    let late = placed(repos, &fixtures::order(buyer.id, &drop, 1, "late", T0), T0).await;
    let paid = placed(repos, &fixtures::order(buyer.id, &drop, 2, "paid", T0), T0).await;
    let gone = placed(repos, &fixtures::order(buyer.id, &drop, 3, "gone", T0), T0).await;
    assert!(matches!(
        settle(repos, paid.id, Settlement::Confirm, at(1)).await,
        SettleOutcome::Settled(_)
    ));
    assert!(matches!(
        settle(repos, gone.id, Settlement::Cancel, at(1)).await,
        SettleOutcome::Settled(_)
    ));
    drain(repos).await;
    let before = stock_of(repos, drop.id).await;
    assert_eq!(before, stock(10, 7, 1, 2));

    // At the end of the hold, not yet swept: refused, the order still reserved.
    assert_eq!(
        extend(repos, late.id, late.reserved_until).await,
        ExtendOutcome::HoldExpired(late.clone())
    );
    assert_eq!(stored(repos, late.id).await, late);
    // Swept: refused.
    let swept = repos
        .orders
        .expire_holds(late.reserved_until, 100, fixtures::HOLD)
        .await
        .expect("expire");
    assert_eq!(swept.len(), 1);
    drain(repos).await;
    match extend(repos, late.id, at(1)).await {
        ExtendOutcome::HoldExpired(o) => {
            assert_eq!(o.status, OrderStatus::Expired);
            assert_eq!(o.extended_at, None);
        }
        other => panic!("expected HoldExpired, got {other:?}"),
    }
    for (order, status) in [
        (&paid, OrderStatus::Confirmed),
        (&gone, OrderStatus::Cancelled),
    ] {
        match extend(repos, order.id, at(2)).await {
            ExtendOutcome::NotReserved(o) => {
                assert_eq!(o.status, status);
                assert_eq!(o.reserved_until, order.reserved_until);
                assert_eq!(o.extended_at, None);
            }
            other => panic!("expected NotReserved, got {other:?}"),
        }
    }
    assert!(drain(repos).await.is_empty(), "refusals append nothing");
    assert_eq!(stock_of(repos, drop.id).await, stock(10, 8, 0, 2));
}

/// Extensions racing sweepers: each order ends either extended and still reserved
/// (no sweeper returned it) or expired by exactly one sweeper with its units back
/// (its extension `HoldExpired`), never both.
pub async fn orders_extend_races_the_sweeper(repos: &Repos) {
    let drop = live_drop(repos, 100, 100).await;
    let mut orders = Vec::new();
    for i in 0..24 {
        let buyer = seed_user(repos, &format!("buyer{i}"), Role::Customer).await;
        let mut order = fixtures::order(buyer.id, &drop, 1 + (i % 2) as u32, "k", at(-10));
        order.reserved_until = at(10);
        orders.push(placed(repos, &order, at(-10)).await);
    }
    let held: u32 = orders.iter().map(|o| o.quantity).sum();
    drain(repos).await;

    // The buyers extend at 9 s (their clocks), the sweepers sweep at 10 s (theirs).
    let extensions = orders.iter().map(|o| {
        let repo = repos.orders.clone();
        let id = o.id;
        tokio::spawn(async move {
            repo.extend_hold(id, fixtures::HOLD, at(9))
                .await
                .expect("extend")
        })
    });
    let sweepers = (0..2).map(|_| {
        let repo = repos.orders.clone();
        tokio::spawn(async move {
            repo.expire_holds(at(10), 1, fixtures::HOLD)
                .await
                .expect("expire")
        })
    });
    let sweepers_more = (0..2).map(|_| {
        let repo = repos.orders.clone();
        tokio::spawn(async move {
            repo.expire_holds(at(10), 1_000, fixtures::HOLD)
                .await
                .expect("expire")
        })
    });
    let (extended, swept, swept_more) = futures::join!(
        join_all(extensions),
        join_all(sweepers),
        join_all(sweepers_more)
    );
    let mut expired_by: HashMap<OrderId, usize> = HashMap::new();
    for o in swept
        .into_iter()
        .chain(swept_more)
        .flat_map(|r| r.expect("task"))
    {
        assert_eq!(o.status, OrderStatus::Expired);
        *expired_by.entry(o.id).or_default() += 1;
    }
    let mut still_held = 0;
    let mut n_extended = 0;
    for (order, outcome) in orders.iter().zip(extended) {
        let now = stored(repos, order.id).await;
        match outcome.expect("task") {
            ExtendOutcome::Extended(o) => {
                n_extended += 1;
                assert_eq!(expired_by.get(&order.id), None, "extended and expired");
                assert_eq!(o.reserved_until, at(10) + fixtures::HOLD);
                assert_eq!(now, o, "the extension is what is stored");
                assert_eq!(now.status, OrderStatus::Reserved);
                still_held += order.quantity;
            }
            ExtendOutcome::HoldExpired(_) => {
                assert_eq!(
                    expired_by.get(&order.id),
                    Some(&1),
                    "refused, so one sweeper expired it"
                );
                assert_eq!(now.status, OrderStatus::Expired);
                assert_eq!(now.extended_at, None);
                assert_eq!(now.reserved_until, at(10));
            }
            other => panic!("unexpected outcome in a race: {other:?}"),
        }
    }
    assert_eq!(n_extended + expired_by.len(), orders.len());
    assert_eq!(
        stock_of(repos, drop.id).await,
        stock(100, 100 - still_held, still_held, 0),
        "expired units are back, extended ones held ({held} were held)"
    );
    let events = drain(repos).await;
    let count = |kind: EventType| events.iter().filter(|e| e.kind == kind).count();
    assert_eq!(count(EventType::OrderExtended), n_extended);
    assert_eq!(count(EventType::OrderExpired), expired_by.len());
    assert!(repos
        .orders
        .expire_holds(at(10), 1_000, fixtures::HOLD)
        .await
        .expect("expire")
        .is_empty());
}

/// Concurrent extensions of one order: exactly one is `Extended`, the others see it
/// as `AlreadyExtended`; the hold moves once.
pub async fn orders_extend_race_one_wins(repos: &Repos) {
    let drop = live_drop(repos, 5, 5).await;
    let buyer = seed_user(repos, "Buyer", Role::Customer).await;
    let order = placed(repos, &fixtures::order(buyer.id, &drop, 1, "k", T0), T0).await;
    drain(repos).await;
    let tasks = (0..16).map(|i| {
        let repo = repos.orders.clone();
        let id = order.id;
        tokio::spawn(async move {
            repo.extend_hold(id, fixtures::HOLD, at(1 + i))
                .await
                .expect("extend")
        })
    });
    let outcomes: Vec<ExtendOutcome> = joined(tasks).await;
    let winners: Vec<&Order> = outcomes
        .iter()
        .filter_map(|o| match o {
            ExtendOutcome::Extended(o) => Some(o),
            _ => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "exactly one extension: {outcomes:?}");
    let winner = winners[0];
    assert_eq!(winner.reserved_until, order.reserved_until + fixtures::HOLD);
    for outcome in &outcomes {
        match outcome {
            ExtendOutcome::Extended(_) => {}
            ExtendOutcome::AlreadyExtended(o) => assert_eq!(o, winner),
            other => panic!("expected AlreadyExtended, got {other:?}"),
        }
    }
    assert_eq!(&stored(repos, order.id).await, winner);
    assert_eq!(
        kinds(&drain(repos).await),
        vec![EventType::OrderExtended],
        "one event"
    );
    assert_eq!(stock_of(repos, drop.id).await, stock(5, 4, 1, 0));
}
