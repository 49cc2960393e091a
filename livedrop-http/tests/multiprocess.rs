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
//!
//! The other tests run two processes without a broker (each follows the outbox
//! itself) and need only PostgreSQL and Redis: one buyer racing two sizes, a draw
//! whose two schedulers race for it (it runs once, and its published ranking
//! verifies with the `verify_draw` example), and a waiting room whose admissions
//! through both processes keep its rate.

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
    let Some(services) = without_broker("one_buyer_racing_two_sizes_through_two_processes").await
    else {
        return;
    };
    let db = TestSchema::on(&services.db).await;
    let schema = db.name();
    let people = seed_people(&db, 1).await;
    let env = broker_free_env(&services, schema);
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

/// PostgreSQL and Redis from the environment, no broker (each process follows the
/// outbox itself); `None` after saying why when either is unset.
async fn without_broker(test: &str) -> Option<Services> {
    use livedrop_core::testing::env;
    let [db, redis] = env::service_vars([env::DATABASE_URL, env::REDIS_URL], test)?;
    let services = Services {
        db,
        redis,
        kafka: String::new(),
    };
    assert_tcp("PostgreSQL", &host_port(&services.db, 5432)).await;
    assert_tcp("Redis", &host_port(&services.redis, 6379)).await;
    Some(services)
}

/// [`server_env`] on `schema` without the broker variables.
fn broker_free_env(services: &Services, schema: &str) -> Vec<(String, String)> {
    let mut env = server_env(services, schema, schema, &[]);
    env.retain(|(k, _)| !k.starts_with("LIVEDROP_KAFKA_"));
    env
}

/// Waits (≤ 60 s) until the drop, read from `base`, shows its draw as run; the drop
/// body then.
async fn drawn_drop(api: &Api, base: &str, drop_id: &str) -> serde_json::Value {
    wait_for(Duration::from_secs(60), "the draw to run", || async {
        let drop = api
            .expect(base, "GET", &format!("/drops/{drop_id}"), None, None, 200)
            .await;
        if drop["draw"]["drawn_at"].is_string() {
            Ok(drop)
        } else {
            Err(format!("{base}: {}", drop["draw"]))
        }
    })
    .await
}

/// A buyer's draw entry: variant, quantity and public token.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entered {
    sku: String,
    quantity: u64,
    token: String,
}

