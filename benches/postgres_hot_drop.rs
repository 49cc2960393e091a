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

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{live_drop, now, share_out, store};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use livedrop::adapters::postgres::testing::TestSchema;
use livedrop::adapters::postgres::{PgStore, ReserveStrategy};
use livedrop::core::id::UserId;
use livedrop::core::model::{self, Order, PlaceOutcome};
use livedrop::core::ports::{InventoryRepository, OrderRepository};
use livedrop::core::testing::fixtures;

const BUYERS: [usize; 4] = [1, 4, 16, 64];

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
    let drop = live_drop(store, "bench", stock).await;
    let orders = Arc::new(orders(&drop, n));
    let placed = Arc::new(AtomicUsize::new(0));
    let took = share_out(buyers, n, {
        let (store, placed) = (store.clone(), placed.clone());
        move |i| {
            let (store, orders, placed) = (store.clone(), orders.clone(), placed.clone());
            async move {
                match store.place_order(&orders[i], now()).await.expect("place") {
                    PlaceOutcome::Placed(_) => {
                        placed.fetch_add(1, Ordering::Relaxed);
                    }
                    PlaceOutcome::OutOfStock { .. } => {}
                    other => panic!("unexpected outcome {other:?}"),
                }
            }
        }
    })
    .await;
    // Zero oversell: the authoritative row balances and holds exactly what was placed.
    let s = model::Stock::sum(&store.stock(drop.id).await.expect("stock").expect("drop"));
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
    let rt = common::runtime();
    let schema = rt.block_on(TestSchema::on(&common::database_url()));
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
    let mut group = common::order_group(c, "postgres_hot_drop");
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
