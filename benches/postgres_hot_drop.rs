//! The hot drop on PostgreSQL: one drop, 1/4/16/64 concurrent buyers, each order
//! writing its order row and outbox events; the naive row-lock strategy and group
//! reserve side by side in the same run. Asserts zero oversell after every batch.
//!
//! ```text
//! LIVEDROP_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench --features postgres --bench postgres_hot_drop
//! ```
//!
//! Works in a fresh schema (`TestSchema`), dropped at the end.

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use livedrop::adapters::postgres::testing::TestSchema;
use livedrop::adapters::postgres::{PgOptions, PgStore, ReserveStrategy};
use livedrop::core::clock::Timestamp;
use livedrop::core::id::UserId;
use livedrop::core::model::{self, DropState, Order, PlaceOutcome};
use livedrop::core::ports::{DropRepository, InventoryRepository, OrderRepository};
use livedrop::core::testing::{env, fixtures};

const BUYERS: [usize; 4] = [1, 4, 16, 64];

fn now() -> Timestamp {
    livedrop::core::clock::truncate(chrono::Utc::now())
}

async fn store(schema: &TestSchema, strategy: ReserveStrategy, max_connections: u32) -> PgStore {
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

/// A live drop with `stock` units; every order comes from its own buyer.
async fn hot_drop(store: &PgStore, stock: u32) -> model::Drop {
    let at = now();
    let product = fixtures::product(UserId::new(), "bench", "", at);
    let drop = fixtures::drop_of(
        &product,
        at - chrono::Duration::minutes(1),
        at + chrono::Duration::hours(1),
        1,
        DropState::Live,
        at,
    );
    store.insert_drop(&drop, stock, &[]).await.expect("drop");
    drop
}

fn orders(drop: &model::Drop, n: usize) -> Vec<Order> {
    let at = now();
    (0..n)
        .map(|i| fixtures::order(UserId::new(), drop, 1, &format!("bench-{i}"), at))
        .collect()
}

/// Places `iters` orders (stock slightly short of them, so the drop also sells out)
/// with `buyers` concurrent tasks; returns the time taken and checks the stock.
async fn run(store: &PgStore, buyers: usize, iters: u64) -> Duration {
    let n = usize::try_from(iters).unwrap_or(usize::MAX).max(1);
    let stock = u32::try_from(n - n / 20).unwrap_or(u32::MAX);
    let drop = hot_drop(store, stock).await;
    let orders = Arc::new(orders(&drop, n));
    let next = Arc::new(AtomicUsize::new(0));
    let placed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..buyers)
        .map(|_| {
            let (store, orders, next, placed) =
                (store.clone(), orders.clone(), next.clone(), placed.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(order) = orders.get(i) else { return };
                    match store.place_order(order, now()).await.expect("place") {
                        PlaceOutcome::Placed(_) => {
                            placed.fetch_add(1, Ordering::Relaxed);
                        }
                        PlaceOutcome::OutOfStock { .. } => {}
                        other => panic!("unexpected outcome {other:?}"),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("buyer task");
    }
    let took = started.elapsed();
    // Zero oversell: the authoritative row balances and holds exactly what was placed.
    let s = store.stock(drop.id).await.expect("stock").expect("drop");
    let placed = placed.load(Ordering::Relaxed);
    assert!(s.is_consistent(), "{s:?}");
    assert_eq!(s.reserved as usize, placed, "{s:?}");
    assert_eq!(
        placed,
        (stock as usize).min(n),
        "every unit sold exactly once"
    );
    assert_eq!(s.available as usize, stock as usize - placed);
    took
}

fn hot_drop_bench(c: &mut Criterion) {
    let url = std::env::var(env::DATABASE_URL)
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let schema = rt.block_on(TestSchema::on(&url));
    let strategies = [
        (
            "row_lock",
            rt.block_on(store(&schema, ReserveStrategy::RowLock, 32)),
        ),
        (
            "group",
            rt.block_on(store(&schema, ReserveStrategy::group(), 8)),
        ),
    ];
    let mut group = c.benchmark_group("postgres_hot_drop");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));
    for buyers in BUYERS {
        for (name, store) in &strategies {
            group.bench_with_input(BenchmarkId::new(*name, buyers), &buyers, |b, &buyers| {
                b.to_async(&rt)
                    .iter_custom(|iters| async move { run(store, buyers, iters).await })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, hot_drop_bench);
criterion_main!(benches);
