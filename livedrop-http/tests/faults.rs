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
use livedrop_adapters::redis::testing::LocalRedis;
use serde_json::json;
use tokio::sync::Mutex;

/// The most one request may take before it counts as hung: a liveness bound that
/// holds the contract "a failing dependency answers fast" to answering at all,
/// generously; measured latencies are in BENCHMARKS.md, never asserted here.
const LIVENESS_MS: u128 = 30_000;

/// One scenario at a time: they stop shared services and load the same 2 cores.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// The services for `test`, checked reachable, and the turn of `test` among the
/// scenarios (held until the guard drops); `None` (after saying why) when unset.
async fn services_in_turn(test: &str) -> Option<(Services, tokio::sync::MutexGuard<'static, ()>)> {
    let services = Services::from_env(test)?;
    let turn = SERIAL.lock().await;
    services.assert_reachable().await;
    Some((services, turn))
}

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
    /// Four workers ([`Load::start`]) for at most `limit`, in phase 0 for their first
    /// 800 ms, then in phase 1: the fault comes next.
    async fn warmed(
        api: &Api,
        base: &str,
        drop: &str,
        product: &str,
        buyers: &[Person],
        limit: Duration,
    ) -> Load {
        let load = Load::start(api, base, drop, product, buyers, 4, limit);
        tokio::time::sleep(Duration::from_millis(800)).await;
        load.phase(1);
        load
    }

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

    /// Lets the load run `more`, stops it, prints the figures of phases
    /// `0..phases`, and checks that every request answered within the liveness
    /// bound: it answers, even while a dependency is down, instead of hanging. Not
    /// a speed claim: latency figures are in BENCHMARKS.md.
    async fn finish_after(self, more: Duration, phases: usize) -> Vec<Sample> {
        tokio::time::sleep(more).await;
        let samples = self.finish().await;
        for phase in 0..phases {
            eprintln!("phase {phase}: {}", phase_summary(&samples, phase));
        }
        for s in &samples {
            assert!(
                s.millis < LIVENESS_MS,
                "a request took {} ms (phase {}): it hangs: {s:?}",
                s.millis,
                s.phase
            );
        }
        samples
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

/// Latency of one phase's requests of `kind` (p50, p99, max), for the printed
/// figures that BENCHMARKS.md records; never asserted.
fn latency(samples: &[Sample], phase: usize, kind: &str) -> String {
    let mut ms: Vec<u128> = samples
        .iter()
        .filter(|s| s.phase == phase && s.kind == kind)
        .map(|s| s.millis)
        .collect();
    if ms.is_empty() {
        return "none".into();
    }
    ms.sort_unstable();
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {} ms, p99 {} ms, max {} ms",
        at(0.5),
        at(0.99),
        ms[ms.len() - 1]
    )
}

