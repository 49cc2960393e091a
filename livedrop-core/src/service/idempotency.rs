//! The idempotency protocol, the one implementation behind `POST /orders` and every
//! other request that carries an `Idempotency-Key`: [`Livedrop::idempotently`]. The
//! ids an operation creates under a key come from [`keyed_id`].

use std::future::Future;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Livedrop;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::id::UserId;
use crate::model::PlaceOutcome;
use crate::ports::{BeginOutcome, Claim, IdempotencyStore};

/// The key an operation runs under, for the ids it creates.
#[derive(Debug, Clone)]
struct Running {
    scope: UserId,
    key: String,
}

tokio::task_local! {
    static RUNNING: Running;
}

/// The id of the `kind` of entity (`"product"`, `"drop"`, `"user"`) created by the
/// operation running under an idempotency key: the same in every run under that key.
/// `None` outside such an operation (a fresh random id is then right).
pub(crate) fn keyed_id(kind: &str) -> Option<Uuid> {
    RUNNING
        .try_with(|running| {
            let mut h = Sha256::new();
            h.update(kind.as_bytes());
            h.update(b"\n");
            h.update(running.scope.0.as_bytes());
            h.update(b"\n");
            h.update(running.key.as_bytes());
            let digest = h.finalize();
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            uuid::Builder::from_random_bytes(bytes).into_uuid()
        })
        .ok()
}

/// The outcome of an operation run under an idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub struct Idempotent<T> {
    /// The value: this run's, or the first run's when replayed.
    pub value: T,
    /// Whether `value` is a replay of an earlier run under the same key.
    pub replayed: bool,
}

/// What is stored with a completed key.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Recorded<T> {
    /// The operation's value (`placed` is how order records were named before).
    #[serde(alias = "placed")]
    Done(T),
    /// A refusal a retry would meet again.
    Rejected(Error),
}

/// The response an order's idempotency key is finished with when the store decides
/// `outcome` for a request of `quantity` units: the order for `Placed`, the refusal
/// for `LimitExceeded` and `OutOfStock`, in the form [`Livedrop::idempotently`]
/// stores and replays. `None` for the outcomes the store does not finish a key with.
/// Stores write it in the transaction that decides the order (see
/// [`OrderRepository::place_order`](crate::ports::OrderRepository::place_order)).
pub fn order_record(outcome: &PlaceOutcome, quantity: u32) -> Option<serde_json::Value> {
    let record = match outcome {
        PlaceOutcome::Placed(order) => serde_json::to_value(Recorded::Done(order)),
        other => {
            let refusal = super::orders::store_refusal(other, quantity)?;
            serde_json::to_value(Recorded::<()>::Rejected(refusal))
        }
    };
    record.ok()
}

/// What a buyer's stored idempotency key decides for an order with `fingerprint`
/// at `now` (step 1 of
/// [`OrderRepository::place_order`](crate::ports::OrderRepository::place_order)):
/// claimed or finished with another fingerprint → `KeyReused`; finished with
/// `response` → `Replayed`; claimed under a lease past `now` → `KeyInFlight`; a
/// claim whose lease ran out decides nothing (the order's step takes it over).
pub fn key_outcome(
    stored_fingerprint: &str,
    response: Option<&serde_json::Value>,
    lease_until: Option<Timestamp>,
    fingerprint: &str,
    now: Timestamp,
) -> Option<PlaceOutcome> {
    if stored_fingerprint != fingerprint {
        Some(PlaceOutcome::KeyReused)
    } else if let Some(response) = response {
        Some(PlaceOutcome::Replayed(response.clone()))
    } else if lease_until.is_some_and(|until| until > now) {
        Some(PlaceOutcome::KeyInFlight)
    } else {
        None
    }
}

/// Decodes a finished key's response (see [`order_record`]).
pub(crate) fn replay<T: DeserializeOwned>(record: serde_json::Value) -> Result<T> {
    match serde_json::from_value::<Recorded<T>>(record) {
        Ok(Recorded::Done(value)) => Ok(value),
        Ok(Recorded::Rejected(error)) => Err(error),
        Err(e) => Err(Error::internal(format!(
            "undecodable idempotency record: {e}"
        ))),
    }
}

/// Holds a claim until its outcome is stored or released; releases it when dropped
/// before either (the request's future was dropped at an await).
struct ClaimGuard {
    store: Arc<dyn IdempotencyStore>,
    scope: UserId,
    key: String,
    claim: Claim,
    settled: bool,
}

