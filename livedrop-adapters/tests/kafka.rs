//! `KafkaBus` against a Kafka-protocol broker, plus fault injection on librdkafka's
//! mock cluster.
//!
//! ```text
//! scripts/kafka.sh start
//! LIVEDROP_TEST_KAFKA_BROKERS=127.0.0.1:19092 \
//!     cargo test -p livedrop-adapters --features kafka --test kafka
//! ```
//!
//! Unset: the broker tests print why they skip (the mock-cluster tests still run).
//! Set but unreachable: they fail. Every test runs under a time bound, so a consumer
//! that cannot close fails the test instead of hanging it.
#![cfg(feature = "kafka")]
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use livedrop_adapters::kafka::{ConnectError, KafkaBus, KafkaOptions};
use livedrop_core::clock::{Clock, SystemClock};
use livedrop_core::ports::{EventBus, Subscription};
use livedrop_core::{Event, EventType};
use rdkafka::mocking::MockCluster;
use uuid::Uuid;

const BROKERS_VAR: &str = livedrop_core::testing::env::KAFKA_BROKERS;
/// Bound of every test: joining a group on a fresh broker takes a few seconds.
const TEST_BOUND: Duration = Duration::from_secs(90);
/// How long to wait for an event that must come.
const ARRIVAL: Duration = Duration::from_secs(30);

livedrop_core::bus_conformance!(|| async {
    let bus: Arc<dyn EventBus> = Arc::new(bus("conformance").await?);
    Some(bus)
});

fn brokers() -> Option<String> {
    livedrop_core::testing::env::service_var(
        BROKERS_VAR,
        "a Kafka test (start a broker with scripts/kafka.sh start, then use 127.0.0.1:19092)",
    )
}

/// Options for a test: a topic prefix no other test uses.
///
/// One record per produce batch: tansu 0.6 reports a partition's high watermark as
/// the last batch's base offset + 1, so a consumer resuming from a committed offset
/// inside a multi-record batch would see nothing. Real Kafka needs no such setting.
fn options(test: &str) -> KafkaOptions {
    KafkaOptions {
        topic_prefix: format!("ldtest-{test}-{}", Uuid::new_v4().simple()),
        client_config: vec![("batch.num.messages".to_owned(), "1".to_owned())],
        ..KafkaOptions::default()
    }
}

async fn bus(test: &str) -> Option<KafkaBus> {
    let brokers = brokers()?;
    let bus = KafkaBus::connect(&brokers, options(test))
        .await
        .unwrap_or_else(|err| panic!("{BROKERS_VAR}={brokers} is set but unusable: {err}"));
    Some(bus)
}

async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_BOUND, test)
        .await
        .expect("the test overran its time bound (a hang)");
}

fn event(kind: EventType, aggregate: Uuid, version: i64) -> Event {
    Event::new(
        kind,
        aggregate,
        version,
        serde_json::json!({ "n": version }),
        SystemClock.now(),
    )
}

/// Reads until `count` events arrived (failing after [`ARRIVAL`] without one).
async fn read(sub: &mut Box<dyn Subscription>, count: usize) -> Vec<Event> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        match sub.next(ARRIVAL).await.unwrap() {
            Some(event) => got.push(event),
            None => panic!("only {} of {count} events arrived", got.len()),
        }
    }
    got
}

async fn close(sub: Box<dyn Subscription>) {
    // Closing must end (it leaves the group); the bound only catches a hang.
    tokio::time::timeout(Duration::from_secs(60), sub.close())
        .await
        .expect("closing a subscription hung");
}

