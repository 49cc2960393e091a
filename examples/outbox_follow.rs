// Run: LIVEDROP_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//      cargo run --release --features postgres --example outbox_follow -- [ORDERS] [INTERVAL_MS]
//
//! Measures how late a second process sees events when processes share PostgreSQL
//! and no broker: process A places orders one at a time, process B follows the
//! outbox itself (`Config::follow_outbox`) and timestamps each `order.placed` its
//! live feed delivers. Prints B's lag (p50, p95, max) and the cost of one idle
//! follower poll. Works in a fresh schema (`TestSchema`), dropped at the end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use livedrop::adapters::memory::{MemoryBus, MemoryCache};
use livedrop::adapters::postgres::testing::TestSchema;
use livedrop::core::event::EventType;
use livedrop::core::model::{Role, User};
use livedrop::core::service::{Livedrop, NewDrop, NewProduct, PlaceOrder};
use livedrop::core::testing::env;
use livedrop::core::{Clock, Config, Ports, SystemClock, UserId};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var(env::DATABASE_URL)
        .map_err(|_| format!("set {} to a PostgreSQL database", env::DATABASE_URL))?;
    let schema = TestSchema::on(&url).await;
    let mut args = std::env::args().skip(1);
    let orders: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(200);
    let interval_ms: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100);

    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let config = Config {
        follow_outbox: true,
        follow_interval: Duration::from_millis(interval_ms),
        ..Config::default()
    };
    let mut processes = Vec::new();
    for _ in 0..2 {
        let pg = schema.connect(schema.options()).await;
        pg.migrate().await?;
        let ports = Ports::from_store(
            Arc::new(pg),
            Arc::new(MemoryCache::new()),
            Arc::new(MemoryBus::new()),
            clock.clone(),
        );
        processes.push(Livedrop::new(ports, config.clone()));
    }
    let (a, b) = (&processes[0], &processes[1]);
    let background_a = a.spawn_background();
    let background_b = b.spawn_background();
    let mut live_b = b.live_events();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let user = |role: Role| User {
        id: UserId::new(),
        email: format!("{}@bench.invalid", uuid_like()),
        display_name: "bench".into(),
        role,
        password_hash: "not-a-hash".into(),
        created_at: clock.now(),
    };
    let creator = user(Role::Creator);
    a.ports().users.insert_user(&creator).await?;
    let product = a
        .create_product(
            &creator.actor(),
            NewProduct {
                title: "Bench".into(),
                description: "Outbox follower lag".into(),
                price_cents: 100,
                currency: "EUR".into(),
                image_url: None,
            },
        )
        .await?;
    let drop = a
        .schedule_drop(
            &creator.actor(),
            NewDrop {
                allocation: Default::default(),
                entries_close_at: None,
                waiting_room: None,
                product_id: product.id,
                starts_at: None,
                ends_at: clock.now() + chrono::Duration::hours(1),
                total_stock: orders as u32,
                variants: Vec::new(),
                per_user_limit: None,
            },
        )
        .await?;

    let receiver = tokio::spawn(async move {
        let mut seen = HashMap::new();
        while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_secs(5), live_b.recv()).await
        {
            if event.kind == EventType::OrderPlaced {
                seen.insert(event.aggregate_id, Instant::now());
            }
        }
        seen
    });
    let buyer = user(Role::Customer);
    a.ports().users.insert_user(&buyer).await?;
    let mut sent = HashMap::new();
    for i in 0..orders {
        let request = PlaceOrder {
            admission_token: None,
            drop_id: drop.drop.id,
            quantity: 1,
            sku: None,
        };
        let order = a
            .place_order(&buyer.actor(), Some(&format!("o-{i}")), request)
            .await?;
        sent.insert(order.id.0, Instant::now());
        // Spread the orders so each lag is measured on its own, not in a batch.
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
    let seen = receiver.await?;
    let mut lags: Vec<Duration> = sent
        .iter()
        .filter_map(|(id, at)| seen.get(id).map(|s| s.saturating_duration_since(*at)))
        .collect();
    lags.sort();
    println!(
        "follow_interval {interval_ms} ms: B saw {}/{} orders placed through A; lag p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        lags.len(),
        orders,
        percentile(&lags, 0.5).as_secs_f64() * 1e3,
        percentile(&lags, 0.95).as_secs_f64() * 1e3,
        lags.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );

    let outbox = b.ports().outbox.clone();
    let head = outbox.head().await?;
    let polls = 1_000;
    let started = Instant::now();
    for _ in 0..polls {
        outbox.appended_since(head, &[], 500).await?;
    }
    println!(
        "idle follower poll: {:.0} µs each ({polls} polls); one per interval per process",
        started.elapsed().as_secs_f64() * 1e6 / f64::from(polls)
    );
    background_b.shutdown().await;
    background_a.shutdown().await;
    Ok(())
}

fn uuid_like() -> String {
    UserId::new().0.simple().to_string()
}
