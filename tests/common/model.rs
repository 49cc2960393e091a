//! The reference model of the property tests: operations, expected outcomes, and
//! the comparison with the services after every step. Drops sell 1 to 4 sizes, each
//! with its own stock; orders name a size (or none, on a drop of one size); the
//! per-user limit counts every size of a drop. Drops start at once or later (orders
//! are `drop_not_live` until their start), reach their end, move by the scheduler's
//! ticks, and are cancelled (orders refused from then on, holds already placed left
//! to run their course). Holds are extended once, while reserved and not run out.
//!
//! Buyers join the waitlist of a sold-out size and leave it; units that come back
//! (a cancel, an expiry, a restock) while the drop takes orders go to the size's
//! waitlist in join order, each entry offered a reserved order of as many units as
//! are free up to its quantity, or skipped when the offer would pass the per-user
//! limit; the drop's end or cancel closes its waitlists. After every step the test
//! checks each size's stock, each buyer's place, each order, and the guarantees the
//! model stands for: the invariant per size, the limit across sizes, no unit
//! `available` while someone waits for its size, places in join order.
//!
//! Beside the first-come drops, a draw drop and a waiting-room drop. Buyers enter the
//! draw (replacing keeps the token) and withdraw while entries are open; the
//! scheduler's tick past `entries_close_at` runs it, and the model ranks the entries
//! itself from the revealed seed (SHA-256 of `seed:token`, ascending), awards whole
//! quantities in rank order while the size has units, and gives units a winner's
//! cancel or expiry (or a restock) frees to the next-ranked entries that did not
//! win. Buyers join
//! the waiting room before the start (the pre-queue, in the store's shuffled order,
//! fixed from the start) or after it (one interval after the slot before, not before
//! the join), and order with no token, someone else's, or their own once admitted.

use std::collections::HashMap;

use super::{ClockExt, World};
use chrono::Duration as Span;
use livedrop::core::model::{
    Actor, Allocation, DrawResult, DropState, OrderStatus, Role, Stock, WaitingRoom, WaitlistEntry,
    DRAW_FINGERPRINT,
};
use livedrop::core::page::PageRequest;
use livedrop::core::service::{
    EnterDraw, JoinWaitlist, NewDrop, NewVariant, PlaceOrder, QueueState, StockAdjustment,
};
use livedrop::core::{DropId, OrderId, Timestamp};
use proptest::prelude::*;

pub const USERS: usize = 4;
/// The first-come drops the order, waitlist and stock operations pick from.
pub const DROPS: usize = 2;
/// The index of the draw drop among the model's drops.
pub const DRAW: usize = DROPS;
/// The index of the waiting-room drop among the model's drops.
pub const ROOM: usize = DROPS + 1;
/// The most sizes a drop of the model sells.
pub const SIZES: usize = 4;

#[derive(Debug, Clone)]
pub enum Op {
    Order {
        user: usize,
        drop: usize,
        /// Which size (modulo the drop's sizes).
        size: usize,
        /// Whether the request names its size on a drop of one size.
        named: bool,
        quantity: u32,
        key: u8,
    },
    Confirm {
        pick: usize,
    },
    Cancel {
        pick: usize,
    },
    /// The buyer extends an order's hold (once per order).
    Extend {
        pick: usize,
    },
    Advance {
        minutes: i64,
    },
    Sweep,
    Adjust {
        drop: usize,
        size: usize,
        delta: i64,
    },
    /// Orders placed all at once (several in flight, so group reserve batches
    /// them); the first is sent twice with one key, so a key races itself.
    Burst {
        orders: Vec<(usize, usize, usize, u32)>,
    },
    /// One scheduler step: drops whose start or end passed move to live or ended.
    Tick,
    /// The creator cancels a drop.
    CancelDrop {
        drop: usize,
    },
    /// A buyer waits for `quantity` units of a size.
    Join {
        user: usize,
        drop: usize,
        size: usize,
        quantity: u32,
    },
    /// A buyer leaves the drop's waitlists.
    Leave {
        user: usize,
        drop: usize,
    },
    /// A buyer enters the draw drop's draw (or replaces its entry): `size` modulo
    /// its sizes, or a size it does not sell; the sku left out unless `named` (or
    /// the drop has several sizes and `named`).
    Enter {
        user: usize,
        size: usize,
        unknown: bool,
        named: bool,
        quantity: u32,
    },
    /// A buyer withdraws its draw entry.
    Withdraw {
        user: usize,
    },
    /// The draw drop's size `size` is restocked (or shrunk): once drawn, units go to
    /// the entries that have not won, in rank order.
    AdjustDraw {
        size: usize,
        delta: i64,
    },
    /// A buyer joins the waiting-room drop's queue.
    QueueJoin {
        user: usize,
    },
    /// A buyer orders from the waiting-room drop with no admission token, its own
    /// (when admitted), or someone else's.
    RoomOrder {
        user: usize,
        quantity: u32,
        token: Token,
    },
}

/// The admission token a [`Op::RoomOrder`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    None,
    Own,
    Other,
}

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..USERS, 0..DROPS, 0..SIZES, any::<bool>(), 1u32..4, 0u8..6).prop_map(|(user, drop, size, named, quantity, key)| Op::Order { user, drop, size, named, quantity, key }),
        4 => any::<usize>().prop_map(|pick| Op::Confirm { pick }),
        3 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        2 => any::<usize>().prop_map(|pick| Op::Extend { pick }),
        4 => prop_oneof![4 => 1i64..9, 1 => 30i64..70].prop_map(|minutes| Op::Advance { minutes }),
        2 => Just(Op::Sweep),
        3 => (0..DROPS, 0..SIZES, prop_oneof![-4i64..0, 1i64..7]).prop_map(|(drop, size, delta)| Op::Adjust { drop, size, delta }),
        4 => prop::collection::vec((0..USERS, 0..DROPS, 0..SIZES, 1u32..4), 2..6).prop_map(|orders| Op::Burst { orders }),
        3 => Just(Op::Tick),
        1 => (0..DROPS).prop_map(|drop| Op::CancelDrop { drop }),
        6 => (0..USERS, 0..DROPS, 0..SIZES, 1u32..4).prop_map(|(user, drop, size, quantity)| Op::Join { user, drop, size, quantity }),
        1 => (0..USERS, 0..DROPS).prop_map(|(user, drop)| Op::Leave { user, drop }),
        8 => (0..USERS, 0..SIZES, prop::bool::weighted(0.1), prop::bool::weighted(0.85), 1u32..5).prop_map(|(user, size, unknown, named, quantity)| Op::Enter { user, size, unknown, named, quantity }),
        1 => (0..USERS).prop_map(|user| Op::Withdraw { user }),
        2 => (0..SIZES, prop_oneof![-2i64..0, 1i64..4]).prop_map(|(size, delta)| Op::AdjustDraw { size, delta }),
        4 => (0..USERS).prop_map(|user| Op::QueueJoin { user }),
        5 => (0..USERS, 1u32..3, prop_oneof![1 => Just(Token::None), 4 => Just(Token::Own), 1 => Just(Token::Other)]).prop_map(|(user, quantity, token)| Op::RoomOrder { user, quantity, token }),
    ]
}

/// When each drop starts: `Some(minutes)` from the start of the run (scheduled for
/// later, so orders are refused until then), or `None` (live at once).
pub fn starts() -> impl Strategy<Value = [Option<i64>; DROPS]> {
    prop::array::uniform2(prop::option::weighted(0.3, 1i64..90))
}

/// One case of the model test: each first-come drop's sizes (the units of each),
/// per-user limit and start, the draw drop and the waiting-room drop, and the
/// operations run on them.
#[derive(Debug, Clone)]
pub struct Case {
    pub stocks: [Vec<u32>; DROPS],
    pub limits: [Option<u32>; DROPS],
    pub starts: [Option<i64>; DROPS],
    pub draw: DrawCase,
    pub room: RoomCase,
    pub ops: Vec<Op>,
}

/// The draw drop: its sizes' units, per-user limit, start (minutes from the start
/// of the run, or at once) and when entries close (minutes after its start).
#[derive(Debug, Clone)]
pub struct DrawCase {
    pub sizes: Vec<u32>,
    pub limit: u32,
    pub starts: Option<i64>,
    pub close_after: i64,
}

