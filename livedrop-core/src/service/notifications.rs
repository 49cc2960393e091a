//! A user's notifications.

use super::Livedrop;
use crate::error::{Error, Result};
use crate::id::NotificationId;
use crate::model::{Actor, Notification};
use crate::page::{Page, PageRequest};

impl Livedrop {
    /// The actor's notifications, newest first; only unread ones if `unread_only`.
    pub async fn notifications(
        &self,
        actor: &Actor,
        unread_only: bool,
        page: PageRequest,
    ) -> Result<Page<Notification>> {
        Ok(self
            .ports()
            .notifications
            .notifications(actor.id, unread_only, page)
            .await?)
    }

    /// Marks one of the actor's notifications read.
    pub async fn mark_notification_read(
        &self,
        actor: &Actor,
        id: NotificationId,
    ) -> Result<Notification> {
        let now = self.now();
        self.ports()
            .notifications
            .mark_read(actor.id, id, now)
            .await?
            .ok_or_else(|| Error::not_found("notification"))
    }

    /// Marks all the actor's notifications read. Returns how many were unread.
    pub async fn mark_all_notifications_read(&self, actor: &Actor) -> Result<u64> {
        let now = self.now();
        Ok(self
            .ports()
            .notifications
            .mark_all_read(actor.id, now)
            .await?)
    }
}
