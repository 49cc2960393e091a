//! A member of a Kafka consumer group.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use livedrop_core::error::{StoreError, StoreResult};
use livedrop_core::event::Event;
use livedrop_core::ports::Subscription;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::time::Instant;

use super::{base_config, KafkaOptions, WHAT};

/// A [`Subscription`] over a [`StreamConsumer`] subscribed to every topic of its
/// bus.
///
/// - Manual commits (`enable.auto.commit=false`, `enable.auto.offset.store=false`):
///   [`commit`](Subscription::commit) stores the offset of every message returned
///   so far, then commits them synchronously. A new group starts from the earliest
///   offset, so it sees everything published before it joined.
/// - Delivery is at least once: a relay's retried publish, a redelivery after a
///   rebalance. [`KafkaBus`](super::KafkaBus) hands it out wrapped in
///   [`Deduplicated`](livedrop_core::ports::Deduplicated) (capacity
///   [`KafkaOptions::dedup_capacity`]), which drops the duplicates.
/// - A [live subscription](livedrop_core::ports::EventBus::subscribe_live) joins no group: it is assigned
///   every partition at its end offset, resolved before `subscribe_live` returns, and
///   its `commit` does nothing.
/// - [`close`](Subscription::close) never hangs: librdkafka's consumer close can
///   block indefinitely (it polls until the group leave completes), so the consumer
///   is unsubscribed and dropped on a detached OS thread, awaited for at most
///   [`KafkaOptions::close_timeout`], then left to finish on its own. Dropping a
///   subscription without `close` detaches the same way without waiting.
pub struct KafkaSubscription {
    consumer: Option<Arc<StreamConsumer>>,
    group: String,
    /// Outside any group: nothing to commit.
    live: bool,
    /// Offset of the last message returned (or skipped) per topic partition, not
    /// yet committed.
    uncommitted: HashMap<(String, i32), i64>,
    commit_timeout: Duration,
    close_timeout: Duration,
}

impl std::fmt::Debug for KafkaSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSubscription")
            .field("group", &self.group)
            .field("uncommitted", &self.uncommitted.len())
            .finish_non_exhaustive()
    }
}

impl KafkaSubscription {
    pub(super) fn start(
        brokers: &str,
        group: &str,
        topics: &[String],
        options: &KafkaOptions,
    ) -> KafkaResult<Self> {
        let consumer: StreamConsumer = base_config(brokers, options)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set(
                "session.timeout.ms",
                options.session_timeout.as_millis().to_string(),
            )
            .create()?;
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        tracing::debug!(group, ?topics, "kafka subscription started");
        Ok(Self {
            consumer: Some(Arc::new(consumer)),
            group: group.to_owned(),
            live: false,
            uncommitted: HashMap::new(),
            commit_timeout: options.connect_timeout,
            close_timeout: options.close_timeout,
        })
    }

    /// A consumer outside any group, assigned every partition of `topics` at its
    /// current end, so it sees exactly the events published after this returns.
    pub(super) async fn start_live(
        brokers: &str,
        topics: &[String],
        options: &KafkaOptions,
    ) -> StoreResult<Self> {
        // librdkafka's consumer needs a group id even to assign partitions by hand;
        // a unique one that never subscribes, joins or commits.
        let group = format!(
            "{}.live-{}",
            options.topic_prefix,
            uuid::Uuid::now_v7().simple()
        );
        let consumer: StreamConsumer = base_config(brokers, options)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .create()
            .map_err(|err| StoreError::unavailable(WHAT, err))?;
        let consumer = Arc::new(consumer);
        let assigning = Arc::clone(&consumer);
        let topics = topics.to_vec();
        let timeout = options.connect_timeout;
        // Resolving the end offsets before returning (rather than assigning
        // `Offset::End`, resolved later by the fetcher) is what makes "from now on"
        // exact. These are blocking metadata round trips.
        let assigned = run_detached(timeout + Duration::from_secs(1), move || {
            assign_at_end(&assigning, &topics, timeout)
        })
        .await;
        match assigned {
            Some(Ok(())) => {}
            Some(Err(err)) => {
                super::detach_drop(consumer);
                return Err(StoreError::unavailable(WHAT, err));
            }
            None => {
                super::detach_drop(consumer);
                return Err(StoreError::unavailable(
                    WHAT,
                    format!("resolving end offsets took over {timeout:?}"),
                ));
            }
        }
        Ok(Self {
            consumer: Some(consumer),
            group,
            live: true,
            uncommitted: HashMap::new(),
            commit_timeout: options.connect_timeout,
            close_timeout: options.close_timeout,
        })
    }

