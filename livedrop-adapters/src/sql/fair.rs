//! Draws and waiting rooms, written once for both SQL stores: [`fair_ports!`]
//! expands `DrawRepository` and `QueueRepository` (and the draw hand-off that
//! `serve_waitlist` runs for a drawn drop) in each store's `orders` module, beside
//! [`order_ports!`](super::orders::order_ports).
//!
//! Every write here first locks the drop's row (`dialect::LOCK_DROP`): entries,
//! withdrawals and the draw are serialized per drop, so the draw runs once and no
//! entry lands after it; queue joins are serialized per drop, so admission slots
//! are handed out one after the other, across processes.

/// Implements `DrawRepository` and `QueueRepository` for `$store`, in a module where
/// [`order_ports!`](super::orders::order_ports) was expanded.
macro_rules! fair_ports {
    ($store:ty) => {
        /// Locks the drop's row for the caller's transaction; whether it exists.
        async fn lock_drop(
            conn: &mut dialect::Conn,
            drop: ::uuid::Uuid,
        ) -> ::livedrop_core::StoreResult<bool> {
            let sql = format!("SELECT id FROM drops WHERE id = $1{}", dialect::LOCK_DROP);
            let found: Option<::uuid::Uuid> = ::sqlx::query_scalar(&sql)
                .bind(drop)
                .fetch_optional(conn)
                .await
                .map_err(dialect::map_sqlx_error)?;
            Ok(found.is_some())
        }

        /// The buyer's draw entry, read through `conn`.
        async fn draw_entry_row<'c, E>(
            conn: E,
            drop: ::uuid::Uuid,
            user: ::uuid::Uuid,
        ) -> ::livedrop_core::StoreResult<Option<::livedrop_core::model::DrawEntry>>
        where
            E: ::sqlx::Executor<'c, Database = dialect::Db>,
        {
            let sql = format!(
                "SELECT {} FROM draw_entries e WHERE e.drop_id = $1 AND e.user_id = $2",
                dialect::DrawEntryRow::COLUMNS
            );
            let query = ::sqlx::query_as(&sql).bind(drop).bind(user);
            $crate::sql::optional_row(
                conn,
                query,
                dialect::DrawEntryRow::into_entry,
                dialect::map_sqlx_error,
            )
            .await
        }

        /// Records `entry`'s rank, result and order.
        async fn write_draw_entry(
            conn: &mut dialect::Conn,
            entry: &::livedrop_core::model::DrawEntry,
        ) -> ::livedrop_core::StoreResult<()> {
            let rank = entry
                .rank
                .map(|r| {
                    i64::try_from(r).map_err(|_| {
                        ::livedrop_core::StoreError::backend(format!("rank {r} out of range"))
                    })
                })
                .transpose()?;
            ::sqlx::query(
                "UPDATE draw_entries SET result = $3, rank = $4, order_id = $5 \
                 WHERE drop_id = $1 AND user_id = $2",
            )
            .bind(entry.drop_id.0)
            .bind(entry.user_id.0)
            .bind(entry.result.as_str())
            .bind(rank)
            .bind(entry.order_id.map(|o| o.0))
            .execute(conn)
            .await
            .map_err(dialect::map_sqlx_error)?;
            Ok(())
        }

        /// Awards `entry` its whole quantity: the order [`Order::draw_win`] gives
        /// it, the units taken from `stock` (not counted in the version: the
        /// caller's movement is), the entry `won`; returns the order and pushes
        /// `order.placed` and `draw.won` onto `events`.
        fn award(
            drop: &::livedrop_core::model::Drop,
            entry: &mut ::livedrop_core::model::DrawEntry,
            stock: &mut $crate::sql::StockRow,
            now: ::livedrop_core::clock::Timestamp,
            hold: ::chrono::Duration,
            events: &mut Vec<::livedrop_core::event::Event>,
        ) -> ::livedrop_core::model::Order {
            use ::livedrop_core::event::{Event, EventType};
            let order = ::livedrop_core::model::Order::draw_win(drop, entry, now, hold);
            stock.take(order.quantity);
            entry.result = ::livedrop_core::model::DrawResult::Won;
            entry.order_id = Some(order.id);
            events.push(Event::order(EventType::OrderPlaced, &order, now));
            events.push(Event::draw(EventType::DrawWon, entry, Some(&order), now));
            order
        }

        /// Inserts the orders a draw or a draw hand-off placed.
        async fn insert_wins(
            conn: &mut dialect::Conn,
            orders: &[::livedrop_core::model::Order],
        ) -> ::livedrop_core::StoreResult<()> {
            if orders.is_empty() {
                return Ok(());
            }
            let inserted = dialect::insert_orders(&mut *conn, orders).await?;
            if inserted != orders.len() as u64 {
                return Err(::livedrop_core::StoreError::Conflict(
                    "a draw win's idempotency key is taken".into(),
                ));
            }
            Ok(())
        }

        /// The hand-off of a drawn drop: units available in `stock` (variant `sku`'s
        /// row, held) go to the entries of that variant that have not won, in rank
        /// order, as `plan_draw` decides, while the drop takes orders at `now`, in
        /// the caller's transaction. Returns the events.
        pub(crate) async fn serve_draw(
            conn: &mut dialect::Conn,
            drop: &::livedrop_core::model::Drop,
            sku: &str,
            stock: &mut $crate::sql::StockRow,
            now: ::livedrop_core::clock::Timestamp,
            hold: ::chrono::Duration,
        ) -> ::livedrop_core::StoreResult<Vec<::livedrop_core::event::Event>> {
            let free = $crate::sql::to_u32(stock.available)?;
            if free == 0 || !drop.accepts_orders_at(now) {
                return Ok(Vec::new());
            }
            let sql = format!(
                "SELECT {} FROM draw_entries e \
                 WHERE e.drop_id = $1 AND e.sku = $2 AND e.result = 'lost' ORDER BY e.rank",
                dialect::DrawEntryRow::COLUMNS
            );
            let rows = ::sqlx::query_as::<_, dialect::DrawEntryRow>(&sql)
                .bind(drop.id.0)
                .bind(sku)
                .fetch_all(&mut *conn)
                .await
                .map_err(dialect::map_sqlx_error)?;
            let lost = rows
                .into_iter()
                .map(dialect::DrawEntryRow::into_entry)
                .collect::<::livedrop_core::StoreResult<Vec<_>>>()?;
            let mut free = [free];
            let winners = ::livedrop_core::model::plan_draw(&lost, &mut free, |_| Some(0));
            let mut events = Vec::new();
            let mut orders = Vec::new();
            for i in winners {
                let mut entry = lost[i].clone();
                orders.push(award(drop, &mut entry, stock, now, hold, &mut events));
                write_draw_entry(&mut *conn, &entry).await?;
            }
            insert_wins(&mut *conn, &orders).await?;
            Ok(events)
        }

        /// The buyer's place in the drop's queue, as of now, read through `conn`.
        async fn queue_row(
            conn: &mut dialect::Conn,
            drop: &::livedrop_core::model::Drop,
            user: ::uuid::Uuid,
        ) -> ::livedrop_core::StoreResult<Option<::livedrop_core::model::QueueEntry>> {
            use $crate::sql::rows::Stamp as _;
            let Some(room) = drop.waiting_room else {
                return Ok(None);
            };
            let row: Option<(dialect::Time, i64, Option<i64>, Option<dialect::Time>)> =
                ::sqlx::query_as(
                    "SELECT joined_at, shuffle_key, seq, admit_at FROM queue_entries \
                     WHERE drop_id = $1 AND user_id = $2",
                )
                .bind(drop.id.0)
                .bind(user)
                .fetch_optional(&mut *conn)
                .await
                .map_err(dialect::map_sqlx_error)?;
            let Some((joined_at, key, seq, admit_at)) = row else {
                return Ok(None);
            };
            let (position, admit_at) = match (seq, admit_at) {
                (Some(seq), Some(admit_at)) => {
                    let pre: i64 = ::sqlx::query_scalar(
                        "SELECT count(*) FROM queue_entries WHERE drop_id = $1 AND seq IS NULL",
                    )
                    .bind(drop.id.0)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(dialect::map_sqlx_error)?;
                    let position = u64::try_from(pre + seq).map_err(|_| {
                        ::livedrop_core::StoreError::backend("queue position out of range")
                    })?;
                    (position, admit_at.time()?)
                }
                _ => {
                    let before: i64 = ::sqlx::query_scalar(
                        "SELECT count(*) FROM queue_entries \
                         WHERE drop_id = $1 AND seq IS NULL \
                           AND (shuffle_key < $2 OR (shuffle_key = $2 AND user_id < $3))",
                    )
                    .bind(drop.id.0)
                    .bind(key)
                    .bind(user)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(dialect::map_sqlx_error)?;
                    let position = u64::try_from(before + 1).map_err(|_| {
                        ::livedrop_core::StoreError::backend("queue position out of range")
                    })?;
                    (position, room.pre_queue_slot(drop.starts_at, position))
                }
            };
            Ok(Some(::livedrop_core::model::QueueEntry {
                drop_id: drop.id,
                user_id: ::livedrop_core::id::UserId(user),
                joined_at: joined_at.time()?,
                position,
                admit_at,
            }))
        }

        #[::async_trait::async_trait]
        impl ::livedrop_core::ports::DrawRepository for $store {
            async fn insert_draw_drop(
                &self,
                drop: &::livedrop_core::model::Drop,
                stock: &[u32],
                seed: &str,
                events: &[::livedrop_core::event::Event],
            ) -> ::livedrop_core::StoreResult<()> {
                if drop.draw.is_none() {
                    return Err(::livedrop_core::StoreError::backend(format!(
                        "drop {} is stored as a draw but has no draw record",
                        drop.id
                    )));
                }
                self.insert_drop_row(drop, stock, Some(seed), events).await
            }

            async fn enter_draw(
                &self,
                request: &::livedrop_core::model::DrawEntryRequest,
            ) -> ::livedrop_core::StoreResult<::livedrop_core::model::EntryOutcome> {
                use ::livedrop_core::model::{DrawResult, DropState, EntryOutcome};
                let (drop, user) = (request.drop_id.0, request.user_id.0);
                let mut tx = self.inner.write().await?;
                let refusal = if !lock_drop(&mut tx, drop).await? {
                    Some(EntryOutcome::DropNotFound)
                } else {
                    let view = drop_view_in(&mut tx, drop).await?;
                    match view.as_ref().map(|v| (&v.drop, v.drop.draw.as_ref())) {
                        None => Some(EntryOutcome::DropNotFound),
                        Some((_, None)) => Some(EntryOutcome::NotDraw),
                        Some((d, Some(_))) if d.variant(&request.sku).is_none() => {
                            Some(EntryOutcome::UnknownVariant)
                        }
                        Some((d, Some(draw)))
                            if d.state == DropState::Cancelled
                                || !draw.is_open(d.starts_at, request.at) =>
                        {
                            Some(EntryOutcome::EntriesClosed)
                        }
                        Some((d, Some(_))) if request.quantity > d.per_user_limit => {
                            Some(EntryOutcome::LimitExceeded {
                                limit: d.per_user_limit,
                            })
                        }
                        Some(_) => None,
                    }
                };
                if let Some(refusal) = refusal {
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                    return Ok(refusal);
                }
                // A replaced entry keeps its token.
                ::sqlx::query(
                    "INSERT INTO draw_entries (drop_id, user_id, sku, quantity, token, \
                                               entered_at, result) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (drop_id, user_id) DO UPDATE \
                     SET sku = excluded.sku, quantity = excluded.quantity, \
                         entered_at = excluded.entered_at",
                )
                .bind(drop)
                .bind(user)
                .bind(&request.sku)
                .bind(i64::from(request.quantity))
                .bind(&request.token)
                .bind(dialect::stamp(request.at))
                .bind(DrawResult::Pending.as_str())
                .execute(&mut *tx)
                .await
                .map_err(dialect::map_sqlx_error)?;
                let entry = draw_entry_row(&mut *tx, drop, user).await?.ok_or_else(|| {
                    ::livedrop_core::StoreError::backend("a draw entry just written is gone")
                })?;
                self.inner.commit(tx, false).await?;
                Ok(EntryOutcome::Done(entry))
            }

            async fn withdraw_entry(
                &self,
                drop: ::livedrop_core::id::DropId,
                user: ::livedrop_core::id::UserId,
                now: ::livedrop_core::clock::Timestamp,
            ) -> ::livedrop_core::StoreResult<::livedrop_core::model::EntryOutcome> {
                use ::livedrop_core::model::{DropState, EntryOutcome};
                let mut tx = self.inner.write().await?;
                let outcome = if !lock_drop(&mut tx, drop.0).await? {
                    EntryOutcome::DropNotFound
                } else {
                    match drop_view_in(&mut tx, drop.0).await? {
                        None => EntryOutcome::DropNotFound,
                        Some(view) => match &view.drop.draw {
                            None => EntryOutcome::NotDraw,
                            Some(draw)
                                if view.drop.state == DropState::Cancelled
                                    || !draw.is_open(view.drop.starts_at, now) =>
                            {
                                EntryOutcome::EntriesClosed
                            }
                            Some(_) => match draw_entry_row(&mut *tx, drop.0, user.0).await? {
                                None => EntryOutcome::NoEntry,
                                Some(entry) => {
                                    ::sqlx::query(
                                        "DELETE FROM draw_entries \
                                         WHERE drop_id = $1 AND user_id = $2",
                                    )
                                    .bind(drop.0)
                                    .bind(user.0)
                                    .execute(&mut *tx)
                                    .await
                                    .map_err(dialect::map_sqlx_error)?;
                                    EntryOutcome::Done(entry)
                                }
                            },
                        },
                    }
                };
                if matches!(outcome, EntryOutcome::Done(_)) {
                    self.inner.commit(tx, false).await?;
                } else {
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                }
                Ok(outcome)
            }

            async fn draw_entry(
                &self,
                drop: ::livedrop_core::id::DropId,
                user: ::livedrop_core::id::UserId,
            ) -> ::livedrop_core::StoreResult<Option<::livedrop_core::model::DrawEntry>> {
                draw_entry_row(self.inner.reader(), drop.0, user.0).await
            }

            async fn draw_entries(
                &self,
                drop: ::livedrop_core::id::DropId,
                after_rank: u64,
                limit: u32,
            ) -> ::livedrop_core::StoreResult<Vec<::livedrop_core::model::DrawEntry>> {
                // Ranks are NULL before the draw: no entry is listed then.
                let sql = format!(
                    "SELECT {} FROM draw_entries e \
                     WHERE e.drop_id = $1 AND e.rank > $2 ORDER BY e.rank LIMIT $3",
                    dialect::DrawEntryRow::COLUMNS
                );
                let rows = ::sqlx::query_as::<_, dialect::DrawEntryRow>(&sql)
                    .bind(drop.0)
                    .bind(i64::try_from(after_rank).unwrap_or(i64::MAX))
                    .bind(i64::from(limit))
                    .fetch_all(self.inner.reader())
                    .await
                    .map_err(dialect::map_sqlx_error)?;
                rows.into_iter()
                    .map(dialect::DrawEntryRow::into_entry)
                    .collect()
            }

            async fn draw_counts(
                &self,
                drop: ::livedrop_core::id::DropId,
            ) -> ::livedrop_core::StoreResult<(u64, u64)> {
                let (entries, won): (i64, i64) = ::sqlx::query_as(
                    "SELECT count(*), \
                            count(CASE WHEN result = 'won' THEN 1 END) \
                     FROM draw_entries WHERE drop_id = $1",
                )
                .bind(drop.0)
                .fetch_one(self.inner.reader())
                .await
                .map_err(dialect::map_sqlx_error)?;
                let count = |n: i64| {
                    u64::try_from(n).map_err(|_| {
                        ::livedrop_core::StoreError::backend(format!("count {n} out of range"))
                    })
                };
                Ok((count(entries)?, count(won)?))
            }

            async fn due_draws(
                &self,
                now: ::livedrop_core::clock::Timestamp,
                limit: u32,
            ) -> ::livedrop_core::StoreResult<Vec<::livedrop_core::id::DropId>> {
                let ids: Vec<::uuid::Uuid> = ::sqlx::query_scalar(
                    "SELECT id FROM drops \
                     WHERE draw_entries_close_at IS NOT NULL AND drawn_at IS NULL \
                       AND state <> 'cancelled' AND draw_entries_close_at <= $1 \
                     ORDER BY draw_entries_close_at, id LIMIT $2",
                )
                .bind(dialect::stamp(now))
                .bind(i64::from(limit))
                .fetch_all(self.inner.reader())
                .await
                .map_err(dialect::map_sqlx_error)?;
                Ok(ids.into_iter().map(::livedrop_core::id::DropId).collect())
            }

            async fn run_draw(
                &self,
                id: ::livedrop_core::id::DropId,
                now: ::livedrop_core::clock::Timestamp,
                hold: ::chrono::Duration,
            ) -> ::livedrop_core::StoreResult<::livedrop_core::model::DrawOutcome> {
                use ::livedrop_core::event::{Event, EventType};
                use ::livedrop_core::model::{Draw, DrawOutcome, DrawResult, DropState};
                let drop = id.0;
                let mut tx = self.inner.write().await?;
                // The drop's row first: a second caller waits here, then sees
                // `drawn_at` set.
                let view = if lock_drop(&mut tx, drop).await? {
                    drop_view_in(&mut tx, drop).await?
                } else {
                    None
                };
                let refusal = match view.as_ref().map(|v| (&v.drop, v.drop.draw.as_ref())) {
                    None => Some(DrawOutcome::DropNotFound),
                    Some((_, None)) => Some(DrawOutcome::NotDue),
                    Some((_, Some(draw))) if draw.drawn_at.is_some() => {
                        Some(DrawOutcome::AlreadyDrawn)
                    }
                    Some((d, Some(draw)))
                        if d.state == DropState::Cancelled || now < draw.entries_close_at =>
                    {
                        Some(DrawOutcome::NotDue)
                    }
                    Some(_) => None,
                };
                let (Some(view), None) = (view, refusal.clone()) else {
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                    return Ok(refusal.unwrap_or(DrawOutcome::DropNotFound));
                };
                let seed: String =
                    ::sqlx::query_scalar("SELECT seed FROM draw_secrets WHERE drop_id = $1")
                        .bind(drop)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(dialect::map_sqlx_error)?
                        .ok_or_else(|| {
                            ::livedrop_core::StoreError::backend(format!(
                                "draw drop {drop} has no secret seed"
                            ))
                        })?;
                let mut definition = view.drop;
                if let Some(draw) = &mut definition.draw {
                    draw.seed = Some(seed.clone());
                    draw.drawn_at = Some(now);
                }
                let sql = format!(
                    "SELECT {} FROM draw_entries e WHERE e.drop_id = $1",
                    dialect::DrawEntryRow::COLUMNS
                );
                let entries = ::sqlx::query_as::<_, dialect::DrawEntryRow>(&sql)
                    .bind(drop)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(dialect::map_sqlx_error)?
                    .into_iter()
                    .map(dialect::DrawEntryRow::into_entry)
                    .collect::<::livedrop_core::StoreResult<Vec<_>>>()?;
                let ranked = Draw::ranked(&seed, entries);
                let skus: Vec<&str> = definition.variants.iter().map(|v| v.sku.as_str()).collect();
                let mut rows = variant_rows(&mut tx, drop, &skus).await?;
                let mut stocks = Vec::with_capacity(skus.len());
                for sku in &skus {
                    let row = rows.remove(*sku).ok_or_else(|| {
                        ::livedrop_core::StoreError::backend(format!(
                            "variant {sku} of drop {drop} has no stock row"
                        ))
                    })?;
                    stocks.push(row);
                }
                let before = stocks
                    .iter()
                    .map(|s| s.stock())
                    .collect::<::livedrop_core::StoreResult<Vec<_>>>()?;
                let mut free = stocks
                    .iter()
                    .map(|s| $crate::sql::to_u32(s.available))
                    .collect::<::livedrop_core::StoreResult<Vec<_>>>()?;
                let winners = ::livedrop_core::model::plan_draw(&ranked, &mut free, |sku| {
                    definition.variant_index(sku)
                });
                let mut events = vec![Event::drop(EventType::DropDrawn, &definition, now)];
                let mut orders = Vec::new();
                let mut results = Vec::with_capacity(ranked.len());
                for (i, mut entry) in ranked.into_iter().enumerate() {
                    match definition.variant_index(&entry.sku) {
                        Some(variant) if winners.contains(&i) => {
                            orders.push(award(
                                &definition,
                                &mut entry,
                                &mut stocks[variant],
                                now,
                                hold,
                                &mut events,
                            ));
                        }
                        _ => {
                            entry.result = DrawResult::Lost;
                            events.push(Event::draw(EventType::DrawLost, &entry, None, now));
                        }
                    }
                    write_draw_entry(&mut tx, &entry).await?;
                    results.push(entry);
                }
                insert_wins(&mut tx, &orders).await?;
                for (variant, stock) in stocks.iter_mut().enumerate() {
                    let after = stock.stock()?;
                    if after == before[variant] {
                        continue;
                    }
                    stock.version += 1;
                    let sku = skus[variant];
                    write_stock(&mut tx, drop, sku, stock).await?;
                    events.extend(Event::stock_moved(
                        drop,
                        sku,
                        &before[variant],
                        &after,
                        stock.version,
                        now,
                    ));
                }
                ::sqlx::query("UPDATE drops SET draw_seed = $2, drawn_at = $3 WHERE id = $1")
                    .bind(drop)
                    .bind(&seed)
                    .bind(dialect::stamp(now))
                    .execute(&mut *tx)
                    .await
                    .map_err(dialect::map_sqlx_error)?;
                dialect::append_events(&mut tx, &events).await?;
                self.inner.commit(tx, true).await?;
                Ok(DrawOutcome::Drawn {
                    drop: definition,
                    entries: results,
                })
            }
        }

        #[::async_trait::async_trait]
        impl ::livedrop_core::ports::QueueRepository for $store {
            async fn join_queue(
                &self,
                drop: ::livedrop_core::id::DropId,
                user: ::livedrop_core::id::UserId,
                now: ::livedrop_core::clock::Timestamp,
                shuffle_key: u64,
            ) -> ::livedrop_core::StoreResult<::livedrop_core::model::QueueOutcome> {
                use ::livedrop_core::model::{DropState, QueueOutcome};
                use $crate::sql::rows::Stamp as _;
                let mut tx = self.inner.write().await?;
                // The drop's row serializes joins: each later arrival's slot follows
                // the one before, whichever process hands it out.
                let view = if lock_drop(&mut tx, drop.0).await? {
                    drop_view_in(&mut tx, drop.0).await?
                } else {
                    None
                };
                let refusal = match &view {
                    None => Some(QueueOutcome::DropNotFound),
                    Some(v) => match v.drop.waiting_room {
                        None => Some(QueueOutcome::NoWaitingRoom),
                        Some(_)
                            if v.drop.state == DropState::Cancelled || now >= v.drop.ends_at =>
                        {
                            Some(QueueOutcome::Closed)
                        }
                        Some(room) if now < room.opens_at(v.drop.starts_at) => {
                            Some(QueueOutcome::NotOpen {
                                opens_at: room.opens_at(v.drop.starts_at),
                            })
                        }
                        Some(_) => None,
                    },
                };
                let (Some(view), None) = (view, refusal.clone()) else {
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                    return Ok(refusal.unwrap_or(QueueOutcome::DropNotFound));
                };
                let d = &view.drop;
                let Some(room) = d.waiting_room else {
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                    return Ok(QueueOutcome::NoWaitingRoom);
                };
                let member: Option<::uuid::Uuid> = ::sqlx::query_scalar(
                    "SELECT user_id FROM queue_entries WHERE drop_id = $1 AND user_id = $2",
                )
                .bind(drop.0)
                .bind(user.0)
                .fetch_optional(&mut *tx)
                .await
                .map_err(dialect::map_sqlx_error)?;
                let mut wrote = false;
                if member.is_none() {
                    let last: Option<(i64, dialect::Time)> = ::sqlx::query_as(
                        "SELECT seq, admit_at FROM queue_entries \
                         WHERE drop_id = $1 AND seq IS NOT NULL ORDER BY seq DESC LIMIT 1",
                    )
                    .bind(drop.0)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(dialect::map_sqlx_error)?;
                    // A join stamped before the start once later arrivals hold slots
                    // (a process whose clock is behind) queues behind them: the
                    // pre-queue's slots are taken.
                    let (seq, slot) = if now < d.starts_at && last.is_none() {
                        (None, None)
                    } else {
                        let (seq, previous) = match last {
                            Some((seq, slot)) => (seq + 1, Some(slot.time()?)),
                            None => {
                                let pre: i64 = ::sqlx::query_scalar(
                                    "SELECT count(*) FROM queue_entries \
                                     WHERE drop_id = $1 AND seq IS NULL",
                                )
                                .bind(drop.0)
                                .fetch_one(&mut *tx)
                                .await
                                .map_err(dialect::map_sqlx_error)?;
                                let previous = u64::try_from(pre)
                                    .ok()
                                    .filter(|n| *n > 0)
                                    .map(|n| room.pre_queue_slot(d.starts_at, n));
                                (1, previous)
                            }
                        };
                        (Some(seq), Some(room.next_slot(previous, d.starts_at, now)))
                    };
                    ::sqlx::query(
                        "INSERT INTO queue_entries (drop_id, user_id, joined_at, shuffle_key, \
                                                    seq, admit_at) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(drop.0)
                    .bind(user.0)
                    .bind(dialect::stamp(now))
                    .bind($crate::sql::shuffle_key(shuffle_key))
                    .bind(seq)
                    .bind(slot.map(dialect::stamp))
                    .execute(&mut *tx)
                    .await
                    .map_err(dialect::map_sqlx_error)?;
                    wrote = true;
                }
                let entry = queue_row(&mut tx, d, user.0).await?;
                if wrote {
                    self.inner.commit(tx, false).await?;
                } else {
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                }
                Ok(entry.map_or(QueueOutcome::DropNotFound, QueueOutcome::Joined))
            }

            async fn queue_entry(
                &self,
                drop: ::livedrop_core::id::DropId,
                user: ::livedrop_core::id::UserId,
            ) -> ::livedrop_core::StoreResult<Option<::livedrop_core::model::QueueEntry>> {
                let mut conn = self
                    .inner
                    .reader()
                    .acquire()
                    .await
                    .map_err(dialect::map_sqlx_error)?;
                let Some(view) = drop_view_in(&mut conn, drop.0).await? else {
                    return Ok(None);
                };
                queue_row(&mut conn, &view.drop, user.0).await
            }

            async fn admitted_through(
                &self,
                drop: ::livedrop_core::id::DropId,
                now: ::livedrop_core::clock::Timestamp,
            ) -> ::livedrop_core::StoreResult<u64> {
                let mut conn = self
                    .inner
                    .reader()
                    .acquire()
                    .await
                    .map_err(dialect::map_sqlx_error)?;
                let Some(view) = drop_view_in(&mut conn, drop.0).await? else {
                    return Ok(0);
                };
                let d = view.drop;
                let Some(room) = d.waiting_room else {
                    return Ok(0);
                };
                let (pre, post): (i64, i64) = ::sqlx::query_as(
                    "SELECT count(CASE WHEN seq IS NULL THEN 1 END), \
                            count(CASE WHEN seq IS NOT NULL AND admit_at <= $2 THEN 1 END) \
                     FROM queue_entries WHERE drop_id = $1",
                )
                .bind(drop.0)
                .bind(dialect::stamp(now))
                .fetch_one(&mut *conn)
                .await
                .map_err(dialect::map_sqlx_error)?;
                let pre = u64::try_from(pre).unwrap_or(0);
                let post = u64::try_from(post).unwrap_or(0);
                let pre_admitted = if now < d.starts_at || pre == 0 {
                    0
                } else {
                    let elapsed = (now - d.starts_at).num_microseconds().unwrap_or(i64::MAX);
                    let step = room.interval().num_microseconds().unwrap_or(1).max(1);
                    u64::try_from(elapsed / step + 1)
                        .unwrap_or(u64::MAX)
                        .min(pre)
                };
                Ok(pre_admitted + post)
            }
        }
    };
}

pub(crate) use fair_ports;