#[tokio::test]
async fn events_round_trip_as_envelopes() {
    let Some(bus) = bus("roundtrip").await else {
        return;
    };
    bounded(async {
        let sent = vec![
            event(EventType::ProductCreated, Uuid::now_v7(), 1),
            event(EventType::DropStarted, Uuid::now_v7(), 1),
            event(EventType::OrderPlaced, Uuid::now_v7(), 1),
            event(EventType::UserFollowed, Uuid::now_v7(), 1),
        ];
        bus.publish(&sent).await.unwrap();
        // A group that joins after the publish still sees everything.
        let mut sub = bus.subscribe("roundtrip").await.unwrap();
        let mut got = read(&mut sub, sent.len()).await;
        got.sort_by_key(|e| e.id.0);
        let mut expected = sent.clone();
        expected.sort_by_key(|e| e.id.0);
        assert_eq!(got, expected);
        assert_eq!(sub.next(Duration::from_secs(1)).await.unwrap(), None);
        close(sub).await;
    })
    .await;
}

#[tokio::test]
async fn topics_follow_the_aggregate_type() {
    let Some(bus) = bus("topics").await else {
        return;
    };
    let prefix = bus.topics()[0].split('.').next().unwrap().to_owned();
    let mut topics = bus.topics().to_vec();
    topics.sort();
    assert_eq!(
        topics,
        ["drop", "order", "product", "user"]
            .map(|a| format!("{prefix}.{a}"))
            .to_vec()
    );
    assert_eq!(
        bus.topic_for(EventType::StockChanged),
        format!("{prefix}.drop")
    );
}

#[tokio::test]
async fn a_restarted_member_resumes_after_its_commit() {
    let Some(bus) = bus("resume").await else {
        return;
    };
    bounded(async {
        let drop = Uuid::now_v7();
        let sent: Vec<Event> = (1..=10)
            .map(|v| event(EventType::StockChanged, drop, v))
            .collect();
        bus.publish(&sent).await.unwrap();

        let mut first = bus.subscribe("resume").await.unwrap();
        let got = read(&mut first, 4).await;
        assert_eq!(got, sent[..4]);
        first.commit().await.unwrap();
        // Read past the commit without committing: these must come again.
        let uncommitted = read(&mut first, 2).await;
        assert_eq!(uncommitted, sent[4..6]);
        close(first).await;

        let mut second = bus.subscribe("resume").await.unwrap();
        let rest = read(&mut second, 6).await;
        assert_eq!(rest, sent[4..]);
        second.commit().await.unwrap();
        assert_eq!(second.next(Duration::from_secs(1)).await.unwrap(), None);
        close(second).await;

        // Fully committed: a third member has nothing to read, another group everything.
        let mut third = bus.subscribe("resume").await.unwrap();
        assert_eq!(third.next(Duration::from_secs(5)).await.unwrap(), None);
        close(third).await;
        let mut other = bus.subscribe("resume-other").await.unwrap();
        assert_eq!(read(&mut other, 10).await, sent);
        close(other).await;
    })
    .await;
}

/// Two members of one group split the events: together they receive every event
/// exactly once (each commits as it goes, so a rebalance re-reads nothing), and each
/// receives some. Rounds of events are published until both members have had a
/// share (a group assignment takes a few seconds), bounded by the test's bound.
#[tokio::test]
async fn members_of_one_group_share_the_events() {
    let Some(bus) = bus("share").await else {
        return;
    };
    bounded(async {
        let mut a = bus.subscribe("share").await.unwrap();
        let mut b = bus.subscribe("share").await.unwrap();
        let mut sent: Vec<Event> = Vec::new();
        let mut got: [Vec<Event>; 2] = [Vec::new(), Vec::new()];
        let mut rounds = 0;
        while got.iter().any(Vec::is_empty) || got[0].len() + got[1].len() < sent.len() {
            if got[0].len() + got[1].len() >= sent.len() {
                rounds += 1;
                let round: Vec<Event> = (0..30)
                    .map(|_| event(EventType::DropStarted, Uuid::now_v7(), 1))
                    .collect();
                bus.publish(&round).await.unwrap();
                sent.extend(round);
            }
            for (i, sub) in [&mut a, &mut b].into_iter().enumerate() {
                if let Some(e) = sub.next(Duration::from_millis(200)).await.unwrap() {
                    got[i].push(e);
                    sub.commit().await.unwrap();
                }
            }
        }
        let mut counts: HashMap<_, usize> = HashMap::new();
        for e in got.iter().flatten() {
            *counts.entry(e.id).or_default() += 1;
        }
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "delivered more than once: {twice:?}");
        let expected: HashSet<_> = sent.iter().map(|e| e.id).collect();
        assert_eq!(counts.keys().copied().collect::<HashSet<_>>(), expected);
        assert!(
            got.iter().all(|g| !g.is_empty()),
            "both members receive a share ({} and {} after {rounds} rounds)",
            got[0].len(),
            got[1].len()
        );
        close(a).await;
        close(b).await;
    })
    .await;
}

