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
use crate::error::StoreError;
use crate::event::{Event, EventType, StockPayload};
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

fn kinds(events: &[Event]) -> Vec<EventType> {
    events.iter().map(|e| e.kind).collect()
}

fn stock_payload(event: &Event) -> StockPayload {
    serde_json::from_value(event.payload.clone()).expect("stock event payload")
}

/// The drop's stock, checked against the invariant.
async fn stock_of(repos: &Repos, drop: DropId) -> Stock {
    let stock = repos
        .inventory
        .stock(drop)
        .await
        .expect("read stock")
        .expect("the drop has stock");
    assert!(stock.is_consistent(), "stock invariant broken: {stock:?}");
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
        .insert_drop(&drop, total, &[event])
        .await
        .expect("insert drop");
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
        .settle_order(id, s, now)
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

// ---------------------------------------------------------------------------
// Users and follows
// ---------------------------------------------------------------------------

/// A user round-trips by id and by email; unknown ids and emails are `None`.
pub async fn users_insert_and_lookup(repos: &Repos) {
    let ada = seed_user(repos, "Ada", Role::Customer).await;
    let users = &repos.users;
    assert_eq!(users.user(ada.id).await.expect("user"), Some(ada.clone()));
    assert_eq!(
        users
            .user_by_email(&ada.email)
            .await
            .expect("user by email"),
        Some(ada.clone())
    );
    assert_eq!(users.user(UserId::new()).await.expect("user"), None);
    assert_eq!(
        users
            .user_by_email("nobody@example.com")
            .await
            .expect("user by email"),
        None
    );
}

/// A second user with the same email, in any case, is a `Conflict` and not stored.
pub async fn users_duplicate_email_conflicts(repos: &Repos) {
    let grace = seed_user(repos, "Grace", Role::Customer).await;
    let twin = User {
        id: UserId::new(),
        email: grace.email.to_uppercase(),
        ..grace.clone()
    };
    match repos.users.insert_user(&twin).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("a duplicate email (other case) must conflict, got {other:?}"),
    }
    let same = User {
        id: UserId::new(),
        ..grace.clone()
    };
    match repos.users.insert_user(&same).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("a duplicate email must conflict, got {other:?}"),
    }
    assert_eq!(repos.users.user(twin.id).await.expect("user"), None);
    assert_eq!(repos.users.user(same.id).await.expect("user"), None);
    let found = repos
        .users
        .user_by_email(&grace.email)
        .await
        .expect("user by email");
    assert_eq!(found.map(|u| u.id), Some(grace.id));
}

/// Follow and unfollow are idempotent; events are appended only for a new follow.
pub async fn follows_are_idempotent(repos: &Repos) {
    let creator = seed_user(repos, "Creator", Role::Creator).await;
    let fan = seed_user(repos, "Fan", Role::Customer).await;
    drain(repos).await;
    let users = &repos.users;

    let first = follow_event(fan.id, creator.id, T0);
    assert!(users
        .follow(fan.id, creator.id, T0, std::slice::from_ref(&first))
        .await
        .expect("follow"));
    let again = follow_event(fan.id, creator.id, at(10));
    assert!(
        !users
            .follow(fan.id, creator.id, at(10), &[again])
            .await
            .expect("follow again"),
        "following again is not new"
    );
    let events = drain(repos).await;
    assert_eq!(
        events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![first.id],
        "only the new follow appends its events"
    );

    let followers = users
        .followers(creator.id, PageRequest::first(10))
        .await
        .expect("followers");
    assert_eq!(followers.items.len(), 1);
    assert_eq!(followers.items[0].user_id, fan.id);
    assert_eq!(followers.items[0].display_name, fan.display_name);
    assert_eq!(
        followers.items[0].followed_at, T0,
        "following again changes nothing"
    );
    assert_eq!(followers.next_cursor, None);
    let following = users
        .following(fan.id, PageRequest::first(10))
        .await
        .expect("following");
    assert_eq!(following.items.len(), 1);
    assert_eq!(following.items[0].user_id, creator.id);
    assert_eq!(following.items[0].display_name, creator.display_name);

    assert!(users.unfollow(fan.id, creator.id).await.expect("unfollow"));
    assert!(!users
        .unfollow(fan.id, creator.id)
        .await
        .expect("unfollow again"));
    let followers = users
        .followers(creator.id, PageRequest::first(10))
        .await
        .expect("followers");
    assert!(followers.items.is_empty());
    let following = users
        .following(fan.id, PageRequest::first(10))
        .await
        .expect("following");
    assert!(following.items.is_empty());

    assert!(users
        .follow(fan.id, creator.id, at(20), &[])
        .await
        .expect("follow after unfollow"));
    let followers = users
        .followers(creator.id, PageRequest::first(10))
        .await
        .expect("followers");
    assert_eq!(followers.items.len(), 1);
    assert_eq!(followers.items[0].followed_at, at(20));
}

/// Followers and following are listed newest first by `(followed_at, id)`, and
/// walking the pages visits each exactly once (ties on time broken by id).
pub async fn follow_listings_paginate_newest_first(repos: &Repos) {
    let creator = seed_user(repos, "Star", Role::Creator).await;
    let mut fans = HashSet::new();
    for i in 0..25 {
        let fan = seed_user(repos, &format!("fan{i}"), Role::Customer).await;
        // Pairs of follows share a timestamp.
        repos
            .users
            .follow(fan.id, creator.id, at(i / 2), &[])
            .await
            .expect("follow");
        fans.insert(fan.id);
    }
    let listed = all_pages!(7, |page| repos.users.followers(creator.id, page));
    assert_eq!(listed.len(), 25, "every follower listed once");
    let ids: HashSet<UserId> = listed.iter().map(|e| e.user_id).collect();
    assert_eq!(ids, fans);
    let keys: Vec<Cursor> = listed.iter().map(|e| e.cursor()).collect();
    assert_newest_first(&keys, "followers");

    let reader = seed_user(repos, "Reader", Role::Customer).await;
    let mut creators = HashSet::new();
    for i in 0..12 {
        let c = seed_user(repos, &format!("maker{i}"), Role::Creator).await;
        repos
            .users
            .follow(reader.id, c.id, at(i % 4), &[])
            .await
            .expect("follow");
        creators.insert(c.id);
    }
    let listed = all_pages!(5, |page| repos.users.following(reader.id, page));
    assert_eq!(listed.len(), 12);
    let ids: HashSet<UserId> = listed.iter().map(|e| e.user_id).collect();
    assert_eq!(ids, creators);
    let keys: Vec<Cursor> = listed.iter().map(|e| e.cursor()).collect();
    assert_newest_first(&keys, "following");
}

// ---------------------------------------------------------------------------
// Products
// ---------------------------------------------------------------------------

/// Insert, get, and the conditional update with its version check.
pub async fn products_insert_get_update(repos: &Repos) {
    let creator = seed_user(repos, "Maker", Role::Creator).await;
    drain(repos).await;
    let products = &repos.products;

    let product = fixtures::product(creator.id, "Blue Hoodie", "Warm and soft", T0);
    let created = Event::product(EventType::ProductCreated, &product, T0);
    products
        .insert_product(&product, std::slice::from_ref(&created))
        .await
        .expect("insert product");
    assert_eq!(
        products.product(product.id).await.expect("product"),
        Some(product.clone())
    );
    assert_eq!(
        products.product(ProductId::new()).await.expect("product"),
        None
    );

    let v2 = Product {
        title: "Blue Hoodie, second run".into(),
        price_cents: 3_000,
        updated_at: at(5),
        version: 2,
        ..product.clone()
    };
    let updated = Event::product(EventType::ProductUpdated, &v2, at(5));
    assert_eq!(
        products
            .update_product(&v2, std::slice::from_ref(&updated))
            .await
            .expect("update"),
        UpdateOutcome::Updated
    );
    assert_eq!(
        products.product(product.id).await.expect("product"),
        Some(v2.clone())
    );

    for stale_version in [2, 4, 1] {
        let stale = Product {
            title: "stale".into(),
            version: stale_version,
            ..v2.clone()
        };
        let event = Event::product(EventType::ProductUpdated, &stale, at(6));
        assert_eq!(
            products
                .update_product(&stale, &[event])
                .await
                .expect("update"),
            UpdateOutcome::VersionMismatch { current: 2 },
            "version {stale_version} is not the stored version + 1"
        );
    }
    assert_eq!(
        products.product(product.id).await.expect("product"),
        Some(v2.clone())
    );

    let unknown = Product {
        id: ProductId::new(),
        ..v2.clone()
    };
    assert_eq!(
        products
            .update_product(&unknown, &[])
            .await
            .expect("update"),
        UpdateOutcome::NotFound
    );

    let events = drain(repos).await;
    assert_eq!(
        events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![created.id, updated.id],
        "refused updates append nothing"
    );
}