/// A draw drop of two sizes whose entries close a few seconds after it is scheduled,
/// entered through two server processes on one PostgreSQL schema. Both processes'
/// schedulers race for the draw at `entries_close_at`; it runs exactly once: one
/// `drop.drawn`, each entry one result (the same through both processes), each
/// winner one reserved order and one `draw_won`, each loser one `draw_lost` and no
/// order, never more units than a size holds, and both processes publish the same
/// seed and ranking — which the `verify_draw` example verifies, and refuses once
/// tampered with. Needs `LIVEDROP_TEST_DATABASE_URL` and `LIVEDROP_TEST_REDIS_URL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draw_entered_through_two_processes_runs_once_and_verifies() {
    let Some(services) = without_broker("a_draw_entered_through_two_processes").await else {
        return;
    };
    let db = TestSchema::on(&services.db).await;
    let schema = db.name();
    let people = seed_people(&db, 16).await;
    let env = broker_free_env(&services, schema);
    let a = Server::start("draw-a", &env).await;
    let b = Server::start("draw-b", &env).await;
    let bases = [a.base.clone(), b.base.clone()];
    let api = Api::new();
    let creator = &people.creator.token;

    let product = api
        .expect(
            &a.base,
            "POST",
            "/products",
            Some(creator),
            Some(&json!({"title": "Sneaker", "description": "raffled", "price_cents": 18000, "currency": "EUR"})),
            201,
        )
        .await;
    let stock: HashMap<&str, u64> = HashMap::from([("s", 3), ("m", 2)]);
    let now = chrono::Utc::now();
    let drop = api
        .expect(
            &b.base,
            "POST",
            "/drops",
            Some(creator),
            Some(&json!({
                "product_id": product["id"],
                "ends_at": now + chrono::Duration::hours(1),
                "per_user_limit": 2,
                "variants": [
                    {"sku": "s", "label": "S", "total_stock": stock["s"]},
                    {"sku": "m", "label": "M", "total_stock": stock["m"]},
                ],
                "allocation": "draw",
                "entries_close_at": now + chrono::Duration::seconds(8),
            })),
            201,
        )
        .await;
    let drop_id = drop["id"].as_str().unwrap().to_owned();
    let commitment = drop["draw"]["commitment"].as_str().unwrap().to_owned();
    assert!(drop["draw"]["seed"].is_null(), "{drop}");

    // Every buyer enters through one process, half of them replace their entry
    // through the other (keeping the token).
    let path = format!("/drops/{drop_id}/entries/me");
    let mut entered: Vec<Entered> = Vec::new();
    for (i, buyer) in people.buyers.iter().enumerate() {
        let sku = if i % 3 == 0 { "m" } else { "s" };
        let body = json!({"sku": sku, "quantity": 1});
        let first = api
            .expect(
                &bases[i % 2],
                "PUT",
                &path,
                Some(&buyer.token),
                Some(&body),
                200,
            )
            .await;
        assert_eq!(first["result"], "pending", "{first}");
        let mut entry = Entered {
            sku: sku.to_owned(),
            quantity: 1,
            token: first["token"].as_str().unwrap().to_owned(),
        };
        if i % 2 == 1 {
            let body = json!({"sku": sku, "quantity": 2});
            let replaced = api
                .expect(
                    &bases[(i + 1) % 2],
                    "PUT",
                    &path,
                    Some(&buyer.token),
                    Some(&body),
                    200,
                )
                .await;
            assert_eq!(replaced["token"], entry.token.as_str(), "{replaced}");
            assert_eq!(replaced["quantity"], 2, "{replaced}");
            entry.quantity = 2;
        }
        entered.push(entry);
    }
    // Before the draw the public list is empty and orders are refused.
    for base in &bases {
        let list = api
            .expect(
                base,
                "GET",
                &format!("/drops/{drop_id}/draw/entries"),
                None,
                None,
                200,
            )
            .await;
        assert_eq!(list["items"], json!([]), "{list}");
    }
    let r = api
        .call(
            &a.base,
            "POST",
            "/orders",
            Some(&people.buyers[0].token),
            Some("draw-direct"),
            Some(&json!({"drop_id": drop_id, "quantity": 1, "sku": "s"})),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.code()),
        (409, Some("drop_is_draw")),
        "{}",
        r.body
    );

    // Both schedulers reach entries_close_at; the draw runs once.
    let drawn_a = drawn_drop(&api, &a.base, &drop_id).await;
    let drawn_b = drawn_drop(&api, &b.base, &drop_id).await;
    let seed = drawn_a["draw"]["seed"].as_str().unwrap().to_owned();
    assert_eq!(drawn_b["draw"]["seed"], seed.as_str(), "one seed");
    assert_eq!(drawn_a["draw"]["drawn_at"], drawn_b["draw"]["drawn_at"]);
    assert_eq!(drawn_a["draw"]["commitment"], commitment.as_str());
    assert_eq!(drawn_a["draw"]["entries"], 16, "{drawn_a}");
    let outbox = |event: &str| {
        psql(
            &services,
            &format!(
                "SELECT count(*) FROM \"{schema}\".outbox WHERE event_type = '{event}' \
                 AND (aggregate_id = '{drop_id}' OR payload->'entry'->>'drop_id' = '{drop_id}')"
            ),
        )
        .parse::<u64>()
        .unwrap()
    };
    assert_eq!(outbox("drop.drawn"), 1, "the draw ran exactly once");

    // Each entry has one result, the same through both processes.
    let mut results: Vec<(u64, String, Option<String>)> = Vec::new();
    for buyer in &people.buyers {
        let x = api
            .expect(&a.base, "GET", &path, Some(&buyer.token), None, 200)
            .await;
        let y = api
            .expect(&b.base, "GET", &path, Some(&buyer.token), None, 200)
            .await;
        assert_eq!(x, y, "one entry, two answers");
        let result = x["result"].as_str().unwrap().to_owned();
        assert!(result == "won" || result == "lost", "{x}");
        assert_eq!(x["order_id"].is_string(), result == "won", "{x}");
        results.push((
            x["rank"].as_u64().unwrap(),
            result,
            x["order_id"].as_str().map(str::to_owned),
        ));
    }
    let mut ranks: Vec<u64> = results.iter().map(|r| r.0).collect();
    ranks.sort_unstable();
    assert_eq!(
        ranks,
        (1..=16).collect::<Vec<_>>(),
        "every entry ranked once"
    );

    // In rank order, an entry wins exactly when its size still holds its quantity.
    let mut by_rank: Vec<usize> = (0..16).collect();
    by_rank.sort_by_key(|&i| results[i].0);
    let mut left = stock.clone();
    let mut awarded: HashMap<String, u64> = HashMap::new();
    for &i in &by_rank {
        let entry = &entered[i];
        let free = left.get_mut(entry.sku.as_str()).unwrap();
        let wins = *free >= entry.quantity;
        assert_eq!(
            results[i].1 == "won",
            wins,
            "entry {i} ({entry:?}) at rank {}",
            results[i].0
        );
        if wins {
            *free -= entry.quantity;
            *awarded.entry(entry.sku.clone()).or_default() += entry.quantity;
        }
    }
    for (sku, units) in &awarded {
        assert!(
            *units <= stock[sku.as_str()],
            "{sku}: {units} units awarded of {}",
            stock[sku.as_str()]
        );
    }
    let winners = results.iter().filter(|r| r.1 == "won").count();
    assert!(winners > 0 && winners < 16, "{results:?}");
    assert_eq!(drawn_a["draw"]["winners"], winners as u64);
    assert_eq!(outbox("draw.won"), winners as u64);
    assert_eq!(outbox("draw.lost"), 16 - winners as u64);

    // Each winner holds exactly its order; losers hold none; stock agrees.
    for (i, buyer) in people.buyers.iter().enumerate() {
        let orders = buyer_orders(&api, &bases[(i + 1) % 2], &buyer.token, &drop_id).await;
        match &results[i].2 {
            Some(order) => {
                assert_eq!(orders.len(), 1, "buyer {i}: {orders:?}");
                assert_eq!(orders[0]["id"], order.as_str());
                assert_eq!(orders[0]["status"], "reserved");
                assert_eq!(orders[0]["sku"], entered[i].sku.as_str());
                assert_eq!(orders[0]["quantity"], entered[i].quantity);
            }
            None => assert!(orders.is_empty(), "buyer {i} lost but holds {orders:?}"),
        }
    }
    for base in &bases {
        wait_for(Duration::from_secs(15), "each size's stock", || async {
            let view = api
                .expect(base, "GET", &format!("/drops/{drop_id}"), None, None, 200)
                .await;
            for v in view["variants"].as_array().unwrap() {
                let sku = v["sku"].as_str().unwrap();
                let reserved = awarded.get(sku).copied().unwrap_or(0);
                let want = json!({
                    "total": stock[sku],
                    "available": stock[sku] - reserved,
                    "reserved": reserved,
                    "sold": 0,
                });
                if v["stock"] != want {
                    return Err(format!("{base}: {v}, expected {want}"));
                }
            }
            Ok(())
        })
        .await;
    }
    let won = |i: usize| usize::from(results[i].1 == "won");
    assert_notifications(&api, &a.base, &drop_id, &people.buyers, "draw_won", won).await;
    assert_notifications(&api, &b.base, &drop_id, &people.buyers, "draw_lost", |i| {
        1 - won(i)
    })
    .await;

    // Both processes publish the same ranking, the entries' own; the verifier
    // accepts it, and refuses it tampered with.
    let (_, list_a) = verify_draw::fetch(&a.base, &drop_id).await.unwrap();
    for base in &bases {
        let (drop, list) = verify_draw::fetch(base, &drop_id).await.unwrap();
        assert_eq!(list, list_a, "{base}: another ranking");
        assert_eq!(drop["draw"]["seed"], seed.as_str());
        assert_eq!(
            verify_draw::verify(&drop, &list),
            Ok(verify_draw::Verdict::Verified {
                entries: 16,
                winners
            }),
            "{base}"
        );
    }
    let mut published: Vec<Entered> = list_a
        .iter()
        .map(|e| Entered {
            sku: e["sku"].as_str().unwrap().to_owned(),
            quantity: e["quantity"].as_u64().unwrap(),
            token: e["token"].as_str().unwrap().to_owned(),
        })
        .collect();
    let mut expected = entered.clone();
    published.sort_by(|x, y| x.token.cmp(&y.token));
    expected.sort_by(|x, y| x.token.cmp(&y.token));
    assert_eq!(published, expected, "the published entries are the entries");
    for (i, e) in list_a.iter().enumerate() {
        assert_eq!(e["rank"], i as u64 + 1, "{e}");
        let owner = entered.iter().position(|x| x.token == e["token"]).unwrap();
        assert_eq!(e["result"], results[owner].1.as_str(), "{e}");
    }

    let mut swapped = list_a.clone();
    let (r0, r1) = (swapped[0]["rank"].clone(), swapped[5]["rank"].clone());
    swapped[0]["rank"] = r1;
    swapped[5]["rank"] = r0;
    assert!(
        matches!(
            verify_draw::verify(&drawn_a, &swapped),
            Ok(verify_draw::Verdict::Mismatch(_))
        ),
        "two ranks swapped"
    );
    let mut reseeded = drawn_a.clone();
    reseeded["draw"]["seed"] = json!(format!("{:064x}", 0xfeed_u64));
    assert!(
        matches!(
            verify_draw::verify(&reseeded, &list_a),
            Ok(verify_draw::Verdict::Mismatch(_))
        ),
        "another seed"
    );
    assert!(
        matches!(
            verify_draw::verify(&drawn_a, &list_a[1..]),
            Ok(verify_draw::Verdict::Mismatch(_))
        ),
        "an entry left out"
    );

    run_verifier_binary(&a.base, &drop_id, 16, winners).await;

    a.stop().await;
    b.stop().await;
}

