//! One semantics for every store where databases tend to differ: text the services
//! refuse before a store sees it, case folding, the time range and precision kept,
//! stock overflow, and the order (with its tie-break) of the scheduler's and
//! sweeper's batches.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::TimeDelta;
use uuid::Uuid;

use super::{fetched, live_drop, placed, seed_drop, seed_product, seed_user, stock_of};
use crate::clock::{ManualClock, EARLIEST, LATEST};
use crate::error::StoreError;
use crate::id::UserId;
use crate::model::{Adjustment, DropState, ProductFilter, Role, User};
use crate::page::{Cursor, PageRequest};
use crate::ports::{Cache, CacheError, MockEventBus};
use crate::service::{
    Livedrop, NewDrop, NewProduct, Ports, ProductPatch, Registration, StockAdjustment,
};
use crate::testing::fixtures::{self, at, T0};
use crate::testing::Repos;
use crate::text::fold_case;

/// A cache that never holds anything, so every read the services make reaches the store.
struct Uncached;

#[async_trait]
impl Cache for Uncached {
    async fn get(&self, _key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(None)
    }
    async fn fence(&self, _key: &str) -> Result<u64, CacheError> {
        Ok(0)
    }
    async fn set(
        &self,
        _: &str,
        _: &[u8],
        _: Duration,
        _: Option<u64>,
    ) -> Result<bool, CacheError> {
        Ok(false)
    }
    async fn invalidate(&self, _keys: &[String]) -> Result<u64, CacheError> {
        Ok(0)
    }
    async fn invalidate_prefix(&self, _prefix: &str) -> Result<u64, CacheError> {
        Ok(0)
    }
}

/// The services over `repos`, at [`T0`], with no cache and a bus nothing may use.
fn services(repos: &Repos) -> Livedrop {
    let ports = Ports {
        users: repos.users.clone(),
        products: repos.products.clone(),
        drops: repos.drops.clone(),
        inventory: repos.inventory.clone(),
        orders: repos.orders.clone(),
        waitlists: repos.waitlists.clone(),
        draws: repos.draws.clone(),
        queues: repos.queues.clone(),
        idempotency: repos.idempotency.clone(),
        notifications: repos.notifications.clone(),
        outbox: repos.outbox.clone(),
        cache: Arc::new(Uncached),
        bus: Arc::new(MockEventBus::new()),
        clock: Arc::new(ManualClock::new(T0)),
        gate: Arc::new(crate::ports::OpenGate),
    };
    Livedrop::new(ports, crate::service::Config::default())
}

fn assert_invalid<T: std::fmt::Debug>(result: crate::Result<T>, field: &str, what: &str) {
    match result {
        Err(crate::Error::InvalidInput { field: Some(f), .. }) if f == field => {}
        other => panic!("{what}: expected invalid_input on {field}, got {other:?}"),
    }
}