/// Listing filters by creator, searches every term case-insensitively in title or
/// description, and pages newest first.
pub async fn products_list_filter_search_paginate(repos: &Repos) {
    let alice = seed_user(repos, "Alice", Role::Creator).await;
    let bob = seed_user(repos, "Bob", Role::Creator).await;
    let a1 = seed_product(
        repos,
        &alice,
        "Red Running Shoes",
        "lightweight trail runner",
        at(1),
    )
    .await;
    let a2 = seed_product(
        repos,
        &alice,
        "Blue Hoodie",
        "cotton with RED stitching",
        at(2),
    )
    .await;
    let _a3 = seed_product(repos, &alice, "Green Cap", "one size", at(3)).await;
    let b1 = seed_product(repos, &bob, "RED shoes deluxe", "Leather", at(4)).await;
    let _b2 = seed_product(repos, &bob, "Mug", "ceramic", at(4)).await;
    for i in 0..20 {
        seed_product(
            repos,
            &alice,
            &format!("Sticker #{i}"),
            "vinyl",
            at(10 + i / 3),
        )
        .await;
    }

    let all = all_pages!(6, |page| repos
        .products
        .list_products(&ProductFilter::default(), page));
    assert_eq!(all.len(), 25);
    assert_eq!(all.iter().map(|p| p.id).collect::<HashSet<_>>().len(), 25);
    let keys: Vec<Cursor> = all.iter().map(Product::cursor).collect();
    assert_newest_first(&keys, "products");

    let by_alice = ProductFilter {
        creator_id: Some(alice.id),
        ..ProductFilter::default()
    };
    let listed = all_pages!(4, |page| repos.products.list_products(&by_alice, page));
    assert_eq!(listed.len(), 23);
    assert!(listed.iter().all(|p| p.creator_id == alice.id));

    let ids = |items: &[Product]| items.iter().map(|p| p.id).collect::<Vec<_>>();
    let search = ProductFilter::default().with_query("  RED   shoe ");
    let found = all_pages!(10, |page| repos.products.list_products(&search, page));
    assert_eq!(ids(&found), vec![b1.id, a1.id], "every term must match");

    let search = ProductFilter::default().with_query("red");
    let found = all_pages!(2, |page| repos.products.list_products(&search, page));
    assert_eq!(
        ids(&found),
        vec![b1.id, a2.id, a1.id],
        "title or description"
    );

    let search = ProductFilter {
        creator_id: Some(alice.id),
        ..ProductFilter::default().with_query("Red")
    };
    let found = all_pages!(10, |page| repos.products.list_products(&search, page));
    assert_eq!(ids(&found), vec![a2.id, a1.id]);

    let search = ProductFilter::default().with_query("red nothing-matches");
    let page = repos
        .products
        .list_products(&search, PageRequest::first(10))
        .await
        .expect("list");
    assert!(page.items.is_empty());
    assert_eq!(page.next_cursor, None);
}

// ---------------------------------------------------------------------------
// Drops
// ---------------------------------------------------------------------------

/// Inserting a drop stores it, its stock (all available), its initial ledger entry
/// and its events; `drop_view` returns drop and stock together.
pub async fn drops_insert_creates_stock_ledger_and_events(repos: &Repos) {
    let creator = seed_user(repos, "Maker", Role::Creator).await;
    let product = seed_product(repos, &creator, "Cap", "Wool", at(-100)).await;
    drain(repos).await;

    let drop = fixtures::drop_of(&product, at(60), at(3600), 2, DropState::Scheduled, T0);
    let scheduled = Event::drop(EventType::DropScheduled, &drop, T0);
    repos
        .drops
        .insert_drop(&drop, 10, std::slice::from_ref(&scheduled))
        .await
        .expect("insert drop");

    assert_eq!(
        repos.drops.drop_by_id(drop.id).await.expect("drop"),
        Some(drop.clone())
    );
    assert_eq!(stock_of(repos, drop.id).await, Stock::new(10));
    assert_eq!(
        repos.drops.drop_view(drop.id).await.expect("drop view"),
        Some(DropView {
            drop: drop.clone(),
            stock: Stock::new(10)
        })
    );
    assert_eq!(
        repos.drops.drop_by_id(DropId::new()).await.expect("drop"),
        None
    );
    assert_eq!(
        repos.drops.drop_view(DropId::new()).await.expect("view"),
        None
    );
    assert_eq!(
        repos.inventory.stock(DropId::new()).await.expect("stock"),
        None
    );

    let ledger = repos
        .inventory
        .ledger(drop.id, PageRequest::first(10))
        .await
        .expect("ledger");
    assert_eq!(ledger.items.len(), 1, "one initial ledger entry");
    let entry = &ledger.items[0];
    assert_eq!(entry.drop_id, drop.id);
    assert_eq!(entry.kind, LedgerKind::Initial);
    assert_eq!(entry.delta, 10);
    assert_eq!(entry.reason, "initial stock");
    assert_eq!(entry.stock_after, Stock::new(10));
    assert_eq!(entry.created_at, drop.created_at);
    assert_eq!(ledger.next_cursor, None);

    let events = drain(repos).await;
    assert_eq!(
        events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![scheduled.id]
    );

    // The view follows the stock.
    let buyer = seed_user(repos, "Buyer", Role::Customer).await;
    placed(
        repos,
        &fixtures::order(buyer.id, &drop, 2, "k", at(61)),
        at(61),
    )
    .await;
    let view = repos
        .drops
        .drop_view(drop.id)
        .await
        .expect("view")
        .expect("drop exists");
    assert_eq!(view.stock, stock(10, 8, 2, 0));
    assert_eq!(view.status_at(at(61)), DropStatus::Live);
}

