//! Drops: creation with stock, ledger and events, listings, conditional transitions, due transitions.

use super::*;

/// Inserting a drop stores it, its stock (all available), its initial ledger entry
/// and its events; `drop_view` returns drop and stock together.
pub async fn drops_insert_creates_stock_ledger_and_events(repos: &Repos) {
    let creator = seed_user(repos, "Maker", Role::Creator).await;
    let product = seed_product(repos, &creator, "Cap", "Wool", at(-100)).await;
    drain(repos).await;

    let drop = fixtures::drop_of(&product, at(60), at(3600), 2, DropState::Scheduled, T0);
    let scheduled = Event::drop(EventType::DropScheduled, &drop, T0);
    repos
        .drops
        .insert_drop(&drop, &[10], std::slice::from_ref(&scheduled))
        .await
        .expect("insert drop");

    assert_eq!(
        repos.drops.drop_by_id(drop.id).await.expect("drop"),
        Some(drop.clone())
    );
    assert_eq!(stock_of(repos, drop.id).await, Stock::new(10));
    assert_eq!(
        repos.drops.drop_view(drop.id).await.expect("drop view"),
        Some(DropView::new(drop.clone(), vec![Stock::new(10)]))
    );
    assert_eq!(
        repos.drops.drop_by_id(DropId::new()).await.expect("drop"),
        None
    );
    assert_eq!(
        repos.drops.drop_view(DropId::new()).await.expect("view"),
        None
    );
    assert_eq!(
        repos.inventory.stock(DropId::new()).await.expect("stock"),
        None
    );

    let ledger = repos
        .inventory
        .ledger(drop.id, PageRequest::first(10))
        .await
        .expect("ledger");
    assert_eq!(ledger.items.len(), 1, "one initial ledger entry");
    let entry = &ledger.items[0];
    assert_eq!(entry.drop_id, drop.id);
    assert_eq!(entry.kind, LedgerKind::Initial);
    assert_eq!(entry.delta, 10);
    assert_eq!(entry.reason, "initial stock");
    assert_eq!(entry.stock_after, Stock::new(10));
    assert_eq!(entry.created_at, drop.created_at);
    assert_eq!(ledger.next_cursor, None);

    let events = drain(repos).await;
    assert_eq!(
        events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![scheduled.id]
    );

    // The view follows the stock.
    let buyer = seed_user(repos, "Buyer", Role::Customer).await;
    placed(
        repos,
        &fixtures::order(buyer.id, &drop, 2, "k", at(61)),
        at(61),
    )
    .await;
    let view = repos
        .drops
        .drop_view(drop.id)
        .await
        .expect("view")
        .expect("drop exists");
    assert_eq!(view.stock, stock(10, 8, 2, 0));
    assert_eq!(view.status_at(at(61)), DropStatus::Live);
}

/// `list_drops` filters by the status each drop has at the given instant, and by
/// creator, newest first.
pub async fn drops_list_by_status_at_now(repos: &Repos) {
    let creator = seed_user(repos, "Maker", Role::Creator).await;
    let other = seed_user(repos, "Other", Role::Creator).await;
    let product = seed_product(repos, &creator, "Tee", "Cotton", at(-9000)).await;
    let open = (at(-600), at(3600));
    let scheduled = seed_drop(
        repos,
        &product,
        (at(600), at(3600)),
        5,
        5,
        DropState::Scheduled,
        at(-50),
    )
    .await;
    let live = seed_drop(repos, &product, open, 5, 5, DropState::Live, at(-40)).await;
    let sold_out = seed_drop(repos, &product, open, 1, 5, DropState::Live, at(-30)).await;
    // Stored state lags the clock: the status is derived at the listing instant.
    let ended = seed_drop(
        repos,
        &product,
        (at(-7200), at(-60)),
        5,
        5,
        DropState::Live,
        at(-20),
    )
    .await;
    let cancelled = seed_drop(repos, &product, open, 5, 5, DropState::Live, at(-10)).await;

    let buyer = seed_user(repos, "Buyer", Role::Customer).await;
    placed(repos, &fixtures::order(buyer.id, &sold_out, 1, "k", T0), T0).await;
    let event = Event::drop(EventType::DropCancelled, &cancelled, T0);
    assert!(repos
        .drops
        .transition(
            cancelled.id,
            &[DropState::Scheduled, DropState::Live],
            DropState::Cancelled,
            &[event]
        )
        .await
        .expect("cancel"));

    let list = |status: Option<DropStatus>, creator_id: Option<UserId>, now: Timestamp| {
        let filter = DropFilter { status, creator_id };
        async move {
            all_pages!(2, |page| repos.drops.list_drops(&filter, now, page))
                .into_iter()
                .map(|v| v.drop.id)
                .collect::<Vec<_>>()
        }
    };
    for (status, expected) in [
        (DropStatus::Scheduled, &scheduled),
        (DropStatus::Live, &live),
        (DropStatus::SoldOut, &sold_out),
        (DropStatus::Ended, &ended),
        (DropStatus::Cancelled, &cancelled),
    ] {
        assert_eq!(
            list(Some(status), None, T0).await,
            vec![expected.id],
            "drops {} at T0",
            status.as_str()
        );
    }
    assert_eq!(
        list(None, None, T0).await,
        vec![cancelled.id, ended.id, sold_out.id, live.id, scheduled.id],
        "every drop, newest first"
    );
    assert_eq!(list(None, Some(other.id), T0).await, Vec::<DropId>::new());
    assert_eq!(
        list(Some(DropStatus::Live), Some(creator.id), T0).await,
        vec![live.id]
    );
    assert_eq!(
        list(Some(DropStatus::Live), None, at(700)).await,
        vec![live.id, scheduled.id],
        "the status is evaluated at the given instant"
    );

    let views = repos
        .drops
        .list_drops(&DropFilter::default(), T0, PageRequest::first(10))
        .await
        .expect("list");
    let sold = views
        .items
        .iter()
        .find(|v| v.drop.id == sold_out.id)
        .expect("sold-out drop listed");
    assert_eq!(sold.stock, stock(1, 0, 1, 0), "listed with its stock");
}

