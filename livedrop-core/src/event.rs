//! Domain events and their envelope.
//!
//! Stores append events to an outbox in the same atomic step as the state change;
//! a relay publishes them (at least once); every bus drops a redelivered
//! [`Event::id`] through [`Deduplicated`](crate::ports::Deduplicated).
//!
//! On the wire (outbox rows, bus messages) an event is its envelope, [`Event`], with
//! the payload as JSON. Consumers read the payload through [`Event::decode`], which
//! gives an [`EventPayload`]: one variant per [`EventType`], carrying the model type,
//! matched exhaustively so that a new event type is considered wherever events are
//! consumed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::Timestamp;
use crate::id::{DropId, EventId, UserId};
use crate::model::{Drop, Order, Product, Stock, WaitlistEntry};

/// The type of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EventType {
    /// A product was created. Payload: the product.
    #[serde(rename = "product.created")]
    ProductCreated,
    /// A product changed. Payload: the product.
    #[serde(rename = "product.updated")]
    ProductUpdated,
    /// A drop was scheduled. Payload: the drop.
    #[serde(rename = "drop.scheduled")]
    DropScheduled,
    /// A drop went live. Payload: the drop.
    #[serde(rename = "drop.started")]
    DropStarted,
    /// A drop reached its end. Payload: the drop.
    #[serde(rename = "drop.ended")]
    DropEnded,
    /// A variant's available stock reached zero (for a one-variant drop, the drop's).
    /// Payload: [`StockPayload`].
    #[serde(rename = "drop.sold_out")]
    DropSoldOut,
    /// A drop was cancelled. Payload: the drop.
    #[serde(rename = "drop.cancelled")]
    DropCancelled,
    /// A variant's stock moved. Payload: [`StockPayload`].
    #[serde(rename = "stock.changed")]
    StockChanged,
    /// An order reserved stock. Payload: the order.
    #[serde(rename = "order.placed")]
    OrderPlaced,
    /// An order was paid. Payload: the order.
    #[serde(rename = "order.confirmed")]
    OrderConfirmed,
    /// An order was cancelled. Payload: the order.
    #[serde(rename = "order.cancelled")]
    OrderCancelled,
    /// An order's hold ran out. Payload: the order.
    #[serde(rename = "order.expired")]
    OrderExpired,
    /// An order's hold was extended (once per order). Payload: the order.
    #[serde(rename = "order.extended")]
    OrderExtended,
    /// A user followed a creator. Payload: [`FollowPayload`].
    #[serde(rename = "user.followed")]
    UserFollowed,
    /// Units that came back went to a waiting buyer as a reserved order. Payload:
    /// [`WaitlistPayload`] with the order.
    #[serde(rename = "waitlist.offered")]
    WaitlistOffered,
    /// A waiting buyer's entry ended unserved: the per-user limit refused the offer.
    /// Payload: [`WaitlistPayload`].
    #[serde(rename = "waitlist.skipped")]
    WaitlistSkipped,
    /// A waiting buyer's entry ended with the drop (ended or cancelled). Payload:
    /// [`WaitlistPayload`].
    #[serde(rename = "waitlist.closed")]
    WaitlistClosed,
}

impl EventType {
    /// Every event type.
    pub const ALL: [EventType; 17] = [
        EventType::ProductCreated,
        EventType::ProductUpdated,
        EventType::DropScheduled,
        EventType::DropStarted,
        EventType::DropEnded,
        EventType::DropSoldOut,
        EventType::DropCancelled,
        EventType::StockChanged,
        EventType::OrderPlaced,
        EventType::OrderConfirmed,
        EventType::OrderCancelled,
        EventType::OrderExpired,
        EventType::OrderExtended,
        EventType::UserFollowed,
        EventType::WaitlistOffered,
        EventType::WaitlistSkipped,
        EventType::WaitlistClosed,
    ];