/// `list_drops` filters by the status each drop has at the given instant, and by
/// creator, newest first.
pub async fn drops_list_by_status_at_now(repos: &Repos) {
    let creator = seed_user(repos, "Maker", Role::Creator).await;
    let other = seed_user(repos, "Other", Role::Creator).await;
    let product = seed_product(repos, &creator, "Tee", "Cotton", at(-9000)).await;
    let open = (at(-600), at(3600));
    let scheduled = seed_drop(
        repos,
        &product,
        (at(600), at(3600)),
        5,
        5,
        DropState::Scheduled,
        at(-50),
    )
    .await;
    let live = seed_drop(repos, &product, open, 5, 5, DropState::Live, at(-40)).await;
    let sold_out = seed_drop(repos, &product, open, 1, 5, DropState::Live, at(-30)).await;
    // Stored state lags the clock: the status is derived at the listing instant.
    let ended = seed_drop(
        repos,
        &product,
        (at(-7200), at(-60)),
        5,
        5,
        DropState::Live,
        at(-20),
    )
    .await;
    let cancelled = seed_drop(repos, &product, open, 5, 5, DropState::Live, at(-10)).await;

    let buyer = seed_user(repos, "Buyer", Role::Customer).await;
    placed(repos, &fixtures::order(buyer.id, &sold_out, 1, "k", T0), T0).await;
    let event = Event::drop(EventType::DropCancelled, &cancelled, T0);
    assert!(repos
        .drops
        .transition(
            cancelled.id,
            &[DropState::Scheduled, DropState::Live],
            DropState::Cancelled,
            &[event]
        )
        .await
        .expect("cancel"));

    let list = |status: Option<DropStatus>, creator_id: Option<UserId>, now: Timestamp| {
        let filter = DropFilter { status, creator_id };
        async move {
            all_pages!(2, |page| repos.drops.list_drops(&filter, now, page))
                .into_iter()
                .map(|v| v.drop.id)
                .collect::<Vec<_>>()
        }
    };
    for (status, expected) in [
        (DropStatus::Scheduled, &scheduled),
        (DropStatus::Live, &live),
        (DropStatus::SoldOut, &sold_out),
        (DropStatus::Ended, &ended),
        (DropStatus::Cancelled, &cancelled),
    ] {
        assert_eq!(
            list(Some(status), None, T0).await,
            vec![expected.id],
            "drops {} at T0",
            status.as_str()
        );
    }
    assert_eq!(
        list(None, None, T0).await,
        vec![cancelled.id, ended.id, sold_out.id, live.id, scheduled.id],
        "every drop, newest first"
    );
    assert_eq!(list(None, Some(other.id), T0).await, Vec::<DropId>::new());
    assert_eq!(
        list(Some(DropStatus::Live), Some(creator.id), T0).await,
        vec![live.id]
    );
    assert_eq!(
        list(Some(DropStatus::Live), None, at(700)).await,
        vec![live.id, scheduled.id],
        "the status is evaluated at the given instant"
    );

    let views = repos
        .drops
        .list_drops(&DropFilter::default(), T0, PageRequest::first(10))
        .await
        .expect("list");
    let sold = views
        .items
        .iter()
        .find(|v| v.drop.id == sold_out.id)
        .expect("sold-out drop listed");
    assert_eq!(sold.stock, stock(1, 0, 1, 0), "listed with its stock");
}

/// `transition` moves only from the given states, appends its events only when it
/// moves, and of racing identical transitions exactly one wins.
pub async fn drops_transition_is_conditional(repos: &Repos) {
    let creator = seed_user(repos, "Maker", Role::Creator).await;
    let product = seed_product(repos, &creator, "Tee", "Cotton", at(-9000)).await;
    let drop = seed_drop(
        repos,
        &product,
        (at(-60), at(3600)),
        5,
        5,
        DropState::Scheduled,
        at(-100),
    )
    .await;
    drain(repos).await;

    let started = Event::drop(EventType::DropStarted, &drop, T0);
    assert!(repos
        .drops
        .transition(
            drop.id,
            &[DropState::Scheduled],
            DropState::Live,
            std::slice::from_ref(&started)
        )
        .await
        .expect("transition"));
    let again = Event::drop(EventType::DropStarted, &drop, T0);
    assert!(!repos
        .drops
        .transition(drop.id, &[DropState::Scheduled], DropState::Live, &[again])
        .await
        .expect("transition again"));
    assert!(!repos
        .drops
        .transition(DropId::new(), &[DropState::Scheduled], DropState::Live, &[])
        .await
        .expect("transition of an unknown drop"));
    let stored = repos
        .drops
        .drop_by_id(drop.id)
        .await
        .expect("drop")
        .expect("exists");
    assert_eq!(stored.state, DropState::Live);
    assert_eq!(kinds(&drain(repos).await), vec![EventType::DropStarted]);
    assert_eq!(
        stock_of(repos, drop.id).await,
        Stock::new(5),
        "stock untouched"
    );

    let mut drops = Vec::new();
    for i in 0..10 {
        drops.push(
            seed_drop(
                repos,
                &product,
                (at(-600), at(60)),
                1,
                1,
                DropState::Live,
                at(i),
            )
            .await,
        );
    }
    drain(repos).await;
    let mut tasks = Vec::new();
    for drop in &drops {
        for _ in 0..2 {
            let repo = repos.drops.clone();
            let (id, event) = (drop.id, Event::drop(EventType::DropEnded, drop, at(60)));
            tasks.push(tokio::spawn(async move {
                repo.transition(id, &[DropState::Live], DropState::Ended, &[event])
                    .await
                    .expect("transition")
            }));
        }
    }
    let won: Vec<bool> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    for (drop, pair) in drops.iter().zip(won.chunks(2)) {
        assert_eq!(
            pair.iter().filter(|w| **w).count(),
            1,
            "exactly one of two racing transitions of drop {} wins",
            drop.id
        );
    }
    let ended = drain(repos).await;
    assert_eq!(ended.len(), 10, "one drop.ended per drop");
    let ids: HashSet<Uuid> = ended.iter().map(|e| e.aggregate_id).collect();
    assert_eq!(ids.len(), 10);
}

