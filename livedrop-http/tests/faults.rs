//! Faults under load, against the real binary: Redis stopped, the broker stopped,
//! PostgreSQL backends killed, a server process killed with held orders. Each
//! scenario is short and bounded; guards restore what a scenario stops even when it
//! fails. Scenarios that stop a shared service run one at a time.
//!
//! Needs `LIVEDROP_TEST_DATABASE_URL`, `LIVEDROP_TEST_REDIS_URL` and
//! `LIVEDROP_TEST_KAFKA_BROKERS` (`scripts/test.sh` sets them): unset, each test says
//! why and returns; set but unreachable, it fails.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::*;
use serde_json::json;
use tokio::sync::Mutex;

/// One scenario at a time: they stop shared services and load the same 2 cores.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// Order and read load in the background, recording each answer with the phase it
/// was sent in.
struct Load {
    stop: tokio_util::sync::CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<Vec<Sample>>>,
    phase: Arc<std::sync::atomic::AtomicUsize>,
}

/// One request's outcome.
#[derive(Debug, Clone)]
struct Sample {
    phase: usize,
    kind: &'static str,
    status: u16,
    code: Option<String>,
    millis: u128,
    /// For orders: the buyer, the key and the id a 201 carried.
    buyer: usize,
    key: String,
    order_id: Option<String>,
    unknown: bool,
}

impl Load {
    /// `workers` tasks, each alternating an order (a fresh key, one attempt: a failed
    /// one is settled later by [`resolve_unknown`]) and two reads, one request at a
    /// time, for at most `limit`.
    fn start(
        api: &Api,
        base: &str,
        drop: &str,
        product: &str,
        buyers: &[Person],
        workers: usize,
        limit: Duration,
    ) -> Load {
        let stop = tokio_util::sync::CancellationToken::new();
        let phase = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let deadline = Instant::now() + limit;
        let mut tasks = Vec::new();
        for w in 0..workers {
            let (api, base, drop, product) = (
                api.clone(),
                base.to_owned(),
                drop.to_owned(),
                product.to_owned(),
            );
            let buyers = buyers.to_vec();
            let (stop, phase) = (stop.clone(), phase.clone());
            tasks.push(tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut n = 0usize;
                while !stop.is_cancelled() && Instant::now() < deadline && n < 20_000 {
                    let buyer = (w + n * workers) % buyers.len();
                    n += 1;
                    let p = phase.load(std::sync::atomic::Ordering::SeqCst);
                    let key = format!("load-{w}-{n}");
                    let body = json!({"drop_id": drop, "quantity": 1});
                    let started = Instant::now();
                    let bases = [base.clone()];
                    let placed = place(
                        &api,
                        &bases,
                        0,
                        &buyers[buyer].token,
                        &key,
                        &body,
                        Instant::now(),
                    )
                    .await;
                    samples.push(Sample {
                        phase: p,
                        kind: "order",
                        status: placed.status,
                        code: placed.code.clone(),
                        millis: started.elapsed().as_millis(),
                        buyer,
                        key: key.clone(),
                        unknown: placed.order_id.is_none()
                            && placed.seen.iter().any(|(s, c)| {
                                *s == 0
                                    || *s >= 500
                                    || c.as_deref() == Some("idempotency_key_in_flight")
                            }),
                        order_id: placed.order_id,
                    });
                    for path in [format!("/drops/{drop}"), format!("/products/{product}")] {
                        let p = phase.load(std::sync::atomic::Ordering::SeqCst);
                        let started = Instant::now();
                        let r = api.call(&base, "GET", &path, None, None, None).await;
                        samples.push(Sample {
                            phase: p,
                            kind: "read",
                            status: r.as_ref().map(|r| r.status).unwrap_or(0),
                            code: r.ok().and_then(|r| r.code().map(str::to_owned)),
                            millis: started.elapsed().as_millis(),
                            buyer: 0,
                            key: String::new(),
                            order_id: None,
                            unknown: false,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                samples
            }));
        }
        Load { stop, tasks, phase }
    }

    fn phase(&self, p: usize) {
        self.phase.store(p, std::sync::atomic::Ordering::SeqCst);
    }

    async fn finish(self) -> Vec<Sample> {
        self.stop.cancel();
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.unwrap());
        }
        all
    }
}

