//! The outbox relay side, idempotency keys and notifications.

use std::time::Duration;

use async_trait::async_trait;
use livedrop_core::clock::Timestamp;
use livedrop_core::id::{NotificationId, UserId};
use livedrop_core::model::{FanOutBatch, FanOutProgress, Notification};
use livedrop_core::page::{Cursor, Page, PageRequest};
use livedrop_core::ports::{
    BeginOutcome, Claim, IdempotencyStore, NotificationRepository, Outbox, OutboxRecord,
};
use livedrop_core::StoreResult;
use sqlx::types::Json;
use sqlx::{QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use super::dialect::{NotificationRow, OutboxRow};
use super::{after, map_sqlx_error, micros, overfetch, timestamp, to_u32, SqliteStore};

#[async_trait]
impl Outbox for SqliteStore {
    async fn pending(&self, limit: u32) -> StoreResult<Vec<OutboxRecord>> {
        sqlx::query_as::<_, OutboxRow>(&OutboxRow::pending())
            .bind(i64::from(limit))
            .fetch_all(&self.inner.readers)
            .await
            .map_err(map_sqlx_error)?
            .into_iter()
            .map(OutboxRow::into_record)
            .collect()
    }

    async fn appended_since(
        &self,
        after: i64,
        also: &[i64],
        limit: u32,
    ) -> StoreResult<Vec<OutboxRecord>> {
        // One writer commits in order, so positions appear without gaps; `also` is
        // served all the same for a follower that asks.
        let mut query = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {} FROM outbox WHERE seq > ",
            OutboxRow::COLUMNS
        ));
        query.push_bind(after);
        if !also.is_empty() {
            query.push(" OR seq IN (");
            let mut list = query.separated(", ");
            for seq in also.iter().take(10_000) {
                list.push_bind(*seq);
            }
            query.push(")");
        }
        query
            .push(" ORDER BY seq LIMIT ")
            .push_bind(i64::from(limit));
        query
            .build_query_as::<OutboxRow>()
            .fetch_all(&self.inner.readers)
            .await
            .map_err(map_sqlx_error)?
            .into_iter()
            .map(OutboxRow::into_record)
            .collect()
    }

    async fn head(&self) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT COALESCE(max(seq), 0) FROM outbox")
            .fetch_one(&self.inner.readers)
            .await
            .map_err(map_sqlx_error)
    }

    async fn mark_published(&self, seqs: &[i64]) -> StoreResult<()> {
        if seqs.is_empty() {
            return Ok(());
        }
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

    async fn prune_published(&self, cutoff: Timestamp) -> StoreResult<u64> {
        let done =
            sqlx::query("DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < ?1")
                .bind(micros(cutoff))
                .execute(&self.inner.writer)
                .await
                .map_err(map_sqlx_error)?;
        Ok(done.rows_affected())
    }

    async fn backlog(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&self.inner.readers)
            .await
            .map_err(map_sqlx_error)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn wait_for_append(&self, timeout: Duration) {
        // Every append commits through this store (the file lock keeps other
        // processes out), so the in-process signal sees them all.
        let _ = tokio::time::timeout(timeout, self.inner.appended.notified()).await;
    }
}

