//! Group reserve: one combiner task per hot drop turns the concurrent `place_order`
//! calls of this process into one transaction per batch.
//!
//! Every decision is still made under the drop's inventory row lock, against what is
//! committed, so other processes (with either strategy) stay correct alongside; the
//! batch only shares the lock, the round trips and the commit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use livedrop_core::clock::Timestamp;
use livedrop_core::event::{Event, EventType};
use livedrop_core::id::DropId;
use livedrop_core::model::{Order, PlaceOutcome};
use livedrop_core::{StoreError, StoreResult};
use sqlx::{PgConnection, Row};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::orders::{lock_drop, refusal, reserved, HOLDING};
use super::rows::{EventColumns, OrderColumns, OrderRow, StockRow};
use super::{map_sqlx_error, to_u32, Inner, PgStore};

/// A combiner that saw no order for this long retires (its drop cooled down).
const IDLE: Duration = Duration::from_secs(2);
/// Attempts at a batch that lost an idempotency-key race to another transaction.
const ATTEMPTS: usize = 3;

static NEXT_QUEUE: AtomicU64 = AtomicU64::new(1);

/// The queue of one drop's combiner.
pub(crate) struct Queue {
    id: u64,
    tx: mpsc::UnboundedSender<Request>,
}

struct Request {
    order: Order,
    now: Timestamp,
    reply: oneshot::Sender<StoreResult<PlaceOutcome>>,
}

/// A copy of an error for each caller of a failed batch.
fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable { what, source } => {
            StoreError::unavailable(what, source.to_string())
        }
        StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
        StoreError::NotFound => StoreError::NotFound,
        other => StoreError::backend(other.to_string()),
    }
}

impl PgStore {
    /// [`ReserveStrategy::Group`](super::ReserveStrategy::Group): queues the order to
    /// its drop's combiner and waits for the decision.
    pub(crate) async fn place_grouped(
        &self,
        order: &Order,
        now: Timestamp,
        max_batch: usize,
    ) -> StoreResult<PlaceOutcome> {
        let mut request = {
            let (reply, answer) = oneshot::channel();
            (
                Request {
                    order: order.clone(),
                    now,
                    reply,
                },
                answer,
            )
        };
        // A send fails only if the combiner retired between lookup and send; the next
        // lookup starts a fresh one.
        for _ in 0..ATTEMPTS {
            let tx = self.queue(order.drop_id, max_batch);
            match tx.send(request.0) {
                Ok(()) => {
                    return request.1.await.unwrap_or_else(|_| {
                        Err(StoreError::backend(
                            "the drop's order combiner stopped before answering",
                        ))
                    })
                }
                Err(mpsc::error::SendError(back)) => request.0 = back,
            }
        }
        // Still racing retirements: decide this order on its own.
        self.place_row_lock(order, now).await
    }

