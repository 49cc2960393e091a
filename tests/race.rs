//! Hundreds of buyers race for one drop on a multi-threaded runtime.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use common::{order_of, World};
use livedrop::core::model::{OrderStatus, Role};
use livedrop::core::Error;

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn exactly_the_stock_is_reserved_and_nobody_gets_two_orders() {
    const STOCK: u32 = 100;
    const BUYERS: usize = 500;
    let world = World::new();
    let drop = world.creators_drop(STOCK, Some(1)).await;
    let mut buyers = Vec::new();
    for _ in 0..BUYERS {
        buyers.push(world.user(Role::Customer).await);
    }

    let request = order_of(&drop, 1);
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(BUYERS));
    let mut tasks = Vec::new();
    for (i, buyer) in buyers.iter().copied().enumerate() {
        let (app, request) = (world.app.clone(), request.clone());
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let key = format!("buy-{i}");
            // Every buyer also retries with the same key, as a flaky client would.
            let first = app.place_order(&buyer, Some(&key), request.clone()).await;
            let retry = app.place_order(&buyer, Some(&key), request).await;
            (buyer, first, retry)
        }));
    }

    let mut won = Vec::new();
    let mut lost = 0;
    for task in tasks {
        let (buyer, first, retry) = task.await.unwrap();
        match (&first, &retry) {
            (Ok(order), Ok(again)) => {
                assert_eq!(order.id, again.id, "a retry replays the first order");
                assert_eq!(order.user_id, buyer.id);
                won.push(order.clone());
            }
            (Err(Error::OutOfStock { .. }), Err(Error::OutOfStock { .. })) => lost += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(won.len(), STOCK as usize, "exactly the stock was sold");
    assert_eq!(lost, BUYERS - STOCK as usize);
    let ids: HashSet<_> = won.iter().map(|o| o.id).collect();
    assert_eq!(ids.len(), won.len(), "no duplicate orders");
    let winners: HashSet<_> = won.iter().map(|o| o.user_id).collect();
    assert_eq!(winners.len(), won.len(), "nobody holds two orders");
    assert!(won.iter().all(|o| o.status == OrderStatus::Reserved));

    let stock = world.stock(&drop).await;
    assert_eq!((stock.available, stock.reserved, stock.sold), (0, STOCK, 0));
    assert!(stock.is_consistent());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn one_buyer_firing_concurrently_cannot_pass_the_limit() {
    let world = World::new();
    let drop = world.creators_drop(1_000, Some(3)).await;
    let buyer = world.user(Role::Customer).await;
    let request = order_of(&drop, 1);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (app, request) = (world.app.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            app.place_order(&buyer, Some(&format!("k{i}")), request)
                .await
        }));
    }
    let mut placed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => placed += 1,
            Err(e) => assert_eq!(e.code(), "per_user_limit_exceeded"),
        }
    }
    assert_eq!(placed, 3);
    let stock = world.stock(&drop).await;
    assert_eq!(stock.reserved, 3);
}

