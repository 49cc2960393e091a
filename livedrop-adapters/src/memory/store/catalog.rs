//! Products, drops and stock outside orders.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use livedrop_core::event::{Event, EventType};
use livedrop_core::id::{DropId, ProductId};
use livedrop_core::model::{
    self, AdjustOutcome, Adjustment, DropFilter, DropState, DropView, LedgerEntry, LedgerKind,
    Product, ProductFilter, Stock,
};
use livedrop_core::page::{Page, PageRequest};
use livedrop_core::ports::{DropRepository, InventoryRepository, ProductRepository, UpdateOutcome};
use livedrop_core::{StoreError, StoreResult, Timestamp};
use uuid::Uuid;

use super::{keyset_page, DrawBook, DropRow, MemoryStore, State, VariantRow};

/// Whether the scheduler may still have to move a drop in this state.
fn is_open(state: DropState) -> bool {
    matches!(state, DropState::Scheduled | DropState::Live)
}

impl State {
    fn drop_view(&self, id: DropId) -> Option<DropView> {
        self.drops
            .lock(id)
            .map(|row| DropView::new(row.drop.clone(), row.variant_stock()))
    }
}

#[async_trait]
impl ProductRepository for MemoryStore {
    async fn insert_product(&self, product: &Product, events: &[Event]) -> StoreResult<()> {
        self.write(|state| {
            if state.products.contains_key(&product.id) {
                return Err(StoreError::Conflict(format!(
                    "product {} exists",
                    product.id
                )));
            }
            state.products.insert(product.id, product.clone());
            state
                .product_index
                .insert((product.created_at, product.id.0));
            state.append(events.iter().cloned());
            Ok(())
        })
    }

    async fn product(&self, id: ProductId) -> StoreResult<Option<Product>> {
        Ok(self.read().products.get(&id).cloned())
    }

    async fn update_product(
        &self,
        product: &Product,
        events: &[Event],
    ) -> StoreResult<UpdateOutcome> {
        self.write(|state| {
            let Some(stored) = state.products.get_mut(&product.id) else {
                return Ok(UpdateOutcome::NotFound);
            };
            if stored.version != product.version - 1 {
                return Ok(UpdateOutcome::VersionMismatch {
                    current: stored.version,
                });
            }
            // The creation time is the listing key and never changes.
            let created_at = stored.created_at;
            *stored = Product {
                created_at,
                ..product.clone()
            };
            state.append(events.iter().cloned());
            Ok(UpdateOutcome::Updated)
        })
    }