/// The waiting-room drop: one size of `stock` units, starting `starts_in` minutes
/// from the start of the run, its room opening `opens_before` minutes before.
#[derive(Debug, Clone)]
pub struct RoomCase {
    pub stock: u32,
    pub limit: Option<u32>,
    pub starts_in: i64,
    pub opens_before: u32,
    pub admit_per_minute: u32,
    pub token_seconds: u32,
}

/// Any [`Case`]: 1 to 4 sizes of 1 to 5 units per first-come drop, a limit of 1 to
/// 4 on most; a draw drop of 1 to 3 sizes of 1 to 3 units whose entries close 1 to
/// 40 minutes after its start; a waiting-room drop admitting 1 to 60 a minute
/// (whole seconds apart), tokens of 30 seconds to 10 minutes; 1 to 59 operations.
pub fn case() -> impl Strategy<Value = Case> {
    let sizes = || prop::collection::vec(1u32..6, 1..=SIZES);
    let draw = (
        prop::collection::vec(1u32..4, 1..=3),
        1u32..4,
        prop::option::weighted(0.3, 1i64..20),
        1i64..40,
    )
        .prop_map(|(sizes, limit, starts, close_after)| DrawCase {
            sizes,
            limit,
            starts,
            close_after,
        });
    let room = (
        1u32..6,
        prop::option::weighted(0.8, 1u32..4),
        1i64..40,
        0u32..60,
        prop::sample::select(vec![1u32, 2, 3, 4, 6, 12, 20, 60]),
        prop::sample::select(vec![30u32, 60, 120, 300, 600]),
    )
        .prop_map(
            |(stock, limit, starts_in, opens_before, admit_per_minute, token_seconds)| RoomCase {
                stock,
                limit,
                starts_in,
                opens_before,
                admit_per_minute,
                token_seconds,
            },
        );
    (
        [sizes(), sizes()],
        prop::array::uniform2(prop::option::weighted(0.8, 1u32..5)),
        starts(),
        draw,
        room,
        prop::collection::vec(op(), 1..60),
    )
        .prop_map(|(stocks, limits, starts, draw, room, ops)| Case {
            stocks,
            limits,
            starts,
            draw,
            room,
            ops,
        })
}

#[derive(Debug, Clone)]
struct MDrop {
    id: DropId,
    skus: Vec<String>,
    /// Each size's stock, in `skus` order.
    stock: Vec<Stock>,
    limit: u32,
    starts_at: Timestamp,
    ends_at: Timestamp,
    /// The stored lifecycle state: moved by the scheduler's ticks and by a cancel,
    /// never by the clock alone.
    state: DropState,
    /// Waiting buyers of every size, in join order.
    waiting: Vec<MEntry>,
    /// The draw, on the draw drop.
    draw: Option<MDraw>,
    /// The waiting room, on the waiting-room drop.
    room: Option<MRoom>,
}

/// A draw as the model sees it.
#[derive(Debug, Clone)]
struct MDraw {
    close: Timestamp,
    commitment: String,
    /// Revealed by the draw.
    seed: Option<String>,
    drawn_at: Option<Timestamp>,
    /// One entry per buyer (the order is not meaningful).
    entries: Vec<MDrawEntry>,
    /// Buyers in rank order, once drawn.
    ranked: Vec<usize>,
}

impl MDraw {
    fn entry(&self, user: usize) -> Option<&MDrawEntry> {
        self.entries.iter().find(|e| e.user == user)
    }
}

#[derive(Debug, Clone)]
struct MDrawEntry {
    user: usize,
    size: usize,
    quantity: u32,
    token: String,
    entered_at: Timestamp,
    result: DrawResult,
    rank: Option<u64>,
    /// The winning order, as an index into the model's orders.
    order: Option<usize>,
}

/// A waiting room as the model sees it.
#[derive(Debug, Clone)]
struct MRoom {
    room: WaitingRoom,
    /// Who joined before the start, and when (their order is the store's shuffle).
    pre: Vec<(usize, Timestamp)>,
    /// The pre-queue's places as first read at or after the start: fixed from then.
    fixed: HashMap<usize, u64>,
    /// Later arrivals in join order, with their admission slot.
    post: Vec<(usize, Timestamp, Timestamp)>,
}

impl MRoom {
    /// The slot a buyer arriving at `now` (at or after the start) gets: one interval
    /// after the one before, the pre-queue's last when nobody came after it, and
    /// not before `now`.
    fn next_slot(&self, starts_at: Timestamp, now: Timestamp) -> Timestamp {
        let interval = self.interval();
        let previous = match self.post.last() {
            Some((_, _, slot)) => Some(*slot),
            None if self.pre.is_empty() => None,
            None => Some(starts_at + interval * (self.pre.len() as i32 - 1)),
        };
        let earliest = previous.map_or(starts_at, |p| p + interval);
        earliest.max(now)
    }

    fn interval(&self) -> Span {
        Span::microseconds(60_000_000 / i64::from(self.room.admit_per_minute))
    }

    /// When the buyer is admitted, given the pre-queue place the store reports.
    fn admit_at(&self, user: usize, starts_at: Timestamp, place: u64) -> Option<Timestamp> {
        if self.pre.iter().any(|(u, _)| *u == user) {
            return Some(starts_at + self.interval() * (place as i32 - 1));
        }
        self.post
            .iter()
            .find(|(u, _, _)| *u == user)
            .map(|(_, _, slot)| *slot)
    }

    fn joined(&self, user: usize) -> bool {
        self.pre.iter().any(|(u, _)| *u == user) || self.post.iter().any(|(u, _, _)| *u == user)
    }
}

impl MDrop {
    /// Orders are taken from the start to the end, whatever the stored state says,
    /// unless the drop was cancelled.
    fn accepts_orders_at(&self, now: Timestamp) -> bool {
        self.state != DropState::Cancelled && self.starts_at <= now && now < self.ends_at
    }

    /// What one scheduler step does to the drop at `now`, if anything.
    fn due(&self, now: Timestamp) -> Option<DropState> {
        match self.state {
            DropState::Scheduled if now >= self.ends_at => Some(DropState::Ended),
            DropState::Scheduled if now >= self.starts_at => Some(DropState::Live),
            DropState::Live if now >= self.ends_at => Some(DropState::Ended),
            _ => None,
        }
    }

    /// The size an operation picks.
    fn size(&self, pick: usize) -> usize {
        pick % self.skus.len()
    }

    /// The buyer's place in its size's line (1 first), if waiting.
    fn position(&self, user: usize) -> Option<u64> {
        let entry = self.waiting.iter().find(|e| e.user == user)?;
        let ahead = self
            .waiting
            .iter()
            .take_while(|e| e.user != user)
            .filter(|e| e.size == entry.size)
            .count();
        Some(ahead as u64 + 1)
    }
}

#[derive(Debug, Clone, Copy)]
struct MEntry {
    user: usize,
    size: usize,
    quantity: u32,
    joined_at: Timestamp,
}

#[derive(Debug, Clone)]
struct MOrder {
    id: OrderId,
    user: usize,
    drop: usize,
    size: usize,
    quantity: u32,
    status: OrderStatus,
    reserved_until: Timestamp,
    /// The hold was extended.
    extended: bool,
}

/// A waitlist offer the model expects the store to have made: to whom, of what,
/// and the model's order for it (its id learnt from the store).
#[derive(Debug, Clone)]
struct Offer {
    user: usize,
    drop: usize,
    size: usize,
    quantity: u32,
    order: usize,
}

type Recorded = Result<usize, String>;
/// What a request was: drop, the sku it named, quantity.
type Fingerprint = (usize, Option<String>, u32);

struct Model {
    drops: Vec<MDrop>,
    orders: Vec<MOrder>,
    keys: HashMap<(usize, u8), (Fingerprint, Recorded)>,
    hold: Span,
    /// Offers made by the last step, waiting to be matched with the store's orders.
    offers: Vec<Offer>,
    /// Draw wins of the last step (indexes of their orders), waiting to learn their
    /// order ids from the store.
    wins: Vec<usize>,
}

impl Model {
    /// Units the buyer holds in the drop, every size together.
    fn held(&self, user: usize, drop: usize) -> u32 {
        self.orders
            .iter()
            .filter(|o| o.user == user && o.drop == drop && o.status.holds_stock())
            .map(|o| o.quantity)
            .sum()
    }