#[async_trait]
impl IdempotencyStore for SqliteStore {
    async fn begin(
        &self,
        user: UserId,
        key: &str,
        fingerprint: &str,
        now: Timestamp,
        lease: Duration,
    ) -> StoreResult<BeginOutcome> {
        let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let until = now.checked_add_signed(lease).unwrap_or(now);
        // One write transaction decides: nothing changes the key in between.
        let claim = Claim::new();
        let mut tx = self.inner.write().await?;
        let row = sqlx::query(
            "SELECT fingerprint, state, lease_until, response FROM idempotency_keys \
             WHERE user_id = ?1 AND key = ?2",
        )
        .bind(user.0)
        .bind(key)
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
                .bind(user.0)
                .bind(key)
                .bind(fingerprint)
                .bind(micros(until))
                .bind(micros(now))
                .bind(claim.0)
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx_error)?;
                BeginOutcome::Started(claim)
            }
            Some(row) => {
                let stored: String = row.try_get("fingerprint").map_err(map_sqlx_error)?;
                let state: String = row.try_get("state").map_err(map_sqlx_error)?;
                let lease_until: Option<i64> =
                    row.try_get("lease_until").map_err(map_sqlx_error)?;
                if stored != fingerprint {
                    BeginOutcome::Mismatch
                } else if state == "completed" {
                    let response: Option<Json<serde_json::Value>> =
                        row.try_get("response").map_err(map_sqlx_error)?;
                    BeginOutcome::Replay(response.map_or(serde_json::Value::Null, |r| r.0))
                } else if lease_until.is_some_and(|l| l > micros(now)) {
                    BeginOutcome::InFlight
                } else {
                    // Its owner died: take the lease over.
                    sqlx::query(
                        "UPDATE idempotency_keys SET lease_until = ?3, claim = ?4 \
                         WHERE user_id = ?1 AND key = ?2",
                    )
                    .bind(user.0)
                    .bind(key)
                    .bind(micros(until))
                    .bind(claim.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_sqlx_error)?;
                    BeginOutcome::Started(claim)
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

    async fn complete(
        &self,
        user: UserId,
        key: &str,
        claim: Claim,
        response: &serde_json::Value,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE idempotency_keys SET state = 'completed', response = ?3, lease_until = NULL \
             WHERE user_id = ?1 AND key = ?2 AND claim = ?4 AND state = 'in_flight'",
        )
        .bind(user.0)
        .bind(key)
        .bind(Json(response))
        .bind(claim.0)
        .execute(&self.inner.writer)
        .await
        .map_err(map_sqlx_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(&self, user: UserId, key: &str, claim: Claim) -> StoreResult<bool> {
        let done = sqlx::query(
            "DELETE FROM idempotency_keys \
             WHERE user_id = ?1 AND key = ?2 AND claim = ?3 AND state = 'in_flight'",
        )
        .bind(user.0)
        .bind(key)
        .bind(claim.0)
        .execute(&self.inner.writer)
        .await
        .map_err(map_sqlx_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn purge(&self, cutoff: Timestamp) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ?1")
            .bind(micros(cutoff))
            .execute(&self.inner.writer)
            .await
            .map_err(map_sqlx_error)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl NotificationRepository for SqliteStore {
    async fn insert_notification(&self, n: &Notification) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO notifications (id, user_id, kind, payload, dedup_key, created_at, read_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (user_id, dedup_key) DO NOTHING",
        )
        .bind(n.id.0)
        .bind(n.user_id.0)
        .bind(n.kind.as_str())
        .bind(Json(&n.payload))
        .bind(&n.dedup_key)
        .bind(micros(n.created_at))
        .bind(n.read_at.map(micros))
        .execute(&self.inner.writer)
        .await
        .map_err(map_sqlx_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn fan_out(&self, batch: &FanOutBatch) -> StoreResult<FanOutProgress> {
        // One short write transaction: the next `limit` followers in the followers
        // listing's keyset order (one extra tells whether more exist), a notification
        // for each not yet notified under the key.
        let limit = batch.limit.clamp(1, 4_000);
        let mut tx = self.inner.write().await?;
        let rows = sqlx::query(
            "SELECT follower_id, followed_at FROM follows \
             WHERE creator_id = ?1 AND (?2 IS NULL OR (followed_at, follower_id) < (?2, ?3)) \
             ORDER BY followed_at DESC, follower_id DESC LIMIT ?4",
        )
        .bind(batch.creator_id.0)
        .bind(batch.after.map(|c| micros(c.at)))
        .bind(batch.after.map(|c| c.id))
        .bind(i64::from(limit) + 1)
        .fetch_all(&mut *tx)
        .await
        .map_err(map_sqlx_error)?;
        let more = rows.len() > limit as usize;
        let mut followers = Vec::with_capacity(rows.len());
        for r in rows.iter().take(limit as usize) {
            let id: Uuid = r.try_get("follower_id").map_err(map_sqlx_error)?;
            let at: i64 = r.try_get("followed_at").map_err(map_sqlx_error)?;
            followers.push((id, at));
        }
        let mut inserted = 0;
        if !followers.is_empty() {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO notifications (id, user_id, kind, payload, dedup_key, created_at) ",
            );
            let payload = Json(&batch.payload);
            insert.push_values(&followers, |mut row, (follower, _)| {
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
        let next = match followers.last() {
            Some((id, at)) if more => Some(Cursor::new(timestamp(*at)?, *id)),
            _ => None,
        };
        Ok(FanOutProgress {
            scanned: to_u32(followers.len() as i64)?,
            inserted: to_u32(i64::try_from(inserted).unwrap_or(i64::MAX))?,
            next,
        })
    }

    async fn notifications(
        &self,
        user: UserId,
        unread_only: bool,
        page: PageRequest,
    ) -> StoreResult<Page<Notification>> {
        let sql = format!(
            "SELECT {} FROM notifications WHERE user_id = ?1 {} \
               AND (?2 IS NULL OR (created_at, id) < (?2, ?3)) \
             ORDER BY created_at DESC, id DESC LIMIT ?4",
            NotificationRow::COLUMNS,
            if unread_only {
                "AND read_at IS NULL"
            } else {
                ""
            }
        );
        let (at, id) = after(&page);
        let rows = sqlx::query_as::<_, NotificationRow>(&sql)
            .bind(user.0)
            .bind(at)
            .bind(id)
            .bind(overfetch(&page))
            .fetch_all(&self.inner.readers)
            .await
            .map_err(map_sqlx_error)?;
        let items = rows
            .into_iter()
            .map(NotificationRow::into_notification)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(
            items,
            page.limit,
            Notification::cursor,
        ))
    }

    async fn mark_read(
        &self,
        user: UserId,
        id: NotificationId,
        at: Timestamp,
    ) -> StoreResult<Option<Notification>> {
        let sql = format!(
            "UPDATE notifications SET read_at = COALESCE(read_at, ?3) \
             WHERE user_id = ?1 AND id = ?2 RETURNING {}",
            NotificationRow::COLUMNS
        );
        sqlx::query_as::<_, NotificationRow>(&sql)
            .bind(user.0)
            .bind(id.0)
            .bind(micros(at))
            .fetch_optional(&self.inner.writer)
            .await
            .map_err(map_sqlx_error)?
            .map(NotificationRow::into_notification)
            .transpose()
    }

    async fn mark_all_read(&self, user: UserId, at: Timestamp) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE notifications SET read_at = ?2 WHERE user_id = ?1 AND read_at IS NULL",
        )
        .bind(user.0)
        .bind(micros(at))
        .execute(&self.inner.writer)
        .await
        .map_err(map_sqlx_error)?;
        Ok(done.rows_affected())
    }
}
