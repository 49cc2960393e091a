//! The workload (concurrent clients over several processes) and the checks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use livedrop_core::event::{EventPayload, EventType};
use livedrop_core::id::{DropId, OrderId, ProductId, UserId};
use livedrop_core::model::{
    Actor, Allocation, Draw, DrawResult, DropFilter, DropState, Notification, NotificationKind,
    Order, OrderStatus, Product, ProductFilter, Role, User, WaitingRoom, DRAW_FINGERPRINT,
    WAITLIST_FINGERPRINT,
};
use livedrop_core::page::{Page, PageRequest};
use livedrop_core::ports::Clock;
use livedrop_core::service::{
    EnterDraw, JoinWaitlist, Livedrop, NewDrop, NewProduct, NewVariant, PlaceOrder, ProductPatch,
    QueueState, Registration, StockAdjustment, Store,
};
use livedrop_core::{Error, Event, StoreResult, Timestamp};
use tokio_util::sync::CancellationToken;

use super::clock::SimClock;
use super::faults::Injector;
use super::world::{Deployment, World};
use super::{Check, KnownIssue, Leftovers, Report, SimConfig, Timing, Violation};

/// Why a request has no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gone {
    /// The client gave up and dropped the request.
    Abandoned,
    /// The process serving it died.
    Killed,
}

type Reply<T> = Result<Result<T, Error>, Gone>;

fn code<T>(reply: &Reply<T>) -> &'static str {
    match reply {
        Ok(Ok(_)) => "ok",
        Ok(Err(e)) => e.code(),
        Err(Gone::Abandoned) => "abandoned",
        Err(Gone::Killed) => "killed",
    }
}

/// One decision a client got for an idempotency key.
#[derive(Debug, Clone, PartialEq)]
enum Decision {
    Placed(OrderId),
    Refused(Error),
    /// A transient error or no answer: the client should retry.
    Retry,
}

impl Decision {
    fn of(reply: &Reply<Order>) -> Self {
        match reply {
            Ok(Ok(order)) => Decision::Placed(order.id),
            Ok(Err(e)) if !e.is_transient() => Decision::Refused(e.clone()),
            _ => Decision::Retry,
        }
    }
}

#[derive(Debug)]
struct KeyLog {
    user: usize,
    request: PlaceOrder,
    decisions: Vec<Decision>,
}

/// What a client was last told about an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Told {
    Placed,
    Confirmed,
    Cancelled,
}

#[derive(Debug, Default, Clone, Copy)]
struct FollowLog {
    /// The clock's high-water mark ([`SimClock::latest`]) when a follow was
    /// acknowledged.
    acknowledged: Option<Timestamp>,
    /// An unfollow was attempted, or a follow's outcome is unknown: membership at a
    /// given instant is not known any more.
    unsure: bool,
}

#[derive(Debug)]
struct SimUser {
    actor: Actor,
    creator: bool,
}

/// What the clients know: everything they were told.
struct Model {
    users: Vec<SimUser>,
    products: Vec<(ProductId, usize)>,
    drops: Vec<(DropId, usize)>,
    /// The skus of each drop, in the drop's order.
    skus: BTreeMap<DropId, Vec<String>>,
    /// Draw drops.
    draws: Vec<DropId>,
    /// Drops behind a waiting room.
    rooms: Vec<DropId>,
    keys: BTreeMap<String, KeyLog>,
    next_key: u64,
    told: BTreeMap<OrderId, (usize, Told)>,
    /// Orders whose buyer was told the hold is extended (extended now, or before).
    extended: BTreeSet<OrderId>,
    follows: BTreeMap<(usize, usize), FollowLog>,
    trace: DefaultHasher,
    requests: u64,
    graceful_shutdowns: u32,
    /// The clock stepped back at least once: instants no longer follow call order.
    stepped_back: bool,
}

impl Model {
    fn record(&mut self, step: u32, what: &str, outcome: &str) {
        (step, what, outcome).hash(&mut self.trace);
        self.requests += 1;
    }

    fn creators(&self) -> Vec<usize> {
        (0..self.users.len())
            .filter(|&i| self.users[i].creator)
            .collect()
    }
}

/// One client request, planned before it runs.
enum Action {
    Place {
        key: String,
        /// How the buyer gets an admission token (see [`with_admission`]).
        admission: usize,
    },
    Settle {
        order: OrderId,
        user: usize,
        confirm: bool,
    },
    Extend {
        order: OrderId,
        user: usize,
    },
    Follow {
        user: usize,
        creator: usize,
        follow: bool,
    },
    CreateProduct {
        creator: usize,
        n: u64,
    },
    PatchProduct {
        creator: usize,
        product: ProductId,
        n: u64,
    },
    Schedule {
        creator: usize,
        product: ProductId,
        later: Duration,
        length: Duration,
        stock: u32,
        /// Sizes with their units; none for a drop of one stock (`stock`).
        variants: Vec<(String, u32)>,
        limit: Option<u32>,
        fair: Fair,
    },
    EnterDraw {
        user: usize,
        drop: DropId,
        sku: Option<String>,
        quantity: u32,
    },
    WithdrawEntry {
        user: usize,
        drop: DropId,
    },
    JoinQueue {
        user: usize,
        drop: DropId,
    },
    JoinWaitlist {
        user: usize,
        drop: DropId,
        sku: Option<String>,
        quantity: u32,
    },
    LeaveWaitlist {
        user: usize,
        drop: DropId,
    },
    CancelDrop {
        creator: usize,
        drop: DropId,
    },
    Adjust {
        drop: DropId,
        sku: Option<String>,
        delta: i64,
    },
    Read {
        user: usize,
        what: u8,
        drop: Option<DropId>,
        product: Option<ProductId>,
    },
    Notifications {
        user: usize,
        mark: u8,
    },
}

/// How a drop the workload schedules allocates its units.
#[derive(Debug, Clone, Copy)]
enum Fair {
    FirstCome,
    /// A draw whose entries close this long after the start.
    Draw(Duration),
    /// First come, behind a waiting room.
    Room(WaitingRoom),
}

/// The admission token a buyer sends with an order: its own when admitted (asked
/// for just before), nothing, or a forged one, as `how` says (0 to 9: mostly its
/// own). Off a waiting-room drop, what the request had.
async fn with_admission(
    app: &Livedrop,
    model: &Model,
    buyer: &Actor,
    mut request: PlaceOrder,
    how: usize,
) -> PlaceOrder {
    if !model.rooms.contains(&request.drop_id) {
        return request;
    }
    request.admission_token = match how {
        0 => None,
        1 => Some(format!("v1.{}.00", i64::MAX)),
        _ => match app.queue_status(buyer, request.drop_id).await {
            Ok(status) if status.status == QueueState::Admitted => status.admission_token,
            _ => None,
        },
    };
    request
}

/// What a finished request tells the model.
enum Outcome {
    Place {
        key: String,
        reply: Reply<Order>,
    },
    Settle {
        order: OrderId,
        user: usize,
        confirm: bool,
        reply: Reply<Order>,
    },
    Extend {
        order: OrderId,
        reply: Reply<Order>,
    },
    Follow {
        user: usize,
        creator: usize,
        follow: bool,
        reply: Reply<()>,
        at: Timestamp,
    },
    Product {
        creator: usize,
        reply: Reply<Product>,
    },
    Drop {
        creator: usize,
        reply: Reply<(DropId, Vec<String>, Allocation, bool)>,
    },
    Other {
        what: &'static str,
        code: &'static str,
    },
    Fault {
        what: &'static str,
    },
}

type Task<'a> = Pin<Box<dyn Future<Output = Outcome> + 'a>>;

/// Runs `request` as a client would: it may give up after `patience` (dropping the
/// request wherever it is), and it gets no answer if the process dies.
async fn client<T>(
    kill: CancellationToken,
    patience: Option<Duration>,
    request: impl Future<Output = Result<T, Error>>,
) -> Reply<T> {
    let timed = async {
        match patience {
            Some(p) => tokio::time::timeout(p, request)
                .await
                .map_err(|_| Gone::Abandoned),
            None => Ok(request.await),
        }
    };
    tokio::select! {
        biased;
        _ = kill.cancelled() => Err(Gone::Killed),
        r = timed => r,
    }
}

