//! A broker outage under a `KafkaBus`: publishing fails fast as "unavailable" while
//! the broker is down, and the held events all arrive once it is back.
//!
//! Runs its own tansu broker on port 19093 (so the shared one on 19092 is never
//! disturbed), in its own test binary:
//!
//! ```text
//! scripts/kafka.sh install
//! LIVEDROP_TEST_KAFKA_BROKERS=127.0.0.1:19092 \
//!     cargo test -p livedrop-adapters --features kafka --test kafka_outage
//! ```
//!
//! Skipped (with a printed reason) when `LIVEDROP_TEST_KAFKA_BROKERS` is unset.
#![cfg(feature = "kafka")]
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use livedrop_adapters::kafka::{KafkaBus, KafkaOptions};
use livedrop_core::clock::{Clock, SystemClock};
use livedrop_core::ports::EventBus;
use livedrop_core::{Event, EventId, EventType};
use uuid::Uuid;

const BROKERS_VAR: &str = livedrop_core::testing::env::KAFKA_BROKERS;
const ADDR: &str = "127.0.0.1:19093";

fn tansu() -> PathBuf {
    let on_path = Command::new("tansu")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if on_path {
        return PathBuf::from("tansu");
    }
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"));
    let bin = home.join("bin").join("tansu");
    assert!(
        bin.exists(),
        "tansu is not installed; run scripts/kafka.sh install"
    );
    bin
}

fn accepting() -> bool {
    TcpStream::connect_timeout(&ADDR.parse().unwrap(), Duration::from_millis(200)).is_ok()
}

/// A private in-memory broker, killed when dropped.
struct Broker(Child);

impl Broker {
    fn start() -> Self {
        assert!(
            !accepting(),
            "something already listens on {ADDR}; the outage test needs that port for itself"
        );
        let child = Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://{ADDR}"),
                "--advertised-listener-url",
                &format!("tcp://{ADDR}"),
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let broker = Broker(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !accepting() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {ADDR} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn event(aggregate: Uuid, version: i64) -> Event {
    Event::new(
        EventType::StockChanged,
        aggregate,
        version,
        serde_json::json!({ "drop_id": aggregate, "n": version }),
        SystemClock.now(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_fails_fast_while_the_broker_is_down_and_held_events_arrive_after() {
    if livedrop_core::testing::env::service_var(BROKERS_VAR, "the Kafka outage test").is_none() {
        return;
    }
    tokio::time::timeout(Duration::from_secs(120), scenario())
        .await
        .expect("the outage scenario overran its time bound (a hang)");
}

async fn scenario() {
    let delivery = Duration::from_secs(3);
    let options = KafkaOptions {
        topic_prefix: format!("ldtest-outage-{}", Uuid::new_v4().simple()),
        delivery_timeout: delivery,
        connect_timeout: Duration::from_secs(5),
        // One record per batch; see tests/kafka.rs.
        client_config: vec![("batch.num.messages".to_owned(), "1".to_owned())],
        ..KafkaOptions::default()
    };
    let broker = Broker::start();
    let bus = Arc::new(KafkaBus::connect(ADDR, options).await.unwrap());

    let drop = Uuid::now_v7();
    bus.publish(&[event(drop, 1), event(drop, 2)])
        .await
        .unwrap();

    broker.kill();
    assert!(!accepting(), "the broker still listens after kill");

    // What an outbox relay would hold: events whose publish failed.
    let held: Vec<Event> = (3..=8).map(|v| event(drop, v)).collect();
    for attempt in 0..2 {
        let started = Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(30), bus.publish(&held))
            .await
            .expect("publish hung while the broker is down");
        let took = started.elapsed();
        let err = outcome.expect_err("publish succeeded with the broker down");
        assert!(err.is_unavailable(), "attempt {attempt}: {err:?}");
        // A liveness bound (publish gives up after its delivery timeout instead of
        // blocking the relay), not a speed claim; the timeout above catches a hang.
        eprintln!("attempt {attempt}: publish failed in {took:?} (delivery timeout {delivery:?})");
    }

    let _broker = Broker::start();
    // The in-memory broker came back empty: its topics are gone with it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(err) = bus.ensure_topics().await {
        assert!(
            Instant::now() < deadline,
            "topics not recreated after restart: {err}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The relay retries until the producer has reconnected.
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        match bus.publish(&held).await {
            Ok(()) => break,
            Err(err) => {
                assert!(err.is_unavailable(), "{err:?}");
                assert!(
                    Instant::now() < deadline,
                    "publish did not recover within 45 s: {err:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    let mut sub = bus.subscribe("after-outage").await.unwrap();
    let want: HashSet<EventId> = held.iter().map(|e| e.id).collect();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < held.len() && Instant::now() < deadline {
        if let Some(e) = sub.next(Duration::from_secs(1)).await.unwrap() {
            got.push(e);
        }
    }
    assert_eq!(
        got.iter().map(|e| e.id).collect::<HashSet<_>>(),
        want,
        "every held event arrives once"
    );
    assert_eq!(got, held, "in order");
    assert_eq!(sub.next(Duration::from_millis(500)).await.unwrap(), None);
    tokio::time::timeout(Duration::from_secs(60), sub.close())
        .await
        .expect("closing a subscription hung");
}
