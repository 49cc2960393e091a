//! Placing, settling and reading orders, with idempotency keys.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::idempotency::replay;
use super::Livedrop;
use crate::error::{Error, Result};
use crate::id::{DropId, OrderId};
use crate::model::{
    Actor, ExtendOutcome, Order, OrderStatus, PlaceOutcome, SettleOutcome, Settlement,
    SkuResolution, Variant,
};
use crate::page::{Page, PageRequest};

/// The most units one order may ask for.
pub(crate) const MAX_QUANTITY: u32 = 10_000;

/// An order request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PlaceOrder {
    /// The drop to order from.
    pub drop_id: DropId,
    /// Units, 1 to 10,000.
    pub quantity: u32,
    /// The variant; may be left out on a drop of one variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// The waiting room's admission token, on a drop behind one. Not part of the
    /// request's fingerprint: a retry with a fresh token replays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission_token: Option<String>,
}

impl PlaceOrder {
    /// The request fingerprint stored with its idempotency key.
    pub fn fingerprint(&self) -> String {
        // The id and the quantity are written in their display form, from stack
        // buffers: no allocation but the hex digest's.
        let mut h = Sha256::new();
        h.update(b"POST /orders\n");
        let mut id = uuid::Uuid::encode_buffer();
        h.update(self.drop_id.0.hyphenated().encode_lower(&mut id).as_bytes());
        h.update(b"\n");
        let mut digits = [0u8; 10];
        let mut at = digits.len();
        let mut n = self.quantity;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        h.update(&digits[at..]);
        if let Some(sku) = &self.sku {
            h.update(b"\nsku=");
            h.update(sku.as_bytes());
        }
        lower_hex(&h.finalize())
    }
}

/// `bytes` in lower-case hex, as [`hex::encode`] spells them, by table.
fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    text
}

/// Checks an idempotency key: 1 to 255 visible ASCII characters.
pub fn check_idempotency_key(key: Option<&str>) -> Result<&str> {
    let key = key.ok_or(Error::IdempotencyKeyMissing)?;
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            "Idempotency-Key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(key)
}

impl Livedrop {
    /// Places an order, reserving stock for the hold period.
    ///
    /// `idempotency_key` is required. The same key with the same request replays the
    /// first outcome (success or rejection) without reserving again; with another
    /// request it is [`Error::IdempotencyKeyReused`]; while the first request runs it
    /// is [`Error::IdempotencyKeyInFlight`]. The stock decision is made only by the
    /// authoritative store, never by the cache.
    pub async fn place_order(
        &self,
        actor: &Actor,
        idempotency_key: Option<&str>,
        request: PlaceOrder,
    ) -> Result<Order> {
        let key = check_idempotency_key(idempotency_key)?;
        if request.quantity == 0 || request.quantity > MAX_QUANTITY {
            return Err(Error::invalid("quantity", "quantity must be 1 to 10000"));
        }
        check_sku(request.sku.as_deref())?;
        let fingerprint = request.fingerprint();
        match self.reserve(actor, key, &fingerprint, &request).await? {
            Decided::Kept(answer) => answer,
            // Kept under the key through the idempotency protocol; an order an
            // earlier attempt placed under the key (its answer lost) wins over it.
            Decided::Refused(refusal) => self
                .idempotently(actor.id, key, &fingerprint, || {
                    self.placed_under_key(actor, key, &fingerprint, refusal)
                })
                .await
                .map(|placed| placed.value),
        }
    }

