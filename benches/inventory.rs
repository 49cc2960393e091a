//! Inventory contention on one hot drop through the in-memory adapter.
//!
//! Run: `cargo bench --bench inventory`
//!
//! Three lines per concurrency level (1 to 64 tasks on a multi-threaded runtime):
//! - `atomic_ceiling`: a bare `AtomicI64` decrement loop — the ceiling no store beats;
//! - `memory_store`: `OrderRepository::place_order` on the in-memory store (reserve,
//!   order row, outbox events, all in one critical section);
//! - `memory_store_drops`: the same, each task buying from a drop of its own: orders
//!   on unrelated drops meet only at the outbox's push;
//! - `memory_service`: `Livedrop::place_order`, adding idempotency keys and the
//!   cached drop lookup.
//!
//! Each iteration is one reservation; every run ends with zero oversell checked.
//!
//! With the `postgres` feature, a second group (`sized_hot_drop`) compares, in the same
//! run, a hot drop of ten sizes with a hot drop of one size holding the same total
//! stock on PostgreSQL: 64 buyers, orders spread over the sizes in turn, under group
//! reserve and under the naive row lock. Each size is its own stock row, so buyers of
//! different sizes need not queue on one lock.
//!
//! ```text
//! LIVEDROP_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench --features postgres --bench inventory -- sized_hot_drop
//! ```

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

