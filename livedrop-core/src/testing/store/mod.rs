//! Store cases: what every implementation of the repository ports must do.
//!
//! Each case takes a fresh, empty store ([`Repos`]). Besides each port's rustdoc,
//! the cases pin down these shared details:
//!
//! - listings are newest first by `(timestamp, id)` descending, and walking the
//!   pages by `next_cursor` visits every item exactly once;
//! - a drop's initial ledger entry is dated at the drop's `created_at`;
//! - the `version` of consecutive `stock.changed` events of one drop increases;
//! - `Stock::is_consistent` holds after every stock movement, under any concurrency.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use futures::future::join_all;
use serde_json::json;
use uuid::Uuid;

use super::fixtures::{self, at, T0};
use super::Repos;
use crate::clock::Timestamp;
use crate::error::{StoreError, StoreResult};
use crate::event::{Event, EventPayload, EventType, StockPayload};
use crate::id::{DropId, NotificationId, OrderId, ProductId, UserId};
use crate::model::{
    self, AdjustOutcome, Adjustment, DropFilter, DropState, DropStatus, DropView, FanOutBatch,
    LedgerKind, NotificationKind, Order, OrderStatus, PlaceOutcome, Product, ProductFilter, Role,
    SettleOutcome, Settlement, Stock, User,
};
use crate::page::{Cursor, PageRequest};
use crate::ports::{BeginOutcome, Claim, UpdateOutcome};

/// Collects every item of a keyset listing, page by page, checking page sizes.
macro_rules! all_pages {
    ($limit:expr, |$page:ident| $fetch:expr) => {{
        let limit: u32 = $limit;
        let mut items = Vec::new();
        let mut $page = PageRequest::first(limit);
        let mut pages = 0u32;
        loop {
            let got = $fetch.await.expect("list a page");
            pages += 1;
            assert!(
                got.items.len() <= limit as usize,
                "page larger than its limit"
            );
            let more = got.next_cursor.is_some();
            if more {
                assert_eq!(
                    got.items.len(),
                    limit as usize,
                    "a page before the last is full"
                );
            }
            items.extend(got.items);
            match got.next_cursor {
                Some(cursor) => $page = $page.after(Some(cursor)),
                None => break,
            }
            assert!(pages < 10_000, "pagination does not end");
        }
        items
    }};
}

/// Asserts `keys` are strictly descending: newest first, no duplicates.
fn assert_newest_first(keys: &[Cursor], what: &str) {
    for pair in keys.windows(2) {
        assert!(
            (pair[0].at, pair[0].id) > (pair[1].at, pair[1].id),
            "{what}: not newest first by (timestamp, id): {pair:?}"
        );
    }
}

/// Takes every pending outbox event and marks it published.
async fn drain(repos: &Repos) -> Vec<Event> {
    let records = repos.outbox.pending(100_000).await.expect("outbox pending");
    let seqs: Vec<i64> = records.iter().map(|r| r.seq).collect();
    repos
        .outbox
        .mark_published(&seqs)
        .await
        .expect("outbox mark_published");
    records.into_iter().map(|r| r.event).collect()
}

/// The results of spawned `tasks`, in order; a task that panicked fails the case.
async fn joined<T>(tasks: impl IntoIterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect()
}

fn kinds(events: &[Event]) -> Vec<EventType> {
    events.iter().map(|e| e.kind).collect()
}

fn stock_payload(event: &Event) -> StockPayload {
    match event.decode().expect("stock event payload") {
        EventPayload::StockChanged(stock) | EventPayload::DropSoldOut(stock) => stock,
        other => panic!("not a stock event: {:?}", other.kind()),
    }
}

/// The drop's stock (the sum of its variants'), each variant checked against the
/// invariant.
async fn stock_of(repos: &Repos, drop: DropId) -> Stock {
    Stock::sum(&variant_stock(repos, drop).await)
}

/// The stock of each of the drop's variants, each checked against the invariant.
async fn variant_stock(repos: &Repos, drop: DropId) -> Vec<Stock> {
    let stock = repos
        .inventory
        .stock(drop)
        .await
        .expect("read stock")
        .expect("the drop has stock");
    for s in &stock {
        assert!(s.is_consistent(), "stock invariant broken: {s:?}");
    }
    stock
}

