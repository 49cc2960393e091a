//! Draws: the secret seed behind its commitment, entries and their checks, the draw
//! run exactly once and ranked by the revealed seed, and units a winner gives back
//! going to the next in rank.

use super::variants::sized_order;
use super::*;
use crate::event::DrawPayload;
use crate::model::{Draw, DrawEntry, DrawEntryRequest, DrawOutcome, DrawResult, EntryOutcome};

fn request(
    drop: &model::Drop,
    user: UserId,
    sku: &str,
    quantity: u32,
    at: Timestamp,
) -> DrawEntryRequest {
    DrawEntryRequest {
        drop_id: drop.id,
        user_id: user,
        sku: sku.to_owned(),
        quantity,
        token: DrawEntry::new_token(),
        at,
    }
}

async fn enter(repos: &Repos, request: &DrawEntryRequest) -> EntryOutcome {
    repos.draws.enter_draw(request).await.expect("enter draw")
}

async fn entered(repos: &Repos, request: &DrawEntryRequest) -> DrawEntry {
    match enter(repos, request).await {
        EntryOutcome::Done(entry) => entry,
        other => panic!("expected Done, got {other:?}"),
    }
}

async fn run(repos: &Repos, drop: DropId, now: Timestamp) -> DrawOutcome {
    repos
        .draws
        .run_draw(drop, now, fixtures::HOLD)
        .await
        .expect("run draw")
}

fn draw_payload(event: &Event) -> DrawPayload {
    match event.decode().expect("draw payload") {
        EventPayload::DrawWon(p) | EventPayload::DrawLost(p) => p,
        other => panic!("not a draw event: {:?}", other.kind()),
    }
}

/// A draw drop is stored with its commitment and no seed; entries are checked in
/// the documented order, replaced keeping their token, withdrawn while open; no
/// stock moves and no results are listed before the draw.
pub async fn draws_take_entries_while_open(repos: &Repos) {
    let (drop, _) = draw_drop(repos, &[("s", 2), ("m", 2)], 2).await;
    let [a, b] = [
        seed_user(repos, "A", Role::Customer).await,
        seed_user(repos, "B", Role::Customer).await,
    ];
    let stored = fetched(repos.drops.drop_by_id(drop.id)).await;
    assert_eq!(stored, drop, "the commitment is public, the seed is not");
    assert_eq!(stored.draw.as_ref().and_then(|d| d.seed.clone()), None);

    let first = request(&drop, a.id, "s", 1, T0);
    let entry = entered(repos, &first).await;
    assert_eq!(
        (
            entry.sku.as_str(),
            entry.quantity,
            entry.token.as_str(),
            entry.result
        ),
        ("s", 1, first.token.as_str(), DrawResult::Pending)
    );
    assert_eq!(
        (entry.rank, entry.order_id, entry.entered_at),
        (None, None, T0)
    );
    let replaced = entered(repos, &request(&drop, a.id, "m", 2, at(1))).await;
    assert_eq!(
        (
            replaced.sku.as_str(),
            replaced.quantity,
            replaced.token.as_str()
        ),
        ("m", 2, first.token.as_str()),
        "a replacement keeps the token"
    );
    assert_eq!(
        repos.draws.draw_entry(drop.id, a.id).await.expect("entry"),
        Some(replaced)
    );

    // Refusals, in the documented order.
    let plain = live_drop(repos, 5, 5).await;
    let elsewhere = model::Drop {
        id: DropId::new(),
        ..drop.clone()
    };
    assert_eq!(
        enter(repos, &request(&elsewhere, b.id, "s", 9, at(9_999))).await,
        EntryOutcome::DropNotFound
    );
    assert_eq!(
        enter(repos, &request(&plain, b.id, model::DEFAULT_SKU, 1, T0)).await,
        EntryOutcome::NotDraw
    );
    assert_eq!(
        enter(repos, &request(&drop, b.id, "xl", 9, at(9_999))).await,
        EntryOutcome::UnknownVariant
    );
    for when in [at(-601), at(600), at(9_999)] {
        assert_eq!(
            enter(repos, &request(&drop, b.id, "s", 9, when)).await,
            EntryOutcome::EntriesClosed,
            "{when}"
        );
    }
    assert_eq!(
        enter(repos, &request(&drop, b.id, "s", 3, T0)).await,
        EntryOutcome::LimitExceeded { limit: 2 }
    );
    entered(repos, &request(&drop, b.id, "s", 2, at(-600))).await;

    assert_eq!(
        repos
            .draws
            .withdraw_entry(drop.id, b.id, at(600))
            .await
            .expect("withdraw"),
        EntryOutcome::EntriesClosed
    );
    assert!(matches!(
        repos
            .draws
            .withdraw_entry(drop.id, b.id, at(2))
            .await
            .expect("withdraw"),
        EntryOutcome::Done(_)
    ));
    assert_eq!(
        repos
            .draws
            .withdraw_entry(drop.id, b.id, at(3))
            .await
            .expect("withdraw"),
        EntryOutcome::NoEntry
    );
    assert_eq!(
        repos.draws.draw_entry(drop.id, b.id).await.expect("entry"),
        None
    );
    assert!(repos
        .draws
        .draw_entries(drop.id, 0, 100)
        .await
        .expect("entries")
        .is_empty());
    assert_eq!(
        variant_stock(repos, drop.id).await,
        vec![Stock::new(2), Stock::new(2)],
        "entries reserve nothing"
    );
}