    /// The wire name, e.g. `order.placed`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ProductCreated => "product.created",
            EventType::ProductUpdated => "product.updated",
            EventType::DropScheduled => "drop.scheduled",
            EventType::DropStarted => "drop.started",
            EventType::DropEnded => "drop.ended",
            EventType::DropSoldOut => "drop.sold_out",
            EventType::DropCancelled => "drop.cancelled",
            EventType::StockChanged => "stock.changed",
            EventType::OrderPlaced => "order.placed",
            EventType::OrderConfirmed => "order.confirmed",
            EventType::OrderCancelled => "order.cancelled",
            EventType::OrderExpired => "order.expired",
            EventType::OrderExtended => "order.extended",
            EventType::UserFollowed => "user.followed",
            EventType::WaitlistOffered => "waitlist.offered",
            EventType::WaitlistSkipped => "waitlist.skipped",
            EventType::WaitlistClosed => "waitlist.closed",
        }
    }

    /// The aggregate type the event belongs to: `product`, `drop`, `order` or `user`.
    /// Stock and waitlist events belong to their drop, so one drop's stream stays
    /// ordered.
    pub fn aggregate(self) -> &'static str {
        match self {
            EventType::ProductCreated | EventType::ProductUpdated => "product",
            EventType::DropScheduled
            | EventType::DropStarted
            | EventType::DropEnded
            | EventType::DropSoldOut
            | EventType::DropCancelled
            | EventType::StockChanged
            | EventType::WaitlistOffered
            | EventType::WaitlistSkipped
            | EventType::WaitlistClosed => "drop",
            EventType::OrderPlaced
            | EventType::OrderConfirmed
            | EventType::OrderCancelled
            | EventType::OrderExpired
            | EventType::OrderExtended => "order",
            EventType::UserFollowed => "user",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown event type name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown event type {0:?}")]
pub struct UnknownEventType(pub String);

impl FromStr for EventType {
    type Err = UnknownEventType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.to_owned()))
    }
}

/// The envelope every event travels in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id; consumers deduplicate by it.
    pub id: EventId,
    /// The event type.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When the change happened.
    pub occurred_at: Timestamp,
    /// The aggregate changed: a product, drop, order or user id. Also the
    /// partitioning key, so one aggregate's events stay in order.
    pub aggregate_id: Uuid,
    /// The aggregate's version after the change where it keeps one (a product's
    /// version, a drop's stock version), otherwise 1.
    pub version: i64,
    /// Type-specific data, as stored and sent; [`Event::decode`] reads it.
    pub payload: serde_json::Value,
}

/// Payload of `stock.changed` and `drop.sold_out`: one variant's stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockPayload {
    /// The drop.
    pub drop_id: Uuid,
    /// The variant whose stock moved.
    #[serde(default = "crate::model::default_sku")]
    pub sku: String,
    /// The variant's stock after the change.
    pub stock: Stock,
}

/// Payload of `waitlist.offered`, `waitlist.skipped` and `waitlist.closed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitlistPayload {
    /// The drop.
    pub drop_id: DropId,
    /// The variant waited for.
    pub sku: String,
    /// The waiting buyer.
    pub user_id: UserId,
    /// Units the entry wanted.
    pub quantity: u32,
    /// `waitlist.offered`: the reserved order the buyer was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Order>,
}

impl WaitlistPayload {
    /// The payload for `entry`, with the order it was offered, if any.
    pub fn of(entry: &WaitlistEntry, order: Option<&Order>) -> Self {
        Self {
            drop_id: entry.drop_id,
            sku: entry.sku.clone(),
            user_id: entry.user_id,
            quantity: entry.quantity,
            order: order.cloned(),
        }
    }
}

/// Payload of `user.followed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowPayload {
    /// Who follows.
    pub follower_id: UserId,
    /// The creator followed.
    pub creator_id: UserId,
}

/// An event's payload, typed by its [`EventType`]: what [`Event::decode`] gives.
///
/// One variant per event type, named alike. Consumers `match` it without a catch-all
/// arm, so adding an event type makes each of them decide what the new event means.
#[derive(Debug, Clone, PartialEq)]
pub enum EventPayload {
    /// `product.created`: the product.
    ProductCreated(Product),
    /// `product.updated`: the product after the change.
    ProductUpdated(Product),
    /// `drop.scheduled`: the drop.
    DropScheduled(Drop),
    /// `drop.started`: the drop.
    DropStarted(Drop),
    /// `drop.ended`: the drop.
    DropEnded(Drop),
    /// `drop.sold_out`: the drop's stock as it reached zero available.
    DropSoldOut(StockPayload),
    /// `drop.cancelled`: the drop after cancellation.
    DropCancelled(Drop),
    /// `stock.changed`: the drop's stock after the move.
    StockChanged(StockPayload),
    /// `order.placed`: the order.
    OrderPlaced(Order),
    /// `order.confirmed`: the order after payment.
    OrderConfirmed(Order),
    /// `order.cancelled`: the order after cancellation.
    OrderCancelled(Order),
    /// `order.expired`: the order after its hold ran out.
    OrderExpired(Order),
    /// `order.extended`: the order with its hold's new end.
    OrderExtended(Order),
    /// `user.followed`: who followed whom.
    UserFollowed(FollowPayload),
    /// `waitlist.offered`: the entry served and its order.
    WaitlistOffered(WaitlistPayload),
    /// `waitlist.skipped`: the entry the per-user limit ended.
    WaitlistSkipped(WaitlistPayload),
    /// `waitlist.closed`: the entry the drop's end closed.
    WaitlistClosed(WaitlistPayload),
}

