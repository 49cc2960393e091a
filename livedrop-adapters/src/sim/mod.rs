//! A deterministic simulator: the real services, several processes, faults in every
//! port, clients that retry and give up, all decided by one `u64` seed.
//!
//! [`run`] builds a single-threaded tokio runtime with paused time, starts several
//! [`Livedrop`](livedrop_core::service::Livedrop) processes (each with its background
//! tasks and caching layer) over one [`MemoryStore`], wraps every port in a
//! fault-injecting decorator ([`faults`]), and drives a workload of concurrent
//! clients for a number of steps: drops of one stock or of several sizes, draw drops
//! and drops behind a waiting room, orders naming a size (with an admission token,
//! none or a forged one on a waiting-room drop), restocks per size, waitlist joins
//! and leaves, draw entries replaced and withdrawn, queue joins; draws run from the
//! scheduler's tick under the same faults. After every step it checks the stock
//! invariant of every variant, the per-user limit across sizes, that every unit is
//! held by exactly the orders that hold it, the waitlists (no unit available while
//! someone waits, places in join order), the draws (run once, ranking recomputed
//! from the seed, every entry decided, one order per win) and the waiting rooms
//! (admissions within the rate, the pre-queue first, no order without an
//! admission) in the store; at the end, once faults stop and the system has
//! settled, it checks what clients were told against the store, the notifications
//! every committed event calls for, every process's cached views and live feed, and
//! that nothing stayed behind (single-flight loads, idempotency claims, bus
//! subscriptions, combiner queues). See [`Check`] for the list.
//!
//! The same seed replays the same run: every random choice (workload, faults,
//! deployment) comes from one generator, and on a paused current-thread runtime the
//! interleaving of tasks follows from those choices. [`Report::trace`] is a hash of
//! every client-visible outcome, for checking exactly that.
//!
//! ```
//! use livedrop_adapters::sim::{run, KnownIssue, SimConfig};
//!
//! let config = SimConfig {
//!     steps: 40,
//!     tolerate: KnownIssue::ALL.to_vec(),
//!     ..SimConfig::default()
//! };
//! let report = run(7, &config);
//! assert!(report.passed(), "{report}");
//! // One seed, one run: replaying it gives the same trace.
//! assert_eq!(run(7, &config).trace, report.trace);
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::memory::MemoryStore;
use livedrop_core::id::UserId;
use livedrop_core::service::Store;

pub mod clock;
pub mod faults;
mod workload;
mod world;

pub use clock::SimClock;
pub use faults::{FaultRates, FaultyBus, FaultyCache, FaultyGate, FaultyStore, Injector};
pub use world::Deployment;

