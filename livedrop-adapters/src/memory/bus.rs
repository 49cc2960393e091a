//! [`MemoryBus`]: an in-process event log with consumer groups.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use livedrop_core::event::Event;
use livedrop_core::ports::{Deduplicated, EventBus, Subscription, DEFAULT_DEDUP_CAPACITY};
use livedrop_core::StoreResult;
use tokio::sync::{broadcast, Notify};
use tokio::time::Instant;

/// Events kept for groups that do not exist yet, when no group exists at all.
const DEFAULT_RETENTION: usize = 100_000;

/// Capacity of the live [`tap`](MemoryBus::tap) channel per receiver.
const TAP_CAPACITY: usize = 4_096;

/// An in-process event bus: an append-only log with Kafka-like consumer groups.
///
/// - [`publish`](EventBus::publish) appends to the log and wakes waiting members;
///   once it returns, every group will see the events, in publish order.
/// - Each consumer group keeps a committed offset. [`subscribe`](EventBus::subscribe)
///   joins a group at its committed offset (a new group starts at the oldest event
///   retained); members of one group share its position, so each event goes to one
///   member.
/// - [`Subscription::commit`] commits every event the member has received; events a
///   member received but did not commit before closing (or being dropped) are handed
///   out again to the group's next reader: delivery is at least once.
/// - Every subscription [`subscribe`](EventBus::subscribe) and
///   [`subscribe_live`](EventBus::subscribe_live) return drops an event id it returned
///   among the last [`DEFAULT_DEDUP_CAPACITY`] ([`Deduplicated`]): an event a relay
///   published twice reaches each of them once.
/// - Events every group has committed are dropped from the log. While no group
///   exists, the newest [`retention`](MemoryBus::with_retention) events are kept.
///
/// [`tap`](MemoryBus::tap) and [`live`](MemoryBus::live) watch events as they are
/// published without joining a group (for Server-Sent Events).
///
/// ```
/// use std::time::Duration;
/// use livedrop_adapters::memory::MemoryBus;
/// use livedrop_core::event::{Event, EventType};
/// use livedrop_core::ports::EventBus;
/// use livedrop_core::{Clock, ManualClock};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let bus = MemoryBus::new();
/// let event = Event::new(
///     EventType::UserFollowed,
///     uuid::Uuid::now_v7(),
///     1,
///     serde_json::json!({}),
///     ManualClock::fixed().now(),
/// );
/// bus.publish(&[event.clone()]).await?;
///
/// let mut member = bus.subscribe("notifier").await?;
/// assert_eq!(member.next(Duration::from_secs(1)).await?, Some(event));
/// member.commit().await?;
/// member.close().await;
///
/// // The group resumes after its committed position: nothing new to read.
/// let mut member = bus.subscribe("notifier").await?;
/// assert_eq!(member.next(Duration::from_millis(10)).await?, None);
/// # Ok::<_, livedrop_core::StoreError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<Log>,
    published: Notify,
    tap: broadcast::Sender<Event>,
    open: Arc<AtomicUsize>,
}

/// Counts one open subscription while it lives.
#[derive(Debug)]
struct Open(Arc<AtomicUsize>);

impl Open {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct Log {
    /// Offset of `events[0]`.
    base: u64,
    events: VecDeque<Event>,
    groups: HashMap<String, Group>,
    retention: usize,
}

#[derive(Debug, Default)]
struct Group {
    /// Every offset below this is committed.
    committed: u64,
    /// Committed offsets at or above `committed` (another member still holds a lower one).
    acked: BTreeSet<u64>,
    /// The next offset never handed out.
    next: u64,
    /// Offsets handed out to members that left without committing them.
    redeliver: BTreeSet<u64>,
}

impl Log {
    fn end(&self) -> u64 {
        self.base + self.events.len() as u64
    }

    fn get(&self, offset: u64) -> Option<&Event> {
        let index = usize::try_from(offset.checked_sub(self.base)?).ok()?;
        self.events.get(index)
    }

    /// Drops events no group needs any more.
    fn trim(&mut self) {
        let keep_from = match self.groups.values().map(|g| g.committed).min() {
            Some(min) => min,
            None => self.end().saturating_sub(self.retention as u64),
        };
        while self.base < keep_from && self.events.pop_front().is_some() {
            self.base += 1;
        }
    }

    fn group(&mut self, name: &str) -> &mut Group {
        let base = self.base;
        self.groups.entry(name.to_owned()).or_insert_with(|| Group {
            committed: base,
            next: base,
            ..Group::default()
        })
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::with_retention(DEFAULT_RETENTION)
    }