/// At `entries_close_at` the draw runs once: the seed behind the commitment is
/// revealed, entries rank by SHA-256 of `seed:token`, in rank order each entry
/// whose variant has its whole quantity free wins a reserved order and the others
/// lose; events come in the documented order; a second run changes nothing.
pub async fn draws_run_once_ranked_by_the_revealed_seed(repos: &Repos) {
    let (drop, seed) = draw_drop(repos, &[("s", 2), ("m", 1)], 2).await;
    let mut users = Vec::new();
    for i in 0..12 {
        let user = seed_user(repos, &format!("entrant{i}"), Role::Customer).await;
        let (sku, quantity) = match i % 3 {
            0 => ("s", 1),
            1 => ("s", 2),
            _ => ("m", 1),
        };
        entered(repos, &request(&drop, user.id, sku, quantity, at(i))).await;
        users.push(user.id);
    }
    drain(repos).await;
    assert_eq!(
        repos.draws.draw_counts(drop.id).await.expect("counts"),
        (12, 0)
    );
    assert_eq!(
        repos.draws.due_draws(at(599), 10).await.expect("due"),
        Vec::<DropId>::new()
    );
    assert_eq!(run(repos, drop.id, at(599)).await, DrawOutcome::NotDue);
    assert_eq!(
        repos.draws.due_draws(at(600), 10).await.expect("due"),
        vec![drop.id]
    );

    let DrawOutcome::Drawn {
        drop: drawn,
        entries,
    } = run(repos, drop.id, at(601)).await
    else {
        panic!("expected the draw to run");
    };
    let record = drawn.draw.clone().expect("a draw record");
    assert_eq!(record.seed.as_deref(), Some(seed.as_str()));
    assert_eq!(Draw::commitment_of(&seed), record.commitment);
    assert_eq!(record.drawn_at, Some(at(601)));
    assert_eq!(fetched(repos.drops.drop_by_id(drop.id)).await, drawn);

    // The ranking, recomputed from the seed and the tokens alone.
    let mut keys: Vec<(String, String)> = entries
        .iter()
        .map(|e| (Draw::rank_key(&seed, &e.token), e.token.clone()))
        .collect();
    keys.sort();
    assert_eq!(
        entries.iter().map(|e| e.token.clone()).collect::<Vec<_>>(),
        keys.into_iter().map(|(_, token)| token).collect::<Vec<_>>()
    );
    let mut free = [2u32, 1];
    let mut pending = entries.clone();
    for e in &mut pending {
        e.result = DrawResult::Pending;
    }
    let winners = model::plan_draw(&pending, &mut free, |sku| match sku {
        "s" => Some(0),
        "m" => Some(1),
        _ => None,
    });
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry.rank, Some(i as u64 + 1));
        let won = winners.contains(&i);
        assert_eq!(entry.result == DrawResult::Won, won, "entry {i}");
        assert_eq!(entry.order_id.is_some(), won);
        assert_eq!(
            repos
                .draws
                .draw_entry(drop.id, entry.user_id)
                .await
                .expect("entry")
                .as_ref(),
            Some(entry)
        );
    }
    assert_eq!(
        repos.draws.draw_counts(drop.id).await.expect("counts"),
        (12, winners.len() as u64)
    );
    let sold: u32 = entries
        .iter()
        .filter(|e| e.result == DrawResult::Won)
        .map(|e| e.quantity)
        .sum();
    assert_eq!(
        Stock::sum(&variant_stock(repos, drop.id).await),
        stock(3, 3 - sold, sold, 0)
    );

    let events = drain(repos).await;
    assert_eq!(events[0].kind, EventType::DropDrawn);
    let mut next = 1;
    for entry in &entries {
        if entry.result == DrawResult::Won {
            assert_eq!(events[next].kind, EventType::OrderPlaced);
            let payload = draw_payload(&events[next + 1]);
            assert_eq!(events[next + 1].kind, EventType::DrawWon);
            let order = payload.order.expect("a win names its order");
            assert_eq!(Some(order.id), entry.order_id);
            assert_eq!(
                (
                    order.user_id,
                    order.quantity,
                    order.status,
                    order.reserved_until
                ),
                (
                    entry.user_id,
                    entry.quantity,
                    OrderStatus::Reserved,
                    at(601) + fixtures::HOLD
                )
            );
            assert_eq!(
                repos.orders.order(order.id).await.expect("order"),
                Some(order)
            );
            next += 2;
        } else {
            assert_eq!(events[next].kind, EventType::DrawLost);
            assert_eq!(draw_payload(&events[next]).entry, *entry);
            next += 1;
        }
    }
    assert!(events[next..]
        .iter()
        .all(|e| matches!(e.kind, EventType::StockChanged | EventType::DropSoldOut)));

    assert_eq!(
        run(repos, drop.id, at(700)).await,
        DrawOutcome::AlreadyDrawn
    );
    assert!(
        drain(repos).await.is_empty(),
        "a second run appends nothing"
    );
    assert!(repos
        .draws
        .due_draws(at(700), 10)
        .await
        .expect("due")
        .is_empty());
    let first = repos.draws.draw_entries(drop.id, 0, 5).await.expect("page");
    let rest = repos
        .draws
        .draw_entries(drop.id, 5, 100)
        .await
        .expect("page");
    assert_eq!([first, rest].concat(), entries, "pages by rank");
}