/// NUL and other control characters in text are refused with `invalid_input` (naming
/// the field) by the services, so no store ever holds them — PostgreSQL could not keep
/// a NUL at all. Free text (a description, a reason) keeps tabs and line breaks,
/// unchanged through the store.
pub async fn text_with_control_characters_is_refused(repos: &Repos) {
    let app = services(repos);
    let creator = seed_user(repos, "Maker", Role::Creator).await;
    let actor = creator.actor();
    let register = |email: &str, name: &str| Registration {
        email: email.to_owned(),
        password: "correct horse battery".to_owned(),
        display_name: name.to_owned(),
        role: Role::Customer,
    };
    let email = format!("nul-{}@example.com", Uuid::new_v4().simple());
    assert_invalid(
        app.register(register(&email, "Ada\0")).await,
        "display_name",
        "NUL in a name",
    );
    assert_invalid(
        app.register(register(&email, "Ada\u{1b}[2J")).await,
        "display_name",
        "escape in a name",
    );
    assert_invalid(
        app.register(register(&format!("nul\0{email}"), "Ada"))
            .await,
        "email",
        "NUL in an email",
    );
    assert_eq!(
        repos.users.user_by_email(&email).await.expect("lookup"),
        None,
        "a refused registration stores nothing"
    );
    assert_invalid(
        app.authenticate("ada\0@example.com", "whatever1").await,
        "email",
        "NUL in a login",
    );

    let new = |title: &str, description: &str, image: Option<&str>| NewProduct {
        title: title.to_owned(),
        description: description.to_owned(),
        price_cents: 100,
        currency: "EUR".to_owned(),
        image_url: image.map(str::to_owned),
    };
    for (product, field) in [
        (new("Tee\0", "ok", None), "title"),
        (new("Tee\nshirt", "ok", None), "title"),
        (new("Tee\u{85}", "ok", None), "title"),
        (new("Tee", "cotton\0", None), "description"),
        (new("Tee", "bell\u{7}", None), "description"),
        (
            new("Tee", "ok", Some("https://cdn.example.com/a\0.jpg")),
            "image_url",
        ),
    ] {
        assert_invalid(
            app.create_product(&actor, product.clone()).await,
            field,
            &format!("{product:?}"),
        );
    }
    let listed = repos
        .products
        .list_products(&ProductFilter::default(), PageRequest::first(10))
        .await
        .expect("list");
    assert!(listed.items.is_empty(), "refused products are not stored");

    let multi_line = "line one\r\nline two\tend";
    let product = app
        .create_product(&actor, new("Tee", multi_line, None))
        .await
        .expect("tabs and line breaks are free text");
    let stored = fetched(repos.products.product(product.id)).await;
    assert_eq!(stored.description, multi_line);
    let patch = ProductPatch {
        title: Some("Tee\0".into()),
        ..ProductPatch::default()
    };
    assert_invalid(
        app.update_product(&actor, product.id, patch).await,
        "title",
        "NUL in a patch",
    );
    let stored = fetched(repos.products.product(product.id)).await;
    assert_eq!(
        (stored.title.as_str(), stored.version),
        ("Tee", 1),
        "a refused patch changes nothing"
    );

    assert_invalid(
        app.list_products(
            ProductFilter::default().with_query("tee\0"),
            PageRequest::first(10),
        )
        .await,
        "q",
        "NUL in a search",
    );

    let drop = live_drop(repos, 5, 5).await;
    let adjustment = StockAdjustment {
        delta: 3,
        reason: "recount\0".into(),
        sku: None,
    };
    assert_invalid(
        app.adjust_stock(None, drop.id, adjustment).await,
        "reason",
        "NUL in a reason",
    );
    assert_eq!(
        stock_of(repos, drop.id).await.total,
        5,
        "a refused adjustment moves nothing"
    );
}

/// Emails are unique and found under one folding rule, [`fold_case`] (Unicode lower
/// case as Rust defines it), in every store whatever its collation: `É` folds to
/// `é`, `İ` to `i̇` (so it is not `i`), a final `Σ` to `ς`.
pub async fn emails_fold_case_one_way(repos: &Repos) {
    let tag = Uuid::new_v4().simple().to_string();
    let user = |email: String| User {
        id: UserId::new(),
        email,
        ..fixtures::user("Folded", Role::Customer)
    };
    let elodie = user(format!("élodie-{tag}@example.com"));
    repos.users.insert_user(&elodie).await.expect("insert");
    let found = repos
        .users
        .user_by_email(&format!("ÉLODIE-{tag}@EXAMPLE.COM"))
        .await
        .expect("lookup");
    assert_eq!(found.map(|u| u.id), Some(elodie.id), "É finds é");
    match repos
        .users
        .insert_user(&user(format!("ÉLODIE-{tag}@example.com")))
        .await
    {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("É and é are one email, got {other:?}"),
    }

    let dotted = user(format!("İSTANBUL-{tag}@example.com"));
    repos.users.insert_user(&dotted).await.expect("insert");
    let plain = user(format!("istanbul-{tag}@example.com"));
    repos
        .users
        .insert_user(&plain)
        .await
        .expect("İ folds to i̇, not i: another email");
    let by = |email: String| async move {
        repos
            .users
            .user_by_email(&email)
            .await
            .expect("lookup")
            .map(|u| u.id)
    };
    assert_eq!(by(fold_case(&dotted.email)).await, Some(dotted.id));
    assert_eq!(
        by(format!("ISTANBUL-{tag}@example.com")).await,
        Some(plain.id)
    );

    let sigma = user(format!("ΟΔΥΣΣΕΑΣ-{tag}@example.com"));
    repos.users.insert_user(&sigma).await.expect("insert");
    assert_eq!(by(fold_case(&sigma.email)).await, Some(sigma.id));
    assert_eq!(by(sigma.email.to_lowercase()).await, Some(sigma.id));
}

