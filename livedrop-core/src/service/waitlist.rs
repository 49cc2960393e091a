//! Waitlists of first-come drops: a buyer waits for a sold-out variant, and units
//! that come back go to those waiting, in join order, in the store's atomic step
//! (see [`OrderRepository::settle_order`](crate::ports::OrderRepository::settle_order)).

use serde::{Deserialize, Serialize};

use super::orders::{sku_required, MAX_QUANTITY};
use super::Livedrop;
use crate::error::{Error, Result};
use crate::id::DropId;
use crate::model::{Actor, JoinOutcome, SkuResolution, WaitlistEntry, WaitlistJoin};

/// A request to wait for units of a variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JoinWaitlist {
    /// The variant; may be left out on a drop of one variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// Units wanted, 1 to 10,000.
    pub quantity: u32,
}

impl Livedrop {
    /// Puts the actor on the waitlist of a sold-out variant of a live drop
    /// ([`Error::VariantAvailable`] while anyone may buy it). Joining again with the
    /// same variant replaces the quantity and keeps the place.
    pub async fn join_waitlist(
        &self,
        actor: &Actor,
        drop: DropId,
        request: JoinWaitlist,
    ) -> Result<WaitlistEntry> {
        if request.quantity == 0 || request.quantity > MAX_QUANTITY {
            return Err(Error::invalid("quantity", "quantity must be 1 to 10000"));
        }
        super::orders::check_sku(request.sku.as_deref())?;
        let definition = self.drop_definition(drop).await?;
        if definition.draw.is_some() {
            return Err(Error::DropIsDraw);
        }
        let sku = match definition.resolve_sku(request.sku.as_deref()) {
            SkuResolution::Found(sku) => sku.to_owned(),
            SkuResolution::Unknown => return Err(Error::not_found("variant")),
            SkuResolution::Required => return Err(sku_required()),
        };
        let now = self.now();
        let join = WaitlistJoin {
            drop_id: drop,
            sku: sku.clone(),
            user_id: actor.id,
            quantity: request.quantity,
            at: now,
        };
        match self.ports().waitlists.join_waitlist(&join).await? {
            JoinOutcome::Joined(entry) => Ok(entry),
            JoinOutcome::DropNotFound => Err(Error::not_found("drop")),
            JoinOutcome::UnknownVariant => Err(Error::not_found("variant")),
            JoinOutcome::NotLive => {
                let view = self.ports().drops.drop_view(drop).await?;
                let status = view
                    .map(|v| v.status_at(now))
                    .unwrap_or(crate::model::DropStatus::Ended);
                Err(Error::DropNotLive { status })
            }
            JoinOutcome::VariantAvailable { available } => {
                Err(Error::VariantAvailable { sku, available })
            }
            JoinOutcome::LimitExceeded { limit, held } => Err(Error::PerUserLimitExceeded {
                limit,
                held,
                requested: request.quantity,
            }),
        }
    }

    /// The actor's place in the drop's waitlists; not found when not waiting.
    pub async fn waitlist_entry(&self, actor: &Actor, drop: DropId) -> Result<WaitlistEntry> {
        self.ports()
            .waitlists
            .waitlist_entry(drop, actor.id)
            .await?
            .ok_or_else(|| Error::not_found("waitlist entry"))
    }

    /// Takes the actor off the drop's waitlists. Leaving when not waiting is not
    /// found.
    pub async fn leave_waitlist(&self, actor: &Actor, drop: DropId) -> Result<()> {
        if self
            .ports()
            .waitlists
            .leave_waitlist(drop, actor.id)
            .await?
        {
            Ok(())
        } else {
            Err(Error::not_found("waitlist entry"))
        }
    }
}
