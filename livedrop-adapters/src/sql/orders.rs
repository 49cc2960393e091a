//! Orders, written once for both SQL stores: [`order_ports!`] expands the reads, the
//! batch decision's transaction, settlement, hold expiry and extension for
//! `PgStore` and `SqliteStore`. How a store places one order (its strategies) and
//! the batch's multi-row statements stay with the store.

/// Statuses that hold stock and count toward the per-user limit.
pub(crate) const HOLDING: &str = "('reserved', 'confirmed')";

/// Implements `OrderRepository` for the store type `$store` and `Batcher` for its
/// `$inner`, and writes the queries they share with the catalog and the waitlists
/// (`order_row`, `order_by_key`, `drop_view_in`, `drop_exists`, `variant_rows`,
/// `variant_row`, `write_stock`, `waiting_users`, `serve_waitlist`,
/// `lock_waiting`) into the calling module.
///
/// Besides what [`catalog_ports!`](super::catalog::catalog_ports) names, the
/// expansion takes `self.place(order, now)` (the store's placement) and, from
/// `dialect`: `Conn`, `known_orders`, `known_keys`, `held_units`, `insert_orders`, `write_batch`,
/// `set_status`, `lock_buyers`, `BUYER_LOCKS`, `FOR_UPDATE_SKIP_LOCKED` and
/// `MAX_SWEEP`.
///
/// **Lock order.** Every write transaction takes its locks in one order, so none
/// waits for another in a cycle: an order row (settlement, extension; sweepers skip
/// locked ones), then the buyers' locks (`dialect::lock_buyers`, sorted), then
/// variant rows in (drop, sku) order. A hand-off reads the line without a lock,
/// locks its buyers, then the variant row, and starts again (`None` from
/// `serve_waitlist`) if a buyer it did not lock joined meanwhile.
macro_rules! order_ports {
    ($store:ty, $inner:ty) => {
        /// The order `id`, read through `conn` (a reader, or the caller's write
        /// transaction), with `lock` after the query (a row lock, or nothing).
        async fn order_row<'c, E>(
            conn: E,
            id: ::livedrop_core::id::OrderId,
            lock: &str,
        ) -> ::livedrop_core::StoreResult<Option<::livedrop_core::model::Order>>
        where
            E: ::sqlx::Executor<'c, Database = dialect::Db>,
        {
            let sql = format!(
                "SELECT {} FROM orders WHERE id = $1{lock}",
                dialect::OrderRow::COLUMNS
            );
            let query = ::sqlx::query_as(&sql).bind(id.0);
            $crate::sql::optional_row(
                conn,
                query,
                dialect::OrderRow::into_order,
                dialect::map_sqlx_error,
            )
            .await
        }

        /// The buyer's order with `key`, if any.
        pub(crate) async fn order_by_key(
            conn: &mut dialect::Conn,
            user: ::livedrop_core::id::UserId,
            key: &str,
        ) -> ::livedrop_core::StoreResult<Option<::livedrop_core::model::Order>> {
            let sql = format!(
                "SELECT {} FROM orders WHERE user_id = $1 AND idempotency_key = $2",
                dialect::OrderRow::COLUMNS
            );
            let query = ::sqlx::query_as(&sql).bind(user.0).bind(key);
            $crate::sql::optional_row(
                conn,
                query,
                dialect::OrderRow::into_order,
                dialect::map_sqlx_error,
            )
            .await
        }

        /// The drop with its variants (and their stock, unlocked), read in the
        /// caller's transaction.
        pub(crate) async fn drop_view_in(
            conn: &mut dialect::Conn,
            drop: ::uuid::Uuid,
        ) -> ::livedrop_core::StoreResult<Option<::livedrop_core::model::DropView>> {
            let sql = format!(
                "SELECT {} FROM drops d JOIN inventory i ON i.drop_id = d.id WHERE d.id = $1 \
                 ORDER BY i.position",
                dialect::DropRow::COLUMNS
            );
            let rows = ::sqlx::query_as::<_, dialect::DropRow>(&sql)
                .bind(drop)
                .fetch_all(conn)
                .await
                .map_err(dialect::map_sqlx_error)?;
            dialect::DropRow::view(rows)
        }

        /// Whether the drop exists.
        pub(crate) async fn drop_exists(
            conn: &mut dialect::Conn,
            drop: ::uuid::Uuid,
        ) -> ::livedrop_core::StoreResult<bool> {
            let found: i64 = ::sqlx::query_scalar("SELECT count(*) FROM drops WHERE id = $1")
                .bind(drop)
                .fetch_one(conn)
                .await
                .map_err(dialect::map_sqlx_error)?;
            Ok(found > 0)
        }

        /// The inventory rows of the drop's variants `skus` that exist, held for the
        /// caller's write transaction, locked in sku order (every transaction that
        /// holds several variant rows takes them in (drop, sku) order: no deadlock).
        pub(crate) async fn variant_rows(
            conn: &mut dialect::Conn,
            drop: ::uuid::Uuid,
            skus: &[&str],
        ) -> ::livedrop_core::StoreResult<
            ::std::collections::BTreeMap<String, $crate::sql::StockRow>,
        > {
            let sql = format!(
                "SELECT {} FROM inventory \
                 WHERE drop_id = $1 AND sku IN (SELECT value FROM {}) ORDER BY sku{}",
                $crate::sql::VariantRow::COLUMNS,
                dialect::each("$2", "text"),
                dialect::FOR_UPDATE
            );
            let rows = ::sqlx::query_as::<_, $crate::sql::VariantRow>(&sql)
                .bind(drop)
                .bind(dialect::list(skus))
                .fetch_all(conn)
                .await
                .map_err(dialect::map_sqlx_error)?;
            Ok(rows.into_iter().map(|r| (r.sku, r.stock)).collect())
        }

        /// The inventory row of variant `sku`, held for the caller's write
        /// transaction, if the drop has it.
        pub(crate) async fn variant_row(
            conn: &mut dialect::Conn,
            drop: ::uuid::Uuid,
            sku: &str,
        ) -> ::livedrop_core::StoreResult<Option<$crate::sql::StockRow>> {
            let sql = format!(
                "SELECT {} FROM inventory WHERE drop_id = $1 AND sku = $2{}",
                $crate::sql::StockRow::COLUMNS,
                dialect::FOR_UPDATE
            );
            ::sqlx::query_as::<_, $crate::sql::StockRow>(&sql)
                .bind(drop)
                .bind(sku)
                .fetch_optional(conn)
                .await
                .map_err(dialect::map_sqlx_error)
        }

        /// Writes `row`'s counts and version to variant `sku`'s inventory row.
        pub(crate) async fn write_stock(
            conn: &mut dialect::Conn,
            drop: ::uuid::Uuid,
            sku: &str,
            row: &$crate::sql::StockRow,
        ) -> ::livedrop_core::StoreResult<()> {
            ::sqlx::query(
                "UPDATE inventory SET total_stock = $3, available = $4, reserved = $5, \
                     sold = $6, version = $7 \
                 WHERE drop_id = $1 AND sku = $2",
            )
            .bind(drop)
            .bind(sku)
            .bind(row.total_stock)
            .bind(row.available)
            .bind(row.reserved)
            .bind(row.sold)
            .bind(row.version)
            .execute(conn)
            .await
            .map_err(dialect::map_sqlx_error)?;
            Ok(())
        }

        /// The buyers waiting for variant `sku`, read without a lock: whose locks a
        /// hand-off takes before the variant row's.
        pub(crate) async fn waiting_users(
            conn: &mut dialect::Conn,
            drop: ::uuid::Uuid,
            sku: &str,
        ) -> ::livedrop_core::StoreResult<Vec<::uuid::Uuid>> {
            ::sqlx::query_scalar("SELECT user_id FROM waitlist WHERE drop_id = $1 AND sku = $2")
                .bind(drop)
                .bind(sku)
                .fetch_all(conn)
                .await
                .map_err(dialect::map_sqlx_error)
        }

        /// Variant `sku`'s line, in join order (positions from 1).
        async fn line(
            conn: &mut dialect::Conn,
            drop: ::uuid::Uuid,
            sku: &str,
        ) -> ::livedrop_core::StoreResult<Vec<::livedrop_core::model::WaitlistEntry>> {
            let sql = format!(
                "SELECT {} FROM waitlist w WHERE w.drop_id = $1 AND w.sku = $2 ORDER BY w.seq",
                dialect::WaitlistRow::LINE_COLUMNS
            );
            let rows = ::sqlx::query_as::<_, dialect::WaitlistRow>(&sql)
                .bind(drop)
                .bind(sku)
                .fetch_all(conn)
                .await
                .map_err(dialect::map_sqlx_error)?;
            rows.into_iter()
                .enumerate()
                .map(|(i, row)| {
                    row.into_entry().map(|e| ::livedrop_core::model::WaitlistEntry {
                        position: i as u64 + 1,
                        ..e
                    })
                })
                .collect()
        }

        /// Serves variant `sku`'s waitlist with the units available in `stock` (the
        /// variant's row, held, just after a movement that freed units: while anyone
        /// waits nothing else is available), in the caller's transaction, when the
        /// drop accepts orders at `now`: offers and skips as
        /// [`plan_waitlist`]($crate::sql::plan_waitlist) decides, their orders
        /// inserted and their entries ended. Returns the hand-off's events, or
        /// `None` when an entry reached belongs to a buyer not in `locked` (whose
        /// orders the caller has not serialized with this one, see
        /// `dialect::lock_buyers`): the caller rolls back and tries again.
        pub(crate) async fn serve_waitlist(
            conn: &mut dialect::Conn,
            drop: &::livedrop_core::model::Drop,
            sku: &str,
            stock: &mut $crate::sql::StockRow,
            now: ::livedrop_core::clock::Timestamp,
            hold: ::chrono::Duration,
            locked: &::std::collections::HashSet<::uuid::Uuid>,
        ) -> ::livedrop_core::StoreResult<Option<Vec<::livedrop_core::event::Event>>> {
            // A draw drop has no waitlist: once drawn, its units go to the entries
            // that have not won.
            if let Some(draw) = &drop.draw {
                if draw.drawn_at.is_none() {
                    return Ok(Some(Vec::new()));
                }
                return serve_draw(conn, drop, sku, stock, now, hold).await.map(Some);
            }
            let free = $crate::sql::to_u32(stock.available)?;
            if free == 0 || !drop.accepts_orders_at(now) {
                return Ok(Some(Vec::new()));
            }
            let line = line(&mut *conn, drop.id.0, sku).await?;
            if line.is_empty() {
                return Ok(Some(Vec::new()));
            }
            let users: Vec<::uuid::Uuid> = line.iter().map(|e| e.user_id.0).collect();
            let held = dialect::held_units(&mut *conn, drop.id.0, &users).await?;
            let waiting = line
                .into_iter()
                .map(|e| {
                    let units = held.get(&e.user_id.0).copied().unwrap_or(0);
                    $crate::sql::to_u32(units).map(|units| (e, units))
                })
                .collect::<::livedrop_core::StoreResult<Vec<_>>>()?;
            let mut planned = *stock;
            let plan = $crate::sql::plan_waitlist(drop, &mut planned, free, waiting, now, hold);
            if dialect::BUYER_LOCKS && plan.ended.iter().any(|u| !locked.contains(u)) {
                return Ok(None);
            }
            *stock = planned;
            for user in &plan.ended {
                ::sqlx::query("DELETE FROM waitlist WHERE drop_id = $1 AND user_id = $2")
                    .bind(drop.id.0)
                    .bind(*user)
                    .execute(&mut *conn)
                    .await
                    .map_err(dialect::map_sqlx_error)?;
            }
            if !plan.orders.is_empty() {
                let inserted = dialect::insert_orders(&mut *conn, &plan.orders).await?;
                if inserted != plan.orders.len() as u64 {
                    return Err(::livedrop_core::StoreError::Conflict(
                        "a waitlist offer's idempotency key is taken".into(),
                    ));
                }
            }
            Ok(Some(plan.events))
        }

        /// Takes the locks that serialize the orders of the buyers waiting for the
        /// variants `variants` (by drop) with this transaction, before any variant
        /// row lock; returns the buyers locked, by drop.
        pub(crate) async fn lock_waiting(
            conn: &mut dialect::Conn,
            variants: &[(::uuid::Uuid, &str)],
        ) -> ::livedrop_core::StoreResult<
            ::std::collections::HashMap<::uuid::Uuid, ::std::collections::HashSet<::uuid::Uuid>>,
        > {
            let mut locked: ::std::collections::HashMap<
                ::uuid::Uuid,
                ::std::collections::HashSet<::uuid::Uuid>,
            > = ::std::collections::HashMap::new();
            if !dialect::BUYER_LOCKS {
                return Ok(locked);
            }
            let mut pairs = Vec::new();
            for (drop, sku) in variants {
                for user in waiting_users(&mut *conn, *drop, sku).await? {
                    pairs.push((*drop, user));
                    locked.entry(*drop).or_default().insert(user);
                }
            }
            dialect::lock_buyers(&mut *conn, &pairs).await?;
            Ok(locked)
        }

        #[::async_trait::async_trait]
        impl $crate::sql::Batcher for $inner {
            fn combiners(&self) -> &$crate::sql::Combiners {
                &self.combiners
            }

            fn in_flight(&self) -> usize {
                self.batches_in_flight()
            }

            /// Decides and writes one batch in one transaction. `Ok(None)`: a
            /// concurrent transaction took one of the batch's idempotency keys first
            /// (never on SQLite, whose write lock keeps other writers out); nothing
            /// was written.
            async fn decide(
                &self,
                drop: ::livedrop_core::id::DropId,
                batch: &[$crate::sql::Placement],
                turn: &mut $crate::sql::Turn,
            ) -> ::livedrop_core::StoreResult<Option<Vec<::livedrop_core::model::PlaceOutcome>>>
            {
                use $crate::sql::{BatchStep, Stage};
                use ::livedrop_core::model::PlaceOutcome;
                let mut steps = $crate::sql::BatchSteps::start();
                let mut tx = self.write().await?;
                steps.done(BatchStep::Begin);
                // 1. Each buyer's orders on the drop serialized with this batch, across
                //    variants and processes (before any variant row lock).
                let buyers: Vec<(::uuid::Uuid, ::uuid::Uuid)> =
                    batch.iter().map(|r| (drop.0, r.order.user_id.0)).collect();
                turn.wait(Stage::Buyers).await;
                dialect::lock_buyers(&mut tx, &buyers).await?;
                turn.reached(Stage::Buyers);
                steps.done(BatchStep::BuyerLocks);
                // 2. Orders that already exist under a key of the batch (any drop),
                //    and the keys as stored.
                let known = dialect::known_orders(&mut tx, batch).await?;
                let keys = dialect::known_keys(&mut tx, batch).await?;
                steps.done(BatchStep::Known);
                // 3. The rows of the variants the batch orders, held in sku order: from
                //    here on the batch sees every committed order of those variants.
                let mut skus: Vec<&str> = batch.iter().map(|r| r.order.sku.as_str()).collect();
                skus.sort_unstable();
                skus.dedup();
                turn.wait(Stage::Rows).await;
                let stock = variant_rows(&mut tx, drop.0, &skus).await?;
                turn.reached(Stage::Rows);
                steps.done(BatchStep::StockRows);
                let view = drop_view_in(&mut tx, drop.0).await?;
                let Some(view) = view else {
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                    return Ok(Some(
                        batch
                            .iter()
                            .map(|r| {
                                $crate::sql::prior_outcome(&known, &keys, r)
                                    .unwrap_or(PlaceOutcome::DropNotFound)
                            })
                            .collect(),
                    ));
                };
                // 4. Units each buyer of the batch holds in the drop, all variants,
                //    unless no buyer could reach the limit anyway.
                let held = if $crate::sql::limit_out_of_reach(&view, batch) {
                    ::std::collections::HashMap::new()
                } else {
                    let users: Vec<::uuid::Uuid> = buyers.iter().map(|(_, u)| *u).collect();
                    dialect::held_units(&mut tx, drop.0, &users).await?
                };
                steps.done(BatchStep::DropView);
                // 5. Decide in arrival order.
                let decision =
                    $crate::sql::decide_batch(&view.drop, stock, known, keys, held, batch)?;
                steps.done(BatchStep::Decide);
                if decision.placed.is_empty() && decision.keys.is_empty() {
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                    steps.done(BatchStep::Commit);
                    self.combiners.record(batch.len(), &steps);
                    return Ok(Some(decision.outcomes));
                }
                // 6. Write the stock rows, every order, every event, every key's
                //    answer.
                let (inserted, finished) = dialect::write_batch(&mut tx, drop, &decision).await?;
                steps.done(BatchStep::Write);
                if inserted != decision.placed.len() as u64
                    || finished != decision.keys.len() as u64
                {
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                    return Ok(None);
                }
                self.commit(tx, true).await?;
                steps.done(BatchStep::Commit);
                self.combiners.record(batch.len(), &steps);
                Ok(Some(decision.outcomes))
            }
        }

        impl $store {
            /// One attempt at [`settle_order`]; `None` when a hand-off met a buyer it
            /// had not locked (nothing written).
            async fn settle_once(
                &self,
                id: ::livedrop_core::id::OrderId,
                settlement: ::livedrop_core::model::Settlement,
                now: ::livedrop_core::clock::Timestamp,
                hold: ::chrono::Duration,
            ) -> ::livedrop_core::StoreResult<Option<::livedrop_core::model::SettleOutcome>> {
                use ::livedrop_core::event::{Event, EventType};
                use ::livedrop_core::model::{Order, OrderStatus, SettleOutcome, Settlement};
                let mut tx = self.inner.write().await?;
                let Some(order) = order_row(&mut *tx, id, dialect::FOR_UPDATE).await? else {
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                    return Ok(Some(SettleOutcome::NotFound));
                };
                let target = match settlement {
                    Settlement::Confirm => OrderStatus::Confirmed,
                    Settlement::Cancel => OrderStatus::Cancelled,
                };
                if order.status == target {
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                    return Ok(Some(SettleOutcome::Unchanged(order)));
                }
                if order.status != OrderStatus::Reserved {
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                    return Ok(Some(SettleOutcome::Conflict(order)));
                }
                let drop = order.drop_id.0;
                let expired = settlement == Settlement::Confirm && now >= order.reserved_until;
                let (status, kind) = if expired {
                    (OrderStatus::Expired, EventType::OrderExpired)
                } else if settlement == Settlement::Confirm {
                    (OrderStatus::Confirmed, EventType::OrderConfirmed)
                } else {
                    (OrderStatus::Cancelled, EventType::OrderCancelled)
                };
                let sell = status == OrderStatus::Confirmed;
                // Order row, then the waiting buyers' locks, then the variant row:
                // the lock order of every writer.
                let locked = if sell {
                    Default::default()
                } else {
                    lock_waiting(&mut tx, &[(drop, order.sku.as_str())]).await?
                };
                let mut stock = variant_row(&mut tx, drop, &order.sku)
                    .await?
                    .ok_or_else(|| {
                        ::livedrop_core::StoreError::backend(format!(
                            "order {} holds variant {} that has no stock row",
                            order.id, order.sku
                        ))
                    })?;
                let (before, _) = stock.release(order.quantity, sell)?;
                // The order stops counting toward its buyer's limit before a hand-off
                // reads what buyers hold.
                dialect::set_status(&mut tx, &[order.id.0], status, now).await?;
                let settled = Order {
                    status,
                    updated_at: now,
                    ..order
                };
                let mut events = vec![Event::order(kind, &settled, now)];
                if !sell {
                    let view = drop_view_in(&mut tx, drop).await?.ok_or_else(|| {
                        ::livedrop_core::StoreError::backend("an order's drop is gone")
                    })?;
                    let none = ::std::collections::HashSet::new();
                    let locked = locked.get(&drop).unwrap_or(&none);
                    let served = serve_waitlist(
                        &mut tx,
                        &view.drop,
                        &settled.sku,
                        &mut stock,
                        now,
                        hold,
                        locked,
                    )
                    .await?;
                    let Some(served) = served else {
                        tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                        return Ok(None);
                    };
                    events.extend(served);
                }
                write_stock(&mut tx, drop, &settled.sku, &stock).await?;
                events.extend(Event::stock_moved(
                    drop,
                    &settled.sku,
                    &before,
                    &stock.stock()?,
                    stock.version,
                    now,
                ));
                dialect::append_events(&mut tx, &events).await?;
                self.inner.commit(tx, true).await?;
                Ok(Some(if expired {
                    SettleOutcome::HoldExpired(settled)
                } else {
                    SettleOutcome::Settled(settled)
                }))
            }

            /// One attempt at [`expire_holds`]; `None` when a hand-off met a buyer it
            /// had not locked (nothing written).
            async fn expire_once(
                &self,
                now: ::livedrop_core::clock::Timestamp,
                limit: u32,
                hold: ::chrono::Duration,
            ) -> ::livedrop_core::StoreResult<Option<Vec<::livedrop_core::model::Order>>> {
                use ::livedrop_core::event::{Event, EventType};
                use ::livedrop_core::model::{Order, OrderStatus};
                let mut tx = self.inner.write().await?;
                // Rows another sweeper (or a settlement) holds are skipped, so each hold
                // is returned by exactly one transaction.
                let sql = format!(
                    "SELECT {} FROM orders WHERE status = 'reserved' AND reserved_until <= $1 \
                     ORDER BY reserved_until, id LIMIT $2{}",
                    dialect::OrderRow::COLUMNS,
                    dialect::FOR_UPDATE_SKIP_LOCKED
                );
                let due = ::sqlx::query_as::<_, dialect::OrderRow>(&sql)
                    .bind(dialect::stamp(now))
                    .bind(i64::from(limit.min(dialect::MAX_SWEEP)))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(dialect::map_sqlx_error)?
                    .into_iter()
                    .map(dialect::OrderRow::into_order)
                    .collect::<::livedrop_core::StoreResult<Vec<_>>>()?;
                if due.is_empty() {
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                    return Ok(Some(Vec::new()));
                }
                // The expired orders stop counting toward their buyers' limits before
                // a hand-off reads what buyers hold.
                let ids: Vec<::uuid::Uuid> = due.iter().map(|o| o.id.0).collect();
                dialect::set_status(&mut tx, &ids, OrderStatus::Expired, now).await?;
                let mut by_variant: ::std::collections::BTreeMap<
                    (::uuid::Uuid, String),
                    Vec<Order>,
                > = ::std::collections::BTreeMap::new();
                for order in due {
                    by_variant
                        .entry((order.drop_id.0, order.sku.clone()))
                        .or_default()
                        .push(order);
                }
                let variants: Vec<(::uuid::Uuid, &str)> = by_variant
                    .keys()
                    .map(|(drop, sku)| (*drop, sku.as_str()))
                    .collect();
                let locked = lock_waiting(&mut tx, &variants).await?;
                let none = ::std::collections::HashSet::new();
                let mut drops: ::std::collections::HashMap<
                    ::uuid::Uuid,
                    ::livedrop_core::model::Drop,
                > = ::std::collections::HashMap::new();
                let mut expired = Vec::new();
                let mut events = Vec::new();
                // Variant rows in (drop, sku) order, so concurrent sweepers and
                // placements never deadlock.
                for ((drop, sku), orders) in by_variant {
                    let mut stock = variant_row(&mut tx, drop, &sku).await?.ok_or_else(|| {
                        ::livedrop_core::StoreError::backend(format!(
                            "variant {sku} of drop {drop} has no stock row"
                        ))
                    })?;
                    if !drops.contains_key(&drop) {
                        let view = drop_view_in(&mut tx, drop).await?.ok_or_else(|| {
                            ::livedrop_core::StoreError::backend("an order's drop is gone")
                        })?;
                        drops.insert(drop, view.drop);
                    }
                    let Some(definition) = drops.get(&drop) else {
                        continue;
                    };
                    for order in orders {
                        let (before, _) = stock.release(order.quantity, false)?;
                        let order = Order {
                            status: OrderStatus::Expired,
                            updated_at: now,
                            ..order
                        };
                        events.push(Event::order(EventType::OrderExpired, &order, now));
                        let served = serve_waitlist(
                            &mut tx,
                            definition,
                            &sku,
                            &mut stock,
                            now,
                            hold,
                            locked.get(&drop).unwrap_or(&none),
                        )
                        .await?;
                        let Some(served) = served else {
                            tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                            return Ok(None);
                        };
                        events.extend(served);
                        events.extend(Event::stock_moved(
                            drop,
                            &sku,
                            &before,
                            &stock.stock()?,
                            stock.version,
                            now,
                        ));
                        expired.push(order);
                    }
                    write_stock(&mut tx, drop, &sku, &stock).await?;
                }
                dialect::append_events(&mut tx, &events).await?;
                self.inner.commit(tx, true).await?;
                ::tracing::debug!(count = expired.len(), "expired holds");
                // The order every store returns: by hold end, then id (locking went by
                // variant).
                expired.sort_by_key(|o: &Order| (o.reserved_until, o.id.0));
                Ok(Some(expired))
            }
        }

        #[::async_trait::async_trait]
        impl ::livedrop_core::ports::OrderRepository for $store {
            async fn place_order(
                &self,
                order: &::livedrop_core::model::Order,
                now: ::livedrop_core::clock::Timestamp,
            ) -> ::livedrop_core::StoreResult<::livedrop_core::model::PlaceOutcome> {
                self.place(order, now).await
            }

            async fn order(
                &self,
                id: ::livedrop_core::id::OrderId,
            ) -> ::livedrop_core::StoreResult<Option<::livedrop_core::model::Order>> {
                order_row(self.inner.reader(), id, "").await
            }

            async fn order_by_key(
                &self,
                user: ::livedrop_core::id::UserId,
                key: &str,
            ) -> ::livedrop_core::StoreResult<Option<::livedrop_core::model::Order>> {
                let mut conn = self
                    .inner
                    .reader()
                    .acquire()
                    .await
                    .map_err(dialect::map_sqlx_error)?;
                order_by_key(&mut conn, user, key).await
            }

            async fn orders_for_user(
                &self,
                user: ::livedrop_core::id::UserId,
                page: ::livedrop_core::page::PageRequest,
            ) -> ::livedrop_core::StoreResult<
                ::livedrop_core::page::Page<::livedrop_core::model::Order>,
            > {
                let sql = format!(
                    "SELECT {} FROM orders WHERE user_id = $1 \
                       AND ($2 IS NULL OR (created_at, id) < ($2, $3)) \
                     ORDER BY created_at DESC, id DESC LIMIT $4",
                    dialect::OrderRow::COLUMNS
                );
                let (at, id) = dialect::after(&page);
                let query = ::sqlx::query_as(&sql).bind(user.0).bind(at).bind(id);
                $crate::sql::keyset_page(
                    self.inner.reader(),
                    query,
                    &page,
                    (
                        dialect::OrderRow::into_order,
                        ::livedrop_core::model::Order::cursor,
                    ),
                    dialect::map_sqlx_error,
                )
                .await
            }

            async fn settle_order(
                &self,
                id: ::livedrop_core::id::OrderId,
                settlement: ::livedrop_core::model::Settlement,
                now: ::livedrop_core::clock::Timestamp,
                hold: ::chrono::Duration,
            ) -> ::livedrop_core::StoreResult<::livedrop_core::model::SettleOutcome> {
                for _ in 0..$crate::sql::HANDOFF_ATTEMPTS {
                    if let Some(outcome) = self.settle_once(id, settlement, now, hold).await? {
                        return Ok(outcome);
                    }
                }
                Err(::livedrop_core::StoreError::Conflict(
                    "the waitlist kept changing under a settlement".into(),
                ))
            }

            async fn expire_holds(
                &self,
                now: ::livedrop_core::clock::Timestamp,
                limit: u32,
                hold: ::chrono::Duration,
            ) -> ::livedrop_core::StoreResult<Vec<::livedrop_core::model::Order>> {
                for _ in 0..$crate::sql::HANDOFF_ATTEMPTS {
                    if let Some(expired) = self.expire_once(now, limit, hold).await? {
                        return Ok(expired);
                    }
                }
                Err(::livedrop_core::StoreError::Conflict(
                    "the waitlist kept changing under the sweeper".into(),
                ))
            }

            async fn extend_hold(
                &self,
                id: ::livedrop_core::id::OrderId,
                by: ::chrono::Duration,
                now: ::livedrop_core::clock::Timestamp,
            ) -> ::livedrop_core::StoreResult<::livedrop_core::model::ExtendOutcome> {
                use ::livedrop_core::event::{Event, EventType};
                use ::livedrop_core::model::ExtendOutcome;
                let mut tx = self.inner.write().await?;
                // The order row's lock (on SQLite, the write lock) orders this with
                // settlements and sweepers: a sweeper skips the row while it is locked,
                // and one that locked it first has expired it by the time this read
                // returns (the row as committed).
                let Some(order) = order_row(&mut *tx, id, dialect::FOR_UPDATE).await? else {
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                    return Ok(ExtendOutcome::NotFound);
                };
                let outcome = order.extension(by, now);
                let ExtendOutcome::Extended(extended) = &outcome else {
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                    return Ok(outcome);
                };
                ::sqlx::query(
                    "UPDATE orders SET reserved_until = $2, extended_at = $3 WHERE id = $1",
                )
                .bind(id.0)
                .bind(dialect::stamp(extended.reserved_until))
                .bind(extended.extended_at.map(dialect::stamp))
                .execute(&mut *tx)
                .await
                .map_err(dialect::map_sqlx_error)?;
                dialect::append_events(
                    &mut tx,
                    &[Event::order(EventType::OrderExtended, extended, now)],
                )
                .await?;
                self.inner.commit(tx, true).await?;
                Ok(outcome)
            }
        }
    };
}

pub(crate) use order_ports;