impl EventPayload {
    /// Reads the JSON `payload` of an event of type `kind`.
    pub fn decode(kind: EventType, payload: &serde_json::Value) -> Result<Self, PayloadError> {
        let read = || -> serde_json::Result<Self> {
            Ok(match kind {
                EventType::ProductCreated => {
                    Self::ProductCreated(Deserialize::deserialize(payload)?)
                }
                EventType::ProductUpdated => {
                    Self::ProductUpdated(Deserialize::deserialize(payload)?)
                }
                EventType::DropScheduled => Self::DropScheduled(Deserialize::deserialize(payload)?),
                EventType::DropStarted => Self::DropStarted(Deserialize::deserialize(payload)?),
                EventType::DropEnded => Self::DropEnded(Deserialize::deserialize(payload)?),
                EventType::DropSoldOut => Self::DropSoldOut(Deserialize::deserialize(payload)?),
                EventType::DropCancelled => Self::DropCancelled(Deserialize::deserialize(payload)?),
                EventType::StockChanged => Self::StockChanged(Deserialize::deserialize(payload)?),
                EventType::OrderPlaced => Self::OrderPlaced(Deserialize::deserialize(payload)?),
                EventType::OrderConfirmed => {
                    Self::OrderConfirmed(Deserialize::deserialize(payload)?)
                }
                EventType::OrderCancelled => {
                    Self::OrderCancelled(Deserialize::deserialize(payload)?)
                }
                EventType::OrderExpired => Self::OrderExpired(Deserialize::deserialize(payload)?),
                EventType::OrderExtended => Self::OrderExtended(Deserialize::deserialize(payload)?),
                EventType::UserFollowed => Self::UserFollowed(Deserialize::deserialize(payload)?),
                EventType::WaitlistOffered => {
                    Self::WaitlistOffered(Deserialize::deserialize(payload)?)
                }
                EventType::WaitlistSkipped => {
                    Self::WaitlistSkipped(Deserialize::deserialize(payload)?)
                }
                EventType::WaitlistClosed => {
                    Self::WaitlistClosed(Deserialize::deserialize(payload)?)
                }
            })
        };
        read().map_err(|source| PayloadError { kind, source })
    }

    /// The event type this payload belongs to.
    pub fn kind(&self) -> EventType {
        match self {
            Self::ProductCreated(_) => EventType::ProductCreated,
            Self::ProductUpdated(_) => EventType::ProductUpdated,
            Self::DropScheduled(_) => EventType::DropScheduled,
            Self::DropStarted(_) => EventType::DropStarted,
            Self::DropEnded(_) => EventType::DropEnded,
            Self::DropSoldOut(_) => EventType::DropSoldOut,
            Self::DropCancelled(_) => EventType::DropCancelled,
            Self::StockChanged(_) => EventType::StockChanged,
            Self::OrderPlaced(_) => EventType::OrderPlaced,
            Self::OrderConfirmed(_) => EventType::OrderConfirmed,
            Self::OrderCancelled(_) => EventType::OrderCancelled,
            Self::OrderExpired(_) => EventType::OrderExpired,
            Self::OrderExtended(_) => EventType::OrderExtended,
            Self::UserFollowed(_) => EventType::UserFollowed,
            Self::WaitlistOffered(_) => EventType::WaitlistOffered,
            Self::WaitlistSkipped(_) => EventType::WaitlistSkipped,
            Self::WaitlistClosed(_) => EventType::WaitlistClosed,
        }
    }
}

/// An event whose payload does not read as its type's payload.
#[derive(Debug, thiserror::Error)]
#[error("unreadable {kind} payload")]
pub struct PayloadError {
    /// The event's type.
    pub kind: EventType,
    /// What the JSON reader found.
    #[source]
    pub source: serde_json::Error,
}

