//! The SQLite default checked as an operator would: the real binary on a file,
//! killed with SIGKILL in the middle of a burst of orders and started again on the
//! same file. Every order it answered 201 for is there, the stock invariant holds,
//! a replayed idempotency key answers the same order, and the holds it had taken
//! expire after the restart. A second process on the same file is refused with one
//! line. `--demo` seeds its data once per file. Needs no service: always runs.
//!
//! `cargo test -p livedrop-http --test durability`
#![cfg(all(unix, feature = "sqlite"))]
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_livedrop-http");
/// Long enough that holds taken just before the kill are still held after the
/// restart; short enough to watch them expire.
const HOLD_SECONDS: u64 = 12;

/// The server process; killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(db: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LIVEDROP_ADDR", "127.0.0.1:0")
        .env(
            "LIVEDROP_DATABASE_URL",
            format!("sqlite://{}", db.display()),
        )
        .env("LIVEDROP_TOKEN_SECRET", "durability-test-secret-0123456789")
        .env("LIVEDROP_HOLD_SECONDS", HOLD_SECONDS.to_string())
        .env("LIVEDROP_ORDER_RATE_PER_USER", "0")
        .env("LIVEDROP_LOG", "warn");
    command
}

impl Server {
    /// Starts the binary on `db` and waits for its "listening on" line.
    fn start(db: &Path) -> Self {
        let mut child = command(db)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(base) = line.strip_prefix("livedrop-http listening on ") {
                    let _ = tx.send(base.trim().to_owned());
                }
            }
        });
        let mut server = Server {
            child,
            base: String::new(),
        };
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(base) => server.base = base,
            Err(_) => {
                let status = server.child.try_wait().ok().flatten();
                panic!("the server did not start (exit status {status:?}); see its stderr above");
            }
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

async fn post(
    client: &Client,
    url: String,
    token: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let mut request = client.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(client: &Client, url: String, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Registers a user and logs in: (id, token).
async fn user(client: &Client, server: &Server, name: &str, role: &str) -> (String, String) {
    let email = format!("{name}@durability.test");
    let (status, body) = post(
        client,
        server.url("/users"),
        None,
        json!({"email": email, "password": "durable-password", "display_name": name, "role": role}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, session) = post(
        client,
        server.url("/sessions"),
        None,
        json!({"email": email, "password": "durable-password"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{session}");
    (
        body["id"].as_str().unwrap().to_owned(),
        session["token"].as_str().unwrap().to_owned(),
    )
}

/// Every order of the buyer, following the cursor.
async fn all_orders(client: &Client, server: &Server, token: &str) -> Vec<Value> {
    let mut orders = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/orders?limit=100&cursor={c}"),
            None => "/orders?limit=100".to_owned(),
        };
        let (status, page) = get(client, server.url(&path), Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        orders.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return orders,
        }
    }
}

/// An order answered 201 before the kill: who placed it, with which key and body.
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
    let client = Client::new();
    let server = Server::start(&db);

    let (_, creator) = user(&client, &server, "creator", "creator").await;
    let (status, product) = post(
        &client,
        server.url("/products"),
        Some(&creator),
        json!({"title": "Hoodie", "description": "Heavy cotton", "price_cents": 4900, "currency": "EUR"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{product}");
    let total = 300u64;
    let ends_at = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (status, drop_body) = post(
        &client,
        server.url("/drops"),
        Some(&creator),
        json!({"product_id": product["id"], "ends_at": ends_at, "total_stock": total, "per_user_limit": 100}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{drop_body}");
    let drop_id = drop_body["id"].as_str().unwrap().to_owned();
    let mut buyers = Vec::new();
    for i in 0..8 {
        buyers.push(
            user(&client, &server, &format!("buyer{i}"), "customer")
                .await
                .1,
        );
    }

    // The burst: every buyer orders one unit at a time with fresh keys; once enough
    // orders were answered, the process is killed while the others are in flight.
    let answered = Arc::new(std::sync::Mutex::new(Vec::<Answered>::new()));
    let placed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (b, token) in buyers.iter().enumerate() {
        for lane in 0..4 {
            let (client, url, token) = (client.clone(), server.url("/orders"), token.clone());
            let (answered, placed, drop_id) = (answered.clone(), placed.clone(), drop_id.clone());
            tasks.push(tokio::spawn(async move {
                for n in 0..25 {
                    let key = format!("burst-{b}-{lane}-{n}");
                    let sent = client
                        .post(&url)
                        .bearer_auth(&token)
                        .header("Idempotency-Key", &key)
                        .json(&json!({"drop_id": drop_id, "quantity": 1}))
                        .send()
                        .await;
                    // Refused connections after the kill end this lane.
                    let Ok(response) = sent else { return };
                    if response.status() != StatusCode::CREATED {
                        continue;
                    }
                    let Ok(order) = response.json::<Value>().await else {
                        return;
                    };
                    placed.fetch_add(1, Ordering::SeqCst);
                    answered.lock().unwrap().push(Answered {
                        buyer: b,
                        key,
                        order,
                    });
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
    drop(server); // SIGKILL, mid-burst
    for task in tasks {
        task.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() >= 60);

    // Another process on the same file, while one runs: refused, one line.
    let server = Server::start(&db);
    let second = command(&db).output().unwrap();
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
        let (status, stored) = get(
            &client,
            server.url(&format!("/orders/{id}")),
            Some(&buyers[a.buyer]),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "answered order {id} lost: {stored}");
        assert_eq!(stored["quantity"], a.order["quantity"]);
        assert_eq!(stored["drop_id"], a.order["drop_id"]);
    }

    // The invariant, and the orders account for the stock (including orders
    // committed whose answers the kill swallowed).
    let (status, view) = get(&client, server.url(&format!("/drops/{drop_id}")), None).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let stock = &view["stock"];
    let n = |k: &str| stock[k].as_u64().unwrap();
    assert_eq!(n("total"), total);
    assert_eq!(n("available") + n("reserved") + n("sold"), total, "{stock}");
    let mut ids = HashSet::new();
    let mut held = 0;
    for token in &buyers {
        for order in all_orders(&client, &server, token).await {
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
    assert_eq!(
        n("reserved"),
        held,
        "reserved stock matches the held orders"
    );
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
        let response = client
            .post(server.url("/orders"))
            .bearer_auth(&buyers[a.buyer])
            .header("Idempotency-Key", &a.key)
            .json(&json!({"drop_id": drop_id, "quantity": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let replayed: Value = response.json().await.unwrap();
        assert_eq!(replayed["id"], a.order["id"], "replay of {}", a.key);
    }

    // The holds expire after the restart and return their stock.
    let deadline = Instant::now() + Duration::from_secs(HOLD_SECONDS + 60);
    loop {
        let mut reserved = 0;
        for token in &buyers {
            reserved += all_orders(&client, &server, token)
                .await
                .iter()
                .filter(|o| o["status"] == "reserved")
                .count();
        }
        if reserved == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{reserved} holds never expired");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, view) = get(&client, server.url(&format!("/drops/{drop_id}")), None).await;
        let stock = &view["stock"];
        if stock["available"].as_u64() == Some(total) {
            assert_eq!(stock["reserved"], 0, "{stock}");
            break;
        }
        assert!(Instant::now() < deadline, "stock never came back: {stock}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
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