async fn memory_store_drops(tasks: usize, iters: u64) -> Duration {
    let clock = ManualClock::fixed();
    let store = Arc::new(MemoryStore::new());
    let mut drops = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let drop = hot_drop(&clock);
        store
            .insert_drop(&drop, &[iters as u32], &[])
            .await
            .expect("drop");
        drops.push(drop);
    }
    // The reservations to make, shared out as the tasks take them.
    let left = Arc::new(AtomicI64::new(iters as i64));
    let now = clock.now();
    let (elapsed, won) = race(tasks, |t| {
        let (store, drop, left) = (store.clone(), drops[t].clone(), left.clone());
        async move {
            let user = UserId::new();
            let mut won = 0u64;
            while left.fetch_sub(1, Ordering::AcqRel) > 0 {
                let order = fixtures::order(user, &drop, 1, &won.to_string(), now);
                match store.place_order(&order, now).await {
                    Ok(PlaceOutcome::Placed(_)) => won += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
            won
        }
    })
    .await;
    let mut reserved = 0u64;
    for drop in &drops {
        let stock = Stock::sum(&store.stock(drop.id).await.expect("stock").expect("drop"));
        assert!(stock.is_consistent(), "no oversell: {stock:?}");
        reserved += u64::from(stock.reserved);
    }
    assert_eq!(
        (won, reserved),
        (iters, iters),
        "every reservation kept once"
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
        admission_token: None,
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
    MemoryStoreDrops,
    MemoryService,
}

impl Line {
    fn name(self) -> &'static str {
        match self {
            Line::AtomicCeiling => "atomic_ceiling",
            Line::MemoryStore => "memory_store",
            Line::MemoryStoreDrops => "memory_store_drops",
            Line::MemoryService => "memory_service",
        }
    }

    /// `iters` reservations by `tasks` concurrent tasks: the time they took.
    async fn reserve(self, tasks: usize, iters: u64) -> Duration {
        match self {
            Line::AtomicCeiling => atomic_ceiling(tasks, iters).await,
            Line::MemoryStore => memory_store(tasks, iters).await,
            Line::MemoryStoreDrops => memory_store_drops(tasks, iters).await,
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
        let lines = [
            Line::AtomicCeiling,
            Line::MemoryStore,
            Line::MemoryStoreDrops,
            Line::MemoryService,
        ];
        for line in lines {
            group.bench_with_input(BenchmarkId::new(line.name(), tasks), &tasks, |b, &tasks| {
                b.to_async(&runtime)
                    .iter_custom(|iters| line.reserve(tasks, iters))
            });
        }
    }
    group.finish();
}

#[cfg(feature = "postgres")]
mod common;

/// The same hot drop sold as one size or as ten, on PostgreSQL.
#[cfg(feature = "postgres")]
mod sized {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use criterion::{BenchmarkId, Criterion};
    use livedrop::adapters::postgres::testing::TestSchema;
    use livedrop::adapters::postgres::{PgStore, ReserveStrategy};
    use livedrop::core::model::{self, DropState, Order, PlaceOutcome};
    use livedrop::core::ports::{DropRepository, InventoryRepository, OrderRepository};
    use livedrop::core::testing::fixtures;
    use livedrop::core::UserId;

    use super::common::{now, share_out, store};

    /// Concurrent buyers.
    const BUYERS: usize = 64;

    /// A drop live since a minute ago selling `sizes` sizes that share `total` units
    /// as evenly as they can; a per-user limit of one (every order its own buyer).
    async fn sized_drop(store: &PgStore, sizes: usize, total: u32) -> (model::Drop, Vec<u32>) {
        let at = now();
        let product = fixtures::product(UserId::new(), "sized", "", at);
        let drop = fixtures::drop_of(
            &product,
            at - chrono::Duration::minutes(1),
            at + chrono::Duration::hours(1),
            1,
            DropState::Live,
            at,
        );
        let skus: Vec<String> = (0..sizes).map(|i| format!("eu-{}", 36 + i)).collect();
        let drop = if sizes == 1 {
            drop
        } else {
            let names: Vec<&str> = skus.iter().map(String::as_str).collect();
            fixtures::with_variants(drop, &names)
        };
        let n = u32::try_from(sizes).expect("a few sizes");
        let stock: Vec<u32> = (0..n)
            .map(|i| total / n + u32::from(i < total % n))
            .collect();
        store.insert_drop(&drop, &stock, &[]).await.expect("drop");
        (drop, stock)
    }

    /// `iters` orders of one unit (stock slightly short of them, so sizes also sell
    /// out), order `i` for size `i % sizes`, placed by [`BUYERS`] tasks; checks every
    /// size sold exactly what was asked of it, up to its stock.
    async fn run(store: &PgStore, sizes: usize, iters: u64) -> Duration {
        let n = usize::try_from(iters).unwrap_or(usize::MAX).max(1);
        let total = u32::try_from(n - n / 20).unwrap_or(u32::MAX);
        let (drop, stock) = sized_drop(store, sizes, total).await;
        let at = now();
        let orders: Arc<Vec<Order>> = Arc::new(
            (0..n)
                .map(|i| Order {
                    sku: drop.variants[i % sizes].sku.clone(),
                    ..fixtures::order(UserId::new(), &drop, 1, &format!("sized-{i}"), at)
                })
                .collect(),
        );
        let placed: Arc<Vec<AtomicU32>> = Arc::new((0..sizes).map(|_| AtomicU32::new(0)).collect());
        let took = share_out(BUYERS, n, {
            let (store, placed) = (store.clone(), placed.clone());
            move |i| {
                let (store, orders, placed) = (store.clone(), orders.clone(), placed.clone());
                async move {
                    match store.place_order(&orders[i], now()).await.expect("place") {
                        PlaceOutcome::Placed(_) => {
                            placed[i % sizes].fetch_add(1, Ordering::Relaxed);
                        }
                        PlaceOutcome::OutOfStock { .. } => {}
                        other => panic!("unexpected outcome {other:?}"),
                    }
                }
            }
        })
        .await;
        // Zero oversell, per size: each row balances and holds exactly what was
        // placed, which is all that was asked of it up to its stock.
        let rows = store.stock(drop.id).await.expect("stock").expect("drop");
        assert_eq!(rows.len(), sizes);
        for (v, s) in rows.iter().enumerate() {
            let asked = u32::try_from((n + sizes - 1 - v) / sizes).unwrap_or(u32::MAX);
            let got = placed[v].load(Ordering::Relaxed);
            assert!(s.is_consistent(), "{s:?}");
            assert_eq!(s.total, stock[v]);
            assert_eq!(s.reserved, got, "size {v}: {s:?}");
            assert_eq!(got, asked.min(stock[v]), "size {v}: every unit sold once");
        }
        took
    }

    pub(super) fn sized_hot_drop(c: &mut Criterion) {
        let rt = super::common::runtime();
        let schema = rt.block_on(TestSchema::on(&super::common::database_url()));
        let strategies = [
            (
                "group",
                rt.block_on(store(&schema, ReserveStrategy::group(), 8)),
            ),
            (
                "row_lock",
                rt.block_on(store(&schema, ReserveStrategy::RowLock, 32)),
            ),
        ];
        let mut group = super::common::order_group(c, "sized_hot_drop");
        for (name, store) in &strategies {
            for sizes in [1usize, 10] {
                let line = format!(
                    "{name}_{}",
                    if sizes == 1 { "one_size" } else { "ten_sizes" }
                );
                group.bench_with_input(BenchmarkId::new(line, BUYERS), &sizes, |b, &sizes| {
                    b.to_async(&rt)
                        .iter_custom(|iters| async move { run(store, sizes, iters).await })
                });
            }
        }
        group.finish();
    }
}

#[cfg(feature = "postgres")]
criterion_group!(benches, hot_drop_reservations, sized::sized_hot_drop);
#[cfg(not(feature = "postgres"))]
criterion_group!(benches, hot_drop_reservations);
criterion_main!(benches);
