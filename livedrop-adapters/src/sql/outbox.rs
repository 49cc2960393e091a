//! The outbox, idempotency keys and notifications, written once for both SQL stores:
//! [`outbox_ports!`] expands what reads and writes the same on PostgreSQL and SQLite.
//! What each does its own way stays with the store, as inherent methods the
//! expansion calls: the relay's read and its marking (one relay per schema on
//! PostgreSQL, the single writer on SQLite), waiting for an append, claiming a key
//! and fanning a notification out.

use livedrop_core::clock::Timestamp;
use livedrop_core::id::UserId;
use livedrop_core::ports::Claim;

/// What `IdempotencyStore::begin` asks of a store: the buyer's `key`, for a request
/// with `fingerprint`, claimed for `claim` until `until` (it is `now`).
#[derive(Clone, Copy)]
pub(crate) struct KeyClaim<'a> {
    pub(crate) user: UserId,
    pub(crate) key: &'a str,
    pub(crate) fingerprint: &'a str,
    pub(crate) now: Timestamp,
    pub(crate) until: Timestamp,
    pub(crate) claim: Claim,
}

/// Implements `Outbox`, `IdempotencyStore` and `NotificationRepository` for the store
/// type `$store`.
///
/// Besides what [`catalog_ports!`](super::catalog::catalog_ports) names, the
/// expansion calls the store's `relay_pending(limit)`, `publish(seqs)`,
/// `wait_for_outbox(timeout)`, `claim_key(KeyClaim)`
/// and `fan_out_batch(batch)`.
macro_rules! outbox_ports {
    ($store:ty) => {
        #[::async_trait::async_trait]
        impl ::livedrop_core::ports::Outbox for $store {
            async fn pending(
                &self,
                limit: u32,
            ) -> ::livedrop_core::StoreResult<Vec<::livedrop_core::ports::OutboxRecord>> {
                self.relay_pending(limit).await
            }

            async fn mark_published(&self, seqs: &[i64]) -> ::livedrop_core::StoreResult<()> {
                if seqs.is_empty() {
                    return Ok(());
                }
                self.publish(seqs).await
            }

            async fn prune_published(
                &self,
                cutoff: ::livedrop_core::clock::Timestamp,
            ) -> ::livedrop_core::StoreResult<u64> {
                let done = ::sqlx::query(
                    "DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < $1",
                )
                .bind(dialect::stamp(cutoff))
                .execute(self.inner.writer())
                .await
                .map_err(dialect::map_sqlx_error)?;
                Ok(done.rows_affected())
            }

            async fn backlog(&self) -> ::livedrop_core::StoreResult<u64> {
                let n: i64 =
                    ::sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                        .fetch_one(self.inner.reader())
                        .await
                        .map_err(dialect::map_sqlx_error)?;
                Ok(u64::try_from(n).unwrap_or(0))
            }

            async fn appended_since(
                &self,
                after: i64,
                also: &[i64],
                limit: u32,
            ) -> ::livedrop_core::StoreResult<Vec<::livedrop_core::ports::OutboxRecord>> {
                let sql = format!(
                    "SELECT {} FROM outbox WHERE seq > $1 OR seq IN (SELECT value FROM {}) \
                     ORDER BY seq LIMIT $3",
                    dialect::OutboxRow::COLUMNS,
                    dialect::each("$2", "int8")
                );
                ::sqlx::query_as::<_, dialect::OutboxRow>(&sql)
                    .bind(after)
                    .bind(dialect::list(also))
                    .bind(i64::from(limit))
                    .fetch_all(self.inner.reader())
                    .await
                    .map_err(dialect::map_sqlx_error)?
                    .into_iter()
                    .map(dialect::OutboxRow::into_record)
                    .collect()
            }

            async fn head(&self) -> ::livedrop_core::StoreResult<i64> {
                ::sqlx::query_scalar("SELECT COALESCE(max(seq), 0) FROM outbox")
                    .fetch_one(self.inner.reader())
                    .await
                    .map_err(dialect::map_sqlx_error)
            }

            async fn wait_for_append(&self, timeout: ::std::time::Duration) {
                self.wait_for_outbox(timeout).await
            }
        }

        #[::async_trait::async_trait]
        impl ::livedrop_core::ports::IdempotencyStore for $store {
            async fn begin(
                &self,
                user: ::livedrop_core::id::UserId,
                key: &str,
                fingerprint: &str,
                now: ::livedrop_core::clock::Timestamp,
                lease: ::std::time::Duration,
            ) -> ::livedrop_core::StoreResult<::livedrop_core::ports::BeginOutcome> {
                let lease = ::chrono::Duration::from_std(lease).unwrap_or(::chrono::Duration::MAX);
                let until = now.checked_add_signed(lease).unwrap_or(now);
                self.claim_key($crate::sql::outbox::KeyClaim {
                    user,
                    key,
                    fingerprint,
                    now,
                    until,
                    claim: ::livedrop_core::ports::Claim::new(),
                })
                .await
            }

            async fn complete(
                &self,
                user: ::livedrop_core::id::UserId,
                key: &str,
                claim: ::livedrop_core::ports::Claim,
                response: &::serde_json::Value,
            ) -> ::livedrop_core::StoreResult<bool> {
                let done = ::sqlx::query(
                    "UPDATE idempotency_keys SET state = 'completed', response = $4, \
                         lease_until = NULL \
                     WHERE user_id = $1 AND key = $2 AND claim = $3 AND state = 'in_flight'",
                )
                .bind(user.0)
                .bind(key)
                .bind(claim.0)
                .bind(::sqlx::types::Json(response))
                .execute(self.inner.writer())
                .await
                .map_err(dialect::map_sqlx_error)?;
                Ok(done.rows_affected() == 1)
            }

            async fn release(
                &self,
                user: ::livedrop_core::id::UserId,
                key: &str,
                claim: ::livedrop_core::ports::Claim,
            ) -> ::livedrop_core::StoreResult<bool> {
                let done = ::sqlx::query(
                    "DELETE FROM idempotency_keys \
                     WHERE user_id = $1 AND key = $2 AND claim = $3 AND state = 'in_flight'",
                )
                .bind(user.0)
                .bind(key)
                .bind(claim.0)
                .execute(self.inner.writer())
                .await
                .map_err(dialect::map_sqlx_error)?;
                Ok(done.rows_affected() == 1)
            }

            async fn purge(
                &self,
                cutoff: ::livedrop_core::clock::Timestamp,
            ) -> ::livedrop_core::StoreResult<u64> {
                let done = ::sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
                    .bind(dialect::stamp(cutoff))
                    .execute(self.inner.writer())
                    .await
                    .map_err(dialect::map_sqlx_error)?;
                Ok(done.rows_affected())
            }
        }

        #[::async_trait::async_trait]
        impl ::livedrop_core::ports::NotificationRepository for $store {
            async fn insert_notification(
                &self,
                n: &::livedrop_core::model::Notification,
            ) -> ::livedrop_core::StoreResult<bool> {
                let done = ::sqlx::query(
                    "INSERT INTO notifications (id, user_id, kind, payload, dedup_key, \
                                                created_at, read_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (user_id, dedup_key) DO NOTHING",
                )
                .bind(n.id.0)
                .bind(n.user_id.0)
                .bind(n.kind.as_str())
                .bind(::sqlx::types::Json(&n.payload))
                .bind(&n.dedup_key)
                .bind(dialect::stamp(n.created_at))
                .bind(n.read_at.map(dialect::stamp))
                .execute(self.inner.writer())
                .await
                .map_err(dialect::map_sqlx_error)?;
                Ok(done.rows_affected() == 1)
            }

            async fn fan_out(
                &self,
                batch: &::livedrop_core::model::FanOutBatch,
            ) -> ::livedrop_core::StoreResult<::livedrop_core::model::FanOutProgress> {
                self.fan_out_batch(batch).await
            }

            async fn notifications(
                &self,
                user: ::livedrop_core::id::UserId,
                unread_only: bool,
                page: ::livedrop_core::page::PageRequest,
            ) -> ::livedrop_core::StoreResult<
                ::livedrop_core::page::Page<::livedrop_core::model::Notification>,
            > {
                let sql = format!(
                    "SELECT {} FROM notifications WHERE user_id = $1 {} \
                       AND ($2 IS NULL OR (created_at, id) < ($2, $3)) \
                     ORDER BY created_at DESC, id DESC LIMIT $4",
                    dialect::NotificationRow::COLUMNS,
                    if unread_only {
                        "AND read_at IS NULL"
                    } else {
                        ""
                    }
                );
                let (at, id) = dialect::after(&page);
                let query = ::sqlx::query_as(&sql)
                    .bind(user.0)
                    .bind(at)
                    .bind(id);
                $crate::sql::keyset_page(
                    self.inner.reader(),
                    query,
                    &page,
                    (
                        dialect::NotificationRow::into_notification,
                        ::livedrop_core::model::Notification::cursor,
                    ),
                    dialect::map_sqlx_error,
                )
                .await
            }

            async fn mark_read(
                &self,
                user: ::livedrop_core::id::UserId,
                id: ::livedrop_core::id::NotificationId,
                at: ::livedrop_core::clock::Timestamp,
            ) -> ::livedrop_core::StoreResult<Option<::livedrop_core::model::Notification>> {
                let sql = format!(
                    "UPDATE notifications SET read_at = COALESCE(read_at, $3) \
                     WHERE user_id = $1 AND id = $2 RETURNING {}",
                    dialect::NotificationRow::COLUMNS
                );
                let query = ::sqlx::query_as(&sql)
                    .bind(user.0)
                    .bind(id.0)
                    .bind(dialect::stamp(at));
                $crate::sql::optional_row(
                    self.inner.writer(),
                    query,
                    dialect::NotificationRow::into_notification,
                    dialect::map_sqlx_error,
                )
                .await
            }

            async fn mark_all_read(
                &self,
                user: ::livedrop_core::id::UserId,
                at: ::livedrop_core::clock::Timestamp,
            ) -> ::livedrop_core::StoreResult<u64> {
                let done = ::sqlx::query(
                    "UPDATE notifications SET read_at = $2 WHERE user_id = $1 AND read_at IS NULL",
                )
                .bind(user.0)
                .bind(dialect::stamp(at))
                .execute(self.inner.writer())
                .await
                .map_err(dialect::map_sqlx_error)?;
                Ok(done.rows_affected())
            }
        }
    };
}

pub(crate) use outbox_ports;
