//! Fair allocation: draw drops (entries, the draw, its public results) and waiting
//! rooms (the queue, admission slots, signed admission tokens).

use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::orders::sku_required;
use super::Livedrop;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::id::{DropId, UserId};
use crate::model::{
    Actor, DrawEntry, DrawEntryRequest, DrawOutcome, Drop, EntryOutcome, QueueEntry, QueueOutcome,
    SkuResolution,
};

/// The key that signs waiting-room admission tokens (HMAC-SHA256). Its `Debug`
/// shows nothing of it.
#[derive(Clone)]
pub struct AdmissionKey(Arc<[u8]>);

impl AdmissionKey {
    /// A key from shared secret bytes (every process on one store uses the same).
    pub fn new(secret: &[u8]) -> Self {
        Self(Arc::from(secret))
    }

    /// A random key: tokens then work only in this process.
    pub fn random() -> Self {
        Self::new(&rand::random::<[u8; 32]>())
    }

    fn mac(&self, drop: DropId, user: UserId, expires: i64) -> Hmac<Sha256> {
        // A key of any length is accepted by HMAC.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(format!("livedrop-admission:v2:{drop}:{user}:{expires}").as_bytes());
        mac
    }

    /// A token admitting `user` to order from `drop` until `expires` (unix
    /// microseconds, the precision of every stored time, so the token ends exactly
    /// when the queue status says): `v2.<expires>.<hex HMAC>`.
    pub fn sign(&self, drop: DropId, user: UserId, expires: Timestamp) -> String {
        let at = expires.timestamp_micros();
        let tag = self.mac(drop, user, at).finalize().into_bytes();
        format!("v2.{at}.{}", hex::encode(tag))
    }

    /// Whether `token` admits `user` to `drop` at `now`: signed by this key for
    /// them, and not expired.
    pub fn verify(&self, token: &str, drop: DropId, user: UserId, now: Timestamp) -> bool {
        let mut parts = token.split('.');
        let (Some("v2"), Some(at), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let (Ok(at), Ok(tag)) = (at.parse::<i64>(), hex::decode(tag)) else {
            return false;
        };
        now.timestamp_micros() < at && self.mac(drop, user, at).verify_slice(&tag).is_ok()
    }
}

impl std::fmt::Debug for AdmissionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdmissionKey(…)")
    }
}

/// A request to enter a draw.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EnterDraw {
    /// The variant; may be left out on a drop of one variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// Units wanted, 1 to the per-user limit (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u32>,
}

/// Where a buyer stands in a waiting room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueState {
    /// Not admitted yet.
    Waiting,
    /// Admitted: the token lets the buyer order until it expires.
    Admitted,
    /// Admitted, but the token's time ran out.
    Expired,
}

/// A buyer's place in a waiting room, with the admission token once admitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStatus {
    /// Waiting, admitted or expired.
    pub status: QueueState,
    /// The place in the queue (1 first); before the start, among those so far.
    pub position: u64,
    /// Seconds until admission (0 once admitted).
    pub estimated_wait_seconds: u64,
    /// The signed admission token, while admitted.
    pub admission_token: Option<String>,
    /// When the admission (and its token) ends.
    pub expires_at: Timestamp,
}

impl Livedrop {
    fn draw_drop_checked(drop: &Drop) -> Result<()> {
        match drop.draw {
            Some(_) => Ok(()),
            None => Err(Error::Conflict {
                message: "this drop is first come, first served: it has no draw".into(),
            }),
        }
    }

    /// Enters the actor in a draw drop's draw, or replaces its entry, while entries
    /// are open ([`Error::EntriesClosed`] otherwise).
    pub async fn enter_draw(
        &self,
        actor: &Actor,
        drop: DropId,
        request: EnterDraw,
    ) -> Result<DrawEntry> {
        let quantity = request.quantity.unwrap_or(1);
        if quantity == 0 || quantity > super::orders::MAX_QUANTITY {
            return Err(Error::invalid("quantity", "quantity must be 1 to 10000"));
        }
        super::orders::check_sku(request.sku.as_deref())?;
        let definition = self.drop_definition(drop).await?;
        Self::draw_drop_checked(&definition)?;
        let sku = match definition.resolve_sku(request.sku.as_deref()) {
            SkuResolution::Found(sku) => sku.to_owned(),
            SkuResolution::Unknown => return Err(Error::not_found("variant")),
            SkuResolution::Required => return Err(sku_required()),
        };
        let entry = DrawEntryRequest {
            drop_id: drop,
            user_id: actor.id,
            sku,
            quantity,
            token: DrawEntry::new_token(),
            at: self.now(),
        };
        let outcome = self.ports().draws.enter_draw(&entry).await?;
        entry_result(outcome)
    }