    /// Order `idx` gives its units back (cancelled or expired): they go to its size's
    /// waitlist first when the drop takes orders.
    fn release(&mut self, idx: usize, to: OrderStatus, now: Timestamp) {
        let o = &mut self.orders[idx];
        o.status = to;
        let (drop, size, quantity) = (o.drop, o.size, o.quantity);
        let s = &mut self.drops[drop].stock[size];
        s.reserved -= quantity;
        s.available += quantity;
        if self.drops[drop].draw.is_some() {
            self.draw_hand_off(drop, size, now);
        } else {
            self.hand_off(drop, size, now);
        }
    }

    /// Units back in size `size` of a drawn drop go to its entries that have not
    /// won, in rank order, each winning when its whole quantity is free, while the
    /// drop takes orders.
    fn draw_hand_off(&mut self, drop: usize, size: usize, now: Timestamp) {
        let d = &self.drops[drop];
        let Some(draw) = &d.draw else {
            return;
        };
        if draw.seed.is_none() || !d.accepts_orders_at(now) {
            return;
        }
        for user in draw.ranked.clone() {
            let d = &self.drops[drop];
            let draw = d.draw.as_ref().unwrap_or_else(|| unreachable!());
            let Some(e) = draw.entry(user) else { continue };
            if e.result == DrawResult::Lost
                && e.size == size
                && d.stock[size].available >= e.quantity
            {
                self.award(drop, user, now);
            }
        }
    }

    /// The draw entry of `user` wins: a reserved order of its whole quantity.
    fn award(&mut self, drop: usize, user: usize, now: Timestamp) {
        let order = self.orders.len();
        let d = &mut self.drops[drop];
        let Some(e) = d
            .draw
            .as_mut()
            .and_then(|draw| draw.entries.iter_mut().find(|e| e.user == user))
        else {
            return;
        };
        e.result = DrawResult::Won;
        e.order = Some(order);
        let (size, quantity) = (e.size, e.quantity);
        let s = &mut d.stock[size];
        s.available -= quantity;
        s.reserved += quantity;
        self.orders.push(MOrder {
            id: OrderId(uuid::Uuid::nil()),
            user,
            drop,
            size,
            quantity,
            status: OrderStatus::Reserved,
            reserved_until: livedrop::core::clock::truncate(now + self.hold),
            extended: false,
        });
        self.wins.push(order);
    }

    /// Runs the draw of drop `drop` at `now` with the seed the store revealed:
    /// entries ranked by the SHA-256 of `seed:token` (hex, ascending), each winning
    /// in rank order when its size still has its whole quantity free.
    fn run_draw(&mut self, drop: usize, seed: String, now: Timestamp) {
        let Some(draw) = self.drops[drop].draw.as_mut() else {
            return;
        };
        let mut keyed: Vec<(String, String, usize)> = draw
            .entries
            .iter()
            .map(|e| (rank_key(&seed, &e.token), e.token.clone(), e.user))
            .collect();
        keyed.sort();
        draw.ranked = keyed.into_iter().map(|(_, _, user)| user).collect();
        draw.seed = Some(seed);
        draw.drawn_at = Some(now);
        for (i, user) in draw.ranked.clone().into_iter().enumerate() {
            let d = &mut self.drops[drop];
            let draw = d.draw.as_mut().unwrap_or_else(|| unreachable!());
            let Some(e) = draw.entries.iter_mut().find(|e| e.user == user) else {
                continue;
            };
            e.rank = Some(i as u64 + 1);
            e.result = DrawResult::Lost;
            if d.stock[e.size].available >= e.quantity {
                self.award(drop, user, now);
            }
        }
    }

    /// Serves size `size`'s line with the units available, in join order: each
    /// entry is offered as many as are free up to its quantity, or skipped when that
    /// would pass the limit; either ends it.
    fn hand_off(&mut self, drop: usize, size: usize, now: Timestamp) {
        if !self.drops[drop].accepts_orders_at(now) {
            return;
        }
        loop {
            let d = &self.drops[drop];
            let free = d.stock[size].available;
            if free == 0 {
                return;
            }
            let Some(at) = d.waiting.iter().position(|e| e.size == size) else {
                return;
            };
            let entry = self.drops[drop].waiting.remove(at);
            let quantity = free.min(entry.quantity);
            if self.held(entry.user, drop) + quantity > self.drops[drop].limit {
                continue;
            }
            let s = &mut self.drops[drop].stock[size];
            s.available -= quantity;
            s.reserved += quantity;
            // The order's id is learnt from the store after the step.
            self.orders.push(MOrder {
                id: OrderId(uuid::Uuid::nil()),
                user: entry.user,
                drop,
                size,
                quantity,
                status: OrderStatus::Reserved,
                reserved_until: livedrop::core::clock::truncate(now + self.hold),
                extended: false,
            });
            self.offers.push(Offer {
                user: entry.user,
                drop,
                size,
                quantity,
                order: self.orders.len() - 1,
            });
        }
    }

    /// The drop ended or was cancelled: its waitlists close.
    fn close(&mut self, drop: usize) {
        self.drops[drop].waiting.clear();
    }
}

/// Lower-case hex SHA-256 of `seed:token`: an entry's rank key, computed here
/// from the published rule, not by the core.
fn rank_key(seed: &str, token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(format!("{seed}:{token}").as_bytes()))
}

