//! With no shared broker (`Config::follow_outbox`) the outbox relay writes each event's
//! notifications before it marks the event published: a process killed after its
//! relay published a batch, or in the middle of a fan-out, leaves the batch in the
//! outbox, and the next process's relay notifies every follower exactly once.
//!
//! `cargo test -p livedrop-core --test relay`
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::Memory;
use livedrop_adapters::memory::{MemoryBus, MemoryStore};
use livedrop_core::event::Event;
use livedrop_core::model::{
    Actor, FanOutBatch, FanOutProgress, Notification, NotificationKind, Role,
};
use livedrop_core::page::{Page, PageRequest};
use livedrop_core::ports::{EventBus, NotificationRepository, Outbox, Subscription};
use livedrop_core::service::{Livedrop, OutboxRelay, Ports};
use livedrop_core::{Config, DropId, NotificationId, StoreResult, Timestamp, UserId};
use tokio::sync::Notify;

/// A bus that publishes, then never answers while `stall` is set: the process is
/// killed between the publish and what follows it.
struct StallAfterPublish {
    inner: Arc<MemoryBus>,
    stall: AtomicBool,
    published: Notify,
}

#[async_trait]
impl EventBus for StallAfterPublish {
    async fn publish(&self, events: &[Event]) -> StoreResult<()> {
        self.inner.publish(events).await?;
        if self.stall.load(Ordering::SeqCst) {
            self.published.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(())
    }
    async fn subscribe(&self, group: &str) -> StoreResult<Box<dyn Subscription>> {
        self.inner.subscribe(group).await
    }
}

/// Notifications that never answer after `batches` fan-out batches: the process is
/// killed in the middle of a fan-out.
struct StallMidFanOut {
    inner: Arc<MemoryStore>,
    batches: AtomicU32,
    stalled: Notify,
}

#[async_trait]
impl NotificationRepository for StallMidFanOut {
    async fn insert_notification(&self, notification: &Notification) -> StoreResult<bool> {
        self.inner.insert_notification(notification).await
    }
    async fn fan_out(&self, batch: &FanOutBatch) -> StoreResult<FanOutProgress> {
        let left = self.batches.load(Ordering::SeqCst);
        if left == 0 {
            self.stalled.notify_one();
            std::future::pending::<()>().await;
        }
        self.batches.store(left - 1, Ordering::SeqCst);
        self.inner.fan_out(batch).await
    }
    async fn notifications(
        &self,
        user: UserId,
        unread_only: bool,
        page: PageRequest,
    ) -> StoreResult<Page<Notification>> {
        self.inner.notifications(user, unread_only, page).await
    }
    async fn mark_read(
        &self,
        user: UserId,
        id: NotificationId,
        at: Timestamp,
    ) -> StoreResult<Option<Notification>> {
        self.inner.mark_read(user, id, at).await
    }
    async fn mark_all_read(&self, user: UserId, at: Timestamp) -> StoreResult<u64> {
        self.inner.mark_all_read(user, at).await
    }
}

fn config() -> Config {
    Config {
        follow_outbox: true,
        // Several fan-out batches per drop, so a relay can die between two of them;
        // one walk, so the batches written before it dies are known.
        fan_out_batch: 2,
        fan_out_shards: 1,
        ..Config::default()
    }
}

/// Two processes' services over one store, each with its own bus.
struct Deployment {
    store: Arc<MemoryStore>,
    ports: Ports,
}

impl Deployment {
    fn new() -> Self {
        let Memory { ports, store, .. } = Memory::new();
        Self { store, ports }
    }

    /// A process's services: its own bus, the shared store.
    fn process(&self, bus: Arc<dyn EventBus>) -> Livedrop {
        let ports = Ports {
            bus,
            ..self.ports.clone()
        };
        Livedrop::new(ports, config())
    }

    /// A creator with `n` followers, and a drop of theirs that is live at once.
    async fn live_drop_with_followers(&self, app: &Livedrop, n: usize) -> (DropId, Vec<Actor>) {
        let creator = common::user(&self.ports, Role::Creator).await;
        let mut followers = Vec::new();
        for _ in 0..n {
            let follower = common::user(&self.ports, Role::Customer).await;
            app.follow(&follower, creator.id).await.unwrap();
            followers.push(follower);
        }
        let drop = common::drop(app, &creator, 10, None, chrono::Duration::zero()).await;
        (drop, followers)
    }