// Everything `run_with` decided, handed over once; grouping it would only rename it.
#[allow(clippy::too_many_arguments)]
pub(super) async fn drive<S: Store>(
    seed: u64,
    config: &SimConfig,
    raw: Arc<S>,
    process_stores: Vec<Arc<S>>,
    timing: Timing,
    faults: Arc<Injector>,
    deployment: Deployment,
    leftovers: Leftovers,
) -> Report {
    let started = tokio::time::Instant::now();
    let origin = chrono::DateTime::from_timestamp(1_893_456_000, 0).unwrap_or_default();
    let clock = Arc::new(SimClock::new(origin));
    let mut world = World::new(
        raw.clone(),
        process_stores,
        faults.clone(),
        clock.clone(),
        deployment,
        timing.config.clone(),
    );
    let mut model = Model {
        users: Vec::new(),
        products: Vec::new(),
        drops: Vec::new(),
        skus: BTreeMap::new(),
        draws: Vec::new(),
        rooms: Vec::new(),
        keys: BTreeMap::new(),
        next_key: 0,
        told: BTreeMap::new(),
        extended: BTreeSet::new(),
        follows: BTreeMap::new(),
        trace: DefaultHasher::new(),
        requests: 0,
        graceful_shutdowns: 0,
        stepped_back: false,
    };
    let mut violations = Vec::new();

    // Users: made directly in the store (password hashing is deliberately slow and
    // runs on the blocking pool, outside virtual time), plus, in some seeds, one
    // registered through the service before anything else runs.
    let now = clock.now();
    let roles = [
        Role::Admin,
        Role::Creator,
        Role::Creator,
        Role::Customer,
        Role::Customer,
        Role::Customer,
        Role::Customer,
        Role::Customer,
        Role::Customer,
    ];
    for (i, role) in roles.into_iter().enumerate() {
        let user = User {
            id: UserId::new(),
            email: format!("user{i}-{seed}@sim.example.com"),
            display_name: format!("user {i}"),
            role,
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
            created_at: now,
        };
        if let Err(e) = raw.insert_user(&user).await {
            violations.push(end_violation(
                Check::ToldMatchesStore,
                None,
                format!("setup failed: {e}"),
            ));
        }
        model.users.push(SimUser {
            actor: Actor::new(user.id, role),
            creator: role == Role::Creator,
        });
    }
    if seed % 16 == 0 {
        faults.set_enabled(false);
        let registered = world
            .services(0)
            .register(Registration {
                email: format!("registered-{seed}@sim.example.com"),
                password: "correct horse battery".into(),
                display_name: "registered".into(),
                role: Role::Customer,
            })
            .await;
        match registered {
            Ok(user) => model.users.push(SimUser {
                actor: Actor::new(user.id, user.role),
                creator: false,
            }),
            Err(e) => violations.push(end_violation(
                Check::ToldMatchesStore,
                None,
                format!("registration failed without faults: {e}"),
            )),
        }
        faults.set_enabled(true);
    }
    for i in 0..world.procs.len() {
        world.start(i);
    }

    let mut lines = Lines::default();
    let mut fair = FairLog::default();
    for step in 0..config.steps {
        run_step(step, &mut world, &mut model, &timing).await;
        let think = faults.duration_up_to(timing.max_think);
        tokio::time::sleep(think).await;
        let latest = clock.latest();
        step_checks(step, &*raw, &model, latest, &mut lines, &mut violations).await;
        for (check, message) in fair_step_checks(&*raw, &model, latest, &mut fair).await {
            violations.push(Violation {
                check,
                class: None,
                step: Some(step),
                message,
            });
        }
        if violations.len() > 20 {
            break;
        }
    }

    settle(&mut world, &mut model, &timing, &leftovers, &mut violations).await;
    end_checks(&world, &model, &mut violations).await;
    world.stop_all();
    // Let the runtime drop what the dead processes' tasks held.
    tokio::time::sleep(Duration::from_millis(10)).await;
    leftover_checks(&world, &leftovers, &mut violations);

    let (known, violations): (Vec<_>, Vec<_>) = violations
        .into_iter()
        .partition(|v| v.class.is_some_and(|c| config.tolerate.contains(&c)));
    let counts = faults.counts();
    use std::sync::atomic::Ordering::Relaxed;
    Report {
        seed,
        trace: model.trace.finish(),
        steps: config.steps,
        requests: model.requests,
        deployment,
        rates: *faults.rates(),
        injected: [
            counts.before.load(Relaxed),
            counts.after.load(Relaxed),
            counts.delayed.load(Relaxed),
            counts.outage.load(Relaxed),
        ],
        virtual_time: started.elapsed(),
        violations,
        known,
    }
}

fn end_violation(check: Check, class: Option<KnownIssue>, message: String) -> Violation {
    Violation {
        check,
        class,
        step: None,
        message,
    }
}

/// Plans and runs one step: process faults, then a batch of concurrent requests.
async fn run_step<S: Store>(step: u32, world: &mut World<S>, model: &mut Model, timing: &Timing) {
    let faults = world.faults.clone();
    let rates = *faults.rates();

    // Restarts, clock jumps and outages happen between batches.
    for i in 0..world.procs.len() {
        if world.procs[i].app.is_none() && faults.roll(0.3) {
            world.start(i);
            model.record(step, "restart", "ok");
        }
    }
    if world.alive().is_empty() {
        let i = faults.pick(world.procs.len());
        world.start(i);
        model.record(step, "restart", "ok");
    }
    if faults.roll(rates.clock_jump) {
        let by = faults.duration_up_to(timing.max_jump);
        world
            .clock
            .jump(chrono::Duration::from_std(by).unwrap_or_default());
        model.record(step, "clock_jump", "ok");
    }
    if faults.roll(rates.clock_step_back) {
        let by = faults.duration_up_to(timing.max_step_back);
        world
            .clock
            .jump(-chrono::Duration::from_std(by).unwrap_or_default());
        model.record(step, "clock_step_back", "ok");
        model.stepped_back = true;
    }
    if faults.roll(rates.cache_outage) {
        faults.cache_outage(faults.duration_up_to(timing.max_outage));
        model.record(step, "cache_outage", "ok");
    }
    if faults.roll(rates.bus_outage) {
        faults.bus_outage(faults.duration_up_to(timing.max_outage));
        model.record(step, "bus_outage", "ok");
    }

    let alive = world.alive();
    let requests = 1 + faults.pick(4);
    let mut planned = Vec::new();
    for _ in 0..requests {
        let proc = alive[faults.pick(alive.len())];
        let patience = faults
            .roll(rates.abandon)
            .then(|| faults.duration_up_to(rates.max_latency.max(Duration::from_millis(1))));
        let action = plan(model, &faults, timing);
        planned.push((proc, patience, action));
    }
    let crash = faults.roll(rates.crash).then(|| {
        (
            alive[faults.pick(alive.len())],
            faults.duration_up_to(rates.max_latency.max(Duration::from_millis(1))),
        )
    });
    let shutdown =
        (alive.len() > 1 && faults.roll(rates.shutdown)).then(|| alive[faults.pick(alive.len())]);

    // A graceful shutdown runs alongside the batch, so it may land during a retry
    // backoff of a background task.
    let stopping = shutdown.and_then(|i| world.begin_shutdown(i));
    if stopping.is_some() {
        model.graceful_shutdowns += 1;
    }
    let clock = world.clock.clone();
    let model_ref: &Model = model;
    let mut tasks: Vec<Task<'_>> = Vec::new();
    for (proc, patience, action) in planned {
        let (Some(app), kill) = (
            world.procs[proc].app.clone(),
            world.procs[proc].kill.clone(),
        ) else {
            continue;
        };
        tasks.push(Box::pin(execute(
            app,
            kill,
            patience,
            action,
            model_ref,
            clock.clone(),
        )));
    }
    if let Some(background) = stopping {
        tasks.push(Box::pin(async move {
            background.shutdown().await;
            Outcome::Fault { what: "shutdown" }
        }));
    }
    let crash_at = crash.map(|(i, after)| (i, tokio::time::Instant::now() + after));
    let outcomes = match crash_at {
        None => futures::future::join_all(tasks).await,
        Some((i, at)) => {
            // The crash lands mid-batch: requests on that process are dropped wherever
            // they are, and so are its background tasks.
            let kill = world.procs[i].kill.clone();
            let batch = futures::future::join_all(tasks);
            tokio::pin!(batch);
            tokio::select! {
                biased;
                outcomes = &mut batch => outcomes,
                _ = tokio::time::sleep_until(at) => {
                    kill.cancel();
                    batch.await
                }
            }
        }
    };
    if let Some((i, _)) = crash {
        world.crash(i);
        model.record(step, "crash", "ok");
    }
    for outcome in outcomes {
        apply(step, model, outcome);
    }
}