/// `due_transitions` finds scheduled drops past their start and live drops past
/// their end, oldest start first, at most `limit`.
pub async fn drops_due_transitions(repos: &Repos) {
    let creator = seed_user(repos, "Maker", Role::Creator).await;
    let product = seed_product(repos, &creator, "Tee", "Cotton", at(-90_000)).await;
    let mk = |window: (i64, i64), state: DropState, created: i64| {
        seed_drop(
            repos,
            &product,
            (at(window.0), at(window.1)),
            3,
            1,
            state,
            at(created),
        )
    };
    let a = mk((-300, 3600), DropState::Scheduled, -10_000).await;
    let _b = mk((300, 3600), DropState::Scheduled, -9_000).await;
    let c = mk((-7200, -1), DropState::Live, -8_000).await;
    let _d = mk((-600, 3600), DropState::Live, -7_000).await;
    let _e = mk((-9000, -5000), DropState::Ended, -9_500).await;
    let _f = mk((-100, 3600), DropState::Cancelled, -6_000).await;
    let g = mk((0, 3600), DropState::Scheduled, -5_000).await;

    let due = |limit: u32| async move {
        repos
            .drops
            .due_transitions(T0, limit)
            .await
            .expect("due transitions")
            .into_iter()
            .map(|d| d.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(due(10).await, vec![c.id, a.id, g.id], "oldest start first");
    assert_eq!(due(2).await, vec![c.id, a.id], "at most limit");
    assert!(repos
        .drops
        .transition(c.id, &[DropState::Live], DropState::Ended, &[])
        .await
        .expect("transition"));
    assert_eq!(due(10).await, vec![a.id, g.id]);
}

// ---------------------------------------------------------------------------
// Orders
// ---------------------------------------------------------------------------

/// Every outcome of `place_order`, and the documented order of the checks.
pub async fn orders_place_checks_in_documented_order(repos: &Repos) {
    let drop = live_drop(repos, 5, 2).await;
    let buyer = seed_user(repos, "Buyer", Role::Customer).await;

    let first = fixtures::order(buyer.id, &drop, 1, "k1", T0);
    let stored = placed(repos, &first, T0).await;
    assert_eq!(stored, first, "the order is stored as given, reserved");
    assert_eq!(
        repos.orders.order(first.id).await.expect("order"),
        Some(first.clone())
    );

    // 1. Duplicate comes first: even a different quantity or an unknown drop.
    let retry = fixtures::order(buyer.id, &drop, 2, "k1", at(1));
    assert_eq!(
        place(repos, &retry, at(1)).await,
        PlaceOutcome::Duplicate(first.clone())
    );
    let elsewhere = model::Drop {
        id: DropId::new(),
        ..drop.clone()
    };
    let retry = fixtures::order(buyer.id, &elsewhere, 1, "k1", at(1));
    assert_eq!(
        place(repos, &retry, at(1)).await,
        PlaceOutcome::Duplicate(first.clone())
    );
    assert_eq!(repos.orders.order(retry.id).await.expect("order"), None);

    // 2. Unknown drop.
    let lost = fixtures::order(buyer.id, &elsewhere, 1, "k2", at(1));
    assert_eq!(place(repos, &lost, at(1)).await, PlaceOutcome::DropNotFound);

    // 3. Outside the window [starts_at, ends_at), even past the per-user limit.
    for (now, key) in [
        (at(-601), "early"),
        (at(3600), "at-end"),
        (at(3700), "late"),
    ] {
        let o = fixtures::order(buyer.id, &drop, 5, key, now);
        assert_eq!(place(repos, &o, now).await, PlaceOutcome::NotLive, "{key}");
    }
    let at_start = fixtures::order(buyer.id, &drop, 1, "at-start", at(-600));
    placed(repos, &at_start, at(-600)).await;

    // 4. Per-user limit before stock.
    let over = fixtures::order(buyer.id, &drop, 1, "k3", at(2));
    assert_eq!(
        place(repos, &over, at(2)).await,
        PlaceOutcome::LimitExceeded { limit: 2, held: 2 }
    );
    let tiny = live_drop(repos, 1, 1).await;
    let greedy = fixtures::order(buyer.id, &tiny, 2, "k4", at(2));
    assert_eq!(
        place(repos, &greedy, at(2)).await,
        PlaceOutcome::LimitExceeded { limit: 1, held: 0 }
    );

    // 5. Stock.
    let roomy = live_drop(repos, 2, 5).await;
    let big = fixtures::order(buyer.id, &roomy, 3, "k5", at(3));
    assert_eq!(
        place(repos, &big, at(3)).await,
        PlaceOutcome::OutOfStock { available: 2 }
    );
    assert_eq!(
        stock_of(repos, roomy.id).await,
        Stock::new(2),
        "a refusal changes nothing"
    );

    // A cancelled drop is not live.
    assert!(repos
        .drops
        .transition(roomy.id, &[DropState::Live], DropState::Cancelled, &[])
        .await
        .expect("cancel"));
    let late = fixtures::order(buyer.id, &roomy, 1, "k6", at(4));
    assert_eq!(place(repos, &late, at(4)).await, PlaceOutcome::NotLive);

    assert_eq!(stock_of(repos, drop.id).await, stock(5, 3, 2, 0));
    assert_eq!(stock_of(repos, tiny.id).await, Stock::new(1));
    let mine = repos
        .orders
        .orders_for_user(buyer.id, PageRequest::first(100))
        .await
        .expect("orders");
    assert_eq!(mine.items.len(), 2, "only placed orders are stored");
}

/// A placed order appends `order.placed` then `stock.changed` (then `drop.sold_out`
/// when it takes the last unit); refusals append nothing.
pub async fn orders_place_appends_events(repos: &Repos) {
    let drop = live_drop(repos, 2, 2).await;
    let a = seed_user(repos, "A", Role::Customer).await;
    let b = seed_user(repos, "B", Role::Customer).await;
    drain(repos).await;

    let first = placed(repos, &fixtures::order(a.id, &drop, 1, "k", T0), T0).await;
    let events = drain(repos).await;
    assert_eq!(
        kinds(&events),
        vec![EventType::OrderPlaced, EventType::StockChanged]
    );
    assert_eq!(events[0].aggregate_id, first.id.0);
    let payload: Order = serde_json::from_value(events[0].payload.clone()).expect("order payload");
    assert_eq!(payload, first);
    assert_eq!(events[1].aggregate_id, drop.id.0);
    let moved = stock_payload(&events[1]);
    assert_eq!(moved.drop_id, drop.id.0);
    assert_eq!(moved.stock, stock(2, 1, 1, 0));
    let v1 = events[1].version;

    let second = placed(repos, &fixtures::order(b.id, &drop, 1, "k", at(1)), at(1)).await;
    let events = drain(repos).await;
    assert_eq!(
        kinds(&events),
        vec![
            EventType::OrderPlaced,
            EventType::StockChanged,
            EventType::DropSoldOut
        ]
    );
    assert_eq!(events[0].aggregate_id, second.id.0);
    assert_eq!(stock_payload(&events[1]).stock, stock(2, 0, 2, 0));
    assert_eq!(stock_payload(&events[2]).stock, stock(2, 0, 2, 0));
    assert!(events[1].version > v1, "stock versions increase");
    assert_eq!(events[2].version, events[1].version);

    let refused = fixtures::order(a.id, &drop, 1, "k2", at(2));
    assert_eq!(
        place(repos, &refused, at(2)).await,
        PlaceOutcome::OutOfStock { available: 0 }
    );
    let duplicate = fixtures::order(a.id, &drop, 1, "k", at(2));
    assert!(matches!(
        place(repos, &duplicate, at(2)).await,
        PlaceOutcome::Duplicate(_)
    ));
    assert!(drain(repos).await.is_empty(), "refusals append nothing");

    let view = repos
        .drops
        .drop_view(drop.id)
        .await
        .expect("view")
        .expect("exists");
    assert_eq!(view.status_at(at(2)), DropStatus::SoldOut);
    assert!(view.stock.is_consistent());
}

/// The per-user limit counts reserved plus confirmed units; cancelled and expired
/// orders free their units.
pub async fn orders_limit_counts_reserved_and_confirmed(repos: &Repos) {
    let drop = live_drop(repos, 10, 3).await;
    let buyer = seed_user(repos, "Buyer", Role::Customer).await;
    let a = placed(repos, &fixtures::order(buyer.id, &drop, 2, "a", T0), T0).await;
    assert!(matches!(
        settle(repos, a.id, Settlement::Confirm, at(1)).await,
        SettleOutcome::Settled(_)
    ));
    let b = fixtures::order(buyer.id, &drop, 2, "b", at(2));
    assert_eq!(
        place(repos, &b, at(2)).await,
        PlaceOutcome::LimitExceeded { limit: 3, held: 2 },
        "confirmed units count"
    );
    let b = placed(
        repos,
        &fixtures::order(buyer.id, &drop, 1, "b1", at(2)),
        at(2),
    )
    .await;
    let c = fixtures::order(buyer.id, &drop, 1, "c", at(3));
    assert_eq!(
        place(repos, &c, at(3)).await,
        PlaceOutcome::LimitExceeded { limit: 3, held: 3 },
        "reserved units count"
    );
    assert!(matches!(
        settle(repos, b.id, Settlement::Cancel, at(4)).await,
        SettleOutcome::Settled(_)
    ));
    let c = placed(
        repos,
        &fixtures::order(buyer.id, &drop, 1, "c1", at(5)),
        at(5),
    )
    .await;
    let expired = repos
        .orders
        .expire_holds(c.reserved_until, 100)
        .await
        .expect("expire");
    assert_eq!(expired.iter().map(|o| o.id).collect::<Vec<_>>(), vec![c.id]);
    placed(
        repos,
        &fixtures::order(buyer.id, &drop, 1, "d", at(700)),
        at(700),
    )
    .await;
    assert_eq!(stock_of(repos, drop.id).await, stock(10, 7, 1, 2));
}

/// 200 buyers race for 50 units: exactly 50 orders, never an oversell.
pub async fn orders_race_never_oversells(repos: &Repos) {
    let drop = live_drop(repos, 50, 1).await;
    let mut buyers = Vec::new();
    for i in 0..200 {
        buyers.push(seed_user(repos, &format!("buyer{i}"), Role::Customer).await);
    }
    drain(repos).await;
    let tasks = buyers.iter().map(|buyer| {
        let orders = repos.orders.clone();
        let order = fixtures::order(buyer.id, &drop, 1, "race", T0);
        tokio::spawn(async move { orders.place_order(&order, T0).await.expect("place order") })
    });
    let outcomes: Vec<PlaceOutcome> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    let mut placed = 0;
    for outcome in &outcomes {
        match outcome {
            PlaceOutcome::Placed(_) => placed += 1,
            PlaceOutcome::OutOfStock { available: 0 } => {}
            other => panic!("unexpected outcome in a race: {other:?}"),
        }
    }
    assert_eq!(placed, 50, "exactly the stock is sold");
    assert_eq!(stock_of(repos, drop.id).await, stock(50, 0, 50, 0));

    let events = drain(repos).await;
    let count = |kind: EventType| events.iter().filter(|e| e.kind == kind).count();
    assert_eq!(count(EventType::OrderPlaced), 50);
    assert_eq!(count(EventType::StockChanged), 50);
    assert_eq!(count(EventType::DropSoldOut), 1);
    let versions: HashSet<i64> = events
        .iter()
        .filter(|e| e.kind == EventType::StockChanged)
        .map(|e| e.version)
        .collect();
    assert_eq!(
        versions.len(),
        50,
        "each stock movement has its own version"
    );
}

/// Concurrent placements with one idempotency key: one order, the rest duplicates of it.
pub async fn orders_same_key_race_places_once(repos: &Repos) {
    let drop = live_drop(repos, 10, 5).await;
    let buyer = seed_user(repos, "Buyer", Role::Customer).await;
    let tasks = (0..16).map(|_| {
        let orders = repos.orders.clone();
        let order = fixtures::order(buyer.id, &drop, 1, "same-key", T0);
        tokio::spawn(async move { orders.place_order(&order, T0).await.expect("place order") })
    });
    let outcomes: Vec<PlaceOutcome> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    let winners: Vec<&Order> = outcomes
        .iter()
        .filter_map(|o| match o {
            PlaceOutcome::Placed(order) => Some(order),
            _ => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "exactly one placement: {outcomes:?}");
    let winner = winners[0];
    for outcome in &outcomes {
        match outcome {
            PlaceOutcome::Placed(_) => {}
            PlaceOutcome::Duplicate(o) => assert_eq!(o.id, winner.id),
            other => panic!("expected Duplicate, got {other:?}"),
        }
    }
    assert_eq!(stock_of(repos, drop.id).await, stock(10, 9, 1, 0));
    let mine = repos
        .orders
        .orders_for_user(buyer.id, PageRequest::first(100))
        .await
        .expect("orders");
    assert_eq!(mine.items.len(), 1);
}

/// One buyer's concurrent orders never exceed the per-user limit.
pub async fn orders_user_limit_race(repos: &Repos) {
    let drop = live_drop(repos, 100, 3).await;
    let buyer = seed_user(repos, "Buyer", Role::Customer).await;
    let tasks = (0..20).map(|i| {
        let orders = repos.orders.clone();
        let order = fixtures::order(buyer.id, &drop, 1, &format!("k{i}"), T0);
        tokio::spawn(async move { orders.place_order(&order, T0).await.expect("place order") })
    });
    let mut placed = 0;
    for outcome in join_all(tasks).await {
        match outcome.expect("task") {
            PlaceOutcome::Placed(_) => placed += 1,
            PlaceOutcome::LimitExceeded { limit: 3, held: 3 } => {}
            other => panic!("unexpected outcome: {other:?}"),
        }
    }
    assert_eq!(placed, 3);
    assert_eq!(stock_of(repos, drop.id).await, stock(100, 97, 3, 0));
}

/// Every outcome of `settle_order`, with its stock movement and events.
pub async fn orders_settle_outcomes(repos: &Repos) {
    let drop = live_drop(repos, 10, 10).await;
    let buyer = seed_user(repos, "Buyer", Role::Customer).await;
    let a = placed(repos, &fixtures::order(buyer.id, &drop, 2, "a", T0), T0).await;
    let b = placed(repos, &fixtures::order(buyer.id, &drop, 3, "b", T0), T0).await;
    let c = placed(repos, &fixtures::order(buyer.id, &drop, 1, "c", T0), T0).await;
    assert_eq!(stock_of(repos, drop.id).await, stock(10, 4, 6, 0));
    drain(repos).await;

    let confirmed = match settle(repos, a.id, Settlement::Confirm, at(1)).await {
        SettleOutcome::Settled(o) => o,
        other => panic!("expected Settled, got {other:?}"),
    };
    assert_eq!(confirmed.status, OrderStatus::Confirmed);
    assert_eq!(confirmed.updated_at, at(1));
    assert_eq!(stock_of(repos, drop.id).await, stock(10, 4, 4, 2));
    let events = drain(repos).await;
    assert_eq!(
        kinds(&events),
        vec![EventType::OrderConfirmed, EventType::StockChanged]
    );
    assert_eq!(events[0].aggregate_id, a.id.0);
    assert_eq!(stock_payload(&events[1]).stock, stock(10, 4, 4, 2));

    assert!(matches!(
        settle(repos, a.id, Settlement::Confirm, at(2)).await,
        SettleOutcome::Unchanged(o) if o.status == OrderStatus::Confirmed
    ));
    assert!(matches!(
        settle(repos, a.id, Settlement::Cancel, at(2)).await,
        SettleOutcome::Conflict(o) if o.status == OrderStatus::Confirmed
    ));

    assert!(matches!(
        settle(repos, b.id, Settlement::Cancel, at(3)).await,
        SettleOutcome::Settled(o) if o.status == OrderStatus::Cancelled
    ));
    assert_eq!(stock_of(repos, drop.id).await, stock(10, 7, 1, 2));
    assert_eq!(
        kinds(&drain(repos).await),
        vec![EventType::OrderCancelled, EventType::StockChanged]
    );
    assert!(matches!(
        settle(repos, b.id, Settlement::Cancel, at(4)).await,
        SettleOutcome::Unchanged(o) if o.status == OrderStatus::Cancelled
    ));
    assert!(matches!(
        settle(repos, b.id, Settlement::Confirm, at(4)).await,
        SettleOutcome::Conflict(o) if o.status == OrderStatus::Cancelled
    ));

    // Confirming at the end of the hold expires the order instead.
    let expired = match settle(repos, c.id, Settlement::Confirm, c.reserved_until).await {
        SettleOutcome::HoldExpired(o) => o,
        other => panic!("expected HoldExpired, got {other:?}"),
    };
    assert_eq!(expired.status, OrderStatus::Expired);
    assert_eq!(stock_of(repos, drop.id).await, stock(10, 8, 0, 2));
    assert_eq!(
        kinds(&drain(repos).await),
        vec![EventType::OrderExpired, EventType::StockChanged]
    );
    assert_eq!(
        repos
            .orders
            .order(c.id)
            .await
            .expect("order")
            .map(|o| o.status),
        Some(OrderStatus::Expired)
    );
    assert!(matches!(
        settle(repos, c.id, Settlement::Confirm, at(700)).await,
        SettleOutcome::Conflict(o) if o.status == OrderStatus::Expired
    ));
    assert!(matches!(
        settle(repos, c.id, Settlement::Cancel, at(700)).await,
        SettleOutcome::Conflict(o) if o.status == OrderStatus::Expired
    ));
    assert_eq!(
        settle(repos, OrderId::new(), Settlement::Confirm, at(5)).await,
        SettleOutcome::NotFound
    );
    assert!(
        drain(repos).await.is_empty(),
        "no-op settlements append nothing"
    );
    assert_eq!(
        repos
            .orders
            .expire_holds(at(10_000), 100)
            .await
            .expect("expire"),
        Vec::<Order>::new(),
        "settled orders hold nothing"
    );
    assert_eq!(stock_of(repos, drop.id).await, stock(10, 8, 0, 2));
}

/// A buyer's orders, newest first by `(created_at, id)`, across pages.
pub async fn orders_list_for_user(repos: &Repos) {
    let d1 = live_drop(repos, 100, 100).await;
    let d2 = live_drop(repos, 100, 100).await;
    let buyer = seed_user(repos, "Buyer", Role::Customer).await;
    let other = seed_user(repos, "Other", Role::Customer).await;
    let mut mine = HashMap::new();
    for i in 0..12 {
        let drop = if i % 2 == 0 { &d1 } else { &d2 };
        let now = at(i / 3);
        let o = placed(
            repos,
            &fixtures::order(buyer.id, drop, 1, &format!("k{i}"), now),
            now,
        )
        .await;
        mine.insert(o.id, o);
    }
    placed(repos, &fixtures::order(other.id, &d1, 1, "k0", T0), T0).await;

    let listed = all_pages!(5, |page| repos.orders.orders_for_user(buyer.id, page));
    assert_eq!(listed.len(), 12);
    for order in &listed {
        assert_eq!(mine.get(&order.id), Some(order), "listed as placed");
    }
    let keys: Vec<Cursor> = listed.iter().map(Order::cursor).collect();
    assert_newest_first(&keys, "orders");
    assert_eq!(
        repos.orders.order(OrderId::new()).await.expect("order"),
        None
    );
    let nobody = repos
        .orders
        .orders_for_user(UserId::new(), PageRequest::first(5))
        .await
        .expect("orders");
    assert!(nobody.items.is_empty());
    assert_eq!(nobody.next_cursor, None);
}

/// Due holds expire exactly once, even with two sweepers at once, returning their
/// units; `limit` bounds one sweep.
pub async fn holds_expire_exactly_once(repos: &Repos) {
    let drop = live_drop(repos, 200, 200).await;
    let mut orders = Vec::new();
    for i in 0..30 {
        let buyer = seed_user(repos, &format!("buyer{i}"), Role::Customer).await;
        let mut order = fixtures::order(buyer.id, &drop, 1 + (i % 3) as u32, "k", at(-10));
        order.reserved_until = at(i);
        orders.push(placed(repos, &order, at(-10)).await);
    }
    let held: u32 = orders.iter().map(|o| o.quantity).sum();
    assert_eq!(
        stock_of(repos, drop.id).await,
        stock(200, 200 - held, held, 0)
    );
    drain(repos).await;

    let sweep_at = at(15);
    let due: HashSet<OrderId> = orders
        .iter()
        .filter(|o| o.reserved_until <= sweep_at)
        .map(|o| o.id)
        .collect();
    let sweepers = (0..2).map(|_| {
        let repo = repos.orders.clone();
        tokio::spawn(async move { repo.expire_holds(sweep_at, 1_000).await.expect("expire") })
    });
    let swept: Vec<Vec<Order>> = join_all(sweepers)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    let total = swept[0].len() + swept[1].len();
    let ids: HashSet<OrderId> = swept.iter().flatten().map(|o| o.id).collect();
    assert_eq!(ids, due, "every due hold expires");
    assert_eq!(total, due.len(), "each hold expires exactly once");
    assert!(swept
        .iter()
        .flatten()
        .all(|o| o.status == OrderStatus::Expired && o.updated_at == sweep_at));

    let still: u32 = orders
        .iter()
        .filter(|o| !due.contains(&o.id))
        .map(|o| o.quantity)
        .sum();
    assert_eq!(
        stock_of(repos, drop.id).await,
        stock(200, 200 - still, still, 0)
    );
    let events = drain(repos).await;
    let expired_events = events
        .iter()
        .filter(|e| e.kind == EventType::OrderExpired)
        .count();
    assert_eq!(expired_events, due.len());
    for order in &orders {
        let stored = repos
            .orders
            .order(order.id)
            .await
            .expect("order")
            .expect("exists");
        let want = if due.contains(&order.id) {
            OrderStatus::Expired
        } else {
            OrderStatus::Reserved
        };
        assert_eq!(stored.status, want);
    }
    assert!(repos
        .orders
        .expire_holds(sweep_at, 1_000)
        .await
        .expect("expire")
        .is_empty());

    let first = repos.orders.expire_holds(at(100), 5).await.expect("expire");
    assert_eq!(first.len(), 5, "at most limit");
    let rest = repos
        .orders
        .expire_holds(at(100), 1_000)
        .await
        .expect("expire");
    assert_eq!(first.len() + rest.len(), orders.len() - due.len());
    assert_eq!(stock_of(repos, drop.id).await, Stock::new(200));
}

// ---------------------------------------------------------------------------
// Inventory
// ---------------------------------------------------------------------------

/// Restock, shrink and refused shrink, each with its ledger entry and stock events;
/// the ledger lists newest first.
pub async fn inventory_adjust_and_ledger(repos: &Repos) {
    let drop = live_drop(repos, 10, 10).await;
    let admin = seed_user(repos, "Admin", Role::Admin).await;
    let buyer = seed_user(repos, "Buyer", Role::Customer).await;
    drain(repos).await;
    let adjustment = |delta: i64, reason: &str, at: Timestamp| Adjustment {
        drop_id: drop.id,
        delta,
        reason: reason.to_owned(),
        actor_id: Some(admin.id),
        entry_id: Uuid::now_v7(),
        at,
    };
    let adjust = |a: Adjustment| async move { repos.inventory.adjust(&a).await.expect("adjust") };

    let restock = adjustment(5, "found a box", at(1));
    let entry = match adjust(restock.clone()).await {
        AdjustOutcome::Applied(entry) => entry,
        other => panic!("expected Applied, got {other:?}"),
    };
    assert_eq!(entry.id, restock.entry_id);
    assert_eq!(entry.kind, LedgerKind::Restock);
    assert_eq!(entry.delta, 5);
    assert_eq!(entry.reason, "found a box");
    assert_eq!(entry.actor_id, Some(admin.id));
    assert_eq!(entry.stock_after, stock(15, 15, 0, 0));
    assert_eq!(entry.created_at, at(1));
    assert_eq!(stock_of(repos, drop.id).await, stock(15, 15, 0, 0));
    let events = drain(repos).await;
    assert_eq!(kinds(&events), vec![EventType::StockChanged]);
    assert_eq!(stock_payload(&events[0]).stock, stock(15, 15, 0, 0));

    placed(
        repos,
        &fixtures::order(buyer.id, &drop, 4, "k", at(2)),
        at(2),
    )
    .await;
    drain(repos).await;
    let shrink = adjust(adjustment(-11, "damaged", at(3))).await;
    assert!(matches!(
        &shrink,
        AdjustOutcome::Applied(e) if e.kind == LedgerKind::Shrink && e.delta == -11
            && e.stock_after == stock(4, 0, 4, 0)
    ));
    assert_eq!(
        kinds(&drain(repos).await),
        vec![EventType::StockChanged, EventType::DropSoldOut]
    );
    assert_eq!(
        adjust(adjustment(-1, "too much", at(4))).await,
        AdjustOutcome::Insufficient { available: 0 }
    );
    assert!(matches!(
        adjust(adjustment(1, "one more", at(5))).await,
        AdjustOutcome::Applied(_)
    ));
    assert_eq!(
        adjust(adjustment(-2, "too much", at(6))).await,
        AdjustOutcome::Insufficient { available: 1 }
    );
    assert_eq!(stock_of(repos, drop.id).await, stock(5, 1, 4, 0));
    let unknown = Adjustment {
        drop_id: DropId::new(),
        ..adjustment(3, "nope", at(7))
    };
    assert_eq!(adjust(unknown).await, AdjustOutcome::DropNotFound);
    assert_eq!(
        kinds(&drain(repos).await),
        vec![EventType::StockChanged],
        "refused adjustments append nothing"
    );

    let ledger = all_pages!(1, |page| repos.inventory.ledger(drop.id, page));
    assert_eq!(
        ledger.iter().map(|e| (e.kind, e.delta)).collect::<Vec<_>>(),
        vec![
            (LedgerKind::Restock, 1),
            (LedgerKind::Shrink, -11),
            (LedgerKind::Restock, 5),
            (LedgerKind::Initial, 10),
        ],
        "the ledger lists every movement outside orders, newest first"
    );
    assert!(ledger.iter().all(|e| e.stock_after.is_consistent()));
    let none = repos
        .inventory
        .ledger(DropId::new(), PageRequest::first(10))
        .await
        .expect("ledger");
    assert!(none.items.is_empty());
}

// ---------------------------------------------------------------------------
// Idempotency
// ---------------------------------------------------------------------------

const LEASE: Duration = Duration::from_secs(30);

/// The claim of a `Started` outcome; panics on any other.
fn claim_of(outcome: BeginOutcome) -> Claim {
    match outcome {
        BeginOutcome::Started(claim) => claim,
        other => panic!("expected Started, got {other:?}"),
    }
}

/// Claim, in flight, mismatch, complete and replay, release; keys are per user.
pub async fn idempotency_lifecycle(repos: &Repos) {
    let u1 = seed_user(repos, "One", Role::Customer).await;
    let u2 = seed_user(repos, "Two", Role::Customer).await;
    let store = &repos.idempotency;
    let begin = |user: UserId, key: &'static str, fp: &'static str, now: Timestamp| async move {
        store.begin(user, key, fp, now, LEASE).await.expect("begin")
    };

    let c1 = claim_of(begin(u1.id, "k", "fp1", T0).await);
    assert_eq!(
        begin(u1.id, "k", "fp1", at(1)).await,
        BeginOutcome::InFlight
    );
    assert_eq!(
        begin(u1.id, "k", "fp2", at(1)).await,
        BeginOutcome::Mismatch
    );
    let c2 = claim_of(begin(u2.id, "k", "fp2", at(1)).await);
    assert_ne!(c1, c2, "every claim has its own token");

    let response = json!({ "status": 201, "body": { "id": "o-1" } });
    assert!(store
        .complete(u1.id, "k", c1, &response)
        .await
        .expect("complete"));
    assert_eq!(
        begin(u1.id, "k", "fp1", at(2)).await,
        BeginOutcome::Replay(response.clone())
    );
    assert_eq!(
        begin(u1.id, "k", "fp2", at(2)).await,
        BeginOutcome::Mismatch
    );
    assert!(
        !store.release(u1.id, "k", c1).await.expect("release"),
        "a completed key is not released"
    );
    assert!(
        !store
            .complete(u1.id, "k", c1, &json!("second"))
            .await
            .expect("complete"),
        "a completed key keeps its first response"
    );

    assert!(store.release(u2.id, "k", c2).await.expect("release"));
    claim_of(begin(u2.id, "k", "fp3", at(3)).await);
    assert_eq!(
        begin(u1.id, "k", "fp1", at(4)).await,
        BeginOutcome::Replay(response)
    );
}

/// An expired lease is taken over; purge deletes keys created before the cutoff.
pub async fn idempotency_lease_takeover_and_purge(repos: &Repos) {
    let user = seed_user(repos, "User", Role::Customer).await;
    let store = &repos.idempotency;
    let begin = |key: &'static str, now: Timestamp| async move {
        store
            .begin(user.id, key, "fp", now, LEASE)
            .await
            .expect("begin")
    };
    claim_of(begin("k", T0).await);
    assert_eq!(begin("k", at(29)).await, BeginOutcome::InFlight);
    let taken = claim_of(begin("k", at(31)).await);
    assert_eq!(
        begin("k", at(32)).await,
        BeginOutcome::InFlight,
        "the new lease holds"
    );
    assert!(store
        .complete(user.id, "k", taken, &json!(1))
        .await
        .expect("complete"));
    assert_eq!(begin("k", at(33)).await, BeginOutcome::Replay(json!(1)));

    claim_of(begin("k2", at(100)).await);
    assert_eq!(store.purge(at(50)).await.expect("purge"), 1);
    claim_of(begin("k", at(101)).await);
    assert_eq!(
        begin("k2", at(101)).await,
        BeginOutcome::InFlight,
        "newer keys stay"
    );
    assert_eq!(store.purge(at(50)).await.expect("purge"), 0);
}

/// A holder whose lease was taken over can neither release nor complete the key:
/// the new holder's claim, and then its response, stay.
pub async fn idempotency_takeover_fences_the_old_holder(repos: &Repos) {
    let user = seed_user(repos, "User", Role::Customer).await;
    let store = &repos.idempotency;
    let begin = |now: Timestamp| async move {
        store
            .begin(user.id, "k", "fp", now, LEASE)
            .await
            .expect("begin")
    };
    let old = claim_of(begin(T0).await);
    let new = claim_of(begin(at(31)).await);
    assert_ne!(old, new);

    assert!(
        !store.release(user.id, "k", old).await.expect("release"),
        "the old holder's release misses"
    );
    assert_eq!(
        begin(at(32)).await,
        BeginOutcome::InFlight,
        "the new holder still holds the key"
    );
    assert!(
        !store
            .complete(user.id, "k", old, &json!("old"))
            .await
            .expect("complete"),
        "the old holder's response is refused"
    );
    assert_eq!(begin(at(33)).await, BeginOutcome::InFlight);

    assert!(store
        .complete(user.id, "k", new, &json!("new"))
        .await
        .expect("complete"));
    assert!(!store.release(user.id, "k", old).await.expect("release"));
    assert_eq!(begin(at(34)).await, BeginOutcome::Replay(json!("new")));
}

/// Of concurrent claims of one key, exactly one starts.
pub async fn idempotency_concurrent_begin(repos: &Repos) {
    let user = seed_user(repos, "User", Role::Customer).await;
    let tasks = (0..20).map(|_| {
        let store = repos.idempotency.clone();
        tokio::spawn(async move {
            store
                .begin(user.id, "race", "fp", T0, LEASE)
                .await
                .expect("begin")
        })
    });
    let outcomes: Vec<BeginOutcome> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    let started = outcomes
        .iter()
        .filter(|o| matches!(o, BeginOutcome::Started(_)))
        .count();
    assert_eq!(started, 1, "exactly one claim starts: {outcomes:?}");
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, BeginOutcome::Started(_) | BeginOutcome::InFlight)));
}