/// Units come back to a two-size drop from every direction at once — holders
/// cancelling, several sweepers expiring holds, restocks one unit at a time — while
/// fifteen buyers wait per size, exactly as many as come back. Each waiting buyer
/// gets exactly one unit of its size, in join order; no unit is offered twice or
/// lost; and no unit is ever `available` while the race runs, since someone waits
/// for every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn units_coming_back_at_once_go_to_the_waitlist_once_each_in_join_order() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use chrono::Duration as Span;
    use common::{sized_order, ClockExt};
    use livedrop::core::event::EventPayload;
    use livedrop::core::model::Stock;
    use livedrop::core::service::{JoinWaitlist, StockAdjustment};

    const SIZES: [&str; 2] = ["s", "m"];
    const PER_SIZE: u32 = 10;
    const RESTOCK: u32 = 5;
    let world = World::new();
    let creator = world.user(Role::Creator).await;
    let drop = world
        .sized_drop(&creator, &[("s", PER_SIZE), ("m", PER_SIZE)], Some(1), None)
        .await;

    // Every unit held: half of each size from the start, half five minutes later.
    let mut early = Vec::new();
    let mut late = Vec::new();
    for batch in [&mut early, &mut late] {
        for sku in SIZES {
            for i in 0..PER_SIZE / 2 {
                let buyer = world.user(Role::Customer).await;
                let order = world
                    .app
                    .place_order(
                        &buyer,
                        Some(&format!("hold-{i}")),
                        sized_order(&drop, sku, 1),
                    )
                    .await
                    .unwrap();
                batch.push((buyer, order));
            }
        }
        world.clock.advance(Span::minutes(5));
    }
    // The early holds are due now; the late ones run five minutes more.
    assert!(early
        .iter()
        .all(|(_, o)| o.reserved_until <= world.clock.now_ts()));

    // As many waiting buyers per size as units will come back, joining in turn.
    let mut line: Vec<(livedrop::core::model::Actor, &str)> = Vec::new();
    for i in 0..2 * (PER_SIZE + RESTOCK) {
        let sku = SIZES[i as usize % 2];
        let buyer = world.user(Role::Customer).await;
        let entry = world
            .app
            .join_waitlist(
                &buyer,
                drop.drop.id,
                JoinWaitlist {
                    sku: Some(sku.to_owned()),
                    quantity: 1,
                },
            )
            .await
            .unwrap();
        assert_eq!(entry.position, u64::from(i / 2 + 1));
        line.push((buyer, sku));
    }

    // A watcher that fails on any unit seen available while the race runs.
    let racing = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (inventory, racing, id) = (world.ports.inventory.clone(), racing.clone(), drop.drop.id);
        tokio::spawn(async move {
            let mut reads = 0u32;
            while racing.load(Ordering::SeqCst) {
                let stock = inventory.stock(id).await.unwrap().unwrap();
                for s in &stock {
                    assert!(s.is_consistent(), "{s:?}");
                    assert_eq!(s.available, 0, "a unit available while someone waits");
                }
                reads += 1;
                tokio::task::yield_now().await;
            }
            reads
        })
    };
    let mut tasks = Vec::new();
    for (buyer, order) in late {
        let app = world.app.clone();
        tasks.push(tokio::spawn(async move {
            app.cancel_order(&buyer, order.id).await.map(|_| ())
        }));
    }
    for _ in 0..4 {
        let app = world.app.clone();
        tasks.push(tokio::spawn(
            async move { app.sweep_holds().await.map(|_| ()) },
        ));
    }
    for sku in SIZES {
        for _ in 0..RESTOCK {
            let (app, id) = (world.app.clone(), drop.drop.id);
            tasks.push(tokio::spawn(async move {
                let restock = StockAdjustment {
                    delta: 1,
                    reason: "returned to the shelf".into(),
                    sku: Some(sku.to_owned()),
                };
                app.adjust_stock(None, id, restock).await.map(|_| ())
            }));
        }
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    racing.store(false, Ordering::SeqCst);
    assert!(watcher.await.unwrap() > 0);

    // Every early hold expired exactly once, every late one was cancelled.
    for (buyer, order) in &early {
        let order = world.app.order(buyer, order.id).await.unwrap();
        assert_eq!(order.status, OrderStatus::Expired);
    }

    // Each waiting buyer holds exactly one unit of its size, and waits no more.
    for (buyer, sku) in &line {
        let orders = world
            .ports
            .orders
            .orders_for_user(buyer.id, livedrop::core::page::PageRequest::first(10))
            .await
            .unwrap()
            .items;
        assert_eq!(orders.len(), 1, "one offer per waiting buyer");
        assert_eq!(
            (orders[0].sku.as_str(), orders[0].quantity, orders[0].status),
            (*sku, 1, OrderStatus::Reserved)
        );
        let waiting = world
            .ports
            .waitlists
            .waitlist_entry(drop.drop.id, buyer.id)
            .await
            .unwrap();
        assert_eq!(waiting, None);
    }
    // No unit lost, none offered twice: each size holds exactly its offers.
    let held = PER_SIZE + RESTOCK;
    assert_eq!(
        world.variant_stock(&drop).await,
        vec![
            Stock {
                total: held,
                available: 0,
                reserved: held,
                sold: 0
            };
            2
        ]
    );

    // Join order kept: per size, the offers in the outbox follow the line.
    let records = world.ports.outbox.pending(100_000).await.unwrap();
    for sku in SIZES {
        let offered: Vec<_> = records
            .iter()
            .filter_map(|r| match r.event.decode() {
                Ok(EventPayload::WaitlistOffered(p)) if p.sku == sku => Some(p.user_id),
                _ => None,
            })
            .collect();
        let joined: Vec<_> = line
            .iter()
            .filter(|(_, s)| *s == sku)
            .map(|(b, _)| b.id)
            .collect();
        assert_eq!(offered, joined, "size {sku}: offers in join order");
    }
}
