//! Waitlists, written once for both SQL stores: [`waitlist_ports!`] expands
//! `WaitlistRepository` for `PgStore` and `SqliteStore` in their `orders` modules,
//! beside the variant-row and hand-off queries it shares with the orders
//! ([`order_ports!`](super::orders::order_ports)). The hand-off itself (units that
//! come back going to the line) lives with the movements that free units:
//! settlement, expiry and restock.

/// Implements `WaitlistRepository` for the store type `$store`, in a module where
/// [`order_ports!`](super::orders::order_ports) was expanded.
macro_rules! waitlist_ports {
    ($store:ty) => {
        /// The buyer's entry in the drop's waitlists, with its position, read
        /// through `conn`.
        async fn waitlist_row<'c, E>(
            conn: E,
            drop: ::uuid::Uuid,
            user: ::uuid::Uuid,
        ) -> ::livedrop_core::StoreResult<Option<::livedrop_core::model::WaitlistEntry>>
        where
            E: ::sqlx::Executor<'c, Database = dialect::Db>,
        {
            let sql = format!(
                "SELECT {} FROM waitlist w WHERE w.drop_id = $1 AND w.user_id = $2",
                dialect::WaitlistRow::COLUMNS
            );
            let query = ::sqlx::query_as(&sql).bind(drop).bind(user);
            $crate::sql::optional_row(
                conn,
                query,
                dialect::WaitlistRow::into_entry,
                dialect::map_sqlx_error,
            )
            .await
        }

        #[::async_trait::async_trait]
        impl ::livedrop_core::ports::WaitlistRepository for $store {
            async fn join_waitlist(
                &self,
                join: &::livedrop_core::model::WaitlistJoin,
            ) -> ::livedrop_core::StoreResult<::livedrop_core::model::JoinOutcome> {
                use ::livedrop_core::model::JoinOutcome;
                let (drop, user) = (join.drop_id.0, join.user_id.0);
                let mut tx = self.inner.write().await?;
                // The buyer's lock (its orders on the drop wait), then the variant's
                // row (hand-offs of the variant wait): the checks below stay true
                // until the entry is written.
                dialect::lock_buyers(&mut tx, &[(drop, user)]).await?;
                let row = variant_row(&mut tx, drop, &join.sku).await?;
                let view = drop_view_in(&mut tx, drop).await?;
                let refusal = match (&view, row) {
                    (None, _) => Some(JoinOutcome::DropNotFound),
                    (Some(_), None) => Some(JoinOutcome::UnknownVariant),
                    (Some(view), Some(_)) if !view.drop.accepts_orders_at(join.at) => {
                        Some(JoinOutcome::NotLive)
                    }
                    (Some(_), Some(row)) if row.available > 0 => {
                        Some(JoinOutcome::VariantAvailable {
                            available: $crate::sql::to_u32(row.available)?,
                        })
                    }
                    (Some(view), Some(_)) => {
                        let held = dialect::held_units(&mut tx, drop, &[user]).await?;
                        let held = $crate::sql::to_u32(held.get(&user).copied().unwrap_or(0))?;
                        let limit = view.drop.per_user_limit;
                        (u64::from(held) + u64::from(join.quantity) > u64::from(limit))
                            .then_some(JoinOutcome::LimitExceeded { limit, held })
                    }
                };
                if let Some(refusal) = refusal {
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                    return Ok(refusal);
                }
                // The same sku keeps its row (its `seq`: the place); another sku
                // replaces it with a new row at the end of that line.
                let kept = ::sqlx::query(
                    "UPDATE waitlist SET quantity = $4 \
                     WHERE drop_id = $1 AND user_id = $2 AND sku = $3",
                )
                .bind(drop)
                .bind(user)
                .bind(&join.sku)
                .bind(i64::from(join.quantity))
                .execute(&mut *tx)
                .await
                .map_err(dialect::map_sqlx_error)?
                .rows_affected()
                    == 1;
                if !kept {
                    ::sqlx::query("DELETE FROM waitlist WHERE drop_id = $1 AND user_id = $2")
                        .bind(drop)
                        .bind(user)
                        .execute(&mut *tx)
                        .await
                        .map_err(dialect::map_sqlx_error)?;
                    ::sqlx::query(
                        "INSERT INTO waitlist (drop_id, sku, user_id, quantity, joined_at) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(drop)
                    .bind(&join.sku)
                    .bind(user)
                    .bind(i64::from(join.quantity))
                    .bind(dialect::stamp(join.at))
                    .execute(&mut *tx)
                    .await
                    .map_err(dialect::map_sqlx_error)?;
                }
                let entry = waitlist_row(&mut *tx, drop, user).await?.ok_or_else(|| {
                    ::livedrop_core::StoreError::backend("a waitlist entry just written is gone")
                })?;
                self.inner.commit(tx, false).await?;
                Ok(JoinOutcome::Joined(entry))
            }

            async fn waitlist_entry(
                &self,
                drop: ::livedrop_core::id::DropId,
                user: ::livedrop_core::id::UserId,
            ) -> ::livedrop_core::StoreResult<Option<::livedrop_core::model::WaitlistEntry>> {
                waitlist_row(self.inner.reader(), drop.0, user.0).await
            }

            async fn leave_waitlist(
                &self,
                drop: ::livedrop_core::id::DropId,
                user: ::livedrop_core::id::UserId,
            ) -> ::livedrop_core::StoreResult<bool> {
                let done =
                    ::sqlx::query("DELETE FROM waitlist WHERE drop_id = $1 AND user_id = $2")
                        .bind(drop.0)
                        .bind(user.0)
                        .execute(self.inner.writer())
                        .await
                        .map_err(dialect::map_sqlx_error)?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}

pub(crate) use waitlist_ports;