/// Eight runners race one draw: exactly one runs it; the others see it drawn.
pub async fn draws_run_exactly_once_under_races(repos: &Repos) {
    let (drop, _) = draw_drop(repos, &[(model::DEFAULT_SKU, 3)], 1).await;
    for i in 0..10 {
        let user = seed_user(repos, &format!("e{i}"), Role::Customer).await;
        entered(
            repos,
            &request(&drop, user.id, model::DEFAULT_SKU, 1, at(i)),
        )
        .await;
    }
    let runs = (0..8).map(|_| {
        let draws = repos.draws.clone();
        let id = drop.id;
        tokio::spawn(async move {
            draws
                .run_draw(id, at(600), fixtures::HOLD)
                .await
                .expect("run")
        })
    });
    let outcomes = joined(runs).await;
    let drawn = outcomes
        .iter()
        .filter(|o| matches!(o, DrawOutcome::Drawn { .. }))
        .count();
    assert_eq!(drawn, 1, "{outcomes:?}");
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, DrawOutcome::Drawn { .. } | DrawOutcome::AlreadyDrawn)));
    let events = drain(repos).await;
    let count = |kind| events.iter().filter(|e| e.kind == kind).count();
    assert_eq!(
        (
            count(EventType::DropDrawn),
            count(EventType::DrawWon),
            count(EventType::DrawLost)
        ),
        (1, 3, 7)
    );
    assert_eq!(stock_of(repos, drop.id).await, stock(3, 0, 3, 0));
}

