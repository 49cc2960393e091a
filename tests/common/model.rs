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

use std::collections::HashMap;

use super::{ClockExt, World};
use chrono::Duration as Span;
use livedrop::core::model::{Actor, DropState, OrderStatus, Role, Stock, WaitlistEntry};
use livedrop::core::page::PageRequest;
use livedrop::core::service::{JoinWaitlist, PlaceOrder, StockAdjustment};
use livedrop::core::{DropId, OrderId, Timestamp};
use proptest::prelude::*;

pub const USERS: usize = 3;
pub const DROPS: usize = 2;
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
}

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..USERS, 0..DROPS, 0..SIZES, any::<bool>(), 1u32..4, 0u8..6).prop_map(|(user, drop, size, named, quantity, key)| Op::Order { user, drop, size, named, quantity, key }),
        4 => any::<usize>().prop_map(|pick| Op::Confirm { pick }),
        3 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        2 => any::<usize>().prop_map(|pick| Op::Extend { pick }),
        2 => prop_oneof![4 => 1i64..9, 1 => 30i64..70].prop_map(|minutes| Op::Advance { minutes }),
        2 => Just(Op::Sweep),
        3 => (0..DROPS, 0..SIZES, prop_oneof![-4i64..0, 1i64..7]).prop_map(|(drop, size, delta)| Op::Adjust { drop, size, delta }),
        4 => prop::collection::vec((0..USERS, 0..DROPS, 0..SIZES, 1u32..4), 2..6).prop_map(|orders| Op::Burst { orders }),
        2 => Just(Op::Tick),
        1 => (0..DROPS).prop_map(|drop| Op::CancelDrop { drop }),
        6 => (0..USERS, 0..DROPS, 0..SIZES, 1u32..4).prop_map(|(user, drop, size, quantity)| Op::Join { user, drop, size, quantity }),
        1 => (0..USERS, 0..DROPS).prop_map(|(user, drop)| Op::Leave { user, drop }),
    ]
}

/// When each drop starts: `Some(minutes)` from the start of the run (scheduled for
/// later, so orders are refused until then), or `None` (live at once).
pub fn starts() -> impl Strategy<Value = [Option<i64>; DROPS]> {
    prop::array::uniform2(prop::option::weighted(0.3, 1i64..90))
}

/// One case of the model test: each drop's sizes (the units of each), per-user limit
/// and start, and the operations run on them.
#[derive(Debug, Clone)]
pub struct Case {
    pub stocks: [Vec<u32>; DROPS],
    pub limits: [Option<u32>; DROPS],
    pub starts: [Option<i64>; DROPS],
    pub ops: Vec<Op>,
}

/// Any [`Case`]: 1 to 4 sizes of 1 to 5 units per drop, a limit of 1 to 4 on most,
/// 1 to 39 operations.
pub fn case() -> impl Strategy<Value = Case> {
    let sizes = || prop::collection::vec(1u32..6, 1..=SIZES);
    (
        [sizes(), sizes()],
        prop::array::uniform2(prop::option::weighted(0.8, 1u32..5)),
        starts(),
        prop::collection::vec(op(), 1..40),
    )
        .prop_map(|(stocks, limits, starts, ops)| Case {
            stocks,
            limits,
            starts,
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

/// A waitlist offer the model expects the store to have made: to whom, of what.
#[derive(Debug, Clone)]
struct Offer {
    user: usize,
    drop: usize,
    size: usize,
    quantity: u32,
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
        self.hand_off(drop, size, now);
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
            });
        }
    }

    /// The drop ended or was cancelled: its waitlists close.
    fn close(&mut self, drop: usize) {
        self.drops[drop].waiting.clear();
    }
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
        });
    }

    for (step, op) in ops.into_iter().enumerate() {
        step_once(&world, &mut model, &users, &creator, step, op).await?;
        learn_offers(&world, &mut model, &users, step).await?;
        check(&world, &model, &users, step).await?;
    }
    Ok(())
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
    }
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
    // The offers' orders are the last ones the model pushed, in offer order.
    let first = model.orders.len() - offers.len();
    for (i, offer) in offers.iter().enumerate() {
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
        let m = &mut model.orders[first + i];
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
        let mut held = [0u32; DROPS];
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