    /// An empty bus that keeps at most `retention` events while no consumer group
    /// exists (default 100,000). Once a group exists, events are kept until every
    /// group has committed them.
    pub fn with_retention(retention: usize) -> Self {
        let (tap, _) = broadcast::channel(TAP_CAPACITY);
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(Log {
                    base: 0,
                    events: VecDeque::new(),
                    groups: HashMap::new(),
                    retention,
                }),
                published: Notify::new(),
                tap,
                open: Arc::default(),
            }),
        }
    }

    /// Every event published from now on, without joining a group. A receiver more
    /// than 4,096 events behind gets [`broadcast::error::RecvError::Lagged`] and
    /// skips ahead.
    pub fn tap(&self) -> broadcast::Receiver<Event> {
        self.inner.tap.subscribe()
    }

    /// A [`Subscription`] over [`tap`](Self::tap): events published from now on,
    /// nothing to commit. A subscription that falls behind skips what it missed.
    /// Repeats are not dropped here: [`subscribe_live`](EventBus::subscribe_live)
    /// wraps it in [`Deduplicated`].
    pub fn live(&self) -> LiveSubscription {
        LiveSubscription {
            rx: self.tap(),
            _open: Open::new(&self.inner.open),
        }
    }

    /// Subscriptions (group members and live) not dropped or closed yet: what a dead
    /// request or task would leave behind.
    pub fn open_subscriptions(&self) -> usize {
        self.inner.open.load(Ordering::SeqCst)
    }

    /// Events still held by the log (not yet committed by every group).
    pub fn retained(&self) -> usize {
        self.inner.lock().events.len()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Log> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish(&self, events: &[Event]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        {
            let mut log = self.inner.lock();
            log.events.extend(events.iter().cloned());
            log.trim();
        }
        self.inner.published.notify_waiters();
        for event in events {
            // No live watcher is not an error.
            let _ = self.inner.tap.send(event.clone());
        }
        Ok(())
    }

    async fn subscribe(&self, group: &str) -> StoreResult<Box<dyn Subscription>> {
        self.inner.lock().group(group);
        let member = MemorySubscription {
            inner: self.inner.clone(),
            group: group.to_owned(),
            received: Vec::new(),
            _open: Open::new(&self.inner.open),
        };
        Ok(Box::new(Deduplicated::new(member, DEFAULT_DEDUP_CAPACITY)))
    }

    async fn subscribe_live(&self) -> StoreResult<Box<dyn Subscription>> {
        Ok(Box::new(Deduplicated::new(
            self.live(),
            DEFAULT_DEDUP_CAPACITY,
        )))
    }
}

/// A member of a consumer group of a [`MemoryBus`].
///
/// Dropping it without [`commit`](Subscription::commit) hands the events it received
/// back to its group, exactly like [`close`](Subscription::close).
#[derive(Debug)]
pub struct MemorySubscription {
    inner: Arc<Inner>,
    group: String,
    /// Offsets received and not committed yet.
    received: Vec<u64>,
    _open: Open,
}

impl MemorySubscription {
    fn try_next(&mut self) -> Option<Event> {
        let mut log = self.inner.lock();
        let end = log.end();
        let group = log.group(&self.group);
        let offset = match group.redeliver.pop_first() {
            Some(offset) => offset,
            None if group.next < end => {
                group.next += 1;
                group.next - 1
            }
            None => return None,
        };
        self.received.push(offset);
        log.get(offset).cloned()
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self, timeout: Duration) -> StoreResult<Option<Event>> {
        let deadline = Instant::now() + timeout;
        let inner = self.inner.clone();
        loop {
            // Register for the wake-up before looking, so a publish in between is
            // not missed.
            let published = inner.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            if let Some(event) = self.try_next() {
                return Ok(Some(event));
            }
            if tokio::time::timeout_at(deadline, published).await.is_err() {
                return Ok(None);
            }
        }
    }

    async fn commit(&mut self) -> StoreResult<()> {
        let mut log = self.inner.lock();
        let group = log.group(&self.group);
        for offset in self.received.drain(..) {
            if offset >= group.committed {
                group.acked.insert(offset);
            }
        }
        while group.acked.remove(&group.committed) {
            group.committed += 1;
        }
        log.trim();
        Ok(())
    }

    async fn close(self: Box<Self>) {
        drop(self);
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        if self.received.is_empty() {
            return;
        }
        let mut log = self.inner.lock();
        let group = log.group(&self.group);
        for offset in self.received.drain(..) {
            if offset >= group.committed && !group.acked.contains(&offset) {
                group.redeliver.insert(offset);
            }
        }
        drop(log);
        self.inner.published.notify_waiters();
    }
}