/// Runs the compiled `verify_draw` example (built beside the server binary by
/// `cargo test --workspace` or `cargo build --example verify_draw`) against
/// `base`: exit 0 and its `VERIFIED` line. Absent, says why and returns.
async fn run_verifier_binary(base: &str, drop_id: &str, entries: usize, winners: usize) {
    let server = std::path::Path::new(env!("CARGO_BIN_EXE_livedrop-http"));
    let binary = server
        .parent()
        .unwrap()
        .join("examples")
        .join(format!("verify_draw{}", std::env::consts::EXE_SUFFIX));
    if !binary.is_file() {
        eprintln!(
            "not running the verify_draw example: {} is not built (cargo build --example verify_draw)",
            binary.display()
        );
        return;
    }
    let out = tokio::process::Command::new(&binary)
        .args([base, drop_id])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} exited {}: {stdout}{}",
        binary.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("VERIFIED:"), "{stdout}");
    assert!(
        stdout.contains(&format!("all {entries} entries ({winners} won)")),
        "{stdout}"
    );
}

/// A waiting-room buyer, admitted.
#[derive(Debug, Clone)]
struct Admitted {
    position: u64,
    /// When the store admits it.
    slot: chrono::DateTime<chrono::Utc>,
    /// Its admission token.
    token: String,
    /// When the test first saw it admitted.
    seen: chrono::DateTime<chrono::Utc>,
}