/// Chooses the next request from what the clients know.
fn plan(model: &mut Model, faults: &Injector, timing: &Timing) -> Action {
    let users = model.users.len();
    let creators = model.creators();
    let creator = creators[faults.pick(creators.len())];
    let user = 1 + faults.pick(users - 1);
    let roll = faults.pick(100);
    let retry: Vec<String> = model
        .keys
        .iter()
        .filter(|(_, log)| log.decisions.last() == Some(&Decision::Retry))
        .map(|(k, _)| k.clone())
        .collect();
    let held: Vec<(OrderId, usize)> = model
        .told
        .iter()
        .filter(|(_, (_, t))| *t == Told::Placed)
        .map(|(id, (u, _))| (*id, *u))
        .collect();
    let n = faults.pick(1_000_000) as u64;
    let drop = || model.drops.get(faults.pick(model.drops.len())).map(|d| d.0);
    // A sku of `drop` as a client names it: always one of several, sometimes none
    // (or, rarely, one the drop does not sell).
    let sku_of = |drop: DropId| -> Option<String> {
        let skus = model.skus.get(&drop).map(Vec::as_slice).unwrap_or_default();
        match (skus.len(), faults.pick(20)) {
            (_, 0) => Some("no-such-size".to_owned()),
            (0, _) => None,
            (1, n) if n < 10 => None,
            (n, _) => Some(skus[faults.pick(n)].clone()),
        }
    };
    // Draw entries and waiting rooms, when there are such drops.
    let fair = (!model.draws.is_empty() || !model.rooms.is_empty()) && faults.roll(0.25);
    if fair && !model.products.is_empty() {
        let draw = (!model.draws.is_empty() && (model.rooms.is_empty() || faults.roll(0.5)))
            .then(|| model.draws[faults.pick(model.draws.len())]);
        if let Some(drop) = draw {
            return if faults.roll(0.85) {
                Action::EnterDraw {
                    user,
                    drop,
                    sku: sku_of(drop),
                    quantity: 1 + faults.pick(3) as u32,
                }
            } else {
                Action::WithdrawEntry { user, drop }
            };
        }
        let drop = model.rooms[faults.pick(model.rooms.len())];
        if faults.roll(0.5) {
            return Action::JoinQueue { user, drop };
        }
        let key = format!("k{}", model.next_key);
        model.next_key += 1;
        model.keys.insert(
            key.clone(),
            KeyLog {
                user,
                request: PlaceOrder {
                    admission_token: None,
                    drop_id: drop,
                    quantity: 1 + faults.pick(2) as u32,
                    sku: sku_of(drop),
                },
                decisions: Vec::new(),
            },
        );
        return Action::Place {
            key,
            admission: faults.pick(10),
        };
    }
    match roll {
        _ if model.products.is_empty() => Action::CreateProduct { creator, n },
        _ if model.drops.is_empty() || (roll < 6 && model.drops.len() < 8) => {
            let (product, owner) = model.products[faults.pick(model.products.len())];
            let later = if faults.roll(0.5) {
                Duration::ZERO
            } else {
                faults.duration_up_to(timing.max_start_delay)
            };
            Action::Schedule {
                creator: owner,
                product,
                later,
                length: timing.max_drop / 4 + faults.duration_up_to(timing.max_drop),
                stock: 1 + faults.pick(20) as u32,
                variants: if faults.roll(0.5) {
                    (0..1 + faults.pick(4))
                        .map(|i| (format!("size-{}", 40 + i), 1 + faults.pick(6) as u32))
                        .collect()
                } else {
                    Vec::new()
                },
                limit: faults.roll(0.7).then(|| 1 + faults.pick(5) as u32),
                fair: match faults.pick(10) {
                    0..=2 => Fair::Draw(
                        Duration::from_millis(100) + faults.duration_up_to(timing.max_drop / 4),
                    ),
                    3..=4 => Fair::Room(WaitingRoom {
                        admit_per_minute: [6, 20, 60, 120, 600][faults.pick(5)],
                        token_seconds: 10 + faults.pick(50) as u32,
                        opens_minutes_before: faults.pick(2) as u32,
                    }),
                    _ => Fair::FirstCome,
                },
            }
        }
        6..=35 => {
            let drop = drop().unwrap_or_default();
            let key = format!("k{}", model.next_key);
            model.next_key += 1;
            model.keys.insert(
                key.clone(),
                KeyLog {
                    user,
                    request: PlaceOrder {
                        admission_token: None,
                        drop_id: drop,
                        quantity: 1 + faults.pick(3) as u32,
                        sku: sku_of(drop),
                    },
                    decisions: Vec::new(),
                },
            );
            Action::Place {
                key,
                admission: faults.pick(10),
            }
        }
        36..=50 if !retry.is_empty() => Action::Place {
            key: retry[faults.pick(retry.len())].clone(),
            admission: faults.pick(10),
        },
        51..=57 if !held.is_empty() => {
            let (order, user) = held[faults.pick(held.len())];
            Action::Settle {
                order,
                user,
                confirm: faults.roll(0.6),
            }
        }
        58..=60 if !held.is_empty() => {
            let (order, user) = held[faults.pick(held.len())];
            Action::Extend { order, user }
        }
        61..=66 => Action::Follow {
            user,
            creator,
            follow: faults.roll(0.75),
        },
        67..=69 if model.products.len() < 6 => Action::CreateProduct { creator, n },
        70..=72 => {
            let (product, owner) = model.products[faults.pick(model.products.len())];
            Action::PatchProduct {
                creator: owner,
                product,
                n,
            }
        }
        73 => {
            let (drop, owner) = model.drops[faults.pick(model.drops.len())];
            Action::CancelDrop {
                creator: owner,
                drop,
            }
        }
        74..=78 => {
            let drop = drop().unwrap_or_default();
            let delta = if faults.roll(0.6) {
                1 + faults.pick(5) as i64
            } else {
                -(1 + faults.pick(3) as i64)
            };
            Action::Adjust {
                drop,
                sku: sku_of(drop),
                // A draw's winners come from its random seed, which a run does not
                // decide: whether a shrink finds its units would not replay.
                delta: if model.draws.contains(&drop) {
                    delta.abs()
                } else {
                    delta
                },
            }
        }
        79..=83 => Action::Notifications {
            user,
            mark: faults.pick(3) as u8,
        },
        84..=90 => {
            let drop = drop().unwrap_or_default();
            Action::JoinWaitlist {
                user,
                drop,
                sku: sku_of(drop),
                quantity: 1 + faults.pick(3) as u32,
            }
        }
        91..=92 => Action::LeaveWaitlist {
            user,
            drop: drop().unwrap_or_default(),
        },
        _ => {
            let product = model
                .products
                .get(faults.pick(model.products.len()))
                .map(|p| p.0);
            Action::Read {
                user,
                what: faults.pick(7) as u8,
                drop: drop(),
                product,
            }
        }
    }
}

async fn execute(
    app: Livedrop,
    kill: CancellationToken,
    patience: Option<Duration>,
    action: Action,
    model: &Model,
    clock: Arc<SimClock>,
) -> Outcome {
    let actor = |i: usize| model.users[i].actor;
    match action {
        Action::Place { key, admission } => {
            let Some(log) = model.keys.get(&key) else {
                return Outcome::Fault {
                    what: "no such key",
                };
            };
            let buyer = actor(log.user);
            let place = async {
                let request =
                    with_admission(&app, model, &buyer, log.request.clone(), admission).await;
                app.place_order(&buyer, Some(&key), request).await
            };
            let reply = client(kill, patience, place).await;
            Outcome::Place { key, reply }
        }
        Action::Settle {
            order,
            user,
            confirm,
        } => {
            let buyer = actor(user);
            let reply = if confirm {
                client(kill, patience, app.confirm_order(&buyer, order)).await
            } else {
                client(kill, patience, app.cancel_order(&buyer, order)).await
            };
            Outcome::Settle {
                order,
                user,
                confirm,
                reply,
            }
        }
        Action::Extend { order, user } => {
            let reply = client(kill, patience, app.extend_order(&actor(user), order)).await;
            Outcome::Extend { order, reply }
        }
        Action::Follow {
            user,
            creator,
            follow,
        } => {
            let (who, of) = (actor(user), model.users[creator].actor.id);
            let reply = if follow {
                client(kill, patience, app.follow(&who, of)).await
            } else {
                client(kill, patience, app.unfollow(&who, of)).await
            };
            Outcome::Follow {
                user,
                creator,
                follow,
                reply,
                // The clock's high-water mark, not its reading: the clock may have
                // stepped back, and an event stamped later than this was created
                // after the acknowledgement.
                at: clock.latest(),
            }
        }
        Action::CreateProduct { creator, n } => {
            let new = NewProduct {
                title: format!("Product {n}"),
                description: format!("limited run {n}"),
                price_cents: 100 + (n % 10_000) as i64,
                currency: "EUR".into(),
                image_url: None,
            };
            let reply = client(kill, patience, app.create_product(&actor(creator), new)).await;
            Outcome::Product { creator, reply }
        }
        Action::PatchProduct {
            creator,
            product,
            n,
        } => {
            let patch = ProductPatch {
                title: Some(format!("Product {n} (revised)")),
                price_cents: Some(100 + (n % 5_000) as i64),
                ..ProductPatch::default()
            };
            let reply = client(
                kill,
                patience,
                app.update_product(&actor(creator), product, patch),
            )
            .await;
            Outcome::Other {
                what: "patch_product",
                code: code(&reply),
            }
        }
        Action::Schedule {
            creator,
            product,
            later,
            length,
            stock,
            variants,
            limit,
            fair,
        } => {
            let now = clock.now();
            let starts_at = (!later.is_zero())
                .then(|| now + chrono::Duration::from_std(later).unwrap_or_default());
            let ends_at =
                starts_at.unwrap_or(now) + chrono::Duration::from_std(length).unwrap_or_default();
            let (allocation, entries_close_at, waiting_room) = match fair {
                Fair::FirstCome => (Allocation::FirstCome, None, None),
                Fair::Draw(after) => (
                    Allocation::Draw,
                    Some(
                        (starts_at.unwrap_or(now)
                            + chrono::Duration::from_std(after).unwrap_or_default())
                        .min(ends_at - chrono::Duration::milliseconds(1)),
                    ),
                    None,
                ),
                Fair::Room(room) => (Allocation::FirstCome, None, Some(room)),
            };
            let new = NewDrop {
                allocation,
                entries_close_at,
                waiting_room,
                product_id: product,
                starts_at,
                ends_at,
                total_stock: if variants.is_empty() { stock } else { 0 },
                variants: variants
                    .into_iter()
                    .map(|(sku, total_stock)| NewVariant {
                        label: sku.to_uppercase(),
                        sku,
                        total_stock,
                    })
                    .collect(),
                per_user_limit: limit,
            };
            let reply = client(kill, patience, app.schedule_drop(&actor(creator), new)).await;
            Outcome::Drop {
                creator,
                reply: reply.map(|r| {
                    r.map(|view| {
                        let skus = view.drop.variants.iter().map(|v| v.sku.clone()).collect();
                        let room = view.drop.waiting_room.is_some();
                        (view.drop.id, skus, view.drop.allocation(), room)
                    })
                }),
            }
        }
        Action::CancelDrop { creator, drop } => {
            let reply = client(kill, patience, app.cancel_drop(&actor(creator), drop)).await;
            Outcome::Other {
                what: "cancel_drop",
                code: code(&reply),
            }
        }
        Action::Adjust { drop, sku, delta } => {
            let adjustment = StockAdjustment {
                delta,
                reason: if delta > 0 {
                    "restock".into()
                } else {
                    "damaged".into()
                },
                sku,
            };
            let reply = client(kill, patience, app.adjust_stock(None, drop, adjustment)).await;
            Outcome::Other {
                what: "adjust",
                code: code(&reply),
            }
        }
        Action::JoinWaitlist {
            user,
            drop,
            sku,
            quantity,
        } => {
            let request = JoinWaitlist { sku, quantity };
            let reply = client(
                kill,
                patience,
                app.join_waitlist(&actor(user), drop, request),
            )
            .await;
            Outcome::Other {
                what: "join_waitlist",
                code: code(&reply),
            }
        }
        Action::EnterDraw {
            user,
            drop,
            sku,
            quantity,
        } => {
            let request = EnterDraw {
                sku,
                quantity: Some(quantity),
            };
            let reply = client(kill, patience, app.enter_draw(&actor(user), drop, request)).await;
            Outcome::Other {
                what: "enter_draw",
                code: code(&reply),
            }
        }
        Action::WithdrawEntry { user, drop } => {
            let reply = client(kill, patience, app.withdraw_entry(&actor(user), drop)).await;
            Outcome::Other {
                what: "withdraw_entry",
                code: code(&reply),
            }
        }
        Action::JoinQueue { user, drop } => {
            let reply = client(kill, patience, app.join_queue(&actor(user), drop)).await;
            Outcome::Other {
                what: "join_queue",
                code: code(&reply),
            }
        }
        Action::LeaveWaitlist { user, drop } => {
            let who = actor(user);
            let reply = client(kill.clone(), patience, app.waitlist_entry(&who, drop)).await;
            let code = match reply {
                Ok(Ok(_)) => code(&client(kill, patience, app.leave_waitlist(&who, drop)).await),
                other => code(&other),
            };
            Outcome::Other {
                what: "leave_waitlist",
                code,
            }
        }
        Action::Notifications { user, mark } => {
            let who = actor(user);
            let code = match mark {
                0 => code(
                    &client(
                        kill,
                        patience,
                        app.notifications(&who, false, PageRequest::first(20)),
                    )
                    .await,
                ),
                1 => code(&client(kill, patience, app.mark_all_notifications_read(&who)).await),
                _ => {
                    let reply = client(
                        kill.clone(),
                        patience,
                        app.notifications(&who, true, PageRequest::first(5)),
                    )
                    .await;
                    match reply {
                        Ok(Ok(page)) => match page.items.first() {
                            Some(n) => code(
                                &client(kill, patience, app.mark_notification_read(&who, n.id))
                                    .await,
                            ),
                            None => "ok",
                        },
                        other => code(&other),
                    }
                }
            };
            Outcome::Other {
                what: "notifications",
                code,
            }
        }
        Action::Read {
            user,
            what,
            drop,
            product,
        } => {
            let who = actor(user);
            let drop = drop.unwrap_or_default();
            let product = product.unwrap_or_default();
            let page = PageRequest::first(20);
            let code = match what {
                0 => code(&client(kill, patience, app.drop_view(drop)).await),
                1 => {
                    code(&client(kill, patience, app.list_drops(DropFilter::default(), page)).await)
                }
                2 => code(&client(kill, patience, app.product(product)).await),
                3 => code(
                    &client(
                        kill,
                        patience,
                        app.list_products(ProductFilter::default().with_query("limited"), page),
                    )
                    .await,
                ),
                4 => code(
                    &client(kill, patience, app.followers(model.users[1].actor.id, page)).await,
                ),
                5 => code(&client(kill, patience, app.my_orders(&who, page)).await),
                _ => code(
                    &client(
                        kill,
                        patience,
                        app.ledger(Some(&model.users[0].actor), drop, page),
                    )
                    .await,
                ),
            };
            Outcome::Other { what: "read", code }
        }
    }
}