/// `transition` moves only from the given states, appends its events only when it
/// moves, and of racing identical transitions exactly one wins.
pub async fn drops_transition_is_conditional(repos: &Repos) {
    let creator = seed_user(repos, "Maker", Role::Creator).await;
    let product = seed_product(repos, &creator, "Tee", "Cotton", at(-9000)).await;
    let drop = seed_drop(
        repos,
        &product,
        (at(-60), at(3600)),
        5,
        5,
        DropState::Scheduled,
        at(-100),
    )
    .await;
    drain(repos).await;

    let started = Event::drop(EventType::DropStarted, &drop, T0);
    assert!(repos
        .drops
        .transition(
            drop.id,
            &[DropState::Scheduled],
            DropState::Live,
            std::slice::from_ref(&started)
        )
        .await
        .expect("transition"));
    let again = Event::drop(EventType::DropStarted, &drop, T0);
    assert!(!repos
        .drops
        .transition(drop.id, &[DropState::Scheduled], DropState::Live, &[again])
        .await
        .expect("transition again"));
    assert!(!repos
        .drops
        .transition(DropId::new(), &[DropState::Scheduled], DropState::Live, &[])
        .await
        .expect("transition of an unknown drop"));
    let stored = repos
        .drops
        .drop_by_id(drop.id)
        .await
        .expect("drop")
        .expect("exists");
    assert_eq!(stored.state, DropState::Live);
    assert_eq!(kinds(&drain(repos).await), vec![EventType::DropStarted]);
    assert_eq!(
        stock_of(repos, drop.id).await,
        Stock::new(5),
        "stock untouched"
    );

    let mut drops = Vec::new();
    for i in 0..10 {
        drops.push(
            seed_drop(
                repos,
                &product,
                (at(-600), at(60)),
                1,
                1,
                DropState::Live,
                at(i),
            )
            .await,
        );
    }
    drain(repos).await;
    let mut tasks = Vec::new();
    for drop in &drops {
        for _ in 0..2 {
            let repo = repos.drops.clone();
            let (id, event) = (drop.id, Event::drop(EventType::DropEnded, drop, at(60)));
            tasks.push(tokio::spawn(async move {
                repo.transition(id, &[DropState::Live], DropState::Ended, &[event])
                    .await
                    .expect("transition")
            }));
        }
    }
    let won: Vec<bool> = joined(tasks).await;
    for (drop, pair) in drops.iter().zip(won.chunks(2)) {
        assert_eq!(
            pair.iter().filter(|w| **w).count(),
            1,
            "exactly one of two racing transitions of drop {} wins",
            drop.id
        );
    }
    let ended = drain(repos).await;
    assert_eq!(ended.len(), 10, "one drop.ended per drop");
    let ids: HashSet<Uuid> = ended.iter().map(|e| e.aggregate_id).collect();
    assert_eq!(ids.len(), 10);
}

/// `due_transitions` finds scheduled drops past their start and live drops past
/// their end, oldest start first, at most `limit`.
pub async fn drops_due_transitions(repos: &Repos) {
    let creator = seed_user(repos, "Maker", Role::Creator).await;
    let product = seed_product(repos, &creator, "Tee", "Cotton", at(-90_000)).await;
    let mk = |window: (i64, i64), state: DropState, created: i64| {
        seed_drop(
            repos,
            &product,
            (at(window.0), at(window.1)),
            3,
            1,
            state,
            at(created),
        )
    };
    let a = mk((-300, 3600), DropState::Scheduled, -10_000).await;
    let _b = mk((300, 3600), DropState::Scheduled, -9_000).await;
    let c = mk((-7200, -1), DropState::Live, -8_000).await;
    let _d = mk((-600, 3600), DropState::Live, -7_000).await;
    let _e = mk((-9000, -5000), DropState::Ended, -9_500).await;
    let _f = mk((-100, 3600), DropState::Cancelled, -6_000).await;
    let g = mk((0, 3600), DropState::Scheduled, -5_000).await;

    let due = |limit: u32| async move {
        repos
            .drops
            .due_transitions(T0, limit)
            .await
            .expect("due transitions")
            .into_iter()
            .map(|d| d.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(due(10).await, vec![c.id, a.id, g.id], "oldest start first");
    assert_eq!(due(2).await, vec![c.id, a.id], "at most limit");
    assert!(repos
        .drops
        .transition(c.id, &[DropState::Live], DropState::Ended, &[])
        .await
        .expect("transition"));
    assert_eq!(due(10).await, vec![a.id, g.id]);
}