    /// Withdraws the actor's entry while entries are open.
    pub async fn withdraw_entry(&self, actor: &Actor, drop: DropId) -> Result<DrawEntry> {
        let outcome = self
            .ports()
            .draws
            .withdraw_entry(drop, actor.id, self.now())
            .await?;
        entry_result(outcome)
    }

    /// The actor's entry in a draw, with its result once drawn.
    pub async fn draw_entry(&self, actor: &Actor, drop: DropId) -> Result<DrawEntry> {
        self.ports()
            .draws
            .draw_entry(drop, actor.id)
            .await?
            .ok_or_else(|| Error::not_found("draw entry"))
    }

    /// A drawn drop's entries in rank order, after `after_rank` (public: with the
    /// revealed seed anyone can recompute the ranking). Before the draw, none.
    pub async fn draw_results(
        &self,
        drop: DropId,
        after_rank: u64,
        limit: u32,
    ) -> Result<Vec<DrawEntry>> {
        let definition = self.drop_definition(drop).await?;
        Self::draw_drop_checked(&definition)?;
        Ok(self
            .ports()
            .draws
            .draw_entries(drop, after_rank, limit.clamp(1, 100))
            .await?)
    }

    /// How many entries a draw drop has, and how many won so far.
    pub async fn draw_counts(&self, drop: DropId) -> Result<(u64, u64)> {
        Ok(self.ports().draws.draw_counts(drop).await?)
    }

    /// One draw step: runs every draw whose entries closed. Returns how many this
    /// process ran (a draw another process ran first is not counted).
    pub async fn run_due_draws(&self) -> Result<usize> {
        let now = self.now();
        let due = self
            .ports()
            .draws
            .due_draws(now, self.config().scheduler_batch.max(1))
            .await?;
        let mut ran = 0;
        for id in due {
            match self.ports().draws.run_draw(id, now, self.hold()).await? {
                DrawOutcome::Drawn { drop, entries } => {
                    ran += 1;
                    let won = entries
                        .iter()
                        .filter(|e| e.result == crate::model::DrawResult::Won)
                        .count();
                    tracing::info!(drop = %drop.id, entries = entries.len(), won, "draw ran");
                    let ttl = self.config().entity_ttl;
                    self.cache()
                        .put(&crate::cache::drop_key(drop.id), &drop, ttl)
                        .await;
                    self.cache()
                        .invalidate(
                            &[crate::cache::stock_key(drop.id)],
                            &[crate::cache::DROP_LISTINGS],
                        )
                        .await;
                }
                DrawOutcome::AlreadyDrawn | DrawOutcome::NotDue | DrawOutcome::DropNotFound => {}
            }
        }
        Ok(ran)
    }

    /// Puts the actor in a drop's waiting room (joining twice keeps the place) and
    /// says where it stands.
    pub async fn join_queue(&self, actor: &Actor, drop: DropId) -> Result<QueueStatus> {
        let definition = self.drop_definition(drop).await?;
        let now = self.now();
        match self
            .ports()
            .queues
            .join_queue(drop, actor.id, now, rand::random())
            .await?
        {
            QueueOutcome::Joined(entry) => self.queue_status_of(&definition, &entry),
            QueueOutcome::DropNotFound => Err(Error::not_found("drop")),
            QueueOutcome::NoWaitingRoom => Err(Error::Conflict {
                message: "this drop has no waiting room: order directly".into(),
            }),
            QueueOutcome::NotOpen { opens_at } => Err(Error::Conflict {
                message: format!(
                    "the waiting room opens at {}",
                    opens_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                ),
            }),
            QueueOutcome::Closed => Err(Error::DropNotLive {
                status: self.drop_view(drop).await?.status_at(now),
            }),
        }
    }