// ---------------------------------------------------------------------------
// Notifications
// ---------------------------------------------------------------------------

/// Insert deduplicates per (user, key); read marks keep the first `read_at`.
pub async fn notifications_insert_dedup_and_read(repos: &Repos) {
    let user = seed_user(repos, "User", Role::Customer).await;
    let other = seed_user(repos, "Other", Role::Customer).await;
    let store = &repos.notifications;
    let n1 = fixtures::notification(user.id, "k1", at(1));
    let n2 = fixtures::notification(user.id, "k2", at(2));
    let n3 = fixtures::notification(user.id, "k3", at(3));
    for n in [&n1, &n2, &n3] {
        assert!(store.insert_notification(n).await.expect("insert"));
    }
    let dup = fixtures::notification(user.id, "k1", at(4));
    assert!(
        !store.insert_notification(&dup).await.expect("insert"),
        "deduplicated"
    );
    let theirs = fixtures::notification(other.id, "k1", at(4));
    assert!(
        store.insert_notification(&theirs).await.expect("insert"),
        "per user"
    );

    let list = |user: UserId, unread: bool| async move {
        store
            .notifications(user, unread, PageRequest::first(50))
            .await
            .expect("notifications")
            .items
    };
    assert_eq!(
        list(user.id, false).await,
        vec![n3.clone(), n2.clone(), n1.clone()]
    );

    let read = store
        .mark_read(user.id, n2.id, at(10))
        .await
        .expect("mark read");
    assert_eq!(read.map(|n| (n.id, n.read_at)), Some((n2.id, Some(at(10)))));
    let again = store
        .mark_read(user.id, n2.id, at(20))
        .await
        .expect("mark read");
    assert_eq!(
        again.and_then(|n| n.read_at),
        Some(at(10)),
        "keeps the first read_at"
    );
    assert_eq!(
        store
            .mark_read(other.id, n1.id, at(10))
            .await
            .expect("mark read"),
        None
    );
    assert_eq!(
        store
            .mark_read(user.id, NotificationId::new(), at(10))
            .await
            .expect("mark read"),
        None
    );
    let unread: Vec<NotificationId> = list(user.id, true).await.iter().map(|n| n.id).collect();
    assert_eq!(unread, vec![n3.id, n1.id]);

    assert_eq!(
        store
            .mark_all_read(user.id, at(30))
            .await
            .expect("mark all"),
        2
    );
    assert!(list(user.id, true).await.is_empty());
    let read_at: Vec<Option<Timestamp>> = list(user.id, false)
        .await
        .iter()
        .map(|n| n.read_at)
        .collect();
    assert_eq!(read_at, vec![Some(at(30)), Some(at(10)), Some(at(30))]);
    assert_eq!(
        store
            .mark_all_read(user.id, at(40))
            .await
            .expect("mark all"),
        0
    );
    assert_eq!(list(other.id, true).await.len(), 1, "other users untouched");
}