/// A [`Subscription`] to the events a [`MemoryBus`] publishes from its creation on,
/// outside any group: see [`MemoryBus::live`].
#[derive(Debug)]
pub struct LiveSubscription {
    rx: broadcast::Receiver<Event>,
    _open: Open,
}

#[async_trait]
impl Subscription for LiveSubscription {
    async fn next(&mut self, timeout: Duration) -> StoreResult<Option<Event>> {
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => return Ok(None),
                Ok(Ok(event)) => return Ok(Some(event)),
                Ok(Err(broadcast::error::RecvError::Lagged(skipped))) => {
                    tracing::warn!(skipped, "live subscription fell behind; events skipped");
                }
                // The bus is gone: nothing more will come.
                Ok(Err(broadcast::error::RecvError::Closed)) => return Ok(None),
            }
        }
    }

    async fn commit(&mut self) -> StoreResult<()> {
        Ok(())
    }

    async fn close(self: Box<Self>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use livedrop_core::event::EventType;

    fn event(n: i64) -> Event {
        Event::new(
            EventType::UserFollowed,
            uuid::Uuid::now_v7(),
            n,
            serde_json::json!({ "n": n }),
            chrono::DateTime::UNIX_EPOCH,
        )
    }

    const WAIT: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn members_of_a_group_share_its_position() {
        let bus = MemoryBus::new();
        let mut a = bus.subscribe("g").await.expect("subscribe");
        let mut b = bus.subscribe("g").await.expect("subscribe");
        let sent: Vec<Event> = (1..=4).map(event).collect();
        bus.publish(&sent).await.expect("publish");
        let mut got = Vec::new();
        for _ in 0..2 {
            got.push(a.next(WAIT).await.expect("next").expect("event"));
            got.push(b.next(WAIT).await.expect("next").expect("event"));
        }
        assert_eq!(got, sent, "each event goes to one member");
        assert_eq!(a.next(WAIT).await.expect("next"), None);
        assert_eq!(b.next(WAIT).await.expect("next"), None);
    }

    #[tokio::test]
    async fn a_dropped_member_hands_its_uncommitted_events_back() {
        let bus = MemoryBus::new();
        let mut a = bus.subscribe("g").await.expect("subscribe");
        let mut b = bus.subscribe("g").await.expect("subscribe");
        let sent: Vec<Event> = (1..=3).map(event).collect();
        bus.publish(&sent).await.expect("publish");
        assert_eq!(a.next(WAIT).await.expect("next"), Some(sent[0].clone()));
        assert_eq!(a.next(WAIT).await.expect("next"), Some(sent[1].clone()));
        a.commit().await.expect("commit");
        assert_eq!(b.next(WAIT).await.expect("next"), Some(sent[2].clone()));
        drop(b);
        let mut c = bus.subscribe("g").await.expect("subscribe");
        assert_eq!(c.next(WAIT).await.expect("next"), Some(sent[2].clone()));
        c.commit().await.expect("commit");
        assert_eq!(
            bus.retained(),
            0,
            "events every group committed are dropped"
        );
    }

    /// On paused time: the member wakes at the publish's virtual instant, not at its
    /// own timeout (no wall clock involved, so no machine is too slow for it).
    #[tokio::test(start_paused = true)]
    async fn a_waiting_member_wakes_on_publish() {
        let bus = MemoryBus::new();
        let mut sub = bus.subscribe("g").await.expect("subscribe");
        let publisher = bus.clone();
        let sent = event(1);
        let expected = sent.clone();
        let start = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            publisher.publish(&[sent]).await.expect("publish");
        });
        let got = sub.next(Duration::from_secs(60)).await.expect("next");
        assert_eq!(got, Some(expected));
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(5),
            "woken by the publish, not by the timeout"
        );
    }

    #[tokio::test]
    async fn tap_and_live_see_only_new_events() {
        let bus = MemoryBus::new();
        bus.publish(&[event(1)]).await.expect("publish");
        let mut tap = bus.tap();
        let mut live = bus.live();
        let new = event(2);
        bus.publish(std::slice::from_ref(&new))
            .await
            .expect("publish");
        assert_eq!(tap.recv().await.expect("recv"), new);
        assert_eq!(live.next(WAIT).await.expect("next"), Some(new));
        assert_eq!(live.next(WAIT).await.expect("next"), None);
    }

    #[tokio::test]
    async fn retention_bounds_the_log_while_no_group_exists() {
        let bus = MemoryBus::with_retention(3);
        let sent: Vec<Event> = (1..=5).map(event).collect();
        bus.publish(&sent).await.expect("publish");
        assert_eq!(bus.retained(), 3);
        let mut sub = bus.subscribe("late").await.expect("subscribe");
        assert_eq!(sub.next(WAIT).await.expect("next"), Some(sent[2].clone()));
    }
}