    /// Decides an order request. The store decides and keeps the answer under the
    /// key in one step (see [`OrderRepository::place_order`](crate::ports::OrderRepository::place_order)):
    /// an order costs one share of one store transaction. What is refused before the
    /// store decides comes back to be kept under the key.
    async fn reserve(
        &self,
        actor: &Actor,
        key: &str,
        fingerprint: &str,
        request: &PlaceOrder,
    ) -> Result<Decided> {
        let ports = self.ports();
        let drop = match self.drop_definition(request.drop_id).await {
            Ok(drop) => drop,
            Err(refusal) if !refusal.is_transient() => return Ok(Decided::Refused(refusal)),
            Err(e) => return Err(e),
        };
        let sku = match drop.resolve_sku(request.sku.as_deref()) {
            SkuResolution::Found(sku) => sku.to_owned(),
            SkuResolution::Unknown => return Ok(Decided::Refused(Error::not_found("variant"))),
            SkuResolution::Required => return Ok(Decided::Refused(sku_required())),
        };
        let admitted = if drop.draw.is_some() {
            Err(Error::DropIsDraw)
        } else {
            self.check_admission(&drop, actor.id, request.admission_token.as_deref())
        };
        if let Err(refusal) = admitted {
            return Ok(Decided::Refused(refusal));
        }
        let now = self.now();
        if !drop.accepts_orders_at(now) {
            let stock = self.displayed_stock(drop.id).await?;
            return Ok(Decided::Refused(Error::DropNotLive {
                status: drop.status_at(now, &stock),
            }));
        }
        match ports.gate.admit(drop.id, &sku, request.quantity).await {
            Ok(true) => {}
            Ok(false) => {
                let available = match self.drop_view(drop.id).await {
                    Ok(view) => view
                        .stock_of(&sku)
                        .map_or(0, |s| s.available.min(request.quantity - 1)),
                    Err(_) => 0,
                };
                return Ok(Decided::Refused(Error::OutOfStock {
                    available,
                    requested: request.quantity,
                }));
            }
            Err(e) => tracing::debug!(error = %e, "admission gate unavailable; admitting"),
        }
        let order = Order {
            id: OrderId::new(),
            user_id: actor.id,
            drop_id: drop.id,
            sku,
            quantity: request.quantity,
            unit_price_cents: drop.price_cents,
            total_cents: drop.price_cents.saturating_mul(i64::from(request.quantity)),
            currency: drop.currency.clone(),
            status: OrderStatus::Reserved,
            idempotency_key: key.to_owned(),
            fingerprint: fingerprint.to_owned(),
            reserved_until: now + self.hold(),
            created_at: now,
            updated_at: now,
            extended_at: None,
        };
        Ok(match ports.orders.place_order(&order, now).await? {
            PlaceOutcome::Placed(order) => {
                tracing::debug!(order = %order.id, drop = %order.drop_id, "order placed");
                Decided::Kept(Ok(order))
            }
            PlaceOutcome::Duplicate(existing) if existing.fingerprint == fingerprint => {
                Decided::Kept(Ok(existing))
            }
            PlaceOutcome::Duplicate(_) | PlaceOutcome::KeyReused => {
                Decided::Kept(Err(Error::IdempotencyKeyReused))
            }
            PlaceOutcome::KeyInFlight => Decided::Kept(Err(Error::IdempotencyKeyInFlight)),
            PlaceOutcome::Replayed(record) => Decided::Kept(replay(record)),
            PlaceOutcome::NotLive => {
                let view = ports.drops.drop_view(drop.id).await?;
                let status = view
                    .map(|v| v.status_at(now))
                    .unwrap_or(crate::model::DropStatus::Ended);
                Decided::Refused(Error::DropNotLive { status })
            }
            PlaceOutcome::DropNotFound => Decided::Refused(Error::not_found("drop")),
            PlaceOutcome::UnknownVariant => Decided::Refused(Error::not_found("variant")),
            refused @ (PlaceOutcome::OutOfStock { .. } | PlaceOutcome::LimitExceeded { .. }) => {
                Decided::Kept(Err(store_refusal(&refused, request.quantity)
                    .unwrap_or_else(|| {
                        Error::internal("a store refusal without its error")
                    })))
            }
        })
    }

    /// Before an early refusal (drop not live, the sold-out gate, no such drop): the
    /// order an earlier attempt with this key already placed, if any. An attempt whose
    /// answer was lost (the caller saw `unavailable`, its key was released) may have
    /// placed the order; its retry must get that order, not a refusal decided on
    /// what changed since. The store's own checks already put the key first.
    async fn placed_under_key(
        &self,
        actor: &Actor,
        key: &str,
        fingerprint: &str,
        refusal: Error,
    ) -> Result<Order> {
        match self.ports().orders.order_by_key(actor.id, key).await? {
            Some(existing) if existing.fingerprint == fingerprint => Ok(existing),
            Some(_) => Err(Error::IdempotencyKeyReused),
            None => Err(refusal),
        }
    }

    /// The order with `id`, if the actor is its buyer or an admin.
    pub async fn order(&self, actor: &Actor, id: OrderId) -> Result<Order> {
        match self.ports().orders.order(id).await? {
            Some(order) if order.user_id == actor.id || actor.is_admin() => Ok(order),
            // Someone else's order is reported as missing: ids are not disclosed.
            _ => Err(Error::not_found("order")),
        }
    }

    /// The actor's orders, newest first.
    pub async fn my_orders(&self, actor: &Actor, page: PageRequest) -> Result<Page<Order>> {
        Ok(self.ports().orders.orders_for_user(actor.id, page).await?)
    }

    /// Confirms a reserved order (payment done): its units become sold. Confirming
    /// twice returns the confirmed order.
    pub async fn confirm_order(&self, actor: &Actor, id: OrderId) -> Result<Order> {
        self.settle(actor, id, Settlement::Confirm).await
    }

    /// Cancels a reserved order: its units return to the drop. Cancelling twice
    /// returns the cancelled order.
    pub async fn cancel_order(&self, actor: &Actor, id: OrderId) -> Result<Order> {
        self.settle(actor, id, Settlement::Cancel).await
    }