    async fn list_products(
        &self,
        filter: &ProductFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Product>> {
        let state = self.read();
        Ok(keyset_page(
            Some(&state.product_index),
            page,
            |(_, id)| {
                state.products.get(&ProductId(*id)).filter(|p| {
                    filter.creator_id.is_none_or(|c| c == p.creator_id) && p.matches(&filter.terms)
                })
            },
            |p| p.cursor(),
        )
        .map(Product::clone))
    }
}

impl MemoryStore {
    /// Stores a new drop (a draw drop with its secret `seed`), as
    /// [`DropRepository::insert_drop`] documents.
    pub(super) fn insert(
        &self,
        drop: &model::Drop,
        stock: &[u32],
        seed: Option<&str>,
        events: &[Event],
    ) -> StoreResult<()> {
        if stock.len() != drop.variants.len() {
            return Err(StoreError::backend(format!(
                "drop {} has {} variants and {} stock figures",
                drop.id,
                drop.variants.len(),
                stock.len()
            )));
        }
        self.write(|state| {
            if state.drops.contains_key(&drop.id) {
                return Err(StoreError::Conflict(format!("drop {} exists", drop.id)));
            }
            let mut ledger = BTreeMap::new();
            let mut variants = Vec::with_capacity(stock.len());
            for (variant, total) in drop.variants.iter().zip(stock) {
                let entry = LedgerEntry {
                    id: Uuid::now_v7(),
                    drop_id: drop.id,
                    sku: variant.sku.clone(),
                    kind: LedgerKind::Initial,
                    delta: i64::from(*total),
                    reason: "initial stock".to_owned(),
                    actor_id: Some(drop.creator_id),
                    stock_after: Stock::new(*total),
                    created_at: drop.created_at,
                };
                state.ledger_ids.insert(entry.id);
                ledger.insert((entry.created_at, entry.id), entry);
                variants.push(VariantRow {
                    sku: Arc::from(variant.sku.as_str()),
                    stock: Stock::new(*total),
                    // The initial stock is the variant's first stock version.
                    version: 1,
                    line: BTreeMap::new(),
                });
            }
            state.drop_index.insert((drop.created_at, drop.id.0));
            if is_open(drop.state) {
                state.open_drops.insert((drop.starts_at, drop.id.0));
            }
            state.drops.insert(
                drop.id,
                DropRow {
                    drop: drop.clone(),
                    variants,
                    held: Default::default(),
                    holds: Default::default(),
                    ledger,
                    waiting: Default::default(),
                    draw: seed.map(|seed| DrawBook {
                        seed: seed.to_owned(),
                        ..DrawBook::default()
                    }),
                    queue: Default::default(),
                },
            );
            state.append(events.iter().cloned());
            Ok(())
        })
    }
}

#[async_trait]
impl DropRepository for MemoryStore {
    async fn insert_drop(
        &self,
        drop: &model::Drop,
        stock: &[u32],
        events: &[Event],
    ) -> StoreResult<()> {
        self.insert(drop, stock, None, events)
    }

    async fn drop_by_id(&self, id: DropId) -> StoreResult<Option<model::Drop>> {
        Ok(self.read().drops.lock(id).map(|row| row.drop.clone()))
    }

    async fn drop_view(&self, id: DropId) -> StoreResult<Option<DropView>> {
        Ok(self.read().drop_view(id))
    }

    async fn list_drops(
        &self,
        filter: &DropFilter,
        now: Timestamp,
        page: PageRequest,
    ) -> StoreResult<Page<DropView>> {
        let state = self.read();
        Ok(keyset_page(
            Some(&state.drop_index),
            page,
            |(_, id)| {
                state
                    .drop_view(DropId(*id))
                    .filter(|view| filter.accepts(view, now))
            },
            |view| view.drop.cursor(),
        ))
    }

    async fn transition(
        &self,
        id: DropId,
        from: &[DropState],
        to: DropState,
        events: &[Event],
    ) -> StoreResult<bool> {
        self.write(|state| {
            let Some(row) = state.drops.get_mut(&id) else {
                return Ok(false);
            };
            if !from.contains(&row.drop.state) {
                return Ok(false);
            }
            row.drop.state = to;
            let key = (row.drop.starts_at, id.0);
            let ends_at = row.drop.ends_at;
            // Ending or cancelling closes the waitlists, in join order per variant.
            let closed: Vec<_> = if matches!(to, DropState::Ended | DropState::Cancelled) {
                let mut users: Vec<_> = row.waiting.iter().map(|(u, w)| (w.seq, *u)).collect();
                users.sort_unstable();
                users
                    .into_iter()
                    .filter_map(|(_, user)| row.entry(user))
                    .collect()
            } else {
                Vec::new()
            };
            if !closed.is_empty() {
                row.waiting.clear();
                for variant in &mut row.variants {
                    variant.line.clear();
                }
            }
            if is_open(to) {
                state.open_drops.insert(key);
            } else {
                state.open_drops.remove(&key);
            }
            state.append(events.iter().cloned());
            let at = events.first().map_or(ends_at, |e| e.occurred_at);
            state.append(
                closed
                    .iter()
                    .map(|entry| Event::waitlist(EventType::WaitlistClosed, entry, None, at)),
            );
            Ok(true)
        })
    }

