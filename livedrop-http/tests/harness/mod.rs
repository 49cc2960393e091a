//! Shared by the process-level tests: services from the environment, the server
//! binary as a child process, a small HTTP client with retries, and the checks.

#![allow(dead_code)]

pub mod sse;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use livedrop_adapters::postgres::testing::TestSchema;
use livedrop_adapters::postgres::PgStore;
use livedrop_core::model::{Role, User};
use livedrop_core::ports::UserRepository;
use livedrop_core::UserId;
use livedrop_http::auth::TokenKeys;
use serde_json::{json, Value};

/// The bearer-token secret every spawned process shares.
pub const SECRET: &str = "process-tests-token-secret-0123456789";

/// The services the process tests run against.
#[derive(Debug, Clone)]
pub struct Services {
    pub db: String,
    pub redis: String,
    pub kafka: String,
}

impl Services {
    /// From `LIVEDROP_TEST_*`; `None` (after saying why) when any is unset.
    pub fn from_env(test: &str) -> Option<Self> {
        use livedrop_core::testing::env;
        let [db, redis, kafka] = env::service_vars(
            [env::DATABASE_URL, env::REDIS_URL, env::KAFKA_BROKERS],
            test,
        )?;
        Some(Self { db, redis, kafka })
    }

    /// Fails the test unless every service accepts a TCP connection.
    pub async fn assert_reachable(&self) {
        assert_tcp("PostgreSQL", &host_port(&self.db, 5432)).await;
        assert_tcp("Redis", &host_port(&self.redis, 6379)).await;
        for broker in self.kafka.split(',') {
            assert_tcp("Kafka", broker.trim()).await;
        }
    }
}

/// `host:port` of a service URL.
pub fn host_port(url: &str, default_port: u16) -> String {
    let parsed = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("{url:?}: {e}"));
    format!(
        "{}:{}",
        parsed.host_str().unwrap_or("127.0.0.1"),
        parsed.port().unwrap_or(default_port)
    )
}

/// Panics unless `addr` accepts a TCP connection within 3 s.
pub async fn assert_tcp(what: &str, addr: &str) {
    match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("{what} at {addr} is configured but unreachable: {e}"),
        Err(_) => panic!("{what} at {addr} is configured but did not answer within 3 s"),
    }
}

/// Whether `addr` accepts a TCP connection within 1 s.
pub async fn tcp_open(addr: &str) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `url` with `application_name` set, so the server's backends can be found.
pub fn with_application_name(url: &str, name: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name={name}")
}