/// Records what a client was told.
fn apply(step: u32, model: &mut Model, outcome: Outcome) {
    match outcome {
        Outcome::Place { key, reply } => {
            model.record(step, "place", code(&reply));
            if let Ok(Ok(order)) = &reply {
                let user = order_user(model, &key);
                model.told.entry(order.id).or_insert((user, Told::Placed));
            }
            if let Some(log) = model.keys.get_mut(&key) {
                log.decisions.push(Decision::of(&reply));
            }
        }
        Outcome::Settle {
            order,
            user,
            confirm,
            reply,
        } => {
            model.record(
                step,
                if confirm { "confirm" } else { "cancel" },
                code(&reply),
            );
            if let Ok(Ok(settled)) = &reply {
                let told = match settled.status {
                    OrderStatus::Confirmed => Told::Confirmed,
                    OrderStatus::Cancelled => Told::Cancelled,
                    _ => Told::Placed,
                };
                model.told.insert(order, (user, told));
            }
        }
        Outcome::Extend { order, reply } => {
            model.record(step, "extend", code(&reply));
            if matches!(reply, Ok(Ok(_)) | Ok(Err(Error::AlreadyExtended { .. }))) {
                model.extended.insert(order);
            }
        }
        Outcome::Follow {
            user,
            creator,
            follow,
            reply,
            at,
        } => {
            model.record(
                step,
                if follow { "follow" } else { "unfollow" },
                code(&reply),
            );
            let log = model.follows.entry((user, creator)).or_default();
            match (&reply, follow) {
                (Ok(Ok(())), true) if !log.unsure => {
                    log.acknowledged.get_or_insert(at);
                }
                _ => log.unsure = true,
            }
        }
        Outcome::Product { creator, reply } => {
            model.record(step, "create_product", code(&reply));
            if let Ok(Ok(product)) = reply {
                model.products.push((product.id, creator));
            }
        }
        Outcome::Drop { creator, reply } => {
            model.record(step, "schedule_drop", code(&reply));
            if let Ok(Ok((drop, skus, allocation, room))) = reply {
                model.drops.push((drop, creator));
                model.skus.insert(drop, skus);
                if allocation == Allocation::Draw {
                    model.draws.push(drop);
                }
                if room {
                    model.rooms.push(drop);
                }
            }
        }
        Outcome::Other { what, code } => model.record(step, what, code),
        Outcome::Fault { what } => model.record(step, what, "ok"),
    }
}

fn order_user(model: &Model, key: &str) -> usize {
    model.keys.get(key).map(|k| k.user).unwrap_or_default()
}

async fn all_pages<T, F, Fut>(mut fetch: F) -> StoreResult<Vec<T>>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = StoreResult<Page<T>>>,
{
    let mut items = Vec::new();
    let mut request = PageRequest::first(100);
    loop {
        let page = fetch(request).await?;
        items.extend(page.items);
        match page.next_cursor {
            Some(c) => request = PageRequest::first(100).after(Some(c)),
            None => return Ok(items),
        }
    }
}