/// An error where the model expects none: the case fails.
fn failed(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

fn code<T>(r: &Result<T, livedrop::core::Error>) -> Result<(), String> {
    match r {
        Ok(_) => Ok(()),
        Err(e) => Err(e.code().to_owned()),
    }
}

/// Runs the case's operations on `world` and on the reference model, comparing
/// after every step.
pub async fn run(world: World, case: Case) -> Result<(), TestCaseError> {
    let Case {
        stocks,
        limits,
        starts,
        draw,
        room,
        ops,
    } = case;
    let creator = world.user(Role::Creator).await;
    let mut users: Vec<Actor> = Vec::new();
    for _ in 0..USERS {
        users.push(world.user(Role::Customer).await);
    }
    let hold = Span::from_std(world.app.config().hold).map_err(failed)?;
    let mut model = Model {
        drops: vec![],
        orders: vec![],
        keys: HashMap::new(),
        hold,
        offers: vec![],
        wins: vec![],
    };
    for d in 0..DROPS {
        let sizes = &stocks[d];
        let skus: Vec<String> = if sizes.len() == 1 {
            vec![livedrop::core::model::DEFAULT_SKU.to_owned()]
        } else {
            (0..sizes.len())
                .map(|i| format!("size-{}", 38 + i))
                .collect()
        };
        let starts_in = starts[d].map(Span::minutes);
        let view = if sizes.len() == 1 {
            world
                .drop_starting(&creator, sizes[0], limits[d], starts_in)
                .await
        } else {
            let variants: Vec<(&str, u32)> = skus
                .iter()
                .map(String::as_str)
                .zip(sizes.iter().copied())
                .collect();
            world
                .sized_drop(&creator, &variants, limits[d], starts_in)
                .await
        };
        let state = if starts[d].is_some() {
            DropState::Scheduled
        } else {
            DropState::Live
        };
        prop_assert_eq!(view.drop.state, state, "drop {} when scheduled", d);
        let stored: Vec<&str> = view.drop.variants.iter().map(|v| v.sku.as_str()).collect();
        prop_assert_eq!(stored, skus.iter().map(String::as_str).collect::<Vec<_>>());
        let total: u32 = sizes.iter().sum();
        model.drops.push(MDrop {
            id: view.drop.id,
            skus,
            stock: sizes.iter().map(|n| Stock::new(*n)).collect(),
            // No limit means the stock at scheduling, every size together (restocks
            // do not raise it).
            limit: limits[d].unwrap_or(total),
            starts_at: view.drop.starts_at,
            ends_at: view.drop.ends_at,
            state,
            waiting: vec![],
            draw: None,
            room: None,
        });
    }
    model
        .drops
        .push(schedule_draw(&world, &creator, &draw).await?);
    model
        .drops
        .push(schedule_room(&world, &creator, &room).await?);

    for (step, op) in ops.into_iter().enumerate() {
        step_once(&world, &mut model, &users, &creator, step, op).await?;
        learn_offers(&world, &mut model, &users, step).await?;
        learn_wins(&world, &mut model, &users, step).await?;
        check(&world, &model, &users, step).await?;
        check_draw(&world, &model, &users, step).await?;
        check_room(&world, &mut model, &users, step).await?;
    }
    Ok(())
}

/// The skus of a drop of `sizes` sizes: `default` alone, or one per size.
fn skus_of(sizes: usize) -> Vec<String> {
    if sizes == 1 {
        vec![livedrop::core::model::DEFAULT_SKU.to_owned()]
    } else {
        (0..sizes).map(|i| format!("size-{}", 38 + i)).collect()
    }
}

/// Schedules a drop for the model: `starts_in` from now (or now), lasting an hour.
async fn schedule(
    world: &World,
    creator: &Actor,
    sizes: &[u32],
    limit: Option<u32>,
    starts_in: Option<i64>,
    fair: impl FnOnce(&mut NewDrop, Timestamp),
) -> Result<MDrop, TestCaseError> {
    let product = world.product(creator).await;
    let now = world.clock.now_ts();
    let starts_at = starts_in.map(|m| now + Span::minutes(m));
    let start = starts_at.unwrap_or(now);
    let skus = skus_of(sizes.len());
    let mut new = NewDrop {
        allocation: Default::default(),
        entries_close_at: None,
        waiting_room: None,
        product_id: product.id,
        starts_at,
        ends_at: start + Span::hours(1),
        total_stock: if sizes.len() == 1 { sizes[0] } else { 0 },
        variants: if sizes.len() == 1 {
            Vec::new()
        } else {
            skus.iter()
                .zip(sizes)
                .map(|(sku, units)| NewVariant {
                    sku: sku.clone(),
                    label: sku.to_uppercase(),
                    total_stock: *units,
                })
                .collect()
        },
        per_user_limit: limit,
    };
    fair(&mut new, start);
    let view = world
        .app
        .schedule_drop(creator, new)
        .await
        .map_err(failed)?;
    let state = if starts_in.is_some() {
        DropState::Scheduled
    } else {
        DropState::Live
    };
    prop_assert_eq!(view.drop.state, state);
    let total: u32 = sizes.iter().sum();
    Ok(MDrop {
        id: view.drop.id,
        skus,
        stock: sizes.iter().map(|n| Stock::new(*n)).collect(),
        limit: limit.unwrap_or(total),
        starts_at: view.drop.starts_at,
        ends_at: view.drop.ends_at,
        state,
        waiting: vec![],
        draw: view.drop.draw.map(|d| MDraw {
            close: d.entries_close_at,
            commitment: d.commitment,
            seed: d.seed,
            drawn_at: d.drawn_at,
            entries: vec![],
            ranked: vec![],
        }),
        room: view.drop.waiting_room.map(|room| MRoom {
            room,
            pre: vec![],
            fixed: HashMap::new(),
            post: vec![],
        }),
    })
}

async fn schedule_draw(
    world: &World,
    creator: &Actor,
    case: &DrawCase,
) -> Result<MDrop, TestCaseError> {
    let close_after = Span::minutes(case.close_after);
    let d = schedule(
        world,
        creator,
        &case.sizes,
        Some(case.limit),
        case.starts,
        |new, start| {
            new.allocation = Allocation::Draw;
            new.entries_close_at = Some(start + close_after);
        },
    )
    .await?;
    let draw = d.draw.as_ref();
    prop_assert!(draw.is_some(), "a draw drop has its draw");
    let draw = draw.unwrap_or_else(|| unreachable!());
    prop_assert_eq!(draw.close, d.starts_at + close_after);
    prop_assert!(draw.seed.is_none(), "the seed is secret until the draw");
    prop_assert!(draw.drawn_at.is_none());
    prop_assert_eq!(draw.commitment.len(), 64);
    Ok(d)
}

async fn schedule_room(
    world: &World,
    creator: &Actor,
    case: &RoomCase,
) -> Result<MDrop, TestCaseError> {
    let room = WaitingRoom {
        admit_per_minute: case.admit_per_minute,
        token_seconds: case.token_seconds,
        opens_minutes_before: case.opens_before,
    };
    let d = schedule(
        world,
        creator,
        &[case.stock],
        case.limit,
        Some(case.starts_in),
        |new, _| {
            new.waiting_room = Some(room);
        },
    )
    .await?;
    prop_assert_eq!(d.room.as_ref().map(|r| r.room), Some(room));
    Ok(d)
}

/// Runs one operation on the services and on the model, checking its answer.
async fn step_once(
    world: &World,
    model: &mut Model,
    users: &[Actor],
    creator: &Actor,
    step: usize,
    op: Op,
) -> Result<(), TestCaseError> {
    let now = world.clock.now_ts();
    match op {
        Op::Order {
            user,
            drop,
            size,
            named,
            quantity,
            key,
        } => {
            let d = &model.drops[drop];
            let size = d.size(size);
            let sku = (named || d.skus.len() > 1).then(|| d.skus[size].clone());
            let request = PlaceOrder {
                admission_token: None,
                drop_id: d.id,
                quantity,
                sku: sku.clone(),
            };
            let got = world
                .app
                .place_order(&users[user], Some(&format!("key-{key}")), request)
                .await;
            let fingerprint: Fingerprint = (drop, sku, quantity);
            let expected: Recorded = match model.keys.get(&(user, key)) {
                Some((recorded_fp, recorded)) if *recorded_fp == fingerprint => recorded.clone(),
                Some(_) => Err("idempotency_key_reused".into()),
                None => {
                    let d = &model.drops[drop];
                    let outcome = if !d.accepts_orders_at(now) {
                        Err("drop_not_live".to_owned())
                    } else if model.held(user, drop) + quantity > d.limit {
                        Err("per_user_limit_exceeded".to_owned())
                    } else if d.stock[size].available < quantity {
                        Err("out_of_stock".to_owned())
                    } else {
                        let order = got.as_ref().map_err(|e| {
                            TestCaseError::fail(format!(
                                "step {step}: expected a placed order, got {e:?}"
                            ))
                        })?;
                        let s = &mut model.drops[drop].stock[size];
                        s.available -= quantity;
                        s.reserved += quantity;
                        model.orders.push(MOrder {
                            id: order.id,
                            user,
                            drop,
                            size,
                            quantity,
                            status: OrderStatus::Reserved,
                            reserved_until: order.reserved_until,
                            extended: false,
                        });
                        Ok(model.orders.len() - 1)
                    };
                    model
                        .keys
                        .insert((user, key), (fingerprint, outcome.clone()));
                    outcome
                }
            };
            match (&got, &expected) {
                (Ok(order), Ok(idx)) => {
                    prop_assert_eq!(
                        order.id,
                        model.orders[*idx].id,
                        "step {}: replay returns the first order",
                        step
                    );
                    prop_assert_eq!(order.quantity, quantity);
                    let m = &model.orders[*idx];
                    prop_assert_eq!(&order.sku, &model.drops[m.drop].skus[m.size]);
                }
                _ => {
                    prop_assert_eq!(code(&got), expected.map(|_| ()), "step {}: {:?}", step, op)
                }
            }
        }
        Op::Confirm { pick } | Op::Cancel { pick } => {
            if model.orders.is_empty() {
                return Ok(());
            }
            let confirm = matches!(op, Op::Confirm { .. });
            let idx = pick % model.orders.len();
            let o = model.orders[idx].clone();
            let buyer = users[o.user];
            let got = if confirm {
                world.app.confirm_order(&buyer, o.id).await
            } else {
                world.app.cancel_order(&buyer, o.id).await
            };
            let target = if confirm {
                OrderStatus::Confirmed
            } else {
                OrderStatus::Cancelled
            };
            let expected: Result<OrderStatus, String> = match o.status {
                s if s == target => Ok(target),
                OrderStatus::Reserved if confirm && now >= o.reserved_until => {
                    model.release(idx, OrderStatus::Expired, now);
                    Err("hold_expired".into())
                }
                OrderStatus::Reserved if confirm => {
                    model.orders[idx].status = OrderStatus::Confirmed;
                    let s = &mut model.drops[o.drop].stock[o.size];
                    s.reserved -= o.quantity;
                    s.sold += o.quantity;
                    Ok(OrderStatus::Confirmed)
                }
                OrderStatus::Reserved => {
                    model.release(idx, OrderStatus::Cancelled, now);
                    Ok(OrderStatus::Cancelled)
                }
                _ => Err("order_not_reserved".into()),
            };
            match (&got, &expected) {
                (Ok(order), Ok(status)) => prop_assert_eq!(order.status, *status),
                _ => {
                    prop_assert_eq!(code(&got), expected.map(|_| ()), "step {}: {:?}", step, op)
                }
            }
        }
        Op::Extend { pick } => {
            if model.orders.is_empty() {
                return Ok(());
            }
            let idx = pick % model.orders.len();
            let o = model.orders[idx].clone();
            let got = world.app.extend_order(&users[o.user], o.id).await;
            let expected: Result<(), String> = match o.status {
                OrderStatus::Reserved if now >= o.reserved_until => Err("hold_expired".into()),
                OrderStatus::Reserved if o.extended => Err("already_extended".into()),
                OrderStatus::Reserved => {
                    let m = &mut model.orders[idx];
                    m.reserved_until += model.hold;
                    m.extended = true;
                    Ok(())
                }
                OrderStatus::Expired => Err("hold_expired".into()),
                OrderStatus::Confirmed | OrderStatus::Cancelled => Err("order_not_reserved".into()),
            };
            if let Ok(order) = &got {
                prop_assert_eq!(order.reserved_until, model.orders[idx].reserved_until);
                prop_assert_eq!(order.extended_at, Some(now), "step {}: extended at", step);
            }
            prop_assert_eq!(code(&got), expected, "step {}: {:?}", step, op);
        }
        Op::Advance { minutes } => world.clock.advance(Span::minutes(minutes)),
        Op::Burst { ref orders } => {
            let key = |i: usize| format!("burst-{step}-{i}");
            // The first order twice under one key, then the rest, all in flight.
            let sends: Vec<(usize, usize, usize, u32, String)> = std::iter::once((0, orders[0]))
                .chain(orders.iter().copied().enumerate())
                .map(|(i, (u, d, size, q))| (u, d, model.drops[d].size(size), q, key(i)))
                .collect();
            let results = futures::future::join_all(sends.iter().map(|(u, d, size, q, k)| {
                let md = &model.drops[*d];
                let request = PlaceOrder {
                    admission_token: None,
                    drop_id: md.id,
                    quantity: *q,
                    sku: Some(md.skus[*size].clone()),
                };
                world.app.place_order(&users[*u], Some(k), request)
            }))
            .await;
            // The doubled key: at most one order, and both answers agree unless
            // one found the other still in flight.
            let (a, b) = (&results[0], &results[1]);
            match (a, b) {
                (Ok(x), Ok(y)) => {
                    prop_assert_eq!(x.id, y.id, "step {}: one key, one order", step)
                }
                (Err(livedrop::core::Error::IdempotencyKeyInFlight), _)
                | (_, Err(livedrop::core::Error::IdempotencyKeyInFlight)) => {}
                (Err(x), Err(y)) => prop_assert_eq!(x, y, "step {}: one key, one answer", step),
                _ => prop_assert!(
                    false,
                    "step {}: one key, two answers: {:?} {:?}",
                    step,
                    a,
                    b
                ),
            }
            let mut seen = std::collections::HashSet::new();
            for ((u, d, size, q, _), got) in sends.iter().zip(&results) {
                let now_live = model.drops[*d].accepts_orders_at(now);
                match got {
                    Ok(order) => {
                        prop_assert!(now_live, "step {}: an order while not live", step);
                        if !seen.insert(order.id) {
                            continue;
                        }
                        prop_assert_eq!(&order.sku, &model.drops[*d].skus[*size]);
                        let s = &mut model.drops[*d].stock[*size];
                        let left = s.available.checked_sub(*q);
                        prop_assert!(left.is_some(), "step {}: oversold {:?}", step, s);
                        s.available = left.unwrap_or_default();
                        s.reserved += q;
                        model.orders.push(MOrder {
                            id: order.id,
                            user: *u,
                            drop: *d,
                            size: *size,
                            quantity: *q,
                            status: OrderStatus::Reserved,
                            reserved_until: order.reserved_until,
                            extended: false,
                        });
                    }
                    Err(e) => {
                        let allowed: &[&str] = if now_live {
                            &[
                                "out_of_stock",
                                "per_user_limit_exceeded",
                                "idempotency_key_in_flight",
                            ]
                        } else {
                            &["drop_not_live", "idempotency_key_in_flight"]
                        };
                        prop_assert!(
                            allowed.contains(&e.code()),
                            "step {}: unexpected {:?}",
                            step,
                            e
                        );
                    }
                }
            }
        }
        Op::Tick => {
            let moved = world.app.tick_scheduler().await.map_err(failed)?;
            let mut expected = 0;
            for d in 0..model.drops.len() {
                if let Some(next) = model.drops[d].due(now) {
                    model.drops[d].state = next;
                    expected += 1;
                    if next == DropState::Ended {
                        model.close(d);
                    }
                }
            }
            // Then every draw whose entries closed runs, once.
            for d in 0..model.drops.len() {
                let md = &model.drops[d];
                let Some(draw) = &md.draw else { continue };
                if draw.drawn_at.is_some() || md.state == DropState::Cancelled || now < draw.close {
                    continue;
                }
                expected += 1;
                let stored = world.ports.drops.drop_by_id(md.id).await.map_err(failed)?;
                let seed = stored.and_then(|s| s.draw).and_then(|d| d.seed);
                prop_assert!(seed.is_some(), "step {}: the draw revealed no seed", step);
                let seed = seed.unwrap_or_default();
                prop_assert_eq!(
                    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(seed.as_bytes())),
                    draw.commitment.clone(),
                    "step {}: the seed does not match the commitment",
                    step
                );
                model.run_draw(d, seed, now);
            }
            prop_assert_eq!(moved, expected, "step {}: drops the scheduler moved", step);
        }
        Op::CancelDrop { drop } => {
            let md = &mut model.drops[drop];
            let got = world.app.cancel_drop(creator, md.id).await;
            // Holds already placed run their course: the stock stays as it is.
            let expected = match md.state {
                DropState::Ended => Err("conflict".to_owned()),
                DropState::Scheduled | DropState::Live | DropState::Cancelled => {
                    md.state = DropState::Cancelled;
                    model.close(drop);
                    Ok(())
                }
            };
            if let Ok(view) = &got {
                prop_assert_eq!(view.drop.state, DropState::Cancelled);
            }
            prop_assert_eq!(code(&got), expected, "step {}: {:?}", step, op);
        }
        Op::Sweep => {
            // The store's sweep directly: the order it expires holds in decides which
            // waiting buyer gets which units.
            let expired = world
                .ports
                .orders
                .expire_holds(now, 1_000, model.hold)
                .await
                .map_err(failed)?;
            let due: Vec<OrderId> = model
                .orders
                .iter()
                .filter(|o| o.status == OrderStatus::Reserved && o.reserved_until <= now)
                .map(|o| o.id)
                .collect();
            let mut got: Vec<OrderId> = expired.iter().map(|o| o.id).collect();
            got.sort_unstable();
            let mut want = due.clone();
            want.sort_unstable();
            prop_assert_eq!(got, want, "step {}: holds expired", step);
            for order in &expired {
                let idx = model.orders.iter().position(|o| o.id == order.id);
                prop_assert!(idx.is_some(), "step {}: an unknown order expired", step);
                model.release(idx.unwrap_or_default(), OrderStatus::Expired, now);
            }
        }
        Op::Adjust { drop, size, delta } => {
            let d = &model.drops[drop];
            let size = d.size(size);
            let got = world
                .app
                .adjust_stock(
                    None,
                    d.id,
                    StockAdjustment {
                        delta,
                        reason: "model".into(),
                        sku: Some(d.skus[size].clone()),
                    },
                )
                .await;
            let s = &mut model.drops[drop].stock[size];
            let magnitude = delta.unsigned_abs() as u32;
            if delta > 0 {
                s.total += magnitude;
                s.available += magnitude;
                prop_assert!(got.is_ok(), "step {}: restock refused: {:?}", step, got);
                model.hand_off(drop, size, now);
            } else if s.available >= magnitude {
                s.total -= magnitude;
                s.available -= magnitude;
                prop_assert!(got.is_ok(), "step {}: shrink refused: {:?}", step, got);
            } else {
                prop_assert_eq!(code(&got), Err("insufficient_stock".to_owned()));
            }
        }
        Op::Join {
            user,
            drop,
            size,
            quantity,
        } => {
            let size = model.drops[drop].size(size);
            let d = &model.drops[drop];
            let request = JoinWaitlist {
                sku: (d.skus.len() > 1).then(|| d.skus[size].clone()),
                quantity,
            };
            let got = world.app.join_waitlist(&users[user], d.id, request).await;
            let held = model.held(user, drop);
            let d = &mut model.drops[drop];
            let expected: Result<(), String> = if !d.accepts_orders_at(now) {
                Err("drop_not_live".into())
            } else if d.stock[size].available > 0 {
                Err("variant_available".into())
            } else if held + quantity > d.limit {
                Err("per_user_limit_exceeded".into())
            } else {
                match d.waiting.iter_mut().find(|e| e.user == user) {
                    Some(e) if e.size == size => e.quantity = quantity,
                    _ => {
                        d.waiting.retain(|e| e.user != user);
                        d.waiting.push(MEntry {
                            user,
                            size,
                            quantity,
                            joined_at: now,
                        });
                    }
                }
                Ok(())
            };
            prop_assert_eq!(code(&got), expected.clone(), "step {}: {:?}", step, op);
            if let Ok(entry) = &got {
                let d = &model.drops[drop];
                let m = d.waiting.iter().find(|e| e.user == user);
                prop_assert!(m.is_some());
                let m = m.copied().unwrap_or(MEntry {
                    user,
                    size,
                    quantity,
                    joined_at: now,
                });
                prop_assert_eq!(&entry.sku, &d.skus[size]);
                prop_assert_eq!(entry.quantity, quantity);
                prop_assert_eq!(entry.joined_at, m.joined_at, "step {}: joined at", step);
                prop_assert_eq!(Some(entry.position), d.position(user), "step {}", step);
            }
        }
        Op::Leave { user, drop } => {
            let d = &mut model.drops[drop];
            let got = world.app.leave_waitlist(&users[user], d.id).await;
            let before = d.waiting.len();
            d.waiting.retain(|e| e.user != user);
            let expected = if d.waiting.len() < before {
                Ok(())
            } else {
                Err("not_found".to_owned())
            };
            prop_assert_eq!(code(&got), expected, "step {}: {:?}", step, op);
        }
        Op::Enter {
            user,
            size,
            unknown,
            named,
            quantity,
        } => {
            let d = &model.drops[DRAW];
            let size = d.size(size);
            let sku = if unknown {
                Some("no-such-size".to_owned())
            } else {
                named.then(|| d.skus[size].clone())
            };
            let request = EnterDraw {
                sku: sku.clone(),
                quantity: Some(quantity),
            };
            let got = world.app.enter_draw(&users[user], d.id, request).await;
            let draw = d.draw.as_ref().unwrap_or_else(|| unreachable!());
            let open = d.state != DropState::Cancelled
                && draw.drawn_at.is_none()
                && d.starts_at <= now
                && now < draw.close;
            let expected: Result<(), String> = if unknown {
                Err("not_found".into())
            } else if sku.is_none() && d.skus.len() > 1 {
                Err("invalid_input".into())
            } else if !open {
                Err("entries_closed".into())
            } else if quantity > d.limit {
                Err("invalid_input".into())
            } else {
                Ok(())
            };
            prop_assert_eq!(code(&got), expected.clone(), "step {}: {:?}", step, op);
            if let Ok(entry) = got {
                let draw = model.drops[DRAW]
                    .draw
                    .as_mut()
                    .unwrap_or_else(|| unreachable!());
                let token = match draw.entry(user) {
                    // A replaced entry keeps its token.
                    Some(e) => e.token.clone(),
                    None => {
                        prop_assert!(
                            entry.token.len() == 32
                                && entry.token.chars().all(|c| c.is_ascii_hexdigit()),
                            "step {}: token {:?}",
                            step,
                            entry.token
                        );
                        prop_assert!(
                            draw.entries.iter().all(|e| e.token != entry.token),
                            "step {}: a token twice",
                            step
                        );
                        entry.token.clone()
                    }
                };
                draw.entries.retain(|e| e.user != user);
                draw.entries.push(MDrawEntry {
                    user,
                    size,
                    quantity,
                    token: token.clone(),
                    entered_at: now,
                    result: DrawResult::Pending,
                    rank: None,
                    order: None,
                });
                prop_assert_eq!(&entry.token, &token, "step {}: entry token", step);
                prop_assert_eq!(&entry.sku, &model.drops[DRAW].skus[size]);
                prop_assert_eq!(entry.quantity, quantity);
                prop_assert_eq!(entry.entered_at, now);
                prop_assert_eq!(entry.result, DrawResult::Pending);
                prop_assert_eq!(entry.rank, None);
                prop_assert_eq!(entry.order_id, None);
            }
        }
        Op::Withdraw { user } => {
            let d = &mut model.drops[DRAW];
            let got = world.app.withdraw_entry(&users[user], d.id).await;
            let draw = d.draw.as_mut().unwrap_or_else(|| unreachable!());
            let open = d.state != DropState::Cancelled
                && draw.drawn_at.is_none()
                && d.starts_at <= now
                && now < draw.close;
            let expected: Result<(), String> = if !open {
                Err("entries_closed".into())
            } else if draw.entry(user).is_none() {
                Err("not_found".into())
            } else {
                draw.entries.retain(|e| e.user != user);
                Ok(())
            };
            prop_assert_eq!(code(&got), expected, "step {}: {:?}", step, op);
        }
        Op::AdjustDraw { size, delta } => {
            let d = &model.drops[DRAW];
            let size = d.size(size);
            let got = world
                .app
                .adjust_stock(
                    None,
                    d.id,
                    StockAdjustment {
                        delta,
                        reason: "model".into(),
                        sku: Some(d.skus[size].clone()),
                    },
                )
                .await;
            let s = &mut model.drops[DRAW].stock[size];
            let magnitude = delta.unsigned_abs() as u32;
            if delta > 0 {
                s.total += magnitude;
                s.available += magnitude;
                prop_assert!(got.is_ok(), "step {}: restock refused: {:?}", step, got);
                model.draw_hand_off(DRAW, size, now);
            } else if s.available >= magnitude {
                s.total -= magnitude;
                s.available -= magnitude;
                prop_assert!(got.is_ok(), "step {}: shrink refused: {:?}", step, got);
            } else {
                prop_assert_eq!(code(&got), Err("insufficient_stock".to_owned()));
            }
        }
        Op::QueueJoin { user } => {
            let d = &mut model.drops[ROOM];
            let got = world.app.join_queue(&users[user], d.id).await;
            let room = d.room.as_mut().unwrap_or_else(|| unreachable!());
            let expected: Result<(), String> =
                if d.state == DropState::Cancelled || now >= d.ends_at {
                    Err("drop_not_live".into())
                } else if now < room.room.opens_at(d.starts_at) {
                    Err("conflict".into())
                } else {
                    if room.joined(user) {
                        // Joining twice keeps the place.
                    } else if now < d.starts_at {
                        room.pre.push((user, now));
                    } else {
                        let slot = room.next_slot(d.starts_at, now);
                        room.post.push((user, now, slot));
                    }
                    Ok(())
                };
            prop_assert_eq!(code(&got), expected, "step {}: {:?}", step, op);
            // The answer itself is compared with the model by `check_room`, which
            // reads the same status after the step.
        }
        Op::RoomOrder {
            user,
            quantity,
            token,
        } => {
            let d = &model.drops[ROOM];
            let admitted = |u: usize| async move {
                match world.app.queue_status(&users[u], d.id).await {
                    Ok(status) => status.admission_token,
                    Err(_) => None,
                }
            };
            let sent = match token {
                Token::None => None,
                Token::Own => admitted(user).await,
                Token::Other => {
                    let mut other = None;
                    for u in (0..USERS).filter(|u| *u != user) {
                        if let Some(t) = admitted(u).await {
                            other = Some(t);
                            break;
                        }
                    }
                    Some(other.unwrap_or_else(|| "v1.99999999999.00".to_owned()))
                }
            };
            let own = token == Token::Own && sent.is_some();
            let request = PlaceOrder {
                admission_token: sent,
                drop_id: d.id,
                quantity,
                sku: None,
            };
            let got = world
                .app
                .place_order(&users[user], Some(&format!("room-{step}")), request)
                .await;
            let expected: Result<(), String> = if !own {
                Err("admission_required".into())
            } else if !d.accepts_orders_at(now) {
                Err("drop_not_live".into())
            } else if model.held(user, ROOM) + quantity > d.limit {
                Err("per_user_limit_exceeded".into())
            } else if d.stock[0].available < quantity {
                Err("out_of_stock".into())
            } else {
                Ok(())
            };
            prop_assert_eq!(code(&got), expected, "step {}: {:?}", step, op);
            if let Ok(order) = got {
                prop_assert_eq!(order.quantity, quantity);
                let s = &mut model.drops[ROOM].stock[0];
                s.available -= quantity;
                s.reserved += quantity;
                model.orders.push(MOrder {
                    id: order.id,
                    user,
                    drop: ROOM,
                    size: 0,
                    quantity,
                    status: OrderStatus::Reserved,
                    reserved_until: order.reserved_until,
                    extended: false,
                });
            }
        }
    }
    Ok(())
}

