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

/// One buyer with a limit of 1 races the two sizes of a drop through two server
/// processes on one PostgreSQL schema, many rounds, each order sent to both
/// processes at once: the limit counts both sizes across processes, so the buyer
/// never holds more than one unit, and each size's stock stays consistent.
/// Needs `LIVEDROP_TEST_DATABASE_URL` and `LIVEDROP_TEST_REDIS_URL` (no broker:
/// each process follows the outbox itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_buyer_racing_two_sizes_through_two_processes_holds_at_most_its_limit() {
    use livedrop_core::testing::env;
    let Some([db, redis]) = env::service_vars(
        [env::DATABASE_URL, env::REDIS_URL],
        "one_buyer_racing_two_sizes_through_two_processes",
    ) else {
        return;
    };
    let services = Services {
        db,
        redis,
        kafka: String::new(),
    };
    assert_tcp("PostgreSQL", &host_port(&services.db, 5432)).await;
    assert_tcp("Redis", &host_port(&services.redis, 6379)).await;
    let db = TestSchema::on(&services.db).await;
    let schema = db.name();
    let people = seed_people(&db, 1).await;
    let mut env = server_env(&services, schema, schema, &[]);
    env.retain(|(k, _)| !k.starts_with("LIVEDROP_KAFKA_"));
    let a = Server::start("sizes-a", &env).await;
    let b = Server::start("sizes-b", &env).await;
    let bases = vec![a.base.clone(), b.base.clone()];
    let api = Api::new();
    let buyer = &people.buyers[0];
    let creator = &people.creator.token;

    let product = api
        .expect(
            &a.base,
            "POST",
            "/products",
            Some(creator),
            Some(&json!({"title": "Sneaker", "description": "two sizes", "price_cents": 9900, "currency": "EUR"})),
            201,
        )
        .await;
    let mut rounds = 0;
    for round in 0..8 {
        let body = json!({
            "product_id": product["id"],
            "ends_at": chrono::Utc::now() + chrono::Duration::hours(1),
            "per_user_limit": 1,
            "variants": [
                {"sku": "eu-42", "label": "EU 42", "total_stock": 5},
                {"sku": "eu-43", "label": "EU 43", "total_stock": 5},
            ],
        });
        let drop = api
            .expect(
                &bases[round % 2],
                "POST",
                "/drops",
                Some(creator),
                Some(&body),
                201,
            )
            .await;
        let drop_id = drop["id"].as_str().unwrap().to_owned();
        // Both sizes at once, each through both processes, with its own key.
        let deadline = Instant::now() + Duration::from_secs(30);
        let order = |sku: &str| json!({"drop_id": drop_id, "quantity": 1, "sku": sku});
        let (b42, b43) = (order("eu-42"), order("eu-43"));
        let (k42, k43) = (format!("r{round}-42"), format!("r{round}-43"));
        let (x42, y42, x43, y43) = tokio::join!(
            place(&api, &bases, 0, &buyer.token, &k42, &b42, deadline),
            place(&api, &bases, 1, &buyer.token, &k42, &b42, deadline),
            place(&api, &bases, 1, &buyer.token, &k43, &b43, deadline),
            place(&api, &bases, 0, &buyer.token, &k43, &b43, deadline),
        );
        let mut placed = 0;
        for (sku, x, y) in [("eu-42", &x42, &y42), ("eu-43", &x43, &y43)] {
            for outcome in [x, y] {
                assert!(outcome.status < 500, "{sku}: {outcome:?}");
            }
            assert_eq!(
                (x.status, &x.code, &x.order_id),
                (y.status, &y.code, &y.order_id),
                "{sku}: one key, two answers ({:?} / {:?})",
                x.seen,
                y.seen
            );
            match x.status {
                201 => placed += 1,
                409 => assert_eq!(x.code.as_deref(), Some("per_user_limit_exceeded"), "{x:?}"),
                other => panic!("{sku}: unexpected {other}: {x:?}"),
            }
        }
        assert_eq!(placed, 1, "round {round}: limit 1 across both sizes");

        // Both processes agree; the buyer holds one unit, each size is consistent.
        for base in &bases {
            let orders = buyer_orders(&api, base, &buyer.token, &drop_id).await;
            let held: u64 = orders
                .iter()
                .filter(|o| matches!(o["status"].as_str(), Some("reserved" | "confirmed")))
                .map(|o| o["quantity"].as_u64().unwrap())
                .sum();
            assert_eq!(held, 1, "round {round}: {orders:?}");
            let held_sku = orders[0]["sku"].as_str().unwrap().to_owned();
            wait_for(Duration::from_secs(15), "each size's stock", || async {
                let view = api
                    .expect(base, "GET", &format!("/drops/{drop_id}"), None, None, 200)
                    .await;
                let mut reserved = 0;
                for v in view["variants"].as_array().unwrap() {
                    let s = &v["stock"];
                    let get = |f: &str| s[f].as_u64().unwrap();
                    assert_eq!(
                        get("available") + get("reserved") + get("sold"),
                        get("total"),
                        "{v}"
                    );
                    assert_eq!(get("total"), 5, "{v}");
                    let expected = u64::from(v["sku"] == held_sku.as_str());
                    if get("reserved") != expected {
                        return Err(format!("{base}: {view}"));
                    }
                    reserved += get("reserved");
                }
                assert_eq!(view["stock"]["reserved"], reserved, "{view}");
                Ok(())
            })
            .await;
        }
        rounds += 1;
    }
    assert_eq!(rounds, 8);
    a.stop().await;
    b.stop().await;
}

mod harness;