    fn queue(&self, drop: DropId, max_batch: usize) -> mpsc::UnboundedSender<Request> {
        let mut queues = self
            .inner
            .combiners
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(q) = queues.get(&drop) {
            if !q.tx.is_closed() {
                return q.tx.clone();
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let id = NEXT_QUEUE.fetch_add(1, Ordering::Relaxed);
        queues.insert(drop, Queue { id, tx: tx.clone() });
        tokio::spawn(combine(
            Arc::clone(&self.inner),
            drop,
            id,
            rx,
            max_batch.max(1),
        ));
        tx
    }
}

/// The combiner of one drop: takes whatever queued while the previous batch ran (up
/// to `max_batch`), decides it in one transaction, answers, repeats.
async fn combine(
    inner: Arc<Inner>,
    drop: DropId,
    id: u64,
    mut rx: mpsc::UnboundedReceiver<Request>,
    max_batch: usize,
) {
    loop {
        let first = match tokio::time::timeout(IDLE, rx.recv()).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(_) => {
                // Retire: unregister, refuse new sends, then serve what slipped in.
                {
                    let mut queues = inner.combiners.lock().unwrap_or_else(|p| p.into_inner());
                    if queues.get(&drop).is_some_and(|q| q.id == id) {
                        queues.remove(&drop);
                    }
                }
                rx.close();
                let mut rest = Vec::new();
                while let Ok(r) = rx.try_recv() {
                    rest.push(r);
                }
                while !rest.is_empty() {
                    let tail = rest.split_off(rest.len().min(max_batch));
                    run_batch(&inner, drop, rest).await;
                    rest = tail;
                }
                return;
            }
        };
        // Let callers just answered by the previous batch queue their next order.
        tokio::task::yield_now().await;
        let mut batch = Vec::with_capacity(max_batch.min(64));
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        run_batch(&inner, drop, batch).await;
    }
}

async fn run_batch(inner: &Inner, drop: DropId, batch: Vec<Request>) {
    // A caller whose future was dropped while its order queued (its client went
    // away) leaves no work behind: its order is not placed, and its key, released
    // by the caller's guard, places it on a retry.
    let queued = batch.len();
    let batch: Vec<Request> = batch.into_iter().filter(|r| !r.reply.is_closed()).collect();
    if batch.len() < queued {
        tracing::debug!(%drop, abandoned = queued - batch.len(), "orders of callers that went away skipped");
    }
    if batch.is_empty() {
        return;
    }
    let mut result = Err(StoreError::backend("no attempt"));
    for attempt in 0..ATTEMPTS {
        result = decide(inner, drop, &batch).await;
        match &result {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) => tracing::debug!(attempt, %drop, "idempotency key race; batch retried"),
        }
    }
    match result {
        Ok(Some(outcomes)) => {
            for (request, outcome) in batch.into_iter().zip(outcomes) {
                // A caller that went away no longer needs its answer.
                let _ = request.reply.send(Ok(outcome));
            }
        }
        Ok(None) => {
            for request in batch {
                let _ = request.reply.send(Err(StoreError::Conflict(
                    "idempotency key raced repeatedly".into(),
                )));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, %drop, "order batch failed");
            for request in batch {
                let _ = request.reply.send(Err(copy_error(&e)));
            }
        }
    }
}

/// Decides and writes one batch in one transaction. `Ok(None)`: a concurrent
/// transaction took one of the batch's idempotency keys first; nothing was written.
async fn decide(
    inner: &Inner,
    drop: DropId,
    batch: &[Request],
) -> StoreResult<Option<Vec<PlaceOutcome>>> {
    let users: Vec<Uuid> = batch.iter().map(|r| r.order.user_id.0).collect();
    let keys: Vec<&str> = batch
        .iter()
        .map(|r| r.order.idempotency_key.as_str())
        .collect();
    let mut tx = inner.pool.begin().await.map_err(map_sqlx_error)?;

    // 1. Orders that already exist under a key of the batch (any drop).
    let sql = format!(
        "SELECT {} FROM orders WHERE (user_id, idempotency_key) IN \
             (SELECT * FROM UNNEST($1::uuid[], $2::text[]))",
        OrderRow::COLUMNS
    );
    let mut known: HashMap<(Uuid, String), Order> = HashMap::new();
    for row in sqlx::query_as::<_, OrderRow>(&sql)
        .bind(&users)
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await
        .map_err(map_sqlx_error)?
    {
        let o = row.into_order()?;
        known.insert((o.user_id.0, o.idempotency_key.clone()), o);
    }

    // 2. The row lock: from here on the batch sees every committed order of the drop.
    let locked = lock_drop(&mut tx, drop.0).await?;
    let Some(row) = locked else {
        tx.rollback().await.map_err(map_sqlx_error)?;
        return Ok(Some(
            batch
                .iter()
                .map(
                    |r| match known.get(&(r.order.user_id.0, r.order.idempotency_key.clone())) {
                        Some(o) => PlaceOutcome::Duplicate(o.clone()),
                        None => PlaceOutcome::DropNotFound,
                    },
                )
                .collect(),
        ));
    };
    let the_drop = row.to_drop()?;

    // 3. Units each buyer of the batch holds in the drop.
    let mut held: HashMap<Uuid, i64> = HashMap::new();
    for r in sqlx::query(&format!(
        "SELECT user_id, COALESCE(SUM(quantity), 0)::int8 AS held FROM orders \
         WHERE drop_id = $1 AND user_id = ANY($2) AND status IN {HOLDING} GROUP BY user_id"
    ))
    .bind(drop.0)
    .bind(&users)
    .fetch_all(&mut *tx)
    .await
    .map_err(map_sqlx_error)?
    {
        let user: Uuid = r.try_get("user_id").map_err(map_sqlx_error)?;
        let units: i64 = r.try_get("held").map_err(map_sqlx_error)?;
        held.insert(user, units);
    }

    // 4. Decide in arrival order.
    let mut stock = row.stock;
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut placed: Vec<Order> = Vec::new();
    let mut events = Vec::new();
    for r in batch {
        let key = (r.order.user_id.0, r.order.idempotency_key.clone());
        if let Some(existing) = known.get(&key) {
            outcomes.push(PlaceOutcome::Duplicate(existing.clone()));
            continue;
        }
        let units = held.entry(key.0).or_insert(0);
        let before = stock.stock()?;
        if let Some(no) = refusal(
            &the_drop,
            r.now,
            to_u32(*units)?,
            before.available,
            r.order.quantity,
        ) {
            outcomes.push(no);
            continue;
        }
        let q = i64::from(r.order.quantity);
        stock.available -= q;
        stock.reserved += q;
        stock.version += 1;
        *units += q;
        let order = reserved(&r.order);
        events.push(Event::order(EventType::OrderPlaced, &order, r.now));
        events.extend(Event::stock_moved(
            drop.0,
            &before,
            &stock.stock()?,
            stock.version,
            r.now,
        ));
        known.insert(key, order.clone());
        placed.push(order.clone());
        outcomes.push(PlaceOutcome::Placed(order));
    }
    if placed.is_empty() {
        tx.rollback().await.map_err(map_sqlx_error)?;
        return Ok(Some(outcomes));
    }

    // 5. Write, in one statement: the stock once, every order, every event.
    let inserted = write_batch(&mut tx, drop, &stock, &placed, &events).await?;
    if inserted != placed.len() as u64 {
        tx.rollback().await.map_err(map_sqlx_error)?;
        return Ok(None);
    }
    tx.commit().await.map_err(map_sqlx_error)?;
    Ok(Some(outcomes))
}

