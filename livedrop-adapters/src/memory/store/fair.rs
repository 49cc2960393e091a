//! Draws and waiting rooms.

use async_trait::async_trait;
use livedrop_core::event::{Event, EventType};
use livedrop_core::id::{DropId, UserId};
use livedrop_core::model::{
    self, Draw, DrawEntry, DrawEntryRequest, DrawOutcome, DrawResult, DropState, EntryOutcome,
    Order, QueueEntry, QueueOutcome,
};
use livedrop_core::ports::{DrawRepository, QueueRepository};
use livedrop_core::{StoreResult, Timestamp};

use super::{DropRow, Member, MemoryStore, State};

impl State {
    /// Places the winning order of `entry` (its whole quantity of its variant) and
    /// appends `order.placed` and `draw.won`; the entry becomes `won` with it. The
    /// variant's stock moves here; its stock events are the caller's.
    fn award(
        &mut self,
        drop: &model::Drop,
        variant: usize,
        entry: &mut DrawEntry,
        now: Timestamp,
        hold: chrono::Duration,
    ) {
        let order = Order::draw_win(drop, entry, now, hold);
        entry.result = DrawResult::Won;
        entry.order_id = Some(order.id);
        if let Some(row) = self.drops.get_mut(&drop.id) {
            let stock = &mut row.variants[variant].stock;
            stock.available -= order.quantity;
            stock.reserved += order.quantity;
            if let Some(book) = &mut row.draw {
                book.entries.insert(entry.user_id, entry.clone());
            }
        }
        self.insert_order(order.clone());
        self.append_order(EventType::OrderPlaced, &order, now);
        self.append([Event::draw(EventType::DrawWon, entry, Some(&order), now)]);
    }

    /// Units that came back to variant `variant` of a drawn drop go to the entries of
    /// that variant that have not won, in rank order, as [`model::plan_draw`] decides,
    /// while the drop takes orders.
    pub(super) fn draw_hand_off(
        &mut self,
        drop: DropId,
        variant: usize,
        now: Timestamp,
        hold: chrono::Duration,
    ) {
        let Some(row) = self.drops.get_mut(&drop) else {
            return;
        };
        let row = &*row;
        let Some(book) = &row.draw else {
            return;
        };
        if book.ranked.is_empty() || !row.drop.accepts_orders_at(now) {
            return;
        }
        let sku = &row.drop.variants[variant].sku;
        let lost: Vec<DrawEntry> = book
            .ranked
            .iter()
            .filter_map(|user| book.entries.get(user))
            .filter(|e| e.result == DrawResult::Lost && &e.sku == sku)
            .cloned()
            .collect();
        let mut free = [row.variants[variant].stock.available];
        let winners = model::plan_draw(&lost, &mut free, |_| Some(0));
        let definition = row.drop.clone();
        for i in winners {
            let mut entry = lost[i].clone();
            self.award(&definition, variant, &mut entry, now, hold);
        }
    }
}

/// The entry `user` has in `row`'s queue, with its position and admission time.
fn queue_entry(row: &DropRow, user: UserId) -> Option<QueueEntry> {
    let room = row.drop.waiting_room?;
    let (position, joined_at, admit_at) = match *row.queue.members.get(&user)? {
        Member::Pre(key) => {
            let joined_at = *row.queue.pre.get(&(key, user))?;
            let position = row.queue.pre.range(..(key, user)).count() as u64 + 1;
            (
                position,
                joined_at,
                room.pre_queue_slot(row.drop.starts_at, position),
            )
        }
        Member::Post(i) => {
            let (_, joined_at, admit_at) = *row.queue.post.get(i)?;
            (
                row.queue.pre.len() as u64 + i as u64 + 1,
                joined_at,
                admit_at,
            )
        }
    };
    Some(QueueEntry {
        drop_id: row.drop.id,
        user_id: user,
        joined_at,
        position,
        admit_at,
    })
}

#[async_trait]
impl DrawRepository for MemoryStore {
    async fn insert_draw_drop(
        &self,
        drop: &model::Drop,
        stock: &[u32],
        seed: &str,
        events: &[Event],
    ) -> StoreResult<()> {
        self.insert(drop, stock, Some(seed), events)
    }

