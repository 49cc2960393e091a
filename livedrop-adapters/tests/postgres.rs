//! PostgreSQL store tests. Set `LIVEDROP_TEST_DATABASE_URL` (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`) to run them; unset, each test prints why
//! it skips. Each test works in a schema of its own (`TestSchema`), dropped at its end.
//!
//! `cargo test -p livedrop-adapters --features postgres,testing --test postgres`
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use livedrop_adapters::postgres::testing::TestSchema;
use livedrop_adapters::postgres::{PgOptions, PgStore, ReserveStrategy};
use livedrop_core::clock::Timestamp;
use livedrop_core::event::{Event, EventType};
use livedrop_core::id::{DropId, OrderId, UserId};
use livedrop_core::model::{
    self, AdjustOutcome, Adjustment, DropState, FanOutBatch, FanOutShard, NotificationKind, Order,
    OrderStatus, PlaceOutcome, SettleOutcome, Settlement, Stock, User,
};
use livedrop_core::ports::{
    BeginOutcome, DropRepository, IdempotencyStore, InventoryRepository, NotificationRepository,
    OrderRepository, Outbox, UserRepository,
};
use livedrop_core::testing::fixtures;
use livedrop_core::StoreError;
use rand::{Rng, SeedableRng};
use sqlx::Connection;
use uuid::Uuid;

/// A fresh migrated schema of one test, or `None` (with the reason printed) when
/// the environment names no database; dropped with the value.
async fn fresh() -> Option<TestSchema> {
    let db = TestSchema::new("a PostgreSQL store test").await?;
    db.store().await;
    Some(db)
}

/// Another pool (standing in for another process) on the schema, with `strategy`.
async fn pool(db: &TestSchema, strategy: ReserveStrategy) -> PgStore {
    db.connect(PgOptions {
        max_connections: 5,
        strategy,
        ..db.options()
    })
    .await
}

/// Group reserve with two batches of a drop in flight at once.
fn two_in_flight() -> ReserveStrategy {
    ReserveStrategy::Group {
        max_batch: 256,
        in_flight: 2,
    }
}

/// Two pools on the schema (two processes), deciding orders with `strategies`.
async fn pools(db: &TestSchema, strategies: [ReserveStrategy; 2]) -> [PgStore; 2] {
    let [a, b] = strategies;
    [pool(db, a).await, pool(db, b).await]
}

fn t0() -> Timestamp {
    fixtures::T0
}

fn live_drop(per_user_limit: u32) -> model::Drop {
    fixtures::live_drop(per_user_limit)
}

async fn new_drop(store: &PgStore, stock: u32, per_user_limit: u32) -> model::Drop {
    let drop = live_drop(per_user_limit);
    let events = [Event::drop(EventType::DropScheduled, &drop, t0())];
    store.insert_drop(&drop, &[stock], &events).await.unwrap();
    drop
}

fn order(user: UserId, drop: &model::Drop, quantity: u32, key: &str) -> Order {
    fixtures::order(user, drop, quantity, key, t0())
}

/// The stock row read with plain SQL, and whether the orders account for it.
async fn audit(db: &TestSchema, drop: DropId) -> (Stock, bool) {
    let mut conn = db.conn().await;
    let (total, available, reserved, sold): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT total_stock, available, reserved, sold FROM inventory WHERE drop_id = $1",
    )
    .bind(drop.0)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let (held_reserved, held_sold): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(quantity) FILTER (WHERE status = 'reserved'), 0)::int8, \
                COALESCE(SUM(quantity) FILTER (WHERE status = 'confirmed'), 0)::int8 \
         FROM orders WHERE drop_id = $1",
    )
    .bind(drop.0)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let stock = Stock {
        total: total as u32,
        available: available as u32,
        reserved: reserved as u32,
        sold: sold as u32,
    };
    let accounted =
        stock.is_consistent() && available >= 0 && held_reserved == reserved && held_sold == sold;
    (stock, accounted)
}

fn count_placed(outcomes: &[PlaceOutcome]) -> usize {
    outcomes
        .iter()
        .filter(|o| matches!(o, PlaceOutcome::Placed(_)))
        .count()
}

/// `buyers` tasks each order one unit of a drop with `stock` units, spread over
/// `stores`; every order is placed or refused out of stock, and exactly `stock` win.
async fn race(db: &TestSchema, stores: &[PgStore], stock: u32, buyers: usize) {
    let drop = new_drop(&stores[0], stock, 5).await;
    let mut tasks = Vec::new();
    for i in 0..buyers {
        let store = stores[i % stores.len()].clone();
        let o = order(UserId::new(), &drop, 1, &format!("k{i}"));
        tasks.push(tokio::spawn(
            async move { store.place_order(&o, t0()).await },
        ));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap().unwrap());
    }
    assert_eq!(count_placed(&outcomes), stock as usize);
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, PlaceOutcome::Placed(_) | PlaceOutcome::OutOfStock { .. })));
    let ids: HashSet<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            PlaceOutcome::Placed(o) => Some(o.id),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), stock as usize, "no duplicate orders");
    let (after, accounted) = audit(db, drop.id).await;
    assert!(accounted);
    assert_eq!((after.available, after.reserved), (0, stock));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row_lock_race_reserves_exactly_the_stock() {
    let Some(db) = fresh().await else {
        return;
    };
    let store = pool(&db, ReserveStrategy::RowLock).await;
    race(&db, &[store], 40, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_race_reserves_exactly_the_stock() {
    let Some(db) = fresh().await else {
        return;
    };
    let store = pool(&db, ReserveStrategy::group()).await;
    race(&db, &[store], 40, 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_with_both_strategies_never_oversell() {
    let Some(db) = fresh().await else {
        return;
    };
    let a = pool(&db, ReserveStrategy::RowLock).await;
    let b = pool(
        &db,
        ReserveStrategy::Group {
            max_batch: 16,
            in_flight: 2,
        },
    )
    .await;
    let c = pool(&db, ReserveStrategy::group()).await;
    race(&db, &[a, b, c], 75, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_user_limit_holds_across_two_processes() {
    let Some(db) = fresh().await else {
        return;
    };
    for (sa, sb) in [
        (ReserveStrategy::RowLock, ReserveStrategy::RowLock),
        (ReserveStrategy::group(), ReserveStrategy::RowLock),
        (ReserveStrategy::group(), two_in_flight()),
    ] {
        let stores = pools(&db, [sa, sb]).await;
        let drop = new_drop(&stores[0], 100, 3).await;
        let user = UserId::new();
        let mut tasks = Vec::new();
        for i in 0..40 {
            let store = stores[i % 2].clone();
            let o = order(user, &drop, 1, &format!("limit-{i}"));
            tasks.push(tokio::spawn(
                async move { store.place_order(&o, t0()).await },
            ));
        }
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.unwrap().unwrap());
        }
        assert_eq!(count_placed(&outcomes), 3, "{sa:?}/{sb:?}");
        assert!(outcomes.iter().all(|o| matches!(
            o,
            PlaceOutcome::Placed(_) | PlaceOutcome::LimitExceeded { limit: 3, .. }
        )));
        let (stock, accounted) = audit(&db, drop.id).await;
        assert!(accounted);
        assert_eq!(stock.reserved, 3);
    }
}

/// A live drop selling `variants` (sku, units), with `per_user_limit`.
async fn new_sized_drop(
    store: &PgStore,
    variants: &[(&str, u32)],
    per_user_limit: u32,
) -> model::Drop {
    let skus: Vec<&str> = variants.iter().map(|(sku, _)| *sku).collect();
    let drop = fixtures::with_variants(live_drop(per_user_limit), &skus);
    let stock: Vec<u32> = variants.iter().map(|(_, n)| *n).collect();
    let events = [Event::drop(EventType::DropScheduled, &drop, t0())];
    store.insert_drop(&drop, &stock, &events).await.unwrap();
    drop
}

fn sized_order(user: UserId, drop: &model::Drop, sku: &str, key: &str) -> Order {
    Order {
        sku: sku.to_owned(),
        ..order(user, drop, 1, key)
    }
}

/// Each variant row read with plain SQL, by sku, and whether the orders of that
/// variant account for it (reserved and sold) and the CHECKed invariant holds.
async fn audit_variants(db: &TestSchema, drop: DropId) -> Vec<(String, Stock, bool)> {
    let mut conn = db.conn().await;
    let rows: Vec<(String, i64, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT i.sku, i.total_stock, i.available, i.reserved, i.sold, \
                COALESCE(SUM(o.quantity) FILTER (WHERE o.status = 'reserved'), 0)::int8, \
                COALESCE(SUM(o.quantity) FILTER (WHERE o.status = 'confirmed'), 0)::int8 \
         FROM inventory i LEFT JOIN orders o ON o.drop_id = i.drop_id AND o.sku = i.sku \
         WHERE i.drop_id = $1 GROUP BY i.sku, i.total_stock, i.available, i.reserved, i.sold, \
                                       i.position \
         ORDER BY i.position",
    )
    .bind(drop.0)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    rows.into_iter()
        .map(
            |(sku, total, available, reserved, sold, held_reserved, held_sold)| {
                let stock = Stock {
                    total: total as u32,
                    available: available as u32,
                    reserved: reserved as u32,
                    sold: sold as u32,
                };
                let accounted = stock.is_consistent()
                    && available >= 0
                    && held_reserved == reserved
                    && held_sold == sold;
                (sku, stock, accounted)
            },
        )
        .collect()
}

/// One buyer with a limit of 1 orders two different sizes at once, one order through
/// each of two processes (two pools on one schema), round after round, with every
/// pair of strategies: exactly one of the two is placed each round, and no buyer
/// ever holds more than one unit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_buyer_across_sizes_and_processes_never_passes_the_limit() {
    let Some(db) = fresh().await else {
        return;
    };
    for strategies in [
        [ReserveStrategy::RowLock, ReserveStrategy::RowLock],
        [ReserveStrategy::group(), ReserveStrategy::RowLock],
        [ReserveStrategy::group(), two_in_flight()],
    ] {
        let [a, b] = pools(&db, strategies).await;
        let drop = new_sized_drop(&a, &[("s", 100), ("m", 100)], 1).await;
        for round in 0..40 {
            let buyer = UserId::new();
            let tasks = [(a.clone(), "s"), (b.clone(), "m")].map(|(store, sku)| {
                let o = sized_order(buyer, &drop, sku, &format!("{sku}-{round}"));
                tokio::spawn(async move { store.place_order(&o, t0()).await })
            });
            let mut outcomes = Vec::new();
            for t in tasks {
                outcomes.push(t.await.unwrap().unwrap());
            }
            assert_eq!(count_placed(&outcomes), 1, "{strategies:?} round {round}");
            assert!(
                outcomes
                    .iter()
                    .any(|o| matches!(o, PlaceOutcome::LimitExceeded { limit: 1, held: 1 })),
                "{strategies:?} round {round}: {outcomes:?}"
            );
        }
        let mut conn = db.conn().await;
        let over: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT user_id FROM orders \
             WHERE drop_id = $1 AND status IN ('reserved', 'confirmed') \
             GROUP BY user_id HAVING SUM(quantity) > 1) AS t",
        )
        .bind(drop.id.0)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(over, 0, "{strategies:?}: a buyer passed the limit");
        for (sku, stock, accounted) in audit_variants(&db, drop.id).await {
            assert!(accounted, "{sku}: {stock:?}");
            assert_eq!(stock.total, 100);
        }
    }
}

/// Many buyers race over ten sizes of 8 units from two processes with different
/// strategies: every size sells exactly its stock, never more, and every variant
/// row keeps its invariant and matches its orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn buyers_over_ten_sizes_in_two_processes_never_oversell() {
    let Some(db) = fresh().await else {
        return;
    };
    let [a, b] = pools(&db, [ReserveStrategy::RowLock, ReserveStrategy::group()]).await;
    let skus: Vec<String> = (0..10).map(|i| format!("size-{i}")).collect();
    let spec: Vec<(&str, u32)> = skus.iter().map(|s| (s.as_str(), 8)).collect();
    let drop = new_sized_drop(&a, &spec, 2).await;
    let mut tasks = Vec::new();
    for i in 0..300 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let o = sized_order(UserId::new(), &drop, &skus[(i / 2) % 10], "k");
        tasks.push(tokio::spawn(
            async move { store.place_order(&o, t0()).await },
        ));
    }
    let mut sold: std::collections::HashMap<String, u32> = Default::default();
    for t in tasks {
        match t.await.unwrap().unwrap() {
            PlaceOutcome::Placed(o) => *sold.entry(o.sku).or_default() += 1,
            PlaceOutcome::OutOfStock { available: 0 } => {}
            other => panic!("unexpected outcome: {other:?}"),
        }
    }
    for sku in &skus {
        assert_eq!(sold.get(sku), Some(&8), "{sku} sold exactly its stock");
    }
    let audited = audit_variants(&db, drop.id).await;
    assert_eq!(audited.len(), 10);
    for (sku, stock, accounted) in audited {
        assert!(accounted, "{sku}: {stock:?}");
        assert_eq!(
            stock,
            Stock {
                total: 8,
                available: 0,
                reserved: 8,
                sold: 0
            },
            "{sku}"
        );
    }
}

