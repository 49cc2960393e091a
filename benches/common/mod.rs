//! Shared by the PostgreSQL benches: the services from the environment, a store in
//! a fresh schema, a live drop, and buyers sharing out a batch of orders.

#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use livedrop::adapters::postgres::testing::TestSchema;
use livedrop::adapters::postgres::{PgOptions, PgStore, ReserveStrategy};
use livedrop::core::clock::Timestamp;
use livedrop::core::id::UserId;
use livedrop::core::model::{self, DropState};
use livedrop::core::ports::DropRepository;
use livedrop::core::testing::{env, fixtures};

/// Now, at the stores' precision.
pub fn now() -> Timestamp {
    livedrop::core::clock::truncate(chrono::Utc::now())
}

/// `LIVEDROP_TEST_DATABASE_URL`, or the local default.
pub fn database_url() -> String {
    std::env::var(env::DATABASE_URL)
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A multi-threaded runtime for the measurements.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A group of measurements as these benches take them: ten samples over about four
/// seconds after a second's warm-up, each iteration one order.
pub fn order_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));
    group
}

/// A migrated store in `schema` deciding orders with `strategy`.
pub async fn store(
    schema: &TestSchema,
    strategy: ReserveStrategy,
    max_connections: u32,
) -> PgStore {
    let store = schema
        .connect(PgOptions {
            max_connections,
            strategy,
            ..schema.options()
        })
        .await;
    store.migrate().await.expect("migrations apply");
    store
}

/// A drop of a product titled `title`, live since a minute ago for an hour, with
/// `stock` units and a per-user limit of one (every order comes from its own buyer).
pub async fn live_drop(store: &PgStore, title: &str, stock: u32) -> model::Drop {
    let at = now();
    let product = fixtures::product(UserId::new(), title, "", at);
    let drop = fixtures::drop_of(
        &product,
        at - chrono::Duration::minutes(1),
        at + chrono::Duration::hours(1),
        1,
        DropState::Live,
        at,
    );
    store.insert_drop(&drop, &[stock], &[]).await.expect("drop");
    drop
}

/// `buyers` concurrent tasks share out attempts `0..n`, each taking the next
/// until none is left, and make each with `attempt`; the time until all are done.
pub async fn share_out<F, Fut>(buyers: usize, n: usize, attempt: F) -> Duration
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..buyers)
        .map(|_| {
            let (next, attempt) = (next.clone(), attempt.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    attempt(i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("buyer task");
    }
    started.elapsed()
}
