//! Kafka adapter: [`KafkaBus`], an [`EventBus`] over an idempotent producer and
//! consumer groups.
//!
//! - One topic per aggregate type, `<topic_prefix>.<aggregate>` (`product`, `drop`,
//!   `order`, `user`, from [`EventType::aggregate`](livedrop_core::EventType::aggregate)),
//!   created on connect through the admin client.
//! - Record key = aggregate id, so one aggregate's events share a partition and keep
//!   their order; record value = the event envelope as JSON.
//! - [`publish`](EventBus::publish) awaits the broker's acknowledgement of every
//!   event (`acks=all`, `enable.idempotence=true`); a failure or a delivery timeout is
//!   [`StoreError::Unavailable`] (`"event bus"`), and the outbox relay retries.
//! - [`subscribe`](EventBus::subscribe) joins consumer group `<topic_prefix>.<group>`
//!   with manual commits; see [`KafkaSubscription`]. Every subscription drops
//!   duplicates through [`Deduplicated`].
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use livedrop_adapters::kafka::{KafkaBus, KafkaOptions};
//!
//! let bus = KafkaBus::connect(
//!     "127.0.0.1:9092",
//!     KafkaOptions { topic_prefix: "livedrop".into(), ..KafkaOptions::default() },
//! )
//! .await?;
//! # let _ = bus;
//! # Ok(())
//! # }
//! ```

mod subscription;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use livedrop_core::error::{StoreError, StoreResult};
use livedrop_core::event::{Event, EventType};
use livedrop_core::ports::{Deduplicated, EventBus, Subscription, DEFAULT_DEDUP_CAPACITY};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

pub use subscription::KafkaSubscription;

/// What [`StoreError::Unavailable`] names for this adapter.
const WHAT: &str = "event bus";

/// Settings of a [`KafkaBus`].
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// Topics are `<topic_prefix>.<aggregate>`; consumer groups are
    /// `<topic_prefix>.<group>` (default `livedrop`).
    pub topic_prefix: String,
    /// Partitions of each topic created on connect (default 3).
    pub partitions: i32,
    /// Replication factor of each topic created on connect (default 1).
    pub replication_factor: i32,
    /// Whether [`KafkaBus::connect`] creates the topics (default true). Turn off when
    /// topics are provisioned elsewhere.
    pub create_topics: bool,
    /// Bound of connecting: the metadata check and topic creation (default 10 s).
    pub connect_timeout: Duration,
    /// How long a published event may wait for the broker's acknowledgement before
    /// [`publish`](EventBus::publish) reports the bus unavailable (default 10 s;
    /// librdkafka's `message.timeout.ms` and `request.timeout.ms`). A `publish` returns
    /// within about this bound plus one second.
    pub delivery_timeout: Duration,
    /// How many recent event ids a subscription remembers to drop duplicates
    /// (default [`DEFAULT_DEDUP_CAPACITY`], 10,000).
    pub dedup_capacity: usize,
    /// How long [`Subscription::close`] waits for the consumer to leave its group
    /// before detaching it (default 5 s).
    pub close_timeout: Duration,
    /// Consumer `session.timeout.ms` (default 10 s): how soon a dead member's
    /// partitions move to another member.
    pub session_timeout: Duration,
    /// Extra librdkafka settings applied to every client (security, tuning).
    pub client_config: Vec<(String, String)>,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        Self {
            topic_prefix: "livedrop".to_owned(),
            partitions: 3,
            replication_factor: 1,
            create_topics: true,
            connect_timeout: Duration::from_secs(10),
            delivery_timeout: Duration::from_secs(10),
            dedup_capacity: DEFAULT_DEDUP_CAPACITY,
            close_timeout: Duration::from_secs(5),
            session_timeout: Duration::from_secs(10),
            client_config: Vec::new(),
        }
    }
}

/// Why [`KafkaBus::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// A client could not be built from the configuration.
    #[error("invalid Kafka client configuration: {0}")]
    Config(#[source] KafkaError),
    /// No broker answered a metadata request in time.
    #[error("Kafka brokers {brokers} unreachable: {source}")]
    Unreachable {
        /// The bootstrap list tried.
        brokers: String,
        /// The client's error.
        #[source]
        source: KafkaError,
    },
    /// Creating a topic failed.
    #[error("creating Kafka topic {topic} failed: {reason}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's or client's reason.
        reason: String,
    },
    /// Anything else that stopped the connection.
    #[error("Kafka connect failed: {0}")]
    Other(String),
    /// A step did not finish within [`KafkaOptions::connect_timeout`].
    #[error("Kafka {step} did not finish within {timeout:?}")]
    Timeout {
        /// Which step.
        step: &'static str,
        /// The bound.
        timeout: Duration,
    },
}

/// An [`EventBus`] on Kafka. See the [module docs](self).
pub struct KafkaBus {
    brokers: String,
    options: KafkaOptions,
    topics: Vec<String>,
    /// Replaced when librdkafka reports a fatal producer error (the idempotent
    /// producer can fence itself), so one bad episode does not wedge the bus.
    producer: Mutex<FutureProducer>,
    /// Set while a background re-creation of the topics runs, so failing publishes
    /// start at most one at a time.
    recreating: Arc<AtomicBool>,
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus")
            .field("brokers", &self.brokers)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

/// The aggregate types, one topic each.
fn aggregates() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = EventType::ALL.iter().map(|t| t.aggregate()).collect();
    names.sort_unstable();
    names.dedup();
    names
}

