//! Inventory contention on one hot drop through the in-memory adapter.
//!
//! Run: `cargo bench --bench inventory`
//!
//! Three lines per concurrency level (1 to 64 tasks on a multi-threaded runtime):
//! - `atomic_ceiling`: a bare `AtomicI64` decrement loop — the ceiling no store beats;
//! - `memory_store`: `OrderRepository::place_order` on the in-memory store (reserve,
//!   order row, outbox events, all in one critical section);
//! - `memory_service`: `Livedrop::place_order`, adding idempotency keys and the
//!   cached drop lookup.
//!
//! Each iteration is one reservation; every run ends with zero oversell checked.

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Duration as Span;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use livedrop::adapters::memory::{memory_ports, MemoryStore};
use livedrop::core::model::{Actor, Drop, DropState, PlaceOutcome, Role, Stock};
use livedrop::core::ports::{DropRepository, InventoryRepository, OrderRepository};
use livedrop::core::service::{Livedrop, PlaceOrder};
use livedrop::core::testing::fixtures;
use livedrop::core::{Clock, Config, ManualClock, UserId};

const CONCURRENCY: [usize; 4] = [1, 4, 16, 64];

/// A live drop with no per-user limit to speak of: the stock is the only contention.
fn hot_drop(clock: &ManualClock) -> Drop {
    let now = clock.now();
    let product = fixtures::product(UserId::new(), "hot", "", now);
    fixtures::drop_of(
        &product,
        now,
        now + Span::hours(1),
        u32::MAX,
        DropState::Live,
        now,
    )
}

/// Spawns `tasks` buyers (`buyer(t)` is task `t`, answering the units it won) and
/// waits for them all: the time they took and the units won in all.
async fn race<F, Fut>(tasks: usize, buyer: F) -> (Duration, u64)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = u64> + Send + 'static,
{
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks).map(|t| tokio::spawn(buyer(t))).collect();
    let mut won = 0;
    for h in handles {
        won += h.await.expect("task");
    }
    (start.elapsed(), won)
}

async fn atomic_ceiling(tasks: usize, iters: u64) -> Duration {
    let stock = Arc::new(AtomicI64::new(iters as i64));
    let (elapsed, won) = race(tasks, |_| {
        let stock = stock.clone();
        async move {
            let mut won = 0u64;
            while stock.fetch_sub(1, Ordering::AcqRel) > 0 {
                won += 1;
            }
            won
        }
    })
    .await;
    assert_eq!(won, iters, "no oversell");
    elapsed
}

async fn memory_store(tasks: usize, iters: u64) -> Duration {
    let clock = ManualClock::fixed();
    let store = Arc::new(MemoryStore::new());
    let drop = hot_drop(&clock);
    store
        .insert_drop(&drop, &[iters as u32], &[])
        .await
        .expect("drop");
    let now = clock.now();
    let (elapsed, won) = race(tasks, |t| {
        let (store, drop) = (store.clone(), drop.clone());
        async move {
            let user = UserId::new();
            let mut won = 0u64;
            for i in 0.. {
                match store
                    .place_order(
                        &fixtures::order(user, &drop, 1, &format!("{t}-{i}"), now),
                        now,
                    )
                    .await
                {
                    Ok(PlaceOutcome::Placed(_)) => won += 1,
                    Ok(PlaceOutcome::OutOfStock { .. }) => return won,
                    other => panic!("unexpected {other:?}"),
                }
            }
            won
        }
    })
    .await;
    let stock = Stock::sum(&store.stock(drop.id).await.expect("stock").expect("drop"));
    assert_eq!(
        (won, stock.available, stock.reserved),
        (iters, 0, iters as u32),
        "no oversell"
    );
    elapsed
}

async fn memory_service(tasks: usize, iters: u64) -> Duration {
    let clock = Arc::new(ManualClock::fixed());
    let (ports, store, _bus) = memory_ports(clock.clone());
    let drop = hot_drop(&clock);
    store
        .insert_drop(&drop, &[iters as u32], &[])
        .await
        .expect("drop");
    let app = Livedrop::new(ports, Config::default());
    let request = PlaceOrder {
        drop_id: drop.id,
        quantity: 1,
        sku: None,
    };
    let (elapsed, won) = race(tasks, |t| {
        let (app, request) = (app.clone(), request.clone());
        async move {
            let buyer = Actor::new(UserId::new(), Role::Customer);
            let mut won = 0u64;
            for i in 0.. {
                match app
                    .place_order(&buyer, Some(&format!("{t}-{i}")), request.clone())
                    .await
                {
                    Ok(_) => won += 1,
                    Err(e) if e.code() == "out_of_stock" => return won,
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            won
        }
    })
    .await;
    assert_eq!(won, iters, "no oversell");
    elapsed
}

/// One line of the chart.
#[derive(Clone, Copy)]
enum Line {
    AtomicCeiling,
    MemoryStore,
    MemoryService,
}

impl Line {
    fn name(self) -> &'static str {
        match self {
            Line::AtomicCeiling => "atomic_ceiling",
            Line::MemoryStore => "memory_store",
            Line::MemoryService => "memory_service",
        }
    }

    /// `iters` reservations by `tasks` concurrent tasks: the time they took.
    async fn reserve(self, tasks: usize, iters: u64) -> Duration {
        match self {
            Line::AtomicCeiling => atomic_ceiling(tasks, iters).await,
            Line::MemoryStore => memory_store(tasks, iters).await,
            Line::MemoryService => memory_service(tasks, iters).await,
        }
    }
}

fn hot_drop_reservations(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("hot_drop_reserve");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(4));
    group.sample_size(20);
    for tasks in CONCURRENCY {
        for line in [Line::AtomicCeiling, Line::MemoryStore, Line::MemoryService] {
            group.bench_with_input(BenchmarkId::new(line.name(), tasks), &tasks, |b, &tasks| {
                b.to_async(&runtime)
                    .iter_custom(|iters| line.reserve(tasks, iters))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, hot_drop_reservations);
criterion_main!(benches);
