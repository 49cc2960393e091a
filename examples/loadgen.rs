// Run: cargo run --release --example loadgen -- --help
//
//! A load generator for the reference HTTP server (`livedrop-http`).
//!
//! Order mode (the default) registers buyers and a creator, schedules a hot live drop
//! (or targets an existing one with `--drop`), fires `POST /orders` at a chosen
//! concurrency until `--requests` or `--duration` runs out, retries with the same
//! `Idempotency-Key` on timeouts, 5xx, `409 idempotency_key_in_flight` and `429`
//! (honouring `Retry-After`), then checks through the API that nothing was oversold
//! and that no buyer holds two orders for one key. Read mode (`--mode read`) hammers
//! `GET /drops/{id}` and `GET /products/{id}` (and listings with `--listings`).
//!
//! Several `--target`s share the load round-robin per request; the servers must
//! share their store and their `LIVEDROP_TOKEN_SECRET`. Only loopback addresses are
//! accepted. Exits non-zero when an invariant check fails. Its own unit tests run
//! with `cargo test --example loadgen`.
//!
//! ```text
//! cargo run --release -p livedrop-http &        # LIVEDROP_ORDER_RATE_PER_USER=0 for raw speed
//! cargo run --release --example loadgen -- --concurrency 64 --requests 20000 --stock 5000
//! cargo run --release --example loadgen -- --mode read --duration 10
//! cargo run --release --example loadgen -- --rate 1500 --duration 10   # paced spike
//! ```

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};
use uuid::Uuid;

/// What the workers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// `POST /orders` on one hot drop, then invariant checks.
    Order,
    /// `GET /drops/{id}` and `GET /products/{id}` (plus listings with `--listings`).
    Read,
}

/// Load generator for the livedrop reference server.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "loadgen",
    about = "Drives livedrop-http over HTTP and checks its invariants"
)]
struct Args {
    /// Server base address; repeat for several processes (round-robin per request).
    #[arg(
        long = "target",
        env = "LOADGEN_TARGETS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080"
    )]
    targets: Vec<String>,
    /// `order` or `read`.
    #[arg(long, value_enum, default_value_t = Mode::Order)]
    mode: Mode,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Most logical operations (an order with its retries counts once).
    #[arg(long, default_value_t = 10_000)]
    requests: u64,
    /// Most seconds of load.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Paces operations to this many per second (open loop); 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Buyers to register (orders go round-robin across them).
    #[arg(long, default_value_t = 100)]
    buyers: usize,
    /// Stock of the drop created for the run.
    #[arg(long, default_value_t = 1_000)]
    stock: u32,
    /// Per-user limit of the drop created for the run (default: the whole stock).
    #[arg(long)]
    per_user_limit: Option<u32>,
    /// Units per order.
    #[arg(long, default_value_t = 1)]
    quantity: u32,
    /// Target this existing drop instead of creating one (order and read modes).
    #[arg(long)]
    drop: Option<Uuid>,
    /// Product read in read mode with `--drop` (default: the drop's product).
    #[arg(long)]
    product: Option<Uuid>,
    /// Read mode: also `GET /drops?status=live`, `GET /products?creator_id=` and a search.
    #[arg(long)]
    listings: bool,
    /// Buyers follow the creator before the drop goes live, and the final check waits
    /// until each holds exactly one `drop_live` notification for it.
    #[arg(long)]
    check_notifications: bool,
    /// Seconds the final checks may wait for displayed stock and notifications to settle.
    #[arg(long, default_value_t = 15.0)]
    settle_seconds: f64,
    /// Per-request timeout in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    timeout_ms: u64,
    /// Retries of one order after the first attempt.
    #[arg(long, default_value_t = 5)]
    max_retries: u32,
    /// Concurrency of the set-up (registration hashes passwords: keep it small).
    #[arg(long, default_value_t = 8)]
    setup_concurrency: usize,
    /// Prints the summary as one JSON object too.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Accepts only loopback targets: the generator is for one's own machine.