    async fn enter_draw(&self, request: &DrawEntryRequest) -> StoreResult<EntryOutcome> {
        self.write(|state| {
            let Some(row) = state.drops.get_mut(&request.drop_id) else {
                return Ok(EntryOutcome::DropNotFound);
            };
            let (Some(draw), Some(book)) = (&row.drop.draw, &mut row.draw) else {
                return Ok(EntryOutcome::NotDraw);
            };
            if !row.drop.variants.iter().any(|v| v.sku == request.sku) {
                return Ok(EntryOutcome::UnknownVariant);
            }
            if row.drop.state == DropState::Cancelled
                || !draw.is_open(row.drop.starts_at, request.at)
            {
                return Ok(EntryOutcome::EntriesClosed);
            }
            let limit = row.drop.per_user_limit;
            if request.quantity > limit {
                return Ok(EntryOutcome::LimitExceeded { limit });
            }
            let token = book
                .entries
                .get(&request.user_id)
                .map_or_else(|| request.token.clone(), |e| e.token.clone());
            let entry = DrawEntry {
                drop_id: request.drop_id,
                user_id: request.user_id,
                sku: request.sku.clone(),
                quantity: request.quantity,
                token,
                entered_at: request.at,
                result: DrawResult::Pending,
                rank: None,
                order_id: None,
            };
            book.entries.insert(request.user_id, entry.clone());
            Ok(EntryOutcome::Done(entry))
        })
    }

    async fn withdraw_entry(
        &self,
        drop: DropId,
        user: UserId,
        now: Timestamp,
    ) -> StoreResult<EntryOutcome> {
        self.write(|state| {
            let Some(row) = state.drops.get_mut(&drop) else {
                return Ok(EntryOutcome::DropNotFound);
            };
            let (Some(draw), Some(book)) = (&row.drop.draw, &mut row.draw) else {
                return Ok(EntryOutcome::NotDraw);
            };
            if row.drop.state == DropState::Cancelled || !draw.is_open(row.drop.starts_at, now) {
                return Ok(EntryOutcome::EntriesClosed);
            }
            Ok(book
                .entries
                .remove(&user)
                .map_or(EntryOutcome::NoEntry, EntryOutcome::Done))
        })
    }

    async fn draw_entry(&self, drop: DropId, user: UserId) -> StoreResult<Option<DrawEntry>> {
        let state = self.read();
        let row = state.drops.lock(drop);
        Ok(row
            .as_ref()
            .and_then(|row| row.draw.as_ref())
            .and_then(|book| book.entries.get(&user).cloned()))
    }

    async fn draw_entries(
        &self,
        drop: DropId,
        after_rank: u64,
        limit: u32,
    ) -> StoreResult<Vec<DrawEntry>> {
        let state = self.read();
        let row = state.drops.lock(drop);
        let Some(book) = row.as_ref().and_then(|row| row.draw.as_ref()) else {
            return Ok(Vec::new());
        };
        Ok(book
            .ranked
            .iter()
            .skip(usize::try_from(after_rank).unwrap_or(usize::MAX))
            .take(limit as usize)
            .filter_map(|user| book.entries.get(user).cloned())
            .collect())
    }

    async fn draw_counts(&self, drop: DropId) -> StoreResult<(u64, u64)> {
        let state = self.read();
        let row = state.drops.lock(drop);
        let Some(book) = row.as_ref().and_then(|row| row.draw.as_ref()) else {
            return Ok((0, 0));
        };
        let won = book
            .entries
            .values()
            .filter(|e| e.result == DrawResult::Won)
            .count();
        Ok((book.entries.len() as u64, won as u64))
    }

    async fn due_draws(&self, now: Timestamp, limit: u32) -> StoreResult<Vec<DropId>> {
        let state = self.read();
        let mut due: Vec<(Timestamp, DropId)> = state
            .drops
            .rows()
            .filter(|row| row.drop.state != DropState::Cancelled)
            .filter_map(|row| {
                let draw = row.drop.draw.as_ref()?;
                (draw.drawn_at.is_none() && draw.entries_close_at <= now)
                    .then_some((draw.entries_close_at, row.drop.id))
            })
            .collect();
        due.sort();
        Ok(due
            .into_iter()
            .take(limit as usize)
            .map(|(_, id)| id)
            .collect())
    }