#[tokio::test]
async fn unreachable_brokers_fail_connect_quickly() {
    if brokers().is_none() {
        return;
    }
    let started = Instant::now();
    let err = KafkaBus::connect(
        "127.0.0.1:1",
        KafkaOptions {
            connect_timeout: Duration::from_secs(3),
            ..options("unreachable")
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            ConnectError::Unreachable { .. } | ConnectError::Timeout { .. }
        ),
        "{err}"
    );
    // A liveness bound (the connect gives up instead of hanging), not a speed claim.
    assert!(started.elapsed() < Duration::from_secs(30), "{err}");
}

// ---- librdkafka's mock cluster: no broker needed --------------------------------

/// A bus on a fresh mock cluster whose topics are made by the cluster itself (the
/// admin create-topics call does not complete against it).
async fn mock_bus(
    cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    delivery: Duration,
) -> KafkaBus {
    let options = KafkaOptions {
        create_topics: false,
        delivery_timeout: delivery,
        partitions: 2,
        ..options("mock")
    };
    for aggregate in ["drop", "order", "product", "user"] {
        cluster
            .create_topic(&format!("{}.{aggregate}", options.topic_prefix), 2, 1)
            .unwrap();
    }
    KafkaBus::connect(&cluster.bootstrap_servers(), options)
        .await
        .unwrap()
}

#[tokio::test]
async fn mock_cluster_round_trip() {
    bounded(async {
        let cluster = MockCluster::new(1).unwrap();
        let bus = mock_bus(&cluster, Duration::from_secs(5)).await;
        let drop = Uuid::now_v7();
        let sent: Vec<Event> = (1..=5)
            .map(|v| event(EventType::StockChanged, drop, v))
            .collect();
        bus.publish(&sent).await.unwrap();
        let mut sub = bus.subscribe("mock").await.unwrap();
        assert_eq!(read(&mut sub, 5).await, sent);
        sub.commit().await.unwrap();
        close(sub).await;
    })
    .await;
}

#[tokio::test]
async fn mock_cluster_outage_fails_publish_as_unavailable_then_recovers() {
    bounded(async {
        let cluster = MockCluster::new(1).unwrap();
        let delivery = Duration::from_secs(2);
        let bus = Arc::new(mock_bus(&cluster, delivery).await);
        let held = event(EventType::DropEnded, Uuid::now_v7(), 1);
        bus.publish(&[event(EventType::DropStarted, held.aggregate_id, 1)])
            .await
            .unwrap();

        cluster.broker_down(1).unwrap();
        let started = Instant::now();
        let err = bus.publish(std::slice::from_ref(&held)).await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        // A liveness bound: publish gives up after its delivery timeout instead of
        // blocking the relay; the margin only catches a hang.
        assert!(
            started.elapsed() < delivery + Duration::from_secs(30),
            "publish took {:?} to fail: it hangs",
            started.elapsed()
        );

        cluster.broker_up(1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(err) = bus.publish(std::slice::from_ref(&held)).await {
            assert!(Instant::now() < deadline, "publish never recovered: {err}");
        }
        let mut sub = bus.subscribe("mock-outage").await.unwrap();
        let got = read(&mut sub, 2).await;
        assert_eq!(got[1], held);
        close(sub).await;
    })
    .await;
}
