//! The reference model of the property tests: operations, expected outcomes, and
//! the comparison with the services after every step. Drops start at once or later
//! (orders are `drop_not_live` until their start), reach their end, move by the
//! scheduler's ticks, and are cancelled (orders refused from then on, holds already
//! placed left to run their course). Holds are extended once, while reserved and
//! not run out.

use std::collections::HashMap;

use super::{ClockExt, World};
use chrono::Duration as Span;
use livedrop::core::model::{Actor, DropState, OrderStatus, Role, Stock};
use livedrop::core::page::PageRequest;
use livedrop::core::service::{PlaceOrder, StockAdjustment};
use livedrop::core::{DropId, OrderId};
use proptest::prelude::*;

pub const USERS: usize = 3;
pub const DROPS: usize = 2;

#[derive(Debug, Clone)]
pub enum Op {
    Order {
        user: usize,
        drop: usize,
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
        delta: i64,
    },
    /// Orders placed all at once (several in flight, so group reserve batches
    /// them); the first is sent twice with one key, so a key races itself.
    Burst {
        orders: Vec<(usize, usize, u32)>,
    },
    /// One scheduler step: drops whose start or end passed move to live or ended.
    Tick,
    /// The creator cancels a drop.
    CancelDrop {
        drop: usize,
    },
}

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..USERS, 0..DROPS, 1u32..4, 0u8..6).prop_map(|(user, drop, quantity, key)| Op::Order { user, drop, quantity, key }),
        4 => any::<usize>().prop_map(|pick| Op::Confirm { pick }),
        2 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        2 => any::<usize>().prop_map(|pick| Op::Extend { pick }),
        2 => prop_oneof![4 => 1i64..9, 1 => 30i64..70].prop_map(|minutes| Op::Advance { minutes }),
        2 => Just(Op::Sweep),
        2 => (0..DROPS, prop_oneof![-4i64..0, 1i64..7]).prop_map(|(drop, delta)| Op::Adjust { drop, delta }),
        4 => prop::collection::vec((0..USERS, 0..DROPS, 1u32..4), 2..6).prop_map(|orders| Op::Burst { orders }),
        2 => Just(Op::Tick),
        1 => (0..DROPS).prop_map(|drop| Op::CancelDrop { drop }),
    ]
}

/// When each drop starts: `Some(minutes)` from the start of the run (scheduled for
/// later, so orders are refused until then), or `None` (live at once).
pub fn starts() -> impl Strategy<Value = [Option<i64>; DROPS]> {
    prop::array::uniform2(prop::option::weighted(0.3, 1i64..90))
}

/// One case of the model test: each drop's stock, per-user limit and start, and the
/// operations run on them.
#[derive(Debug, Clone)]
pub struct Case {
    pub stocks: [u32; DROPS],
    pub limits: [Option<u32>; DROPS],
    pub starts: [Option<i64>; DROPS],
    pub ops: Vec<Op>,
}