/// After every step, from the store: the stock invariant of every variant, the
/// per-user limit across a drop's variants, every unit of a variant held by exactly
/// the orders that hold it (none offered twice, none lost), and the waitlists: no
/// unit available while someone waits for its variant, places numbered 1, 2, … in
/// join order. `latest` is the clock's high-water mark: a drop whose end it has not
/// reached has handed every unit that came back to its waitlist.
async fn step_checks<S: Store>(
    step: u32,
    raw: &S,
    model: &Model,
    latest: Timestamp,
    lines: &mut Lines,
    out: &mut Vec<Violation>,
) {
    let mut fail = |check, message: String| {
        out.push(Violation {
            check,
            class: None,
            step: Some(step),
            message,
        })
    };
    let mut limits = HashMap::new();
    for (drop, _) in &model.drops {
        match raw.drop_view(*drop).await {
            Ok(Some(view)) => {
                for (variant, stock) in view.variants() {
                    if !stock.is_consistent() {
                        fail(
                            Check::StockInvariant,
                            format!("drop {drop} variant {}: {stock:?}", variant.sku),
                        );
                    }
                }
                if view.variant_stock.len() != view.drop.variants.len() {
                    fail(
                        Check::StockInvariant,
                        format!(
                            "drop {drop}: {} variants, {} stocks",
                            view.drop.variants.len(),
                            view.variant_stock.len()
                        ),
                    );
                }
                limits.insert(*drop, view.drop.per_user_limit);
            }
            Ok(None) => fail(Check::StockInvariant, format!("drop {drop} vanished")),
            Err(e) => fail(
                Check::StockInvariant,
                format!("cannot read drop {drop}: {e}"),
            ),
        }
    }
    for user in &model.users {
        let id = user.actor.id;
        let orders = match all_pages(|p| raw.orders_for_user(id, p)).await {
            Ok(o) => o,
            Err(e) => {
                fail(Check::PerUserLimit, format!("cannot list orders: {e}"));
                continue;
            }
        };
        let mut held: HashMap<DropId, u32> = HashMap::new();
        let mut keys = BTreeSet::new();
        for order in &orders {
            if order.status.holds_stock() {
                *held.entry(order.drop_id).or_default() += order.quantity;
            }
            if !keys.insert(order.idempotency_key.as_str()) {
                fail(
                    Check::OneOrderPerKey,
                    format!("key {} made two orders", order.idempotency_key),
                );
            }
        }
        for (drop, units) in held {
            if let Some(limit) = limits.get(&drop) {
                if units > *limit {
                    fail(
                        Check::PerUserLimit,
                        format!("a buyer holds {units} units of drop {drop}, limit {limit}"),
                    );
                }
            }
        }
    }
    // What follows reads several rows one after another, which a background sweep
    // on a real database may change in between: a finding stands only if it is seen
    // on three reads in a row.
    let mut found = Vec::new();
    for attempt in 0..3 {
        let now;
        (found, now) = units_and_waitlists(raw, model, latest, lines).await;
        if found.is_empty() || attempt == 2 {
            *lines = now;
        }
        if found.is_empty() {
            break;
        }
        if attempt < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for (check, message) in found {
        fail(check, message);
    }
}

/// The waitlists as the last step's checks read them: each variant's line (buyer and
/// join time, in place order), and the waitlist offers each buyer had per drop.
#[derive(Debug, Default, Clone)]
pub(super) struct Lines {
    lines: HashMap<(DropId, String), Vec<(UserId, Timestamp)>>,
    offers: HashMap<(DropId, UserId), usize>,
}

/// Every unit of each variant held by exactly the orders that hold it, no unit
/// available while someone waits for its variant (on a drop taking orders whose end
/// the clock's high-water mark `latest` has not reached), places 1, 2, … in join
/// order, and no buyer offered units while one ahead of it in `before` (the last
/// step's lines) still waits in the same place: what is wrong, as read from the
/// store, and the lines now.
async fn units_and_waitlists<S: Store>(
    raw: &S,
    model: &Model,
    latest: Timestamp,
    before: &Lines,
) -> (Vec<(Check, String)>, Lines) {
    let mut now = Lines::default();
    let mut found = Vec::new();
    let mut fail = |check, message: String| found.push((check, message));
    let mut views = Vec::new();
    for (drop, _) in &model.drops {
        if let Ok(Some(view)) = raw.drop_view(*drop).await {
            views.push(view);
        }
    }
    // Units held per variant by the orders, (reserved, sold).
    let mut holding: HashMap<(DropId, String), (u32, u32)> = HashMap::new();
    for user in &model.users {
        let id = user.actor.id;
        let Ok(orders) = all_pages(|p| raw.orders_for_user(id, p)).await else {
            continue;
        };
        for order in &orders {
            if order.fingerprint == WAITLIST_FINGERPRINT {
                *now.offers.entry((order.drop_id, id)).or_default() += 1;
            }
            let units = holding
                .entry((order.drop_id, order.sku.clone()))
                .or_default();
            match order.status {
                OrderStatus::Reserved => units.0 += order.quantity,
                OrderStatus::Confirmed => units.1 += order.quantity,
                OrderStatus::Cancelled | OrderStatus::Expired => {}
            }
        }
    }
    for view in &views {
        let drop = view.drop.id;
        let mut lines: HashMap<&str, Vec<(u64, Timestamp, UserId)>> = HashMap::new();
        for user in &model.users {
            match raw.waitlist_entry(drop, user.actor.id).await {
                Ok(Some(entry)) => match view.drop.variant(&entry.sku) {
                    Some(variant) => lines.entry(variant.sku.as_str()).or_default().push((
                        entry.position,
                        entry.joined_at,
                        user.actor.id,
                    )),
                    None => fail(
                        Check::WaitlistOrder,
                        format!(
                            "drop {drop}: a buyer waits for {}, which it does not sell",
                            entry.sku
                        ),
                    ),
                },
                Ok(None) => {}
                Err(e) => fail(
                    Check::WaitlistOrder,
                    format!("cannot read a waitlist entry of drop {drop}: {e}"),
                ),
            }
        }
        let handing_off = view.drop.state != DropState::Cancelled && latest < view.drop.ends_at;
        for (variant, stock) in view.variants() {
            let (reserved, sold) = holding
                .get(&(drop, variant.sku.clone()))
                .copied()
                .unwrap_or_default();
            if (reserved, sold) != (stock.reserved, stock.sold) {
                fail(
                    Check::UnitsAccounted,
                    format!(
                        "drop {drop} variant {}: orders hold {reserved} reserved and {sold} sold, stock says {stock:?}",
                        variant.sku
                    ),
                );
            }
            let line = lines.get(variant.sku.as_str()).cloned().unwrap_or_default();
            if handing_off && stock.available > 0 && !line.is_empty() {
                fail(
                    Check::WaitlistHandoff,
                    format!(
                        "drop {drop} variant {}: {} unit(s) available while {} buyer(s) wait",
                        variant.sku,
                        stock.available,
                        line.len()
                    ),
                );
            }
            let mut positions: Vec<u64> = line.iter().map(|(p, _, _)| *p).collect();
            positions.sort_unstable();
            if positions.iter().copied().ne(1..=line.len() as u64) {
                fail(
                    Check::WaitlistOrder,
                    format!("drop {drop} variant {}: places {positions:?}", variant.sku),
                );
            }
            let mut by_place = line.clone();
            by_place.sort_unstable();
            now.lines.insert(
                (drop, variant.sku.clone()),
                by_place.iter().map(|(_, at, user)| (*user, *at)).collect(),
            );
            if !model.stepped_back && by_place.windows(2).any(|w| w[0].1 > w[1].1) {
                fail(
                    Check::WaitlistOrder,
                    format!(
                        "drop {drop} variant {}: places out of join order {by_place:?}",
                        variant.sku
                    ),
                );
            }
        }
    }
    // A buyer offered units since the last step (its line left, a new offer made)
    // while one ahead of it then still waits in the same place: served out of order.
    for ((drop, sku), line) in &before.lines {
        let current = now.lines.get(&(*drop, sku.clone()));
        let waits = |who: &(UserId, Timestamp)| current.is_some_and(|l| l.contains(who));
        for (i, served) in line.iter().enumerate() {
            let was = before.offers.get(&(*drop, served.0)).copied().unwrap_or(0);
            let is = now.offers.get(&(*drop, served.0)).copied().unwrap_or(0);
            if waits(served) || is <= was {
                continue;
            }
            if let Some(ahead) = line[..i].iter().find(|a| waits(a)) {
                fail(
                    Check::WaitlistOrder,
                    format!(
                        "drop {drop} variant {sku}: buyer {} was offered units while buyer {}, ahead of it, still waits",
                        served.0, ahead.0
                    ),
                );
            }
        }
    }
    (found, now)
}

/// What the fair-allocation checks carry from step to step: how far they read the
/// outbox, and how many `drop.drawn` events each drop has there.
#[derive(Debug, Default, Clone)]
pub(super) struct FairLog {
    read: i64,
    drawn: HashMap<DropId, u32>,
}

/// After every step: each draw ran at most once (one `drop.drawn` in the outbox),
/// and, read from the store until three reads in a row agree (background tasks
/// run meanwhile on a real database), the draws and the waiting rooms as
/// [`draw_findings`] and [`queue_findings`] check them.
async fn fair_step_checks<S: Store>(
    raw: &S,
    model: &Model,
    latest: Timestamp,
    log: &mut FairLog,
) -> Vec<(Check, String)> {
    let mut found = Vec::new();
    loop {
        match raw.appended_since(log.read, &[], 1_000).await {
            Ok(records) if records.is_empty() => break,
            Ok(records) => {
                for r in &records {
                    log.read = log.read.max(r.seq);
                    if r.event.kind != EventType::DropDrawn {
                        continue;
                    }
                    let drop = DropId(r.event.aggregate_id);
                    let n = log.drawn.entry(drop).or_default();
                    *n += 1;
                    if *n > 1 {
                        found.push((
                            Check::DrawOnce,
                            format!("drop {drop}: {n} drop.drawn events in the outbox"),
                        ));
                    }
                }
            }
            Err(e) => {
                found.push((Check::DrawOnce, format!("cannot read the outbox: {e}")));
                break;
            }
        }
    }
    let mut orders = Vec::new();
    for user in &model.users {
        let id = user.actor.id;
        match all_pages(|p| raw.orders_for_user(id, p)).await {
            Ok(list) => orders.extend(list),
            Err(e) => found.push((Check::DrawWinOrders, format!("cannot list orders: {e}"))),
        }
    }
    let mut findings = Vec::new();
    for attempt in 0..3 {
        findings = draw_findings(raw, model, &orders).await;
        findings.extend(queue_findings(raw, model, latest, &orders).await);
        if findings.is_empty() {
            break;
        }
        if attempt < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            orders.clear();
            for user in &model.users {
                let id = user.actor.id;
                if let Ok(list) = all_pages(|p| raw.orders_for_user(id, p)).await {
                    orders.extend(list);
                }
            }
        }
    }
    found.extend(findings);
    found
}