/// Product search folds title, description and terms with [`fold_case`] in every
/// store: non-ASCII letters match across case, and only as that rule says.
pub async fn search_folds_non_ascii_letters_one_way(repos: &Repos) {
    let creator = seed_user(repos, "Maker", Role::Creator).await;
    let summer = seed_product(repos, &creator, "ÉTÉ hoodie", "Straße edition", at(-30)).await;
    let izmir = seed_product(repos, &creator, "İzmir tee", "ΚΑΛΟΚΑΙΡΙ", at(-20)).await;
    let search = |q: &'static str| async move {
        let filter = ProductFilter {
            creator_id: Some(creator.id),
            ..ProductFilter::default()
        }
        .with_query(q);
        repos
            .products
            .list_products(&filter, PageRequest::first(10))
            .await
            .expect("search")
            .items
            .into_iter()
            .map(|p| p.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(search("été").await, vec![summer.id]);
    assert_eq!(search("ÉtÉ HOODIE").await, vec![summer.id]);
    assert_eq!(search("STRASSE").await, vec![], "ß does not fold to ss");
    assert_eq!(search("straße").await, vec![summer.id]);
    assert_eq!(search("İZMIR").await, vec![izmir.id]);
    assert_eq!(search("izmir").await, vec![], "İ folds to i̇, not i");
    assert_eq!(search("καλοκαιρι").await, vec![izmir.id]);
    assert_eq!(search("tee καλοκαιρι").await, vec![izmir.id]);
}

/// Every store keeps years 1 to 9999 to the microsecond; the services refuse drop
/// times outside (`invalid_input`), and cursors outside do not parse.
pub async fn timestamps_outside_the_storable_range_are_refused(repos: &Repos) {
    let app = services(repos);
    let creator = seed_user(repos, "Maker", Role::Creator).await;
    let product = seed_product(repos, &creator, "Tee", "Cotton", at(-60)).await;
    let new = |starts_at, ends_at| NewDrop {
        product_id: product.id,
        starts_at,
        ends_at,
        total_stock: 3,
        variants: vec![],
        per_user_limit: None,
        allocation: crate::model::Allocation::FirstCome,
        entries_close_at: None,
        waiting_room: None,
    };
    let before = EARLIEST - TimeDelta::days(1);
    let after = LATEST + TimeDelta::days(1);
    assert_invalid(
        app.schedule_drop(&creator.actor(), new(Some(before), at(3600)))
            .await,
        "starts_at",
        "a start before year 1",
    );
    assert_invalid(
        app.schedule_drop(&creator.actor(), new(None, after)).await,
        "ends_at",
        "an end after year 9999",
    );
    let listed = repos
        .drops
        .list_drops(&Default::default(), T0, PageRequest::first(10))
        .await
        .expect("list");
    assert!(listed.items.is_empty(), "refused drops are not stored");
    for cursor in [
        Cursor::new(before, Uuid::nil()).to_string(),
        Cursor::new(after, Uuid::nil()).to_string(),
    ] {
        assert!(cursor.parse::<Cursor>().is_err(), "{cursor} must not parse");
    }

    // The whole range round-trips, at both ends.
    let edge = seed_drop(
        repos,
        &product,
        (EARLIEST, LATEST),
        1,
        1,
        DropState::Scheduled,
        at(-1),
    )
    .await;
    let stored = fetched(repos.drops.drop_by_id(edge.id)).await;
    assert_eq!((stored.starts_at, stored.ends_at), (EARLIEST, LATEST));
    let page = repos
        .drops
        .list_drops(
            &Default::default(),
            T0,
            PageRequest::first(10).after(Some(Cursor::new(LATEST, Uuid::max()))),
        )
        .await
        .expect("a cursor at the end of the range is usable");
    assert_eq!(page.items.len(), 1);
}

/// Every timestamp a store returns is the one it was given, to the microsecond.
pub async fn timestamps_keep_microseconds(repos: &Repos) {
    let odd = |secs: i64, micros: i64| at(secs) + TimeDelta::microseconds(micros);
    let mut creator = fixtures::user("Maker", Role::Creator);
    creator.created_at = odd(-9000, 1);
    repos
        .users
        .insert_user(&creator)
        .await
        .expect("insert user");
    let got = fetched(repos.users.user(creator.id)).await;
    assert_eq!(got.created_at, creator.created_at);

    let product = seed_product(repos, &creator, "Tee", "Cotton", odd(-8000, 999_999)).await;
    let got = fetched(repos.products.product(product.id)).await;
    assert_eq!(
        (got.created_at, got.updated_at),
        (product.created_at, product.updated_at)
    );

    let window = (odd(-600, 123_457), odd(3600, 654_321));
    let drop = seed_drop(
        repos,
        &product,
        window,
        5,
        5,
        DropState::Live,
        odd(-700, 10),
    )
    .await;
    let got = fetched(repos.drops.drop_by_id(drop.id)).await;
    assert_eq!(
        (got.starts_at, got.ends_at, got.created_at),
        (drop.starts_at, drop.ends_at, drop.created_at)
    );

    let now = odd(0, 424_242);
    let order = fixtures::order(UserId::new(), &drop, 1, "micro", now);
    let order = placed(repos, &order, now).await;
    let got = fetched(repos.orders.order(order.id)).await;
    assert_eq!(
        (got.created_at, got.updated_at, got.reserved_until),
        (now, now, now + fixtures::HOLD)
    );
}

/// A restock that would take a drop's total past `u32::MAX` is a `Conflict` in every
/// store, and moves nothing.
pub async fn restock_past_the_largest_stock_conflicts(repos: &Repos) {
    let drop = live_drop(repos, 10, 10).await;
    let adjust = |delta: i64| Adjustment {
        drop_id: drop.id,
        sku: crate::model::DEFAULT_SKU.to_owned(),
        delta,
        reason: "restock".into(),
        actor_id: None,
        entry_id: Uuid::now_v7(),
        at: at(1),
        hold: fixtures::HOLD,
    };
    let fill = i64::from(u32::MAX) - 10;
    repos
        .inventory
        .adjust(&adjust(fill))
        .await
        .expect("up to the largest stock");
    assert_eq!(stock_of(repos, drop.id).await.total, u32::MAX);
    match repos.inventory.adjust(&adjust(1)).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("a restock past u32::MAX must conflict, got {other:?}"),
    }
    assert_eq!(
        stock_of(repos, drop.id).await.total,
        u32::MAX,
        "nothing moved"
    );
}