/// Notifications page newest first, all or unread only.
pub async fn notifications_paginate(repos: &Repos) {
    let user = seed_user(repos, "User", Role::Customer).await;
    let store = &repos.notifications;
    let mut unread = BTreeSet::new();
    for i in 0..23 {
        let n = fixtures::notification(user.id, &format!("k{i}"), at(i / 2));
        assert!(store.insert_notification(&n).await.expect("insert"));
        if i % 3 == 0 {
            store
                .mark_read(user.id, n.id, at(100))
                .await
                .expect("mark read");
        } else {
            unread.insert(n.id);
        }
    }
    let all = all_pages!(5, |page| store.notifications(user.id, false, page));
    assert_eq!(all.len(), 23);
    let keys: Vec<Cursor> = all.iter().map(|n| n.cursor()).collect();
    assert_newest_first(&keys, "notifications");
    let listed = all_pages!(4, |page| store.notifications(user.id, true, page));
    assert_eq!(listed.iter().map(|n| n.id).collect::<BTreeSet<_>>(), unread);
    let keys: Vec<Cursor> = listed.iter().map(|n| n.cursor()).collect();
    assert_newest_first(&keys, "unread notifications");
}

/// A fan-out of 2,500 followers in batches of 1,000 notifies each exactly once;
/// batches resume from their cursor and re-running one inserts nothing.
pub async fn fan_out_batches(repos: &Repos) {
    let creator = seed_user(repos, "Star", Role::Creator).await;
    let mut followers = Vec::new();
    for i in 0..2_500 {
        let fan = fixtures::user(&format!("fan{i}"), Role::Customer);
        repos.users.insert_user(&fan).await.expect("insert user");
        repos
            .users
            .follow(fan.id, creator.id, at(i), &[])
            .await
            .expect("follow");
        followers.push(fan.id);
    }
    let bystander = seed_user(repos, "Bystander", Role::Customer).await;
    let dedup_key = format!("drop-live:{}", Uuid::new_v4());
    // The newest follower (first in keyset order) already has the notification.
    let newest = followers[2_499];
    let mut early = fixtures::notification(newest, &dedup_key, at(4_000));
    early.kind = NotificationKind::DropLive;
    assert!(repos
        .notifications
        .insert_notification(&early)
        .await
        .expect("insert"));

    let batch = FanOutBatch {
        creator_id: creator.id,
        kind: NotificationKind::DropLive,
        payload: json!({ "drop": "d" }),
        dedup_key: dedup_key.clone(),
        after: None,
        limit: 1_000,
        at: at(5_000),
    };
    let fan_out = |after: Option<Cursor>| {
        let batch = FanOutBatch {
            after,
            ..batch.clone()
        };
        async move { repos.notifications.fan_out(&batch).await.expect("fan out") }
    };
    let p1 = fan_out(None).await;
    assert_eq!((p1.scanned, p1.inserted), (1_000, 999));
    assert!(p1.next.is_some());
    let rerun = fan_out(None).await;
    assert_eq!(
        (rerun.scanned, rerun.inserted),
        (1_000, 0),
        "re-running inserts nothing"
    );
    assert_eq!(rerun.next, p1.next);
    let p2 = fan_out(p1.next).await;
    assert_eq!((p2.scanned, p2.inserted), (1_000, 1_000));
    let p3 = fan_out(p2.next).await;
    assert_eq!((p3.scanned, p3.inserted), (500, 500));
    assert_eq!(p3.next, None, "every follower visited");
    let rerun = fan_out(p2.next).await;
    assert_eq!((rerun.scanned, rerun.inserted, rerun.next), (500, 0, None));

    for fan in &followers {
        let got = repos
            .notifications
            .notifications(*fan, false, PageRequest::first(10))
            .await
            .expect("notifications");
        assert_eq!(got.items.len(), 1, "follower {fan} notified exactly once");
        assert_eq!(got.items[0].dedup_key, dedup_key);
        if *fan != newest {
            assert_eq!(got.items[0].created_at, at(5_000));
            assert_eq!(got.items[0].payload, json!({ "drop": "d" }));
            assert_eq!(got.items[0].read_at, None);
        }
    }
    let none = repos
        .notifications
        .notifications(bystander.id, false, PageRequest::first(10))
        .await
        .expect("notifications");
    assert!(none.items.is_empty(), "only followers are notified");

    let lonely = seed_user(repos, "Lonely", Role::Creator).await;
    let empty = repos
        .notifications
        .fan_out(&FanOutBatch {
            creator_id: lonely.id,
            ..batch.clone()
        })
        .await
        .expect("fan out");
    assert_eq!((empty.scanned, empty.inserted, empty.next), (0, 0, None));
}

