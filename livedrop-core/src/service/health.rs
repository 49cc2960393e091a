//! What operators read about a running instance: the outbox backlog for metrics,
//! and cheap probes of the store and the cache for readiness.

use super::Livedrop;
use crate::error::StoreResult;
use crate::id::UserId;
use crate::ports::CacheError;

impl Livedrop {
    /// Outbox records not yet published to the bus: how far the relay lags.
    pub async fn outbox_backlog(&self) -> StoreResult<u64> {
        self.ports().outbox.backlog().await
    }

    /// Whether the store answers a cheap read.
    pub async fn probe_store(&self) -> StoreResult<()> {
        self.ports()
            .users
            .user(UserId(uuid::Uuid::nil()))
            .await
            .map(|_| ())
    }

    /// Whether the cache answers a get.
    pub async fn probe_cache(&self) -> Result<(), CacheError> {
        self.ports().cache.get("livedrop:readyz").await.map(|_| ())
    }
}