/// Learns the orders the step's draw wins placed (each winner's entry names its
/// order) and checks each is the reserved order of the entry's whole quantity of
/// its size, held for the payment window, keyed `draw:<order id>`.
async fn learn_wins(
    world: &World,
    model: &mut Model,
    users: &[Actor],
    step: usize,
) -> Result<(), TestCaseError> {
    for idx in std::mem::take(&mut model.wins) {
        let m = model.orders[idx].clone();
        let d = &model.drops[m.drop];
        let entry = world
            .ports
            .draws
            .draw_entry(d.id, users[m.user].id)
            .await
            .map_err(failed)?;
        let order_id = entry.as_ref().and_then(|e| e.order_id);
        prop_assert!(
            order_id.is_some(),
            "step {}: user {} won {:?} but the store's entry is {:?}",
            step,
            m.user,
            m,
            entry
        );
        let order_id = order_id.unwrap_or_else(|| unreachable!());
        prop_assert!(
            model.orders.iter().all(|o| o.id != order_id),
            "step {}: a win's order is an older order",
            step
        );
        let order = world.ports.orders.order(order_id).await.map_err(failed)?;
        prop_assert!(order.is_some(), "step {}: the win's order is missing", step);
        let order = order.unwrap_or_else(|| unreachable!());
        prop_assert_eq!(order.user_id, users[m.user].id);
        prop_assert_eq!(order.drop_id, d.id);
        prop_assert_eq!(&order.sku, &d.skus[m.size], "step {}: won size", step);
        prop_assert_eq!(order.quantity, m.quantity, "step {}: won units", step);
        prop_assert_eq!(order.status, OrderStatus::Reserved);
        prop_assert_eq!(
            order.reserved_until,
            m.reserved_until,
            "step {}: hold",
            step
        );
        prop_assert_eq!(&order.fingerprint, DRAW_FINGERPRINT);
        prop_assert_eq!(&order.idempotency_key, &format!("draw:{}", order.id));
        model.orders[idx].id = order.id;
    }
    Ok(())
}

