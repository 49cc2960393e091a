//! A sold-out hot drop hammered by concurrent buyers (1/16/64): every attempt either
//! goes to PostgreSQL (`place_order`, the naive row-lock strategy, answering out of
//! stock) or is refused early by the Redis admission gate (`RedisGate::admit`) —
//! side by side in the same run. Asserts after every batch that nothing was sold.
//!
//! ```text
//! LIVEDROP_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//! LIVEDROP_TEST_REDIS_URL=redis://127.0.0.1:6379 \
//!     cargo bench --features postgres,redis --bench redis_gate
//! ```
//!
//! Works in a fresh PostgreSQL schema (`TestSchema`, dropped at the end) and Redis
//! namespace `ldbench:gate:<random>`.

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use livedrop::adapters::postgres::testing::TestSchema;
use livedrop::adapters::postgres::{PgOptions, PgStore, ReserveStrategy};
use livedrop::adapters::redis::{RedisGate, RedisOptions};
use livedrop::core::clock::Timestamp;
use livedrop::core::id::UserId;
use livedrop::core::model::{self, DropState, Order, PlaceOutcome, Stock};
use livedrop::core::ports::{AdmissionGate, DropRepository, InventoryRepository, OrderRepository};
use livedrop::core::testing::{env, fixtures};

const BUYERS: [usize; 3] = [1, 16, 64];

fn now() -> Timestamp {
    livedrop::core::clock::truncate(chrono::Utc::now())
}

fn order(drop: &model::Drop, i: usize) -> Order {
    fixtures::order(UserId::new(), drop, 1, &format!("gate-bench-{i}"), now())
}

/// A live drop of one unit, already sold: every further order is out of stock.
async fn sold_out_drop(store: &PgStore) -> (model::Drop, Stock) {
    let at = now();
    let product = fixtures::product(UserId::new(), "gate bench", "", at);
    let drop = fixtures::drop_of(
        &product,
        at - chrono::Duration::minutes(1),
        at + chrono::Duration::hours(1),
        1,
        DropState::Live,
        at,
    );
    store.insert_drop(&drop, 1, &[]).await.expect("drop");
    let outcome = store
        .place_order(&order(&drop, usize::MAX), now())
        .await
        .expect("first order");
    assert!(matches!(outcome, PlaceOutcome::Placed(_)), "{outcome:?}");
    let stock = store.stock(drop.id).await.expect("stock").expect("drop");
    assert_eq!(stock.available, 0);
    (drop, stock)
}

#[derive(Clone, Copy)]
enum Path {
    /// Every attempt is decided by the store.
    Store,
    /// The gate refuses first; only admitted attempts reach the store.
    Gate,
}

/// `iters` order attempts on a sold-out drop by `buyers` concurrent tasks.
async fn run(store: &PgStore, gate: &RedisGate, path: Path, buyers: usize, iters: u64) -> Duration {
    let n = usize::try_from(iters).unwrap_or(usize::MAX).max(1);
    let (drop, stock) = sold_out_drop(store).await;
    gate.record(drop.id, &stock, 1).await.expect("record");
    let orders = Arc::new((0..n).map(|i| order(&drop, i)).collect::<Vec<_>>());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..buyers)
        .map(|_| {
            let (store, gate, orders, next) =
                (store.clone(), gate.clone(), orders.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(order) = orders.get(i) else { return };
                    if let Path::Gate = path {
                        // Errors count as "admit", as in the order service.
                        if !gate
                            .admit(order.drop_id, order.quantity)
                            .await
                            .unwrap_or(true)
                        {
                            continue;
                        }
                    }
                    match store.place_order(order, now()).await.expect("place") {
                        PlaceOutcome::OutOfStock { .. } => {}
                        other => panic!("a sold-out drop answered {other:?}"),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("buyer task");
    }
    let took = started.elapsed();
    // Nothing oversold: the one unit is still the only one reserved.
    let after = store.stock(drop.id).await.expect("stock").expect("drop");
    assert!(after.is_consistent(), "{after:?}");
    assert_eq!((after.available, after.reserved), (0, 1), "{after:?}");
    took
}

fn gate_bench(c: &mut Criterion) {
    let db_url = std::env::var(env::DATABASE_URL)
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let redis_url =
        std::env::var(env::REDIS_URL).unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let schema = rt.block_on(TestSchema::on(&db_url));
    let store = rt.block_on(async {
        let store = schema
            .connect(PgOptions {
                max_connections: 32,
                strategy: ReserveStrategy::RowLock,
                ..schema.options()
            })
            .await;
        store.migrate().await.expect("migrations apply");
        store
    });
    let namespace = format!("ldbench:gate:{}", uuid::Uuid::new_v4().simple());
    let gate = rt
        .block_on(RedisGate::connect_with(
            &redis_url,
            &namespace,
            RedisOptions {
                // Outlives a whole measurement, so no attempt falls through on expiry.
                gate_ttl: Duration::from_secs(60),
                ..RedisOptions::default()
            },
        ))
        .unwrap_or_else(|e| panic!("cannot reach {redis_url}: {e}"));

    let mut group = c.benchmark_group("sold_out_hot_drop");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));
    for buyers in BUYERS {
        for (name, path) in [("postgres_store", Path::Store), ("redis_gate", Path::Gate)] {
            group.bench_with_input(BenchmarkId::new(name, buyers), &buyers, |b, &buyers| {
                let (store, gate) = (&store, &gate);
                b.to_async(&rt)
                    .iter_custom(|iters| async move { run(store, gate, path, buyers, iters).await })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, gate_bench);
criterion_main!(benches);