/// A draw drop's entries in rank order, every page.
async fn ranked_entries<S: Store>(
    raw: &S,
    drop: DropId,
) -> StoreResult<Vec<livedrop_core::model::DrawEntry>> {
    let mut all = Vec::new();
    loop {
        let after = all
            .last()
            .and_then(|e: &livedrop_core::model::DrawEntry| e.rank)
            .unwrap_or(0);
        let page = raw.draw_entries(drop, after, 100).await?;
        let done = page.len() < 100;
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}

/// Each drawn draw: the revealed seed matches the commitment; the published ranking
/// is the one recomputed from the seed (SHA-256 of `seed:token`, ascending), ranks
/// 1, 2, …; every entry won or lost; each win has exactly one order (its whole
/// quantity of its variant, reserved for its buyer under `draw:<order id>`) and
/// every draw order of the drop is a win's; the units wins hold per variant are
/// within its stock. Before the draw: no seed, nothing published, entries pending.
async fn draw_findings<S: Store>(raw: &S, model: &Model, orders: &[Order]) -> Vec<(Check, String)> {
    let mut found = Vec::new();
    let mut fail = |check, message: String| found.push((check, message));
    for &id in &model.draws {
        let view = match raw.drop_view(id).await {
            Ok(Some(view)) => view,
            Ok(None) => {
                fail(Check::DrawResults, format!("draw drop {id} vanished"));
                continue;
            }
            Err(e) => {
                fail(Check::DrawResults, format!("cannot read drop {id}: {e}"));
                continue;
            }
        };
        let Some(draw) = &view.drop.draw else {
            fail(Check::DrawResults, format!("drop {id} lost its draw"));
            continue;
        };
        let entries = match ranked_entries(raw, id).await {
            Ok(entries) => entries,
            Err(e) => {
                fail(
                    Check::DrawRanking,
                    format!("cannot read drop {id}'s ranking: {e}"),
                );
                continue;
            }
        };
        let Some(seed) = &draw.seed else {
            if draw.drawn_at.is_some() || !entries.is_empty() {
                fail(
                    Check::DrawRanking,
                    format!("drop {id}: results published before the seed"),
                );
            }
            for user in &model.users {
                if let Ok(Some(e)) = raw.draw_entry(id, user.actor.id).await {
                    if e.result != DrawResult::Pending || e.order_id.is_some() {
                        fail(
                            Check::DrawResults,
                            format!("drop {id}: an entry is {:?} before the draw", e.result),
                        );
                    }
                }
            }
            continue;
        };
        if Draw::commitment_of(seed) != draw.commitment {
            fail(
                Check::DrawRanking,
                format!("drop {id}: the seed does not match the commitment"),
            );
        }
        let mut recomputed: Vec<(String, String)> = entries
            .iter()
            .map(|e| {
                (
                    Draw::commitment_of(&format!("{seed}:{}", e.token)),
                    e.token.clone(),
                )
            })
            .collect();
        recomputed.sort();
        let published: Vec<&str> = entries.iter().map(|e| e.token.as_str()).collect();
        let expected: Vec<&str> = recomputed.iter().map(|(_, t)| t.as_str()).collect();
        let ranks_ok = entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.rank == Some(i as u64 + 1));
        if published != expected || !ranks_ok {
            fail(
                Check::DrawRanking,
                format!("drop {id}: the published ranking is not the seed's"),
            );
        }
        let mut held: HashMap<&str, u32> = HashMap::new();
        let mut wins = BTreeSet::new();
        for e in &entries {
            match (e.result, e.order_id) {
                (DrawResult::Pending, _) => fail(
                    Check::DrawResults,
                    format!("drop {id}: entry {} still pending after the draw", e.token),
                ),
                (DrawResult::Lost, None) => {}
                (DrawResult::Lost, Some(_)) | (DrawResult::Won, None) => fail(
                    Check::DrawWinOrders,
                    format!(
                        "drop {id}: entry {} is {:?} with order {:?}",
                        e.token, e.result, e.order_id
                    ),
                ),
                (DrawResult::Won, Some(order)) => {
                    if !wins.insert(order) {
                        fail(
                            Check::DrawWinOrders,
                            format!("drop {id}: order {order} won twice"),
                        );
                    }
                    let Some(o) = orders.iter().find(|o| o.id == order) else {
                        fail(
                            Check::DrawWinOrders,
                            format!(
                                "drop {id}: entry {} won order {order}, which is missing",
                                e.token
                            ),
                        );
                        continue;
                    };
                    if o.user_id != e.user_id
                        || o.drop_id != id
                        || o.sku != e.sku
                        || o.quantity != e.quantity
                        || o.fingerprint != DRAW_FINGERPRINT
                        || o.idempotency_key != format!("draw:{}", o.id)
                    {
                        fail(
                            Check::DrawWinOrders,
                            format!("drop {id}: order {order} does not fit entry {}", e.token),
                        );
                    }
                    if o.status.holds_stock() {
                        *held.entry(e.sku.as_str()).or_default() += o.quantity;
                    }
                }
            }
        }
        for o in orders.iter().filter(|o| o.drop_id == id) {
            if !wins.contains(&o.id) {
                fail(
                    Check::DrawWinOrders,
                    format!(
                        "drop {id}: order {} ({}) is no entry's win",
                        o.id, o.fingerprint
                    ),
                );
            }
        }
        for (variant, stock) in view.variants() {
            let units = held.get(variant.sku.as_str()).copied().unwrap_or(0);
            if units > stock.total || !stock.is_consistent() {
                fail(
                    Check::DrawAwards,
                    format!(
                        "drop {id} variant {}: wins hold {units} units of {stock:?}",
                        variant.sku
                    ),
                );
            }
        }
    }
    found
}

/// Each waiting room: the pre-queue (who joined before the start) holds places 1
/// to k, admitted one interval apart from the start; later arrivals hold the next
/// places in join order, each admitted at least one interval after the one before
/// and after the whole pre-queue; the admissions so far (`admitted_through` at the
/// clock's high-water mark `latest`) are those times and never more than the rate
/// allows since the start. Every order on a room's drop (waitlist offers aside)
/// was placed by an admitted buyer while the admission lasted.
async fn queue_findings<S: Store>(
    raw: &S,
    model: &Model,
    latest: Timestamp,
    orders: &[Order],
) -> Vec<(Check, String)> {
    let mut found = Vec::new();
    let mut fail = |check, message: String| found.push((check, message));
    for &id in &model.rooms {
        let drop = match raw.drop_by_id(id).await {
            Ok(Some(drop)) => drop,
            _ => continue,
        };
        let Some(room) = drop.waiting_room else {
            fail(
                Check::QueueOrder,
                format!("drop {id} lost its waiting room"),
            );
            continue;
        };
        let interval = room.interval();
        let mut queue = Vec::new();
        let mut entries = HashMap::new();
        for user in &model.users {
            match raw.queue_entry(id, user.actor.id).await {
                Ok(Some(e)) => {
                    queue.push((e.position, e.admit_at, e.joined_at));
                    entries.insert(user.actor.id, e);
                }
                Ok(None) => {}
                Err(e) => fail(Check::QueueOrder, format!("cannot read a queue entry: {e}")),
            }
        }
        queue.sort();
        // The pre-queue: who joined before the start, ahead of every later arrival
        // (a join stamped before the start that came after a later arrival, from a
        // process whose clock is behind, queues behind as one).
        let k = queue
            .iter()
            .take_while(|(_, _, joined)| *joined < drop.starts_at)
            .count();
        let (pre, post) = queue.split_at(k);
        if queue.iter().map(|p| p.0).ne(1..=queue.len() as u64) {
            fail(
                Check::QueueOrder,
                format!(
                    "drop {id}: places {:?}",
                    queue.iter().map(|p| p.0).collect::<Vec<_>>()
                ),
            );
        }
        // Joins reach the store in their own order (a delayed request comes late),
        // so a later arrival's slot is checked against its join, not its neighbours'.
        for (position, admit_at, joined) in post {
            if admit_at < joined {
                fail(
                    Check::QueueOrder,
                    format!("drop {id}: place {position} admitted at {admit_at}, before it joined at {joined}"),
                );
            }
        }
        for (position, admit_at, _) in pre {
            if *admit_at != room.pre_queue_slot(drop.starts_at, *position) {
                fail(
                    Check::QueueRate,
                    format!("drop {id}: place {position} of the pre-queue admitted at {admit_at}"),
                );
            }
        }
        if let (Some(last), Some(first)) = (pre.last(), post.first()) {
            if first.1 <= last.1 {
                fail(
                    Check::QueueOrder,
                    format!(
                        "drop {id}: place {} (a later arrival) admitted at {} before place {} of the pre-queue at {}",
                        first.0, first.1, last.0, last.1
                    ),
                );
            }
        }
        let mut previous = pre.last().map(|p| p.1);
        for (position, admit_at, _) in post {
            let earliest = previous.map_or(drop.starts_at, |p| p + interval);
            if *admit_at < earliest {
                fail(
                    Check::QueueRate,
                    format!(
                        "drop {id} (starting {}, one every {interval}): place {position} admitted at {admit_at}, less than an interval after the one before (queue before the start {pre:?}, after {post:?})",
                        drop.starts_at
                    ),
                );
            }
            previous = Some(*admit_at);
        }
        let admitted = queue.iter().filter(|p| p.1 <= latest).count() as u64;
        match raw.admitted_through(id, latest).await {
            Ok(n) => {
                let allowed = if latest < drop.starts_at {
                    0
                } else {
                    let elapsed = (latest - drop.starts_at)
                        .num_microseconds()
                        .unwrap_or(i64::MAX);
                    let step = interval.num_microseconds().unwrap_or(1).max(1);
                    u64::try_from(elapsed / step + 1).unwrap_or(u64::MAX)
                };
                if n != admitted || n > allowed {
                    fail(
                        Check::QueueRate,
                        format!(
                            "drop {id}: {n} admitted by {latest} ({admitted} by their times), the rate allows {allowed}"
                        ),
                    );
                }
            }
            Err(e) => fail(Check::QueueRate, format!("cannot count admissions: {e}")),
        }
        let lasts = chrono::Duration::seconds(i64::from(room.token_seconds));
        for o in orders
            .iter()
            .filter(|o| o.drop_id == id && o.fingerprint != WAITLIST_FINGERPRINT)
        {
            let admitted = entries.get(&o.user_id).is_some_and(|e| {
                model.stepped_back
                    || (e.admit_at <= o.created_at && o.created_at < e.admit_at + lasts)
            });
            if !admitted {
                fail(
                    Check::AdmissionRequired,
                    format!(
                        "drop {id}: order {} placed at {} without an admission ({:?})",
                        o.id,
                        o.created_at,
                        entries.get(&o.user_id).map(|e| e.admit_at)
                    ),
                );
            }
        }
    }
    found
}

