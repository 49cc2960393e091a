//! Waitlists: joining (its checks, keeping one's place), positions, leaving, the
//! hand-off of units that come back (cancel, expiry, restock) in join order, skips
//! past the limit, closing with the drop, and races against the hand-off.

use super::variants::sized_order;
use super::*;
use crate::event::WaitlistPayload;
use crate::model::{JoinOutcome, WaitlistEntry, WaitlistJoin};

async fn join(
    repos: &Repos,
    drop: &model::Drop,
    user: UserId,
    sku: &str,
    quantity: u32,
    at: Timestamp,
) -> JoinOutcome {
    let join = WaitlistJoin {
        drop_id: drop.id,
        sku: sku.to_owned(),
        user_id: user,
        quantity,
        at,
    };
    repos.waitlists.join_waitlist(&join).await.expect("join")
}

async fn joined_entry(
    repos: &Repos,
    drop: &model::Drop,
    user: UserId,
    sku: &str,
    quantity: u32,
    at: Timestamp,
) -> WaitlistEntry {
    match join(repos, drop, user, sku, quantity, at).await {
        JoinOutcome::Joined(entry) => entry,
        other => panic!("expected Joined, got {other:?}"),
    }
}

async fn entry(repos: &Repos, drop: &model::Drop, user: UserId) -> Option<WaitlistEntry> {
    repos
        .waitlists
        .waitlist_entry(drop.id, user)
        .await
        .expect("waitlist entry")
}

async fn position(repos: &Repos, drop: &model::Drop, user: UserId) -> Option<u64> {
    entry(repos, drop, user).await.map(|e| e.position)
}

fn waitlist_payload(event: &Event) -> WaitlistPayload {
    match event.decode().expect("waitlist payload") {
        EventPayload::WaitlistOffered(p)
        | EventPayload::WaitlistSkipped(p)
        | EventPayload::WaitlistClosed(p) => p,
        other => panic!("not a waitlist event: {:?}", other.kind()),
    }
}

/// The orders of the waitlist offers among `events`, in the order appended.
fn offers(events: &[Event]) -> Vec<Order> {
    events
        .iter()
        .filter(|e| e.kind == EventType::WaitlistOffered)
        .map(|e| waitlist_payload(e).order.expect("an offer names its order"))
        .collect()
}

/// Joining checks in the documented order; a re-join with the same sku keeps the
/// place with the new quantity, with another sku goes to the end of that line;
/// positions count those ahead in the same variant's line; leaving ends the entry.
pub async fn waitlist_join_rules(repos: &Repos) {
    let drop = live_sized_drop(repos, &[("s", 1), ("m", 2)], 2).await;
    let [a, b, c, d] = [
        seed_user(repos, "A", Role::Customer).await,
        seed_user(repos, "B", Role::Customer).await,
        seed_user(repos, "C", Role::Customer).await,
        seed_user(repos, "D", Role::Customer).await,
    ];
    assert_eq!(
        join(repos, &drop, b.id, "s", 1, T0).await,
        JoinOutcome::VariantAvailable { available: 1 }
    );
    placed(repos, &sized_order(a.id, &drop, "s", 1, "a", T0), T0).await;

    let first = joined_entry(repos, &drop, b.id, "s", 1, at(1)).await;
    assert_eq!(
        (
            first.sku.as_str(),
            first.quantity,
            first.position,
            first.joined_at
        ),
        ("s", 1, 1, at(1))
    );
    assert_eq!(
        joined_entry(repos, &drop, c.id, "s", 2, at(1))
            .await
            .position,
        2,
        "the same instant still keeps join order"
    );
    let again = joined_entry(repos, &drop, b.id, "s", 2, at(2)).await;
    assert_eq!(
        (again.quantity, again.position, again.joined_at),
        (2, 1, at(1)),
        "a re-join keeps the place and takes the new quantity"
    );
    assert_eq!(entry(repos, &drop, b.id).await, Some(again));

    // Refusals, in the documented order.
    let elsewhere = model::Drop {
        id: DropId::new(),
        ..drop.clone()
    };
    assert_eq!(
        join(repos, &elsewhere, d.id, "nope", 1, at(9_999)).await,
        JoinOutcome::DropNotFound
    );
    assert_eq!(
        join(repos, &drop, d.id, "xl", 1, at(9_999)).await,
        JoinOutcome::UnknownVariant
    );
    assert_eq!(
        join(repos, &drop, d.id, "s", 1, at(9_999)).await,
        JoinOutcome::NotLive
    );
    placed(repos, &sized_order(d.id, &drop, "m", 2, "d", at(3)), at(3)).await;
    assert_eq!(
        join(repos, &drop, d.id, "s", 1, at(4)).await,
        JoinOutcome::LimitExceeded { limit: 2, held: 2 }
    );
    assert_eq!(
        entry(repos, &drop, d.id).await,
        None,
        "a refusal joins nothing"
    );

    // Another sku: the end of that line.
    let moved = joined_entry(repos, &drop, b.id, "m", 1, at(5)).await;
    assert_eq!(
        (moved.sku.as_str(), moved.position, moved.joined_at),
        ("m", 1, at(5))
    );
    assert_eq!(position(repos, &drop, c.id).await, Some(1), "C moved up");

    assert!(repos
        .waitlists
        .leave_waitlist(drop.id, c.id)
        .await
        .expect("leave"));
    assert!(!repos
        .waitlists
        .leave_waitlist(drop.id, c.id)
        .await
        .expect("leave"));
    assert_eq!(entry(repos, &drop, c.id).await, None);
    assert_eq!(
        variant_stock(repos, drop.id).await,
        vec![stock(1, 0, 1, 0), stock(2, 0, 2, 0)],
        "waiting moves no stock"
    );
}