/// A guarantee the simulator checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Check {
    /// After every step: `available + reserved + sold = total`, each ≥ 0, per variant.
    StockInvariant,
    /// After every step: no buyer holds more than the drop's per-user limit, counted
    /// across its variants.
    PerUserLimit,
    /// After every step: no drop has more than one `drop.drawn` event in the outbox;
    /// at the end, every draw whose entries closed (not cancelled first) ran, once.
    DrawOnce,
    /// After every step: a drawn drop's seed matches its commitment, and its
    /// published ranking is the one recomputed from the seed (SHA-256 of
    /// `seed:token`, ascending), ranks 1, 2, …
    DrawRanking,
    /// After every step: before the draw every entry is pending and nothing is
    /// published; after it, every entry is won or lost.
    DrawResults,
    /// After every step: each win has exactly one order (its entry's units of its
    /// variant, for its buyer, keyed `draw:<order id>`), and every order of a draw
    /// drop is a win's.
    DrawWinOrders,
    /// After every step: the units a draw's wins hold per variant are within the
    /// variant's stock, whose invariant holds.
    DrawAwards,
    /// At the end: one `draw_won` / `draw_lost` notification per `draw.won` /
    /// `draw.lost` event, and each entry of a drawn drop has one result event (a
    /// winner that first lost, two: `draw.lost` then `draw.won`).
    DrawNotices,
    /// After every step: waiting-room admissions are one interval apart at least
    /// (the pre-queue at its slots from the start), and no more are admitted than
    /// the rate allows for the time since the start.
    QueueRate,
    /// After every step: the pre-queue holds the first places and is admitted before
    /// any later arrival; later arrivals follow in join order.
    QueueOrder,
    /// After every step: every order on a waiting-room drop (waitlist offers aside)
    /// was placed by a buyer admitted at that time.
    AdmissionRequired,
    /// After every step: each variant's reserved and sold units are exactly those its
    /// reserved and confirmed orders hold, waitlist offers included: no unit offered
    /// twice, none lost.
    UnitsAccounted,
    /// After every step: no unit of a variant is available while someone waits for
    /// it (on a drop that takes orders and has not reached its end).
    WaitlistHandoff,
    /// Waitlist places are 1, 2, … in join order after every step, and units that
    /// come back are offered in join order (waitlist offers in the outbox follow
    /// the entries' join times).
    WaitlistOrder,
    /// No idempotency key made two orders.
    OneOrderPerKey,
    /// Every order a client was told about exists, in a status consistent with what
    /// the client was told; an order whose buyer was told its hold is extended is
    /// stored extended, and no order's hold is extended twice.
    ToldMatchesStore,
    /// Every retry of a key got the first decision or a transient error.
    RetryGetsFirstDecision,
    /// The outbox drained: every committed event was published.
    OutboxDrained,
    /// Every committed event was handled by the notification consumers: each stable
    /// follower of a started drop has one `drop_live`, each confirmed or expired order
    /// its notification.
    EventsHandled,
    /// Every process's cached views and listings equal the store once their TTLs ran out.
    CachesConverge,
    /// Every process's live feed (what Server-Sent Events serve) saw every stock
    /// change published while it ran.
    LiveFeedsComplete,
    /// Nothing stays behind in process state: no single-flight load once no read
    /// runs, no idempotency key claimed by a request that went away (unless a fault
    /// kept its release from the store), no bus subscription of a dead process, no
    /// order combiner queue.
    NothingLeftBehind,
}

/// Bug classes known to fail some checks. A violation attributed to a class listed in
/// [`SimConfig::tolerate`] is reported apart (in [`Report::known`]) and does not fail
/// the run; every check still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KnownIssue {
    /// A read whose caller went away mid-load leaves its single-flight entry behind;
    /// later readers of that key in the process get the stale loaded value forever.
    SingleFlightLeak,
    /// A retry after an ambiguous outcome is refused (drop no longer live, sold-out
    /// gate) although an order was made under its key.
    AmbiguousRetry,
    /// An event handler that gives up at shutdown still commits the event, so its
    /// effect (a notification) never happens.
    ShutdownCommitsUnhandled,
    /// With no shared broker, each process sees only the events its own relay moved:
    /// other processes' live feeds miss them, and events in a crashed process's
    /// in-process bus are lost to its consumers.
    NoSharedBroker,
    /// A key's first decision is not kept: its response could not be stored
    /// (`complete` failed) or its claim was released by a holder whose lease had been
    /// taken over, so a later retry decides afresh (and may decide differently).
    IdempotencyClaimLost,
}

impl KnownIssue {
    /// Every known class.
    pub const ALL: [KnownIssue; 5] = [
        KnownIssue::SingleFlightLeak,
        KnownIssue::AmbiguousRetry,
        KnownIssue::ShutdownCommitsUnhandled,
        KnownIssue::NoSharedBroker,
        KnownIssue::IdempotencyClaimLost,
    ];

