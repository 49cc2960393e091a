//! The SQLite default checked as an operator would: the real binary on a file,
//! killed with SIGKILL in the middle of a burst of orders and started again on the
//! same file. Every order it answered 201 for is there, the stock invariant holds,
//! a replayed idempotency key answers the same order, and the holds it had taken
//! expire after the restart. A second process on the same file is refused with one
//! line. `--demo` seeds its data once per file. Needs no service: always runs.
//!
//! `cargo test -p livedrop-http --test durability`
#![cfg(all(unix, feature = "sqlite", feature = "postgres"))]
#![allow(clippy::unwrap_used)]

mod harness;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{buyer_orders, create_drop, drop_stock, wait_for, Api, Person, Server, SECRET};
use livedrop_adapters::sqlite::{SqliteOptions, SqliteStore};
use livedrop_core::model::{Role, User};
use livedrop_core::ports::UserRepository;
use livedrop_core::UserId;
use livedrop_http::auth::TokenKeys;
use serde_json::{json, Value};

/// Long enough that holds taken just before the kill are still held after the
/// restart; short enough to watch them expire.
const HOLD_SECONDS: u64 = 12;

/// The server's environment on the file `db`.
fn env(db: &Path) -> Vec<(String, String)> {
    [
        (
            "LIVEDROP_DATABASE_URL",
            format!("sqlite://{}", db.display()),
        ),
        ("LIVEDROP_TOKEN_SECRET", SECRET.to_owned()),
        ("LIVEDROP_HOLD_SECONDS", HOLD_SECONDS.to_string()),
        ("LIVEDROP_ORDER_RATE_PER_USER", "0".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A creator and `buyers` customers written straight into the file (no password
/// hashing), with tokens signed by [`SECRET`].
async fn seed(db: &Path, buyers: usize) -> (Person, Vec<Person>) {
    let store = SqliteStore::open(db, SqliteOptions::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let keys = TokenKeys::new(SECRET.as_bytes(), Duration::from_secs(3600));
    let mut people = Vec::new();
    for i in 0..=buyers {
        let role = if i == 0 {
            Role::Creator
        } else {
            Role::Customer
        };
        let user = User {
            id: UserId::new(),
            email: format!("person{i}@durability.test"),
            display_name: format!("person{i}"),
            role,
            password_hash: "not-a-hash".into(),
            created_at: chrono::Utc::now(),
        };
        store.insert_user(&user).await.unwrap();
        let (token, _) = keys.issue(&user.actor()).unwrap();
        people.push(Person {
            id: user.id.0.to_string(),
            token,
        });
    }
    store.close().await;
    let creator = people.remove(0);
    (creator, people)
}

/// An order answered 201 before the kill: who placed it, with which key.
#[derive(Debug, Clone)]
struct Answered {
    buyer: usize,
    key: String,
    order: Value,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_restarts_on_its_file_with_every_answered_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("livedrop.db");
    let (creator, buyers) = seed(&db, 8).await;
    let api = Api::new();
    let mut server = Server::start("durability", &env(&db)).await;
    let total = 300u64;
    let (drop_id, _) =
        create_drop(&api, &server.base, &creator.token, total as u32, Some(100)).await;

    // The burst: every buyer orders one unit at a time with fresh keys; once enough
    // orders were answered, the process is killed while the others are in flight.
    let answered = Arc::new(std::sync::Mutex::new(Vec::<Answered>::new()));
    let placed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (b, buyer) in buyers.iter().enumerate() {
        for lane in 0..4 {
            let (api, base, token) = (api.clone(), server.base.clone(), buyer.token.clone());
            let (answered, placed) = (answered.clone(), placed.clone());
            let body = json!({"drop_id": drop_id, "quantity": 1});
            tasks.push(tokio::spawn(async move {
                for n in 0..25 {
                    let key = format!("burst-{b}-{lane}-{n}");
                    let sent = api
                        .call(
                            &base,
                            "POST",
                            "/orders",
                            Some(&token),
                            Some(&key),
                            Some(&body),
                        )
                        .await;
                    // Refused connections after the kill end this lane.
                    let Ok(reply) = sent else { return };
                    if reply.status == 201 {
                        placed.fetch_add(1, Ordering::SeqCst);
                        let order = reply.body;
                        answered.lock().unwrap().push(Answered {
                            buyer: b,
                            key,
                            order,
                        });
                    }
                }
            }));
        }
    }
    let started = Instant::now();
    while placed.load(Ordering::SeqCst) < 60 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the burst placed only {} orders",
            placed.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill(); // SIGKILL, mid-burst
    for task in tasks {
        task.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() >= 60);

    let server = Server::start("durability-restarted", &env(&db)).await;
    let base = server.base.as_str();

    // Another process on the same file, while one runs: refused, one line.
    let second = Command::new(env!("CARGO_BIN_EXE_livedrop-http"))
        .env_clear()
        .env("LIVEDROP_ADDR", "127.0.0.1:0")
        .env("LIVEDROP_LOG", "warn")
        .envs(env(&db))
        .output()
        .unwrap();
    assert!(
        !second.status.success(),
        "a second server on the file must fail"
    );
    let stderr = String::from_utf8_lossy(&second.stderr);
    let lines: Vec<_> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, got {stderr:?}");
    assert!(lines[0].starts_with("livedrop-http: "), "{stderr}");
    assert!(lines[0].contains("already in use"), "{stderr}");

    // Every answered order is there, as answered.
    for a in &answered {
        let id = a.order["id"].as_str().unwrap();
        let path = format!("/orders/{id}");
        let stored = api
            .expect(base, "GET", &path, Some(&buyers[a.buyer].token), None, 200)
            .await;
        assert_eq!(stored["quantity"], a.order["quantity"]);
        assert_eq!(stored["drop_id"], a.order["drop_id"]);
    }

    // The invariant, and the orders account for the stock (including orders
    // committed whose answers the kill swallowed).
    let [stock_total, available, reserved, sold] = drop_stock(&api, base, &drop_id).await;
    assert_eq!(stock_total, total);
    assert_eq!(available + reserved + sold, total);
    let mut ids = HashSet::new();
    let mut held = 0;
    for buyer in &buyers {
        for order in buyer_orders(&api, base, &buyer.token, &drop_id).await {
            assert!(
                ids.insert(order["id"].as_str().unwrap().to_owned()),
                "duplicate {order}"
            );
            if order["status"] == "reserved" {
                held += order["quantity"].as_u64().unwrap();
            }
        }
    }
    assert!(ids.len() >= answered.len());
    assert!(ids.len() as u64 <= total, "oversold: {} orders", ids.len());
    assert_eq!(reserved, held, "reserved stock matches the held orders");
    assert!(
        held > 0,
        "holds taken before the kill are still held after the restart"
    );
    eprintln!(
        "{} orders answered 201 before the kill; {} found after the restart, {held} units held",
        answered.len(),
        ids.len()
    );

    // Replaying answered keys answers the same orders, taking no more stock.
    for a in answered.iter().rev().take(5) {
        let body = json!({"drop_id": drop_id, "quantity": 1});
        let token = Some(buyers[a.buyer].token.as_str());
        let replay = api
            .call(base, "POST", "/orders", token, Some(&a.key), Some(&body))
            .await
            .unwrap();
        assert_eq!(replay.status, 201, "{}", replay.body);
        assert_eq!(replay.body["id"], a.order["id"], "replay of {}", a.key);
    }

    // The holds expire after the restart and return their stock.
    let limit = Duration::from_secs(HOLD_SECONDS + 60);
    wait_for(limit, "the holds to expire", || async {
        let mut still = 0;
        for buyer in &buyers {
            let orders = buyer_orders(&api, base, &buyer.token, &drop_id).await;
            still += orders.iter().filter(|o| o["status"] == "reserved").count();
        }
        if still == 0 {
            Ok(())
        } else {
            Err(format!("{still} holds"))
        }
    })
    .await;
    wait_for(
        Duration::from_secs(30),
        "the stock to come back",
        || async {
            match drop_stock(&api, base, &drop_id).await {
                [t, a, 0, 0] if t == total && a == total => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_is_seeded_once_per_file() {
    use livedrop_http::server::{build, Settings};
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        addr: "127.0.0.1:0".into(),
        database_url: Some(format!("sqlite://{}", dir.path().join("demo.db").display())),
        demo: true,
        ..Settings::default()
    };
    let first = build(&settings).await.unwrap();
    let seeded = first.demo().cloned().unwrap();
    first.serve(async {}).await.unwrap();

    let again = build(&settings).await.unwrap();
    let reused = again.demo().cloned().unwrap();
    assert_eq!(reused.drop_id, seeded.drop_id);
    assert_eq!(reused.product_id, seeded.product_id);
    assert_eq!(reused.creator.id, seeded.creator.id);
    again.serve(async {}).await.unwrap();
}