/// A cancelled order's units go, in the same step, to the waitlist in join order:
/// each entry gets a reserved order of as many units as are free up to its
/// quantity, with `order.placed` and `waitlist.offered`, and ends; nothing reaches
/// `available` while someone waits.
pub async fn waitlist_cancel_hands_units_to_the_line(repos: &Repos) {
    let drop = live_sized_drop(repos, &[("s", 3), ("m", 1)], 5).await;
    let [a, b, c, d] = [
        seed_user(repos, "A", Role::Customer).await,
        seed_user(repos, "B", Role::Customer).await,
        seed_user(repos, "C", Role::Customer).await,
        seed_user(repos, "D", Role::Customer).await,
    ];
    let held = placed(repos, &sized_order(a.id, &drop, "s", 3, "a", T0), T0).await;
    joined_entry(repos, &drop, b.id, "s", 1, at(1)).await;
    joined_entry(repos, &drop, c.id, "s", 3, at(2)).await;
    joined_entry(repos, &drop, d.id, "s", 1, at(3)).await;
    drain(repos).await;

    assert!(matches!(
        settle(repos, held.id, Settlement::Cancel, at(10)).await,
        SettleOutcome::Settled(_)
    ));
    assert_eq!(
        variant_stock(repos, drop.id).await,
        vec![stock(3, 0, 3, 0), Stock::new(1)],
        "every unit went to the line; none became available"
    );
    let events = drain(repos).await;
    let given = offers(&events);
    assert_eq!(
        given
            .iter()
            .map(|o| (o.user_id, o.quantity))
            .collect::<Vec<_>>(),
        vec![(b.id, 1), (c.id, 2)],
        "join order; C gets the 2 left of the 3 it wanted"
    );
    for order in &given {
        assert_eq!(order.status, OrderStatus::Reserved);
        assert_eq!((order.drop_id, order.sku.as_str()), (drop.id, "s"));
        assert_eq!(order.reserved_until, at(10) + fixtures::HOLD);
        assert_eq!(order.created_at, at(10));
        assert_eq!(
            repos.orders.order(order.id).await.expect("order").as_ref(),
            Some(order),
            "the offered order is stored"
        );
    }
    let placed_ids: Vec<OrderId> = events
        .iter()
        .filter_map(|e| match e.decode() {
            Ok(EventPayload::OrderPlaced(o)) => Some(o.id),
            _ => None,
        })
        .collect();
    assert_eq!(placed_ids, given.iter().map(|o| o.id).collect::<Vec<_>>());
    let last_stock = events
        .iter()
        .rfind(|e| e.kind == EventType::StockChanged)
        .map(stock_payload)
        .expect("a stock event");
    assert_eq!(
        (last_stock.sku.as_str(), last_stock.stock),
        ("s", stock(3, 0, 3, 0))
    );
    assert_eq!(entry(repos, &drop, b.id).await, None, "served entries end");
    assert_eq!(
        entry(repos, &drop, c.id).await,
        None,
        "a partial offer ends it"
    );
    assert_eq!(position(repos, &drop, d.id).await, Some(1), "D is next");
}