/// `due_transitions` and `expire_holds` return their batches in the same order in
/// every store — drops by `(starts_at, id)`, holds by `(reserved_until, id)` — and a
/// short `limit` takes the first of that order.
pub async fn batches_come_in_one_order_with_a_tie_break(repos: &Repos) {
    let creator = seed_user(repos, "Maker", Role::Creator).await;
    let product = seed_product(repos, &creator, "Tee", "Cotton", at(-90_000)).await;
    // Three units each, all created at the same instant: only the window and the
    // state tell them apart.
    let seed = |window, state| seed_drop(repos, &product, window, 3, 3, state, at(-8000));
    // Two live drops due to end; the one ending later started earlier.
    let late_end = seed((at(-7200), at(-1)), DropState::Live).await;
    let early_end = seed((at(-3000), at(-100)), DropState::Live).await;
    // Two scheduled drops due to start at the same instant: the id breaks the tie.
    let mut tied = Vec::new();
    for _ in 0..2 {
        tied.push(seed((at(-3600), at(3600)), DropState::Scheduled).await);
    }
    tied.sort_by_key(|d| d.id.0);
    let due = |limit: u32| async move {
        repos
            .drops
            .due_transitions(T0, limit)
            .await
            .expect("due")
            .into_iter()
            .map(|d| d.id)
            .collect::<Vec<_>>()
    };
    let all = vec![late_end.id, tied[0].id, tied[1].id, early_end.id];
    assert_eq!(due(10).await, all);
    assert_eq!(
        due(1).await,
        vec![late_end.id],
        "a short limit keeps the oldest start"
    );
    assert_eq!(due(2).await, all[..2].to_vec());

    // Holds on two drops, ends tied across drops: by hold end, then order id.
    let a = live_drop(repos, 10, 10).await;
    let b = live_drop(repos, 10, 10).await;
    let mut holds = Vec::new();
    for (i, drop) in [&a, &b, &a, &b, &a].into_iter().enumerate() {
        let placed_at = if i < 4 { at(-500) } else { at(-550) };
        let order = fixtures::order(UserId::new(), drop, 1, &format!("k{i}"), placed_at);
        holds.push(placed(repos, &order, placed_at).await);
    }
    let mut expected: Vec<_> = holds.iter().map(|o| (o.reserved_until, o.id.0)).collect();
    expected.sort();
    let sweep_at = at(1000);
    let first = repos
        .orders
        .expire_holds(sweep_at, 3, fixtures::HOLD)
        .await
        .expect("expire");
    let rest = repos
        .orders
        .expire_holds(sweep_at, 10, fixtures::HOLD)
        .await
        .expect("expire");
    let got: Vec<_> = first
        .iter()
        .chain(&rest)
        .map(|o| (o.reserved_until, o.id.0))
        .collect();
    assert_eq!(first.len(), 3);
    assert_eq!(got, expected, "holds expire by (reserved_until, id)");
}
