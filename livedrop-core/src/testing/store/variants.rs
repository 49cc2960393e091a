//! Variants: each variant's own stock, the per-user limit across variants, races
//! over sizes, and adjustments per variant.

use super::*;

/// An order of `quantity` units of variant `sku`, as [`fixtures::order`] makes them.
pub(super) fn sized_order(
    buyer: UserId,
    drop: &model::Drop,
    sku: &str,
    quantity: u32,
    key: &str,
    now: Timestamp,
) -> Order {
    Order {
        sku: sku.to_owned(),
        ..fixtures::order(buyer, drop, quantity, key, now)
    }
}

/// A drop of several variants keeps them in definition order with a stock each,
/// an initial ledger entry each; an order moves only its variant's stock, its stock
/// events name the variant, and an unknown sku is refused right after an unknown
/// drop (before the window).
pub async fn variants_keep_their_own_stock(repos: &Repos) {
    let drop = live_sized_drop(repos, &[("s", 3), ("m", 2), ("l", 1)], 10).await;
    let buyer = seed_user(repos, "Buyer", Role::Customer).await;
    drain(repos).await;

    let read = repos.drops.drop_by_id(drop.id).await.expect("drop");
    assert_eq!(read.as_ref().map(|d| &d.variants), Some(&drop.variants));
    assert_eq!(
        variant_stock(repos, drop.id).await,
        vec![Stock::new(3), Stock::new(2), Stock::new(1)]
    );
    let view = fetched(repos.drops.drop_view(drop.id)).await;
    assert_eq!(view.stock, Stock::new(6), "the drop's stock is the sum");
    assert_eq!(view.stock_of("m"), Some(Stock::new(2)));
    let ledger = repos
        .inventory
        .ledger(drop.id, PageRequest::first(10))
        .await
        .expect("ledger");
    let mut initial: Vec<(String, i64)> = ledger
        .items
        .iter()
        .map(|e| {
            assert_eq!(e.kind, LedgerKind::Initial);
            (e.sku.clone(), e.delta)
        })
        .collect();
    initial.sort();
    assert_eq!(
        initial,
        vec![("l".into(), 1), ("m".into(), 2), ("s".into(), 3)],
        "one initial entry per variant"
    );

    let m = placed(repos, &sized_order(buyer.id, &drop, "m", 2, "m", T0), T0).await;
    assert_eq!(m.sku, "m");
    assert_eq!(
        variant_stock(repos, drop.id).await,
        vec![Stock::new(3), stock(2, 0, 2, 0), Stock::new(1)]
    );
    let events = drain(repos).await;
    assert_eq!(
        kinds(&events),
        vec![
            EventType::OrderPlaced,
            EventType::StockChanged,
            EventType::DropSoldOut
        ],
        "the variant sold out; the drop's other sizes did not"
    );
    for event in &events[1..] {
        let moved = stock_payload(event);
        assert_eq!((moved.sku.as_str(), moved.stock), ("m", stock(2, 0, 2, 0)));
    }

    assert_eq!(
        place(repos, &sized_order(buyer.id, &drop, "m", 1, "m2", T0), T0).await,
        PlaceOutcome::OutOfStock { available: 0 },
        "another size's stock does not serve this one"
    );
    placed(repos, &sized_order(buyer.id, &drop, "s", 3, "s", T0), T0).await;

    // The unknown sku comes after the unknown drop and before the window.
    let elsewhere = model::Drop {
        id: DropId::new(),
        ..drop.clone()
    };
    assert_eq!(
        place(
            repos,
            &sized_order(buyer.id, &elsewhere, "xl", 1, "x1", T0),
            T0
        )
        .await,
        PlaceOutcome::DropNotFound
    );
    assert_eq!(
        place(
            repos,
            &sized_order(buyer.id, &drop, "xl", 1, "x2", at(99_999)),
            at(99_999)
        )
        .await,
        PlaceOutcome::UnknownVariant
    );
    assert_eq!(
        variant_stock(repos, drop.id).await,
        vec![stock(3, 0, 3, 0), stock(2, 0, 2, 0), Stock::new(1)]
    );
}

/// The per-user limit counts reserved and confirmed units across every variant of
/// the drop; a cancelled order in one size frees room for another size.
pub async fn variants_limit_counts_every_variant(repos: &Repos) {
    let drop = live_sized_drop(repos, &[("s", 5), ("m", 5), ("l", 5)], 2).await;
    let buyer = seed_user(repos, "Buyer", Role::Customer).await;
    let s = placed(repos, &sized_order(buyer.id, &drop, "s", 1, "s", T0), T0).await;
    assert!(matches!(
        settle(repos, s.id, Settlement::Confirm, at(1)).await,
        SettleOutcome::Settled(_)
    ));
    let m = placed(
        repos,
        &sized_order(buyer.id, &drop, "m", 1, "m", at(2)),
        at(2),
    )
    .await;
    assert_eq!(
        place(
            repos,
            &sized_order(buyer.id, &drop, "l", 1, "l", at(3)),
            at(3)
        )
        .await,
        PlaceOutcome::LimitExceeded { limit: 2, held: 2 }
    );
    assert!(matches!(
        settle(repos, m.id, Settlement::Cancel, at(4)).await,
        SettleOutcome::Settled(_)
    ));
    placed(
        repos,
        &sized_order(buyer.id, &drop, "l", 1, "l2", at(5)),
        at(5),
    )
    .await;
    assert_eq!(
        variant_stock(repos, drop.id).await,
        vec![stock(5, 4, 0, 1), Stock::new(5), stock(5, 4, 1, 0)]
    );
}