impl ClaimGuard {
    async fn release(mut self) {
        match self.store.release(self.scope, &self.key, self.claim).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(key = %self.key, "idempotency claim was taken over; nothing to release")
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not release an idempotency key; it frees when its lease runs out")
            }
        }
        self.settled = true;
    }

    /// Stores the outcome; false when it is not stored (the claim was taken over, or
    /// the store failed).
    async fn complete(mut self, record: &serde_json::Value) -> bool {
        let stored = match self
            .store
            .complete(self.scope, &self.key, self.claim, record)
            .await
        {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!(key = %self.key, "idempotency claim was taken over; this outcome is not stored");
                false
            }
            // The key frees when its lease runs out; the operation finds what it
            // wrote under the key when it runs again.
            Err(e) => {
                tracing::warn!(error = %e, "could not store an idempotent outcome");
                false
            }
        };
        self.settled = true;
        stored
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!(key = %self.key, "no runtime to release an abandoned key; its lease frees it");
            return;
        };
        let (store, scope, key, claim) = (
            self.store.clone(),
            self.scope,
            std::mem::take(&mut self.key),
            self.claim,
        );
        runtime.spawn(async move {
            if let Err(e) = store.release(scope, &key, claim).await {
                tracing::warn!(error = %e, "could not release an abandoned idempotency key; it frees when its lease runs out");
            }
        });
    }
}

impl Livedrop {
    /// Runs `operation` at most once per `(scope, key)` for requests with
    /// `fingerprint`: the idempotency protocol behind `POST /orders` and every other
    /// request that carries an `Idempotency-Key`.
    ///
    /// The request claims `(scope, key)` with its fingerprint
    /// ([`IdempotencyStore::begin`]). The claim is held by a guard: an outcome that is
    /// final (a success, or a refusal that a retry would meet again) is stored under
    /// the claim and replayed to every retry; a transient failure releases the claim
    /// so a retry runs afresh; and if the request's future is dropped at any await
    /// (its client went away) the guard's `Drop` releases the claim. Claims carry a
    /// token, so a holder whose lease was taken over never releases or completes the
    /// new holder's claim.
    ///
    /// A released key runs its operation again: operations run under a key must find
    /// what an earlier attempt under the same key already wrote, so a write whose
    /// answer was lost never happens twice. Orders are unique per buyer and key (see
    /// [`OrderRepository::place_order`](crate::ports::OrderRepository::place_order));
    /// users, products and drops created under a key take an id derived from the
    /// scope and the key, so a second run meets the first run's row.
    ///
    /// Same key and fingerprint after a final outcome → that outcome again
    /// (`replayed`); another fingerprint → [`Error::IdempotencyKeyReused`]; while a
    /// run holds the key → [`Error::IdempotencyKeyInFlight`]. A
    /// [transient](Error::is_transient) error is returned and not stored.
    pub async fn idempotently<T, F, Fut>(
        &self,
        scope: UserId,
        key: &str,
        fingerprint: &str,
        operation: F,
    ) -> Result<Idempotent<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let store = self.ports().idempotency.clone();
        let lease = self.config().idempotency_lease;
        let claim = match store
            .begin(scope, key, fingerprint, self.now(), lease)
            .await?
        {
            BeginOutcome::Started(claim) => claim,
            BeginOutcome::Mismatch => return Err(Error::IdempotencyKeyReused),
            BeginOutcome::InFlight => return Err(Error::IdempotencyKeyInFlight),
            BeginOutcome::Replay(value) => {
                return replay(value).map(|value| Idempotent {
                    value,
                    replayed: true,
                });
            }
        };
        let guard = ClaimGuard {
            store,
            scope,
            key: key.to_owned(),
            claim,
            settled: false,
        };
        let running = Running {
            scope,
            key: key.to_owned(),
        };
        let outcome = RUNNING.scope(running, operation()).await;
        let record = match &outcome {
            Err(e) if e.is_transient() => None,
            Ok(value) => Some(serde_json::to_value(Recorded::Done(value))),
            Err(e) => Some(serde_json::to_value(Recorded::<T>::Rejected(e.clone()))),
        };
        match record {
            None => guard.release().await,
            Some(Ok(record)) => {
                // A refusal that is not stored would not be met again by a retry,
                // which decides afresh: this answer must not pretend to be final.
                // (A value is found again: what the operation wrote is keyed.)
                if !guard.complete(&record).await && outcome.is_err() {
                    return Err(Error::unavailable("database"));
                }
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot encode an idempotent outcome");
                guard.release().await;
            }
        }
        outcome.map(|value| Idempotent {
            value,
            replayed: false,
        })
    }
}
