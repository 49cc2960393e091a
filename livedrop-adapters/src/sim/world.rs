//! The simulated deployment: several processes, each a [`Livedrop`] with its own
//! background tasks and caching layer, over one shared store, with a shared or a
//! per-process bus and cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use livedrop_core::event::{EventPayload, EventType};
use livedrop_core::ports::{Cache, EventBus, OpenGate};
use livedrop_core::service::{Background, Livedrop, Store};
use livedrop_core::{Config, Ports};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::clock::SimClock;
use super::faults::{FaultyBus, FaultyCache, FaultyGate, FaultyStore, Injector};
use crate::memory::{MemoryBus, MemoryCache};

/// How the processes of a run share infrastructure: the deployments the reference
/// server supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Deployment {
    /// One broker for every process (Kafka), or none: each process relays the shared
    /// outbox into its own in-process bus (replicas on one PostgreSQL, no Kafka).
    pub shared_bus: bool,
    /// One cache for every process (Redis), or each process its own in-process cache.
    pub shared_cache: bool,
}

impl std::fmt::Display for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bus={},cache={}",
            if self.shared_bus {
                "shared"
            } else {
                "per-process"
            },
            if self.shared_cache {
                "shared"
            } else {
                "per-process"
            }
        )
    }
}

/// One server process: alive (services and background tasks running) or dead.
pub(crate) struct Process<S> {
    /// The process's own connection to the store (its own pool, for a database).
    store: Arc<S>,
    pub(crate) app: Option<Livedrop>,
    background: Option<Background>,
    /// Cancelled when the process dies: in-flight requests on it are dropped.
    pub(crate) kill: CancellationToken,
    /// Highest stock version per drop and variant seen on this process's live feed
    /// (what its Server-Sent Events would show).
    pub(crate) live: Arc<Mutex<HashMap<(Uuid, String), i64>>>,
    recorder: Option<JoinHandle<()>>,
    /// Every bus this process had of its own (one per start).
    buses: Vec<Arc<MemoryBus>>,
}

/// The processes and what they share.
pub(crate) struct World<S> {
    pub(crate) raw: Arc<S>,
    pub(crate) faults: Arc<Injector>,
    pub(crate) clock: Arc<SimClock>,
    pub(crate) deployment: Deployment,
    pub(crate) config: Config,
    shared_bus: Arc<MemoryBus>,
    shared_cache: Arc<MemoryCache>,
    pub(crate) procs: Vec<Process<S>>,
}

impl<S: Store> World<S> {
    pub(crate) fn new(
        raw: Arc<S>,
        process_stores: Vec<Arc<S>>,
        faults: Arc<Injector>,
        clock: Arc<SimClock>,
        deployment: Deployment,
        config: Config,
    ) -> Self {
        let procs = process_stores
            .into_iter()
            .map(|store| Process {
                store,
                app: None,
                background: None,
                kill: CancellationToken::new(),
                live: Arc::default(),
                recorder: None,
                buses: Vec::new(),
            })
            .collect();
        Self {
            raw,
            faults,
            clock,
            deployment,
            config,
            shared_bus: Arc::new(MemoryBus::new()),
            shared_cache: Arc::new(MemoryCache::new()),
            procs,
        }
    }

    /// Services over the shared store as process `i` would build them, without
    /// starting anything.
    pub(crate) fn services(&self, i: usize) -> Livedrop {
        self.services_and_bus(i).0
    }

    /// [`World::services`], with the bus they publish to.
    fn services_and_bus(&self, i: usize) -> (Livedrop, Arc<MemoryBus>) {
        let faults = &self.faults;
        let cache: Arc<dyn Cache> = if self.deployment.shared_cache {
            self.shared_cache.clone()
        } else {
            Arc::new(MemoryCache::new())
        };
        let memory_bus = if self.deployment.shared_bus {
            self.shared_bus.clone()
        } else {
            Arc::new(MemoryBus::new())
        };
        let bus: Arc<dyn EventBus> = memory_bus.clone();
        let store = Arc::new(FaultyStore::new(
            self.procs[i].store.clone(),
            faults.clone(),
        ));
        let ports = Ports::from_store(
            store,
            Arc::new(FaultyCache::new(cache, faults.clone())),
            Arc::new(FaultyBus::new(bus, faults.clone())),
            self.clock.clone(),
        )
        .with_gate(Arc::new(FaultyGate::new(
            Arc::new(OpenGate),
            faults.clone(),
        )));
        // With no shared broker each process follows the outbox itself, as the
        // reference server does on PostgreSQL without Kafka.
        let config = livedrop_core::Config {
            follow_outbox: !self.deployment.shared_bus,
            ..self.config.clone()
        };
        (Livedrop::new(ports, config), memory_bus)
    }

    /// Starts process `i` afresh (a restart after a crash): new caching layer, new
    /// in-process cache and bus where those are per process, new background tasks.
    pub(crate) fn start(&mut self, i: usize) {
        let (app, bus) = self.services_and_bus(i);
        let live = Arc::new(Mutex::new(HashMap::new()));
        let mut feed = app.live_events();
        let seen = live.clone();
        let recorder = tokio::spawn(async move {
            loop {
                match feed.recv().await {
                    Ok(event) if event.kind == EventType::StockChanged => {
                        let Ok(EventPayload::StockChanged(moved)) = event.decode() else {
                            continue;
                        };
                        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                        let v = seen.entry((event.aggregate_id, moved.sku)).or_insert(0);
                        *v = (*v).max(event.version);
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        });
        let background = app.spawn_background();
        let p = &mut self.procs[i];
        p.app = Some(app);
        p.background = Some(background);
        p.kill = CancellationToken::new();
        p.live = live;
        p.recorder = Some(recorder);
        if !self.deployment.shared_bus {
            p.buses.push(bus);
        }
    }

    /// Bus subscriptions not dropped or closed yet, over every bus of the run.
    pub(crate) fn open_subscriptions(&self) -> usize {
        let own: usize = self
            .procs
            .iter()
            .flat_map(|p| &p.buses)
            .map(|bus| bus.open_subscriptions())
            .sum();
        self.shared_bus.open_subscriptions() + own
    }

    /// Kills process `i` mid-operation: its tasks and in-flight requests are dropped
    /// wherever they are.
    pub(crate) fn crash(&mut self, i: usize) {
        let p = &mut self.procs[i];
        p.kill.cancel();
        if let Some(background) = p.background.take() {
            background.abort();
        }
        if let Some(recorder) = p.recorder.take() {
            recorder.abort();
        }
        p.app = None;
    }

    /// Takes process `i`'s background tasks for a graceful shutdown; the process is
    /// dead once they are awaited.
    pub(crate) fn begin_shutdown(&mut self, i: usize) -> Option<Background> {
        let p = &mut self.procs[i];
        p.kill.cancel();
        if let Some(recorder) = p.recorder.take() {
            recorder.abort();
        }
        p.app = None;
        p.background.take()
    }

    pub(crate) fn alive(&self) -> Vec<usize> {
        (0..self.procs.len())
            .filter(|&i| self.procs[i].app.is_some())
            .collect()
    }

    pub(crate) fn stop_all(&mut self) {
        for i in 0..self.procs.len() {
            self.crash(i);
        }
    }
}
