//! Two server processes (the real binary) on one PostgreSQL schema, one Redis
//! namespace and one broker: buyers race for a hot drop through both, every order
//! sent to both processes at once with the same idempotency key. Zero oversell,
//! zero duplicate orders, and every event delivered (stock view equals the orders,
//! each follower gets exactly one `drop_live`, each confirmed order exactly one
//! `order_confirmed`, the outbox drains).
//!
//! Needs `LIVEDROP_TEST_DATABASE_URL`, `LIVEDROP_TEST_REDIS_URL` and
//! `LIVEDROP_TEST_KAFKA_BROKERS` (`scripts/test.sh` sets them): unset, the test says
//! why and returns; set but unreachable, it fails.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use harness::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_a_hot_drop_without_oversell_or_duplicates() {
    let Some(services) = Services::from_env("two_processes_share_a_hot_drop") else {
        return;
    };
    services.assert_reachable().await;
    let db = TestSchema::on(&services.db).await;
    let schema = db.name();
    let people = seed_people(&db, 24).await;
    let env = server_env(&services, schema, schema, &[]);
    let a = Server::start("a", &env).await;
    let b = Server::start("b", &env).await;
    let bases = vec![a.base.clone(), b.base.clone()];
    let api = Api::new();

    // Followers first, through both processes.
    follow_creator(&api, &bases, &people).await;
    let (drop_id, _) = create_drop(&api, &a.base, &people.creator.token, 60, Some(4)).await;

    // Each buyer places 6 orders of 1 unit (demand 144 > stock 60); each order goes
    // to both processes concurrently with one key, and is retried with that key.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tasks = Vec::new();
    for (i, buyer) in people.buyers.iter().cloned().enumerate() {
        let api = api.clone();
        let bases = bases.clone();
        let drop_id = drop_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            for n in 0..6 {
                let key = format!("mp-{i}-{n}");
                let body = json!({"drop_id": drop_id, "quantity": 1});
                let (x, y) = tokio::join!(
                    place(&api, &bases, 0, &buyer.token, &key, &body, deadline),
                    place(&api, &bases, 1, &buyer.token, &key, &body, deadline),
                );
                results.push((key, x, y));
            }
            (i, results)
        }));
    }
    let mut known: HashMap<usize, HashSet<String>> = HashMap::new();
    let mut created = 0u64;
    let mut outcomes: HashMap<String, u64> = HashMap::new();
    for task in tasks {
        let (i, results) = task.await.unwrap();
        for (key, x, y) in results {
            for outcome in [&x, &y] {
                *outcomes.entry(outcome.label()).or_default() += 1;
                assert!(
                    outcome.status < 500,
                    "key {key}: a server error reached the end of the retries: {outcome:?}"
                );
            }
            // One key, one answer: once the in-flight retries are over, both processes
            // give the same status, error code and order for it.
            assert_eq!(
                (x.status, &x.code, &x.order_id),
                (y.status, &y.code, &y.order_id),
                "key {key}: two answers for one key ({:?} / {:?})",
                x.seen,
                y.seen
            );
            if let Some(id) = x.order_id.clone().or(y.order_id.clone()) {
                assert!(
                    known.entry(i).or_default().insert(id),
                    "key {key}: an order id answered for two keys"
                );
                created += 1;
            }
        }
    }
    eprintln!("outcomes: {outcomes:?}");
    assert_eq!(
        created, 60,
        "demand exceeds the stock: every unit is reserved exactly once ({outcomes:?})"
    );

    // Each buyer confirms its first order through the other process.
    let mut confirmed = HashSet::new();
    for (i, buyer) in people.buyers.iter().enumerate() {
        let Some(order) = known.get(&i).and_then(|ids| ids.iter().next()) else {
            continue;
        };
        let r = api
            .call(
                &bases[(i + 1) % 2],
                "POST",
                &format!("/orders/{order}/confirm"),
                Some(&buyer.token),
                Some(&format!("confirm-{order}")),
                None,
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        confirmed.insert(i);
    }

    // Stock as each process shows it equals the orders the buyers hold.
    for base in &bases {
        assert_stock_matches_orders(&api, base, &drop_id, &people.buyers, &known).await;
    }
    let stock = drop_stock(&api, &a.base, &drop_id).await;
    assert_eq!(
        stock,
        [60, 0, 60 - confirmed.len() as u64, confirmed.len() as u64]
    );

    // Every event delivered: notifications and an empty outbox.
    assert_notifications(&api, &a.base, &drop_id, &people.buyers, "drop_live", |_| 1).await;
    assert_notifications(
        &api,
        &b.base,
        &drop_id,
        &people.buyers,
        "order_confirmed",
        |i| usize::from(confirmed.contains(&i)),
    )
    .await;
    wait_for_outbox_drained(&api, &a.base, Duration::from_secs(30)).await;

    a.stop().await;
    b.stop().await;
}

mod harness;
