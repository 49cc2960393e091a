//! The hot drop on PostgreSQL: one drop, 1/4/16/64 concurrent buyers, each order
//! writing its order row, outbox events and idempotency key; the naive row-lock
//! strategy and group reserve side by side in the same run (group reserve as
//! configured by default, one batch of the drop at a time, and with two in flight:
//! `group_two_in_flight`), and group reserve's raw
//! ceiling (`raw_ceiling`): the same orders written with the same multi-row
//! statement, in batches of the size group reserve formed at that level, one
//! transaction each, with no lock, read, decision or combiner. Asserts zero oversell
//! after every run. At the end it prints where group reserve's batch transactions
//! spent their time, step by step, beside the ceiling's (and, with `BENCH_RESULTS`
//! set to a directory, writes it there as `batch_profile.jsonl`).
//!
//! ```text
//! LIVEDROP_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench --features postgres --bench postgres_hot_drop
//! ```
//!
//! Works in a fresh schema (`TestSchema`), dropped at the end.

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{live_drop, now, share_out, store};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use livedrop::adapters::postgres::testing::{raw_batches, TestSchema};
use livedrop::adapters::postgres::{BatchProfile, BatchStep, PgStore, ReserveStrategy};
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

/// Group reserve's batch profile, summed over every run at each buyer count.
type Profiles = Arc<Mutex<BTreeMap<usize, BatchProfile>>>;

/// The average batch group reserve formed at `buyers` (1 before it ran).
fn batch_size(profiles: &Profiles, buyers: usize) -> usize {
    let profiles = profiles.lock().expect("profiles");
    profiles
        .get(&buyers)
        .filter(|p| p.batches > 0)
        .map_or(1, |p| {
            (p.orders as f64 / p.batches as f64).round().max(1.0) as usize
        })
}

/// Writes `iters` orders as raw batches of group reserve's average size at `buyers`.
async fn raw_run(
    store: &PgStore,
    profiles: &Profiles,
    ceiling: &Profiles,
    buyers: usize,
    iters: u64,
) -> Duration {
    let n = usize::try_from(iters).unwrap_or(usize::MAX).max(1);
    let stock = u32::try_from(n).unwrap_or(u32::MAX);
    let drop = live_drop(store, "ceiling", stock).await;
    let orders = orders(&drop, n);
    let profile = raw_batches(store, &drop, &orders, batch_size(profiles, buyers), now())
        .await
        .expect("raw batches");
    let s = model::Stock::sum(&store.stock(drop.id).await.expect("stock").expect("drop"));
    assert!(s.is_consistent(), "{s:?}");
    assert_eq!(s.reserved as usize, n, "every order written once: {s:?}");
    add(ceiling, buyers, &profile);
    profile.total()
}

fn add(profiles: &Profiles, buyers: usize, profile: &BatchProfile) {
    *profiles
        .lock()
        .expect("profiles")
        .entry(buyers)
        .or_default() += profile;
}

/// Per batch: milliseconds in each step, and the share of the batch's time.
fn breakdown(profile: &BatchProfile) -> serde_json::Value {
    let batches = profile.batches.max(1) as f64;
    let total = profile.total().as_secs_f64().max(f64::MIN_POSITIVE);
    let steps: serde_json::Map<String, serde_json::Value> = BatchStep::ALL
        .iter()
        .map(|step| {
            let took = profile.step(*step).as_secs_f64();
            (
                step.as_str().to_owned(),
                serde_json::json!({
                    "ms_per_batch": took * 1e3 / batches,
                    "share": took / total,
                }),
            )
        })
        .collect();
    serde_json::json!({
        "batches": profile.batches,
        "orders": profile.orders,
        "orders_per_batch": profile.orders as f64 / batches,
        "ms_per_batch": total * 1e3 / batches,
        "rows_held_ms_per_batch": profile.rows_held.as_secs_f64() * 1e3 / batches,
        "steps": steps,
    })
}

/// Prints (and with `BENCH_RESULTS` set, writes) where the batches went.
fn report(profiles: &Profiles, ceiling: &Profiles) {
    let (profiles, ceiling) = (
        profiles.lock().expect("profiles"),
        ceiling.lock().expect("profiles"),
    );
    let mut lines = Vec::new();
    for (buyers, group) in profiles.iter() {
        let line = serde_json::json!({
            "bench": "batch_profile",
            "buyers": buyers,
            "group": breakdown(group),
            "raw_ceiling": ceiling.get(buyers).map(breakdown),
        });
        println!("batch-profile {line}");
        lines.push(line.to_string());
    }
    if let Ok(dir) = std::env::var("BENCH_RESULTS") {
        let path = std::path::Path::new(&dir).join("batch_profile.jsonl");
        std::fs::write(&path, lines.join("\n") + "\n").expect("write batch_profile.jsonl");
    }
}

fn hot_drop_bench(c: &mut Criterion) {
    let rt = common::runtime();
    let schema = rt.block_on(TestSchema::on(&common::database_url()));
    let row_lock = rt.block_on(store(&schema, ReserveStrategy::RowLock, 32));
    let group_store = rt.block_on(store(&schema, ReserveStrategy::group(), 8));
    let pipelined = ReserveStrategy::Group {
        max_batch: 256,
        in_flight: 2,
    };
    let pipelined_store = rt.block_on(store(&schema, pipelined, 8));
    let profiles: Profiles = Arc::default();
    let ceiling: Profiles = Arc::default();
    let mut group = common::order_group(c, "postgres_hot_drop");
    for buyers in BUYERS {
        group.bench_with_input(
            BenchmarkId::new("row_lock", buyers),
            &buyers,
            |b, &buyers| {
                b.to_async(&rt)
                    .iter_custom(|iters| run(&row_lock, buyers, iters))
            },
        );
        group.bench_with_input(
            BenchmarkId::new("group_two_in_flight", buyers),
            &buyers,
            |b, &buyers| {
                b.to_async(&rt)
                    .iter_custom(|iters| run(&pipelined_store, buyers, iters))
            },
        );
        group.bench_with_input(BenchmarkId::new("group", buyers), &buyers, |b, &buyers| {
            b.to_async(&rt).iter_custom(|iters| {
                let (store, profiles) = (&group_store, &profiles);
                async move {
                    let before = store.batch_profile();
                    let took = run(store, buyers, iters).await;
                    add(profiles, buyers, &store.batch_profile().since(&before));
                    took
                }
            })
        });
        group.bench_with_input(
            BenchmarkId::new("raw_ceiling", buyers),
            &buyers,
            |b, &buyers| {
                b.to_async(&rt)
                    .iter_custom(|iters| raw_run(&group_store, &profiles, &ceiling, buyers, iters))
            },
        );
    }
    group.finish();
    report(&profiles, &ceiling);
}

criterion_group!(benches, hot_drop_bench);
criterion_main!(benches);
