//! Orders, written once for both SQL stores: [`order_ports!`] expands the reads, the
//! batch decision's transaction, settlement, hold expiry and extension for
//! `PgStore` and `SqliteStore`. How a store places one order (its strategies) and
//! the batch's multi-row statements stay with the store.

/// Statuses that hold stock and count toward the per-user limit.
pub(crate) const HOLDING: &str = "('reserved', 'confirmed')";

/// Implements `OrderRepository` for the store type `$store` and `Batcher` for its
/// `$inner`, and writes the order queries they share (`order_row`, `order_by_key`,
/// `drop_row`, `stock_row`, `write_stock`) into the calling module.
///
/// Besides what [`catalog_ports!`](super::catalog::catalog_ports) names, the
/// expansion takes `self.place(order, now)` (the store's placement) and, from
/// `dialect`: `Conn`, `known_orders`, `held_units`, `write_batch`, `set_status`,
/// `lock_of`, `FOR_UPDATE_SKIP_LOCKED` and `MAX_SWEEP`.
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

        /// The drop and its inventory, the inventory row held for the caller's
        /// write transaction.
        pub(crate) async fn drop_row(
            conn: &mut dialect::Conn,
            drop: ::uuid::Uuid,
        ) -> ::livedrop_core::StoreResult<Option<dialect::DropRow>> {
            let sql = format!(
                "SELECT {} FROM drops d JOIN inventory i ON i.drop_id = d.id WHERE d.id = $1{}",
                dialect::DropRow::COLUMNS,
                dialect::lock_of("i")
            );
            ::sqlx::query_as::<_, dialect::DropRow>(&sql)
                .bind(drop)
                .fetch_optional(conn)
                .await
                .map_err(dialect::map_sqlx_error)
        }

        /// The drop's inventory row, held for the caller's write transaction.
        async fn stock_row(
            conn: &mut dialect::Conn,
            drop: ::uuid::Uuid,
        ) -> ::livedrop_core::StoreResult<$crate::sql::StockRow> {
            let sql = format!(
                "SELECT {} FROM inventory WHERE drop_id = $1{}",
                $crate::sql::StockRow::COLUMNS,
                dialect::FOR_UPDATE
            );
            ::sqlx::query_as::<_, $crate::sql::StockRow>(&sql)
                .bind(drop)
                .fetch_one(conn)
                .await
                .map_err(dialect::map_sqlx_error)
        }

        /// Writes `row`'s counts and version to the drop's inventory row.
        pub(crate) async fn write_stock(
            conn: &mut dialect::Conn,
            drop: ::uuid::Uuid,
            row: &$crate::sql::StockRow,
        ) -> ::livedrop_core::StoreResult<()> {
            ::sqlx::query(
                "UPDATE inventory SET available = $2, reserved = $3, sold = $4, version = $5 \
                 WHERE drop_id = $1",
            )
            .bind(drop)
            .bind(row.available)
            .bind(row.reserved)
            .bind(row.sold)
            .bind(row.version)
            .execute(conn)
            .await
            .map_err(dialect::map_sqlx_error)?;
            Ok(())
        }

        #[::async_trait::async_trait]
        impl $crate::sql::Batcher for $inner {
            fn combiners(&self) -> &$crate::sql::Combiners {
                &self.combiners
            }

            /// Decides and writes one batch in one transaction. `Ok(None)`: a
            /// concurrent transaction took one of the batch's idempotency keys first
            /// (never on SQLite, whose write lock keeps other writers out); nothing
            /// was written.
            async fn decide(
                &self,
                drop: ::livedrop_core::id::DropId,
                batch: &[$crate::sql::Placement],
            ) -> ::livedrop_core::StoreResult<Option<Vec<::livedrop_core::model::PlaceOutcome>>>
            {
                use ::livedrop_core::model::PlaceOutcome;
                let mut tx = self.write().await?;
                // 1. Orders that already exist under a key of the batch (any drop).
                let known = dialect::known_orders(&mut tx, batch).await?;
                // 2. The drop's inventory row held: from here on the batch sees every
                //    committed order of the drop.
                let Some(row) = drop_row(&mut tx, drop.0).await? else {
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                    let key = |r: &$crate::sql::Placement| {
                        (r.order.user_id.0, r.order.idempotency_key.clone())
                    };
                    return Ok(Some(
                        batch
                            .iter()
                            .map(|r| match known.get(&key(r)) {
                                Some(o) => PlaceOutcome::Duplicate(o.clone()),
                                None => PlaceOutcome::DropNotFound,
                            })
                            .collect(),
                    ));
                };
                // 3. Units each buyer of the batch holds in the drop.
                let held = dialect::held_units(&mut tx, drop.0, batch).await?;
                // 4. Decide in arrival order.
                let decision =
                    $crate::sql::decide_batch(&row.to_drop()?, row.stock, known, held, batch)?;
                if decision.placed.is_empty() {
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                    return Ok(Some(decision.outcomes));
                }
                // 5. Write the stock once, every order, every event.
                let inserted = dialect::write_batch(
                    &mut tx,
                    drop,
                    &decision.stock,
                    &decision.placed,
                    &decision.events,
                )
                .await?;
                if inserted != decision.placed.len() as u64 {
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                    return Ok(None);
                }
                self.commit(tx, true).await?;
                Ok(Some(decision.outcomes))
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
            ) -> ::livedrop_core::StoreResult<::livedrop_core::model::SettleOutcome> {
                use ::livedrop_core::event::{Event, EventType};
                use ::livedrop_core::model::{Order, OrderStatus, SettleOutcome, Settlement};
                let mut tx = self.inner.write().await?;
                let Some(order) = order_row(&mut *tx, id, dialect::FOR_UPDATE).await? else {
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                    return Ok(SettleOutcome::NotFound);
                };
                let target = match settlement {
                    Settlement::Confirm => OrderStatus::Confirmed,
                    Settlement::Cancel => OrderStatus::Cancelled,
                };
                if order.status == target {
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                    return Ok(SettleOutcome::Unchanged(order));
                }
                if order.status != OrderStatus::Reserved {
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                    return Ok(SettleOutcome::Conflict(order));
                }
                // Order row, then inventory row: the same lock order as the sweeper.
                let mut stock = stock_row(&mut tx, order.drop_id.0).await?;
                let expired = settlement == Settlement::Confirm && now >= order.reserved_until;
                let (status, kind) = if expired {
                    (OrderStatus::Expired, EventType::OrderExpired)
                } else if settlement == Settlement::Confirm {
                    (OrderStatus::Confirmed, EventType::OrderConfirmed)
                } else {
                    (OrderStatus::Cancelled, EventType::OrderCancelled)
                };
                let sell = status == OrderStatus::Confirmed;
                let (before, after) = stock.release(order.quantity, sell)?;
                write_stock(&mut tx, order.drop_id.0, &stock).await?;
                dialect::set_status(&mut tx, &[order.id.0], status, now).await?;
                let settled = Order {
                    status,
                    updated_at: now,
                    ..order
                };
                let mut events = vec![Event::order(kind, &settled, now)];
                events.extend(Event::stock_moved(
                    settled.drop_id.0,
                    &before,
                    &after,
                    stock.version,
                    now,
                ));
                dialect::append_events(&mut tx, &events).await?;
                self.inner.commit(tx, true).await?;
                Ok(if expired {
                    SettleOutcome::HoldExpired(settled)
                } else {
                    SettleOutcome::Settled(settled)
                })
            }

            async fn expire_holds(
                &self,
                now: ::livedrop_core::clock::Timestamp,
                limit: u32,
            ) -> ::livedrop_core::StoreResult<Vec<::livedrop_core::model::Order>> {
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
                    return Ok(Vec::new());
                }
                let mut by_drop: ::std::collections::BTreeMap<::uuid::Uuid, Vec<Order>> =
                    ::std::collections::BTreeMap::new();
                for order in due {
                    by_drop.entry(order.drop_id.0).or_default().push(order);
                }
                let mut expired = Vec::new();
                let mut events = Vec::new();
                // Inventory rows in id order, so concurrent sweepers never deadlock.
                for (drop, orders) in by_drop {
                    let mut stock = stock_row(&mut tx, drop).await?;
                    for order in orders {
                        let (before, after) = stock.release(order.quantity, false)?;
                        let order = Order {
                            status: OrderStatus::Expired,
                            updated_at: now,
                            ..order
                        };
                        events.push(Event::order(EventType::OrderExpired, &order, now));
                        events.extend(Event::stock_moved(
                            drop,
                            &before,
                            &after,
                            stock.version,
                            now,
                        ));
                        expired.push(order);
                    }
                    write_stock(&mut tx, drop, &stock).await?;
                }
                let ids: Vec<::uuid::Uuid> = expired.iter().map(|o| o.id.0).collect();
                dialect::set_status(&mut tx, &ids, OrderStatus::Expired, now).await?;
                dialect::append_events(&mut tx, &events).await?;
                self.inner.commit(tx, true).await?;
                ::tracing::debug!(count = expired.len(), "expired holds");
                // The order every store returns: by hold end, then id (locking went by
                // drop).
                expired.sort_by_key(|o: &Order| (o.reserved_until, o.id.0));
                Ok(expired)
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