/// Sets the locked stock row, inserts `orders` (skipping any whose key exists) and
/// appends `events`, in one round trip. Returns how many orders were inserted.
async fn write_batch(
    conn: &mut PgConnection,
    drop: DropId,
    stock: &StockRow,
    orders: &[Order],
    events: &[Event],
) -> StoreResult<u64> {
    let o = OrderColumns::new(orders);
    let e = EventColumns::new(events);
    let inserted: i64 = sqlx::query_scalar(
        "WITH stock AS ( \
             UPDATE inventory SET available = $2, reserved = $3, version = $4 \
             WHERE drop_id = $1 \
         ), placed AS ( \
             INSERT INTO orders (id, user_id, drop_id, quantity, unit_price_cents, \
                                 total_cents, currency, status, idempotency_key, fingerprint, \
                                 reserved_until, created_at, updated_at) \
             SELECT o.id, o.user_id, $1, o.q, o.unit, o.total, o.cur, 'reserved', o.key, \
                    o.fp, o.until, o.created, o.updated \
             FROM UNNEST($5::uuid[], $6::uuid[], $7::int8[], $8::int8[], $9::int8[], \
                         $10::text[], $11::text[], $12::text[], $13::timestamptz[], \
                         $14::timestamptz[], $15::timestamptz[]) \
                  AS o(id, user_id, q, unit, total, cur, key, fp, until, created, updated) \
             ON CONFLICT (user_id, idempotency_key) DO NOTHING \
             RETURNING 1 \
         ), appended AS ( \
             INSERT INTO outbox (event_id, event_type, aggregate_id, version, occurred_at, \
                                 payload) \
             SELECT e.id, e.kind, e.agg, e.ver, e.at, e.payload \
             FROM UNNEST($16::uuid[], $17::text[], $18::uuid[], $19::int8[], \
                         $20::timestamptz[], $21::jsonb[]) \
                  WITH ORDINALITY AS e(id, kind, agg, ver, at, payload, ord) \
             ORDER BY e.ord \
         ) \
         SELECT count(*) FROM placed",
    )
    .bind(drop.0)
    .bind(stock.available)
    .bind(stock.reserved)
    .bind(stock.version)
    .bind(&o.ids)
    .bind(&o.users)
    .bind(&o.quantities)
    .bind(&o.units)
    .bind(&o.totals)
    .bind(&o.currencies)
    .bind(&o.keys)
    .bind(&o.fingerprints)
    .bind(&o.until)
    .bind(&o.created)
    .bind(&o.updated)
    .bind(&e.ids)
    .bind(&e.types)
    .bind(&e.aggregates)
    .bind(&e.versions)
    .bind(&e.occurred)
    .bind(&e.payloads)
    .fetch_one(conn)
    .await
    .map_err(map_sqlx_error)?;
    Ok(u64::try_from(inserted).unwrap_or(0))
}