    async fn due_transitions(&self, now: Timestamp, limit: u32) -> StoreResult<Vec<model::Drop>> {
        let state = self.read();
        // Sorted by start: once a drop starts after `now`, no later one is due
        // (a drop ends after it starts).
        Ok(state
            .open_drops
            .iter()
            .take_while(|(starts_at, _)| *starts_at <= now)
            .filter_map(|(_, id)| state.drops.lock(DropId(*id)))
            .filter(|row| match row.drop.state {
                DropState::Scheduled => row.drop.starts_at <= now,
                DropState::Live => row.drop.ends_at <= now,
                DropState::Ended | DropState::Cancelled => false,
            })
            .take(limit as usize)
            .map(|row| row.drop.clone())
            .collect())
    }
}

#[async_trait]
impl InventoryRepository for MemoryStore {
    async fn stock(&self, drop: DropId) -> StoreResult<Option<Vec<Stock>>> {
        Ok(self.read().drops.lock(drop).map(|row| row.variant_stock()))
    }

    async fn adjust(&self, adjustment: &Adjustment) -> StoreResult<AdjustOutcome> {
        self.write(|state| {
            let Some(row) = state.drops.get_mut(&adjustment.drop_id) else {
                return Ok(AdjustOutcome::DropNotFound);
            };
            let Some(variant) = row.variant(&adjustment.sku) else {
                return Ok(AdjustOutcome::UnknownVariant);
            };
            if state.ledger_ids.contains(&adjustment.entry_id) {
                return Err(StoreError::Conflict(format!(
                    "ledger entry {} exists",
                    adjustment.entry_id
                )));
            }
            let stock = row.variants[variant].stock;
            let magnitude = u32::try_from(adjustment.delta.unsigned_abs()).ok();
            let after = if adjustment.delta >= 0 {
                let grown = magnitude.and_then(|m| {
                    Some(Stock {
                        total: stock.total.checked_add(m)?,
                        available: stock.available.checked_add(m)?,
                        ..stock
                    })
                });
                let Some(after) = grown else {
                    return Err(StoreError::Conflict(format!(
                        "a restock of {} overflows the stock of drop {}",
                        adjustment.delta, adjustment.drop_id
                    )));
                };
                after
            } else {
                match magnitude.filter(|m| *m <= stock.available) {
                    Some(m) => Stock {
                        total: stock.total - m,
                        available: stock.available - m,
                        ..stock
                    },
                    None => {
                        return Ok(AdjustOutcome::Insufficient {
                            available: stock.available,
                        })
                    }
                }
            };
            let restock = (adjustment.delta > 0).then_some(adjustment.hold);
            let Some(after) =
                state.move_stock(adjustment.drop_id, variant, adjustment.at, restock, |s| {
                    *s = after
                })
            else {
                return Ok(AdjustOutcome::DropNotFound);
            };
            let entry = adjustment.ledger_entry(after);
            state.ledger_ids.insert(entry.id);
            if let Some(row) = state.drops.get_mut(&adjustment.drop_id) {
                row.ledger
                    .insert((entry.created_at, entry.id), entry.clone());
            }
            Ok(AdjustOutcome::Applied(entry))
        })
    }

    async fn ledger(&self, drop: DropId, page: PageRequest) -> StoreResult<Page<LedgerEntry>> {
        let state = self.read();
        let Some(row) = state.drops.lock(drop) else {
            return Ok(Page {
                items: Vec::new(),
                next_cursor: None,
            });
        };
        let upper = match page.after {
            Some(c) => std::ops::Bound::Excluded((c.at, c.id)),
            None => std::ops::Bound::Unbounded,
        };
        let items = row
            .ledger
            .range((std::ops::Bound::Unbounded, upper))
            .rev()
            .take(page.limit as usize + 1)
            .map(|(_, entry)| entry.clone())
            .collect();
        Ok(Page::from_overfetch(items, page.limit, LedgerEntry::cursor))
    }
}
