//! Notifications and their fan-out.

use std::collections::BTreeSet;
use std::ops::Bound;

use async_trait::async_trait;
use livedrop_core::id::{NotificationId, UserId};
use livedrop_core::model::{FanOutBatch, FanOutProgress, Notification};
use livedrop_core::page::{Page, PageRequest};
use livedrop_core::ports::NotificationRepository;
use livedrop_core::{StoreError, StoreResult, Timestamp};

use super::{keyset_page, MemoryStore, State};

impl State {
    /// Stores `n` unless its user already has one with its dedup key.
    fn insert_notification(&mut self, n: &Notification) -> StoreResult<bool> {
        let keys = self.notification_keys.entry(n.user_id).or_default();
        if keys.contains(n.dedup_key.as_str()) {
            return Ok(false);
        }
        if self.notifications.contains_key(&n.id) {
            return Err(StoreError::Conflict(format!(
                "notification {} exists",
                n.id
            )));
        }
        keys.insert(n.dedup_key.clone());
        let key = (n.created_at, n.id.0);
        self.user_notifications
            .entry(n.user_id)
            .or_default()
            .insert(key);
        if n.read_at.is_none() {
            self.unread.entry(n.user_id).or_default().insert(key);
        }
        self.notifications.insert(n.id, n.clone());
        Ok(true)
    }
}

#[async_trait]
impl NotificationRepository for MemoryStore {
    async fn insert_notification(&self, notification: &Notification) -> StoreResult<bool> {
        self.write(|state| state.insert_notification(notification))
    }

    async fn fan_out(&self, batch: &FanOutBatch) -> StoreResult<FanOutProgress> {
        self.write(|state| {
            // The shard's next `limit` followers by id (one more tells whether more
            // exist); followers outside the shard are passed over, not counted.
            let after = batch.after.map_or(Bound::Unbounded, Bound::Excluded);
            let mut walk = state
                .audiences
                .get(&batch.creator_id)
                .into_iter()
                .flat_map(|audience| audience.range((after, Bound::Unbounded)))
                .filter(|follower| batch.shard.contains(**follower));
            let followers: Vec<UserId> = walk
                .by_ref()
                .take(batch.limit.max(1) as usize)
                .copied()
                .collect();
            let more = walk.next().is_some();
            let mut inserted = 0u32;
            for follower in &followers {
                let stored = state.insert_notification(&Notification {
                    id: NotificationId::new(),
                    user_id: *follower,
                    kind: batch.kind,
                    payload: batch.payload.clone(),
                    dedup_key: batch.dedup_key.clone(),
                    created_at: batch.at,
                    read_at: None,
                })?;
                inserted += u32::from(stored);
            }
            Ok(FanOutProgress {
                scanned: followers.len() as u32,
                inserted,
                next: followers.last().copied().filter(|_| more),
            })
        })
    }

    async fn notifications(
        &self,
        user: UserId,
        unread_only: bool,
        page: PageRequest,
    ) -> StoreResult<Page<Notification>> {
        let state = self.read();
        let index = if unread_only {
            state.unread.get(&user)
        } else {
            state.user_notifications.get(&user)
        };
        Ok(keyset_page(
            index,
            page,
            |(_, id)| state.notifications.get(&NotificationId(*id)).cloned(),
            Notification::cursor,
        ))
    }

    async fn mark_read(
        &self,
        user: UserId,
        id: NotificationId,
        at: Timestamp,
    ) -> StoreResult<Option<Notification>> {
        self.write(|state| {
            let Some(n) = state
                .notifications
                .get_mut(&id)
                .filter(|n| n.user_id == user)
            else {
                return Ok(None);
            };
            if n.read_at.is_none() {
                n.read_at = Some(at);
                if let Some(unread) = state.unread.get_mut(&user) {
                    unread.remove(&(n.created_at, id.0));
                }
            }
            Ok(Some(n.clone()))
        })
    }

    async fn mark_all_read(&self, user: UserId, at: Timestamp) -> StoreResult<u64> {
        self.write(|state| {
            let unread: BTreeSet<_> = state.unread.remove(&user).unwrap_or_default();
            for (_, id) in &unread {
                if let Some(n) = state.notifications.get_mut(&NotificationId(*id)) {
                    n.read_at = Some(at);
                }
            }
            Ok(unread.len() as u64)
        })
    }
}