/// After every step, the draw drop and the waiting-room drop: each entry as the
/// model has it (token, size, units, result, rank, order), the seed secret until
/// the draw and then matching the commitment, the published ranking, the counts;
/// each place in the queue, its admission and token, the admissions so far.
async fn check_draw(
    world: &World,
    model: &Model,
    users: &[Actor],
    step: usize,
) -> Result<(), TestCaseError> {
    let d = &model.drops[DRAW];
    let draw = d.draw.as_ref().unwrap_or_else(|| unreachable!());
    let stored = world.ports.drops.drop_by_id(d.id).await.map_err(failed)?;
    let stored = stored.and_then(|s| s.draw);
    prop_assert!(
        stored.is_some(),
        "step {}: the draw drop lost its draw",
        step
    );
    let stored = stored.unwrap_or_else(|| unreachable!());
    prop_assert_eq!(&stored.commitment, &draw.commitment);
    prop_assert_eq!(&stored.seed, &draw.seed, "step {}: seed", step);
    prop_assert_eq!(stored.drawn_at, draw.drawn_at, "step {}: drawn at", step);
    prop_assert_eq!(stored.entries_close_at, draw.close);
    for (u, user) in users.iter().enumerate() {
        let got = world
            .ports
            .draws
            .draw_entry(d.id, user.id)
            .await
            .map_err(failed)?;
        let want = draw.entry(u);
        match (&got, want) {
            (None, None) => {}
            (Some(e), Some(m)) => {
                prop_assert_eq!(&e.token, &m.token, "step {}: token of {}", step, u);
                prop_assert_eq!(&e.sku, &d.skus[m.size], "step {}: sku of {}", step, u);
                prop_assert_eq!(e.quantity, m.quantity, "step {}: units of {}", step, u);
                prop_assert_eq!(e.entered_at, m.entered_at);
                prop_assert_eq!(e.result, m.result, "step {}: result of {}", step, u);
                prop_assert_eq!(e.rank, m.rank, "step {}: rank of {}", step, u);
                prop_assert_eq!(
                    e.order_id,
                    m.order.map(|i| model.orders[i].id),
                    "step {}: order of {}",
                    step,
                    u
                );
            }
            _ => prop_assert!(
                false,
                "step {}: user {}'s entry: stored {:?}, model {:?}",
                step,
                u,
                got,
                want
            ),
        }
    }
    let published = world
        .ports
        .draws
        .draw_entries(d.id, 0, 100)
        .await
        .map_err(failed)?;
    let ranked: Vec<(u64, livedrop::core::UserId, DrawResult)> = published
        .iter()
        .map(|e| (e.rank.unwrap_or_default(), e.user_id, e.result))
        .collect();
    let want: Vec<(u64, livedrop::core::UserId, DrawResult)> = draw
        .ranked
        .iter()
        .enumerate()
        .filter_map(|(i, u)| {
            let e = draw.entry(*u)?;
            Some((i as u64 + 1, users[*u].id, e.result))
        })
        .collect();
    prop_assert_eq!(ranked, want, "step {}: the published ranking", step);
    if draw.drawn_at.is_some() {
        prop_assert!(
            draw.entries.iter().all(|e| e.result != DrawResult::Pending),
            "step {}: an entry left pending after the draw",
            step
        );
    }
    let counts = world.app.draw_counts(d.id).await.map_err(failed)?;
    let won = draw
        .entries
        .iter()
        .filter(|e| e.result == DrawResult::Won)
        .count() as u64;
    prop_assert_eq!(counts, (draw.entries.len() as u64, won), "step {}", step);
    Ok(())
}