/// Units a winner gives back (a cancel, an expired hold) go in the same step to the
/// next-ranked entries that have not won and whose quantity fits, which win late
/// (`draw.won`); the others keep losing; a cancelled draw drop does not run.
pub async fn draws_hand_units_back_in_rank_order(repos: &Repos) {
    let (drop, _) = draw_drop(repos, &[(model::DEFAULT_SKU, 2)], 2).await;
    let sku = model::DEFAULT_SKU;
    for i in 0..6 {
        let user = seed_user(repos, &format!("e{i}"), Role::Customer).await;
        entered(repos, &request(&drop, user.id, sku, 1, at(i))).await;
    }
    let DrawOutcome::Drawn { entries, .. } = run(repos, drop.id, at(600)).await else {
        panic!("expected the draw to run");
    };
    drain(repos).await;
    let winner = entries[0].order_id.expect("rank 1 wins");
    assert!(matches!(
        settle(repos, winner, Settlement::Cancel, at(700)).await,
        SettleOutcome::Settled(_)
    ));
    let events = drain(repos).await;
    let late: Vec<DrawPayload> = events
        .iter()
        .filter(|e| e.kind == EventType::DrawWon)
        .map(draw_payload)
        .collect();
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].entry.token, entries[2].token, "rank 3 is next");
    let order = late[0].order.clone().expect("an order");
    assert_eq!(order.reserved_until, at(700) + fixtures::HOLD);
    let third = fetched(repos.draws.draw_entry(drop.id, entries[2].user_id)).await;
    assert_eq!(
        (third.result, third.order_id),
        (DrawResult::Won, Some(order.id))
    );
    assert_eq!(stock_of(repos, drop.id).await, stock(2, 0, 2, 0));

    // The late winner's hold runs out: rank 4 is next.
    let expired = repos
        .orders
        .expire_holds(order.reserved_until, 100, fixtures::HOLD)
        .await
        .expect("expire");
    assert!(expired.iter().any(|o| o.id == order.id));
    let won: Vec<String> = drain(repos)
        .await
        .iter()
        .filter(|e| e.kind == EventType::DrawWon)
        .map(|e| draw_payload(e).entry.token)
        .collect();
    assert!(won.contains(&entries[3].token), "rank 4 won: {won:?}");

    // A cancelled draw drop never runs.
    let (cancelled, _) = draw_drop(repos, &[(sku, 1)], 1).await;
    let user = seed_user(repos, "late", Role::Customer).await;
    entered(repos, &request(&cancelled, user.id, sku, 1, T0)).await;
    let event = Event::drop(EventType::DropCancelled, &cancelled, at(1));
    assert!(repos
        .drops
        .transition(
            cancelled.id,
            &[DropState::Live],
            DropState::Cancelled,
            &[event]
        )
        .await
        .expect("cancel"));
    assert_eq!(run(repos, cancelled.id, at(600)).await, DrawOutcome::NotDue);
    assert!(!repos
        .draws
        .due_draws(at(600), 10)
        .await
        .expect("due")
        .contains(&cancelled.id));
    // A buyer cannot reach the stock of a draw drop by a waitlist either: there is
    // none, and an order placed straight at the store still needs stock.
    let direct = sized_order(user.id, &cancelled, sku, 1, "direct", at(2));
    assert_eq!(place(repos, &direct, at(2)).await, PlaceOutcome::NotLive);
}