    /// How many `drop_live` notifications each follower has for `drop`.
    async fn drop_live_counts(&self, drop: DropId, followers: &[Actor]) -> Vec<usize> {
        let mut counts = Vec::new();
        for follower in followers {
            let page = self
                .store
                .notifications(follower.id, false, PageRequest::first(100))
                .await
                .unwrap();
            let n = page
                .items
                .iter()
                .filter(|n| {
                    n.kind == NotificationKind::DropLive
                        && n.payload.get("drop_id").and_then(|v| v.as_str())
                            == Some(drop.to_string().as_str())
                })
                .count();
            counts.push(n);
        }
        counts
    }
}

#[tokio::test(start_paused = true)]
async fn a_process_killed_after_its_relay_published_leaves_the_notifications_to_the_next() {
    let world = Deployment::new();
    let stalling = Arc::new(StallAfterPublish {
        inner: Arc::new(MemoryBus::new()),
        stall: AtomicBool::new(true),
        published: Notify::new(),
    });
    let a = world.process(stalling.clone());
    let (drop, followers) = world.live_drop_with_followers(&a, 5).await;

    // Process A's relay publishes the batch to A's own bus, and A dies.
    let background = a.spawn_background();
    stalling.published.notified().await;
    background.abort();
    assert_eq!(world.drop_live_counts(drop, &followers).await, vec![0; 5]);
    assert!(
        world.store.backlog().await.unwrap() > 0,
        "nothing was marked published"
    );

    // Process B starts: its relay finds the batch and notifies every follower once.
    let b = world.process(Arc::new(MemoryBus::new()));
    let background = b.spawn_background();
    tokio::time::sleep(Duration::from_secs(5)).await;
    background.shutdown().await;
    assert_eq!(world.drop_live_counts(drop, &followers).await, vec![1; 5]);
    assert_eq!(world.store.backlog().await.unwrap(), 0);
}

/// A relay of `app`'s outbox to its bus, 500 events a batch.
fn relay_of(app: &Livedrop) -> OutboxRelay {
    OutboxRelay::new(app.ports().outbox.clone(), app.ports().bus.clone(), 500)
}

#[tokio::test(start_paused = true)]
async fn a_relay_killed_mid_fan_out_leaves_every_follower_notified_once() {
    let world = Deployment::new();
    let a = world.process(Arc::new(MemoryBus::new()));
    let (drop, followers) = world.live_drop_with_followers(&a, 5).await;

    // A's relay writes the first fan-out batch (two followers) and dies in the second.
    let stalling = Arc::new(StallMidFanOut {
        inner: world.store.clone(),
        batches: AtomicU32::new(1),
        stalled: Notify::new(),
    });
    let a = Livedrop::new(
        Ports {
            notifications: stalling.clone(),
            ..a.ports().clone()
        },
        config(),
    );
    let relay = relay_of(&a).notifying(a);
    let task = tokio::spawn(async move { relay.relay_once().await });
    stalling.stalled.notified().await;
    task.abort();
    let counts = world.drop_live_counts(drop, &followers).await;
    assert_eq!(counts.iter().sum::<usize>(), 2, "{counts:?}");
    assert!(world.store.backlog().await.unwrap() > 0);

    // B's relay handles the whole batch again: the two notified already are not
    // notified twice, the three others are notified.
    let b = world.process(Arc::new(MemoryBus::new()));
    let relay = relay_of(&b).notifying(b);
    while relay.relay_once().await.unwrap() > 0 {}
    assert_eq!(world.drop_live_counts(drop, &followers).await, vec![1; 5]);
    assert_eq!(world.store.backlog().await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_relay_that_does_not_notify_leaves_notifications_to_the_consumer_group() {
    // Without `notifying`, the relay only moves events: with a shared broker the
    // notification consumer group writes them.
    let world = Deployment::new();
    let app = world.process(Arc::new(MemoryBus::new()));
    let (drop, followers) = world.live_drop_with_followers(&app, 3).await;
    let relay = relay_of(&app);
    while relay.relay_once().await.unwrap() > 0 {}
    assert_eq!(world.store.backlog().await.unwrap(), 0);
    assert_eq!(world.drop_live_counts(drop, &followers).await, vec![0; 3]);
}