// ---------------------------------------------------------------------------
// Outbox
// ---------------------------------------------------------------------------

/// Pending events come in append order with increasing `seq`; published ones never
/// come back; the backlog counts what waits.
pub async fn outbox_pending_in_order(repos: &Repos) {
    let outbox = &repos.outbox;
    assert_eq!(
        outbox.backlog().await.expect("backlog"),
        0,
        "a fresh store has no events"
    );
    let creator = seed_user(repos, "Maker", Role::Creator).await;
    let fan = seed_user(repos, "Fan", Role::Customer).await;
    let mut appended = Vec::new();
    for i in 0..5 {
        let p = fixtures::product(creator.id, &format!("P{i}"), "d", at(i));
        let created = Event::product(EventType::ProductCreated, &p, at(i));
        let extra = Event::product(EventType::ProductUpdated, &p, at(i));
        appended.push(created.id);
        appended.push(extra.id);
        repos
            .products
            .insert_product(&p, &[created, extra])
            .await
            .expect("insert product");
    }
    let follow = follow_event(fan.id, creator.id, at(9));
    appended.push(follow.id);
    repos
        .users
        .follow(fan.id, creator.id, at(9), &[follow])
        .await
        .expect("follow");

    assert_eq!(outbox.backlog().await.expect("backlog"), 11);
    let all = outbox.pending(100).await.expect("pending");
    assert_eq!(all.iter().map(|r| r.event.id).collect::<Vec<_>>(), appended);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "seq increases");
    let head = outbox.pending(3).await.expect("pending");
    assert_eq!(head, all[..3].to_vec());

    let seqs: Vec<i64> = head.iter().map(|r| r.seq).collect();
    outbox.mark_published(&seqs).await.expect("mark published");
    assert_eq!(outbox.backlog().await.expect("backlog"), 8);
    let rest = outbox.pending(100).await.expect("pending");
    assert_eq!(rest, all[3..].to_vec());
    outbox
        .mark_published(&seqs)
        .await
        .expect("marking twice is harmless");
    assert_eq!(outbox.backlog().await.expect("backlog"), 8);

    let seqs: Vec<i64> = rest.iter().map(|r| r.seq).collect();
    outbox.mark_published(&seqs).await.expect("mark published");
    assert_eq!(outbox.backlog().await.expect("backlog"), 0);
    assert!(outbox.pending(100).await.expect("pending").is_empty());
}

/// `wait_for_append` returns soon after a write appends, and after its timeout
/// when nothing happens.
pub async fn outbox_wait_for_append_wakes(repos: &Repos) {
    let creator = seed_user(repos, "Maker", Role::Creator).await;
    // Absorb any wake-up left over from earlier writes.
    repos
        .outbox
        .wait_for_append(Duration::from_millis(20))
        .await;

    let outbox = repos.outbox.clone();
    let waiter = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        outbox.wait_for_append(Duration::from_secs(60)).await;
        start.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let p = fixtures::product(creator.id, "P", "d", T0);
    let event = Event::product(EventType::ProductCreated, &p, T0);
    repos
        .products
        .insert_product(&p, &[event])
        .await
        .expect("insert product");
    let waited = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("wait_for_append must wake on an append")
        .expect("task");
    assert!(waited < Duration::from_secs(10));

    let quiet = tokio::time::timeout(
        Duration::from_secs(10),
        repos.outbox.wait_for_append(Duration::from_millis(200)),
    )
    .await;
    assert!(
        quiet.is_ok(),
        "wait_for_append must return after its timeout"
    );
}

mod semantics;
pub use semantics::*;