/// After every step, the waiting room: each buyer's place, admission time and
/// token; the pre-queue's places a permutation, fixed from the start, all admitted
/// before any later arrival; admissions so far as the model counts them, never more
/// than the rate allows for the time since the start.
async fn check_room(
    world: &World,
    model: &mut Model,
    users: &[Actor],
    step: usize,
) -> Result<(), TestCaseError> {
    let now = world.clock.now_ts();
    let d = &mut model.drops[ROOM];
    let (id, starts_at) = (d.id, d.starts_at);
    let room = d.room.as_mut().unwrap_or_else(|| unreachable!());
    let seconds = Span::seconds(i64::from(room.room.token_seconds));
    let mut pre_places = Vec::new();
    let mut pre_admits = Vec::new();
    let mut post_admits = Vec::new();
    let mut admitted = 0u64;
    for (u, user) in users.iter().enumerate() {
        let got = world
            .ports
            .queues
            .queue_entry(id, user.id)
            .await
            .map_err(failed)?;
        let status = world.app.queue_status(user, id).await;
        if !room.joined(u) {
            prop_assert!(got.is_none(), "step {}: user {} queued: {:?}", step, u, got);
            prop_assert_eq!(code(&status), Err("not_found".to_owned()));
            continue;
        }
        prop_assert!(got.is_some(), "step {}: user {} not queued", step, u);
        let entry = got.unwrap_or_else(|| unreachable!());
        let pre = room.pre.iter().find(|(w, _)| *w == u).map(|(_, at)| *at);
        let admit_at = if let Some(joined) = pre {
            prop_assert_eq!(entry.joined_at, joined);
            if now >= starts_at {
                let fixed = *room.fixed.entry(u).or_insert(entry.position);
                prop_assert_eq!(
                    entry.position,
                    fixed,
                    "step {}: a pre-queue place moved after the start",
                    step
                );
            }
            pre_places.push(entry.position);
            let at = room.admit_at(u, starts_at, entry.position);
            pre_admits.push(at);
            at
        } else {
            let i = room.post.iter().position(|(w, _, _)| *w == u);
            let i = i.unwrap_or_default();
            let (_, joined, slot) = room.post[i];
            prop_assert_eq!(entry.joined_at, joined);
            prop_assert_eq!(
                entry.position,
                (room.pre.len() + i + 1) as u64,
                "step {}: place of a later arrival",
                step
            );
            post_admits.push(slot);
            Some(slot)
        };
        let admit_at = admit_at.unwrap_or_else(|| unreachable!());
        prop_assert_eq!(
            entry.admit_at,
            admit_at,
            "step {}: admission of {}",
            step,
            u
        );
        if admit_at <= now {
            admitted += 1;
        }
        prop_assert!(status.is_ok(), "step {}: {:?}", step, status);
        let status = status.unwrap_or_else(|_| unreachable!());
        let (state, has_token) = if now < admit_at {
            (QueueState::Waiting, false)
        } else if now < admit_at + seconds {
            (QueueState::Admitted, true)
        } else {
            (QueueState::Expired, false)
        };
        prop_assert_eq!(status.status, state, "step {}: user {}", step, u);
        prop_assert_eq!(status.admission_token.is_some(), has_token);
        prop_assert_eq!(status.position, entry.position);
        prop_assert_eq!(status.expires_at, admit_at + seconds);
    }
    pre_places.sort_unstable();
    prop_assert!(
        pre_places.iter().copied().eq(1..=room.pre.len() as u64),
        "step {}: pre-queue places {:?}",
        step,
        pre_places
    );
    let last_pre = pre_admits.iter().flatten().max();
    let first_post = post_admits.iter().min();
    if let (Some(a), Some(b)) = (last_pre, first_post) {
        prop_assert!(
            a < b,
            "step {}: a later arrival admitted before the pre-queue",
            step
        );
    }
    post_admits.sort_unstable();
    for pair in post_admits.windows(2) {
        prop_assert!(
            pair[1] - pair[0] >= room.interval(),
            "step {}: admissions closer than the interval",
            step
        );
    }
    let through = world.app.admitted_through(id).await.map_err(failed)?;
    prop_assert_eq!(through, admitted, "step {}: admitted so far", step);
    let allowed = if now < starts_at {
        0
    } else {
        ((now - starts_at).num_microseconds().unwrap_or(i64::MAX)
            / room.interval().num_microseconds().unwrap_or(1)) as u64
            + 1
    };
    prop_assert!(
        through <= allowed,
        "step {}: {} admitted, the rate allows {}",
        step,
        through,
        allowed
    );
    Ok(())
}

