//! `Livedrop::watch_drop`: a drop's snapshot first, then its stock and status as
//! they change (by events from the live feed, or by the clock alone), over the
//! in-memory adapters.
//!
//! `cargo test -p livedrop-core --test watch`
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Memory;
use futures::StreamExt;
use livedrop_adapters::memory::{MemoryBus, MemoryStore};
use livedrop_core::model::{Actor, DropStatus, Role, Stock, DEFAULT_SKU};
use livedrop_core::ports::EventBus;
use livedrop_core::service::{DropUpdate, DropWatch, Livedrop, PlaceOrder};
use livedrop_core::{Clock, Config, DropId, Event, EventType, ManualClock, Ports, UserId};

struct World {
    app: Livedrop,
    clock: Arc<ManualClock>,
    creator: Actor,
}

async fn world() -> World {
    let Memory { clock, ports, .. } = Memory::new();
    let app = Livedrop::new(ports, Config::default());
    let creator = common::user(app.ports(), Role::Creator).await;
    World {
        app,
        clock,
        creator,
    }
}

impl World {
    /// A drop of `stock` units starting in `starts_in` and lasting an hour.
    async fn drop(&self, stock: u32, starts_in: chrono::Duration) -> DropId {
        common::drop(&self.app, &self.creator, stock, None, starts_in).await
    }
}

impl World {
    /// Waits until the background live feed relays events (it subscribes to the bus
    /// asynchronously after `spawn_background`): makes products until one arrives.
    async fn wait_for_live_feed(&self) {
        let mut rx = self.app.live_events();
        for _ in 0..50 {
            self.drop(1, chrono::Duration::zero()).await;
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
                return;
            }
        }
        panic!("the live feed never delivered an event");
    }
}

impl World {
    /// A customer orders both units of the two-unit drop `id` under `key`.
    async fn buy_both(&self, id: DropId, key: &str) {
        let buyer = Actor::new(UserId::new(), Role::Customer);
        let request = PlaceOrder {
            admission_token: None,
            drop_id: id,
            quantity: 2,
            sku: None,
        };
        self.app
            .place_order(&buyer, Some(key), request)
            .await
            .unwrap();
    }
}

/// The next updates of `watch` are the two-unit drop `id` sold out: its stock, then
/// its status.
async fn expect_sold_out(watch: &mut DropWatch, id: DropId) {
    let sold_out = Stock {
        total: 2,
        available: 0,
        reserved: 2,
        sold: 0,
    };
    assert_eq!(
        next(watch).await,
        DropUpdate::Stock {
            drop_id: id,
            stock: sold_out,
            variants: vec![(DEFAULT_SKU.to_owned(), sold_out)],
            status: DropStatus::SoldOut
        }
    );
    assert_eq!(next(watch).await, status(id, DropStatus::SoldOut));
}

fn status(drop_id: DropId, status: DropStatus) -> DropUpdate {
    DropUpdate::Status { drop_id, status }
}

async fn next(watch: &mut DropWatch) -> DropUpdate {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("an update in time")
        .expect("the watch goes on")
}

#[tokio::test]
async fn an_unknown_drop_is_not_found() {
    let w = world().await;
    let err = w.app.watch_drop(DropId::new()).await.unwrap_err();
    assert_eq!(err.code(), "not_found");
}

#[tokio::test(start_paused = true)]
async fn the_snapshot_comes_first_then_statuses_the_clock_alone_changes() {
    let w = world().await;
    let id = w.drop(3, chrono::Duration::minutes(10)).await;
    let mut watch = w.app.watch_drop(id).await.unwrap();
    let full = Stock {
        total: 3,
        available: 3,
        reserved: 0,
        sold: 0,
    };
    assert_eq!(
        next(&mut watch).await,
        DropUpdate::Stock {
            drop_id: id,
            stock: full,
            variants: vec![(DEFAULT_SKU.to_owned(), full)],
            status: DropStatus::Scheduled
        }
    );
    assert_eq!(next(&mut watch).await, status(id, DropStatus::Scheduled));
    w.clock.advance(chrono::Duration::minutes(11));
    assert_eq!(next(&mut watch).await, status(id, DropStatus::Live));
    w.clock.advance(chrono::Duration::hours(1));
    assert_eq!(next(&mut watch).await, status(id, DropStatus::Ended));
}

#[tokio::test]
async fn stock_changes_arrive_from_the_live_feed() {
    let w = world().await;
    let background = w.app.spawn_background();
    w.wait_for_live_feed().await;
    let id = w.drop(2, chrono::Duration::zero()).await;
    let mut watch = w.app.watch_drop(id).await.unwrap();
    assert!(matches!(next(&mut watch).await, DropUpdate::Stock { .. }));
    assert!(matches!(next(&mut watch).await, DropUpdate::Status { .. }));

    w.buy_both(id, "watch-1").await;
    expect_sold_out(&mut watch, id).await;
    background.shutdown().await;
}

/// An event of the watched drop whose payload cannot be read makes the watch re-read
/// the drop, so the change it stood for still shows. The watcher's process shares the
/// store with the writer's but not its outbox relay: the only event its live feed
/// gets is the unreadable one, published by hand.
#[tokio::test]
async fn an_unreadable_event_of_the_drop_makes_the_watch_re_read_it() {
    let w = world().await;
    let id = w.drop(2, chrono::Duration::zero()).await;
    let bus = Arc::new(MemoryBus::new());
    let watcher = Livedrop::new(
        Ports {
            outbox: Arc::new(MemoryStore::new()),
            bus: bus.clone(),
            ..w.app.ports().clone()
        },
        Config::default(),
    );
    let background = watcher.spawn_background();
    // The live feed subscribes asynchronously: publish until it relays something.
    let mut feed = watcher.live_events();
    let mut fed = false;
    for _ in 0..50 {
        let ping = Event::new(
            EventType::UserFollowed,
            uuid::Uuid::now_v7(),
            1,
            serde_json::json!({}),
            w.clock.now(),
        );
        bus.publish(&[ping]).await.unwrap();
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), feed.recv()).await {
            fed = true;
            break;
        }
    }
    assert!(fed, "the live feed never delivered an event");

    let mut watch = watcher.watch_drop(id).await.unwrap();
    assert!(matches!(next(&mut watch).await, DropUpdate::Stock { .. }));
    assert!(matches!(next(&mut watch).await, DropUpdate::Status { .. }));
    w.buy_both(id, "watch-unreadable").await;
    let unreadable = Event::new(
        EventType::StockChanged,
        id.0,
        2,
        serde_json::json!({ "drop_id": id }),
        w.clock.now(),
    );
    assert!(unreadable.decode().is_err());
    bus.publish(&[unreadable]).await.unwrap();
    expect_sold_out(&mut watch, id).await;
    background.shutdown().await;
}