/// When a waiting-room buyer is admitted: its admission token's expiry less the
/// token's lifetime.
fn admitted_at(queue: &serde_json::Value, token_seconds: i64) -> chrono::DateTime<chrono::Utc> {
    let expires: chrono::DateTime<chrono::Utc> = queue["expires_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{queue}: {e}"));
    expires - chrono::Duration::seconds(token_seconds)
}

/// A waiting room admitting two buyers a second in front of a drop served by two
/// processes on one PostgreSQL schema. Buyers join through both before the start,
/// more after it; polled through both, each is admitted at its slot, and the slots
/// the store handed out — through either process — are never closer than one
/// interval: together the processes admit no more than the rate. Every buyer who
/// joined before the start is admitted; an order without a token is refused with
/// `admission_required`, one with a token read from one process is placed through
/// the other, and a token is its buyer's only. Needs `LIVEDROP_TEST_DATABASE_URL`
/// and `LIVEDROP_TEST_REDIS_URL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_room_served_by_two_processes_admits_at_its_rate() {
    const EARLY: usize = 12;
    const LATE: usize = 4;
    const TOKEN_SECONDS: i64 = 120;
    let Some(services) = without_broker("a_waiting_room_served_by_two_processes").await else {
        return;
    };
    let db = TestSchema::on(&services.db).await;
    let schema = db.name();
    let people = seed_people(&db, EARLY + LATE).await;
    let env = broker_free_env(&services, schema);
    let a = Server::start("room-a", &env).await;
    let b = Server::start("room-b", &env).await;
    let bases = [a.base.clone(), b.base.clone()];
    let api = Api::new();
    let creator = &people.creator.token;

    let product = api
        .expect(
            &a.base,
            "POST",
            "/products",
            Some(creator),
            Some(&json!({"title": "Jacket", "description": "queued", "price_cents": 25000, "currency": "EUR"})),
            201,
        )
        .await;
    let starts = chrono::Utc::now() + chrono::Duration::seconds(5);
    let drop = api
        .expect(
            &b.base,
            "POST",
            "/drops",
            Some(creator),
            Some(&json!({
                "product_id": product["id"],
                "starts_at": starts,
                "ends_at": starts + chrono::Duration::hours(1),
                "total_stock": 50,
                "per_user_limit": 1,
                "waiting_room": {"admit_per_minute": 120, "token_seconds": TOKEN_SECONDS, "opens_minutes_before": 1},
            })),
            201,
        )
        .await;
    let drop_id = drop["id"].as_str().unwrap().to_owned();
    let starts: chrono::DateTime<chrono::Utc> =
        drop["starts_at"].as_str().unwrap().parse().unwrap();
    let interval = chrono::Duration::milliseconds(500);
    let join = format!("/drops/{drop_id}/queue");
    let me = format!("/drops/{drop_id}/queue/me");

    // The early buyers join through both processes before the start.
    let (early, late) = people.buyers.split_at(EARLY);
    for (i, buyer) in early.iter().enumerate() {
        let r = api
            .expect(&bases[i % 2], "POST", &join, Some(&buyer.token), None, 200)
            .await;
        assert_eq!(r["status"], "waiting", "{r}");
        assert!(r["admission_token"].is_null(), "{r}");
    }
    assert!(
        chrono::Utc::now() < starts,
        "the early buyers must join before the start; raise the lead"
    );

    // From the start, poll everyone through both processes; the late buyers join
    // at once, half through each process.
    tokio::time::sleep((starts - chrono::Utc::now()).to_std().unwrap_or_default()).await;
    let joins = late.iter().enumerate().map(|(i, buyer)| {
        let (api, base, token, join) = (
            api.clone(),
            bases[i % 2].clone(),
            buyer.token.clone(),
            join.clone(),
        );
        async move {
            api.expect(&base, "POST", &join, Some(&token), None, 200)
                .await
        }
    });
    for r in spawn_all(joins).await {
        assert!(
            matches!(r["status"].as_str(), Some("waiting" | "admitted")),
            "{r}"
        );
    }
    // Per buyer: position, slot, token, and when it was first seen admitted.
    let mut admitted: Vec<Option<Admitted>> = vec![None; EARLY + LATE];
    let polling = Instant::now();
    while admitted.iter().any(Option::is_none) {
        assert!(
            polling.elapsed() < Duration::from_secs(60),
            "waited 60 s for every buyer to be admitted: {admitted:?}"
        );
        for (i, buyer) in people.buyers.iter().enumerate() {
            if admitted[i].is_some() {
                continue;
            }
            let token = Some(buyer.token.as_str());
            let x = api
                .expect(&bases[i % 2], "GET", &me, token, None, 200)
                .await;
            let y = api
                .expect(&bases[(i + 1) % 2], "GET", &me, token, None, 200)
                .await;
            let seen = chrono::Utc::now();
            assert_eq!(x["position"], y["position"], "buyer {i}: {x} / {y}");
            assert_eq!(x["expires_at"], y["expires_at"], "buyer {i}: {x} / {y}");
            let slot = admitted_at(&x, TOKEN_SECONDS);
            match x["status"].as_str() {
                Some("admitted") => {
                    // Admitted no earlier than its slot, whichever process says so.
                    assert!(seen >= slot, "buyer {i} admitted before its slot: {x}");
                    admitted[i] = Some(Admitted {
                        position: x["position"].as_u64().unwrap(),
                        slot,
                        token: x["admission_token"].as_str().unwrap().to_owned(),
                        seen,
                    });
                }
                Some("waiting") => assert!(x["admission_token"].is_null(), "{x}"),
                _ => panic!("buyer {i}: {x}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let admitted: Vec<Admitted> = admitted.into_iter().map(Option::unwrap).collect();

    // Positions: the early buyers shuffled into 1..=EARLY, the late ones behind.
    let mut early_positions: Vec<u64> = admitted[..EARLY].iter().map(|a| a.position).collect();
    early_positions.sort_unstable();
    assert_eq!(early_positions, (1..=EARLY as u64).collect::<Vec<_>>());
    let mut late_positions: Vec<u64> = admitted[EARLY..].iter().map(|a| a.position).collect();
    late_positions.sort_unstable();
    assert_eq!(
        late_positions,
        (EARLY as u64 + 1..=(EARLY + LATE) as u64).collect::<Vec<_>>()
    );
    // Each early buyer's slot is its position's: one interval apart from the start.
    for a in &admitted[..EARLY] {
        let steps = i32::try_from(a.position - 1).unwrap();
        assert_eq!(a.slot, starts + interval * steps, "{a:?}");
    }
    // The rate, over every slot handed out by either process: in queue order, each
    // at least one interval after the one before and never before the start, so by
    // any time t at most (t - start) / interval + 1 are admitted.
    let mut slots: Vec<(u64, chrono::DateTime<chrono::Utc>)> =
        admitted.iter().map(|a| (a.position, a.slot)).collect();
    slots.sort_unstable();
    assert!(slots[0].1 >= starts);
    for pair in slots.windows(2) {
        assert!(
            pair[1].1 - pair[0].1 >= interval,
            "positions {} and {} admitted {} apart",
            pair[0].0,
            pair[1].0,
            pair[1].1 - pair[0].1
        );
    }
    // The same seen from outside: by the moment each buyer was first seen admitted,
    // no more buyers had been admitted than the rate allows.
    for Admitted { seen, .. } in &admitted {
        let by_then = admitted.iter().filter(|a| a.slot <= *seen).count() as i64;
        let allowed =
            (*seen - starts).num_microseconds().unwrap() / interval.num_microseconds().unwrap() + 1;
        assert!(
            by_then <= allowed,
            "{by_then} admitted by {seen}, the rate allows {allowed}"
        );
    }

    // Orders: none without a token; a token read through one process works
    // through the other; a token is its buyer's alone.
    let order = |i: usize, base: usize, admission: Option<&str>, key: &str| {
        let api = api.clone();
        let base = bases[base].clone();
        let token = people.buyers[i].token.clone();
        let admission = admission.map(str::to_owned);
        let key = key.to_owned();
        let body = json!({"drop_id": drop_id, "quantity": 1});
        async move { order_with_admission(&api, &base, &token, &key, admission.as_deref(), &body).await }
    };
    let r = order(0, 0, None, "room-none").await;
    assert_eq!(
        (r.status, r.code()),
        (403, Some("admission_required")),
        "{}",
        r.body
    );
    let r = order(1, 0, Some(&admitted[0].token), "room-stolen").await;
    assert_eq!(
        (r.status, r.code()),
        (403, Some("admission_required")),
        "{}",
        r.body
    );
    for i in [0, EARLY] {
        // Buyer i's token was read through bases[i % 2]; order through the other.
        let r = order(
            i,
            (i + 1) % 2,
            Some(&admitted[i].token),
            &format!("room-{i}"),
        )
        .await;
        assert_eq!(r.status, 201, "buyer {i}: {}", r.body);
        assert_eq!(r.body["user_id"], people.buyers[i].id.as_str());
    }

    a.stop().await;
    b.stop().await;
}

/// `POST /orders` with an idempotency key and, when given, an `Admission-Token`.
async fn order_with_admission(
    api: &Api,
    base: &str,
    token: &str,
    key: &str,
    admission: Option<&str>,
    body: &serde_json::Value,
) -> Reply {
    api.call_with_headers(
        base,
        "POST",
        "/orders",
        Some(token),
        &[("idempotency-key", key)]
            .into_iter()
            .chain(admission.map(|a| ("admission-token", a)))
            .collect::<Vec<_>>(),
        Some(body),
    )
    .await
    .unwrap()
}

/// Runs `futures` concurrently, each on its own task; their outputs in order.
async fn spawn_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

#[path = "../../examples/verify_draw.rs"]
#[allow(dead_code)]
mod verify_draw;

mod harness;