    /// Where the actor stands in a drop's waiting room; not found when not queued.
    pub async fn queue_status(&self, actor: &Actor, drop: DropId) -> Result<QueueStatus> {
        let definition = self.drop_definition(drop).await?;
        let entry = self
            .ports()
            .queues
            .queue_entry(drop, actor.id)
            .await?
            .ok_or_else(|| Error::not_found("queue entry"))?;
        self.queue_status_of(&definition, &entry)
    }

    /// How many of a waiting-room drop's queue are admitted now.
    pub async fn admitted_through(&self, drop: DropId) -> Result<u64> {
        Ok(self
            .ports()
            .queues
            .admitted_through(drop, self.now())
            .await?)
    }

    fn queue_status_of(&self, drop: &Drop, entry: &QueueEntry) -> Result<QueueStatus> {
        let room = drop.waiting_room.ok_or_else(|| Error::Conflict {
            message: "this drop has no waiting room".into(),
        })?;
        let now = self.now();
        let expires_at = entry.admit_at + chrono::Duration::seconds(i64::from(room.token_seconds));
        let (status, token) = if now < entry.admit_at {
            (QueueState::Waiting, None)
        } else if now < expires_at {
            let token = self
                .config()
                .admission_key
                .sign(drop.id, entry.user_id, expires_at);
            (QueueState::Admitted, Some(token))
        } else {
            (QueueState::Expired, None)
        };
        Ok(QueueStatus {
            status,
            position: entry.position,
            estimated_wait_seconds: u64::try_from((entry.admit_at - now).num_seconds())
                .unwrap_or(0),
            admission_token: token,
            expires_at,
        })
    }

    /// Refuses an order of a waiting-room drop without a valid admission token.
    pub(super) fn check_admission(
        &self,
        drop: &Drop,
        user: UserId,
        token: Option<&str>,
    ) -> Result<()> {
        if drop.waiting_room.is_none() {
            return Ok(());
        }
        match token {
            Some(token)
                if self
                    .config()
                    .admission_key
                    .verify(token, drop.id, user, self.now()) =>
            {
                Ok(())
            }
            _ => Err(Error::AdmissionRequired),
        }
    }
}

fn entry_result(outcome: EntryOutcome) -> Result<DrawEntry> {
    match outcome {
        EntryOutcome::Done(entry) => Ok(entry),
        EntryOutcome::DropNotFound => Err(Error::not_found("drop")),
        EntryOutcome::NotDraw => Err(Error::Conflict {
            message: "this drop is first come, first served: it has no draw".into(),
        }),
        EntryOutcome::UnknownVariant => Err(Error::not_found("variant")),
        EntryOutcome::EntriesClosed => Err(Error::EntriesClosed),
        EntryOutcome::LimitExceeded { limit } => Err(Error::invalid(
            "quantity",
            format!("quantity must be at most the per-user limit, {limit}"),
        )),
        EntryOutcome::NoEntry => Err(Error::not_found("draw entry")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admission_token_admits_its_buyer_to_its_drop_until_it_expires() {
        let key = AdmissionKey::new(b"a shared secret of some length");
        let (drop, user) = (DropId::new(), UserId::new());
        let now = crate::clock::truncate(chrono::Utc::now());
        let expires = now + chrono::Duration::seconds(60);
        let token = key.sign(drop, user, expires);
        assert!(key.verify(&token, drop, user, now));
        assert!(
            !key.verify(&token, drop, user, expires),
            "expired at its end"
        );
        assert!(
            !key.verify(&token, DropId::new(), user, now),
            "another drop"
        );
        assert!(
            !key.verify(&token, drop, UserId::new(), now),
            "another buyer"
        );
        assert!(
            !AdmissionKey::new(b"another secret").verify(&token, drop, user, now),
            "another key"
        );
        let later = token.replacen(
            &expires.timestamp_micros().to_string(),
            &(expires.timestamp_micros() + 999).to_string(),
            1,
        );
        assert!(!key.verify(&later, drop, user, now), "a forged expiry");
        let just_before = expires - chrono::Duration::microseconds(1);
        assert!(
            key.verify(&token, drop, user, just_before),
            "valid to its last microsecond"
        );
        let v1 = token.replacen("v2.", "v1.", 1);
        for junk in ["", "v2", "v2.x.y", "v2.1.00", &v1, &format!("{token}.x")] {
            assert!(!key.verify(junk, drop, user, now), "{junk:?}");
        }
    }
}