    /// Extends a reserved order's hold by the hold period (`Config::hold`), once per
    /// order: for checkouts that leave for a payment page and come back. Only while
    /// the order is reserved ([`Error::OrderNotReserved`]) and its hold has not run
    /// out by the clock ([`Error::HoldExpired`]); a second extension is
    /// [`Error::AlreadyExtended`]. Only the buyer (or an admin) may extend; someone
    /// else's order is not found.
    pub async fn extend_order(&self, actor: &Actor, id: OrderId) -> Result<Order> {
        self.order(actor, id).await?;
        let now = self.now();
        match self
            .ports()
            .orders
            .extend_hold(id, self.hold(), now)
            .await?
        {
            ExtendOutcome::Extended(order) => {
                tracing::debug!(order = %order.id, until = %order.reserved_until, "hold extended");
                Ok(order)
            }
            ExtendOutcome::NotReserved(order) => Err(Error::OrderNotReserved {
                status: order.status,
                action: "extended".into(),
            }),
            ExtendOutcome::HoldExpired(_) => Err(Error::HoldExpired),
            ExtendOutcome::AlreadyExtended(order) => Err(Error::AlreadyExtended {
                reserved_until: order.reserved_until,
            }),
            ExtendOutcome::NotFound => Err(Error::not_found("order")),
        }
    }

    async fn settle(&self, actor: &Actor, id: OrderId, settlement: Settlement) -> Result<Order> {
        self.order(actor, id).await?;
        let now = self.now();
        match self
            .ports()
            .orders
            .settle_order(id, settlement, now, self.hold())
            .await?
        {
            SettleOutcome::Settled(order) | SettleOutcome::Unchanged(order) => Ok(order),
            SettleOutcome::Conflict(order) => Err(Error::OrderNotReserved {
                status: order.status,
                action: match settlement {
                    Settlement::Confirm => "confirmed".into(),
                    Settlement::Cancel => "cancelled".into(),
                },
            }),
            SettleOutcome::HoldExpired(_) => Err(Error::HoldExpired),
            SettleOutcome::NotFound => Err(Error::not_found("order")),
        }
    }
}

/// How an order request was answered by [`Livedrop::reserve`].
enum Decided {
    /// Final and kept under the key by the store (or replayed from it).
    Kept(Result<Order>),
    /// Refused before the store kept an answer under the key.
    Refused(Error),
}

/// The refusal of a request of `requested` units that the store decided and keeps
/// under the order's key: `LimitExceeded` and `OutOfStock`.
pub(crate) fn store_refusal(outcome: &PlaceOutcome, requested: u32) -> Option<Error> {
    match *outcome {
        PlaceOutcome::OutOfStock { available } => Some(Error::OutOfStock {
            available,
            requested,
        }),
        PlaceOutcome::LimitExceeded { limit, held } => Some(Error::PerUserLimitExceeded {
            limit,
            held,
            requested,
        }),
        _ => None,
    }
}

/// Checks a requested sku, when there is one: 1 to 64 characters of letters,
/// digits, `.`, `_` and `-` (`400`, not `404`: no sku could be spelled so).
pub(crate) fn check_sku(sku: Option<&str>) -> Result<()> {
    match sku {
        Some(sku) if !Variant::is_valid_sku(sku) => Err(Error::invalid(
            "sku",
            "sku must be 1 to 64 characters of letters, digits, '.', '_' and '-'",
        )),
        _ => Ok(()),
    }
}

/// The refusal of an order or adjustment that names no variant of a drop that has
/// several.
pub(crate) fn sku_required() -> Error {
    Error::invalid("sku", "sku is required: this drop has several variants")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest of the request as text: what fingerprints kept by earlier versions
    /// were computed from.
    fn spelled_out(request: &PlaceOrder) -> String {
        let mut text = format!("POST /orders\n{}\n{}", request.drop_id, request.quantity);
        if let Some(sku) = &request.sku {
            text.push_str(&format!("\nsku={sku}"));
        }
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    #[test]
    fn a_fingerprint_digests_the_request_as_text() {
        let drop_id = DropId::new();
        for (quantity, sku) in [
            (1, None),
            (10, Some("eu-42")),
            (907, None),
            (MAX_QUANTITY, Some("m")),
            (u32::MAX, None),
        ] {
            let request = PlaceOrder {
                drop_id,
                quantity,
                sku: sku.map(str::to_owned),
                admission_token: Some("t".into()),
            };
            assert_eq!(request.fingerprint(), spelled_out(&request), "{request:?}");
        }
        let one = PlaceOrder {
            drop_id,
            quantity: 1,
            sku: None,
            admission_token: None,
        };
        let eleven = PlaceOrder {
            quantity: 11,
            ..one.clone()
        };
        assert_ne!(one.fingerprint(), eleven.fingerprint());
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(lower_hex(&bytes), hex::encode(&bytes));
    }
}
