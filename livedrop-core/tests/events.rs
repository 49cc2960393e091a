//! Events: each type is built by its constructor and read back by `Event::decode` as
//! its own `EventPayload` variant, through the wire and back.
//!
//! `cargo test -p livedrop-core --test events`
#![allow(clippy::unwrap_used, missing_docs)]

use serde_json::json;

use livedrop_core::event::{
    DrawPayload, Event, EventPayload, EventType, FollowPayload, StockPayload, WaitlistPayload,
};
use livedrop_core::model::{DrawEntry, DrawResult, DropState, Order, Stock, WaitlistEntry};
use livedrop_core::testing::fixtures::{self, at, T0};
use livedrop_core::UserId;

/// An event of type `kind` built the way the stores and services build it, and
/// the payload it must decode to.
fn sample(kind: EventType) -> (Event, EventPayload) {
    let product = fixtures::product(UserId::new(), "Tee", "A shirt", T0);
    let drop = fixtures::drop_of(&product, T0, at(3_600), 2, DropState::Scheduled, T0);
    let order = fixtures::order(UserId::new(), &drop, 1, "k", T0);
    let before = Stock::new(2);
    let after = Stock {
        available: 0,
        reserved: 2,
        sold: 0,
        total: 2,
    };
    let stock = StockPayload {
        drop_id: drop.id.0,
        sku: "size-42".to_owned(),
        stock: after,
    };
    let moved = Event::stock_moved(drop.id.0, "size-42", &before, &after, 7, T0);
    let entry = WaitlistEntry {
        drop_id: drop.id,
        sku: "size-42".to_owned(),
        user_id: order.user_id,
        quantity: 2,
        joined_at: T0,
        position: 1,
    };
    let offered = Order {
        quantity: 1,
        ..order.clone()
    };
    let of_entry = |wrap: fn(_) -> EventPayload, with: Option<&Order>| {
        (
            Event::waitlist(kind, &entry, with, T0),
            wrap(WaitlistPayload::of(&entry, with)),
        )
    };
    // Each payload variant with the event built for its subject.
    let of_product =
        |wrap: fn(_) -> EventPayload| (Event::product(kind, &product, T0), wrap(product.clone()));
    let of_drop = |wrap: fn(_) -> EventPayload| (Event::drop(kind, &drop, T0), wrap(drop.clone()));
    let of_order =
        |wrap: fn(_) -> EventPayload| (Event::order(kind, &order, T0), wrap(order.clone()));
    match kind {
        EventType::ProductCreated => of_product(EventPayload::ProductCreated),
        EventType::ProductUpdated => of_product(EventPayload::ProductUpdated),
        EventType::DropScheduled => of_drop(EventPayload::DropScheduled),
        EventType::DropStarted => of_drop(EventPayload::DropStarted),
        EventType::DropEnded => of_drop(EventPayload::DropEnded),
        EventType::DropCancelled => of_drop(EventPayload::DropCancelled),
        EventType::DropSoldOut => (moved[1].clone(), EventPayload::DropSoldOut(stock)),
        EventType::StockChanged => (moved[0].clone(), EventPayload::StockChanged(stock)),
        EventType::OrderPlaced => of_order(EventPayload::OrderPlaced),
        EventType::OrderConfirmed => of_order(EventPayload::OrderConfirmed),
        EventType::OrderCancelled => of_order(EventPayload::OrderCancelled),
        EventType::OrderExpired => of_order(EventPayload::OrderExpired),
        EventType::OrderExtended => of_order(EventPayload::OrderExtended),
        EventType::WaitlistOffered => of_entry(EventPayload::WaitlistOffered, Some(&offered)),
        EventType::WaitlistSkipped => of_entry(EventPayload::WaitlistSkipped, None),
        EventType::WaitlistClosed => of_entry(EventPayload::WaitlistClosed, None),
        EventType::DropDrawn => of_drop(EventPayload::DropDrawn),
        EventType::DrawWon | EventType::DrawLost => {
            let entry = DrawEntry {
                drop_id: drop.id,
                user_id: UserId::new(),
                sku: "default".into(),
                quantity: 1,
                token: DrawEntry::new_token(),
                entered_at: T0,
                result: DrawResult::Won,
                rank: Some(1),
                order_id: None,
            };
            let won = fixtures::order(entry.user_id, &drop, 1, "draw", T0);
            let order = (kind == EventType::DrawWon).then_some(&won);
            let payload = DrawPayload {
                entry: entry.clone(),
                order: order.cloned(),
            };
            let wrap = if kind == EventType::DrawWon {
                EventPayload::DrawWon
            } else {
                EventPayload::DrawLost
            };
            (Event::draw(kind, &entry, order, T0), wrap(payload))
        }
        EventType::UserFollowed => {
            let follow = FollowPayload {
                follower_id: UserId::new(),
                creator_id: product.creator_id,
            };
            (
                Event::follow(&follow, T0),
                EventPayload::UserFollowed(follow),
            )
        }
        // `EventType` is non-exhaustive: a type added without a sample fails
        // `every_event_type_decodes_to_its_own_variant`, which walks `EventType::ALL`.
        other => panic!("no sample event for {other}"),
    }
}