    async fn run_draw(
        &self,
        id: DropId,
        now: Timestamp,
        hold: chrono::Duration,
    ) -> StoreResult<DrawOutcome> {
        self.write(|state| {
            let Some(row) = state.drops.get_mut(&id) else {
                return Ok(DrawOutcome::DropNotFound);
            };
            let (Some(draw), Some(book)) = (&mut row.drop.draw, &mut row.draw) else {
                return Ok(DrawOutcome::NotDue);
            };
            if draw.drawn_at.is_some() {
                return Ok(DrawOutcome::AlreadyDrawn);
            }
            if row.drop.state == DropState::Cancelled || now < draw.entries_close_at {
                return Ok(DrawOutcome::NotDue);
            }
            draw.seed = Some(book.seed.clone());
            draw.drawn_at = Some(now);
            let ranked = Draw::ranked(&book.seed, book.entries.values().cloned().collect());
            book.ranked = ranked.iter().map(|e| e.user_id).collect();
            let before: Vec<_> = row.variants.iter().map(|v| v.stock).collect();
            let mut free: Vec<u32> = before.iter().map(|s| s.available).collect();
            let definition = row.drop.clone();
            let winners = model::plan_draw(&ranked, &mut free, |sku| definition.variant_index(sku));
            state.append([Event::drop(EventType::DropDrawn, &definition, now)]);
            let mut results = Vec::with_capacity(ranked.len());
            for (i, mut entry) in ranked.into_iter().enumerate() {
                match definition.variant_index(&entry.sku) {
                    Some(variant) if winners.contains(&i) => {
                        state.award(&definition, variant, &mut entry, now, hold);
                    }
                    _ => {
                        entry.result = DrawResult::Lost;
                        state.append([Event::draw(EventType::DrawLost, &entry, None, now)]);
                    }
                }
                results.push(entry);
            }
            if let Some(book) = state.drops.get_mut(&id).and_then(|row| row.draw.as_mut()) {
                for entry in &results {
                    book.entries.insert(entry.user_id, entry.clone());
                }
            }
            for (variant, before) in before.into_iter().enumerate() {
                let moved = state
                    .drops
                    .get_mut(&id)
                    .is_some_and(|row| row.variants[variant].stock != before);
                if moved {
                    state.stock_moved(id, variant, before, now);
                }
            }
            Ok(DrawOutcome::Drawn {
                drop: definition,
                entries: results,
            })
        })
    }
}

#[async_trait]
impl QueueRepository for MemoryStore {
    async fn join_queue(
        &self,
        drop: DropId,
        user: UserId,
        now: Timestamp,
        shuffle_key: u64,
    ) -> StoreResult<QueueOutcome> {
        self.write(|state| {
            let Some(row) = state.drops.get_mut(&drop) else {
                return Ok(QueueOutcome::DropNotFound);
            };
            let Some(room) = row.drop.waiting_room else {
                return Ok(QueueOutcome::NoWaitingRoom);
            };
            if row.drop.state == DropState::Cancelled || now >= row.drop.ends_at {
                return Ok(QueueOutcome::Closed);
            }
            let opens_at = room.opens_at(row.drop.starts_at);
            if now < opens_at {
                return Ok(QueueOutcome::NotOpen { opens_at });
            }
            if !row.queue.members.contains_key(&user) {
                // A join stamped before the start once later arrivals hold slots
                // (a process whose clock is behind) queues behind them: the
                // pre-queue's slots are taken.
                if now < row.drop.starts_at && row.queue.post.is_empty() {
                    row.queue.pre.insert((shuffle_key, user), now);
                    row.queue.members.insert(user, Member::Pre(shuffle_key));
                } else {
                    let previous = match row.queue.post.last() {
                        Some((_, _, slot)) => Some(*slot),
                        None if row.queue.pre.is_empty() => None,
                        None => Some(
                            room.pre_queue_slot(row.drop.starts_at, row.queue.pre.len() as u64),
                        ),
                    };
                    let slot = room.next_slot(previous, row.drop.starts_at, now);
                    row.queue
                        .members
                        .insert(user, Member::Post(row.queue.post.len()));
                    row.queue.post.push((user, now, slot));
                }
            }
            Ok(queue_entry(row, user).map_or(QueueOutcome::DropNotFound, QueueOutcome::Joined))
        })
    }

    async fn queue_entry(&self, drop: DropId, user: UserId) -> StoreResult<Option<QueueEntry>> {
        Ok(self
            .read()
            .drops
            .lock(drop)
            .and_then(|row| queue_entry(&row, user)))
    }

    async fn admitted_through(&self, drop: DropId, now: Timestamp) -> StoreResult<u64> {
        let state = self.read();
        let Some(row) = state.drops.lock(drop) else {
            return Ok(0);
        };
        let Some(room) = row.drop.waiting_room else {
            return Ok(0);
        };
        let pre = row.queue.pre.len() as u64;
        let pre_admitted = if now < row.drop.starts_at || pre == 0 {
            0
        } else {
            let elapsed = (now - row.drop.starts_at)
                .num_microseconds()
                .unwrap_or(i64::MAX);
            let step = room.interval().num_microseconds().unwrap_or(1).max(1);
            u64::try_from(elapsed / step + 1)
                .unwrap_or(u64::MAX)
                .min(pre)
        };
        let post_admitted = row.queue.post.partition_point(|(_, _, slot)| *slot <= now) as u64;
        Ok(pre_admitted + post_admitted)
    }
}