    /// The class's name on the command line (`--tolerate`).
    pub fn name(self) -> &'static str {
        match self {
            KnownIssue::SingleFlightLeak => "single-flight-leak",
            KnownIssue::AmbiguousRetry => "ambiguous-retry",
            KnownIssue::ShutdownCommitsUnhandled => "shutdown-commits-unhandled",
            KnownIssue::NoSharedBroker => "no-shared-broker",
            KnownIssue::IdempotencyClaimLost => "idempotency-claim-lost",
        }
    }

    /// The class named `name` (see [`KnownIssue::name`]).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// A broken guarantee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which check.
    pub check: Check,
    /// The known bug class it is attributed to, if any.
    pub class: Option<KnownIssue>,
    /// The step after which it was seen (`None`: at the end).
    pub step: Option<u32>,
    /// What was seen.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.step {
            Some(step) => write!(f, "{:?} after step {step}", self.check)?,
            None => write!(f, "{:?} at the end", self.check)?,
        }
        if let Some(class) = self.class {
            write!(f, " [{class:?}]")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Workload steps (each a batch of concurrent client requests).
    pub steps: u32,
    /// Server processes.
    pub processes: usize,
    /// Whether to inject faults (rates drawn from the seed).
    pub faults: bool,
    /// Known bug classes whose violations do not fail the run.
    pub tolerate: Vec<KnownIssue>,
    /// Force a deployment instead of drawing it from the seed.
    pub deployment: Option<Deployment>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            steps: 200,
            processes: 3,
            faults: true,
            tolerate: Vec::new(),
            deployment: None,
        }
    }
}

/// What a run did and found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Hash of every client-visible outcome in order: equal for two runs of one seed.
    pub trace: u64,
    /// Steps run.
    pub steps: u32,
    /// Client requests made.
    pub requests: u64,
    /// The deployment drawn.
    pub deployment: Deployment,
    /// The fault rates drawn.
    pub rates: FaultRates,
    /// Faults injected (before, after, delayed, refused by an outage).
    pub injected: [u64; 4],
    /// Virtual time the run covered.
    pub virtual_time: Duration,
    /// Violations that fail the run.
    pub violations: Vec<Violation>,
    /// Violations attributed to tolerated known classes.
    pub known: Vec<Violation>,
}

impl Report {
    /// Whether no untolerated violation was found.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} ({}, {} steps, {} requests, trace {:016x}): ",
            self.seed, self.deployment, self.steps, self.requests, self.trace
        )?;
        if self.violations.is_empty() {
            write!(f, "passed")?;
        } else {
            write!(f, "{} violation(s)", self.violations.len())?;
            for v in &self.violations {
                write!(f, "\n  {v}")?;
            }
        }
        for v in &self.known {
            write!(f, "\n  known: {v}")?;
        }
        Ok(())
    }
}

/// Runs one seed on the in-memory adapters, on its own single-threaded runtime with
/// paused time.
pub fn run(seed: u64, config: &SimConfig) -> Report {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(run_memory(seed, config)),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the simulation runtime");
            Report {
                seed,
                trace: 0,
                steps: 0,
                requests: 0,
                deployment: Deployment {
                    shared_bus: true,
                    shared_cache: true,
                },
                rates: FaultRates::none(),
                injected: [0; 4],
                virtual_time: Duration::ZERO,
                violations: vec![Violation {
                    check: Check::NothingLeftBehind,
                    class: None,
                    step: None,
                    message: format!("cannot build the runtime: {e}"),
                }],
                known: vec![],
            }
        }
    }
}

/// Runs one seed on the in-memory adapters on the current runtime, which should be a
/// current-thread runtime with paused time for the run to be reproducible.
pub async fn run_memory(seed: u64, config: &SimConfig) -> Report {
    let store = Arc::new(MemoryStore::new());
    let stores = vec![store.clone(); config.processes.max(1)];
    let claims = store.clone();
    let leftovers = Leftovers {
        pending_claims: Some(Arc::new(move || claims.pending_claims())),
        combiner_queues: None,
    };
    let timing = Timing::simulated();
    run_with(seed, config, store, stores, timing, leftovers, |_| {}).await
}

/// Process state beyond the ports that a run checks at the end for what dead requests
/// and tasks left behind, as far as the adapters under test expose it.
#[derive(Clone, Default)]
pub struct Leftovers {
    /// Idempotency keys claimed and neither completed nor released, `(user, key)`
    /// ([`MemoryStore::pending_claims`]). Checked once faults stop, before clients
    /// retry: every claim left then must be explained by an injected fault.
    #[allow(clippy::type_complexity)]
    pub pending_claims: Option<Arc<dyn Fn() -> Vec<(UserId, String)> + Send + Sync>>,
    /// Order combiner queues still registered over every process's store
    /// (`PgStore::combiner_queues`): none may be left at the end.
    pub combiner_queues: Option<Arc<dyn Fn() -> usize + Send + Sync>>,
}