/// An expired hold and a restock hand their units to the line as a cancel does;
/// what nobody waits for becomes available.
pub async fn waitlist_expiry_and_restock_hand_off(repos: &Repos) {
    let drop = live_drop(repos, 1, 5).await;
    let [a, b, c] = [
        seed_user(repos, "A", Role::Customer).await,
        seed_user(repos, "B", Role::Customer).await,
        seed_user(repos, "C", Role::Customer).await,
    ];
    let sku = model::DEFAULT_SKU;
    let held = placed(repos, &sized_order(a.id, &drop, sku, 1, "a", T0), T0).await;
    joined_entry(repos, &drop, b.id, sku, 1, at(1)).await;
    joined_entry(repos, &drop, c.id, sku, 1, at(2)).await;
    drain(repos).await;

    let expired = repos
        .orders
        .expire_holds(held.reserved_until, 100, fixtures::HOLD)
        .await
        .expect("expire");
    assert_eq!(expired.len(), 1);
    let events = drain(repos).await;
    let given = offers(&events);
    assert_eq!(given.len(), 1);
    assert_eq!((given[0].user_id, given[0].quantity), (b.id, 1));
    assert_eq!(
        given[0].reserved_until,
        held.reserved_until + fixtures::HOLD
    );
    assert_eq!(stock_of(repos, drop.id).await, stock(1, 0, 1, 0));

    let restock = Adjustment {
        drop_id: drop.id,
        sku: sku.to_owned(),
        delta: 3,
        reason: "found more".into(),
        actor_id: None,
        entry_id: Uuid::now_v7(),
        at: at(700),
        hold: fixtures::HOLD,
    };
    assert!(matches!(
        repos.inventory.adjust(&restock).await.expect("adjust"),
        AdjustOutcome::Applied(_)
    ));
    let given = offers(&drain(repos).await);
    assert_eq!(given.len(), 1);
    assert_eq!((given[0].user_id, given[0].quantity), (c.id, 1));
    assert_eq!(
        stock_of(repos, drop.id).await,
        stock(4, 2, 2, 0),
        "the 2 units nobody waited for are available"
    );
    assert_eq!(entry(repos, &drop, c.id).await, None);
}

/// An offer the per-user limit would refuse skips the entry (`waitlist.skipped`,
/// the entry ends) and the units go on to the next in line.
pub async fn waitlist_skips_past_the_limit(repos: &Repos) {
    let drop = live_sized_drop(repos, &[("s", 1), ("m", 5)], 1).await;
    let [a, b, c] = [
        seed_user(repos, "A", Role::Customer).await,
        seed_user(repos, "B", Role::Customer).await,
        seed_user(repos, "C", Role::Customer).await,
    ];
    let held = placed(repos, &sized_order(a.id, &drop, "s", 1, "a", T0), T0).await;
    joined_entry(repos, &drop, b.id, "s", 1, at(1)).await;
    joined_entry(repos, &drop, c.id, "s", 1, at(2)).await;
    // B buys another size while waiting: an offer would now pass its limit.
    placed(repos, &sized_order(b.id, &drop, "m", 1, "b", at(3)), at(3)).await;
    drain(repos).await;

    assert!(matches!(
        settle(repos, held.id, Settlement::Cancel, at(4)).await,
        SettleOutcome::Settled(_)
    ));
    let events = drain(repos).await;
    let skipped: Vec<WaitlistPayload> = events
        .iter()
        .filter(|e| e.kind == EventType::WaitlistSkipped)
        .map(waitlist_payload)
        .collect();
    assert_eq!(skipped.len(), 1);
    assert_eq!(
        (skipped[0].user_id, skipped[0].order.as_ref()),
        (b.id, None)
    );
    let given = offers(&events);
    assert_eq!(
        given.iter().map(|o| o.user_id).collect::<Vec<_>>(),
        vec![c.id]
    );
    assert_eq!(
        entry(repos, &drop, b.id).await,
        None,
        "a skip ends the entry"
    );
    assert_eq!(
        variant_stock(repos, drop.id).await,
        vec![stock(1, 0, 1, 0), stock(5, 4, 1, 0)]
    );
}