/// Finds the orders the step's waitlist offers made in the store (each buyer's
/// `waitlist`-fingerprinted orders of the drop the model does not know yet: a buyer
/// has one entry per drop, so one offer per drop and step) and checks each holds
/// what the model offered.
async fn learn_offers(
    world: &World,
    model: &mut Model,
    users: &[Actor],
    step: usize,
) -> Result<(), TestCaseError> {
    let offers = std::mem::take(&mut model.offers);
    for offer in &offers {
        let d = &model.drops[offer.drop];
        let stored = world
            .ports
            .orders
            .orders_for_user(users[offer.user].id, PageRequest::first(100))
            .await
            .map_err(failed)?
            .items;
        let new: Vec<_> = stored
            .into_iter()
            .filter(|o| {
                o.drop_id == d.id
                    && o.fingerprint == livedrop::core::model::WAITLIST_FINGERPRINT
                    && model.orders.iter().all(|m| m.id != o.id)
            })
            .collect();
        let [order] = new.as_slice() else {
            let stock = world.ports.inventory.stock(d.id).await.map_err(failed)?;
            return Err(TestCaseError::fail(format!(
                "step {step}: expected one new waitlist offer {offer:?}, the store has {new:?} (stock {stock:?})"
            )));
        };
        prop_assert_eq!(&order.sku, &d.skus[offer.size]);
        prop_assert_eq!(
            order.quantity,
            offer.quantity,
            "step {}: offered units",
            step
        );
        prop_assert_eq!(order.status, OrderStatus::Reserved);
        let m = &mut model.orders[offer.order];
        prop_assert_eq!(order.reserved_until, m.reserved_until, "step {}", step);
        m.id = order.id;
    }
    Ok(())
}

/// After every step: the store agrees with the model and the guarantees hold.
async fn check(
    world: &World,
    model: &Model,
    users: &[Actor],
    step: usize,
) -> Result<(), TestCaseError> {
    let now = world.clock.now_ts();
    for (d, md) in model.drops.iter().enumerate() {
        let stored = world.ports.drops.drop_by_id(md.id).await.unwrap().unwrap();
        prop_assert_eq!(stored.state, md.state, "step {}: state of drop {}", step, d);
        let stock = world.ports.inventory.stock(md.id).await.unwrap().unwrap();
        for s in &stock {
            prop_assert!(
                s.is_consistent(),
                "step {}: invariant broken: {:?}",
                step,
                s
            );
        }
        prop_assert_eq!(&stock, &md.stock, "step {}: stock of drop {}", step, d);
        // Each buyer's place, as its owner reads it.
        let mut lines: HashMap<String, Vec<u64>> = HashMap::new();
        for (u, user) in users.iter().enumerate() {
            let got: Option<WaitlistEntry> = world
                .ports
                .waitlists
                .waitlist_entry(md.id, user.id)
                .await
                .map_err(failed)?;
            let want = md.waiting.iter().find(|e| e.user == u);
            match (&got, want) {
                (None, None) => {}
                (Some(entry), Some(m)) => {
                    prop_assert_eq!(&entry.sku, &md.skus[m.size], "step {}", step);
                    prop_assert_eq!(entry.quantity, m.quantity, "step {}", step);
                    prop_assert_eq!(entry.joined_at, m.joined_at, "step {}", step);
                    prop_assert_eq!(
                        Some(entry.position),
                        md.position(u),
                        "step {}: place of user {} in drop {}",
                        step,
                        u,
                        d
                    );
                    lines
                        .entry(entry.sku.clone())
                        .or_default()
                        .push(entry.position);
                }
                _ => prop_assert!(
                    false,
                    "step {}: user {} in drop {}: stored {:?}, model {:?}",
                    step,
                    u,
                    d,
                    got,
                    want
                ),
            }
        }
        // Nobody waits for a size with units anyone may order.
        for (sku, places) in &mut lines {
            let i = md.skus.iter().position(|s| s == sku).unwrap_or_default();
            if md.accepts_orders_at(now) {
                prop_assert_eq!(
                    stock[i].available,
                    0,
                    "step {}: units of {} available while {} wait",
                    step,
                    sku,
                    places.len()
                );
            }
            places.sort_unstable();
            prop_assert!(
                places.iter().copied().eq(1..=places.len() as u64),
                "step {}: places of {}: {:?}",
                step,
                sku,
                places
            );
        }
    }
    // The per-user limit, as the store holds it: every order of every buyer, every
    // size of a drop together.
    for (u, user) in users.iter().enumerate() {
        let mut held = vec![0u32; model.drops.len()];
        let mut page = PageRequest::first(100);
        loop {
            let got = world
                .ports
                .orders
                .orders_for_user(user.id, page)
                .await
                .unwrap();
            for o in &got.items {
                let d = model.drops.iter().position(|md| md.id == o.drop_id);
                prop_assert!(d.is_some(), "step {}: an order of an unknown drop", step);
                if o.status.holds_stock() {
                    held[d.unwrap_or_default()] += o.quantity;
                }
            }
            match got.next_cursor {
                Some(c) => page = page.after(Some(c)),
                None => break,
            }
        }
        for (d, md) in model.drops.iter().enumerate() {
            prop_assert!(
                held[d] <= md.limit,
                "step {}: user {} holds {} of drop {} past its limit {}",
                step,
                u,
                held[d],
                d,
                md.limit
            );
            prop_assert_eq!(held[d], model.held(u, d), "step {}: user {} holds", step, u);
        }
    }
    for o in &model.orders {
        let stored = world.ports.orders.order(o.id).await.unwrap().unwrap();
        prop_assert_eq!(stored.status, o.status, "step {}: order status", step);
        prop_assert_eq!(
            &stored.sku,
            &model.drops[o.drop].skus[o.size],
            "step {}: size",
            step
        );
        prop_assert_eq!(
            stored.reserved_until,
            o.reserved_until,
            "step {}: end of hold",
            step
        );
        prop_assert_eq!(
            stored.extended_at.is_some(),
            o.extended,
            "step {}: extended",
            step
        );
    }
    Ok(())
}
