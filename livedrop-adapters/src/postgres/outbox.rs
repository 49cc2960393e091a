//! The outbox relay side, idempotency keys and notifications: the bodies
//! [`outbox_ports!`](crate::sql::outbox::outbox_ports) shares with the SQLite store,
//! and what PostgreSQL does its own way: one relay per schema (a session advisory
//! lock), LISTEN for appends, claiming a key without a transaction, and fan-out in
//! one statement.

use std::time::Duration;

use livedrop_core::id::UserId;
use livedrop_core::model::{FanOutBatch, FanOutProgress};
use livedrop_core::ports::{BeginOutcome, OutboxRecord};
use livedrop_core::{StoreError, StoreResult};
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::dialect::{self, OutboxRow};
use super::{map_sqlx_error, to_u32, PgStore};
use crate::sql::outbox::KeyClaim;

crate::sql::outbox::outbox_ports!(PgStore);

/// The relay's connection and whether it holds the relay lock.
pub(crate) struct RelaySession {
    conn: PgConnection,
    leader: bool,
}

impl RelaySession {
    /// Wraps a dedicated (detached) connection.
    pub(crate) fn new(conn: PgConnection) -> Self {
        Self {
            conn,
            leader: false,
        }
    }

    /// Closes the connection, releasing the lock.
    pub(crate) async fn close(self) {
        use sqlx::Connection;
        if let Err(e) = self.conn.close().await {
            tracing::debug!(error = %e, "closing the relay connection");
        }
    }
}

impl PgStore {
    /// The relay's read, when this store holds the relay lock.
    async fn relay_pending(&self, limit: u32) -> StoreResult<Vec<OutboxRecord>> {
        let mut slot = self.inner.relay.lock().await;
        if slot.is_none() {
            let conn = self.inner.pool.acquire().await.map_err(map_sqlx_error)?;
            // Detached: the session (and its advisory lock) lives as long as this
            // store relays, and dies with the process.
            *slot = Some(RelaySession::new(conn.detach()));
        }
        let Some(session) = slot.as_mut() else {
            return Ok(Vec::new());
        };
        let result = relay_on(session, limit).await;
        if result.is_err() {
            // Drop the session: closing it releases the lock for another relay.
            if let Some(session) = slot.take() {
                session.close().await;
            }
        }
        result
    }
}

async fn relay_on(session: &mut RelaySession, limit: u32) -> StoreResult<Vec<OutboxRecord>> {
    if !session.leader {
        // One relay per schema: only the holder of this session lock reads the
        // outbox, so events leave in append order even with several processes.
        session.leader = sqlx::query_scalar(
            "SELECT pg_try_advisory_lock(hashtextextended('livedrop.outbox.relay:' \
             || current_schema(), 0))",
        )
        .fetch_one(&mut session.conn)
        .await
        .map_err(map_sqlx_error)?;
        if !session.leader {
            return Ok(Vec::new());
        }
    }
    sqlx::query_as::<_, OutboxRow>(&OutboxRow::pending())
        .bind(i64::from(limit))
        .fetch_all(&mut session.conn)
        .await
        .map_err(map_sqlx_error)?
        .into_iter()
        .map(OutboxRow::into_record)
        .collect()
}

impl PgStore {
    /// Marks `seqs` published, at the server's time.
    async fn publish(&self, seqs: &[i64]) -> StoreResult<()> {
        sqlx::query(
            "UPDATE outbox SET published_at = now() WHERE seq = ANY($1) AND published_at IS NULL",
        )
        .bind(seqs)
        .execute(&self.inner.pool)
        .await
        .map_err(map_sqlx_error)?;
        Ok(())
    }

