//! Inventory: restock and shrink, and the ledger.

use super::*;

/// Restock, shrink and refused shrink, each with its ledger entry and stock events;
/// the ledger lists newest first.
pub async fn inventory_adjust_and_ledger(repos: &Repos) {
    let drop = live_drop(repos, 10, 10).await;
    let admin = seed_user(repos, "Admin", Role::Admin).await;
    let buyer = seed_user(repos, "Buyer", Role::Customer).await;
    drain(repos).await;
    let adjustment = |delta: i64, reason: &str, at: Timestamp| Adjustment {
        drop_id: drop.id,
        sku: model::DEFAULT_SKU.to_owned(),
        delta,
        reason: reason.to_owned(),
        actor_id: Some(admin.id),
        entry_id: Uuid::now_v7(),
        at,
        hold: fixtures::HOLD,
    };
    let adjust = |a: Adjustment| async move { repos.inventory.adjust(&a).await.expect("adjust") };

    let restock = adjustment(5, "found a box", at(1));
    let entry = match adjust(restock.clone()).await {
        AdjustOutcome::Applied(entry) => entry,
        other => panic!("expected Applied, got {other:?}"),
    };
    assert_eq!(entry.id, restock.entry_id);
    assert_eq!(entry.kind, LedgerKind::Restock);
    assert_eq!(entry.delta, 5);
    assert_eq!(entry.reason, "found a box");
    assert_eq!(entry.actor_id, Some(admin.id));
    assert_eq!(entry.stock_after, stock(15, 15, 0, 0));
    assert_eq!(entry.created_at, at(1));
    assert_eq!(stock_of(repos, drop.id).await, stock(15, 15, 0, 0));
    let events = drain(repos).await;
    assert_eq!(kinds(&events), vec![EventType::StockChanged]);
    assert_eq!(stock_payload(&events[0]).stock, stock(15, 15, 0, 0));

    placed(
        repos,
        &fixtures::order(buyer.id, &drop, 4, "k", at(2)),
        at(2),
    )
    .await;
    drain(repos).await;
    let shrink = adjust(adjustment(-11, "damaged", at(3))).await;
    assert!(matches!(
        &shrink,
        AdjustOutcome::Applied(e) if e.kind == LedgerKind::Shrink && e.delta == -11
            && e.stock_after == stock(4, 0, 4, 0)
    ));
    assert_eq!(
        kinds(&drain(repos).await),
        vec![EventType::StockChanged, EventType::DropSoldOut]
    );
    assert_eq!(
        adjust(adjustment(-1, "too much", at(4))).await,
        AdjustOutcome::Insufficient { available: 0 }
    );
    assert!(matches!(
        adjust(adjustment(1, "one more", at(5))).await,
        AdjustOutcome::Applied(_)
    ));
    assert_eq!(
        adjust(adjustment(-2, "too much", at(6))).await,
        AdjustOutcome::Insufficient { available: 1 }
    );
    assert_eq!(stock_of(repos, drop.id).await, stock(5, 1, 4, 0));
    let unknown = Adjustment {
        drop_id: DropId::new(),
        ..adjustment(3, "nope", at(7))
    };
    assert_eq!(adjust(unknown).await, AdjustOutcome::DropNotFound);
    assert_eq!(
        kinds(&drain(repos).await),
        vec![EventType::StockChanged],
        "refused adjustments append nothing"
    );

    let ledger = all_pages!(1, |page| repos.inventory.ledger(drop.id, page));
    assert_eq!(
        ledger.iter().map(|e| (e.kind, e.delta)).collect::<Vec<_>>(),
        vec![
            (LedgerKind::Restock, 1),
            (LedgerKind::Shrink, -11),
            (LedgerKind::Restock, 5),
            (LedgerKind::Initial, 10),
        ],
        "the ledger lists every movement outside orders, newest first"
    );
    assert!(ledger.iter().all(|e| e.stock_after.is_consistent()));
    let none = repos
        .inventory
        .ledger(DropId::new(), PageRequest::first(10))
        .await
        .expect("ledger");
    assert!(none.items.is_empty());
}