/// Any [`Case`]: 1 to 11 units per drop, a limit of 1 to 4 on most, 1 to 39
/// operations.
pub fn case() -> impl Strategy<Value = Case> {
    (
        prop::array::uniform2(1u32..12),
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

#[derive(Debug, Clone, Copy)]
struct MDrop {
    id: DropId,
    stock: Stock,
    limit: u32,
    starts_at: livedrop::core::Timestamp,
    ends_at: livedrop::core::Timestamp,
    /// The stored lifecycle state: moved by the scheduler's ticks and by a cancel,
    /// never by the clock alone.
    state: DropState,
}

impl MDrop {
    /// Orders are taken from the start to the end, whatever the stored state says,
    /// unless the drop was cancelled.
    fn accepts_orders_at(&self, now: livedrop::core::Timestamp) -> bool {
        self.state != DropState::Cancelled && self.starts_at <= now && now < self.ends_at
    }

    /// What one scheduler step does to the drop at `now`, if anything.
    fn due(&self, now: livedrop::core::Timestamp) -> Option<DropState> {
        match self.state {
            DropState::Scheduled if now >= self.ends_at => Some(DropState::Ended),
            DropState::Scheduled if now >= self.starts_at => Some(DropState::Live),
            DropState::Live if now >= self.ends_at => Some(DropState::Ended),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct MOrder {
    id: OrderId,
    user: usize,
    drop: usize,
    quantity: u32,
    status: OrderStatus,
    reserved_until: livedrop::core::Timestamp,
    /// The hold was extended.
    extended: bool,
}

type Recorded = Result<usize, String>;

struct Model {
    drops: Vec<MDrop>,
    orders: Vec<MOrder>,
    keys: HashMap<(usize, u8), ((usize, u32), Recorded)>,
}

impl Model {
    fn held(&self, user: usize, drop: usize) -> u32 {
        self.orders
            .iter()
            .filter(|o| o.user == user && o.drop == drop && o.status.holds_stock())
            .map(|o| o.quantity)
            .sum()
    }

    fn release(&mut self, idx: usize, to: OrderStatus) {
        let o = &mut self.orders[idx];
        o.status = to;
        let s = &mut self.drops[o.drop].stock;
        s.reserved -= o.quantity;
        s.available += o.quantity;
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
    let mut model = Model {
        drops: vec![],
        orders: vec![],
        keys: HashMap::new(),
    };
    for d in 0..DROPS {
        let view = world
            .drop_starting(&creator, stocks[d], limits[d], starts[d].map(Span::minutes))
            .await;
        let state = if starts[d].is_some() {
            DropState::Scheduled
        } else {
            DropState::Live
        };
        prop_assert_eq!(view.drop.state, state, "drop {} when scheduled", d);
        model.drops.push(MDrop {
            id: view.drop.id,
            stock: Stock::new(stocks[d]),
            // No limit means the stock at scheduling (restocks do not raise it).
            limit: limits[d].unwrap_or(stocks[d]),
            starts_at: view.drop.starts_at,
            ends_at: view.drop.ends_at,
            state,
        });
    }

    for (step, op) in ops.into_iter().enumerate() {
        let now = world.clock.now_ts();
        match op {
            Op::Order {
                user,
                drop,
                quantity,
                key,
            } => {
                let request = PlaceOrder {
                    drop_id: model.drops[drop].id,
                    quantity,
                };
                let got = world
                    .app
                    .place_order(&users[user], Some(&format!("key-{key}")), request)
                    .await;
                let expected: Recorded = match model.keys.get(&(user, key)) {
                    Some((fingerprint, recorded)) if *fingerprint == (drop, quantity) => {
                        recorded.clone()
                    }
                    Some(_) => Err("idempotency_key_reused".into()),
                    None => {
                        let d = model.drops[drop];
                        let outcome = if !d.accepts_orders_at(now) {
                            Err("drop_not_live".to_owned())
                        } else if model.held(user, drop) + quantity > d.limit {
                            Err("per_user_limit_exceeded".to_owned())
                        } else if d.stock.available < quantity {
                            Err("out_of_stock".to_owned())
                        } else {
                            let order = got.as_ref().map_err(|e| {
                                TestCaseError::fail(format!(
                                    "step {step}: expected a placed order, got {e:?}"
                                ))
                            })?;
                            let s = &mut model.drops[drop].stock;
                            s.available -= quantity;
                            s.reserved += quantity;
                            model.orders.push(MOrder {
                                id: order.id,
                                user,
                                drop,
                                quantity,
                                status: OrderStatus::Reserved,
                                reserved_until: order.reserved_until,
                                extended: false,
                            });
                            Ok(model.orders.len() - 1)
                        };
                        model
                            .keys
                            .insert((user, key), ((drop, quantity), outcome.clone()));
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
                    }
                    _ => {
                        prop_assert_eq!(code(&got), expected.map(|_| ()), "step {}: {:?}", step, op)
                    }
                }
            }
            Op::Confirm { pick } | Op::Cancel { pick } => {
                if model.orders.is_empty() {
                    continue;
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
                        model.release(idx, OrderStatus::Expired);
                        Err("hold_expired".into())
                    }
                    OrderStatus::Reserved if confirm => {
                        model.orders[idx].status = OrderStatus::Confirmed;
                        let s = &mut model.drops[o.drop].stock;
                        s.reserved -= o.quantity;
                        s.sold += o.quantity;
                        Ok(OrderStatus::Confirmed)
                    }
                    OrderStatus::Reserved => {
                        model.release(idx, OrderStatus::Cancelled);
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
                    continue;
                }
                let idx = pick % model.orders.len();
                let o = model.orders[idx].clone();
                let got = world.app.extend_order(&users[o.user], o.id).await;
                let expected: Result<(), String> = match o.status {
                    OrderStatus::Reserved if now >= o.reserved_until => Err("hold_expired".into()),
                    OrderStatus::Reserved if o.extended => Err("already_extended".into()),
                    OrderStatus::Reserved => {
                        let hold = Span::from_std(world.app.config().hold).map_err(failed)?;
                        let m = &mut model.orders[idx];
                        m.reserved_until += hold;
                        m.extended = true;
                        Ok(())
                    }
                    OrderStatus::Expired => Err("hold_expired".into()),
                    OrderStatus::Confirmed | OrderStatus::Cancelled => {
                        Err("order_not_reserved".into())
                    }
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
                let sends: Vec<(usize, usize, u32, String)> = std::iter::once((0, orders[0]))
                    .chain(orders.iter().copied().enumerate())
                    .map(|(i, (u, d, q))| (u, d, q, key(i)))
                    .collect();
                let results = futures::future::join_all(sends.iter().map(|(u, d, q, k)| {
                    let request = PlaceOrder {
                        drop_id: model.drops[*d].id,
                        quantity: *q,
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
                for ((u, d, q, _), got) in sends.iter().zip(&results) {
                    let now_live = model.drops[*d].accepts_orders_at(now);
                    match got {
                        Ok(order) => {
                            prop_assert!(now_live, "step {}: an order while not live", step);
                            if !seen.insert(order.id) {
                                continue;
                            }
                            let s = &mut model.drops[*d].stock;
                            let left = s.available.checked_sub(*q);
                            prop_assert!(left.is_some(), "step {}: oversold {:?}", step, s);
                            s.available = left.unwrap_or_default();
                            s.reserved += q;
                            model.orders.push(MOrder {
                                id: order.id,
                                user: *u,
                                drop: *d,
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
                for md in &mut model.drops {
                    if let Some(next) = md.due(now) {
                        md.state = next;
                        expected += 1;
                    }
                }
                prop_assert_eq!(moved, expected, "step {}: drops the scheduler moved", step);
            }
            Op::CancelDrop { drop } => {
                let md = &mut model.drops[drop];
                let got = world.app.cancel_drop(&creator, md.id).await;
                // Holds already placed run their course: the stock stays as it is.
                let expected = match md.state {
                    DropState::Ended => Err("conflict".to_owned()),
                    DropState::Scheduled | DropState::Live | DropState::Cancelled => {
                        md.state = DropState::Cancelled;
                        Ok(())
                    }
                };
                if let Ok(view) = &got {
                    prop_assert_eq!(view.drop.state, DropState::Cancelled);
                }
                prop_assert_eq!(code(&got), expected, "step {}: {:?}", step, op);
            }
            Op::Sweep => {
                let swept = world.app.sweep_holds().await.map_err(failed)?;
                let due: Vec<usize> = (0..model.orders.len())
                    .filter(|&i| {
                        model.orders[i].status == OrderStatus::Reserved
                            && model.orders[i].reserved_until <= now
                    })
                    .collect();
                prop_assert_eq!(swept, due.len(), "step {}: holds expired", step);
                for i in due {
                    model.release(i, OrderStatus::Expired);
                }
            }
            Op::Adjust { drop, delta } => {
                let got = world
                    .app
                    .adjust_stock(
                        None,
                        model.drops[drop].id,
                        StockAdjustment {
                            delta,
                            reason: "model".into(),
                        },
                    )
                    .await;
                let s = &mut model.drops[drop].stock;
                let magnitude = delta.unsigned_abs() as u32;
                if delta > 0 {
                    s.total += magnitude;
                    s.available += magnitude;
                    prop_assert!(got.is_ok(), "step {}: restock refused: {:?}", step, got);
                } else if s.available >= magnitude {
                    s.total -= magnitude;
                    s.available -= magnitude;
                    prop_assert!(got.is_ok(), "step {}: shrink refused: {:?}", step, got);
                } else {
                    prop_assert_eq!(code(&got), Err("insufficient_stock".to_owned()));
                }
            }
        }

        // After every step: the store agrees with the model and the invariant holds.
        for (d, md) in model.drops.iter().enumerate() {
            let stored = world.ports.drops.drop_by_id(md.id).await.unwrap().unwrap();
            prop_assert_eq!(stored.state, md.state, "step {}: state of drop {}", step, d);
            let stock = world.ports.inventory.stock(md.id).await.unwrap().unwrap();
            prop_assert!(
                stock.is_consistent(),
                "step {}: invariant broken: {:?}",
                step,
                stock
            );
            prop_assert_eq!(stock, md.stock, "step {}: stock of drop {}", step, d);
        }
        // The per-user limit, as the store holds it: every order of every buyer.
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
    }
    Ok(())
}