    fn consumer(&self) -> StoreResult<Arc<StreamConsumer>> {
        self.consumer
            .clone()
            .ok_or_else(|| StoreError::unavailable(WHAT, "subscription closed"))
    }
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next(&mut self, timeout: Duration) -> StoreResult<Option<Event>> {
        let consumer = self.consumer()?;
        let deadline = Instant::now() + timeout;
        loop {
            let received = tokio::time::timeout_at(deadline, consumer.recv()).await;
            let message = match received {
                Err(_elapsed) => return Ok(None),
                Ok(Err(err)) => {
                    tracing::warn!(group = %self.group, error = %err, "kafka consume failed");
                    return Err(StoreError::unavailable(WHAT, err));
                }
                Ok(Ok(message)) => message,
            };
            self.uncommitted.insert(
                (message.topic().to_owned(), message.partition()),
                message.offset(),
            );
            match message.payload().map(serde_json::from_slice::<Event>) {
                Some(Ok(event)) => return Ok(Some(event)),
                Some(Err(err)) => {
                    // A record this version cannot read; retrying would loop on it.
                    tracing::warn!(
                        group = %self.group,
                        topic = message.topic(),
                        partition = message.partition(),
                        offset = message.offset(),
                        error = %err,
                        "skipping an unreadable kafka record"
                    );
                }
                None => {}
            }
        }
    }

    async fn commit(&mut self) -> StoreResult<()> {
        if self.live {
            self.uncommitted.clear();
            return Ok(());
        }
        if self.uncommitted.is_empty() {
            return Ok(());
        }
        let consumer = self.consumer()?;
        for ((topic, partition), offset) in &self.uncommitted {
            // Fails for a partition revoked since: its new owner re-reads from the
            // last commit: at least once.
            if let Err(err) = consumer.store_offset(topic, *partition, *offset) {
                tracing::debug!(%topic, partition, offset, error = %err, "offset not stored");
            }
        }
        let committing = Arc::clone(&consumer);
        let outcome = run_detached(self.commit_timeout, move || {
            committing.commit_consumer_state(CommitMode::Sync)
        })
        .await;
        match outcome {
            Some(Ok(())) | Some(Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))) => {
                self.uncommitted.clear();
                Ok(())
            }
            Some(Err(err)) => Err(StoreError::unavailable(WHAT, err)),
            None => Err(StoreError::unavailable(
                WHAT,
                format!("commit did not finish within {:?}", self.commit_timeout),
            )),
        }
    }

    async fn close(mut self: Box<Self>) {
        let Some(consumer) = self.consumer.take() else {
            return;
        };
        let group = self.group.clone();
        let closed = run_detached(self.close_timeout, move || shut_down(consumer)).await;
        if closed.is_none() {
            tracing::warn!(
                %group,
                timeout = ?self.close_timeout,
                "kafka consumer did not close in time; left to finish in the background"
            );
        }
    }
}

impl Drop for KafkaSubscription {
    fn drop(&mut self) {
        if let Some(consumer) = self.consumer.take() {
            super::detach_drop(ShutDownOnDrop(Some(consumer)));
        }
    }
}

/// Assigns every partition of `topics` at its high watermark.
fn assign_at_end(
    consumer: &StreamConsumer,
    topics: &[String],
    timeout: Duration,
) -> KafkaResult<()> {
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (_low, high) = consumer.fetch_watermarks(topic, partition.id(), timeout)?;
            assignment.add_partition_offset(topic, partition.id(), Offset::Offset(high))?;
        }
    }
    consumer.assign(&assignment)
}

/// Leaves the group and destroys the consumer (may block inside librdkafka).
fn shut_down(consumer: Arc<StreamConsumer>) {
    consumer.unsubscribe();
    drop(consumer);
}

struct ShutDownOnDrop(Option<Arc<StreamConsumer>>);

impl Drop for ShutDownOnDrop {
    fn drop(&mut self) {
        if let Some(consumer) = self.0.take() {
            shut_down(consumer);
        }
    }
}

/// Runs a blocking call on a fresh OS thread and waits for it at most `timeout`.
/// `None` when it overran: the thread is detached and finishes on its own, and
/// neither this task nor the runtime's shutdown waits for it.
async fn run_detached<T: Send + 'static>(
    timeout: Duration,
    call: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("kafka-blocking".to_owned())
        .spawn(move || {
            let _ = done.send(call());
        });
    if let Err(err) = spawned {
        tracing::warn!(error = %err, "could not spawn a thread for a kafka call");
        return None;
    }
    tokio::time::timeout(timeout, result).await.ok()?.ok()
}