/// One phase's answers and latencies, orders then reads, for the printed figures.
fn phase_summary(samples: &[Sample], phase: usize) -> String {
    format!(
        "orders {:?} ({}), reads {:?} ({})",
        tally(samples, phase, "order"),
        latency(samples, phase, "order"),
        tally(samples, phase, "read"),
        latency(samples, phase, "read")
    )
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

/// The end of a scenario: the drop's stock equals the orders the buyers hold,
/// which are the orders they were answered (`known`); then the server stops.
async fn assert_accounted_and_stop(
    api: &Api,
    server: Server,
    drop: &str,
    buyers: &[Person],
    known: &HashMap<usize, HashSet<String>>,
) {
    assert_stock_matches_orders(api, &server.base, drop, buyers, known).await;
    server.stop().await;
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

/// A scenario under load: a fresh schema with a creator and eight buyers, one
/// server on it, a drop of 10,000 units, and order and read load on it, in phase 1
/// after 800 ms of phase 0. Destructured in this order, the schema goes last.
struct Loaded {
    db: TestSchema,
    people: People,
    server: Server,
    api: Api,
    drop: String,
    product: String,
    load: Load,
}

impl Loaded {
    async fn start(services: &Services, name: &str) -> Loaded {
        Self::start_with(services, name, &[], false, Duration::from_secs(40)).await
    }

    /// [`Loaded::start`] with `extra` server environment and load lasting at most
    /// `load_for`; with `followed`, every buyer follows the creator first and has
    /// the drop's `drop_live` notification before the load starts.
    async fn start_with(
        services: &Services,
        name: &str,
        extra: &[(&str, &str)],
        followed: bool,
        load_for: Duration,
    ) -> Loaded {
        let db = TestSchema::on(&services.db).await;
        let schema = db.name();
        let people = seed_people(&db, 8).await;
        let server = Server::start(name, &server_env(services, schema, schema, extra)).await;
        let api = Api::new();
        if followed {
            follow_creator(&api, std::slice::from_ref(&server.base), &people).await;
        }
        let (drop, product) =
            create_drop(&api, &server.base, &people.creator.token, 10_000, None).await;
        if followed {
            let buyers = &people.buyers;
            assert_notifications(&api, &server.base, &drop, buyers, "drop_live", |_| 1).await;
        }
        let load = Load::warmed(
            &api,
            &server.base,
            &drop,
            &product,
            &people.buyers,
            load_for,
        )
        .await;
        Loaded {
            load,
            db,
            people,
            server,
            api,
            drop,
            product,
        }
    }
}

/// Redis stopped mid-load: reads are served from PostgreSQL and orders go on while
/// it is down; after it is back, the cache serves hits again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_keeps_reads_and_orders_going() {
    let Some((services, _turn)) = services_in_turn("redis_outage").await else {
        return;
    };
    let redis = LocalRedis::from_url(&services.redis);
    let _restart = redis.restart_on_drop();
    let Loaded {
        db: _db,
        people,
        server,
        api,
        drop,
        product,
        load,
    } = Loaded::start(&services, "redis").await;
    redis.shut_down();
    tokio::time::sleep(Duration::from_secs(3)).await;
    load.phase(2);
    redis.start();
    assert!(redis.ping(), "Redis did not come back");
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
    let samples = load.finish_after(Duration::from_secs(1), 3).await;
    for s in &samples {
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
    assert_accounted_and_stop(&api, server, &drop, &people.buyers, &announced(&samples)).await;
}

/// The broker stopped mid-load: orders go on, the outbox grows; after the broker
/// is back every event is delivered (the outbox drains, every order confirmed during
/// the outage yields exactly one `order_confirmed`). Runs a private broker, so the
/// shared one is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_holds_events_and_delivers_them_after() {
    let Some((services, _turn)) = services_in_turn("broker_outage").await else {
        return;
    };
    let port = free_port();
    let mut broker = Broker::start(port).await;
    let brokers = format!("127.0.0.1:{port}");
    // The schema, bound first, goes last.
    let Loaded {
        db: _db,
        load,
        api,
        server,
        people,
        drop,
        product: _,
    } = Loaded::start_with(
        &services,
        "broker",
        &[("LIVEDROP_KAFKA_BROKERS", brokers.as_str())],
        true,
        Duration::from_secs(60),
    )
    .await;
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
    let during = load.finish_after(Duration::ZERO, 0).await;
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
    eprintln!("outage: {}, backlog {backlog}", phase_summary(&during, 1));

    let _broker = Broker::start(port).await;
    // The private broker keeps its data in memory, so it comes back without the
    // topics: the server's relay re-creates them on its next failed publish.
    wait_for_outbox_drained(&api, &server.base, Duration::from_secs(60)).await;
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
    }
    assert_accounted_and_stop(&api, server, &drop, &people.buyers, &announced(&during)).await;
}

/// PostgreSQL backends of the server killed repeatedly mid-load: every answer comes
/// within bounds, failures are 503 with a clear code (never a 500), and the server
/// serves again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_database_backends_fail_fast_and_recover() {
    let Some((services, _turn)) = services_in_turn("database_backends_killed").await else {
        return;
    };
    let Loaded {
        db,
        people,
        server,
        api,
        drop,
        product: _,
        load,
    } = Loaded::start(&services, "pgkill").await;
    let schema = db.name();
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
    let samples = load.finish_after(Duration::from_secs(2), 4).await;
    for s in &samples {
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
    assert_accounted_and_stop(&api, server, &drop, &people.buyers, &known).await;
}

/// A process killed with SIGKILL while its orders hold stock: another process
/// expires the holds, the stock returns and is sold again, nothing oversold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_of_a_killed_process_expire_and_stock_returns() {
    let Some((services, _turn)) = services_in_turn("killed_process").await else {
        return;
    };
    let db = TestSchema::on(&services.db).await;
    let schema = db.name();
    let people = seed_people(&db, 10).await;
    let env = server_env(&services, schema, schema, &[("LIVEDROP_HOLD_SECONDS", "6")]);
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
        let (path, token) = (
            format!("/orders/{id}/confirm"),
            &people.buyers[*buyer].token,
        );
        api.expect(&first.base, "POST", &path, Some(token), None, 200)
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
    eprintln!("after the sweep: {stock:?}");
    // The sweep leaves the five paid orders and expires the held ones.
    for (n, (buyer, id)) in orders.iter().enumerate() {
        let (path, token) = (format!("/orders/{id}"), &people.buyers[*buyer].token);
        let o = api
            .expect(&second.base, "GET", &path, Some(token), None, 200)
            .await;
        let expected = if n < 5 { "confirmed" } else { "expired" };
        assert_eq!(o["status"], expected, "order {n}: {o}");
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
            assert_eq!(sold, 5, "confirmed units stay sold: {stock:?}");
            let mut held = 0;
            for buyer in &people.buyers {
                for o in buyer_orders(&api, &second.base, &buyer.token, &drop).await {
                    if matches!(o["status"].as_str(), Some("reserved" | "confirmed")) {
                        held += o["quantity"].as_u64().unwrap();
                    }
                }
            }
            // Oversell seen from the orders' side, not implied by the stock row.
            assert!(held <= total, "oversold: buyers hold {held} of {stock:?}");
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

mod harness;