    /// Waits for the outbox channel's notice of an append, or `timeout`.
    async fn wait_for_outbox(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let Ok(mut slot) = tokio::time::timeout_at(deadline, self.inner.listener.lock()).await
        else {
            return;
        };
        if slot.is_none() {
            match self.listen().await {
                Ok(listener) => *slot = Some(listener),
                Err(e) => {
                    tracing::warn!(error = %e, "outbox listener unavailable; polling");
                    tokio::time::sleep_until(deadline).await;
                    return;
                }
            }
        }
        let Some(listener) = slot.as_mut() else {
            return;
        };
        match tokio::time::timeout_at(deadline, listener.recv()).await {
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "outbox listener failed; polling");
                slot.take();
                tokio::time::sleep_until(deadline).await;
            }
        }
    }

    /// A listener on this schema's outbox channel (see the `outbox_appended` trigger).
    async fn listen(&self) -> StoreResult<PgListener> {
        let schema = self.inner.schema().await?.to_owned();
        let mut listener = PgListener::connect_with(&self.inner.pool)
            .await
            .map_err(map_sqlx_error)?;
        listener
            .listen(&format!("livedrop_outbox_{schema}"))
            .await
            .map_err(map_sqlx_error)?;
        Ok(listener)
    }

    /// Claims `c.key` for `c.claim` until `c.until`: inserts it, or takes over a
    /// lease past its time, else reports what holds it. A key released between these
    /// statements makes the claim go round again.
    async fn claim_key(&self, c: KeyClaim<'_>) -> StoreResult<BeginOutcome> {
        // Each statement reads $1..$6 as (user, key, fingerprint, until, now, claim)
        // and either takes the key for `claim` or leaves it.
        let take = |sql: &'static str| async move {
            sqlx::query(sql)
                .bind(c.user.0)
                .bind(c.key)
                .bind(c.fingerprint)
                .bind(c.until)
                .bind(c.now)
                .bind(c.claim.0)
                .execute(&self.inner.pool)
                .await
                .map(|done| done.rows_affected() == 1)
                .map_err(map_sqlx_error)
        };
        for _ in 0..4 {
            let claimed = take(
                "INSERT INTO idempotency_keys (user_id, key, fingerprint, state, lease_until, \
                                               response, created_at, claim) \
                 VALUES ($1, $2, $3, 'in_flight', $4, NULL, $5, $6) ON CONFLICT DO NOTHING",
            )
            .await?;
            if claimed {
                return Ok(BeginOutcome::Started(c.claim));
            }
            // Take over a lease whose owner died; the condition makes one claimant win.
            let taken = take(
                "UPDATE idempotency_keys SET lease_until = $4, claim = $6 \
                 WHERE user_id = $1 AND key = $2 AND fingerprint = $3 \
                   AND state = 'in_flight' AND lease_until <= $5",
            )
            .await?;
            if taken {
                return Ok(BeginOutcome::Started(c.claim));
            }
            let row = sqlx::query(
                "SELECT fingerprint, state, response FROM idempotency_keys \
                 WHERE user_id = $1 AND key = $2",
            )
            .bind(c.user.0)
            .bind(c.key)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(map_sqlx_error)?;
            let Some(row) = row else { continue };
            let stored: String = row.try_get("fingerprint").map_err(map_sqlx_error)?;
            let state: String = row.try_get("state").map_err(map_sqlx_error)?;
            if stored != c.fingerprint {
                return Ok(BeginOutcome::Mismatch);
            }
            if state == "completed" {
                let response: Option<serde_json::Value> =
                    row.try_get("response").map_err(map_sqlx_error)?;
                return Ok(BeginOutcome::Replay(
                    response.unwrap_or(serde_json::Value::Null),
                ));
            }
            return Ok(BeginOutcome::InFlight);
        }
        Err(StoreError::Conflict(
            "idempotency key kept changing while claimed".into(),
        ))
    }

    /// The next batch of a fan-out, in one statement.
    async fn fan_out_batch(&self, batch: &FanOutBatch) -> StoreResult<FanOutProgress> {
        // One statement in one short transaction: the shard's next `limit` followers
        // by id, read off the follows key (one extra tells whether more exist), a
        // notification for each not yet notified under the key. In id order the
        // rows land in one stretch of the notifications' indexes led by the user,
        // and two fan-outs of one drop racing over the same followers meet them in
        // one order and never deadlock.
        //
        // The followers are read by walking the key from `after`, which stops at
        // the limit. Before the table's statistics count a new audience (a creator
        // whose followers were just imported) the planner expects a few rows and
        // would rather collect every follower after `after` in a bitmap and sort
        // them, batch after batch; with bitmap scans off for this transaction it
        // walks the key whatever the statistics say.
        //
        // The shard test is `FanOutShard::of` in SQL, read off the index entries. The
        // ids come from here, time-ordered like every other notification id: each
        // batch's ids land at the right edge of the primary key instead of all over
        // it, and cost less than `gen_random_uuid()` row by row.
        let limit = batch.limit.max(1);
        let ids: Vec<Uuid> = (0..limit).map(|_| Uuid::now_v7()).collect();
        let mut tx = self.inner.write().await?;
        sqlx::query("SET LOCAL enable_bitmapscan = off")
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx_error)?;
        let row = sqlx::query(
            "WITH candidates AS ( \
                 SELECT follower_id, row_number() OVER (ORDER BY follower_id) AS n \
                 FROM ( \
                     SELECT follower_id FROM follows \
                     WHERE creator_id = $1 \
                       AND ($2::uuid IS NULL OR follower_id > $2::uuid) \
                       AND ((get_byte(uuid_send(follower_id), 14) << 8) \
                            | get_byte(uuid_send(follower_id), 15)) % $8 = $9 \
                     ORDER BY follower_id LIMIT $3 + 1 \
                 ) c \
             ), batch AS ( \
                 SELECT follower_id, n FROM candidates WHERE n <= $3 \
             ), inserted AS ( \
                 INSERT INTO notifications (id, user_id, kind, payload, dedup_key, created_at) \
                 SELECT ($10::uuid[])[n], follower_id, $4, $5, $6, $7 FROM batch \
                 ORDER BY follower_id \
                 ON CONFLICT (user_id, dedup_key) DO NOTHING \
                 RETURNING 1 \
             ) \
             SELECT (SELECT count(*) FROM batch) AS scanned, \
                    (SELECT count(*) FROM inserted) AS inserted, \
                    (SELECT count(*) FROM candidates) AS candidates, \
                    (SELECT follower_id FROM batch ORDER BY n DESC LIMIT 1) AS last_id",
        )
        .bind(batch.creator_id.0)
        .bind(batch.after.map(|f| f.0))
        .bind(i64::from(limit))
        .bind(batch.kind.as_str())
        .bind(&batch.payload)
        .bind(&batch.dedup_key)
        .bind(batch.at)
        .bind(i32::try_from(batch.shard.count()).unwrap_or(i32::MAX))
        .bind(i32::try_from(batch.shard.index()).unwrap_or(i32::MAX))
        .bind(&ids)
        .fetch_one(&mut *tx)
        .await
        .map_err(map_sqlx_error)?;
        tx.commit().await.map_err(map_sqlx_error)?;
        let scanned: i64 = row.try_get("scanned").map_err(map_sqlx_error)?;
        let inserted: i64 = row.try_get("inserted").map_err(map_sqlx_error)?;
        let candidates: i64 = row.try_get("candidates").map_err(map_sqlx_error)?;
        let last_id: Option<Uuid> = row.try_get("last_id").map_err(map_sqlx_error)?;
        let next = last_id.filter(|_| candidates > scanned).map(UserId);
        Ok(FanOutProgress {
            scanned: to_u32(scanned)?,
            inserted: to_u32(inserted)?,
            next,
        })
    }
}
