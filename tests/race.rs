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
        let app = world.app.clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let key = format!("buy-{i}");
            // Every buyer also retries with the same key, as a flaky client would.
            let first = app.place_order(&buyer, Some(&key), request).await;
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
        let app = world.app.clone();
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