/// Buyers with a limit of 1 each order two different sizes at once: exactly one
/// of each buyer's two orders is placed, whichever wins.
pub async fn variants_limit_race_across_variants(repos: &Repos) {
    let drop = live_sized_drop(repos, &[("s", 100), ("m", 100)], 1).await;
    let mut buyers = Vec::new();
    for i in 0..25 {
        buyers.push(seed_user(repos, &format!("buyer{i}"), Role::Customer).await);
    }
    let tasks = buyers.iter().flat_map(|buyer| {
        ["s", "m"].map(|sku| {
            let orders = repos.orders.clone();
            let order = sized_order(buyer.id, &drop, sku, 1, sku, T0);
            tokio::spawn(async move { orders.place_order(&order, T0).await.expect("place") })
        })
    });
    let outcomes = joined(tasks.collect::<Vec<_>>()).await;
    let mut held: HashMap<UserId, u32> = HashMap::new();
    for outcome in outcomes {
        match outcome {
            PlaceOutcome::Placed(order) => *held.entry(order.user_id).or_default() += 1,
            PlaceOutcome::LimitExceeded { limit: 1, held: 1 } => {}
            other => panic!("unexpected outcome: {other:?}"),
        }
    }
    assert_eq!(held.len(), buyers.len(), "every buyer got one order");
    assert!(
        held.values().all(|n| *n == 1),
        "a buyer passed the limit: {held:?}"
    );
    let total = Stock::sum(&variant_stock(repos, drop.id).await);
    assert_eq!(total.reserved, 25);
}

/// 160 buyers race over ten sizes of 5 units: each size sells exactly its stock,
/// never more, and each variant's stock events carry increasing versions.
pub async fn variants_race_never_oversells(repos: &Repos) {
    let skus: Vec<String> = (0..10).map(|i| format!("size-{i}")).collect();
    let spec: Vec<(&str, u32)> = skus.iter().map(|s| (s.as_str(), 5)).collect();
    let drop = live_sized_drop(repos, &spec, 1).await;
    let mut buyers = Vec::new();
    for i in 0..160 {
        buyers.push(seed_user(repos, &format!("buyer{i}"), Role::Customer).await);
    }
    drain(repos).await;
    let tasks = buyers.iter().enumerate().map(|(i, buyer)| {
        let orders = repos.orders.clone();
        let order = sized_order(buyer.id, &drop, &skus[i % 10], 1, "race", T0);
        tokio::spawn(async move { orders.place_order(&order, T0).await.expect("place") })
    });
    let mut sold: HashMap<String, u32> = HashMap::new();
    for outcome in joined(tasks).await {
        match outcome {
            PlaceOutcome::Placed(order) => *sold.entry(order.sku).or_default() += 1,
            PlaceOutcome::OutOfStock { available: 0 } => {}
            other => panic!("unexpected outcome: {other:?}"),
        }
    }
    for sku in &skus {
        assert_eq!(sold.get(sku), Some(&5), "{sku} sold exactly its stock");
    }
    assert!(variant_stock(repos, drop.id)
        .await
        .iter()
        .all(|s| *s == stock(5, 0, 5, 0)));
    let events = drain(repos).await;
    let mut last: HashMap<String, i64> = HashMap::new();
    for event in events.iter().filter(|e| e.kind == EventType::StockChanged) {
        let sku = stock_payload(event).sku;
        let before = last.insert(sku.clone(), event.version);
        assert!(
            before.is_none_or(|v| v < event.version),
            "{sku}: stock versions go up"
        );
    }
}

/// Restock and shrink move one variant, each with a ledger entry naming it and the
/// variant's stock after; an unknown sku is refused and moves nothing.
pub async fn variants_adjust_one_variant(repos: &Repos) {
    let drop = live_sized_drop(repos, &[("s", 2), ("m", 2)], 5).await;
    drain(repos).await;
    let adjustment = |sku: &str, delta: i64| Adjustment {
        drop_id: drop.id,
        sku: sku.to_owned(),
        delta,
        reason: "count".into(),
        actor_id: None,
        entry_id: Uuid::now_v7(),
        at: at(1),
        hold: fixtures::HOLD,
    };
    let adjust = |a: Adjustment| async move { repos.inventory.adjust(&a).await.expect("adjust") };
    match adjust(adjustment("m", 3)).await {
        AdjustOutcome::Applied(entry) => {
            assert_eq!((entry.sku.as_str(), entry.delta), ("m", 3));
            assert_eq!(
                entry.stock_after,
                Stock::new(5),
                "the variant's stock after"
            );
        }
        other => panic!("expected Applied, got {other:?}"),
    }
    assert_eq!(
        adjust(adjustment("s", -3)).await,
        AdjustOutcome::Insufficient { available: 2 },
        "only the variant's own units can be shrunk"
    );
    assert_eq!(
        adjust(adjustment("xl", 1)).await,
        AdjustOutcome::UnknownVariant
    );
    assert_eq!(
        variant_stock(repos, drop.id).await,
        vec![Stock::new(2), Stock::new(5)]
    );
    let events = drain(repos).await;
    assert_eq!(kinds(&events), vec![EventType::StockChanged]);
    assert_eq!(stock_payload(&events[0]).sku, "m");
}