#[test]
fn every_event_type_decodes_to_its_own_variant() {
    for kind in EventType::ALL {
        let (event, expected) = sample(kind);
        assert_eq!(event.kind, kind);
        let decoded = event.decode().expect("a constructed event decodes");
        assert_eq!(decoded.kind(), kind, "{kind}");
        assert_eq!(decoded, expected, "{kind}");
        // Through the wire and back: the envelope is unchanged by typing.
        let wire = serde_json::to_string(&event).expect("serialize");
        let back: Event = serde_json::from_str(&wire).expect("deserialize");
        assert_eq!(back.decode().expect("decodes after the wire"), expected);
    }
}

#[test]
fn a_stock_payload_written_before_variants_reads_as_the_default_variant() {
    let drop = uuid::Uuid::now_v7();
    let old = json!({
        "drop_id": drop,
        "stock": { "total": 3, "available": 1, "reserved": 2, "sold": 0 },
    });
    let event = Event::new(EventType::StockChanged, drop, 4, old, T0);
    match event.decode().expect("an old stock payload decodes") {
        EventPayload::StockChanged(moved) => {
            assert_eq!(moved.sku, livedrop_core::model::DEFAULT_SKU);
            assert_eq!(moved.stock.available, 1);
        }
        other => panic!("decoded as {other:?}"),
    }
}

#[test]
fn a_waitlist_offer_names_its_order_and_ends_nothing_else() {
    let product = fixtures::product(UserId::new(), "Tee", "A shirt", T0);
    let drop = fixtures::drop_of(&product, T0, at(3_600), 2, DropState::Live, T0);
    let order = fixtures::order(UserId::new(), &drop, 1, "k", T0);
    let entry = WaitlistEntry {
        drop_id: drop.id,
        sku: "default".to_owned(),
        user_id: order.user_id,
        quantity: 3,
        joined_at: T0,
        position: 1,
    };
    let offered = Event::waitlist(EventType::WaitlistOffered, &entry, Some(&order), T0);
    assert_eq!(
        offered.aggregate_id, drop.id.0,
        "one drop's stream stays ordered"
    );
    assert_eq!(offered.payload["order"]["id"], json!(order.id));
    let closed = Event::waitlist(EventType::WaitlistClosed, &entry, None, T0);
    assert!(
        closed.payload.get("order").is_none(),
        "no order key on an entry that ended unserved"
    );
}

#[test]
fn the_follow_payload_keeps_its_wire_form() {
    let (follower, creator) = (UserId::new(), UserId::new());
    let event = Event::follow(
        &FollowPayload {
            follower_id: follower,
            creator_id: creator,
        },
        T0,
    );
    let by_hand = json!({ "follower_id": follower, "creator_id": creator });
    assert_eq!(event.payload, by_hand);
    assert_eq!(
        serde_json::to_string(&event.payload).expect("serialize"),
        serde_json::to_string(&by_hand).expect("serialize"),
        "same bytes as the payload written before it was typed"
    );
    assert_eq!(event.aggregate_id, follower.0);
    assert_eq!(event.version, 1);
}

#[test]
fn a_payload_of_another_shape_is_refused_with_its_type() {
    let drop = uuid::Uuid::now_v7();
    let event = Event::new(
        EventType::OrderPlaced,
        uuid::Uuid::now_v7(),
        1,
        json!({ "drop_id": drop }),
        T0,
    );
    let err = event.decode().expect_err("not an order");
    assert_eq!(err.kind, EventType::OrderPlaced);
    assert_eq!(err.to_string(), "unreadable order.placed payload");
    // The lenient lookup still finds the drop.
    assert_eq!(event.drop_id(), Some(drop));
    // A stock payload is not read as a drop.
    let (stock_event, _) = sample(EventType::StockChanged);
    assert!(EventPayload::decode(EventType::DropStarted, &stock_event.payload).is_err());
}
