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
    Actor, DropFilter, DropState, Notification, NotificationKind, Order, OrderStatus, Product,
    ProductFilter, Role, User, WAITLIST_FINGERPRINT,
};
use livedrop_core::page::{Page, PageRequest};
use livedrop_core::ports::Clock;
use livedrop_core::service::{
    JoinWaitlist, Livedrop, NewDrop, NewProduct, NewVariant, PlaceOrder, ProductPatch,
    Registration, StockAdjustment, Store,
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
        reply: Reply<(DropId, Vec<String>)>,
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
    for step in 0..config.steps {
        run_step(step, &mut world, &mut model, &timing).await;
        let think = faults.duration_up_to(timing.max_think);
        tokio::time::sleep(think).await;
        let latest = clock.latest();
        step_checks(step, &*raw, &model, latest, &mut lines, &mut violations).await;
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
            Action::Place { key }
        }
        36..=50 if !retry.is_empty() => Action::Place {
            key: retry[faults.pick(retry.len())].clone(),
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
            Action::Adjust {
                drop,
                sku: sku_of(drop),
                delta: if faults.roll(0.6) {
                    1 + faults.pick(5) as i64
                } else {
                    -(1 + faults.pick(3) as i64)
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
        Action::Place { key } => {
            let Some(log) = model.keys.get(&key) else {
                return Outcome::Fault {
                    what: "no such key",
                };
            };
            let buyer = actor(log.user);
            let request = log.request.clone();
            let reply = client(kill, patience, app.place_order(&buyer, Some(&key), request)).await;
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
        } => {
            let now = clock.now();
            let starts_at = (!later.is_zero())
                .then(|| now + chrono::Duration::from_std(later).unwrap_or_default());
            let ends_at =
                starts_at.unwrap_or(now) + chrono::Duration::from_std(length).unwrap_or_default();
            let new = NewDrop {
                allocation: Default::default(),
                entries_close_at: None,
                waiting_room: None,
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
                        (view.drop.id, skus)
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
            if let Ok(Ok((drop, skus))) = reply {
                model.drops.push((drop, creator));
                model.skus.insert(drop, skus);
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
            let request = log.request.clone();
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