/// Stops faults and client traffic and lets the system settle: leases, holds, drops
/// and TTLs all run out; then one last stock change per drop that every live feed
/// must see.
async fn settle<S: Store>(
    world: &mut World<S>,
    model: &mut Model,
    timing: &Timing,
    leftovers: &Leftovers,
    out: &mut Vec<Violation>,
) {
    world.faults.settle();
    let config = &timing.config;
    // Requests that went away gave their idempotency claims back (their guards'
    // releases run on their own once the request is dropped), unless an injected
    // fault kept a release from the store. Checked before clients retry, since a
    // retry takes an abandoned claim over once its lease runs out.
    if let Some(pending) = &leftovers.pending_claims {
        tokio::time::sleep(timing.max_outage + config.tick).await;
        let excused = world.faults.excused_claims();
        let left: Vec<(UserId, String)> = pending()
            .into_iter()
            .filter(|claim| !excused.contains(claim))
            .collect();
        if !left.is_empty() {
            out.push(end_violation(
                Check::NothingLeftBehind,
                None,
                format!(
                    "{} idempotency claim(s) left pending by requests that went away: {:?}",
                    left.len(),
                    left.iter().map(|(_, key)| key).collect::<Vec<_>>()
                ),
            ));
        }
    }
    for i in 0..world.procs.len() {
        if world.procs[i].app.is_none() {
            world.start(i);
        }
    }
    tokio::time::sleep(config.idempotency_lease + config.tick * 2).await;

    // Clients retry what they never got an answer to, as real clients do.
    let keys: Vec<String> = model
        .keys
        .iter()
        .filter(|(_, log)| log.decisions.last() == Some(&Decision::Retry))
        .map(|(k, _)| k.clone())
        .collect();
    for key in keys {
        for _ in 0..3 {
            let Some(app) = world.procs[0].app.clone() else {
                break;
            };
            let Some(log) = model.keys.get(&key) else {
                break;
            };
            let buyer = model.users[log.user].actor;
            let request = with_admission(&app, model, &buyer, log.request.clone(), 9).await;
            let reply: Reply<Order> = Ok(app.place_order(&buyer, Some(&key), request).await);
            let retry = Decision::of(&reply) == Decision::Retry;
            apply(
                u32::MAX,
                model,
                Outcome::Place {
                    key: key.clone(),
                    reply,
                },
            );
            if !retry {
                break;
            }
            tokio::time::sleep(config.idempotency_lease).await;
        }
    }

    // Let every hold, drop window and TTL run out.
    let mut horizon = world.clock.now();
    for (drop, _) in &model.drops {
        if let Ok(Some(d)) = world.raw.drop_by_id(*drop).await {
            horizon = horizon.max(d.ends_at);
        }
    }
    let hold = chrono::Duration::from_std(config.hold).unwrap_or_default();
    let wait = (horizon + hold - world.clock.now())
        .to_std()
        .unwrap_or_default()
        + config.entity_ttl
        + config.tick * 4;
    tokio::time::sleep(wait).await;

    // One more stock change per drop, now that every process's live feed is open.
    if let Some(app) = world.procs[0].app.clone() {
        let drops: Vec<DropId> = model.drops.iter().map(|d| d.0).collect();
        for drop in drops {
            let skus = model.skus.get(&drop).cloned().unwrap_or_default();
            for sku in skus {
                let restock = StockAdjustment {
                    delta: 1,
                    reason: "final restock".into(),
                    sku: Some(sku),
                };
                let reply: Reply<_> = Ok(app.adjust_stock(None, drop, restock).await);
                model.record(u32::MAX, "final_restock", code(&reply));
            }
        }
    }
    let ttl = config.stock_ttl.max(config.listing_ttl);
    tokio::time::sleep(ttl + config.tick * 4 + Duration::from_secs(1)).await;
}

