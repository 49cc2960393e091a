//! In-memory adapters: real implementations of every port with no external service.
//!
//! - [`MemoryStore`]: every repository port and the outbox, each write one atomic
//!   step like a database transaction; orders lock their buyer's shard, their drop's
//!   row and their order's shard, never a lock over every drop.
//! - [`MemoryCache`]: TTLs, fenced writes and prefix invalidation.
//! - [`MemoryBus`]: an append-only event log with consumer groups.
//! - [`MemoryGate`]: the admission gate, with the Redis gate's semantics.
//!
//! They pass the same conformance suite as the PostgreSQL, Redis and Kafka adapters
//! (`livedrop_core::testing`), and are fast enough for property tests.
//!
//! ```
//! use std::sync::Arc;
//! use livedrop_adapters::memory::memory_ports;
//! use livedrop_core::ManualClock;
//!
//! let (ports, store, bus) = memory_ports(Arc::new(ManualClock::fixed()));
//! # let _ = (ports, store, bus);
//! ```

use std::sync::Arc;

use livedrop_core::ports::Clock;
use livedrop_core::Ports;

mod bus;
mod cache;
mod gate;
mod store;

pub use bus::{LiveSubscription, MemoryBus, MemorySubscription};
pub use cache::MemoryCache;
pub use gate::MemoryGate;
pub use store::MemoryStore;

/// Every port backed by fresh in-memory adapters, with `clock`.
///
/// Returns the [`Ports`] bundle plus the store and the bus themselves, for tests
/// that inspect the outbox or watch the bus ([`MemoryBus::tap`]).
///
/// ```
/// use std::sync::Arc;
/// use livedrop_adapters::memory::memory_ports;
/// use livedrop_core::ports::Outbox;
/// use livedrop_core::ManualClock;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let (ports, store, _bus) = memory_ports(Arc::new(ManualClock::fixed()));
/// assert_eq!(ports.outbox.backlog().await?, store.backlog().await?);
/// # Ok::<_, livedrop_core::StoreError>(())
/// # }).unwrap();
/// ```
pub fn memory_ports(clock: Arc<dyn Clock>) -> (Ports, Arc<MemoryStore>, Arc<MemoryBus>) {
    let store = Arc::new(MemoryStore::new());
    let bus = Arc::new(MemoryBus::new());
    let ports = Ports::from_store(
        store.clone(),
        Arc::new(MemoryCache::new()),
        bus.clone(),
        clock,
    );
    (ports, store, bus)
}
