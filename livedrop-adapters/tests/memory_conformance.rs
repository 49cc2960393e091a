//! The conformance suite against the in-memory adapters.
//!
//! `cargo test -p livedrop-adapters --test memory_conformance`

use std::sync::Arc;

use livedrop_adapters::memory::{MemoryBus, MemoryCache, MemoryGate, MemoryStore};
use livedrop_core::ports::{AdmissionGate, Cache, EventBus};
use livedrop_core::testing::Repos;

async fn store() -> Option<Repos> {
    Some(Repos::from_store(Arc::new(MemoryStore::new())))
}

async fn cache() -> Option<Arc<dyn Cache>> {
    Some(Arc::new(MemoryCache::new()))
}

async fn bus() -> Option<Arc<dyn EventBus>> {
    Some(Arc::new(MemoryBus::new()))
}

async fn gate() -> Option<Arc<dyn AdmissionGate>> {
    Some(Arc::new(MemoryGate::new()))
}

livedrop_core::store_conformance!(store);
livedrop_core::cache_conformance!(cache);
livedrop_core::bus_conformance!(bus);
livedrop_core::gate_conformance!(gate);