impl Event {
    /// A new event with a fresh id.
    pub fn new(
        kind: EventType,
        aggregate_id: Uuid,
        version: i64,
        payload: serde_json::Value,
        occurred_at: Timestamp,
    ) -> Self {
        Self {
            id: EventId::new(),
            kind,
            occurred_at,
            aggregate_id,
            version,
            payload,
        }
    }

    /// `product.created` or `product.updated` for `product`.
    pub fn product(kind: EventType, product: &Product, at: Timestamp) -> Self {
        Self::new(kind, product.id.0, product.version, to_value(product), at)
    }

    /// A `drop.*` lifecycle event for `drop`.
    pub fn drop(kind: EventType, drop: &Drop, at: Timestamp) -> Self {
        Self::new(kind, drop.id.0, 1, to_value(drop), at)
    }

    /// An `order.*` event for `order`.
    pub fn order(kind: EventType, order: &Order, at: Timestamp) -> Self {
        Self::new(kind, order.id.0, 1, to_value(order), at)
    }

    /// `user.followed` for `follow`; its aggregate is the follower.
    pub fn follow(follow: &FollowPayload, at: Timestamp) -> Self {
        Self::new(
            EventType::UserFollowed,
            follow.follower_id.0,
            1,
            to_value(follow),
            at,
        )
    }

    /// The typed payload, for consumers to match. Fails for a payload that does not
    /// read as its type's (an event written by hand, or by an incompatible version).
    pub fn decode(&self) -> Result<EventPayload, PayloadError> {
        EventPayload::decode(self.kind, &self.payload)
    }

    /// The events every stock movement of a variant appends, in the same atomic step:
    /// one of each type [`Event::stock_moved_types`] names for the movement, built by
    /// [`Event::stock`]. `version` is the variant's stock version after the change.
    pub fn stock_moved(
        drop_id: Uuid,
        sku: &str,
        before: &Stock,
        after: &Stock,
        version: i64,
        at: Timestamp,
    ) -> Vec<Self> {
        Self::stock_moved_types(before, after)
            .iter()
            .map(|kind| Self::stock(*kind, drop_id, sku, after, version, at))
            .collect()
    }

    /// A `waitlist.*` event about `entry` (with its order for `waitlist.offered`).
    pub fn waitlist(
        kind: EventType,
        entry: &WaitlistEntry,
        order: Option<&Order>,
        at: Timestamp,
    ) -> Self {
        Self::new(
            kind,
            entry.drop_id.0,
            1,
            to_value(&WaitlistPayload::of(entry, order)),
            at,
        )
    }

    /// The event types a stock movement from `before` to `after` appends:
    /// `stock.changed`, and `drop.sold_out` when `available` just reached zero.
    pub fn stock_moved_types(before: &Stock, after: &Stock) -> &'static [EventType] {
        if before.available > 0 && after.available == 0 {
            &[EventType::StockChanged, EventType::DropSoldOut]
        } else {
            &[EventType::StockChanged]
        }
    }

    /// A `stock.changed` or `drop.sold_out` event: variant `sku`'s stock `after` a
    /// movement that made its stock version `version`.
    pub fn stock(
        kind: EventType,
        drop_id: Uuid,
        sku: &str,
        after: &Stock,
        version: i64,
        at: Timestamp,
    ) -> Self {
        let payload = to_value(&StockPayload {
            drop_id,
            sku: sku.to_owned(),
            stock: *after,
        });
        Self::new(kind, drop_id, version, payload, at)
    }

    /// The drop id this event concerns, if any: the aggregate for drop events, the
    /// payload's `drop_id` for order events. Reads only that one field, so it answers
    /// even for a payload [`decode`](Self::decode) refuses: cheap enough to filter a
    /// feed by, and what cache invalidation needs.
    pub fn drop_id(&self) -> Option<Uuid> {
        match self.kind.aggregate() {
            "drop" => Some(self.aggregate_id),
            "order" => self
                .payload
                .get("drop_id")
                .and_then(|v| v.as_str())
                .and_then(|s| Uuid::parse_str(s).ok()),
            _ => None,
        }
    }
}

fn to_value<T: Serialize>(v: &T) -> serde_json::Value {
    // Serializing these plain data types cannot fail (no maps with non-string keys).
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}