/// Ending or cancelling a drop closes its waitlists: every entry ends with
/// `waitlist.closed`, after the transition's own events. Before the transition, a
/// hold that expires past the drop's end goes back to `available`, not to the line.
pub async fn waitlist_closes_with_the_drop(repos: &Repos) {
    for to in [DropState::Ended, DropState::Cancelled] {
        let drop = live_sized_drop(repos, &[("s", 1), ("m", 1)], 5).await;
        let users = [
            seed_user(repos, "A", Role::Customer).await,
            seed_user(repos, "B", Role::Customer).await,
            seed_user(repos, "C", Role::Customer).await,
        ];
        let held = placed(
            repos,
            &sized_order(users[0].id, &drop, "s", 1, "a", at(3000)),
            at(3000),
        )
        .await;
        let paid = placed(
            repos,
            &sized_order(users[0].id, &drop, "m", 1, "a2", T0),
            T0,
        )
        .await;
        assert!(matches!(
            settle(repos, paid.id, Settlement::Confirm, at(1)).await,
            SettleOutcome::Settled(_)
        ));
        joined_entry(repos, &drop, users[1].id, "s", 1, at(1)).await;
        joined_entry(repos, &drop, users[2].id, "m", 2, at(2)).await;

        // The hold runs out after the window closed: no hand-off.
        let expired = repos
            .orders
            .expire_holds(held.reserved_until, 100, fixtures::HOLD)
            .await
            .expect("expire");
        assert_eq!(expired.len(), 1);
        assert_eq!(variant_stock(repos, drop.id).await[0], Stock::new(1));
        drain(repos).await;

        let mut next = drop.clone();
        next.state = to;
        let kind = if to == DropState::Ended {
            EventType::DropEnded
        } else {
            EventType::DropCancelled
        };
        let event = Event::drop(kind, &next, at(4000));
        assert!(repos
            .drops
            .transition(drop.id, &[DropState::Live], to, &[event])
            .await
            .expect("transition"));
        let events = drain(repos).await;
        assert_eq!(events[0].kind, kind, "the transition's own event first");
        let mut closed: Vec<(UserId, String, u32)> = events[1..]
            .iter()
            .map(|e| {
                assert_eq!(e.kind, EventType::WaitlistClosed);
                let p = waitlist_payload(e);
                (p.user_id, p.sku, p.quantity)
            })
            .collect();
        closed.sort();
        let mut want = vec![
            (users[1].id, "s".to_owned(), 1),
            (users[2].id, "m".to_owned(), 2),
        ];
        want.sort();
        assert_eq!(closed, want, "{to:?}");
        for user in &users {
            assert_eq!(entry(repos, &drop, user.id).await, None);
        }
    }
}

/// Twenty holders cancel at once while twenty buyers wait for one unit each, and
/// restocks come in between: every waiting buyer gets exactly one unit, in join
/// order of service, no unit is offered twice or lost, and none is available while
/// someone waits.
pub async fn waitlist_races_hand_each_unit_once(repos: &Repos) {
    let drop = live_drop(repos, 20, 1).await;
    let sku = model::DEFAULT_SKU;
    let mut holders = Vec::new();
    for i in 0..20 {
        let user = seed_user(repos, &format!("holder{i}"), Role::Customer).await;
        holders.push(placed(repos, &sized_order(user.id, &drop, sku, 1, "h", T0), T0).await);
    }
    let mut waiting = Vec::new();
    for i in 0..25 {
        let user = seed_user(repos, &format!("waiter{i}"), Role::Customer).await;
        joined_entry(repos, &drop, user.id, sku, 1, at(1)).await;
        waiting.push(user.id);
    }
    drain(repos).await;

    let cancels = holders.iter().map(|order| {
        let orders = repos.orders.clone();
        let id = order.id;
        tokio::spawn(async move {
            orders
                .settle_order(id, Settlement::Cancel, at(10), fixtures::HOLD)
                .await
                .expect("cancel")
        })
    });
    let restocks = (0..3).map(|_| {
        let inventory = repos.inventory.clone();
        let restock = Adjustment {
            drop_id: drop.id,
            sku: sku.to_owned(),
            delta: 2,
            reason: "more".into(),
            actor_id: None,
            entry_id: Uuid::now_v7(),
            at: at(10),
            hold: fixtures::HOLD,
        };
        tokio::spawn(async move {
            assert!(matches!(
                inventory.adjust(&restock).await.expect("restock"),
                AdjustOutcome::Applied(_)
            ));
            SettleOutcome::NotFound
        })
    });
    joined(cancels.chain(restocks).collect::<Vec<_>>()).await;

    let given = offers(&drain(repos).await);
    let served: Vec<UserId> = given.iter().map(|o| o.user_id).collect();
    assert_eq!(
        served,
        waiting[..served.len()].to_vec(),
        "served in join order, each once"
    );
    assert_eq!(served.len(), 25, "26 units came back for 25 waiting");
    assert_eq!(
        stock_of(repos, drop.id).await,
        stock(26, 1, 25, 0),
        "one unit left over, available once nobody waits"
    );
    let ids: HashSet<OrderId> = given.iter().map(|o| o.id).collect();
    assert_eq!(ids.len(), 25);
}