impl fmt::Debug for Leftovers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leftovers")
            .field("pending_claims", &self.pending_claims.is_some())
            .field("combiner_queues", &self.combiner_queues.is_some())
            .finish()
    }
}

/// Durations of a run. Virtual time is free, so the in-memory run uses the services'
/// production defaults; a run on a real database and a real clock compresses them.
#[derive(Debug, Clone)]
pub struct Timing {
    /// The services' configuration.
    pub config: livedrop_core::Config,
    /// Longest pause between steps.
    pub max_think: Duration,
    /// Longest drop window scheduled by the workload.
    pub max_drop: Duration,
    /// Longest delay before a drop scheduled "later" starts.
    pub max_start_delay: Duration,
    /// Longest outage window.
    pub max_outage: Duration,
    /// Longest clock jump.
    pub max_jump: Duration,
    /// Longest step of the clock back.
    pub max_step_back: Duration,
}

impl Timing {
    /// Durations for paused virtual time: the services' defaults where they shape
    /// behaviour (TTLs of stock and listings), shorter holds, leases and entity TTLs so
    /// that a run reaches expiries and settles in few background ticks.
    pub fn simulated() -> Self {
        Self {
            config: livedrop_core::Config {
                hold: Duration::from_secs(20),
                idempotency_lease: Duration::from_secs(10),
                entity_ttl: Duration::from_secs(15),
                tick: Duration::from_millis(500),
                ..livedrop_core::Config::default()
            },
            max_think: Duration::from_millis(400),
            max_drop: Duration::from_secs(60),
            max_start_delay: Duration::from_secs(20),
            max_outage: Duration::from_secs(8),
            max_jump: Duration::from_secs(90),
            max_step_back: Duration::from_secs(5),
        }
    }

    /// Short durations for a run against real services and the wall clock.
    pub fn compressed() -> Self {
        Self {
            config: livedrop_core::Config {
                hold: Duration::from_secs(3),
                idempotency_lease: Duration::from_secs(2),
                entity_ttl: Duration::from_secs(2),
                stock_ttl: Duration::from_millis(500),
                listing_ttl: Duration::from_millis(500),
                tick: Duration::from_millis(100),
                ..livedrop_core::Config::default()
            },
            max_think: Duration::from_millis(20),
            max_drop: Duration::from_secs(4),
            max_start_delay: Duration::from_secs(1),
            max_outage: Duration::from_millis(500),
            max_jump: Duration::from_secs(3),
            max_step_back: Duration::from_secs(1),
        }
    }
}

/// Runs one seed over any store: `raw` is read by the checks (no faults), and each
/// process talks to its own entry of `process_stores` (its own pool, for a database),
/// wrapped in faults.
pub async fn run_on<S: Store>(
    seed: u64,
    config: &SimConfig,
    raw: Arc<S>,
    process_stores: Vec<Arc<S>>,
    timing: Timing,
) -> Report {
    let leftovers = Leftovers::default();
    run_with(seed, config, raw, process_stores, timing, leftovers, |_| {}).await
}

/// Like [`run_on`], also checking the process state `leftovers` exposes, and handing
/// the run's [`Injector`] to `start` first, so that a caller can add fault sources of
/// its own (killing database connections, say) that stop when the run
/// [settles](Injector::settling).
pub async fn run_with<S: Store>(
    seed: u64,
    config: &SimConfig,
    raw: Arc<S>,
    process_stores: Vec<Arc<S>>,
    timing: Timing,
    leftovers: Leftovers,
    start: impl FnOnce(Arc<Injector>),
) -> Report {
    let mut rng = StdRng::seed_from_u64(seed);
    let rates = if config.faults {
        FaultRates::drawn(&mut rng)
    } else {
        FaultRates::none()
    };
    let deployment = config.deployment.unwrap_or_else(|| {
        use rand::Rng;
        Deployment {
            shared_bus: rng.gen_bool(0.6),
            shared_cache: rng.gen_bool(0.5),
        }
    });
    let faults = Arc::new(Injector::new(rng, rates));
    start(faults.clone());
    workload::drive(
        seed,
        config,
        raw,
        process_stores,
        timing,
        faults,
        deployment,
        leftovers,
    )
    .await
}
