//! Stock movements outside orders (internal API) and their audit ledger.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Livedrop;
use crate::cache;
use crate::error::{Error, Result, StoreError};
use crate::id::DropId;
use crate::model::{Actor, AdjustOutcome, Adjustment, LedgerEntry, SkuResolution};
use crate::page::{Page, PageRequest};

/// A restock (positive `delta`) or shrink (negative `delta`) with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockAdjustment {
    /// Signed change of the drop's total and available units.
    pub delta: i64,
    /// Why, 1 to 500 characters; kept in the ledger.
    pub reason: String,
    /// The variant whose stock moves; may be left out on a drop of one variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
}

fn require_operator(by: Option<&Actor>) -> Result<()> {
    match by {
        None => Ok(()),
        Some(actor) if actor.is_admin() => Ok(()),
        Some(_) => Err(Error::forbidden(
            "only the operator or an admin may adjust stock",
        )),
    }
}

impl Livedrop {
    /// Restocks or shrinks a drop, atomically with a ledger entry. `by` is the admin
    /// acting, or `None` for the operator (the internal API).
    pub async fn adjust_stock(
        &self,
        by: Option<&Actor>,
        drop: DropId,
        adjustment: StockAdjustment,
    ) -> Result<LedgerEntry> {
        require_operator(by)?;
        if adjustment.delta == 0
            || adjustment.delta.unsigned_abs() > u64::from(super::catalog::MAX_STOCK)
        {
            return Err(Error::invalid(
                "delta",
                "delta must be non-zero and at most 10000000 in size",
            ));
        }
        crate::text::check_text("reason", &adjustment.reason)?;
        let reason = adjustment.reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(Error::invalid(
                "reason",
                "reason must be 1 to 500 characters",
            ));
        }
        let definition = self
            .ports()
            .drops
            .drop_by_id(drop)
            .await?
            .ok_or_else(|| Error::not_found("drop"))?;
        let sku = match definition.resolve_sku(adjustment.sku.as_deref()) {
            SkuResolution::Found(sku) => sku.to_owned(),
            SkuResolution::Unknown => return Err(Error::not_found("variant")),
            SkuResolution::Required => return Err(super::orders::sku_required()),
        };
        let keyed = super::idempotency::keyed_id("ledger_entry");
        let request = Adjustment {
            drop_id: drop,
            sku,
            delta: adjustment.delta,
            reason: reason.to_owned(),
            actor_id: by.map(|a| a.id),
            entry_id: keyed.unwrap_or_else(Uuid::now_v7),
            at: self.now(),
            hold: self.hold(),
        };
        let outcome = match self.ports().inventory.adjust(&request).await {
            Err(StoreError::Conflict(conflict)) if keyed.is_some() => {
                // An earlier run under this idempotency key made this very entry.
                match self.ledger_entry(drop, request.entry_id).await? {
                    Some(entry) => {
                        // That run's answer (and its invalidation) may have been lost.
                        self.cache()
                            .invalidate(&[cache::stock_key(drop)], &[])
                            .await;
                        return Ok(entry);
                    }
                    None => return Err(StoreError::Conflict(conflict).into()),
                }
            }
            outcome => outcome?,
        };
        match outcome {
            AdjustOutcome::Applied(entry) => {
                if entry.stock_after.total > super::catalog::MAX_STOCK {
                    tracing::warn!(drop = %drop, total = entry.stock_after.total, "drop stock above the usual maximum");
                }
                self.cache()
                    .invalidate(&[cache::stock_key(drop)], &[])
                    .await;
                Ok(entry)
            }
            AdjustOutcome::Insufficient { available } => Err(Error::InsufficientStock {
                available,
                requested: adjustment
                    .delta
                    .unsigned_abs()
                    .try_into()
                    .unwrap_or(u32::MAX),
            }),
            AdjustOutcome::DropNotFound => Err(Error::not_found("drop")),
            AdjustOutcome::UnknownVariant => Err(Error::not_found("variant")),
        }
    }

    /// The ledger entry `id` of `drop`, looked for from the newest.
    async fn ledger_entry(&self, drop: DropId, id: Uuid) -> Result<Option<LedgerEntry>> {
        let mut page = PageRequest::first(100);
        loop {
            let found = self.ports().inventory.ledger(drop, page).await?;
            if let Some(entry) = found.items.into_iter().find(|e| e.id == id) {
                return Ok(Some(entry));
            }
            match found.next_cursor {
                Some(cursor) => page = page.after(Some(cursor)),
                None => return Ok(None),
            }
        }
    }

    /// The drop's ledger of stock movements, newest first.
    pub async fn ledger(
        &self,
        by: Option<&Actor>,
        drop: DropId,
        page: PageRequest,
    ) -> Result<Page<LedgerEntry>> {
        require_operator(by)?;
        if self.ports().drops.drop_by_id(drop).await?.is_none() {
            return Err(Error::not_found("drop"));
        }
        Ok(self.ports().inventory.ledger(drop, page).await?)
    }

    /// Removes cached entries by key and by prefix (internal API). Returns how many.
    pub async fn invalidate_cache(&self, keys: &[String], prefixes: &[String]) -> u64 {
        let prefixes: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        self.cache().invalidate(keys, &prefixes).await
    }
}