impl KafkaBus {
    /// Connects to `brokers` (a bootstrap list such as `127.0.0.1:9092`): checks that
    /// a broker answers, creates the topics unless told not to, and starts the
    /// producer. Unreachable brokers give [`ConnectError::Unreachable`] within
    /// [`KafkaOptions::connect_timeout`].
    pub async fn connect(brokers: &str, options: KafkaOptions) -> Result<Self, ConnectError> {
        let topics: Vec<String> = aggregates()
            .into_iter()
            .map(|aggregate| format!("{}.{aggregate}", options.topic_prefix))
            .collect();
        let producer = producer(brokers, &options)?;
        check_reachable(&producer, brokers, options.connect_timeout).await?;
        if options.create_topics {
            create_topics(brokers, &options, &topics).await?;
        }
        tracing::info!(brokers, topics = ?topics, "kafka event bus connected");
        Ok(Self {
            brokers: brokers.to_owned(),
            options,
            topics,
            producer: Mutex::new(producer),
            recreating: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Creates the bus's topics where missing (topics that exist are left alone),
    /// bounded by [`KafkaOptions::connect_timeout`]. [`connect`](Self::connect) does
    /// this already; call it again after a broker lost its topics (an in-memory
    /// development broker restarted).
    pub async fn ensure_topics(&self) -> Result<(), ConnectError> {
        create_topics(&self.brokers, &self.options, &self.topics).await
    }

    /// A broker that came back without its topics (an in-memory one, or topics
    /// deleted by an operator) would refuse every publish until they exist again.
    /// After a failed publish this re-creates them off the publish path (a no-op where
    /// they exist), so `publish` keeps failing fast while the broker is down.
    fn recreate_topics_in_background(&self) {
        if self.recreating.swap(true, Ordering::AcqRel) {
            return;
        }
        let (brokers, options, topics) = (
            self.brokers.clone(),
            self.options.clone(),
            self.topics.clone(),
        );
        let recreating = self.recreating.clone();
        tokio::spawn(async move {
            if let Err(e) = create_topics(&brokers, &options, &topics).await {
                tracing::debug!(error = %e, "could not re-create the bus topics yet");
            }
            recreating.store(false, Ordering::Release);
        });
    }

    /// The topics this bus publishes to and subscribes to.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// The topic of events of type `kind`.
    pub fn topic_for(&self, kind: EventType) -> String {
        format!("{}.{}", self.options.topic_prefix, kind.aggregate())
    }

    fn current_producer(&self) -> FutureProducer {
        self.producer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces `used` with a fresh producer after a failed publish, unless another
    /// publish already did.
    ///
    /// An idempotent producer keeps a producer id and per-partition sequence numbers
    /// across a broker outage; a broker that lost that state (restarted without it,
    /// or fenced the producer) can refuse it indefinitely, and librdkafka may declare
    /// it fatally failed. A fresh producer starts a new idempotence session; what
    /// this gives up (broker-side dedup of a retried batch across the rebuild) the
    /// consumers make up for by dropping duplicate event ids.
    fn recover_producer(&self, used: &FutureProducer) {
        let mut current = self
            .producer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.client().native_ptr() != used.client().native_ptr() {
            return;
        }
        if let Some((code, reason)) = used.client().fatal_error() {
            tracing::error!(?code, %reason, "kafka producer failed fatally");
        }
        match producer(&self.brokers, &self.options) {
            Ok(fresh) => {
                tracing::info!("kafka producer replaced after a failed publish");
                detach_drop(std::mem::replace(&mut *current, fresh));
            }
            Err(err) => tracing::error!(error = %err, "rebuilding the kafka producer failed"),
        }
    }

    async fn send_all(&self, producer: &FutureProducer, events: &[Event]) -> StoreResult<()> {
        let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(events.len());
        for event in events {
            let topic = self.topic_for(event.kind);
            let key = event.aggregate_id.to_string();
            let payload = serde_json::to_vec(event).map_err(StoreError::backend)?;
            let mut record = FutureRecord::to(&topic).key(&key).payload(&payload);
            // Enqueue in order (the idempotent producer keeps per-partition order);
            // when the local queue is full, wait for what is in flight and retry.
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        await_deliveries(std::mem::take(&mut pending)).await?;
                        if pending.is_empty() {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                    Err((err, _)) => return Err(StoreError::unavailable(WHAT, err)),
                }
            }
        }
        await_deliveries(pending).await
    }
}

async fn await_deliveries(pending: Vec<DeliveryFuture>) -> StoreResult<()> {
    for outcome in futures::future::join_all(pending).await {
        match outcome {
            Ok(Ok(_delivery)) => {}
            Ok(Err((err, _message))) => return Err(StoreError::unavailable(WHAT, err)),
            Err(canceled) => return Err(StoreError::unavailable(WHAT, canceled)),
        }
    }
    Ok(())
}

#[async_trait]
impl EventBus for KafkaBus {
    async fn publish(&self, events: &[Event]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let producer = self.current_producer();
        // librdkafka fails queued messages after `message.timeout.ms`, but an
        // idempotent producer keeps a request already in flight until the request
        // itself times out; this bound keeps `publish` within the documented time
        // either way. A message that still lands later is a duplicate the consumers drop.
        let bound = self.options.delivery_timeout + Duration::from_secs(1);
        let outcome = match tokio::time::timeout(bound, self.send_all(&producer, events)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(StoreError::unavailable(
                WHAT,
                format!("no delivery report within {bound:?}"),
            )),
        };
        if let Err(err) = &outcome {
            tracing::warn!(error = %err, events = events.len(), "kafka publish failed");
            if err.is_unavailable() {
                self.recover_producer(&producer);
                self.recreate_topics_in_background();
            }
        }
        outcome
    }

    async fn subscribe(&self, group: &str) -> StoreResult<Box<dyn Subscription>> {
        let group_id = format!("{}.{group}", self.options.topic_prefix);
        let subscription =
            KafkaSubscription::start(&self.brokers, &group_id, &self.topics, &self.options)
                .map_err(|err| StoreError::unavailable(WHAT, err))?;
        Ok(Box::new(Deduplicated::new(
            subscription,
            self.options.dedup_capacity,
        )))
    }

    /// A consumer in no group, positioned at the end of every partition before this
    /// returns: it sees exactly the events published afterwards.
    async fn subscribe_live(&self) -> StoreResult<Box<dyn Subscription>> {
        let subscription =
            KafkaSubscription::start_live(&self.brokers, &self.topics, &self.options).await?;
        Ok(Box::new(Deduplicated::new(
            subscription,
            self.options.dedup_capacity,
        )))
    }
}

fn base_config(brokers: &str, options: &KafkaOptions) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in &options.client_config {
        config.set(key, value);
    }
    config
}

fn producer(brokers: &str, options: &KafkaOptions) -> Result<FutureProducer, ConnectError> {
    base_config(brokers, options)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "message.timeout.ms",
            options.delivery_timeout.as_millis().max(1).to_string(),
        )
        .set(
            "request.timeout.ms",
            options
                .delivery_timeout
                .as_millis()
                .clamp(1, 900_000)
                .to_string(),
        )
        .set("linger.ms", "1")
        .create()
        .map_err(ConnectError::Config)
}

async fn check_reachable(
    producer: &FutureProducer,
    brokers: &str,
    timeout: Duration,
) -> Result<(), ConnectError> {
    let probe = producer.clone();
    let metadata =
        tokio::task::spawn_blocking(move || probe.client().fetch_metadata(None, timeout).map(drop));
    match tokio::time::timeout(timeout + Duration::from_secs(1), metadata).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(source))) => Err(ConnectError::Unreachable {
            brokers: brokers.to_owned(),
            source,
        }),
        Ok(Err(join)) => Err(ConnectError::Other(format!(
            "metadata check failed: {join}"
        ))),
        Err(_) => Err(ConnectError::Timeout {
            step: "metadata check",
            timeout,
        }),
    }
}