/// Units come back to a size through two processes at once (cancels and restocks
/// through both) while its waiting buyers, through both too, order another size:
/// each waiting buyer is served at most once and never past the limit of 1 (an
/// entry whose buyer got the other size first is skipped), no unit is lost or
/// offered twice, and no one is left waiting while units are available.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waitlist_hand_off_across_two_processes_keeps_every_guarantee() {
    use livedrop_core::model::{JoinOutcome, WaitlistJoin};
    use livedrop_core::ports::WaitlistRepository;

    let Some(db) = fresh().await else {
        return;
    };
    let [a, b] = pools(&db, [ReserveStrategy::RowLock, ReserveStrategy::group()]).await;
    let drop = new_sized_drop(&a, &[("s", 20), ("m", 10)], 1).await;
    let mut holds = Vec::new();
    for i in 0..20 {
        let o = sized_order(UserId::new(), &drop, "s", &format!("h{i}"));
        let PlaceOutcome::Placed(o) = a.place_order(&o, t0()).await.unwrap() else {
            panic!("the hold is placed");
        };
        holds.push(o);
    }
    let mut waiting = Vec::new();
    for i in 0..25 {
        let user = UserId::new();
        let store = if i % 2 == 0 { &a } else { &b };
        let join = WaitlistJoin {
            drop_id: drop.id,
            sku: "s".into(),
            user_id: user,
            quantity: 1,
            at: fixtures::at(1),
        };
        assert!(matches!(
            store.join_waitlist(&join).await.unwrap(),
            JoinOutcome::Joined(_)
        ));
        waiting.push(user);
    }
    let now = fixtures::at(10);
    let mut tasks = Vec::new();
    for (i, hold) in holds.iter().enumerate() {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let id = hold.id;
        tasks.push(tokio::spawn(async move {
            let out = store
                .settle_order(id, Settlement::Cancel, now, fixtures::HOLD)
                .await
                .unwrap();
            assert!(matches!(out, SettleOutcome::Settled(_)), "{out:?}");
        }));
    }
    for i in 0..3 {
        let store = if i % 2 == 0 { b.clone() } else { a.clone() };
        let restock = Adjustment {
            drop_id: drop.id,
            sku: "s".into(),
            delta: 2,
            reason: "found more".into(),
            actor_id: None,
            entry_id: Uuid::now_v7(),
            at: now,
            hold: fixtures::HOLD,
        };
        tasks.push(tokio::spawn(async move {
            let out = store.adjust(&restock).await.unwrap();
            assert!(matches!(out, AdjustOutcome::Applied(_)), "{out:?}");
        }));
    }
    for (i, user) in waiting.iter().take(10).enumerate() {
        let store = if i % 2 == 0 { b.clone() } else { a.clone() };
        let o = sized_order(*user, &drop, "m", "m");
        tasks.push(tokio::spawn(async move {
            let out = store.place_order(&o, now).await.unwrap();
            assert!(
                matches!(
                    out,
                    PlaceOutcome::Placed(_) | PlaceOutcome::LimitExceeded { limit: 1, held: 1 }
                ),
                "{out:?}"
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    let mut conn = db.conn().await;
    let over: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT user_id FROM orders \
         WHERE drop_id = $1 AND status IN ('reserved', 'confirmed') \
         GROUP BY user_id HAVING SUM(quantity) > 1) AS t",
    )
    .bind(drop.id.0)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(over, 0, "a buyer passed the limit");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM waitlist WHERE drop_id = $1")
        .bind(drop.id.0)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        left, 0,
        "26 units came back for 25 entries: the line is served"
    );
    let offered: Vec<Uuid> = sqlx::query_scalar(
        "SELECT user_id FROM orders WHERE drop_id = $1 AND fingerprint = 'waitlist'",
    )
    .bind(drop.id.0)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let distinct: HashSet<Uuid> = offered.iter().copied().collect();
    assert_eq!(distinct.len(), offered.len(), "each buyer served once");
    assert!(distinct.iter().all(|u| waiting.contains(&UserId(*u))));
    assert!(
        offered.len() >= 15,
        "the 15 waiting buyers who ordered nothing else"
    );
    let audited = audit_variants(&db, drop.id).await;
    for (sku, stock, accounted) in &audited {
        assert!(accounted, "{sku}: {stock:?}");
    }
    let s = audited[0].1;
    assert_eq!(
        (s.total, s.reserved, s.available),
        (26, offered.len() as u32, 26 - offered.len() as u32),
        "every unit that came back is offered or available, once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_key_from_two_processes_places_once() {
    let Some(db) = fresh().await else {
        return;
    };
    let stores = pools(&db, [ReserveStrategy::group(), ReserveStrategy::RowLock]).await;
    let drop = new_drop(&stores[0], 100, 10).await;
    let user = UserId::new();
    let mut tasks = Vec::new();
    for i in 0..30 {
        let store = stores[i % 2].clone();
        let o = order(user, &drop, 2, "the-key");
        tasks.push(tokio::spawn(
            async move { store.place_order(&o, t0()).await },
        ));
    }
    let mut placed = Vec::new();
    let mut duplicates = Vec::new();
    for t in tasks {
        match t.await.unwrap().unwrap() {
            PlaceOutcome::Placed(o) => placed.push(o.id),
            PlaceOutcome::Duplicate(o) => duplicates.push(o.id),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(placed.len(), 1);
    assert!(duplicates.iter().all(|id| *id == placed[0]));
    let (stock, accounted) = audit(&db, drop.id).await;
    assert!(accounted);
    assert_eq!(stock.reserved, 2);
}

/// An outcome reduced to what an ordering decides: the kind, the order it names
/// (id, quantity) and its figures (available, or limit and held).
type Summary = (&'static str, Option<(OrderId, u32)>, Option<(u32, u32)>);

/// The [`Summary`] of an outcome.
fn summary(o: &PlaceOutcome) -> Summary {
    match o {
        PlaceOutcome::Placed(o) => ("placed", Some((o.id, o.quantity)), None),
        PlaceOutcome::Duplicate(o) => ("duplicate", Some((o.id, o.quantity)), None),
        PlaceOutcome::OutOfStock { available } => ("out_of_stock", None, Some((*available, 0))),
        PlaceOutcome::NotLive => ("not_live", None, None),
        PlaceOutcome::LimitExceeded { limit, held } => ("limit", None, Some((*limit, *held))),
        PlaceOutcome::DropNotFound => ("not_found", None, None),
        PlaceOutcome::UnknownVariant => ("unknown_variant", None, None),
        PlaceOutcome::Replayed(_) => ("replayed", None, None),
        PlaceOutcome::KeyReused => ("key_reused", None, None),
        PlaceOutcome::KeyInFlight => ("key_in_flight", None, None),
    }
}

/// Every ordering of `0..n`.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut all = Vec::new();
    for p in permutations(n - 1) {
        for at in 0..=p.len() {
            let mut q = p.clone();
            q.insert(at, n - 1);
            all.push(q);
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_decides_a_batch_like_the_row_lock() {
    let Some(db) = fresh().await else {
        return;
    };
    for strategy in [
        ReserveStrategy::RowLock,
        ReserveStrategy::group(),
        two_in_flight(),
    ] {
        let store = pool(&db, strategy).await;
        let drop = new_drop(&store, 5, 2).await;
        let alice = UserId::new();
        let bob = UserId::new();
        let batch = [
            order(alice, &drop, 2, "a1"),
            order(alice, &drop, 1, "a2"),
            order(alice, &drop, 1, "a1"),
            order(bob, &drop, 2, "b1"),
            order(bob, &drop, 2, "b2"),
        ];
        let outcomes = futures::future::join_all(batch.clone().map(|o| {
            let store = store.clone();
            async move { store.place_order(&o, t0()).await.unwrap() }
        }))
        .await;
        // The batch is decided as if its orders came one at a time in some order: the
        // outcomes are those of the one-at-a-time model for one of the orderings.
        let got: Vec<_> = outcomes.iter().map(summary).collect();
        let orderings = permutations(batch.len());
        let matching = orderings.iter().find_map(|perm| {
            let mut m = StockModel::new(drop.clone(), 5);
            let mut want = vec![None; batch.len()];
            for &i in perm.iter() {
                want[i] = Some(summary(&m.place(&batch[i], t0())));
            }
            (want.into_iter().map(Option::unwrap).collect::<Vec<_>>() == got).then_some(m.stock)
        });
        let Some(want) = matching else {
            panic!("{strategy:?}: {got:?} is no one-at-a-time ordering's outcome");
        };
        // The stock that ordering leaves: bob 2, alice 2 (a1 first) or 1 (a2 first,
        // then a1's two units pass her limit).
        let (stock, accounted) = audit(&db, drop.id).await;
        assert!(accounted, "{strategy:?}");
        assert_eq!(stock.reserved, want.reserved, "{strategy:?}: {got:?}");
        assert!([3, 4].contains(&stock.reserved), "{strategy:?}: {got:?}");
        let missing = DropId::new();
        let mut ghost = order(alice, &drop, 1, "ghost");
        ghost.drop_id = missing;
        assert_eq!(
            store.place_order(&ghost, t0()).await.unwrap(),
            PlaceOutcome::DropNotFound
        );
        let late = order(bob, &drop, 1, "late");
        assert_eq!(
            store
                .place_order(&late, t0() + chrono::Duration::hours(2))
                .await
                .unwrap(),
            PlaceOutcome::NotLive
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raw_sql_cannot_break_the_invariant() {
    let Some(db) = fresh().await else {
        return;
    };
    let store = pool(&db, ReserveStrategy::RowLock).await;
    let drop = new_drop(&store, 10, 5).await;
    let mut conn = db.conn().await;
    for bad in [
        "UPDATE inventory SET available = available + 1 WHERE drop_id = $1",
        "UPDATE inventory SET available = -1, reserved = reserved + 11 WHERE drop_id = $1",
        "UPDATE inventory SET sold = -1, available = available + 1 WHERE drop_id = $1",
    ] {
        let err = sqlx::query(bad)
            .bind(drop.id.0)
            .execute(&mut conn)
            .await
            .unwrap_err();
        let code = err.as_database_error().and_then(|e| e.code()).unwrap();
        assert_eq!(code, "23514", "{bad}");
    }
    assert_eq!(
        store.stock(drop.id).await.unwrap(),
        Some(vec![Stock::new(10)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn errors_are_classified() {
    // Unreachable: no environment needed.
    let err = PgStore::connect(
        "postgres://postgres@127.0.0.1:1/test",
        PgOptions {
            acquire_timeout: Duration::from_secs(2),
            ..PgOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");

    let Some(db) = fresh().await else {
        return;
    };
    let store = pool(&db, ReserveStrategy::RowLock).await;
    let user = User {
        id: UserId::new(),
        email: "ana@example.com".into(),
        display_name: "Ana".into(),
        role: model::Role::Customer,
        password_hash: "x".into(),
        created_at: t0(),
    };
    store.insert_user(&user).await.unwrap();
    let again = User {
        id: UserId::new(),
        email: "ANA@example.com".into(),
        ..user.clone()
    };
    assert!(matches!(
        store.insert_user(&again).await,
        Err(StoreError::Conflict(_))
    ));
    store.close().await;
    assert!(store.user(user.id).await.unwrap_err().is_unavailable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transition_has_one_winner_across_processes() {
    let Some(db) = fresh().await else {
        return;
    };
    let stores = pools(&db, [ReserveStrategy::RowLock, ReserveStrategy::RowLock]).await;
    let mut drop = live_drop(1);
    drop.state = DropState::Scheduled;
    stores[0].insert_drop(&drop, &[5], &[]).await.unwrap();
    let due = stores[0].due_transitions(t0(), 10).await.unwrap();
    assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), vec![drop.id]);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let store = stores[i % 2].clone();
        let d = drop.clone();
        tasks.push(tokio::spawn(async move {
            let events = [Event::drop(EventType::DropStarted, &d, t0())];
            store
                .transition(d.id, &[DropState::Scheduled], DropState::Live, &events)
                .await
                .unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
    let started: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = $1")
        .bind(EventType::DropStarted.as_str())
        .fetch_one(&mut db.conn().await)
        .await
        .unwrap();
    assert_eq!(started, 1, "only the winner appends its events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sweepers_return_each_hold_once() {
    let Some(db) = fresh().await else {
        return;
    };
    let stores = pools(&db, [ReserveStrategy::group(), ReserveStrategy::RowLock]).await;
    let drop = new_drop(&stores[0], 60, 1).await;
    for i in 0..60 {
        let o = order(UserId::new(), &drop, 1, &format!("h{i}"));
        assert!(matches!(
            stores[i % 2].place_order(&o, t0()).await.unwrap(),
            PlaceOutcome::Placed(_)
        ));
    }
    let later = t0() + chrono::Duration::minutes(11);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = stores[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store.expire_holds(later, 7, fixtures::HOLD).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|o| o.id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 60);
    assert_eq!(distinct.len(), 60);
    let (stock, accounted) = audit(&db, drop.id).await;
    assert!(accounted);
    assert_eq!(stock, Stock::new(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_begin_has_one_winner() {
    let Some(db) = fresh().await else {
        return;
    };
    let stores = pools(&db, [ReserveStrategy::RowLock, ReserveStrategy::RowLock]).await;
    let user = UserId::new();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = stores[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            store
                .begin(user, "k", "fp", t0(), Duration::from_secs(30))
                .await
                .unwrap()
        }));
    }
    let mut started = 0;
    for t in tasks {
        match t.await.unwrap() {
            BeginOutcome::Started(_) => started += 1,
            BeginOutcome::InFlight => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(started, 1);
    let s = &stores[0];
    assert_eq!(
        s.begin(user, "k", "other", t0(), Duration::from_secs(30))
            .await
            .unwrap(),
        BeginOutcome::Mismatch
    );
    let later = t0() + chrono::Duration::seconds(31);
    let BeginOutcome::Started(claim) = s
        .begin(user, "k", "fp", later, Duration::from_secs(30))
        .await
        .unwrap()
    else {
        panic!("an expired lease is taken over")
    };
    let body = serde_json::json!({"status": 201});
    assert!(s.complete(user, "k", claim, &body).await.unwrap());
    assert_eq!(
        s.begin(user, "k", "fp", later, Duration::from_secs(30))
            .await
            .unwrap(),
        BeginOutcome::Replay(body)
    );
    assert_eq!(s.purge(later).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_never_returns_rolled_back_events() {
    let Some(db) = fresh().await else {
        return;
    };
    let store = pool(&db, ReserveStrategy::RowLock).await;
    let drop = new_drop(&store, 3, 3).await;
    store.mark_published(&seqs(&store).await).await.unwrap();

    // An append in a transaction still open, then rolled back.
    let mut conn = db.conn().await;
    let mut tx = conn.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO outbox (event_id, event_type, aggregate_id, version, occurred_at, payload) \
         VALUES ($1, 'drop.ended', $2, 1, now(), '{}')",
    )
    .bind(Uuid::new_v4())
    .bind(drop.id.0)
    .execute(&mut *tx)
    .await
    .unwrap();
    assert!(store.pending(100).await.unwrap().is_empty());
    // A committed order meanwhile.
    let placed = store
        .place_order(&order(UserId::new(), &drop, 1, "o"), t0())
        .await
        .unwrap();
    assert!(matches!(placed, PlaceOutcome::Placed(_)));
    tx.rollback().await.unwrap();
    // A failing adjust (past u32 stock) rolls its events back too.
    let huge = Adjustment {
        drop_id: drop.id,
        sku: model::DEFAULT_SKU.into(),
        hold: fixtures::HOLD,
        delta: i64::from(u32::MAX),
        reason: "too much".into(),
        actor_id: None,
        entry_id: Uuid::new_v4(),
        at: t0(),
    };
    assert!(store.adjust(&huge).await.is_err());

    let pending = store.pending(100).await.unwrap();
    let kinds: Vec<_> = pending.iter().map(|r| r.event.kind).collect();
    assert_eq!(kinds, vec![EventType::OrderPlaced, EventType::StockChanged]);
    assert!(pending.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(store.backlog().await.unwrap(), 2);
}

async fn seqs(store: &PgStore) -> Vec<i64> {
    store
        .pending(1_000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_that_dies_leaves_its_batch_to_the_next() {
    let Some(db) = fresh().await else {
        return;
    };
    let a = pool(&db, ReserveStrategy::RowLock).await;
    let b = pool(&db, ReserveStrategy::RowLock).await;
    let drop = new_drop(&a, 3, 3).await;
    a.place_order(&order(UserId::new(), &drop, 1, "o"), t0())
        .await
        .unwrap();
    let first = a.pending(100).await.unwrap();
    assert_eq!(
        first.len(),
        3,
        "drop.scheduled, order.placed, stock.changed"
    );
    assert!(
        b.pending(100).await.unwrap().is_empty(),
        "one relay at a time"
    );
    // `a` dies before mark_published.
    a.close().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        let batch = b.pending(100).await.unwrap();
        if !batch.is_empty() || Instant::now() > deadline {
            break batch;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(second, first);
    b.mark_published(&second.iter().map(|r| r.seq).collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(b.pending(100).await.unwrap().is_empty());
    assert_eq!(b.backlog().await.unwrap(), 0);
}

/// A liveness bound, not a speed claim: the waits below are an hour long, so a
/// waiter back within this bound was woken by the other pool's commit. Measured
/// follower lag is in BENCHMARKS.md.
const WAKE_BOUND: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wait_for_append_wakes_on_commit() {
    let Some(db) = fresh().await else {
        return;
    };
    let store = pool(&db, ReserveStrategy::RowLock).await;
    let other = pool(&db, ReserveStrategy::group()).await;
    // Establish the listener, then wait while another process appends.
    store.wait_for_append(Duration::from_millis(10)).await;
    let drop = live_drop(1);
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move { store.wait_for_append(Duration::from_secs(3_600)).await })
    };
    // Only makes it likely the waiter is parked first; a wake-up either way passes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    other
        .insert_drop(
            &drop,
            &[1],
            &[Event::drop(EventType::DropScheduled, &drop, t0())],
        )
        .await
        .unwrap();
    tokio::time::timeout(WAKE_BOUND, waiter)
        .await
        .expect("an hour-long wait_for_append must wake on another pool's commit")
        .unwrap();
    // No append: the wait still ends by itself, at its timeout (or earlier, by a
    // spurious wake-up, which the port allows).
    tokio::time::timeout(
        WAKE_BOUND,
        store.wait_for_append(Duration::from_millis(300)),
    )
    .await
    .expect("wait_for_append must return once its timeout passes");
}

async fn add_followers(db: &TestSchema, creator: UserId, n: i64) {
    sqlx::query(
        "INSERT INTO follows (follower_id, creator_id, followed_at) \
         SELECT gen_random_uuid(), $1, $2 - make_interval(secs => g) FROM generate_series(1, $3) g",
    )
    .bind(creator.0)
    .bind(t0())
    .bind(n)
    .execute(&mut db.conn().await)
    .await
    .unwrap();
}

/// [`add_followers`], then `VACUUM ANALYZE` of the follows, as autovacuum leaves an
/// audience that grew over time: statistics that count it and the pages marked
/// all-visible, so the fan-out reads the follows key alone.
async fn add_settled_followers(db: &TestSchema, creator: UserId, n: i64) {
    add_followers(db, creator, n).await;
    sqlx::query("VACUUM ANALYZE follows")
        .execute(&mut db.conn().await)
        .await
        .unwrap();
}

fn fan_out_batch(creator: UserId, limit: u32) -> FanOutBatch {
    FanOutBatch {
        creator_id: creator,
        kind: NotificationKind::DropLive,
        payload: serde_json::json!({"drop": "d"}),
        dedup_key: "drop_live:d".into(),
        after: None,
        limit,
        at: t0(),
        shard: FanOutShard::WHOLE,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fan_out_resumes_after_a_crash() {
    let Some(db) = fresh().await else {
        return;
    };
    let store = pool(&db, ReserveStrategy::RowLock).await;
    let creator = UserId::new();
    add_followers(&db, creator, 2_500).await;
    let mut batch = fan_out_batch(creator, 1_000);
    let first = store.fan_out(&batch).await.unwrap();
    assert_eq!((first.scanned, first.inserted), (1_000, 1_000));
    // The worker died before saving `first.next`: the batch runs again, inserts nothing.
    let again = store.fan_out(&batch).await.unwrap();
    assert_eq!(
        (again.scanned, again.inserted, again.next),
        (1_000, 0, first.next)
    );
    let mut total = first.inserted;
    batch.after = first.next;
    loop {
        let p = store.fan_out(&batch).await.unwrap();
        total += p.inserted;
        match p.next {
            Some(next) => batch.after = Some(next),
            None => break,
        }
    }
    assert_eq!(total, 2_500);
    let stored: i64 = sqlx::query_scalar("SELECT count(DISTINCT user_id) FROM notifications")
        .fetch_one(&mut db.conn().await)
        .await
        .unwrap();
    assert_eq!(stored, 2_500);
}

/// `config` with the fan-out knobs the environment overrides, for comparing
/// settings: `LIVEDROP_FAN_OUT_SHARDS`, `LIVEDROP_FAN_OUT_BATCH`,
/// `LIVEDROP_FAN_OUT_MAX_BATCH`.
fn tuned(config: livedrop_core::Config) -> livedrop_core::Config {
    let knob = |name: &str, default: u32| {
        std::env::var(name)
            .ok()
            .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} is a number")))
            .unwrap_or(default)
    };
    livedrop_core::Config {
        fan_out_shards: knob("LIVEDROP_FAN_OUT_SHARDS", config.fan_out_shards),
        fan_out_batch: knob("LIVEDROP_FAN_OUT_BATCH", config.fan_out_batch),
        fan_out_max_batch: knob("LIVEDROP_FAN_OUT_MAX_BATCH", config.fan_out_max_batch),
        ..config
    }
}

/// Fans a notification out to `followers` followers the way the service does with
/// the default [`Config`](livedrop_core::Config), or the knobs [`tuned`] reads (its
/// shards walked side by side,
/// each batch twice the one before from `fan_out_batch` up to `fan_out_max_batch`),
/// timed end to end, and checks every follower got exactly one. The audience is
/// settled ([`add_settled_followers`]) unless `just_imported`: then the fan-out starts
/// right after the followers were inserted, before any vacuum or analyze. Prints the
/// time, and one `bench-result` JSON line (followers notified after each batch, with
/// the seconds since the start) that `scripts/bench.sh` collects for its charts.
async fn measure_fan_out(followers: u64, just_imported: bool) {
    let Some(db) = fresh().await else {
        return;
    };
    let config = tuned(livedrop_core::Config::default());
    let shards = config.fan_out_shards.max(1);
    let store = db
        .connect(PgOptions {
            max_connections: shards + 1,
            ..db.options()
        })
        .await;
    let creator = UserId::new();
    if just_imported {
        add_followers(&db, creator, followers as i64).await;
    } else {
        add_settled_followers(&db, creator, followers as i64).await;
    }
    let progress = std::sync::Mutex::new((0u64, 0u32, Vec::new()));
    let started = Instant::now();
    let walks = FanOutShard::split(shards).map(|shard| {
        let (store, progress) = (&store, &progress);
        let mut batch = FanOutBatch {
            shard,
            ..fan_out_batch(creator, config.fan_out_batch)
        };
        let most = config.fan_out_max_batch.max(batch.limit);
        async move {
            loop {
                let p = store.fan_out(&batch).await.unwrap();
                {
                    let mut seen = progress.lock().unwrap();
                    seen.0 += u64::from(p.inserted);
                    seen.1 += 1;
                    let point = serde_json::json!([seen.0, started.elapsed().as_secs_f64()]);
                    seen.2.push(point);
                }
                match p.next {
                    Some(next) => batch.after = Some(next),
                    None => break,
                }
                batch.limit = batch.limit.saturating_mul(2).min(most);
            }
        }
    });
    futures::future::join_all(walks).await;
    let took = started.elapsed();
    let (total, batches, progress) = progress.into_inner().unwrap();
    println!("fan-out: {total} notifications in {batches} batches over {shards} shards, {took:?}");
    println!(
        "bench-result {}",
        serde_json::json!({
            "bench": "fan_out",
            "followers": followers,
            "just_imported": just_imported,
            "batch_size": config.fan_out_batch,
            "max_batch": config.fan_out_max_batch,
            "shards": shards,
            "batches": batches,
            "seconds": took.as_secs_f64(),
            "progress": progress,
        })
    );
    assert_eq!(total, followers);
    let stored: i64 = sqlx::query_scalar("SELECT count(DISTINCT user_id) FROM notifications")
        .fetch_one(&mut db.conn().await)
        .await
        .unwrap();
    assert_eq!(stored, followers as i64, "every follower notified once");
}

/// 10,000 followers, timed. Run with `--ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --ignored"]
async fn fan_out_10k_followers() {
    measure_fan_out(10_000, false).await;
}

/// 100,000 followers, timed. Run with `--ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --ignored"]
async fn fan_out_100k_followers() {
    measure_fan_out(100_000, false).await;
}

/// 1,000,000 followers, timed, the store alone. Run with `--ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --ignored"]
async fn store_fan_out_1m_followers() {
    measure_fan_out(1_000_000, false).await;
}

/// 1,000,000 followers inserted just before the fan-out, timed, the store alone.
/// Run with `--ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --ignored"]
async fn store_fan_out_1m_just_imported_followers() {
    measure_fan_out(1_000_000, true).await;
}

/// The drop-live fan-out as the service runs it, against the order path: see
/// [`fan_out_service_1m_followers`].
#[cfg(feature = "memory")]
mod fan_out_service {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, OnceLock};

    use async_trait::async_trait;
    use livedrop_adapters::memory::{MemoryBus, MemoryCache};
    use livedrop_core::id::NotificationId;
    use livedrop_core::model::{Actor, FanOutProgress, Notification, Role};
    use livedrop_core::page::{Page, PageRequest};
    use livedrop_core::ports::{EventBus, Subscription};
    use livedrop_core::service::{Livedrop, PlaceOrder, NOTIFY_GROUP};
    use livedrop_core::{Config, ManualClock, Ports, StoreResult};

    use super::*;

    /// How long the order path runs alone before the drop goes live.
    const QUIET: Duration = Duration::from_secs(5);
    /// Concurrent buyers.
    const BUYERS: usize = 64;

    /// The notification store, noting when each fan-out batch came back (its
    /// notifications committed) and how many it wrote.
    struct Recorded {
        inner: PgStore,
        batches: Mutex<Vec<(Instant, u32)>>,
    }

    impl Recorded {
        fn notified(&self) -> u64 {
            let batches = self.batches.lock().unwrap();
            batches.iter().map(|(_, n)| u64::from(*n)).sum()
        }
    }

    #[async_trait]
    impl NotificationRepository for Recorded {
        async fn insert_notification(&self, notification: &Notification) -> StoreResult<bool> {
            self.inner.insert_notification(notification).await
        }
        async fn fan_out(&self, batch: &FanOutBatch) -> StoreResult<FanOutProgress> {
            let progress = self.inner.fan_out(batch).await?;
            let done = Instant::now();
            self.batches.lock().unwrap().push((done, progress.inserted));
            Ok(progress)
        }
        async fn notifications(
            &self,
            user: UserId,
            unread_only: bool,
            page: PageRequest,
        ) -> StoreResult<Page<Notification>> {
            self.inner.notifications(user, unread_only, page).await
        }
        async fn mark_read(
            &self,
            user: UserId,
            id: NotificationId,
            at: Timestamp,
        ) -> StoreResult<Option<Notification>> {
            self.inner.mark_read(user, id, at).await
        }
        async fn mark_all_read(&self, user: UserId, at: Timestamp) -> StoreResult<u64> {
            self.inner.mark_all_read(user, at).await
        }
    }

    /// The bus, noting when the notification consumer is handed `drop`'s
    /// `drop.started`: the moment the background path starts handling it.
    struct Watched {
        inner: MemoryBus,
        drop: Uuid,
        handed: Arc<OnceLock<Instant>>,
    }

    struct WatchedSubscription {
        inner: Box<dyn Subscription>,
        drop: Uuid,
        handed: Arc<OnceLock<Instant>>,
    }

    #[async_trait]
    impl EventBus for Watched {
        async fn publish(&self, events: &[Event]) -> StoreResult<()> {
            self.inner.publish(events).await
        }
        async fn subscribe(&self, group: &str) -> StoreResult<Box<dyn Subscription>> {
            let inner = self.inner.subscribe(group).await?;
            if group != NOTIFY_GROUP {
                return Ok(inner);
            }
            Ok(Box::new(WatchedSubscription {
                inner,
                drop: self.drop,
                handed: self.handed.clone(),
            }))
        }
        async fn subscribe_live(&self) -> StoreResult<Box<dyn Subscription>> {
            self.inner.subscribe_live().await
        }
    }

    #[async_trait]
    impl Subscription for WatchedSubscription {
        async fn next(&mut self, timeout: Duration) -> StoreResult<Option<Event>> {
            let event = self.inner.next(timeout).await?;
            if let Some(e) = &event {
                if e.kind == EventType::DropStarted && e.aggregate_id == self.drop {
                    let _ = self.handed.set(Instant::now());
                }
            }
            Ok(event)
        }
        async fn commit(&mut self) -> StoreResult<()> {
            self.inner.commit().await
        }
        async fn close(self: Box<Self>) {
            self.inner.close().await
        }
    }

    /// Order latencies: when each order started and how long it took.
    type Samples = Vec<(Instant, Duration)>;

    /// `BUYERS` tasks placing one-unit orders in `drop` through the service, each
    /// order by a new buyer, until `stop` is set.
    async fn place_orders(app: &Livedrop, drop: DropId, stop: Arc<AtomicBool>) -> Samples {
        let tasks = (0..BUYERS).map(|_| {
            let (app, stop) = (app.clone(), stop.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let buyer = Actor::new(UserId::new(), Role::Customer);
                    let started = Instant::now();
                    let order = app
                        .place_order(
                            &buyer,
                            Some("k"),
                            PlaceOrder {
                                drop_id: drop,
                                quantity: 1,
                                sku: None,
                                admission_token: None,
                            },
                        )
                        .await;
                    samples.push((started, started.elapsed()));
                    order.expect("an order is placed");
                }
                samples
            })
        });
        let mut all = Vec::new();
        for samples in futures::future::join_all(tasks).await {
            all.extend(samples.unwrap());
        }
        all
    }

    /// p50, p99 (milliseconds) and orders per second of the orders started in
    /// `[from, to]`.
    fn summary(samples: &Samples, from: Instant, to: Instant) -> (f64, f64, f64, usize) {
        let mut took: Vec<Duration> = samples
            .iter()
            .filter(|(at, _)| *at >= from && *at <= to)
            .map(|(_, d)| *d)
            .collect();
        assert!(!took.is_empty(), "orders were placed");
        took.sort();
        let at = |q: usize| took[(took.len() - 1) * q / 100].as_secs_f64() * 1e3;
        let rate = took.len() as f64 / (to - from).as_secs_f64();
        (at(50), at(99), rate, took.len())
    }

    /// A creator with `followers` followers (inserted with `generate_series`) and a
    /// hot drop of another creator taking orders through [`Livedrop::place_order`]
    /// (PostgreSQL store, group reserve, `BUYERS` concurrent buyers), with every
    /// background task running. The orders run `QUIET` alone, then a drop of the
    /// creator goes live (its `drop.started` written to the outbox, relayed to the
    /// bus, handled by the notification consumer) while they go on. Times the
    /// fan-out from the moment the consumer is handed the event: when the first
    /// 1,000 notifications were committed, when all were. Checks every follower got
    /// exactly one, and prints the order latencies without and during the fan-out,
    /// with one `bench-result` JSON line (`"bench": "fan_out_service"`).
    pub(super) async fn measure(followers: u64) {
        let Some(db) = fresh().await else {
            return;
        };
        let config = super::tuned(Config::default());
        // One process's pool: the production default size, group reserve.
        let store = db
            .connect(PgOptions {
                strategy: ReserveStrategy::group(),
                acquire_timeout: Duration::from_secs(30),
                ..PgOptions::default()
            })
            .await;
        let creator = UserId::new();
        add_settled_followers(&db, creator, followers as i64).await;

        let hot = live_drop(1);
        store.insert_drop(&hot, &[10_000_000], &[]).await.unwrap();
        let mut live = live_drop(1);
        live.creator_id = creator;

        let recorded = Arc::new(Recorded {
            inner: store.clone(),
            batches: Mutex::new(Vec::new()),
        });
        let handed = Arc::new(OnceLock::new());
        let bus = Arc::new(Watched {
            inner: MemoryBus::new(),
            drop: live.id.0,
            handed: handed.clone(),
        });
        let mut ports = Ports::from_store(
            Arc::new(store.clone()),
            Arc::new(MemoryCache::new()),
            bus,
            Arc::new(ManualClock::fixed()),
        );
        ports.notifications = recorded.clone();
        let app = Livedrop::new(ports, config.clone());
        let background = app.spawn_background();

        // The order path alone.
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let (app, stop) = (app.clone(), stop.clone());
            tokio::spawn(async move { place_orders(&app, hot.id, stop).await })
        };
        let quiet_from = Instant::now();
        tokio::time::sleep(QUIET).await;
        stop.store(true, Ordering::Relaxed);
        let quiet_to = Instant::now();
        let quiet = load.await.unwrap();

        // The order path again, and the drop goes live.
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let (app, stop) = (app.clone(), stop.clone());
            tokio::spawn(async move { place_orders(&app, hot.id, stop).await })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        store
            .insert_drop(
                &live,
                &[1],
                &[Event::drop(EventType::DropStarted, &live, t0())],
            )
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(300);
        while recorded.notified() < followers {
            assert!(Instant::now() < deadline, "the fan-out finishes");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let done = Instant::now();
        stop.store(true, Ordering::Relaxed);
        let busy = load.await.unwrap();
        background.shutdown().await;

        let start = *handed.get().expect("the consumer was handed drop.started");
        let batches = recorded.batches.lock().unwrap().clone();
        let mut notified = 0u64;
        let mut first_1000 = None;
        let mut last = start;
        let mut in_order = batches.clone();
        in_order.sort_by_key(|(at, _)| *at);
        let mut progress = Vec::new();
        for (at, n) in &in_order {
            notified += u64::from(*n);
            if first_1000.is_none() && notified >= 1_000.min(followers) {
                first_1000 = Some(*at - start);
            }
            last = last.max(*at);
            progress.push(serde_json::json!([notified, (*at - start).as_secs_f64()]));
        }
        let first_1000 = first_1000.expect("a thousand were notified");
        let all = last - start;

        let dedup_key = format!("drop_live:{}", live.id);
        let mut conn = db.conn().await;
        let (rows, users): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(DISTINCT user_id) FROM notifications WHERE dedup_key = $1",
        )
        .bind(&dedup_key)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        let missed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM follows f WHERE creator_id = $1 AND NOT EXISTS \
             (SELECT 1 FROM notifications n WHERE n.user_id = f.follower_id AND n.dedup_key = $2)",
        )
        .bind(creator.0)
        .bind(&dedup_key)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(
            (rows, users, missed),
            (followers as i64, followers as i64, 0)
        );
        assert_eq!(notified, followers, "each follower notified by one batch");

        let (q50, q99, q_rate, q_n) = summary(&quiet, quiet_from, quiet_to);
        let (b50, b99, b_rate, b_n) = summary(&busy, start, done);
        println!(
            "fan-out to {followers} followers: first 1,000 after {:.1} ms, all after {:.2} s \
             ({} batches, {} shards, batches {} to {})",
            first_1000.as_secs_f64() * 1e3,
            all.as_secs_f64(),
            batches.len(),
            config.fan_out_shards,
            config.fan_out_batch,
            config.fan_out_max_batch,
        );
        println!(
            "orders without the fan-out: p50 {q50:.2} ms, p99 {q99:.2} ms, {q_rate:.0}/s ({q_n} orders)"
        );
        println!(
            "orders during the fan-out:  p50 {b50:.2} ms, p99 {b99:.2} ms, {b_rate:.0}/s ({b_n} orders)"
        );
        println!(
            "bench-result {}",
            serde_json::json!({
                "bench": "fan_out_service",
                "followers": followers,
                "first_1000_ms": first_1000.as_secs_f64() * 1e3,
                "all_seconds": all.as_secs_f64(),
                "batches": batches.len(),
                "shards": config.fan_out_shards,
                "first_batch": config.fan_out_batch,
                "max_batch": config.fan_out_max_batch,
                "buyers": BUYERS,
                "orders_without": {"p50_ms": q50, "p99_ms": q99, "per_second": q_rate, "orders": q_n},
                "orders_during": {"p50_ms": b50, "p99_ms": b99, "per_second": b_rate, "orders": b_n},
                "progress": progress,
            })
        );
    }
}

/// A million followers notified by the service while a hot drop takes orders:
/// [`fan_out_service::measure`]. Run with `--release -- --ignored --nocapture`.
#[cfg(feature = "memory")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --ignored"]
async fn fan_out_service_1m_followers() {
    fan_out_service::measure(1_000_000).await;
}

/// What a store must answer for one drop, kept by hand: stock, orders by id and by
/// (buyer, key), each order's status and hold.
struct StockModel {
    drop: model::Drop,
    stock: Stock,
    orders: Vec<Order>,
    /// Refusals kept under their keys: (buyer, key) → (fingerprint, record).
    kept: HashMap<(UserId, String), (String, serde_json::Value)>,
}

impl StockModel {
    fn new(drop: model::Drop, stock: u32) -> Self {
        Self {
            drop,
            stock: Stock {
                total: stock,
                available: stock,
                reserved: 0,
                sold: 0,
            },
            orders: Vec::new(),
            kept: HashMap::new(),
        }
    }

    fn held(&self, user: UserId) -> u32 {
        self.orders
            .iter()
            .filter(|o| {
                o.user_id == user
                    && matches!(o.status, OrderStatus::Reserved | OrderStatus::Confirmed)
            })
            .map(|o| o.quantity)
            .sum()
    }

    /// The outcome the store must give, applied to the model.
    fn place(&mut self, order: &Order, now: Timestamp) -> PlaceOutcome {
        if let Some(o) = self
            .orders
            .iter()
            .find(|o| o.user_id == order.user_id && o.idempotency_key == order.idempotency_key)
        {
            return PlaceOutcome::Duplicate(o.clone());
        }
        let key = (order.user_id, order.idempotency_key.clone());
        if let Some((fingerprint, record)) = self.kept.get(&key) {
            return if *fingerprint == order.fingerprint {
                PlaceOutcome::Replayed(record.clone())
            } else {
                PlaceOutcome::KeyReused
            };
        }
        let held = self.held(order.user_id);
        if !self.drop.accepts_orders_at(now) {
            return PlaceOutcome::NotLive;
        }
        let refused = if held + order.quantity > self.drop.per_user_limit {
            Some(PlaceOutcome::LimitExceeded {
                limit: self.drop.per_user_limit,
                held,
            })
        } else if self.stock.available < order.quantity {
            Some(PlaceOutcome::OutOfStock {
                available: self.stock.available,
            })
        } else {
            None
        };
        if let Some(refused) = refused {
            let record = livedrop_core::service::order_record(&refused, order.quantity).unwrap();
            self.kept.insert(key, (order.fingerprint.clone(), record));
            return refused;
        }
        self.stock.available -= order.quantity;
        self.stock.reserved += order.quantity;
        self.orders.push(order.clone());
        PlaceOutcome::Placed(order.clone())
    }

    /// The status a settlement must leave the order in and the outcome's kind, applied.
    fn settle(
        &mut self,
        id: OrderId,
        s: Settlement,
        now: Timestamp,
    ) -> (&'static str, OrderStatus) {
        let o = self.orders.iter_mut().find(|o| o.id == id).unwrap();
        let target = match s {
            Settlement::Confirm => OrderStatus::Confirmed,
            Settlement::Cancel => OrderStatus::Cancelled,
        };
        if o.status == target {
            return ("unchanged", o.status);
        }
        if o.status != OrderStatus::Reserved {
            return ("conflict", o.status);
        }
        self.stock.reserved -= o.quantity;
        if s == Settlement::Confirm && now >= o.reserved_until {
            o.status = OrderStatus::Expired;
            self.stock.available += o.quantity;
            return ("hold_expired", o.status);
        }
        o.status = target;
        match s {
            Settlement::Confirm => self.stock.sold += o.quantity,
            Settlement::Cancel => self.stock.available += o.quantity,
        }
        ("settled", o.status)
    }

    /// The reserved orders whose hold has run out at `now`.
    fn due(&self, now: Timestamp) -> HashSet<OrderId> {
        self.orders
            .iter()
            .filter(|o| o.status == OrderStatus::Reserved && o.reserved_until <= now)
            .map(|o| o.id)
            .collect()
    }

    fn expire(&mut self, id: OrderId) {
        let o = self.orders.iter_mut().find(|o| o.id == id).unwrap();
        o.status = OrderStatus::Expired;
        self.stock.reserved -= o.quantity;
        self.stock.available += o.quantity;
    }
}

fn settle_kind(out: &SettleOutcome) -> (&'static str, Option<OrderStatus>) {
    match out {
        SettleOutcome::Settled(o) => ("settled", Some(o.status)),
        SettleOutcome::Unchanged(o) => ("unchanged", Some(o.status)),
        SettleOutcome::Conflict(o) => ("conflict", Some(o.status)),
        SettleOutcome::HoldExpired(o) => ("hold_expired", Some(o.status)),
        SettleOutcome::NotFound => ("not_found", None),
    }
}

/// Random place / settle / expire / adjust sequences (32 seeded cases, each on one of
/// the two reserve strategies): every answer is the one a hand-kept model gives, and
/// the stock row, read with plain SQL after every step, is the model's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_sequences_keep_the_invariant() {
    let Some(db) = fresh().await else {
        return;
    };
    let stores = pools(&db, [ReserveStrategy::RowLock, ReserveStrategy::group()]).await;
    let (mut settled, mut expired) = (0, 0);
    for case in 0..32u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(case);
        let store = &stores[rng.gen_range(0..2)];
        let stock = rng.gen_range(0..8);
        let drop = new_drop(store, stock, rng.gen_range(1..4)).await;
        let mut m = StockModel::new(drop.clone(), stock);
        let users: Vec<UserId> = (0..3).map(|_| UserId::new()).collect();
        let mut now = t0();
        for step in 0..24 {
            let what = rng.gen_range(0..10);
            let at = format!("case {case} step {step} op {what}");
            match what {
                0..=4 => {
                    let user = users[rng.gen_range(0..users.len())];
                    let key = format!("c{case}-{}", rng.gen_range(0..12));
                    let mut o = order(user, &drop, rng.gen_range(1..4), &key);
                    o.reserved_until = now + chrono::Duration::minutes(10);
                    o.created_at = now;
                    o.updated_at = now;
                    let got = store.place_order(&o, now).await.unwrap();
                    let want = m.place(&o, now);
                    match (&got, &want) {
                        (PlaceOutcome::Placed(g), PlaceOutcome::Placed(w))
                        | (PlaceOutcome::Duplicate(g), PlaceOutcome::Duplicate(w)) => {
                            assert_eq!(
                                (g.id, g.quantity, &g.idempotency_key),
                                (w.id, w.quantity, &w.idempotency_key),
                                "{at}"
                            );
                        }
                        _ => assert_eq!(got, want, "{at}"),
                    }
                }
                5 | 6 if !m.orders.is_empty() => {
                    let id = m.orders[rng.gen_range(0..m.orders.len())].id;
                    let s = if rng.gen_bool(0.5) {
                        Settlement::Confirm
                    } else {
                        Settlement::Cancel
                    };
                    let got = store
                        .settle_order(id, s, now, fixtures::HOLD)
                        .await
                        .unwrap();
                    let (kind, status) = m.settle(id, s, now);
                    assert_eq!(settle_kind(&got), (kind, Some(status)), "{at}: {s:?}");
                    settled += 1;
                }
                7 => {
                    now += chrono::Duration::minutes(rng.gen_range(1..8));
                    let due = m.due(now);
                    let batch = store.expire_holds(now, 10, fixtures::HOLD).await.unwrap();
                    let ids: HashSet<OrderId> = batch.iter().map(|o| o.id).collect();
                    assert_eq!(ids.len(), batch.len(), "{at}: an order expired twice");
                    assert_eq!(batch.len(), due.len().min(10), "{at}");
                    assert!(ids.is_subset(&due), "{at}: {ids:?} not all due ({due:?})");
                    assert!(
                        batch.iter().all(|o| o.status == OrderStatus::Expired),
                        "{at}"
                    );
                    for id in ids {
                        m.expire(id);
                        expired += 1;
                    }
                }
                _ => {
                    let delta: i64 = rng.gen_range(-3..4);
                    let adj = Adjustment {
                        drop_id: drop.id,
                        sku: model::DEFAULT_SKU.into(),
                        hold: fixtures::HOLD,
                        delta,
                        reason: "random".into(),
                        actor_id: None,
                        entry_id: Uuid::new_v4(),
                        at: now,
                    };
                    let out = store.adjust(&adj).await.unwrap();
                    if delta < 0 && m.stock.available < delta.unsigned_abs() as u32 {
                        assert_eq!(
                            out,
                            AdjustOutcome::Insufficient {
                                available: m.stock.available
                            },
                            "{at}"
                        );
                    } else {
                        assert!(matches!(out, AdjustOutcome::Applied(_)), "{at}: {out:?}");
                        let d = delta.unsigned_abs() as u32;
                        if delta < 0 {
                            m.stock.available -= d;
                            m.stock.total -= d;
                        } else {
                            m.stock.available += d;
                            m.stock.total += d;
                        }
                    }
                }
            }
            let (stock, accounted) = audit(&db, drop.id).await;
            assert!(accounted, "{at}: {stock:?}");
            assert_eq!(stock, m.stock, "{at}");
        }
        // The sweeper is global: the case's holds all run out before the next case.
        let end = t0() + chrono::Duration::days(1);
        let due = m.due(end);
        let ids: HashSet<OrderId> = store
            .expire_holds(end, 1_000, fixtures::HOLD)
            .await
            .unwrap()
            .iter()
            .map(|o| o.id)
            .collect();
        assert_eq!(ids, due, "case {case}: the final sweep");
        for id in ids {
            m.expire(id);
        }
        let (stock, _) = audit(&db, drop.id).await;
        assert_eq!(stock, m.stock, "case {case}: after the final sweep");
    }
    // The seeds reach settlements and expiries, so their answers were checked.
    assert!(
        settled > 0 && expired > 0,
        "settled {settled}, expired {expired}"
    );
}

/// A fresh migrated schema per conformance case, kept after the case (the suite's
/// factory cannot hold the schema's guard) until a later run sweeps it.
async fn conformance_store(strategy: ReserveStrategy) -> Option<livedrop_core::testing::Repos> {
    let db = TestSchema::new("a PostgreSQL conformance case").await?;
    let store = pool(&db, strategy).await;
    store.migrate().await.unwrap();
    db.keep();
    Some(livedrop_core::testing::Repos::from_store(Arc::new(store)))
}

async fn row_lock_store() -> Option<livedrop_core::testing::Repos> {
    conformance_store(ReserveStrategy::RowLock).await
}

async fn group_store() -> Option<livedrop_core::testing::Repos> {
    conformance_store(ReserveStrategy::group()).await
}

/// The store conformance suite with the row-lock strategy.
mod row_lock {
    use super::*;
    livedrop_core::store_conformance!(row_lock_store);
}

/// The store conformance suite with group reserve.
mod group {
    use super::*;
    livedrop_core::store_conformance!(group_store);
}

/// Published events older than the cutoff are pruned; unpublished ones never are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_removes_only_published_events() {
    use livedrop_core::ports::ProductRepository;
    let Some(db) = fresh().await else {
        return;
    };
    let store = pool(&db, ReserveStrategy::RowLock).await;
    let creator = UserId::new();
    for title in ["first", "second"] {
        let product = fixtures::product(creator, title, "", fixtures::T0);
        let event = Event::product(EventType::ProductCreated, &product, fixtures::T0);
        store.insert_product(&product, &[event]).await.unwrap();
    }
    let pending = store.pending(10).await.unwrap();
    assert_eq!(pending.len(), 2);
    store.mark_published(&[pending[0].seq]).await.unwrap();

    let past = chrono::Utc::now() - chrono::Duration::hours(1);
    assert_eq!(
        store.prune_published(past).await.unwrap(),
        0,
        "too recent to prune"
    );
    let future = chrono::Utc::now() + chrono::Duration::hours(1);
    assert_eq!(store.prune_published(future).await.unwrap(), 1);
    assert_eq!(
        store.backlog().await.unwrap(),
        1,
        "the unpublished event stays"
    );
    let left = store.pending(10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].seq, pending[1].seq);
}

/// Two processes on one schema with no broker, each with its own in-process bus and
/// cache: an order placed through one shows in the other's live feed, and the
/// other's cached stock view is invalidated (its TTL is far away).
#[cfg(feature = "memory")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_every_process_sees_every_committed_event() {
    use livedrop_adapters::memory::{MemoryBus, MemoryCache};
    use livedrop_core::model::Role;
    use livedrop_core::service::{Livedrop, NewDrop, NewProduct, PlaceOrder};
    use livedrop_core::{Clock, Config, ManualClock, Ports};

    let Some(db) = fresh().await else {
        return;
    };
    let clock = Arc::new(ManualClock::fixed());
    let config = Config {
        follow_outbox: true,
        follow_interval: Duration::from_millis(20),
        stock_ttl: Duration::from_secs(3600),
        entity_ttl: Duration::from_secs(3600),
        tick: Duration::from_millis(50),
        ..Config::default()
    };
    let mut processes = Vec::new();
    for _ in 0..2 {
        let ports = Ports::from_store(
            Arc::new(pool(&db, ReserveStrategy::RowLock).await),
            Arc::new(MemoryCache::new()),
            Arc::new(MemoryBus::new()),
            clock.clone(),
        );
        processes.push(Livedrop::new(ports, config.clone()));
    }
    let (a, b) = (&processes[0], &processes[1]);
    // A starts first and takes the outbox relay: only A's own bus carries events.
    let background_a = a.spawn_background();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let background_b = b.spawn_background();
    let mut live_b = b.live_events();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let creator = fixtures::user("creator", Role::Creator);
    let buyer = fixtures::user("buyer", Role::Customer);
    for user in [&creator, &buyer] {
        a.ports().users.insert_user(user).await.unwrap();
    }
    let product = a
        .create_product(
            &creator.actor(),
            NewProduct {
                title: "Hoodie".into(),
                description: "Warm".into(),
                price_cents: 4_500,
                currency: "EUR".into(),
                image_url: None,
            },
        )
        .await
        .unwrap();
    let drop = a
        .schedule_drop(
            &creator.actor(),
            NewDrop {
                product_id: product.id,
                starts_at: None,
                ends_at: clock.now() + chrono::Duration::days(1),
                total_stock: 5,
                variants: vec![],
                per_user_limit: None,
                allocation: Default::default(),
                entries_close_at: None,
                waiting_room: None,
            },
        )
        .await
        .unwrap();
    // B caches the drop's stock before the order.
    assert_eq!(b.displayed_stock(drop.drop.id).await.unwrap().reserved, 0);

    let order = a
        .place_order(
            &buyer.actor(),
            Some("k"),
            PlaceOrder {
                drop_id: drop.drop.id,
                quantity: 1,
                sku: None,
                admission_token: None,
            },
        )
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = false;
    while !seen && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(100), live_b.recv()).await {
            Ok(Ok(event)) => {
                seen = event.kind == EventType::OrderPlaced && event.aggregate_id == order.id.0;
            }
            Ok(Err(e)) => panic!("B's live feed failed: {e}"),
            Err(_) => {}
        }
    }
    assert!(seen, "B's live feed saw the order placed through A");
    let mut reserved = 0;
    while reserved == 0 && Instant::now() < deadline {
        reserved = b.displayed_stock(drop.drop.id).await.unwrap().reserved;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reserved, 1, "B's cached stock view was invalidated");

    background_b.shutdown().await;
    background_a.shutdown().await;
}

/// An order whose caller went away while it queued for its drop's combiner is not
/// placed: nothing queued outlives its request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_combined_order_whose_caller_went_away_is_not_placed() {
    let Some(db) = fresh().await else {
        return;
    };
    let store = pool(
        &db,
        ReserveStrategy::Group {
            max_batch: 16,
            in_flight: 2,
        },
    )
    .await;
    let drop = new_drop(&store, 10, 10).await;

    // Another transaction holds the drop's stock row: the combiner's first batch waits.
    let mut blocker = db.conn().await;
    let mut held = blocker.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM inventory WHERE drop_id = $1 FOR UPDATE")
        .bind(drop.id.0)
        .execute(&mut *held)
        .await
        .unwrap();
    // Two batches in flight: the first waits for the row, the second for its turn.
    let mut waiting = Vec::new();
    for key in ["first", "second"] {
        let (store, order) = (store.clone(), order(UserId::new(), &drop, 1, key));
        waiting.push(tokio::spawn(async move {
            store.place_order(&order, t0()).await
        }));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The next order queues behind those batches; its caller gives up.
    let abandoned = order(UserId::new(), &drop, 1, "abandoned");
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        store.place_order(&abandoned, t0()),
    )
    .await;
    assert!(gave_up.is_err(), "the stock row is held: the order waits");

    held.commit().await.unwrap();
    for waiting in waiting {
        assert!(matches!(
            waiting.await.unwrap().unwrap(),
            PlaceOutcome::Placed(_)
        ));
    }
    // Once the combiner served its queue (the next order goes through it too):
    let after = order(UserId::new(), &drop, 1, "after");
    assert!(matches!(
        store.place_order(&after, t0()).await.unwrap(),
        PlaceOutcome::Placed(_)
    ));
    assert_eq!(
        store
            .order_by_key(abandoned.user_id, "abandoned")
            .await
            .unwrap(),
        None,
        "the abandoned order was not placed"
    );
    let (stock, accounted) = audit(&db, drop.id).await;
    assert!(accounted);
    assert_eq!(stock.reserved, 3);
}

/// The simulator's workload on PostgreSQL: several pools stand in for several
/// processes (both reservation strategies), faults come from the decorators and from
/// PostgreSQL itself — the pools' backends are terminated at random moments,
/// mid-transaction and between a write and its answer — and every check of the
/// in-memory simulation runs at the end.
#[cfg(feature = "sim")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_workload_with_terminated_backends_keeps_every_guarantee() {
    use livedrop_adapters::sim::{run_with, Leftovers, SimConfig, Timing};

    let Some(db) = fresh().await else {
        return;
    };
    let app_name = format!("sim_{}", db.name());
    let sep = if db.url().contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}application_name={app_name}", db.url());
    let mut stores = Vec::new();
    for i in 0..3 {
        let strategy = if i % 2 == 0 {
            ReserveStrategy::RowLock
        } else {
            ReserveStrategy::group()
        };
        let store = PgStore::connect(
            &url,
            PgOptions {
                max_connections: 4,
                acquire_timeout: Duration::from_secs(5),
                schema: Some(db.name().to_owned()),
                strategy,
            },
        )
        .await
        .unwrap();
        stores.push(Arc::new(store));
    }
    let raw = Arc::new(pool(&db, ReserveStrategy::RowLock).await);
    // Every process's combiners must have retired by the end.
    let probes = stores.clone();
    let leftovers = Leftovers {
        combiner_queues: Some(Arc::new(move || {
            probes.iter().map(|s| s.combiner_queues()).sum()
        })),
        ..Leftovers::default()
    };
    let config = SimConfig {
        steps: 60,
        ..SimConfig::default()
    };
    let killed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (chaos_url, counter) = (db.url().to_owned(), killed.clone());
    let seed = 20_260_101;
    let timing = Timing::compressed();
    let report = run_with(seed, &config, raw, stores, timing, leftovers, |faults| {
        let stop = faults.settling();
        tokio::spawn(async move {
            let mut conn = sqlx::PgConnection::connect(&chaos_url).await.unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            while !stop.is_cancelled() {
                let pause = Duration::from_millis(rng.gen_range(20..250));
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
                // Busy backends first: one in a transaction or running a statement
                // is cut mid-write, or after its write before the answer reaches us.
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = $1 AND pid <> pg_backend_pid() \
                     ORDER BY (state <> 'idle') DESC, random() LIMIT 1) t",
                )
                .bind(&app_name)
                .fetch_one(&mut conn)
                .await
                .unwrap_or(0);
                counter.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            }
        });
    })
    .await;
    println!("{report}");
    println!(
        "terminated {} backend(s)",
        killed.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(
        report.passed(),
        "{report}\nreplay against PostgreSQL: LIVEDROP_TEST_DATABASE_URL=… cargo test -p livedrop-adapters --features postgres,sim,testing --test postgres simulated_workload"
    );
    assert!(report.requests > 60);
    assert!(killed.load(std::sync::atomic::Ordering::Relaxed) > 0);
}

/// A live draw drop (entries close at `at(600)`) of sizes s (3 units) and m (2),
/// limit 2, stored through `store`; with its secret seed.
async fn new_draw_drop(store: &PgStore) -> (model::Drop, String) {
    use livedrop_core::ports::DrawRepository;
    let seed = model::Draw::new_seed();
    let mut drop = fixtures::with_variants(live_drop(2), &["s", "m"]);
    drop.draw = Some(model::Draw {
        entries_close_at: fixtures::at(600),
        commitment: model::Draw::commitment_of(&seed),
        seed: None,
        drawn_at: None,
    });
    let events = [Event::drop(EventType::DropScheduled, &drop, t0())];
    store
        .insert_draw_drop(&drop, &[3, 2], &seed, &events)
        .await
        .unwrap();
    (drop, seed)
}

/// Two processes race `run_draw` on one drop, round after round: exactly one call
/// draws, the others find it drawn; the orders are exactly the winners' and the
/// stock accounts for them; the ranking is the one the revealed seed gives.
#[tokio::test]
async fn a_draw_runs_exactly_once_across_two_processes() {
    use livedrop_core::model::{DrawEntryRequest, DrawOutcome, DrawResult, EntryOutcome};
    use livedrop_core::ports::DrawRepository;

    let Some(db) = fresh().await else {
        return;
    };
    let [a, b] = pools(&db, [ReserveStrategy::RowLock, ReserveStrategy::group()]).await;
    for round in 0..6 {
        let (drop, seed) = new_draw_drop(&a).await;
        for i in 0..12u32 {
            let store = if i % 2 == 0 { &a } else { &b };
            let request = DrawEntryRequest {
                drop_id: drop.id,
                user_id: UserId::new(),
                sku: if i % 3 == 0 { "m" } else { "s" }.into(),
                quantity: 1 + i % 2,
                token: model::DrawEntry::new_token(),
                at: fixtures::at(i64::from(i)),
            };
            let outcome = store.enter_draw(&request).await.unwrap();
            assert!(matches!(outcome, EntryOutcome::Done(_)), "{outcome:?}");
        }
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                let id = drop.id;
                tokio::spawn(async move {
                    store
                        .run_draw(id, fixtures::at(601), fixtures::HOLD)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut drawn = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                DrawOutcome::Drawn { drop, entries } => drawn.push((drop, entries)),
                DrawOutcome::AlreadyDrawn => {}
                other => panic!("round {round}: unexpected {other:?}"),
            }
        }
        assert_eq!(drawn.len(), 1, "round {round}: exactly one call draws");
        let (drawn_drop, entries) = drawn.pop().unwrap();
        let draw = drawn_drop.draw.unwrap();
        assert_eq!(draw.seed.as_deref(), Some(seed.as_str()));
        assert_eq!(model::Draw::commitment_of(&seed), draw.commitment);
        // The ranking, recomputed from the published seed and tokens alone.
        let mut keyed: Vec<(String, String)> = entries
            .iter()
            .map(|e| {
                let key = model::Draw::commitment_of(&format!("{seed}:{}", e.token));
                (key, e.token.clone())
            })
            .collect();
        keyed.sort();
        assert_eq!(
            entries.iter().map(|e| e.token.clone()).collect::<Vec<_>>(),
            keyed.into_iter().map(|(_, t)| t).collect::<Vec<_>>()
        );
        // Winners' orders, and nothing else, were placed.
        let winners: HashSet<Uuid> = entries
            .iter()
            .filter(|e| e.result == DrawResult::Won)
            .map(|e| e.order_id.unwrap().0)
            .collect();
        assert!(!winners.is_empty());
        let mut conn = db.conn().await;
        let placed: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM orders WHERE drop_id = $1")
            .bind(drop.id.0)
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert_eq!(placed.into_iter().collect::<HashSet<_>>(), winners);
        let drawn_events: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM outbox WHERE aggregate_id = $1 AND event_type = 'drop.drawn'",
        )
        .bind(drop.id.0)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(drawn_events, 1);
        for (sku, _, accounted) in audit_variants(&db, drop.id).await {
            assert!(
                accounted,
                "round {round}: variant {sku} accounts for its orders"
            );
        }
        let (count, won) = b.draw_counts(drop.id).await.unwrap();
        assert_eq!((count, won), (12, winners.len() as u64));
    }
}

/// Forty buyers join one waiting room at once through two processes, ten before
/// the start and thirty after: positions are 1..=40, each once, and no two
/// admissions are closer than the room's interval.
#[tokio::test]
async fn queue_joins_across_two_processes_keep_the_rate() {
    use livedrop_core::model::{QueueOutcome, WaitingRoom};
    use livedrop_core::ports::QueueRepository;

    let Some(db) = fresh().await else {
        return;
    };
    let [a, b] = pools(&db, [ReserveStrategy::RowLock, ReserveStrategy::group()]).await;
    let product = fixtures::product(UserId::new(), "Console", "", fixtures::at(-7_200));
    let mut drop = fixtures::drop_of(
        &product,
        fixtures::at(600),
        fixtures::at(7_200),
        1,
        DropState::Scheduled,
        fixtures::at(-7_200),
    );
    let room = WaitingRoom {
        admit_per_minute: 120,
        token_seconds: 60,
        opens_minutes_before: 30,
    };
    drop.waiting_room = Some(room);
    a.insert_drop(&drop, &[5], &[]).await.unwrap();
    assert_eq!(
        a.drop_by_id(drop.id).await.unwrap().unwrap().waiting_room,
        Some(room)
    );

    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let join_all = |users: Vec<(UserId, Timestamp, u64)>| {
        let tasks: Vec<_> = users
            .into_iter()
            .enumerate()
            .map(|(i, (user, now, key))| {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                let id = drop.id;
                tokio::spawn(async move { store.join_queue(id, user, now, key).await.unwrap() })
            })
            .collect();
        async move {
            let mut out = Vec::new();
            for task in tasks {
                match task.await.unwrap() {
                    QueueOutcome::Joined(entry) => out.push(entry),
                    other => panic!("expected Joined, got {other:?}"),
                }
            }
            out
        }
    };
    let early: Vec<_> = (0..10)
        .map(|i| (UserId::new(), fixtures::at(i), rng.gen::<u64>()))
        .collect();
    join_all(early).await;
    let late: Vec<_> = (0..30)
        .map(|i| {
            let now = fixtures::at(600) + chrono::Duration::milliseconds(200 * i);
            (UserId::new(), now, rng.gen::<u64>())
        })
        .collect();
    join_all(late.clone()).await;

    let users: Vec<UserId> = {
        let mut conn = db.conn().await;
        sqlx::query_scalar::<_, Uuid>("SELECT user_id FROM queue_entries WHERE drop_id = $1")
            .bind(drop.id.0)
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .into_iter()
            .map(UserId)
            .collect()
    };
    assert_eq!(users.len(), 40);
    let mut entries = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let store = if i % 2 == 0 { &a } else { &b };
        entries.push(store.queue_entry(drop.id, *user).await.unwrap().unwrap());
    }
    entries.sort_by_key(|e| e.position);
    assert_eq!(
        entries.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=40).collect::<Vec<u64>>()
    );
    assert_eq!(entries[0].admit_at, fixtures::at(600));
    for pair in entries.windows(2) {
        assert!(
            pair[1].admit_at - pair[0].admit_at >= room.interval(),
            "admissions {} and {} closer than the interval",
            pair[0].position,
            pair[1].position
        );
    }
    for entry in &entries[10..] {
        assert!(
            entry.admit_at >= entry.joined_at,
            "not admitted before joining"
        );
    }
    // Joining again keeps the place.
    let (user, now, key) = late[0];
    let before = a.queue_entry(drop.id, user).await.unwrap().unwrap();
    let again = b
        .join_queue(drop.id, user, now + chrono::Duration::seconds(5), key)
        .await
        .unwrap();
    assert_eq!(again, QueueOutcome::Joined(before));
    let last = entries[39].admit_at;
    assert_eq!(a.admitted_through(drop.id, last).await.unwrap(), 40);
    assert_eq!(
        b.admitted_through(drop.id, last - chrono::Duration::milliseconds(1))
            .await
            .unwrap(),
        39
    );
}
