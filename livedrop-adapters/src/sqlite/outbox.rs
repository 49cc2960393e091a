//! The outbox relay side, idempotency keys and notifications: the bodies
//! [`outbox_ports!`](crate::sql::outbox::outbox_ports) shares with the PostgreSQL
//! store, and what SQLite does its own way: the relay reads and marks through the
//! single writer, an in-process signal wakes it, a key is claimed and a fan-out
//! written in one write transaction.

use std::time::Duration;

use livedrop_core::id::UserId;
use livedrop_core::model::{FanOutBatch, FanOutProgress};
use livedrop_core::ports::{BeginOutcome, OutboxRecord};
use livedrop_core::StoreResult;
use sqlx::types::Json;
use sqlx::{QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use super::dialect::{self, OutboxRow};
use super::{map_sqlx_error, micros, to_u32, SqliteStore};
use crate::sql::outbox::KeyClaim;

crate::sql::outbox::outbox_ports!(SqliteStore);

impl SqliteStore {
    /// The relay's read: every append commits through this store.
    async fn relay_pending(&self, limit: u32) -> StoreResult<Vec<OutboxRecord>> {
        sqlx::query_as::<_, OutboxRow>(&OutboxRow::pending())
            .bind(i64::from(limit))
            .fetch_all(&self.inner.readers)
            .await
            .map_err(map_sqlx_error)?
            .into_iter()
            .map(OutboxRow::into_record)
            .collect()
    }

    /// Marks `seqs` published, in one write transaction.
    async fn publish(&self, seqs: &[i64]) -> StoreResult<()> {
        let now = micros(chrono::Utc::now());
        let mut tx = self.inner.write().await?;
        for chunk in seqs.chunks(10_000) {
            let mut update = QueryBuilder::<Sqlite>::new("UPDATE outbox SET published_at = ");
            update
                .push_bind(now)
                .push(" WHERE published_at IS NULL AND seq IN (");
            let mut list = update.separated(", ");
            for seq in chunk {
                list.push_bind(*seq);
            }
            update.push(")");
            update
                .build()
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx_error)?;
        }
        self.inner.commit(tx, false).await
    }

    /// Waits for a commit that appended, or `timeout`.
    async fn wait_for_outbox(&self, timeout: Duration) {
        // Every append commits through this store (the file lock keeps other
        // processes out), so the in-process signal sees them all.
        let _ = tokio::time::timeout(timeout, self.inner.appended.notified()).await;
    }

    /// Claims `c.key` for `c.claim` until `c.until`, or reports what holds it.
    async fn claim_key(&self, c: KeyClaim<'_>) -> StoreResult<BeginOutcome> {
        // One write transaction decides: nothing changes the key in between.
        let mut tx = self.inner.write().await?;
        let row = sqlx::query(
            "SELECT fingerprint, state, lease_until, response FROM idempotency_keys \
             WHERE user_id = ?1 AND key = ?2",
        )
        .bind(c.user.0)
        .bind(c.key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx_error)?;
        let outcome = match row {
            None => {
                sqlx::query(
                    "INSERT INTO idempotency_keys (user_id, key, fingerprint, state, \
                                                   lease_until, response, created_at, claim) \
                     VALUES (?1, ?2, ?3, 'in_flight', ?4, NULL, ?5, ?6)",
                )
                .bind(c.user.0)
                .bind(c.key)
                .bind(c.fingerprint)
                .bind(micros(c.until))
                .bind(micros(c.now))
                .bind(c.claim.0)
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx_error)?;
                BeginOutcome::Started(c.claim)
            }
            Some(row) => {
                let stored: String = row.try_get("fingerprint").map_err(map_sqlx_error)?;
                let state: String = row.try_get("state").map_err(map_sqlx_error)?;
                let lease_until: Option<i64> =
                    row.try_get("lease_until").map_err(map_sqlx_error)?;
                if stored != c.fingerprint {
                    BeginOutcome::Mismatch
                } else if state == "completed" {
                    let response: Option<Json<serde_json::Value>> =
                        row.try_get("response").map_err(map_sqlx_error)?;
                    BeginOutcome::Replay(response.map_or(serde_json::Value::Null, |r| r.0))
                } else if lease_until.is_some_and(|l| l > micros(c.now)) {
                    BeginOutcome::InFlight
                } else {
                    // Its owner died: take the lease over.
                    sqlx::query(
                        "UPDATE idempotency_keys SET lease_until = ?3, claim = ?4 \
                         WHERE user_id = ?1 AND key = ?2",
                    )
                    .bind(c.user.0)
                    .bind(c.key)
                    .bind(micros(c.until))
                    .bind(c.claim.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_sqlx_error)?;
                    BeginOutcome::Started(c.claim)
                }
            }
        };
        if matches!(outcome, BeginOutcome::Started(_)) {
            self.inner.commit(tx, false).await?;
        } else {
            tx.rollback().await.map_err(map_sqlx_error)?;
        }
        Ok(outcome)
    }

    /// The next batch of a fan-out, in one short write transaction.
    async fn fan_out_batch(&self, batch: &FanOutBatch) -> StoreResult<FanOutProgress> {
        // One short write transaction: the shard's next `limit` followers by id, read
        // off the follows key (one extra tells whether more exist), a notification
        // for each not yet notified under the key. The followers are read in chunks
        // and those of other shards passed over: the shard is a function of the id
        // SQLite cannot compute on a blob.
        let limit = batch.limit.clamp(1, 4_000) as usize;
        let chunk = ((limit + 1) * batch.shard.count() as usize).min(16_000);
        let mut tx = self.inner.write().await?;
        let mut followers: Vec<Uuid> = Vec::with_capacity(limit + 1);
        let mut after = batch.after.map(|f| f.0);
        'walk: loop {
            let rows: Vec<Uuid> = sqlx::query_scalar(
                "SELECT follower_id FROM follows \
                 WHERE creator_id = ?1 AND (?2 IS NULL OR follower_id > ?2) \
                 ORDER BY follower_id LIMIT ?3",
            )
            .bind(batch.creator_id.0)
            .bind(after)
            .bind(chunk as i64)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_sqlx_error)?;
            let last_chunk = rows.len() < chunk;
            for id in rows {
                after = Some(id);
                if batch.shard.contains(UserId(id)) {
                    followers.push(id);
                    if followers.len() > limit {
                        break 'walk;
                    }
                }
            }
            if last_chunk {
                break;
            }
        }
        let more = followers.len() > limit;
        followers.truncate(limit);
        let mut inserted = 0;
        if !followers.is_empty() {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO notifications (id, user_id, kind, payload, dedup_key, created_at) ",
            );
            let payload = Json(&batch.payload);
            insert.push_values(&followers, |mut row, follower| {
                row.push_bind(Uuid::now_v7())
                    .push_bind(*follower)
                    .push_bind(batch.kind.as_str())
                    .push_bind(payload)
                    .push_bind(batch.dedup_key.as_str())
                    .push_bind(micros(batch.at));
            });
            insert.push(" ON CONFLICT (user_id, dedup_key) DO NOTHING");
            inserted = insert
                .build()
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx_error)?
                .rows_affected();
        }
        self.inner.commit(tx, false).await?;
        let next = followers.last().copied().filter(|_| more).map(UserId);
        Ok(FanOutProgress {
            scanned: to_u32(followers.len() as i64)?,
            inserted: to_u32(i64::try_from(inserted).unwrap_or(i64::MAX))?,
            next,
        })
    }
}