async fn create_topics(
    brokers: &str,
    options: &KafkaOptions,
    topics: &[String],
) -> Result<(), ConnectError> {
    let admin: AdminClient<DefaultClientContext> = base_config(brokers, options)
        .create()
        .map_err(ConnectError::Config)?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|topic| {
            NewTopic::new(
                topic,
                options.partitions,
                TopicReplication::Fixed(options.replication_factor),
            )
        })
        .collect();
    let admin_options = AdminOptions::new()
        .operation_timeout(Some(options.connect_timeout))
        .request_timeout(Some(options.connect_timeout));
    let created = tokio::time::timeout(
        options.connect_timeout,
        admin.create_topics(&new_topics, &admin_options),
    )
    .await;
    detach_drop(admin);
    let results = match created {
        Ok(Ok(results)) => results,
        Ok(Err(err)) => {
            return Err(ConnectError::CreateTopic {
                topic: topics.join(","),
                reason: err.to_string(),
            })
        }
        Err(_) => {
            return Err(ConnectError::Timeout {
                step: "topic creation",
                timeout: options.connect_timeout,
            })
        }
    };
    for result in results {
        match result {
            Ok(topic) => tracing::debug!(%topic, "kafka topic created"),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(%topic, "kafka topic exists")
            }
            Err((topic, code)) => {
                return Err(ConnectError::CreateTopic {
                    topic,
                    reason: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// Drops a librdkafka handle on a detached OS thread: its destructor may block on
/// the network (or, for consumers, on leaving the group), and no async task or
/// runtime shutdown should wait for it.
fn detach_drop<T: Send + 'static>(handle: T) {
    let spawned = std::thread::Builder::new()
        .name("kafka-drop".to_owned())
        .spawn(move || drop(handle));
    if let Err(err) = spawned {
        tracing::warn!(error = %err, "could not spawn a thread to drop a kafka client");
    }
}