/// `status code` counts of `kind` samples sent in `phase`.
fn tally(samples: &[Sample], phase: usize, kind: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.phase == phase && s.kind == kind)
    {
        let label = match &s.code {
            Some(c) => format!("{} {c}", s.status),
            None => s.status.to_string(),
        };
        *counts.entry(label).or_default() += 1;
    }
    counts
}

/// The order ids each buyer was answered, by buyer index.
fn announced(samples: &[Sample]) -> HashMap<usize, HashSet<String>> {
    let mut known: HashMap<usize, HashSet<String>> = HashMap::new();
    for s in samples {
        if let Some(id) = &s.order_id {
            assert!(
                known.entry(s.buyer).or_default().insert(id.clone()),
                "order {id} answered for two keys"
            );
        }
    }
    known
}

/// Settles orders whose outcome stayed unknown (no answer, a 5xx, or in flight)
/// by retrying their keys until the server answers for them (≤ 45 s in all): the
/// replay, a fresh reservation, or a refusal.
async fn resolve_unknown(
    api: &Api,
    base: &str,
    drop: &str,
    buyers: &[Person],
    samples: &mut [Sample],
) {
    let limit = Instant::now() + Duration::from_secs(45);
    let body = json!({"drop_id": drop, "quantity": 1});
    for s in samples.iter_mut().filter(|s| s.unknown) {
        loop {
            let placed = place(
                api,
                &[base.to_owned()],
                0,
                &buyers[s.buyer].token,
                &s.key,
                &body,
                Instant::now() + Duration::from_secs(3),
            )
            .await;
            let settled = placed.status != 0
                && placed.status < 500
                && placed.code.as_deref() != Some("idempotency_key_in_flight");
            if settled {
                s.order_id = placed.order_id;
                s.unknown = false;
                break;
            }
            assert!(
                Instant::now() < limit,
                "key {} never settled: {placed:?}",
                s.key
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Puts Redis back (same command line as `scripts/services.sh`) if it is not
/// answering, when dropped.
struct RedisGuard {
    port: u16,
}

impl RedisGuard {
    fn up(&self) -> bool {
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "PING"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
            .unwrap_or(false)
    }

    fn stop(&self) {
        let _ = Command::new("redis-cli")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "SHUTDOWN",
                "NOSAVE",
            ])
            .output();
        let started = Instant::now();
        while self.up() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!self.up(), "Redis still answers after SHUTDOWN");
    }

    /// Starts Redis and waits (≤ 15 s) for PONG.
    fn restore(&self) {
        if self.up() {
            return;
        }
        let _ = std::fs::create_dir_all("/var/lib/redis");
        let _ = std::fs::create_dir_all("/var/log/redis");
        let status = Command::new("redis-server")
            .args([
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "-::1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                "/var/lib/redis",
                "--logfile",
                "/var/log/redis/ci.log",
            ])
            .status();
        if let Err(e) = status {
            eprintln!("could not start redis-server: {e}");
        }
        let started = Instant::now();
        while !self.up() && started.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for RedisGuard {
    fn drop(&mut self) {
        self.restore();
    }
}

/// A private tansu broker (in-memory storage) on its own port; killed when dropped.
struct Broker {
    child: Option<Child>,
}

impl Broker {
    fn tansu() -> String {
        let home = std::env::var("CARGO_HOME")
            .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
        let installed = format!("{home}/bin/tansu");
        if std::path::Path::new(&installed).exists() {
            installed
        } else {
            "tansu".into()
        }
    }

    async fn start(port: u16) -> Broker {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(Self::tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tansu (scripts/kafka.sh install): {e}"));
        let broker = Broker { child: Some(child) };
        let addr = format!("127.0.0.1:{port}");
        wait_for(Duration::from_secs(30), "tansu to listen", || async {
            tcp_open(&addr)
                .await
                .then_some(())
                .ok_or("closed".to_owned())
        })
        .await;
        broker
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Redis stopped mid-load: reads are served from PostgreSQL and orders go on while
/// it is down; after it is back, the cache serves hits again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_keeps_reads_and_orders_going() {
    let Some(services) = Services::from_env("redis_outage") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    services.assert_reachable().await;
    let redis = RedisGuard {
        port: host_port(&services.redis, 6379)
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap(),
    };
    let schema = unique("redis");
    let _cleanup = SchemaGuard(services.clone(), schema.clone());
    let people = seed_people(&services, &schema, 8).await;
    let server = Server::start("redis", &server_env(&services, &schema, &schema, &[])).await;
    let api = Api::new();
    let (drop, product) =
        create_drop(&api, &server.base, &people.creator.token, 10_000, None).await;

    let load = Load::start(
        &api,
        &server.base,
        &drop,
        &product,
        &people.buyers,
        4,
        Duration::from_secs(40),
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    load.phase(1);
    redis.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    load.phase(2);
    redis.restore();
    assert!(redis.up(), "Redis did not come back");
    // Recovery: the cache serves hits again without a server restart.
    let hits_before = metric(&api, &server.base, "livedrop_cache_hits_total")
        .await
        .unwrap_or(0.0);
    wait_for(
        Duration::from_secs(20),
        "cache hits after the restart",
        || async {
            api.call(
                &server.base,
                "GET",
                &format!("/products/{product}"),
                None,
                None,
                None,
            )
            .await
            .map_err(|e| e.to_string())?;
            let hits = metric(&api, &server.base, "livedrop_cache_hits_total")
                .await
                .unwrap_or(0.0);
            (hits > hits_before)
                .then_some(())
                .ok_or(format!("hits {hits} (before {hits_before})"))
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let samples = load.finish().await;

    for phase in 0..3 {
        eprintln!(
            "phase {phase}: orders {:?}, reads {:?}",
            tally(&samples, phase, "order"),
            tally(&samples, phase, "read")
        );
    }
    for s in &samples {
        assert!(
            s.millis < 8_000,
            "a request took {} ms (phase {}): {s:?}",
            s.millis,
            s.phase
        );
        let expected = if s.kind == "order" { 201 } else { 200 };
        assert_eq!(
            s.status, expected,
            "{} in phase {} (0 before, 1 Redis down, 2 after): {s:?}",
            s.kind, s.phase
        );
    }
    for phase in 0..3 {
        for kind in ["order", "read"] {
            assert!(
                samples.iter().any(|s| s.phase == phase && s.kind == kind),
                "no {kind} completed in phase {phase}"
            );
        }
    }
    let known = announced(&samples);
    assert_stock_matches_orders(&api, &server.base, &drop, &people.buyers, &known).await;
    server.stop().await;
}

/// The broker stopped mid-load: orders go on, the outbox grows; after the broker
/// is back every event is delivered (the outbox drains, every order confirmed during
/// the outage yields exactly one `order_confirmed`). Runs a private broker, so the
/// shared one is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_holds_events_and_delivers_them_after() {
    let Some(services) = Services::from_env("broker_outage") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    services.assert_reachable().await;
    let port = free_port();
    let mut broker = Broker::start(port).await;
    let schema = unique("broker");
    let _cleanup = SchemaGuard(services.clone(), schema.clone());
    let people = seed_people(&services, &schema, 8).await;
    let brokers = format!("127.0.0.1:{port}");
    let env = server_env(
        &services,
        &schema,
        &schema,
        &[("LIVEDROP_KAFKA_BROKERS", brokers.as_str())],
    );
    let server = Server::start("broker", &env).await;
    let api = Api::new();
    for buyer in &people.buyers {
        let r = api
            .call(
                &server.base,
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
    let (drop, product) =
        create_drop(&api, &server.base, &people.creator.token, 10_000, None).await;
    assert_notifications(
        &api,
        &server.base,
        &drop,
        &people.buyers,
        "drop_live",
        |_| 1,
    )
    .await;

    let load = Load::start(
        &api,
        &server.base,
        &drop,
        &product,
        &people.buyers,
        4,
        Duration::from_secs(60),
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    load.phase(1);
    broker.kill();
    assert!(
        !tcp_open(&brokers).await,
        "the private broker still listens"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Orders placed while the broker is down: their events wait in the outbox.
    let backlog = wait_for(Duration::from_secs(15), "the outbox to grow", || async {
        let backlog = metric(&api, &server.base, "livedrop_outbox_backlog")
            .await
            .unwrap_or(0.0);
        (backlog > 0.0)
            .then_some(backlog)
            .ok_or(format!("backlog {backlog}"))
    })
    .await;
    // Each buyer confirms one order it placed during the outage.
    let during = load.finish().await;
    let mut confirmed = HashSet::new();
    for s in during
        .iter()
        .filter(|s| s.phase == 1 && s.order_id.is_some())
    {
        if confirmed.contains(&s.buyer) {
            continue;
        }
        let id = s.order_id.as_ref().unwrap();
        let r = api
            .call(
                &server.base,
                "POST",
                &format!("/orders/{id}/confirm"),
                Some(&people.buyers[s.buyer].token),
                None,
                None,
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "confirm during the outage: {}", r.body);
        confirmed.insert(s.buyer);
    }
    assert!(
        !confirmed.is_empty(),
        "no order succeeded during the outage"
    );
    eprintln!(
        "outage: orders {:?}, reads {:?}, backlog {backlog}",
        tally(&during, 1, "order"),
        tally(&during, 1, "read")
    );

    let _broker = Broker::start(port).await;
    // The private broker keeps its data in memory, so it comes back without the
    // topics: the server's relay re-creates them on its next failed publish.
    wait_for(Duration::from_secs(60), "the outbox to drain", || async {
        let backlog = metric(&api, &server.base, "livedrop_outbox_backlog").await;
        (backlog == Some(0.0))
            .then_some(())
            .ok_or(format!("backlog {backlog:?}"))
    })
    .await;
    assert_notifications(
        &api,
        &server.base,
        &drop,
        &people.buyers,
        "order_confirmed",
        |i| usize::from(confirmed.contains(&i)),
    )
    .await;
    for s in &during {
        let expected = if s.kind == "order" { 201 } else { 200 };
        assert_eq!(s.status, expected, "phase {}: {s:?}", s.phase);
        assert!(s.millis < 8_000, "a request took {} ms: {s:?}", s.millis);
    }
    let known = announced(&during);
    assert_stock_matches_orders(&api, &server.base, &drop, &people.buyers, &known).await;
    server.stop().await;
}

/// PostgreSQL backends of the server killed repeatedly mid-load: every answer comes
/// within bounds, failures are 503 with a clear code (never a 500), and the server
/// serves again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_database_backends_fail_fast_and_recover() {
    let Some(services) = Services::from_env("database_backends_killed") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    services.assert_reachable().await;
    let schema = unique("pgkill");
    let _cleanup = SchemaGuard(services.clone(), schema.clone());
    let people = seed_people(&services, &schema, 8).await;
    let server = Server::start("pgkill", &server_env(&services, &schema, &schema, &[])).await;
    let api = Api::new();
    let (drop, product) =
        create_drop(&api, &server.base, &people.creator.token, 10_000, None).await;

    let load = Load::start(
        &api,
        &server.base,
        &drop,
        &product,
        &people.buyers,
        4,
        Duration::from_secs(40),
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    load.phase(1);
    let mut killed = 0;
    for _ in 0..8 {
        let n = psql(
            &services,
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() \
                 AND application_name = '{schema}'"
            ),
        );
        killed += n.parse::<u32>().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(killed > 0, "no backend of the server was found to kill");
    load.phase(2);
    // Recovery without a restart: orders succeed again.
    wait_for(
        Duration::from_secs(20),
        "orders to succeed again",
        || async {
            let r = api
                .call(
                    &server.base,
                    "POST",
                    "/orders",
                    Some(&people.buyers[0].token),
                    Some(&uuid::Uuid::new_v4().to_string()),
                    Some(&json!({"drop_id": drop, "quantity": 1})),
                )
                .await
                .map_err(|e| e.to_string())?;
            (r.status == 201)
                .then_some(())
                .ok_or(format!("{} {}", r.status, r.body))
        },
    )
    .await;
    load.phase(3);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let samples = load.finish().await;
    for phase in 0..4 {
        eprintln!(
            "phase {phase}: orders {:?}, reads {:?}",
            tally(&samples, phase, "order"),
            tally(&samples, phase, "read")
        );
    }
    for s in &samples {
        assert!(
            s.millis < 8_000,
            "a request hung for {} ms: {s:?}",
            s.millis
        );
        let ok = if s.kind == "order" { 201 } else { 200 };
        if s.phase == 3 || s.phase == 0 {
            assert_eq!(s.status, ok, "{} in phase {}: {s:?}", s.kind, s.phase);
        } else {
            assert!(
                s.status == ok || (s.status == 503 && s.code.as_deref() == Some("unavailable")),
                "{} while backends were killed answered {} {:?} (only success or 503 \
                 `unavailable` are acceptable)",
                s.kind,
                s.status,
                s.code
            );
        }
    }
    let r = api
        .call(&server.base, "GET", "/readyz", None, None, None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    // A refused order may or may not have been stored before its backend died: its
    // key settles it, and then every order is accounted for.
    let mut samples = samples;
    resolve_unknown(&api, &server.base, &drop, &people.buyers, &mut samples).await;
    let mut known = announced(&samples);
    // The recovery probe's orders belong to buyer 0 too.
    let probe = buyer_orders(&api, &server.base, &people.buyers[0].token, &drop).await;
    for o in probe {
        known
            .entry(0)
            .or_default()
            .insert(o["id"].as_str().unwrap().to_owned());
    }
    assert_stock_matches_orders(&api, &server.base, &drop, &people.buyers, &known).await;
    server.stop().await;
}

/// A process killed with SIGKILL while its orders hold stock: another process
/// expires the holds, the stock returns and is sold again, nothing oversold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_of_a_killed_process_expire_and_stock_returns() {
    let Some(services) = Services::from_env("killed_process") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    services.assert_reachable().await;
    let schema = unique("sigkill");
    let _cleanup = SchemaGuard(services.clone(), schema.clone());
    let people = seed_people(&services, &schema, 10).await;
    let env = server_env(
        &services,
        &schema,
        &schema,
        &[("LIVEDROP_HOLD_SECONDS", "6")],
    );
    let mut first = Server::start("first", &env).await;
    let api = Api::new();
    let (drop, _product) = create_drop(&api, &first.base, &people.creator.token, 30, None).await;

    // Sell out through the first process (30 buyers' orders at once); confirm 5
    // orders, hold the rest.
    let deadline = Instant::now() + Duration::from_secs(20);
    let placing: Vec<_> = (0..30)
        .map(|n| {
            let (api, base, drop) = (api.clone(), first.base.clone(), drop.clone());
            let buyer = n % people.buyers.len();
            let token = people.buyers[buyer].token.clone();
            tokio::spawn(async move {
                let placed = place(
                    &api,
                    &[base],
                    0,
                    &token,
                    &format!("first-{n}"),
                    &json!({"drop_id": drop, "quantity": 1}),
                    deadline,
                )
                .await;
                (buyer, placed)
            })
        })
        .collect();
    let mut orders = Vec::new();
    for p in placing {
        let (buyer, placed) = p.await.unwrap();
        assert_eq!(placed.status, 201, "{placed:?}");
        orders.push((buyer, placed.order_id.unwrap()));
    }
    for (buyer, id) in &orders[..5] {
        api.expect(
            &first.base,
            "POST",
            &format!("/orders/{id}/confirm"),
            Some(&people.buyers[*buyer].token),
            None,
            200,
        )
        .await;
    }
    // More buyers are still racing when the process dies.
    let racing: Vec<_> = (0..6)
        .map(|n| {
            let (api, base, token, drop) = (
                api.clone(),
                first.base.clone(),
                people.buyers[n].token.clone(),
                drop.clone(),
            );
            tokio::spawn(async move {
                let _ = api
                    .call(
                        &base,
                        "POST",
                        "/orders",
                        Some(&token),
                        Some(&format!("racing-{n}")),
                        Some(&json!({"drop_id": drop, "quantity": 1})),
                    )
                    .await;
            })
        })
        .collect();
    // The kill happens while 25 units are held (holds last 6 s).
    wait_for(
        Duration::from_secs(3),
        "25 held units before the kill",
        || async {
            let stock = drop_stock(&api, &first.base, &drop).await;
            (stock == [30, 0, 25, 5])
                .then_some(())
                .ok_or(format!("stock {stock:?}"))
        },
    )
    .await;
    first.kill();
    for r in racing {
        let _ = r.await;
    }

    // A second process, which never saw those orders, expires their holds.
    let second = Server::start("second", &env).await;
    let stock = wait_for(Duration::from_secs(20), "the holds to expire", || async {
        let stock = drop_stock(&api, &second.base, &drop).await;
        (stock == [30, 25, 0, 5])
            .then_some(stock)
            .ok_or(format!("stock {stock:?}"))
    })
    .await;
    assert_eq!(stock, [30, 25, 0, 5]);
    for (buyer, id) in &orders[5..] {
        let o = api
            .expect(
                &second.base,
                "GET",
                &format!("/orders/{id}"),
                Some(&people.buyers[*buyer].token),
                None,
                200,
            )
            .await;
        assert_eq!(o["status"], "expired", "{o}");
    }

    // The returned stock sells again, exactly once.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut resold = 0;
    for n in 0..40 {
        let placed = place(
            &api,
            std::slice::from_ref(&second.base),
            0,
            &people.buyers[n % people.buyers.len()].token,
            &format!("second-{n}"),
            &json!({"drop_id": drop, "quantity": 1}),
            deadline,
        )
        .await;
        match placed.status {
            201 => resold += 1,
            409 => assert_eq!(placed.code.as_deref(), Some("out_of_stock"), "{placed:?}"),
            other => panic!("unexpected {other}: {placed:?}"),
        }
    }
    assert_eq!(resold, 25, "the 25 returned units sell once each");
    // Displayed stock may lag by its cache TTL, and the resold holds expire too:
    // wait until a snapshot of the stock agrees with the orders.
    wait_for(
        Duration::from_secs(15),
        "stock to equal the orders",
        || async {
            let stock = drop_stock(&api, &second.base, &drop).await;
            let [total, available, reserved, sold] = stock;
            assert_eq!(available + reserved + sold, total, "{stock:?}");
            assert!(reserved + sold <= total, "oversold: {stock:?}");
            assert_eq!(sold, 5, "confirmed units stay sold: {stock:?}");
            let mut held = 0;
            for buyer in &people.buyers {
                for o in buyer_orders(&api, &second.base, &buyer.token, &drop).await {
                    if matches!(o["status"].as_str(), Some("reserved" | "confirmed")) {
                        held += o["quantity"].as_u64().unwrap();
                    }
                }
            }
            let again = drop_stock(&api, &second.base, &drop).await;
            (held == reserved + sold && again == stock)
                .then_some(())
                .ok_or(format!(
                    "buyers hold {held}, stock {stock:?} then {again:?}"
                ))
        },
    )
    .await;
    second.stop().await;
}

/// Shared by the process-level tests: services from the environment, the server
/// binary as a child process, a small HTTP client with retries, and the checks.
#[allow(dead_code)]
mod harness {
    use std::collections::{HashMap, HashSet};
    use std::future::Future;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use livedrop_adapters::postgres::{PgOptions, PgStore};
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
            let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
            match (
                get("LIVEDROP_TEST_DATABASE_URL"),
                get("LIVEDROP_TEST_REDIS_URL"),
                get("LIVEDROP_TEST_KAFKA_BROKERS"),
            ) {
                (Some(db), Some(redis), Some(kafka)) => Some(Self { db, redis, kafka }),
                _ => {
                    eprintln!(
                        "skipping {test}: set LIVEDROP_TEST_DATABASE_URL, LIVEDROP_TEST_REDIS_URL and \
                         LIVEDROP_TEST_KAFKA_BROKERS (scripts/test.sh does) to run it"
                    );
                    None
                }
            }
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
        match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
            .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("{what} at {addr} is configured but unreachable: {e}"),
            Err(_) => panic!("{what} at {addr} is configured but did not answer within 3 s"),
        }
    }

    /// Whether `addr` accepts a TCP connection within 1 s.
    pub async fn tcp_open(addr: &str) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
                .await,
            Ok(Ok(_))
        )
    }

    /// A name unique to this run, usable as a schema, namespace and topic prefix.
    pub fn unique(tag: &str) -> String {
        format!(
            "ld_{tag}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
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
    /// tokens signed by [`SECRET`].
    pub async fn seed_people(s: &Services, schema: &str, buyers: usize) -> People {
        let store = PgStore::connect(
            &s.db,
            PgOptions {
                max_connections: 2,
                schema: Some(schema.to_owned()),
                ..PgOptions::default()
            },
        )
        .await
        .unwrap();
        store.migrate().await.unwrap();
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

    /// Drops the schema when dropped, after the servers declared later are gone.
    pub struct SchemaGuard(pub Services, pub String);

    impl Drop for SchemaGuard {
        fn drop(&mut self) {
            drop_schema(&self.0, &self.1);
        }
    }

    /// Drops a test schema (best effort).
    pub fn drop_schema(s: &Services, schema: &str) {
        let _ = Command::new("psql")
            .arg(&s.db)
            .args(["-X", "-q", "-c"])
            .arg(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .output();
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
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let mut request = self.http.request(method, format!("{base}{path}"));
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
    /// fails with its last complaint.
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
                assert!(reserved + sold <= total, "oversold: {stock:?}");
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
                        .filter(|n| {
                            n["kind"] == kind && n["payload"]["drop_id"].as_str() == Some(drop)
                        })
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
}