fn loopback_targets(raw: &[String]) -> anyhow::Result<Vec<Url>> {
    if raw.is_empty() {
        bail!("at least one --target is needed");
    }
    raw.iter()
        .map(|t| {
            let url = Url::parse(t.trim()).with_context(|| format!("{t:?} is not a URL"))?;
            if url.scheme() != "http" {
                bail!("{t}: only http:// targets are supported");
            }
            let host = url.host_str().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host == "localhost"
                || host
                    .parse::<IpAddr>()
                    .map(|ip| ip.is_loopback())
                    .unwrap_or(false);
            if !loopback {
                bail!("{t}: only loopback targets (127.0.0.0/8, ::1, localhost) are allowed");
            }
            Ok(url)
        })
        .collect()
}

/// The servers, picked round-robin per request.
struct Targets {
    urls: Vec<Url>,
    next: AtomicU64,
    client: reqwest::Client,
}

/// One answered request.
struct Reply {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Value,
}

impl Reply {
    fn code(&self) -> Option<&str> {
        self.body.get("code").and_then(Value::as_str)
    }
}

impl Targets {
    fn pick(&self) -> &Url {
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize;
        &self.urls[i % self.urls.len()]
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Reply, reqwest::Error> {
        let base = self.pick();
        let url = format!("{}{}", base.as_str().trim_end_matches('/'), path);
        let mut request = self.client.request(method, url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response.bytes().await?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Ok(Reply {
            status,
            retry_after,
            body,
        })
    }

    /// A set-up call that must answer `expect`.
    async fn expect(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        expect: StatusCode,
    ) -> anyhow::Result<Value> {
        let reply = self
            .send(method.clone(), path, token, None, body)
            .await
            .with_context(|| format!("{method} {path}"))?;
        if reply.status != expect {
            bail!(
                "{method} {path}: expected {expect}, got {} {}",
                reply.status,
                reply.body
            );
        }
        Ok(reply.body)
    }
}

/// A registered user and its bearer token.
#[derive(Debug, Clone)]
struct Account {
    id: String,
    token: String,
}

async fn account(targets: &Targets, run: &str, name: &str, role: &str) -> anyhow::Result<Account> {
    let email = format!("loadgen-{run}-{name}@loadgen.test");
    let password = "loadgen-password";
    let body = json!({"email": email, "password": password, "display_name": name, "role": role});
    targets
        .expect(
            Method::POST,
            "/users",
            None,
            Some(&body),
            StatusCode::CREATED,
        )
        .await?;
    let session = targets
        .expect(
            Method::POST,
            "/sessions",
            None,
            Some(&json!({"email": email, "password": password})),
            StatusCode::OK,
        )
        .await?;
    let token = text(&session["token"], || format!("no token in {session}"))?;
    let id = text(&session["user"]["id"], || {
        format!("no user id in {session}")
    })?;
    Ok(Account {
        id: id.to_owned(),
        token: token.to_owned(),
    })
}

/// What the run works on.
struct Scene {
    buyers: Vec<Account>,
    creator: Option<Account>,
    drop_id: String,
    product_id: String,
    /// The drop was created by this run: the buyers' orders are all its orders.
    fresh: bool,
}

async fn set_up(args: &Args, targets: &Targets) -> anyhow::Result<Scene> {
    use futures::StreamExt;
    let run = Uuid::new_v4().simple().to_string()[..12].to_owned();
    let needs_buyers = args.mode == Mode::Order;
    let buyers = if needs_buyers {
        let buyers: Vec<anyhow::Result<Account>> = futures::stream::iter(0..args.buyers)
            .map(|i| {
                let run = run.clone();
                async move { account(targets, &run, &format!("buyer-{i}"), "customer").await }
            })
            .buffered(args.setup_concurrency.max(1))
            .collect()
            .await;
        buyers.into_iter().collect::<anyhow::Result<Vec<_>>>()?
    } else {
        Vec::new()
    };

    if let Some(drop) = args.drop {
        let view = targets
            .expect(
                Method::GET,
                &format!("/drops/{drop}"),
                None,
                None,
                StatusCode::OK,
            )
            .await?;
        let product = match args.product {
            Some(p) => p.to_string(),
            None => view["product_id"].as_str().unwrap_or_default().to_owned(),
        };
        return Ok(Scene {
            buyers,
            creator: None,
            drop_id: drop.to_string(),
            product_id: product,
            fresh: false,
        });
    }

    let creator = account(targets, &run, "creator", "creator").await?;
    if args.check_notifications {
        for buyer in &buyers {
            targets
                .expect(
                    Method::PUT,
                    &format!("/users/{}/followers/me", creator.id),
                    Some(&buyer.token),
                    None,
                    StatusCode::NO_CONTENT,
                )
                .await?;
        }
    }
    let product = targets
        .expect(
            Method::POST,
            "/products",
            Some(&creator.token),
            Some(&json!({
                "title": format!("Loadgen hoodie {run}"),
                "description": "Heavyweight cotton, limited run",
                "price_cents": 4900,
                "currency": "EUR",
                "image_url": "https://cdn.example.com/loadgen.jpg",
            })),
            StatusCode::CREATED,
        )
        .await?;
    let product_id = text(&product["id"], || "no product id".into())?.to_owned();
    let mut drop = json!({
        "product_id": product_id,
        "ends_at": chrono::Utc::now() + chrono::Duration::hours(2),
        "total_stock": args.stock,
    });
    if let Some(limit) = args.per_user_limit {
        drop["per_user_limit"] = json!(limit);
    }
    let drop = targets
        .expect(
            Method::POST,
            "/drops",
            Some(&creator.token),
            Some(&drop),
            StatusCode::CREATED,
        )
        .await?;
    let drop_id = text(&drop["id"], || "no drop id".into())?.to_owned();
    Ok(Scene {
        buyers,
        creator: Some(creator),
        drop_id,
        product_id,
        fresh: true,
    })
}

/// What one logical order ended as.
#[derive(Debug, Clone)]
struct KeyRecord {
    buyer: usize,
    /// The order id every 201 for this key carried (a second, different id is a
    /// duplicate and is recorded in `conflicting`).
    order: Option<String>,
    conflicting: Option<String>,
    /// Retries ran out or time did while the outcome was unknown: an order may exist.
    unknown: bool,
}

/// Counters and histograms of one worker, merged at the end.
struct Stats {
    requests: u64,
    ops: u64,
    request_us: Histogram<u64>,
    op_us: Histogram<u64>,
    by_status: BTreeMap<String, u64>,
    final_outcome: BTreeMap<String, u64>,
    keys: Vec<KeyRecord>,
}

impl Stats {
    fn new() -> Self {
        let h = || Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds");
        Self {
            requests: 0,
            ops: 0,
            request_us: h(),
            op_us: h(),
            by_status: BTreeMap::new(),
            final_outcome: BTreeMap::new(),
            keys: Vec::new(),
        }
    }

    fn merge(&mut self, other: Stats) {
        self.requests += other.requests;
        self.ops += other.ops;
        self.request_us.add(&other.request_us).expect("same bounds");
        self.op_us.add(&other.op_us).expect("same bounds");
        for (k, v) in other.by_status {
            *self.by_status.entry(k).or_default() += v;
        }
        for (k, v) in other.final_outcome {
            *self.final_outcome.entry(k).or_default() += v;
        }
        self.keys.extend(other.keys);
    }
}

fn label(result: &Result<Reply, reqwest::Error>) -> String {
    match result {
        Ok(r) => match r.code() {
            Some(code) if !r.status.is_success() => format!("{} {code}", r.status.as_u16()),
            _ => r.status.as_u16().to_string(),
        },
        Err(e) if e.is_timeout() => "timeout".into(),
        Err(e) if e.is_connect() => "connect_error".into(),
        Err(_) => "transport_error".into(),
    }
}

/// Whether an order attempt may be retried with the same key, and after how long.
fn retry_delay(result: &Result<Reply, reqwest::Error>, attempt: u32) -> Option<Duration> {
    let backoff =
        Duration::from_millis(20 * u64::from(attempt + 1).pow(2)).min(Duration::from_secs(1));
    match result {
        Err(_) => Some(backoff),
        Ok(r) if r.status.is_server_error() => Some(backoff),
        Ok(r) if r.status == StatusCode::TOO_MANY_REQUESTS => {
            Some(r.retry_after.unwrap_or(Duration::from_secs(1)))
        }
        Ok(r)
            if r.status == StatusCode::CONFLICT
                && r.code() == Some("idempotency_key_in_flight") =>
        {
            Some(backoff)
        }
        Ok(_) => None,
    }
}

/// Shared run state: the ticket dispenser and the bounds.
struct Run {
    args: Args,
    targets: Targets,
    scene: Scene,
    tickets: AtomicU64,
    started: Instant,
    deadline: Instant,
    progress: ProgressBar,
}

impl Run {
    /// The next operation's index, or `None` when count or time has run out; with
    /// `--rate`, waits for its slot.
    async fn ticket(&self) -> Option<u64> {
        let n = self.tickets.fetch_add(1, Ordering::Relaxed);
        if n >= self.args.requests || Instant::now() >= self.deadline {
            return None;
        }
        if self.args.rate > 0.0 {
            let at = self.started + Duration::from_secs_f64(n as f64 / self.args.rate);
            if at >= self.deadline {
                return None;
            }
            tokio::time::sleep_until(at.into()).await;
        }
        Some(n)
    }
}

fn elapsed_us(since: Instant) -> u64 {
    (since.elapsed().as_micros() as u64).max(1)
}

async fn order_worker(run: Arc<Run>) -> Stats {
    let mut stats = Stats::new();
    let body = json!({"drop_id": run.scene.drop_id, "quantity": run.args.quantity});
    while let Some(n) = run.ticket().await {
        let buyer = (n % run.scene.buyers.len() as u64) as usize;
        let token = run.scene.buyers[buyer].token.clone();
        let key = Uuid::new_v4().to_string();
        let op_start = Instant::now();
        let mut record = KeyRecord {
            buyer,
            order: None,
            conflicting: None,
            unknown: false,
        };
        let mut attempt = 0;
        let outcome = loop {
            let started = Instant::now();
            let result = run
                .targets
                .send(
                    Method::POST,
                    "/orders",
                    Some(&token),
                    Some(&key),
                    Some(&body),
                )
                .await;
            stats.requests += 1;
            stats.request_us.saturating_record(elapsed_us(started));
            let tag = label(&result);
            *stats.by_status.entry(tag.clone()).or_default() += 1;
            if let Ok(reply) = &result {
                if reply.status == StatusCode::CREATED {
                    let id = reply.body["id"].as_str().unwrap_or_default().to_owned();
                    match &record.order {
                        Some(first) if *first != id => record.conflicting = Some(id),
                        Some(_) => {}
                        None => record.order = Some(id),
                    }
                }
            }
            let Some(delay) = retry_delay(&result, attempt) else {
                break tag;
            };
            // Only a transport failure or a 5xx leaves the outcome unknown; a 429 and
            // an in-flight answer say nothing about whether the first attempt stuck.
            record.unknown = record.unknown
                || result.is_err()
                || result
                    .as_ref()
                    .map(|r| r.status.is_server_error())
                    .unwrap_or(false)
                || result
                    .as_ref()
                    .map(|r| r.code() == Some("idempotency_key_in_flight"))
                    .unwrap_or(false);
            attempt += 1;
            if attempt > run.args.max_retries
                || Instant::now() + delay >= run.deadline + Duration::from_secs(5)
            {
                break format!("gave_up after {tag}");
            }
            tokio::time::sleep(delay).await;
        };
        if outcome == "201" {
            record.unknown = false;
        }
        stats.ops += 1;
        stats.op_us.saturating_record(elapsed_us(op_start));
        *stats.final_outcome.entry(outcome).or_default() += 1;
        stats.keys.push(record);
        run.progress.inc(1);
    }
    stats
}

async fn read_worker(run: Arc<Run>) -> Stats {
    let mut stats = Stats::new();
    let scene = &run.scene;
    let mut paths = vec![
        format!("/drops/{}", scene.drop_id),
        format!("/products/{}", scene.product_id),
    ];
    if run.args.listings {
        paths.push("/drops?status=live&limit=20".into());
        if let Some(creator) = &scene.creator {
            paths.push(format!("/products?creator_id={}&limit=20", creator.id));
        }
        paths.push("/products?q=hoodie&limit=20".into());
    }
    while let Some(n) = run.ticket().await {
        let path = &paths[(n % paths.len() as u64) as usize];
        let started = Instant::now();
        let result = run.targets.send(Method::GET, path, None, None, None).await;
        let us = elapsed_us(started);
        stats.requests += 1;
        stats.ops += 1;
        stats.request_us.saturating_record(us);
        stats.op_us.saturating_record(us);
        let tag = label(&result);
        *stats.by_status.entry(tag.clone()).or_default() += 1;
        *stats.final_outcome.entry(tag).or_default() += 1;
        run.progress.inc(1);
    }
    stats
}

/// One buyer's orders for the drop, from `GET /orders` (every page, bounded).
async fn buyer_orders(
    targets: &Targets,
    buyer: &Account,
    drop: &str,
) -> anyhow::Result<Vec<Value>> {
    let mut orders = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1_000 {
        let path = match &cursor {
            None => "/orders?limit=100".to_owned(),
            Some(c) => format!("/orders?limit=100&cursor={c}"),
        };
        let page = targets
            .expect(Method::GET, &path, Some(&buyer.token), None, StatusCode::OK)
            .await?;
        for item in page["items"].as_array().cloned().unwrap_or_default() {
            if item["drop_id"].as_str() == Some(drop) {
                orders.push(item);
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok(orders),
        }
    }
    bail!("more than 1,000 pages of orders for one buyer")
}

/// A string field of a reply, or the error `missing` describes.
fn text(field: &Value, missing: impl FnOnce() -> String) -> anyhow::Result<&str> {
    field.as_str().ok_or_else(|| anyhow!(missing()))
}

/// `[total, available, reserved, sold]` of the drop, as its view shows them.
async fn drop_stock(targets: &Targets, drop_id: &str) -> anyhow::Result<[u64; 4]> {
    let path = format!("/drops/{drop_id}");
    let view = targets
        .expect(Method::GET, &path, None, None, StatusCode::OK)
        .await?;
    let s = &view["stock"];
    let get = |f: &str| {
        s[f].as_u64()
            .ok_or_else(|| anyhow!("no stock.{f} in {view}"))
    };
    Ok([
        get("total")?,
        get("available")?,
        get("reserved")?,
        get("sold")?,
    ])
}

/// The invariant checks after an order run; returns the failures.
async fn check_orders(run: &Run, keys: &[KeyRecord]) -> anyhow::Result<Vec<String>> {
    let scene = &run.scene;
    let targets = &run.targets;
    let mut failures = Vec::new();

    // Duplicates visible in the replies themselves.
    for k in keys {
        if let (Some(a), Some(b)) = (&k.order, &k.conflicting) {
            failures.push(format!("one idempotency key got two orders: {a} and {b}"));
        }
    }

    let settle = Instant::now() + Duration::from_secs_f64(run.args.settle_seconds.max(0.0));
    loop {
        let before = drop_stock(targets, &scene.drop_id).await?;
        let mut held = 0u64;
        let mut held_orders = 0u64;
        let mut duplicate = Vec::new();
        for (i, buyer) in scene.buyers.iter().enumerate() {
            let orders = buyer_orders(targets, buyer, &scene.drop_id).await?;
            let known: HashSet<&str> = keys
                .iter()
                .filter(|k| k.buyer == i)
                .filter_map(|k| k.order.as_deref())
                .collect();
            let unknown = keys.iter().filter(|k| k.buyer == i && k.unknown).count();
            let mut ids = HashSet::new();
            let mut extra = 0usize;
            for o in &orders {
                let id = o["id"].as_str().unwrap_or_default();
                if !ids.insert(id.to_owned()) {
                    duplicate.push(format!("buyer {i}: order {id} listed twice"));
                }
                if !known.contains(id) {
                    extra += 1;
                }
                if matches!(o["status"].as_str(), Some("reserved" | "confirmed")) {
                    held += o["quantity"].as_u64().unwrap_or(0);
                    held_orders += 1;
                }
            }
            for id in &known {
                if !ids.contains(*id) {
                    duplicate.push(format!(
                        "buyer {i}: order {id} answered 201 but is not listed"
                    ));
                }
            }
            // An order the generator never saw is only legitimate for a key whose
            // outcome stayed unknown; more than that is a retry that became two orders.
            if extra > unknown {
                duplicate.push(format!(
                    "buyer {i}: {extra} orders no reply announced, only {unknown} keys ended unknown"
                ));
            }
        }
        let after = drop_stock(targets, &scene.drop_id).await?;
        let [total, available, reserved, sold] = after;
        let mut problems = duplicate;
        if available + reserved + sold != total {
            problems.push(format!(
                "available {available} + reserved {reserved} + sold {sold} != total {total}"
            ));
        }
        if reserved + sold > total {
            problems.push(format!(
                "oversold: reserved {reserved} + sold {sold} > total {total}"
            ));
        }
        if scene.fresh && held != reserved + sold {
            problems.push(format!(
                "buyers hold {held} units but the drop shows reserved {reserved} + sold {sold}"
            ));
        }
        if !scene.fresh && held > reserved + sold {
            problems.push(format!(
                "buyers hold {held} units, more than reserved {reserved} + sold {sold}"
            ));
        }
        let last = format!(
            "stock total={total} available={available} reserved={reserved} sold={sold}; buyers hold {held} units in {held_orders} orders"
        );
        // Displayed stock may lag the store by the stock cache TTL: retry until the
        // two snapshots agree and the checks pass, or the settle time is over.
        if problems.is_empty() && before == after {
            println!("check: {last}: OK");
            println!("check: no duplicate orders across {} keys: OK", keys.len());
            break;
        }
        if Instant::now() >= settle {
            failures.extend(problems);
            failures.push(format!("last snapshot: {last}"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    if run.args.check_notifications && scene.fresh {
        let mut missing = Vec::new();
        loop {
            missing.clear();
            for (i, buyer) in scene.buyers.iter().enumerate() {
                let page = targets
                    .expect(
                        Method::GET,
                        "/notifications?limit=100",
                        Some(&buyer.token),
                        None,
                        StatusCode::OK,
                    )
                    .await?;
                let live = page["items"]
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
                            .filter(|n| {
                                n["kind"] == "drop_live"
                                    && n["payload"]["drop_id"].as_str() == Some(&scene.drop_id)
                            })
                            .count()
                    })
                    .unwrap_or(0);
                if live != 1 {
                    missing.push(format!("buyer {i} has {live} drop_live notifications"));
                }
            }
            if missing.is_empty() {
                println!(
                    "check: each of {} followers got exactly one drop_live: OK",
                    scene.buyers.len()
                );
                break;
            }
            if Instant::now() >= settle {
                failures.push(format!(
                    "{} followers without exactly one drop_live (e.g. {})",
                    missing.len(),
                    missing[0]
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(failures)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1_000.0
}

fn latency_line(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.95)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max())
    )
}

fn latency_json(h: &Histogram<u64>) -> Value {
    json!({
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p95_ms": ms(h.value_at_quantile(0.95)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "max_ms": ms(h.max()),
    })
}

async fn main_inner(args: Args) -> anyhow::Result<bool> {
    let urls = loopback_targets(&args.targets)?;
    if args.concurrency == 0 || args.requests == 0 || args.duration <= 0.0 {
        bail!("--concurrency, --requests and --duration must be positive");
    }
    if args.mode == Mode::Order && args.buyers == 0 {
        bail!("--buyers must be at least 1 in order mode");
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(args.timeout_ms.max(1)))
        .pool_max_idle_per_host(args.concurrency)
        .tcp_nodelay(true)
        .build()?;
    let targets = Targets {
        urls,
        next: AtomicU64::new(0),
        client,
    };
    let setup_started = Instant::now();
    let scene = set_up(&args, &targets).await.context("set-up failed")?;
    eprintln!(
        "set-up: {} buyers, drop {}, product {} ({:.1} s)",
        scene.buyers.len(),
        scene.drop_id,
        scene.product_id,
        setup_started.elapsed().as_secs_f64()
    );
    if args.mode == Mode::Read {
        // One warm-up read per target so the first measured reads are not all misses.
        for _ in 0..targets.urls.len() {
            let _ = targets
                .send(
                    Method::GET,
                    &format!("/drops/{}", scene.drop_id),
                    None,
                    None,
                    None,
                )
                .await;
        }
    }

    let progress = if args.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(args.requests);
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    };
    let started = Instant::now();
    let run = Arc::new(Run {
        deadline: started + Duration::from_secs_f64(args.duration),
        args: args.clone(),
        targets,
        scene,
        tickets: AtomicU64::new(0),
        started,
        progress,
    });
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let run = run.clone();
            match args.mode {
                Mode::Order => tokio::spawn(order_worker(run)),
                Mode::Read => tokio::spawn(read_worker(run)),
            }
        })
        .collect();
    let mut stats = Stats::new();
    for w in workers {
        stats.merge(w.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    run.progress.finish_and_clear();

    let rps = stats.requests as f64 / elapsed;
    let ops = stats.ops as f64 / elapsed;
    println!(
        "mode: {:?}, targets: {}, concurrency: {}, rate: {}, elapsed: {:.2} s",
        args.mode,
        run.targets.urls.len(),
        args.concurrency,
        if args.rate > 0.0 {
            format!("{} op/s", args.rate)
        } else {
            "unpaced".into()
        },
        elapsed
    );
    println!(
        "requests: {} ({rps:.1} req/s); operations: {} ({ops:.1} op/s)",
        stats.requests, stats.ops
    );
    println!("latency per request: {}", latency_line(&stats.request_us));
    if args.mode == Mode::Order {
        println!(
            "latency per order incl. retries: {}",
            latency_line(&stats.op_us)
        );
    }
    println!("responses by status/code:");
    for (k, v) in &stats.by_status {
        println!("  {k:<40} {v}");
    }
    if args.mode == Mode::Order {
        println!("final outcome per order:");
        for (k, v) in &stats.final_outcome {
            println!("  {k:<40} {v}");
        }
    }

    let mut failures = Vec::new();
    if args.mode == Mode::Order {
        failures = check_orders(&run, &stats.keys)
            .await
            .context("invariant checks could not run")?;
    }
    for f in &failures {
        println!("FAILED: {f}");
    }
    if args.json {
        let summary = json!({
            "mode": format!("{:?}", args.mode).to_lowercase(),
            "targets": run.targets.urls.len(),
            "concurrency": args.concurrency,
            "rate": args.rate,
            "elapsed_s": elapsed,
            "requests": stats.requests,
            "requests_per_s": rps,
            "operations": stats.ops,
            "operations_per_s": ops,
            "request_latency": latency_json(&stats.request_us),
            "operation_latency": latency_json(&stats.op_us),
            "by_status": stats.by_status,
            "final_outcome": stats.final_outcome,
            "failures": failures,
        });
        println!("{summary}");
    }
    Ok(failures.is_empty())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_inner(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("loadgen: invariant checks FAILED");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(loopback_targets(&["http://127.0.0.1:8080".into()]).is_ok());
        assert!(loopback_targets(&["http://[::1]:8080".into()]).is_ok());
        assert!(loopback_targets(&["http://localhost:8080".into()]).is_ok());
        assert!(loopback_targets(&["http://10.0.0.1:8080".into()]).is_err());
        assert!(loopback_targets(&["http://example.com".into()]).is_err());
        assert!(loopback_targets(&["https://127.0.0.1".into()]).is_err());
    }

    #[test]
    fn retries_follow_the_contract() {
        let reply =
            |status: u16, code: &str, retry: Option<u64>| -> Result<Reply, reqwest::Error> {
                Ok(Reply {
                    status: StatusCode::from_u16(status).expect("status"),
                    retry_after: retry.map(Duration::from_secs),
                    body: json!({"code": code}),
                })
            };
        assert_eq!(
            retry_delay(&reply(429, "rate_limited", Some(3)), 0),
            Some(Duration::from_secs(3))
        );
        assert!(retry_delay(&reply(503, "unavailable", None), 0).is_some());
        assert!(retry_delay(&reply(409, "idempotency_key_in_flight", None), 0).is_some());
        assert_eq!(retry_delay(&reply(409, "out_of_stock", None), 0), None);
        assert_eq!(retry_delay(&reply(201, "", None), 0), None);
    }
}