async fn end_checks<S: Store>(world: &World<S>, model: &Model, out: &mut Vec<Violation>) {
    let raw = &*world.raw;
    let now = world.clock.now();
    let mut fail = |check, class, message: String| out.push(end_violation(check, class, message));

    match raw.backlog().await {
        Ok(0) => {}
        Ok(n) => fail(
            Check::OutboxDrained,
            None,
            format!("{n} events never published"),
        ),
        Err(e) => fail(
            Check::OutboxDrained,
            None,
            format!("cannot read the outbox: {e}"),
        ),
    }

    // Orders as the store has them, per buyer.
    let mut orders: HashMap<OrderId, Order> = HashMap::new();
    let mut by_key: HashMap<(UserId, String), OrderId> = HashMap::new();
    for user in &model.users {
        let id = user.actor.id;
        match all_pages(|p| raw.orders_for_user(id, p)).await {
            Ok(list) => {
                for order in list {
                    if by_key
                        .insert((id, order.idempotency_key.clone()), order.id)
                        .is_some()
                    {
                        fail(
                            Check::OneOrderPerKey,
                            None,
                            format!("key {} made two orders", order.idempotency_key),
                        );
                    }
                    orders.insert(order.id, order);
                }
            }
            Err(e) => fail(
                Check::ToldMatchesStore,
                None,
                format!("cannot list orders: {e}"),
            ),
        }
    }

    // What clients were told against the store.
    for (id, (user, told)) in &model.told {
        let Some(order) = orders.get(id) else {
            fail(
                Check::ToldMatchesStore,
                None,
                format!("order {id} was placed but is not in the store"),
            );
            continue;
        };
        let consistent = order.user_id == model.users[*user].actor.id
            && match told {
                Told::Placed => true,
                Told::Confirmed => order.status == OrderStatus::Confirmed,
                Told::Cancelled => order.status == OrderStatus::Cancelled,
            };
        if !consistent {
            fail(
                Check::ToldMatchesStore,
                None,
                format!("order {id}: told {told:?}, stored {:?}", order.status),
            );
        }
    }
    for id in &model.extended {
        if orders.get(id).is_some_and(|o| o.extended_at.is_none()) {
            fail(
                Check::ToldMatchesStore,
                None,
                format!("order {id}: told extended, stored never extended"),
            );
        }
    }
    for (key, log) in &model.keys {
        let buyer = model.users[log.user].actor.id;
        let stored = by_key.get(&(buyer, key.clone()));
        let mut first: Option<&Decision> = None;
        for decision in &log.decisions {
            if *decision == Decision::Retry {
                continue;
            }
            match first {
                None => first = Some(decision),
                Some(f) if f != decision => {
                    // A stored refusal replays forever, so a refusal followed by any
                    // other decision means the refusal was never stored; a refusal
                    // after an order was made is a retry that did not find it.
                    let class = match (f, stored, decision) {
                        (Decision::Refused(_), _, _) => Some(KnownIssue::IdempotencyClaimLost),
                        (_, Some(_), Decision::Refused(_)) => Some(KnownIssue::AmbiguousRetry),
                        _ => None,
                    };
                    fail(
                        Check::RetryGetsFirstDecision,
                        class,
                        format!("key {key}: first {f:?}, then {decision:?}"),
                    );
                }
                Some(_) => {}
            }
        }
        match (first, stored) {
            (Some(Decision::Placed(id)), Some(s)) if id != s => {
                fail(
                    Check::ToldMatchesStore,
                    None,
                    format!("key {key}: told order {id}, stored {s}"),
                );
            }
            (Some(Decision::Refused(e)), Some(s)) => {
                let class = if log.decisions.contains(&Decision::Placed(*s)) {
                    KnownIssue::IdempotencyClaimLost
                } else {
                    KnownIssue::AmbiguousRetry
                };
                fail(
                    Check::RetryGetsFirstDecision,
                    Some(class),
                    format!(
                        "key {key}: refused ({}) although order {s} was made under it",
                        e.code()
                    ),
                );
            }
            _ => {}
        }
    }

    // Notifications every committed event calls for.
    let events = world.faults.committed_events();
    let mut notes: HashMap<UserId, Vec<Notification>> = HashMap::new();
    for user in &model.users {
        let id = user.actor.id;
        match all_pages(|p| raw.notifications(id, false, p)).await {
            Ok(list) => {
                notes.insert(id, list);
            }
            Err(e) => fail(
                Check::EventsHandled,
                None,
                format!("cannot list notifications: {e}"),
            ),
        }
    }
    let count = |user: UserId, kind: NotificationKind, field: &str, id: String| {
        notes.get(&user).map_or(0, |list| {
            list.iter()
                .filter(|n| {
                    n.kind == kind
                        && n.payload.get(field).and_then(|v| v.as_str()) == Some(id.as_str())
                })
                .count()
        })
    };
    let event_class = if model.graceful_shutdowns > 0 {
        Some(KnownIssue::ShutdownCommitsUnhandled)
    } else {
        None
    };
    let mut extended_once = BTreeSet::new();
    let mut offered_orders = BTreeSet::new();
    for event in &events {
        let payload = match event.decode() {
            Ok(payload) => payload,
            Err(e) => {
                fail(
                    Check::EventsHandled,
                    None,
                    format!("event {} cannot be read: {e}", event.id),
                );
                continue;
            }
        };
        let order_notice = match payload {
            EventPayload::DropStarted(drop) => {
                for (&(user, of), log) in &model.follows {
                    let stable =
                        log.acknowledged.is_some_and(|at| at < event.occurred_at) && !log.unsure;
                    if !stable || model.users[of].actor.id != drop.creator_id {
                        continue;
                    }
                    let n = count(
                        model.users[user].actor.id,
                        NotificationKind::DropLive,
                        "drop_id",
                        drop.id.to_string(),
                    );
                    if n != 1 {
                        fail(
                            Check::EventsHandled,
                            event_class,
                            format!("a follower has {n} drop_live for drop {}", drop.id),
                        );
                    }
                }
                None
            }
            EventPayload::OrderConfirmed(order) => {
                Some((order.id, NotificationKind::OrderConfirmed))
            }
            EventPayload::OrderExpired(order) => Some((order.id, NotificationKind::OrderExpired)),
            EventPayload::WaitlistOffered(entry) => {
                let Some(offer) = entry.order.as_ref() else {
                    fail(
                        Check::WaitlistOrder,
                        None,
                        format!("waitlist offer {} names no order", event.id),
                    );
                    continue;
                };
                if !offered_orders.insert(offer.id) {
                    fail(
                        Check::UnitsAccounted,
                        None,
                        format!("order {} was offered twice", offer.id),
                    );
                }
                if offer.fingerprint != WAITLIST_FINGERPRINT
                    || offer.quantity == 0
                    || offer.quantity > entry.quantity
                    || offer.sku != entry.sku
                {
                    fail(
                        Check::WaitlistOrder,
                        None,
                        format!("waitlist offer {} does not fit its entry", offer.id),
                    );
                }
                Some((offer.id, NotificationKind::WaitlistOffer))
            }
            EventPayload::OrderExtended(order) => {
                if !extended_once.insert(order.id) {
                    fail(
                        Check::ToldMatchesStore,
                        None,
                        format!("order {} was extended twice", order.id),
                    );
                }
                None
            }
            // Notifications this check does not count (`drop_scheduled`, `low_stock`,
            // `sold_out`), or events that call for none.
            EventPayload::ProductCreated(_)
            | EventPayload::ProductUpdated(_)
            | EventPayload::DropScheduled(_)
            | EventPayload::DropEnded(_)
            | EventPayload::DropSoldOut(_)
            | EventPayload::DropCancelled(_)
            | EventPayload::StockChanged(_)
            | EventPayload::OrderPlaced(_)
            | EventPayload::OrderCancelled(_)
            | EventPayload::WaitlistSkipped(_)
            | EventPayload::WaitlistClosed(_)
            | EventPayload::UserFollowed(_)
            | EventPayload::DropDrawn(_)
            | EventPayload::DrawWon(_)
            | EventPayload::DrawLost(_) => None,
        };
        let Some((id, kind)) = order_notice else {
            continue;
        };
        let Some(order) = orders.get(&id) else {
            continue;
        };
        let n = count(order.user_id, kind, "order_id", order.id.to_string());
        if n != 1 {
            fail(
                Check::EventsHandled,
                event_class,
                format!("order {} has {n} {} notifications", order.id, kind.as_str()),
            );
        }
    }

    // Draws: each ran once, if its entries closed (and it was not cancelled first);
    // each entry told its result once per `draw.won` / `draw.lost`, and every entry
    // of a drawn drop has one of them, a winner its `draw.won`.
    let mut drawn: HashMap<uuid::Uuid, usize> = HashMap::new();
    let mut results: HashMap<String, (usize, usize)> = HashMap::new();
    for event in &events {
        match event.kind {
            EventType::DropDrawn => *drawn.entry(event.aggregate_id).or_default() += 1,
            EventType::DrawWon | EventType::DrawLost => {
                let Ok(EventPayload::DrawWon(draw) | EventPayload::DrawLost(draw)) = event.decode()
                else {
                    continue;
                };
                let (kind, counts) = (
                    if event.kind == EventType::DrawWon {
                        NotificationKind::DrawWon
                    } else {
                        NotificationKind::DrawLost
                    },
                    results.entry(draw.entry.token.clone()).or_default(),
                );
                if kind == NotificationKind::DrawWon {
                    counts.0 += 1;
                } else {
                    counts.1 += 1;
                }
                let n = count(draw.entry.user_id, kind, "token", draw.entry.token.clone());
                if n != 1 {
                    fail(
                        Check::DrawNotices,
                        event_class,
                        format!(
                            "entry {} of drop {} has {n} {} notifications",
                            draw.entry.token,
                            draw.entry.drop_id,
                            kind.as_str()
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    for &id in &model.draws {
        let Ok(Some(drop)) = raw.drop_by_id(id).await else {
            continue;
        };
        let Some(draw) = &drop.draw else { continue };
        let events = drawn.get(&id.0).copied().unwrap_or(0);
        let due = drop.state != DropState::Cancelled && draw.entries_close_at <= now;
        if events > 1
            || (draw.drawn_at.is_some() && events != 1)
            || (due && draw.drawn_at.is_none())
        {
            fail(
                Check::DrawOnce,
                None,
                format!(
                    "drop {id}: drawn at {:?} with {events} drop.drawn event(s), entries closed at {}",
                    draw.drawn_at, draw.entries_close_at
                ),
            );
        }
        let entries = ranked_entries(raw, id).await.unwrap_or_default();
        for e in &entries {
            let (won, lost) = results.get(&e.token).copied().unwrap_or_default();
            let fits = match e.result {
                DrawResult::Won => won == 1 && lost <= 1,
                DrawResult::Lost => won == 0 && lost == 1,
                DrawResult::Pending => false,
            };
            if !fits {
                fail(
                    Check::DrawNotices,
                    None,
                    format!(
                        "entry {} of drop {id} is {:?} after {won} draw.won and {lost} draw.lost",
                        e.token, e.result
                    ),
                );
            }
        }
    }

    // Every process: no leftovers, caches equal to the store, complete live feed.
    let mut drops = Vec::new();
    let (all_drops, all_products) = (DropFilter::default(), ProductFilter::default());
    match all_pages(|p| raw.list_drops(&all_drops, now, p)).await {
        Ok(list) => drops = list,
        Err(e) => fail(
            Check::CachesConverge,
            None,
            format!("cannot list drops: {e}"),
        ),
    }
    let products = all_pages(|p| raw.list_products(&all_products, p))
        .await
        .unwrap_or_default();
    let last_version = stock_versions(&events);
    for (i, p) in world.procs.iter().enumerate() {
        let Some(app) = &p.app else { continue };
        let leaked = app.cache().in_flight();
        let class = (leaked > 0).then_some(KnownIssue::SingleFlightLeak);
        if leaked > 0 {
            fail(
                Check::NothingLeftBehind,
                class,
                format!("process {i}: {leaked} single-flight load(s) left behind"),
            );
        }
        for view in &drops {
            match app.drop_view(view.drop.id).await {
                Ok(seen) if seen == *view => {}
                Ok(seen) => fail(
                    Check::CachesConverge,
                    class,
                    format!(
                        "process {i} shows drop {} as {:?} {:?}, store has {:?} {:?}",
                        view.drop.id, seen.drop.state, seen.stock, view.drop.state, view.stock
                    ),
                ),
                Err(e) => fail(
                    Check::CachesConverge,
                    class,
                    format!("process {i} cannot read drop {}: {e}", view.drop.id),
                ),
            }
            for variant in &view.drop.variants {
                let key = (view.drop.id.0, variant.sku.clone());
                let Some(&v) = last_version.get(&key) else {
                    continue;
                };
                let seen = p
                    .live
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&key)
                    .copied()
                    .unwrap_or(0);
                if seen < v {
                    let class =
                        (!world.deployment.shared_bus).then_some(KnownIssue::NoSharedBroker);
                    fail(Check::LiveFeedsComplete, class, format!("process {i}'s live feed shows stock version {seen} of drop {} variant {}, last is {v}", view.drop.id, variant.sku));
                }
            }
        }
        for product in &products {
            match app.product(product.id).await {
                Ok(seen) if seen == *product => {}
                Ok(seen) => fail(
                    Check::CachesConverge,
                    class,
                    format!(
                        "process {i} shows product {} at version {}, store has {}",
                        product.id, seen.version, product.version
                    ),
                ),
                Err(e) => fail(
                    Check::CachesConverge,
                    class,
                    format!("process {i} cannot read product {}: {e}", product.id),
                ),
            }
        }
        let first = PageRequest::first(50);
        match (
            app.list_drops(DropFilter::default(), first).await,
            raw.list_drops(&DropFilter::default(), world.clock.now(), first)
                .await,
        ) {
            (Ok(a), Ok(b)) if a.items == b.items => {}
            (Ok(_), Ok(_)) => fail(
                Check::CachesConverge,
                class,
                format!("process {i}'s drop listing differs from the store"),
            ),
            (a, b) => fail(
                Check::CachesConverge,
                class,
                format!("process {i}: listing failed: {:?} / {:?}", a.err(), b.err()),
            ),
        }
        if app.cache().in_flight() > 0 && leaked == 0 {
            fail(
                Check::NothingLeftBehind,
                None,
                format!("process {i}: a single-flight load outlived its read"),
            );
        }
    }
}

/// Once every process is dead: no bus subscription and no combiner queue is left.
fn leftover_checks<S: Store>(world: &World<S>, leftovers: &Leftovers, out: &mut Vec<Violation>) {
    let open = world.open_subscriptions();
    if open > 0 {
        out.push(end_violation(
            Check::NothingLeftBehind,
            None,
            format!("{open} bus subscription(s) outlived their process"),
        ));
    }
    if let Some(queues) = &leftovers.combiner_queues {
        let left = queues();
        if left > 0 {
            out.push(end_violation(
                Check::NothingLeftBehind,
                None,
                format!("{left} order combiner queue(s) left registered"),
            ));
        }
    }
}

/// The last stock version per drop and variant among `events`.
fn stock_versions(events: &[Event]) -> BTreeMap<(uuid::Uuid, String), i64> {
    let mut last = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == EventType::StockChanged) {
        let Ok(EventPayload::StockChanged(moved)) = e.decode() else {
            continue;
        };
        let v = last.entry((e.aggregate_id, moved.sku)).or_insert(0);
        *v = (*v).max(e.version);
    }
    last
}