fn stock(total: u32, available: u32, reserved: u32, sold: u32) -> Stock {
    Stock {
        total,
        available,
        reserved,
        sold,
    }
}

/// What a lookup found, failing the test when the call fails or finds nothing.
async fn fetched<T>(lookup: impl std::future::Future<Output = StoreResult<Option<T>>>) -> T {
    lookup.await.expect("get").expect("stored")
}

async fn seed_user(repos: &Repos, name: &str, role: Role) -> User {
    let user = fixtures::user(name, role);
    repos.users.insert_user(&user).await.expect("insert user");
    user
}

async fn seed_product(
    repos: &Repos,
    creator: &User,
    title: &str,
    description: &str,
    created_at: Timestamp,
) -> Product {
    let product = fixtures::product(creator.id, title, description, created_at);
    let event = Event::product(EventType::ProductCreated, &product, created_at);
    repos
        .products
        .insert_product(&product, &[event])
        .await
        .expect("insert product");
    product
}

async fn seed_drop(
    repos: &Repos,
    product: &Product,
    window: (Timestamp, Timestamp),
    total: u32,
    limit: u32,
    state: DropState,
    created_at: Timestamp,
) -> model::Drop {
    let drop = fixtures::drop_of(product, window.0, window.1, limit, state, created_at);
    let event = Event::drop(EventType::DropScheduled, &drop, created_at);
    repos
        .drops
        .insert_drop(&drop, &[total], &[event])
        .await
        .expect("insert drop");
    drop
}

/// A live drop like [`live_drop`] selling `variants` (sku, units), with `limit`.
async fn live_sized_drop(repos: &Repos, variants: &[(&str, u32)], limit: u32) -> model::Drop {
    let creator = seed_user(repos, "creator", Role::Creator).await;
    let product = seed_product(repos, &creator, "Sneaker", "Sizes", at(-7200)).await;
    let skus: Vec<&str> = variants.iter().map(|(sku, _)| *sku).collect();
    let drop = fixtures::with_variants(
        fixtures::drop_of(
            &product,
            at(-600),
            at(3600),
            limit,
            DropState::Live,
            at(-3600),
        ),
        &skus,
    );
    let stock: Vec<u32> = variants.iter().map(|(_, n)| *n).collect();
    let event = Event::drop(EventType::DropScheduled, &drop, at(-3600));
    repos
        .drops
        .insert_drop(&drop, &stock, &[event])
        .await
        .expect("insert sized drop");
    drop
}

/// A live drop (window `[T0 - 10 min, T0 + 1 h)`) of a fresh creator's product.
async fn live_drop(repos: &Repos, total: u32, limit: u32) -> model::Drop {
    let creator = seed_user(repos, "creator", Role::Creator).await;
    let product = seed_product(repos, &creator, "Hoodie", "Limited run", at(-7200)).await;
    seed_drop(
        repos,
        &product,
        (at(-600), at(3600)),
        total,
        limit,
        DropState::Live,
        at(-3600),
    )
    .await
}

async fn place(repos: &Repos, order: &Order, now: Timestamp) -> PlaceOutcome {
    repos
        .orders
        .place_order(order, now)
        .await
        .expect("place order")
}

async fn placed(repos: &Repos, order: &Order, now: Timestamp) -> Order {
    match place(repos, order, now).await {
        PlaceOutcome::Placed(o) => o,
        other => panic!("expected Placed, got {other:?}"),
    }
}

async fn settle(repos: &Repos, id: OrderId, s: Settlement, now: Timestamp) -> SettleOutcome {
    repos
        .orders
        .settle_order(id, s, now, fixtures::HOLD)
        .await
        .expect("settle order")
}

fn follow_event(follower: UserId, creator: UserId, at: Timestamp) -> Event {
    Event::new(
        EventType::UserFollowed,
        follower.0,
        1,
        json!({ "follower_id": follower, "creator_id": creator }),
        at,
    )
}

mod users;
pub use users::*;
mod products;
pub use products::*;
mod drops;
pub use drops::*;
mod orders;
pub use orders::*;
mod inventory;
pub use inventory::*;
mod idempotency;
pub use idempotency::*;
mod notifications;
pub use notifications::*;
mod outbox;
pub use outbox::*;
mod semantics;
pub use semantics::*;
mod variants;
pub use variants::*;
mod waitlists;
pub use waitlists::*;
