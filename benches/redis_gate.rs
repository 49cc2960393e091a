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

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{live_drop, now, share_out};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use livedrop::adapters::postgres::testing::TestSchema;
use livedrop::adapters::postgres::{PgStore, ReserveStrategy};
use livedrop::adapters::redis::{RedisGate, RedisOptions};
use livedrop::core::id::UserId;
use livedrop::core::model::{self, Order, PlaceOutcome, Stock, DEFAULT_SKU};
use livedrop::core::ports::{AdmissionGate, InventoryRepository, OrderRepository};
use livedrop::core::testing::{env, fixtures};

const BUYERS: [usize; 3] = [1, 16, 64];

fn order(drop: &model::Drop, i: usize) -> Order {
    fixtures::order(UserId::new(), drop, 1, &format!("gate-bench-{i}"), now())
}

/// A live drop of one unit, already sold: every further order is out of stock.
async fn sold_out_drop(store: &PgStore) -> (model::Drop, Stock) {
    let drop = live_drop(store, "gate bench", 1).await;
    let outcome = store
        .place_order(&order(&drop, usize::MAX), now())
        .await
        .expect("first order");
    assert!(matches!(outcome, PlaceOutcome::Placed(_)), "{outcome:?}");
    let stock = only_stock(store, &drop).await;
    assert_eq!(stock.available, 0);
    (drop, stock)
}

/// The stock of the drop's one variant.
async fn only_stock(store: &PgStore, drop: &model::Drop) -> Stock {
    let variants = store.stock(drop.id).await.expect("stock").expect("drop");
    assert_eq!(variants.len(), 1, "a drop of one variant: {variants:?}");
    variants[0]
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
    gate.record(drop.id, DEFAULT_SKU, &stock, 1)
        .await
        .expect("record");
    let orders = Arc::new((0..n).map(|i| order(&drop, i)).collect::<Vec<_>>());
    let took = share_out(buyers, n, {
        let (store, gate) = (store.clone(), gate.clone());
        move |i| {
            let (store, gate, orders) = (store.clone(), gate.clone(), orders.clone());
            async move {
                let order = &orders[i];
                if let Path::Gate = path {
                    // Errors count as "admit", as in the order service.
                    if !gate
                        .admit(order.drop_id, &order.sku, order.quantity)
                        .await
                        .unwrap_or(true)
                    {
                        return;
                    }
                }
                match store.place_order(order, now()).await.expect("place") {
                    PlaceOutcome::OutOfStock { .. } => {}
                    other => panic!("a sold-out drop answered {other:?}"),
                }
            }
        }
    })
    .await;
    // Nothing oversold: the one unit is still the only one reserved.
    let after = only_stock(store, &drop).await;
    assert!(after.is_consistent(), "{after:?}");
    assert_eq!((after.available, after.reserved), (0, 1), "{after:?}");
    took
}

fn gate_bench(c: &mut Criterion) {
    let redis_url =
        std::env::var(env::REDIS_URL).unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let rt = common::runtime();
    let schema = rt.block_on(TestSchema::on(&common::database_url()));
    let store = rt.block_on(common::store(&schema, ReserveStrategy::RowLock, 32));
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

    let mut group = common::order_group(c, "sold_out_hot_drop");
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
