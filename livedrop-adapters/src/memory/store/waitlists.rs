//! Waitlists: joining, reading one's place, leaving. The hand-off lives with the
//! stock movements ([`State::hand_off`](super::State)).

use async_trait::async_trait;
use livedrop_core::id::{DropId, UserId};
use livedrop_core::model::{JoinOutcome, WaitlistEntry, WaitlistJoin};
use livedrop_core::ports::WaitlistRepository;
use livedrop_core::StoreResult;

use super::{MemoryStore, Waiting};

#[async_trait]
impl WaitlistRepository for MemoryStore {
    async fn join_waitlist(&self, join: &WaitlistJoin) -> StoreResult<JoinOutcome> {
        self.write(|state| {
            let Some(row) = state.drops.get_mut(&join.drop_id) else {
                return Ok(JoinOutcome::DropNotFound);
            };
            let held = row.held.get(&join.user_id).copied().unwrap_or(0);
            let Some(variant) = row.variant(&join.sku) else {
                return Ok(JoinOutcome::UnknownVariant);
            };
            if !row.drop.accepts_orders_at(join.at) {
                return Ok(JoinOutcome::NotLive);
            }
            let available = row.variants[variant].stock.available;
            if available > 0 {
                return Ok(JoinOutcome::VariantAvailable { available });
            }
            let limit = row.drop.per_user_limit;
            if u64::from(held) + u64::from(join.quantity) > u64::from(limit) {
                return Ok(JoinOutcome::LimitExceeded { limit, held });
            }
            match row.waiting.get_mut(&join.user_id) {
                // The same line: the place is kept, the quantity replaced.
                Some(waiting) if waiting.variant == variant => waiting.quantity = join.quantity,
                previous => {
                    if let Some(old) = previous.map(|w| *w) {
                        row.variants[old.variant].line.remove(&old.seq);
                    }
                    state.wait_seq += 1;
                    let seq = state.wait_seq;
                    row.variants[variant].line.insert(seq, join.user_id);
                    row.waiting.insert(
                        join.user_id,
                        Waiting {
                            variant,
                            seq,
                            quantity: join.quantity,
                            joined_at: join.at,
                        },
                    );
                }
            }
            let entry = row.entry(join.user_id);
            Ok(entry.map_or(JoinOutcome::DropNotFound, JoinOutcome::Joined))
        })
    }

    async fn waitlist_entry(
        &self,
        drop: DropId,
        user: UserId,
    ) -> StoreResult<Option<WaitlistEntry>> {
        Ok(self.read().drops.lock(drop).and_then(|row| row.entry(user)))
    }

    async fn leave_waitlist(&self, drop: DropId, user: UserId) -> StoreResult<bool> {
        self.write(|state| {
            let Some(row) = state.drops.get_mut(&drop) else {
                return Ok(false);
            };
            let Some(waiting) = row.waiting.remove(&user) else {
                return Ok(false);
            };
            row.variants[waiting.variant].line.remove(&waiting.seq);
            Ok(true)
        })
    }
}
