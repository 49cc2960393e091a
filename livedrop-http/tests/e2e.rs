//! End to end: the real `livedrop-http` binary on an ephemeral port.
//!
//! - `in_memory_walk` always runs, on the in-memory defaults.
//! - `real_services_walk` runs against PostgreSQL, Redis and Kafka when
//!   `LIVEDROP_TEST_DATABASE_URL`, `LIVEDROP_TEST_REDIS_URL` and
//!   `LIVEDROP_TEST_KAFKA_BROKERS` are all set (each run in a fresh schema, Redis
//!   namespace and topic prefix); unset, it prints why it skips; set but unreachable,
//!   it fails.
//!
//! The walk: register a creator and a follower, follow, create a product and a live
//! drop of 20 units, see the follower's `drop_live` notification within 2 s, race 50
//! buyers (each retrying with its key) for the 20 units, then confirm one order and
//! cancel one, and check that the drop's stock view and its event stream agree.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

#[path = "harness/sse.rs"]
mod sse;

const BIN: &str = env!("CARGO_BIN_EXE_livedrop-http");
const INTERNAL: &str = "e2e-internal-token";

/// The server process; killed when dropped.
struct ServerGuard {
    child: Child,
    base: String,
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerGuard {
    /// Starts the binary with `env` and waits for its "listening on" line.
    fn start(env: &[(&str, String)]) -> Self {
        let mut command = Command::new(BIN);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LIVEDROP_ADDR", "127.0.0.1:0")
            .env("LIVEDROP_INTERNAL_TOKEN", INTERNAL)
            .env("LIVEDROP_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if !env.iter().any(|(k, _)| *k == "LIVEDROP_DATABASE_URL") {
            // No store named: keep the run in memory, not in ./livedrop.db.
            command.env("LIVEDROP_IN_MEMORY", "1");
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("the binary starts");
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
        let mut guard = ServerGuard {
            child,
            base: String::new(),
        };
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(base) => guard.base = base,
            Err(_) => {
                let status = guard.child.try_wait().ok().flatten();
                panic!("the server did not start (exit status {status:?}); see its stderr above");
            }
        }
        guard
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends SIGTERM and expects a clean exit (graceful shutdown) within 20 s.
    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        if !sent.is_ok_and(|s| s.success()) {
            return; // no `kill` here: the guard kills it instead
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "graceful shutdown exits 0, got {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

struct Api {
    client: Client,
    server: ServerGuard,
}

impl Api {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, self.server.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body, got {text:?}"))
        };
        (status, value)
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Value {
        let (status, body) = self
            .send(reqwest::Method::GET, path, token, None, None)
            .await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, token, Some(body), None)
            .await
    }

    /// Registers and logs in; returns (user id, token).
    async fn account(&self, email: &str, role: &str) -> (String, String) {
        let (status, user) = self
            .post(
                "/users",
                None,
                json!({"email": email, "password": "e2e-password", "display_name": email, "role": role}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{user}");
        let (status, session) = self
            .post(
                "/sessions",
                None,
                json!({"email": email, "password": "e2e-password"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{session}");
        (
            user["id"].as_str().unwrap().to_owned(),
            session["token"].as_str().unwrap().to_owned(),
        )
    }

    async fn live_drop(&self, token: &str, stock: u32, limit: u32) -> Value {
        let (status, product) = self
            .post(
                "/products",
                Some(token),
                json!({"title": "E2E hoodie", "description": "race me", "price_cents": 2500, "currency": "EUR"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{product}");
        let ends = chrono::Utc::now() + chrono::Duration::hours(1);
        let (status, drop) = self
            .post(
                "/drops",
                Some(token),
                json!({"product_id": product["id"], "ends_at": ends, "total_stock": stock, "per_user_limit": limit}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{drop}");
        assert_eq!(drop["status"], "live");
        drop
    }

    /// Polls until the user has a `drop_live` notification for `drop_id`; returns
    /// how long that took, or panics after `limit`.
    async fn await_drop_live(&self, token: &str, drop_id: &str, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let page = self.get("/notifications?unread=true", Some(token)).await;
            let found = page["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["kind"] == "drop_live" && n["payload"]["drop_id"] == drop_id);
            if found {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "no drop_live notification for {drop_id} within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// A parsed SSE frame.
#[derive(Debug, Clone)]
struct Frame {
    name: String,
    data: Value,
}

/// Collects SSE frames of a drop in the background (on a client without a request
/// timeout: the stream stays open for the whole walk).
fn watch(url: String) -> tokio::sync::mpsc::UnboundedReceiver<Frame> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let client = Client::new();
    tokio::spawn(async move {
        let response = client.get(url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut stream = response.bytes_stream();
        let mut buffer = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some((name, data)) = sse::take_frame(&mut buffer) {
                if tx.send(Frame { name, data }).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

async fn walk(server: ServerGuard) {
    let api = Api {
        client: Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        server,
    };
    let run = uuid::Uuid::new_v4().simple().to_string();
    let email = |who: &str| format!("{who}-{run}@e2e.example.com");

    let health = api.get("/healthz", None).await;
    assert_eq!(health["status"], "ok");
    let ready = api.get("/readyz", None).await;
    assert_eq!(ready["status"], "ok", "{ready}");

    let (creator_id, creator) = api.account(&email("creator"), "creator").await;
    let (_, follower) = api.account(&email("follower"), "customer").await;
    let (status, _) = api
        .send(
            reqwest::Method::PUT,
            &format!("/users/{creator_id}/followers/me"),
            Some(&follower),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Warm-up: the first drop lets the consumers finish joining their groups; the
    // 2 s target is for a running server.
    let warm = api.live_drop(&creator, 1, 1).await;
    api.await_drop_live(
        &follower,
        warm["id"].as_str().unwrap(),
        Duration::from_secs(60),
    )
    .await;

    let drop = api.live_drop(&creator, 20, 1).await;
    let drop_id = drop["id"].as_str().unwrap().to_owned();
    // The contract says within 2 s; the test holds it to a generous liveness bound
    // (the notification comes at all, by itself) and prints the time. Measured
    // delivery figures are in BENCHMARKS.md.
    let took = api
        .await_drop_live(&follower, &drop_id, Duration::from_secs(20))
        .await;
    eprintln!("drop_live notification delivered in {took:?} (contract: 2 s)");

    let mut frames = watch(api.server.url(&format!("/drops/{drop_id}/events")));
    let first = frames.recv().await.unwrap();
    assert_eq!(first.name, "stock");
    assert_eq!(first.data["stock"]["available"], 20);

    // 50 buyers race for 20 units; each sends its order twice at once and once more
    // afterwards, always with the same key (a client retrying on a timeout).
    // Accounts are made a few at a time: password hashing is deliberately slow
    // (and slower still in a debug build), and the race below is what is measured.
    let buyers: Vec<(String, String)> = futures::stream::iter((0..50).map(|i| {
        let api = &api;
        let email = email(&format!("buyer{i}"));
        async move { api.account(&email, "customer").await }
    }))
    .buffered(4)
    .collect()
    .await;
    let outcomes = futures::future::join_all(buyers.iter().enumerate().map(|(i, (_, token))| {
        let api = &api;
        let key = format!("buy-{i}");
        let body = json!({"drop_id": drop_id, "quantity": 1});
        async move {
            let send = || {
                api.send(
                    reqwest::Method::POST,
                    "/orders",
                    Some(token),
                    Some(body.clone()),
                    Some(&key),
                )
            };
            let (a, b) = futures::join!(send(), send());
            let c = send().await;
            vec![a, b, c]
        }
    }))
    .await;

    let mut winners: HashMap<usize, String> = HashMap::new();
    for (i, replies) in outcomes.iter().enumerate() {
        let mut order_ids = HashSet::new();
        let mut final_code = None;
        for (status, body) in replies {
            assert!(!status.is_server_error(), "buyer {i}: {status} {body}");
            match status.as_u16() {
                201 => {
                    order_ids.insert(body["id"].as_str().unwrap().to_owned());
                    final_code = Some("placed".to_owned());
                }
                409 if body["code"] == "idempotency_key_in_flight" => {}
                409 => {
                    assert_eq!(body["code"], "out_of_stock", "buyer {i}: {body}");
                    final_code = Some("out_of_stock".to_owned());
                }
                _ => panic!("buyer {i}: unexpected {status} {body}"),
            }
        }
        assert!(
            order_ids.len() <= 1,
            "buyer {i} got two different orders: {order_ids:?}"
        );
        // The retry after the race always sees the settled first outcome.
        let last = &replies[2];
        assert_ne!(last.1["code"], "idempotency_key_in_flight", "buyer {i}");
        match final_code.as_deref() {
            Some("placed") => {
                assert!(replies.iter().all(|(s, b)| s.as_u16() != 409 || b["code"] == "idempotency_key_in_flight"), "buyer {i} saw both outcomes: {replies:?}");
                winners.insert(i, order_ids.into_iter().next().unwrap());
            }
            Some(_) => {}
            None => panic!("buyer {i} never got an outcome: {replies:?}"),
        }
    }
    assert_eq!(winners.len(), 20, "exactly 20 buyers hold a unit");

    // Each winner has exactly one order; losers none.
    for (i, (_, token)) in buyers.iter().enumerate() {
        let mine = api.get("/orders", Some(token)).await;
        let items = mine["items"].as_array().unwrap();
        match winners.get(&i) {
            Some(id) => {
                assert_eq!(items.len(), 1, "buyer {i}: {mine}");
                assert_eq!(items[0]["id"], id.as_str());
                assert_eq!(items[0]["status"], "reserved");
            }
            None => assert!(items.is_empty(), "buyer {i}: {mine}"),
        }
    }

    // Confirm one, cancel another.
    let mut won = winners.iter();
    let (&ci, confirm_id) = won.next().unwrap();
    let (&xi, cancel_id) = won.next().unwrap();
    for (buyer, id, action, outcome) in [
        (ci, confirm_id, "confirm", "confirmed"),
        (xi, cancel_id, "cancel", "cancelled"),
    ] {
        let path = format!("/orders/{id}/{action}");
        let (status, body) = api.post(&path, Some(&buyers[buyer].1), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{action}: {body}");
        assert_eq!(body["status"], outcome);
    }

    // The drop's stock view converges (displayed stock lags by at most a second).
    let expected = json!({"total": 20, "available": 1, "reserved": 18, "sold": 1});
    let view = await_view(&api, &drop_id, |view| view["stock"] == expected).await;
    assert_eq!(view["status"], "live");

    // The event stream agrees: every stock it showed is consistent, it reached zero
    // availability (and said sold_out), and it ends at the same stock.
    let mut saw_sold_out = false;
    let mut last_stock = first.data["stock"].clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while last_stock != expected {
        let frame = tokio::time::timeout_at(deadline, frames.recv())
            .await
            .unwrap_or_else(|_| panic!("SSE did not reach {expected}; last {last_stock}"))
            .unwrap();
        match frame.name.as_str() {
            "stock" => {
                let s = &frame.data["stock"];
                let sum = s["available"].as_u64().unwrap()
                    + s["reserved"].as_u64().unwrap()
                    + s["sold"].as_u64().unwrap();
                assert_eq!(
                    sum,
                    s["total"].as_u64().unwrap(),
                    "inconsistent stock event {s}"
                );
                assert!(
                    s["reserved"].as_u64().unwrap() + s["sold"].as_u64().unwrap() <= 20,
                    "oversold in {s}"
                );
                last_stock = s.clone();
            }
            "status" => {
                if frame.data["status"] == "sold_out" {
                    saw_sold_out = true;
                }
            }
            other => panic!("unexpected event {other}"),
        }
    }
    assert!(saw_sold_out, "the stream announced the sell-out");

    // The ledger shows only the initial stock: orders never touch it.
    let (status, ledger) = api
        .send(
            reqwest::Method::GET,
            &format!("/internal/inventory/{drop_id}/ledger"),
            Some(INTERNAL),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ledger}");
    assert_eq!(ledger["items"].as_array().unwrap().len(), 1);

    let metrics = api
        .client
        .get(api.server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Placed answers count replays too: one per 201 the buyers saw.
    let answered_201 = outcomes
        .iter()
        .flatten()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    assert!(answered_201 >= 20);
    assert!(
        metrics.contains(&format!("livedrop_orders_placed_total {answered_201}")),
        "{metrics}"
    );

    api.server.terminate();
}

/// The `items` of a page.
fn items(page: &Value) -> &[Value] {
    page["items"].as_array().unwrap()
}

/// Polls the drop's view until `reached` holds of it and returns that view, or panics
/// after 5 s: displayed stock lags the store by at most a second (`stock_ttl`), and
/// a loaded machine gets the rest.
async fn await_view(api: &Api, drop_id: &str, mut reached: impl FnMut(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let view = api.get(&format!("/drops/{drop_id}"), None).await;
        if reached(&view) {
            return view;
        }
        assert!(Instant::now() < deadline, "stock view stuck at {view}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until the user has a notification of `kind` about `drop_id`; returns it
/// and how long that took, or panics after `limit`.
async fn await_notification(
    api: &Api,
    token: &str,
    kind: &str,
    drop_id: &str,
    limit: Duration,
) -> (Value, Duration) {
    let started = Instant::now();
    loop {
        let page = api.get("/notifications", Some(token)).await;
        if let Some(n) = items(&page)
            .iter()
            .find(|n| n["kind"] == kind && n["payload"]["drop_id"] == drop_id)
        {
            return (n.clone(), started.elapsed());
        }
        assert!(
            started.elapsed() < limit,
            "no {kind} notification for {drop_id} within {limit:?}: {page}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A drop in two sizes, end to end: created with variants, ordered by size under
/// one per-user limit, a waitlist on the sold-out size, and a cancelled unit that
/// reaches the first waiting buyer (a reserved order and a `waitlist_offer`) within
/// 2 s without ever showing as available, on the drop or on its event stream.
async fn sized_walk(server: ServerGuard) {
    let api = Api {
        client: Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        server,
    };
    let run = uuid::Uuid::new_v4().simple().to_string();
    let email = |who: &str| format!("{who}-{run}@e2e.example.com");
    let (_, creator) = api.account(&email("creator"), "creator").await;
    let (_, holder) = api.account(&email("holder"), "customer").await;
    let (waiter_id, waiter) = api.account(&email("waiter"), "customer").await;

    let (status, product) = api
        .post(
            "/products",
            Some(&creator),
            json!({"title": "E2E sneaker", "description": "two sizes", "price_cents": 9900, "currency": "EUR"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{product}");
    let ends = chrono::Utc::now() + chrono::Duration::hours(1);
    let (status, drop) = api
        .post(
            "/drops",
            Some(&creator),
            json!({
                "product_id": product["id"],
                "ends_at": ends,
                "per_user_limit": 2,
                "variants": [
                    {"sku": "eu-42", "label": "EU 42", "total_stock": 1},
                    {"sku": "eu-43", "label": "EU 43", "total_stock": 2},
                ],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{drop}");
    let drop_id = drop["id"].as_str().unwrap().to_owned();
    assert_eq!(
        drop["stock"],
        json!({"total": 3, "available": 3, "reserved": 0, "sold": 0})
    );
    assert_eq!(drop["variants"][0]["sku"], "eu-42");
    assert_eq!(drop["variants"][0]["label"], "EU 42");
    assert_eq!(drop["variants"][1]["stock"]["total"], 2);

    let mut frames = watch(api.server.url(&format!("/drops/{drop_id}/events")));
    let first = frames.recv().await.unwrap();
    assert_eq!(first.name, "stock");
    assert_eq!(first.data["variants"][0]["sku"], "eu-42");
    assert_eq!(first.data["variants"][0]["stock"]["available"], 1);

    let order = |token: &str, sku: Option<&str>, key: &str| {
        let mut body = json!({"drop_id": drop_id, "quantity": 1});
        if let Some(sku) = sku {
            body["sku"] = json!(sku);
        }
        let (token, key) = (token.to_owned(), key.to_owned());
        let api = &api;
        async move {
            api.send(
                reqwest::Method::POST,
                "/orders",
                Some(&token),
                Some(body),
                Some(&key),
            )
            .await
        }
    };
    let (status, body) = order(&holder, None, "no-size").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["details"]["field"], "sku");
    let (status, body) = order(&holder, Some("eu-44"), "unknown-size").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, held) = order(&holder, Some("eu-42"), "h-42").await;
    assert_eq!(status, StatusCode::CREATED, "{held}");
    assert_eq!(held["sku"], "eu-42");
    let (status, body) = order(&holder, Some("eu-43"), "h-43").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = order(&holder, Some("eu-43"), "h-43b").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "per_user_limit_exceeded", "across both sizes");

    let waitlist = format!("/drops/{drop_id}/waitlist/me");
    let (status, body) = api
        .send(
            reqwest::Method::PUT,
            &waitlist,
            Some(&waiter),
            Some(json!({"sku": "eu-43", "quantity": 1})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "variant_available");
    let (status, place) = api
        .send(
            reqwest::Method::PUT,
            &waitlist,
            Some(&waiter),
            Some(json!({"sku": "eu-42", "quantity": 1})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{place}");
    assert_eq!(place["position"], 1);
    assert_eq!(api.get(&waitlist, Some(&waiter)).await, place);

    let (status, body) = api
        .post(
            &format!("/orders/{}/cancel", held["id"].as_str().unwrap()),
            Some(&holder),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The view may still show the stock from before the holder's orders (it lags by
    // at most a second); any view that counts the holder's size-43 unit shows no
    // size-42 unit on the shelf, and the view ends with the unit reserved for the
    // waiting buyer.
    await_view(&api, &drop_id, |view| {
        let small = &view["variants"][0]["stock"];
        if view["variants"][1]["stock"]["reserved"] == 1 {
            assert_eq!(
                small["available"], 0,
                "the unit went to the shelf, not to the waiting buyer: {view}"
            );
        }
        *small == json!({"total": 1, "available": 0, "reserved": 1, "sold": 0})
    })
    .await;
    let (offer, took) = await_notification(
        &api,
        &waiter,
        "waitlist_offer",
        &drop_id,
        Duration::from_secs(2),
    )
    .await;
    eprintln!("waitlist_offer delivered in {took:?} (contract: 2 s)");
    let mine = api.get("/orders", Some(&waiter)).await;
    let mine = items(&mine);
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["status"], "reserved");
    assert_eq!(mine[0]["sku"], "eu-42");
    assert_eq!(mine[0]["user_id"], waiter_id.as_str());
    assert_eq!(offer["payload"]["order_id"], mine[0]["id"]);
    let (status, _) = api
        .send(reqwest::Method::GET, &waitlist, Some(&waiter), None, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "served: no longer waiting");

    // The stream never showed size 42 available; it ends (for this walk) at the
    // drop's stock now.
    let expected = api.get(&format!("/drops/{drop_id}"), None).await["stock"].clone();
    let mut last = first.data.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while last["stock"] != expected {
        let frame = tokio::time::timeout_at(deadline, frames.recv())
            .await
            .unwrap_or_else(|_| panic!("SSE did not reach {expected}; last {last}"))
            .unwrap();
        if frame.name == "stock" {
            let small = &frame.data["variants"][0];
            assert_eq!(small["sku"], "eu-42");
            assert!(
                small["stock"]["available"] == 0 || frame.data == first.data,
                "size 42 shown available while someone waited: {}",
                frame.data
            );
            last = frame.data;
        }
    }
    api.server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_sized_walk() {
    sized_walk(ServerGuard::start(&[])).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sized_walk() {
    use livedrop_core::testing::env;
    let Some([database]) = env::service_vars([env::DATABASE_URL], "postgres_sized_walk") else {
        return;
    };
    let schema = livedrop_adapters::postgres::testing::TestSchema::on(&database).await;
    let server = ServerGuard::start(&[
        ("LIVEDROP_DATABASE_URL", database.clone()),
        ("LIVEDROP_DATABASE_SCHEMA", schema.name().to_owned()),
    ]);
    sized_walk(server).await;
    drop(schema);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_walk() {
    let server = ServerGuard::start(&[]);
    walk(server).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_services_walk() {
    use livedrop_core::testing::env;
    let Some([database, redis, kafka]) = env::service_vars(
        [env::DATABASE_URL, env::REDIS_URL, env::KAFKA_BROKERS],
        "real_services_walk",
    ) else {
        return;
    };
    let run = uuid::Uuid::new_v4().simple().to_string();
    let schema = livedrop_adapters::postgres::testing::TestSchema::on(&database).await;
    let server = ServerGuard::start(&[
        ("LIVEDROP_DATABASE_URL", database.clone()),
        ("LIVEDROP_DATABASE_SCHEMA", schema.name().to_owned()),
        ("LIVEDROP_REDIS_URL", redis),
        ("LIVEDROP_REDIS_NAMESPACE", format!("e2e-{run}")),
        ("LIVEDROP_KAFKA_BROKERS", kafka),
        ("LIVEDROP_KAFKA_TOPIC_PREFIX", format!("e2e-{run}")),
    ]);
    walk(server).await;
    drop(schema);
}

#[test]
fn a_bad_configuration_exits_non_zero_with_one_clear_line() {
    let cases: [(&[(&str, &str)], &str); 3] = [
        (&[("LIVEDROP_ADDR", "not-an-address")], "LIVEDROP_ADDR"),
        (
            &[
                (
                    "LIVEDROP_DATABASE_URL",
                    "postgres://livedrop@127.0.0.1:1/none",
                ),
                ("LIVEDROP_IN_MEMORY", "0"),
            ],
            "PostgreSQL",
        ),
        (
            &[("LIVEDROP_ADMIN_EMAIL", "admin@example.com")],
            "LIVEDROP_ADMIN_PASSWORD",
        ),
    ];
    for (env, needle) in cases {
        let output = Command::new(BIN)
            .env_clear()
            .env("LIVEDROP_ADDR", "127.0.0.1:0")
            .env("LIVEDROP_LOG", "off")
            .env("LIVEDROP_IN_MEMORY", "1")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{env:?} must fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<_> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{env:?}: one line, got {stderr:?}");
        assert!(lines[0].starts_with("livedrop-http: "), "{stderr}");
        assert!(lines[0].contains(needle), "{env:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