/// The environment of a server on `schema` (also its Redis namespace and topic
/// prefix), its PostgreSQL backends named `app`, plus `extra`.
pub fn server_env(
    s: &Services,
    schema: &str,
    app: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("LIVEDROP_DATABASE_URL", with_application_name(&s.db, app)),
        ("LIVEDROP_DATABASE_SCHEMA", schema.to_owned()),
        ("LIVEDROP_DATABASE_MAX_CONNECTIONS", "8".to_owned()),
        ("LIVEDROP_REDIS_URL", s.redis.clone()),
        ("LIVEDROP_REDIS_NAMESPACE", schema.to_owned()),
        ("LIVEDROP_KAFKA_BROKERS", s.kafka.clone()),
        ("LIVEDROP_KAFKA_TOPIC_PREFIX", schema.to_owned()),
        ("LIVEDROP_TOKEN_SECRET", SECRET.to_owned()),
        ("LIVEDROP_ORDER_RATE_PER_USER", "0".to_owned()),
        ("LIVEDROP_REQUEST_TIMEOUT_SECONDS", "10".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in extra {
        env.retain(|(name, _)| name != k);
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    env
}

/// A running `livedrop-http` process; killed when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    pub name: String,
    log: PathBuf,
}

impl Server {
    /// Starts the binary with `env` on a free port and waits (≤ 90 s) until
    /// `/readyz` answers 200.
    pub async fn start(name: &str, env: &[(String, String)]) -> Server {
        Self::start_expecting(name, env, true).await
    }

    /// Starts the binary; with `ready`, waits for `/readyz` 200, otherwise only
    /// for `/healthz`.
    pub async fn start_expecting(name: &str, env: &[(String, String)], ready: bool) -> Server {
        let port = free_port();
        let log = std::env::temp_dir().join(format!(
            "livedrop-test-{name}-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_livedrop-http"));
        for (k, _) in std::env::vars() {
            if k.starts_with("LIVEDROP_") && !k.starts_with("LIVEDROP_TEST_") {
                command.env_remove(k);
            }
        }
        command
            .env("LIVEDROP_ADDR", format!("127.0.0.1:{port}"))
            .env("LIVEDROP_LOG", "warn,livedrop_http=info")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        let child = command.spawn().unwrap();
        let mut server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            name: name.to_owned(),
            log,
        };
        let path = if ready { "/readyz" } else { "/healthz" };
        let api = Api::new();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "server {name} exited during start ({status}):\n{}",
                    server.log_tail()
                );
            }
            if let Ok(r) = api.call(&server.base, "GET", path, None, None, None).await {
                if r.status == 200 {
                    return server;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "server {name} not ready within 90 s:\n{}",
                server.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (≤ 20 s) for a clean exit; SIGKILL after that.
    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("server {} ignored SIGTERM for 20 s; killing it", self.name);
        self.kill();
    }

    /// The last lines of the process's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A user and its bearer token.
#[derive(Debug, Clone)]
pub struct Person {
    pub id: String,
    pub token: String,
}

/// A creator and buyers.
#[derive(Debug, Clone)]
pub struct People {
    pub creator: Person,
    pub buyers: Vec<Person>,
}

/// Migrates `schema` and inserts a creator and `buyers` customers straight into
/// the store (no password hashing: the set-up takes milliseconds), with
/// tokens signed by [`SECRET`]. The schema's name is also the servers' Redis
/// namespace and topic prefix ([`server_env`]).
pub async fn seed_people(schema: &TestSchema, buyers: usize) -> People {
    let store = schema.store().await;
    let schema = schema.name();
    let keys = TokenKeys::new(SECRET.as_bytes(), Duration::from_secs(3600));
    let creator = person(&store, &keys, schema, Role::Creator, "creator".into()).await;
    let mut list = Vec::new();
    for i in 0..buyers {
        list.push(person(&store, &keys, schema, Role::Customer, format!("buyer{i}")).await);
    }
    store.close().await;
    People {
        creator,
        buyers: list,
    }
}

/// Every buyer follows the creator, through `bases` in turn.
pub async fn follow_creator(api: &Api, bases: &[String], people: &People) {
    for (i, buyer) in people.buyers.iter().enumerate() {
        let r = api
            .call(
                &bases[i % bases.len()],
                "PUT",
                &format!("/users/{}/followers/me", people.creator.id),
                Some(&buyer.token),
                None,
                None,
            )
            .await
            .unwrap();
        assert_eq!(r.status, 204, "{}", r.body);
    }
}

async fn person(
    store: &PgStore,
    keys: &TokenKeys,
    schema: &str,
    role: Role,
    name: String,
) -> Person {
    let user = User {
        id: UserId::new(),
        email: format!("{name}@{schema}.test"),
        display_name: name,
        role,
        password_hash: "not-a-hash".into(),
        created_at: chrono::Utc::now(),
    };
    store.insert_user(&user).await.unwrap();
    let (token, _) = keys.issue(&user.actor()).unwrap();
    Person {
        id: user.id.0.to_string(),
        token,
    }
}

/// Runs one SQL statement with `psql`; its output.
pub fn psql(s: &Services, sql: &str) -> String {
    let out = Command::new("psql")
        .arg(&s.db)
        .args(["-X", "-q", "-t", "-A", "-c", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<u64>,
}

impl Reply {
    /// The error code, if any.
    pub fn code(&self) -> Option<&str> {
        self.body.get("code").and_then(Value::as_str)
    }
}

/// A small JSON client (10 s timeout per request).
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
}

impl Default for Api {
    fn default() -> Self {
        Self::new()
    }
}

impl Api {
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    pub async fn call(
        &self,
        base: &str,
        method: &str,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Reply, reqwest::Error> {
        let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
        self.call_with_headers(base, method, path, token, &headers, body)
            .await
    }

    /// A call with extra request `headers`.
    pub async fn call_with_headers(
        &self,
        base: &str,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Reply, reqwest::Error> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{base}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Reply {
            status,
            body,
            retry_after,
        })
    }

    /// A call that must succeed with `status`.
    pub async fn expect(
        &self,
        base: &str,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        status: u16,
    ) -> Value {
        let r = self
            .call(base, method, path, token, None, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {base}{path}: {e}"));
        assert_eq!(r.status, status, "{method} {base}{path}: {}", r.body);
        r.body
    }
}

/// A product and a drop live now with `stock` units; returns the drop and
/// product ids.
pub async fn create_drop(
    api: &Api,
    base: &str,
    token: &str,
    stock: u32,
    per_user_limit: Option<u32>,
) -> (String, String) {
    let product = api
        .expect(
            base,
            "POST",
            "/products",
            Some(token),
            Some(&json!({"title": "Hoodie", "description": "Heavy cotton", "price_cents": 4900, "currency": "EUR"})),
            201,
        )
        .await;
    let mut body = json!({
        "product_id": product["id"],
        "ends_at": chrono::Utc::now() + chrono::Duration::hours(1),
        "total_stock": stock,
    });
    if let Some(limit) = per_user_limit {
        body["per_user_limit"] = json!(limit);
    }
    let drop = api
        .expect(base, "POST", "/drops", Some(token), Some(&body), 201)
        .await;
    (
        drop["id"].as_str().unwrap().to_owned(),
        product["id"].as_str().unwrap().to_owned(),
    )
}

/// How one order (with its retries) ended.
#[derive(Debug, Clone)]
pub struct Placed {
    /// The last status (0 = no answer).
    pub status: u16,
    pub code: Option<String>,
    pub order_id: Option<String>,
    pub attempts: u32,
    /// Every answer: status (0 = transport error) and code.
    pub seen: Vec<(u16, Option<String>)>,
}

impl Placed {
    pub fn label(&self) -> String {
        match &self.code {
            Some(c) => format!("{} {c}", self.status),
            None => self.status.to_string(),
        }
    }
}

/// `POST /orders` with `key`, starting at `bases[first]` and rotating across
/// `bases`; retries with the same key on transport errors, 5xx, 429 and
/// `idempotency_key_in_flight` (≤ 12 attempts, and not past `deadline`).
pub async fn place(
    api: &Api,
    bases: &[String],
    first: usize,
    token: &str,
    key: &str,
    body: &Value,
    deadline: Instant,
) -> Placed {
    let mut placed = Placed {
        status: 0,
        code: None,
        order_id: None,
        attempts: 0,
        seen: Vec::new(),
    };
    loop {
        let base = &bases[(first + placed.attempts as usize) % bases.len()];
        placed.attempts += 1;
        let result = api
            .call(base, "POST", "/orders", Some(token), Some(key), Some(body))
            .await;
        let wait = match &result {
            Err(_) => {
                placed.status = 0;
                placed.code = Some("transport_error".into());
                Some(Duration::from_millis(100))
            }
            Ok(r) => {
                placed.status = r.status;
                placed.code = r.code().map(str::to_owned);
                if r.status == 201 {
                    let id = r.body["id"].as_str().unwrap().to_owned();
                    if let Some(previous) = &placed.order_id {
                        assert_eq!(previous, &id, "key {key}: a retry got another order");
                    }
                    placed.order_id = Some(id);
                }
                if r.status >= 500 || r.code() == Some("idempotency_key_in_flight") {
                    Some(Duration::from_millis(50 * u64::from(placed.attempts)))
                } else if r.status == 429 {
                    Some(Duration::from_secs(r.retry_after.unwrap_or(1).min(2)))
                } else {
                    None
                }
            }
        };
        placed.seen.push((placed.status, placed.code.clone()));
        match wait {
            Some(wait) if placed.attempts < 12 && Instant::now() + wait < deadline => {
                tokio::time::sleep(wait).await;
            }
            _ => return placed,
        }
    }
}

/// `[total, available, reserved, sold]` of a drop.
pub async fn drop_stock(api: &Api, base: &str, drop: &str) -> [u64; 4] {
    let view = api
        .expect(base, "GET", &format!("/drops/{drop}"), None, None, 200)
        .await;
    let s = &view["stock"];
    let get = |f: &str| s[f].as_u64().unwrap();
    [get("total"), get("available"), get("reserved"), get("sold")]
}

/// A buyer's orders for `drop` (all pages, ≤ 100).
pub async fn buyer_orders(api: &Api, base: &str, token: &str, drop: &str) -> Vec<Value> {
    let mut orders = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let path = match &cursor {
            None => "/orders?limit=100".to_owned(),
            Some(c) => format!("/orders?limit=100&cursor={c}"),
        };
        let page = api.expect(base, "GET", &path, Some(token), None, 200).await;
        for o in page["items"].as_array().unwrap() {
            if o["drop_id"].as_str() == Some(drop) {
                orders.push(o.clone());
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return orders,
        }
    }
    panic!("more than 100 pages of orders")
}

/// Retries `check` every 250 ms until it returns `Ok` or `limit` passes; then
/// fails with its last complaint. `limit` is a liveness bound (the state comes
/// about at all, by itself), never a speed claim: callers pass generous ones.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => {
                assert!(
                    started.elapsed() < limit,
                    "waited {limit:?} for {what}; last: {last}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Checks (waiting ≤ 15 s for displayed stock to settle) that the units the
/// buyers hold equal the drop's `reserved + sold`, that no buyer holds an order
/// not announced to it (`known`: the ids its 201s carried, by buyer index) nor
/// the same order twice, and that nothing is oversold.
pub async fn assert_stock_matches_orders(
    api: &Api,
    base: &str,
    drop: &str,
    buyers: &[Person],
    known: &HashMap<usize, HashSet<String>>,
) -> [u64; 4] {
    wait_for(
        Duration::from_secs(15),
        "stock to equal the orders",
        || async {
            let mut held = 0;
            for (i, buyer) in buyers.iter().enumerate() {
                let orders = buyer_orders(api, base, &buyer.token, drop).await;
                let mut ids = HashSet::new();
                for o in &orders {
                    let id = o["id"].as_str().unwrap().to_owned();
                    assert!(ids.insert(id.clone()), "buyer {i}: order {id} listed twice");
                    if matches!(o["status"].as_str(), Some("reserved" | "confirmed")) {
                        held += o["quantity"].as_u64().unwrap();
                    }
                }
                let announced = known.get(&i).cloned().unwrap_or_default();
                assert_eq!(
                    ids, announced,
                    "buyer {i}: the orders it holds differ from the orders it was answered"
                );
            }
            let stock = drop_stock(api, base, drop).await;
            let [total, available, reserved, sold] = stock;
            assert_eq!(available + reserved + sold, total, "stock {stock:?}");
            // Oversell seen from the orders' side: the units buyers hold never pass
            // the drop's total, whatever the stock row says.
            assert!(held <= total, "oversold: buyers hold {held} of {stock:?}");
            if held == reserved + sold {
                Ok(stock)
            } else {
                Err(format!("buyers hold {held} units, stock {stock:?}"))
            }
        },
    )
    .await
}

/// Waits (≤ 45 s) until buyer `i` holds exactly `expected(i)` notifications of
/// `kind` about `drop`; fails on more.
pub async fn assert_notifications(
    api: &Api,
    base: &str,
    drop: &str,
    buyers: &[Person],
    kind: &str,
    expected: impl Fn(usize) -> usize,
) {
    wait_for(
        Duration::from_secs(45),
        &format!("{kind} notifications"),
        || async {
            for (i, buyer) in buyers.iter().enumerate() {
                let page = api
                    .expect(
                        base,
                        "GET",
                        "/notifications?limit=100",
                        Some(&buyer.token),
                        None,
                        200,
                    )
                    .await;
                let count = page["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|n| n["kind"] == kind && n["payload"]["drop_id"].as_str() == Some(drop))
                    .count();
                assert!(
                    count <= expected(i),
                    "buyer {i} got {count} {kind} notifications, expected {}",
                    expected(i)
                );
                if count != expected(i) {
                    return Err(format!(
                        "buyer {i} has {count} {kind}, expects {}",
                        expected(i)
                    ));
                }
            }
            Ok(())
        },
    )
    .await
}

/// Waits (≤ `limit`) until a process's outbox backlog gauge reads 0: every event
/// its relay holds is published.
pub async fn wait_for_outbox_drained(api: &Api, base: &str, limit: Duration) {
    wait_for(limit, "the outbox to drain", || async {
        let backlog = metric(api, base, "livedrop_outbox_backlog").await;
        (backlog == Some(0.0))
            .then_some(())
            .ok_or(format!("backlog {backlog:?}"))
    })
    .await;
}

/// The sum of a metric's samples in a process's `/metrics`.
pub async fn metric(api: &Api, base: &str, name: &str) -> Option<f64> {
    let r = api
        .call(base, "GET", "/metrics", None, None, None)
        .await
        .ok()?;
    let text = r.body.as_str()?.to_owned();
    let mut sum = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        sum = Some(sum.unwrap_or(0.0) + value);
    }
    sum
}
