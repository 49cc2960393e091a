//! The SQLite store: the whole conformance suite on a fresh database file per case,
//! plus what only a file shows (the invariant's CHECKs, reopening, the file lock).
//! SQLite needs no service, so these always run.
//!
//! `cargo test -p livedrop-adapters --features sqlite --test sqlite`
#![cfg(feature = "sqlite")]
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use livedrop_adapters::sqlite::{SqliteOptions, SqliteStore};
use livedrop_core::clock::Timestamp;
use livedrop_core::event::{Event, EventType};
use livedrop_core::id::{OrderId, UserId};
use livedrop_core::model::{self, Order, PlaceOutcome};
use livedrop_core::ports::{DropRepository, InventoryRepository, OrderRepository};
use livedrop_core::testing::fixtures;
use livedrop_core::testing::Repos;
use livedrop_core::StoreError;
use sqlx::Connection;

/// A migrated store on a new file in a temporary directory.
async fn open(options: SqliteOptions) -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("livedrop.db"), options)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    (store, dir)
}

async fn store() -> Option<Repos> {
    let store = SqliteStore::temporary(SqliteOptions::default())
        .await
        .unwrap();
    Some(Repos::from_store(Arc::new(store)))
}

/// The same suite with one order per transaction (no combiner).
async fn store_one_by_one() -> Option<Repos> {
    let options = SqliteOptions {
        max_batch: 1,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::temporary(options).await.unwrap();
    Some(Repos::from_store(Arc::new(store)))
}

livedrop_core::store_conformance!(store);

mod one_by_one {
    use super::*;
    livedrop_core::store_conformance!(store_one_by_one);
}

fn t0() -> Timestamp {
    fixtures::T0
}

fn live_drop() -> model::Drop {
    fixtures::live_drop(5)
}

fn order(drop: &model::Drop, key: &str) -> Order {
    fixtures::order(UserId::new(), drop, 1, key, t0())
}

#[tokio::test]
async fn the_invariant_is_a_check_constraint() {
    let (store, dir) = open(SqliteOptions::default()).await;
    let drop = live_drop();
    store
        .insert_drop(
            &drop,
            &[3],
            &[Event::drop(EventType::DropScheduled, &drop, t0())],
        )
        .await
        .unwrap();
    store.close().await;
    let url = format!("sqlite://{}", dir.path().join("livedrop.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    for sql in [
        "UPDATE inventory SET available = available - 1",
        "UPDATE inventory SET available = -1, reserved = reserved + 4",
        "UPDATE inventory SET total_stock = 4",
    ] {
        let refused = sqlx::query(sql).execute(&mut conn).await;
        assert!(refused.is_err(), "{sql} was accepted");
    }
    let (available,): (i64,) = sqlx::query_as("SELECT available FROM inventory")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(available, 3);
}

#[tokio::test]
async fn orders_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("livedrop.db");
    let drop = live_drop();
    let placed = {
        let store = SqliteStore::open(&path, SqliteOptions::default())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        store.insert_drop(&drop, &[2], &[]).await.unwrap();
        let PlaceOutcome::Placed(placed) =
            store.place_order(&order(&drop, "k1"), t0()).await.unwrap()
        else {
            panic!("not placed");
        };
        store.close().await;
        placed
    };
    let store = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap();
    // Migrating again is a no-op.
    store.migrate().await.unwrap();
    assert_eq!(store.order(placed.id).await.unwrap(), Some(placed.clone()));
    let stock = store.stock(drop.id).await.unwrap().unwrap();
    assert_eq!(
        stock,
        vec![model::Stock {
            total: 2,
            available: 1,
            reserved: 1,
            sold: 0,
        }]
    );
    let again = Order {
        id: OrderId::new(),
        ..placed.clone()
    };
    assert_eq!(
        store.place_order(&again, t0()).await.unwrap(),
        PlaceOutcome::Duplicate(placed)
    );
}

#[tokio::test]
async fn a_second_store_on_the_same_file_is_refused() {
    let (store, dir) = open(SqliteOptions::default()).await;
    let path = dir.path().join("livedrop.db");
    let refused = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::Unavailable { .. }),
        "{refused:?}"
    );
    let message = std::error::Error::source(&refused).unwrap().to_string();
    assert!(message.contains("already in use"), "{message}");
    assert!(!message.contains('\n'), "{message}");
    // Closing releases the lock.
    store.close().await;
    let reopened = SqliteStore::open(&path, SqliteOptions::default()).await;
    assert!(reopened.is_ok(), "{reopened:?}");
}

/// The simulator's workload on a SQLite file: three processes' services over the one
/// store a file allows (SQLite is one node), with the decorators' faults, on the real
/// clock; every check of the in-memory simulation runs at the end.
#[cfg(feature = "sim")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_workload_keeps_every_guarantee() {
    use livedrop_adapters::sim::{run_on, SimConfig, Timing};

    let store = Arc::new(
        SqliteStore::temporary(SqliteOptions::default())
            .await
            .unwrap(),
    );
    let config = SimConfig {
        steps: 60,
        ..SimConfig::default()
    };
    let processes = vec![store.clone(), store.clone(), store.clone()];
    let report = run_on(20_261_126, &config, store, processes, Timing::compressed()).await;
    println!("{report}");
    assert!(
        report.passed(),
        "{report}\nreplay: cargo test -p livedrop-adapters --features sqlite,sim --test sqlite simulated_workload"
    );
    assert!(report.requests > 60);
}
