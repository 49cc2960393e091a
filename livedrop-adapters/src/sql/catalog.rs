//! Users and follows, products, drops and stock adjustments, written once for both
//! SQL stores: [`catalog_ports!`] expands the same bodies for `PgStore` and
//! `SqliteStore`, where only the connection types and the dialect differ.

use livedrop_core::model::Product;
use livedrop_core::text::fold_case;

/// What product search matches terms against, folded as `Product::matches` folds it.
pub(crate) fn search_text(product: &Product) -> String {
    fold_case(&format!("{} {}", product.title, product.description))
}

/// Implements `UserRepository`, `ProductRepository`, `DropRepository` and
/// `InventoryRepository` for the store type `$store`.
///
/// The expansion names, from the module it is written in:
///
/// - `self.inner.reader()` (a pool for reads), `self.inner.writer()` (a pool for one
///   statement that writes), `self.inner.write()` (a write transaction) and
///   `self.inner.commit(tx, appended)` (commits, `appended` telling whether events
///   went to the outbox);
/// - `dialect`: the store's module of what differs between the two SQL dialects:
///   `Time`, the row types at it, `after`, `append_events`, `map_sqlx_error`, the list
///   parameter `list` with its table `each`, `position` and `FOR_UPDATE`.
///
/// Parameters are written `$n`, which both PostgreSQL and SQLite read.
macro_rules! catalog_ports {
    ($store:ty) => {
        #[::async_trait::async_trait]
        impl ::livedrop_core::ports::UserRepository for $store {
            async fn insert_user(
                &self,
                user: &::livedrop_core::model::User,
            ) -> ::livedrop_core::StoreResult<()> {
                ::sqlx::query(
                    "INSERT INTO users (id, email, display_name, role, password_hash, \
                                        created_at, email_key) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(user.id.0)
                .bind(&user.email)
                .bind(&user.display_name)
                .bind(user.role.as_str())
                .bind(&user.password_hash)
                .bind(dialect::stamp(user.created_at))
                .bind(::livedrop_core::text::fold_case(&user.email))
                .execute(self.inner.writer())
                .await
                .map_err(dialect::map_sqlx_error)?;
                Ok(())
            }

            async fn user(
                &self,
                id: ::livedrop_core::id::UserId,
            ) -> ::livedrop_core::StoreResult<Option<::livedrop_core::model::User>> {
                let sql = format!("SELECT {} FROM users WHERE id = $1", dialect::UserRow::COLUMNS);
                self.one(&sql, id.0, dialect::UserRow::into_user).await
            }

            async fn user_by_email(
                &self,
                email: &str,
            ) -> ::livedrop_core::StoreResult<Option<::livedrop_core::model::User>> {
                let sql = format!(
                    "SELECT {} FROM users WHERE email_key = $1",
                    dialect::UserRow::COLUMNS
                );
                let key = ::livedrop_core::text::fold_case(email);
                self.one(&sql, key, dialect::UserRow::into_user).await
            }

            async fn follow(
                &self,
                follower: ::livedrop_core::id::UserId,
                creator: ::livedrop_core::id::UserId,
                at: ::livedrop_core::clock::Timestamp,
                events: &[::livedrop_core::event::Event],
            ) -> ::livedrop_core::StoreResult<bool> {
                let mut tx = self.inner.write().await?;
                let new = ::sqlx::query(
                    "INSERT INTO follows (follower_id, creator_id, followed_at) \
                     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(follower.0)
                .bind(creator.0)
                .bind(dialect::stamp(at))
                .execute(&mut *tx)
                .await
                .map_err(dialect::map_sqlx_error)?
                .rows_affected()
                    == 1;
                if new {
                    dialect::append_events(&mut tx, events).await?;
                }
                self.inner.commit(tx, new && !events.is_empty()).await?;
                Ok(new)
            }

            async fn unfollow(
                &self,
                follower: ::livedrop_core::id::UserId,
                creator: ::livedrop_core::id::UserId,
            ) -> ::livedrop_core::StoreResult<bool> {
                let done =
                    ::sqlx::query("DELETE FROM follows WHERE follower_id = $1 AND creator_id = $2")
                        .bind(follower.0)
                        .bind(creator.0)
                        .execute(self.inner.writer())
                        .await
                        .map_err(dialect::map_sqlx_error)?;
                Ok(done.rows_affected() == 1)
            }

            async fn followers(
                &self,
                creator: ::livedrop_core::id::UserId,
                page: ::livedrop_core::page::PageRequest,
            ) -> ::livedrop_core::StoreResult<
                ::livedrop_core::page::Page<::livedrop_core::model::FollowEntry>,
            > {
                self.follow_listing(creator, "creator_id", "follower_id", page)
                    .await
            }

            async fn following(
                &self,
                follower: ::livedrop_core::id::UserId,
                page: ::livedrop_core::page::PageRequest,
            ) -> ::livedrop_core::StoreResult<
                ::livedrop_core::page::Page<::livedrop_core::model::FollowEntry>,
            > {
                self.follow_listing(follower, "follower_id", "creator_id", page)
                    .await
            }
        }

        impl $store {
            /// The row `sql` reads with `key` as `$1`, if any, converted by `into`.
            async fn one<K, R, T>(
                &self,
                sql: &str,
                key: K,
                into: fn(R) -> ::livedrop_core::StoreResult<T>,
            ) -> ::livedrop_core::StoreResult<Option<T>>
            where
                K: 'static
                    + Send
                    + for<'q> ::sqlx::Encode<'q, dialect::Db>
                    + ::sqlx::Type<dialect::Db>,
                R: for<'r> ::sqlx::FromRow<'r, <dialect::Db as ::sqlx::Database>::Row>
                    + Send
                    + Unpin,
            {
                let query = ::sqlx::query_as(sql).bind(key);
                $crate::sql::optional_row(self.inner.reader(), query, into, dialect::map_sqlx_error)
                    .await
            }

            /// One side of the follow graph, newest first: the users on column `other`
            /// of the follows whose column `own` is `user` (the two columns are fixed
            /// names).
            async fn follow_listing(
                &self,
                user: ::livedrop_core::id::UserId,
                own: &'static str,
                other: &'static str,
                page: ::livedrop_core::page::PageRequest,
            ) -> ::livedrop_core::StoreResult<
                ::livedrop_core::page::Page<::livedrop_core::model::FollowEntry>,
            > {
                let (at, id) = dialect::after(&page);
                let sql = format!(
                    "SELECT f.{other} AS user_id, \
                            COALESCE(u.display_name, '') AS display_name, f.followed_at \
                     FROM follows f LEFT JOIN users u ON u.id = f.{other} \
                     WHERE f.{own} = $1 \
                       AND ($2 IS NULL OR (f.followed_at, f.{other}) < ($2, $3)) \
                     ORDER BY f.followed_at DESC, f.{other} DESC LIMIT $4"
                );
                let query = ::sqlx::query_as(&sql)
                    .bind(user.0)
                    .bind(at)
                    .bind(id);
                $crate::sql::keyset_page(
                    self.inner.reader(),
                    query,
                    &page,
                    (dialect::FollowRow::into_entry, ::livedrop_core::model::FollowEntry::cursor),
                    dialect::map_sqlx_error,
                )
                .await
            }

            /// Binds every column of `product` to `query`: `$1` the id, then the
            /// columns in the products table's order, `$11` the search text.
            fn bind_product<'q>(
                query: ::sqlx::query::Query<
                    'q,
                    dialect::Db,
                    <dialect::Db as ::sqlx::Database>::Arguments<'q>,
                >,
                product: &'q ::livedrop_core::model::Product,
            ) -> ::sqlx::query::Query<
                'q,
                dialect::Db,
                <dialect::Db as ::sqlx::Database>::Arguments<'q>,
            > {
                query
                    .bind(product.id.0)
                    .bind(product.creator_id.0)
                    .bind(&product.title)
                    .bind(&product.description)
                    .bind(product.price_cents)
                    .bind(&product.currency)
                    .bind(&product.image_url)
                    .bind(dialect::stamp(product.created_at))
                    .bind(dialect::stamp(product.updated_at))
                    .bind(product.version)
                    .bind($crate::sql::catalog::search_text(product))
            }
        }

        #[::async_trait::async_trait]
        impl ::livedrop_core::ports::ProductRepository for $store {
            async fn insert_product(
                &self,
                product: &::livedrop_core::model::Product,
                events: &[::livedrop_core::event::Event],
            ) -> ::livedrop_core::StoreResult<()> {
                let mut tx = self.inner.write().await?;
                let insert = ::sqlx::query(
                    "INSERT INTO products (id, creator_id, title, description, price_cents, \
                                           currency, image_url, created_at, updated_at, \
                                           version, search_text) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                );
                Self::bind_product(insert, product)
                    .execute(&mut *tx)
                    .await
                    .map_err(dialect::map_sqlx_error)?;
                dialect::append_events(&mut tx, events).await?;
                self.inner.commit(tx, !events.is_empty()).await
            }

            async fn product(
                &self,
                id: ::livedrop_core::id::ProductId,
            ) -> ::livedrop_core::StoreResult<Option<::livedrop_core::model::Product>> {
                let sql = format!(
                    "SELECT {} FROM products WHERE id = $1",
                    dialect::ProductRow::COLUMNS
                );
                self.one(&sql, id.0, dialect::ProductRow::into_product).await
            }

            async fn update_product(
                &self,
                product: &::livedrop_core::model::Product,
                events: &[::livedrop_core::event::Event],
            ) -> ::livedrop_core::StoreResult<::livedrop_core::ports::UpdateOutcome> {
                use ::livedrop_core::ports::UpdateOutcome;
                let mut tx = self.inner.write().await?;
                let update = ::sqlx::query(
                    "UPDATE products SET creator_id = $2, title = $3, description = $4, \
                         price_cents = $5, currency = $6, image_url = $7, created_at = $8, \
                         updated_at = $9, version = $10, search_text = $11 \
                     WHERE id = $1 AND version = $10 - 1",
                );
                let updated = Self::bind_product(update, product)
                    .execute(&mut *tx)
                    .await
                    .map_err(dialect::map_sqlx_error)?
                    .rows_affected()
                    == 1;
                if updated {
                    dialect::append_events(&mut tx, events).await?;
                    self.inner.commit(tx, !events.is_empty()).await?;
                    return Ok(UpdateOutcome::Updated);
                }
                let current: Option<i64> =
                    ::sqlx::query_scalar("SELECT version FROM products WHERE id = $1")
                        .bind(product.id.0)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(dialect::map_sqlx_error)?;
                tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                Ok(match current {
                    Some(current) => UpdateOutcome::VersionMismatch { current },
                    None => UpdateOutcome::NotFound,
                })
            }

            async fn list_products(
                &self,
                filter: &::livedrop_core::model::ProductFilter,
                page: ::livedrop_core::page::PageRequest,
            ) -> ::livedrop_core::StoreResult<
                ::livedrop_core::page::Page<::livedrop_core::model::Product>,
            > {
                let (at, id) = dialect::after(&page);
                // Every term must occur in "title description" folded, as
                // `Product::matches` says.
                let sql = format!(
                    "SELECT {} FROM products p \
                     WHERE ($1 IS NULL OR p.creator_id = $1) \
                       AND ($2 IS NULL OR (p.created_at, p.id) < ($2, $3)) \
                       AND NOT EXISTS (SELECT 1 FROM {} WHERE {} = 0) \
                     ORDER BY p.created_at DESC, p.id DESC LIMIT $5",
                    dialect::ProductRow::COLUMNS,
                    dialect::each("$4", "text"),
                    dialect::position("p.search_text", "t.value"),
                );
                let query = ::sqlx::query_as(&sql)
                    .bind(filter.creator_id.map(|c| c.0))
                    .bind(at)
                    .bind(id)
                    .bind(dialect::list(&filter.terms));
                $crate::sql::keyset_page(
                    self.inner.reader(),
                    query,
                    &page,
                    (dialect::ProductRow::into_product, ::livedrop_core::model::Product::cursor),
                    dialect::map_sqlx_error,
                )
                .await
            }
        }

        impl $store {
            /// Stores a new drop as `DropRepository::insert_drop` documents, with
            /// its draw record and waiting room, and a draw drop's secret `seed`.
            pub(crate) async fn insert_drop_row(
                &self,
                drop: &::livedrop_core::model::Drop,
                stock: &[u32],
                seed: Option<&str>,
                events: &[::livedrop_core::event::Event],
            ) -> ::livedrop_core::StoreResult<()> {
                if stock.len() != drop.variants.len() || stock.is_empty() {
                    return Err(::livedrop_core::StoreError::backend(format!(
                        "drop {} has {} variant(s) but {} stock figure(s)",
                        drop.id,
                        drop.variants.len(),
                        stock.len()
                    )));
                }
                let mut tx = self.inner.write().await?;
                ::sqlx::query(
                    "INSERT INTO drops (id, product_id, creator_id, title, price_cents, \
                                        currency, starts_at, ends_at, per_user_limit, state, \
                                        created_at, draw_entries_close_at, draw_commitment, \
                                        draw_seed, drawn_at, room_admit_per_minute, \
                                        room_token_seconds, room_opens_minutes_before) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                             $16, $17, $18)",
                )
                .bind(drop.id.0)
                .bind(drop.product_id.0)
                .bind(drop.creator_id.0)
                .bind(&drop.title)
                .bind(drop.price_cents)
                .bind(&drop.currency)
                .bind(dialect::stamp(drop.starts_at))
                .bind(dialect::stamp(drop.ends_at))
                .bind(i64::from(drop.per_user_limit))
                .bind(drop.state.as_str())
                .bind(dialect::stamp(drop.created_at))
                .bind(drop.draw.as_ref().map(|d| dialect::stamp(d.entries_close_at)))
                .bind(drop.draw.as_ref().map(|d| d.commitment.as_str()))
                .bind(drop.draw.as_ref().and_then(|d| d.seed.as_deref()))
                .bind(drop.draw.as_ref().and_then(|d| d.drawn_at).map(dialect::stamp))
                .bind(drop.waiting_room.map(|r| i64::from(r.admit_per_minute)))
                .bind(drop.waiting_room.map(|r| i64::from(r.token_seconds)))
                .bind(drop.waiting_room.map(|r| i64::from(r.opens_minutes_before)))
                .execute(&mut *tx)
                .await
                .map_err(dialect::map_sqlx_error)?;
                if let Some(seed) = seed {
                    ::sqlx::query("INSERT INTO draw_secrets (drop_id, seed) VALUES ($1, $2)")
                        .bind(drop.id.0)
                        .bind(seed)
                        .execute(&mut *tx)
                        .await
                        .map_err(dialect::map_sqlx_error)?;
                }
                for (position, (variant, units)) in drop.variants.iter().zip(stock).enumerate() {
                    let total = i64::from(*units);
                    ::sqlx::query(
                        "INSERT INTO inventory (drop_id, sku, label, position, total_stock, \
                                                available, reserved, sold, version) \
                         VALUES ($1, $2, $3, $4, $5, $5, 0, 0, 0)",
                    )
                    .bind(drop.id.0)
                    .bind(&variant.sku)
                    .bind(&variant.label)
                    .bind(position as i64)
                    .bind(total)
                    .execute(&mut *tx)
                    .await
                    .map_err(dialect::map_sqlx_error)?;
                    ::sqlx::query(
                        "INSERT INTO inventory_ledger (id, drop_id, sku, kind, delta, reason, \
                                                       actor_id, total, available, reserved, \
                                                       sold, created_at) \
                         VALUES ($1, $2, $3, 'initial', $4, 'initial stock', $5, $4, $4, 0, 0, \
                                 $6)",
                    )
                    .bind(::uuid::Uuid::now_v7())
                    .bind(drop.id.0)
                    .bind(&variant.sku)
                    .bind(total)
                    .bind(drop.creator_id.0)
                    .bind(dialect::stamp(drop.created_at))
                    .execute(&mut *tx)
                    .await
                    .map_err(dialect::map_sqlx_error)?;
                }
                dialect::append_events(&mut tx, events).await?;
                self.inner.commit(tx, !events.is_empty()).await
            }
        }

        #[::async_trait::async_trait]
        impl ::livedrop_core::ports::DropRepository for $store {
            async fn insert_drop(
                &self,
                drop: &::livedrop_core::model::Drop,
                stock: &[u32],
                events: &[::livedrop_core::event::Event],
            ) -> ::livedrop_core::StoreResult<()> {
                self.insert_drop_row(drop, stock, None, events).await
            }

            async fn drop_by_id(
                &self,
                id: ::livedrop_core::id::DropId,
            ) -> ::livedrop_core::StoreResult<Option<::livedrop_core::model::Drop>> {
                Ok(self.drop_view(id).await?.map(|v| v.drop))
            }

            async fn drop_view(
                &self,
                id: ::livedrop_core::id::DropId,
            ) -> ::livedrop_core::StoreResult<Option<::livedrop_core::model::DropView>> {
                let sql = format!(
                    "SELECT {} FROM drops d JOIN inventory i ON i.drop_id = d.id WHERE d.id = $1 \
                     ORDER BY i.position",
                    dialect::DropRow::COLUMNS
                );
                let rows = ::sqlx::query_as::<_, dialect::DropRow>(&sql)
                    .bind(id.0)
                    .fetch_all(self.inner.reader())
                    .await
                    .map_err(dialect::map_sqlx_error)?;
                dialect::DropRow::view(rows)
            }

            async fn list_drops(
                &self,
                filter: &::livedrop_core::model::DropFilter,
                now: ::livedrop_core::clock::Timestamp,
                page: ::livedrop_core::page::PageRequest,
            ) -> ::livedrop_core::StoreResult<
                ::livedrop_core::page::Page<::livedrop_core::model::DropView>,
            > {
                let (at, id) = dialect::after(&page);
                // The page's drops (one more than the limit), each read with all its
                // variants. The status expression is `Drop::status_at` in SQL, on the
                // drop's stock: the sum of its variants'.
                let sql = format!(
                    "SELECT {} FROM drops d JOIN inventory i ON i.drop_id = d.id \
                     WHERE d.id IN ( \
                         SELECT p.id FROM drops p \
                         WHERE ($1 IS NULL OR p.creator_id = $1) \
                           AND ($2 IS NULL OR (p.created_at, p.id) < ($2, $3)) \
                           AND ($4 IS NULL OR $4 = CASE \
                                 WHEN p.state = 'cancelled' THEN 'cancelled' \
                                 WHEN $5 >= p.ends_at THEN 'ended' \
                                 WHEN $5 < p.starts_at THEN 'scheduled' \
                                 WHEN (SELECT SUM(v.available) FROM inventory v \
                                       WHERE v.drop_id = p.id) = 0 THEN 'sold_out' \
                                 ELSE 'live' END) \
                         ORDER BY p.created_at DESC, p.id DESC LIMIT $6) \
                     ORDER BY d.created_at DESC, d.id DESC, i.position",
                    dialect::DropRow::COLUMNS
                );
                let rows = ::sqlx::query_as::<_, dialect::DropRow>(&sql)
                    .bind(filter.creator_id.map(|c| c.0))
                    .bind(at)
                    .bind(id)
                    .bind(filter.status.map(|s| s.as_str()))
                    .bind(dialect::stamp(now))
                    .bind($crate::sql::overfetch(&page))
                    .fetch_all(self.inner.reader())
                    .await
                    .map_err(dialect::map_sqlx_error)?;
                Ok(::livedrop_core::page::Page::from_overfetch(
                    dialect::DropRow::views(rows)?,
                    page.limit,
                    |v: &::livedrop_core::model::DropView| v.drop.cursor(),
                ))
            }

            async fn transition(
                &self,
                id: ::livedrop_core::id::DropId,
                from: &[::livedrop_core::model::DropState],
                to: ::livedrop_core::model::DropState,
                events: &[::livedrop_core::event::Event],
            ) -> ::livedrop_core::StoreResult<bool> {
                use ::livedrop_core::model::DropState;
                let closes = matches!(to, DropState::Ended | DropState::Cancelled);
                let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
                let mut tx = self.inner.write().await?;
                if closes {
                    // The variant rows, in sku order like every writer: a hand-off
                    // under way finishes first, and none starts on the closed drop.
                    let sql = format!(
                        "SELECT sku FROM inventory WHERE drop_id = $1 ORDER BY sku{}",
                        dialect::FOR_UPDATE
                    );
                    ::sqlx::query_scalar::<_, String>(&sql)
                        .bind(id.0)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(dialect::map_sqlx_error)?;
                }
                let sql = format!(
                    "UPDATE drops SET state = $2 \
                     WHERE id = $1 AND state IN (SELECT value FROM {})",
                    dialect::each("$3", "text")
                );
                let moved = ::sqlx::query(&sql)
                    .bind(id.0)
                    .bind(to.as_str())
                    .bind(dialect::list(&from))
                    .execute(&mut *tx)
                    .await
                    .map_err(dialect::map_sqlx_error)?
                    .rows_affected()
                    == 1;
                if !moved {
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                    return Ok(false);
                }
                let mut appended = events.to_vec();
                if closes {
                    // Every entry ends, in join order, after the transition's events.
                    let sql = format!(
                        "SELECT {} FROM waitlist w WHERE w.drop_id = $1 ORDER BY w.seq",
                        dialect::WaitlistRow::COLUMNS
                    );
                    let entries = ::sqlx::query_as::<_, dialect::WaitlistRow>(&sql)
                        .bind(id.0)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(dialect::map_sqlx_error)?;
                    ::sqlx::query("DELETE FROM waitlist WHERE drop_id = $1")
                        .bind(id.0)
                        .execute(&mut *tx)
                        .await
                        .map_err(dialect::map_sqlx_error)?;
                    // At the transition's instant; with no event to say it, the
                    // drop's end.
                    let at = match events.first() {
                        Some(e) => e.occurred_at,
                        None => super::orders::drop_view_in(&mut tx, id.0)
                            .await?
                            .map(|v| v.drop.ends_at)
                            .ok_or_else(|| {
                                ::livedrop_core::StoreError::backend("a moved drop is gone")
                            })?,
                    };
                    for row in entries {
                        appended.push(::livedrop_core::event::Event::waitlist(
                            ::livedrop_core::event::EventType::WaitlistClosed,
                            &row.into_entry()?,
                            None,
                            at,
                        ));
                    }
                }
                dialect::append_events(&mut tx, &appended).await?;
                self.inner.commit(tx, !appended.is_empty()).await?;
                Ok(true)
            }

            async fn due_transitions(
                &self,
                now: ::livedrop_core::clock::Timestamp,
                limit: u32,
            ) -> ::livedrop_core::StoreResult<Vec<::livedrop_core::model::Drop>> {
                // One indexed scan per lagging state, merged; each side picks by the
                // merged order (start, then id), so a short `limit` keeps the same
                // drops every store does. Each drop is read with all its variants.
                let sql = format!(
                    "SELECT {cols} FROM drops d JOIN inventory i ON i.drop_id = d.id \
                     WHERE d.id IN ( \
                         SELECT id FROM ( \
                             SELECT id, starts_at FROM (SELECT id, starts_at FROM drops \
                                 WHERE state = 'scheduled' AND starts_at <= $1 \
                                 ORDER BY starts_at, id LIMIT $2) AS due_start \
                             UNION ALL \
                             SELECT id, starts_at FROM (SELECT id, starts_at FROM drops \
                                 WHERE state = 'live' AND ends_at <= $1 \
                                 ORDER BY starts_at, id LIMIT $2) AS due_end) AS due \
                         ORDER BY starts_at, id LIMIT $2) \
                     ORDER BY d.starts_at, d.id, i.position",
                    cols = dialect::DropRow::COLUMNS
                );
                let rows = ::sqlx::query_as::<_, dialect::DropRow>(&sql)
                    .bind(dialect::stamp(now))
                    .bind(i64::from(limit))
                    .fetch_all(self.inner.reader())
                    .await
                    .map_err(dialect::map_sqlx_error)?;
                Ok(dialect::DropRow::views(rows)?
                    .into_iter()
                    .map(|v| v.drop)
                    .collect())
            }
        }

        #[::async_trait::async_trait]
        impl ::livedrop_core::ports::InventoryRepository for $store {
            async fn stock(
                &self,
                drop: ::livedrop_core::id::DropId,
            ) -> ::livedrop_core::StoreResult<Option<Vec<::livedrop_core::model::Stock>>> {
                let sql = format!(
                    "SELECT {} FROM inventory WHERE drop_id = $1 ORDER BY position",
                    $crate::sql::StockRow::COLUMNS
                );
                let rows = ::sqlx::query_as::<_, $crate::sql::StockRow>(&sql)
                    .bind(drop.0)
                    .fetch_all(self.inner.reader())
                    .await
                    .map_err(dialect::map_sqlx_error)?;
                if rows.is_empty() {
                    return Ok(None);
                }
                rows.iter()
                    .map($crate::sql::StockRow::stock)
                    .collect::<::livedrop_core::StoreResult<Vec<_>>>()
                    .map(Some)
            }

            async fn adjust(
                &self,
                adjustment: &::livedrop_core::model::Adjustment,
            ) -> ::livedrop_core::StoreResult<::livedrop_core::model::AdjustOutcome> {
                for _ in 0..$crate::sql::HANDOFF_ATTEMPTS {
                    if let Some(outcome) = self.adjust_once(adjustment).await? {
                        return Ok(outcome);
                    }
                }
                Err(::livedrop_core::StoreError::Conflict(
                    "the waitlist kept changing under a restock".into(),
                ))
            }

            async fn ledger(
                &self,
                drop: ::livedrop_core::id::DropId,
                page: ::livedrop_core::page::PageRequest,
            ) -> ::livedrop_core::StoreResult<
                ::livedrop_core::page::Page<::livedrop_core::model::LedgerEntry>,
            > {
                let (at, id) = dialect::after(&page);
                let sql = format!(
                    "SELECT {} FROM inventory_ledger \
                     WHERE drop_id = $1 AND ($2 IS NULL OR (created_at, id) < ($2, $3)) \
                     ORDER BY created_at DESC, id DESC LIMIT $4",
                    dialect::LedgerRow::COLUMNS
                );
                let query = ::sqlx::query_as(&sql)
                    .bind(drop.0)
                    .bind(at)
                    .bind(id);
                $crate::sql::keyset_page(
                    self.inner.reader(),
                    query,
                    &page,
                    (dialect::LedgerRow::into_entry, ::livedrop_core::model::LedgerEntry::cursor),
                    dialect::map_sqlx_error,
                )
                .await
            }
        }

        impl $store {
            /// One attempt at `adjust`; `None` when a restock's hand-off met a buyer
            /// it had not locked (nothing written).
            async fn adjust_once(
                &self,
                adjustment: &::livedrop_core::model::Adjustment,
            ) -> ::livedrop_core::StoreResult<Option<::livedrop_core::model::AdjustOutcome>> {
                use ::livedrop_core::model::AdjustOutcome;
                use super::orders as o;
                let drop = adjustment.drop_id.0;
                let sku = adjustment.sku.as_str();
                let mut tx = self.inner.write().await?;
                let locked = if adjustment.delta > 0 {
                    o::lock_waiting(&mut tx, &[(drop, sku)]).await?
                } else {
                    Default::default()
                };
                let Some(mut row) = o::variant_row(&mut tx, drop, sku).await? else {
                    let exists = o::drop_exists(&mut tx, drop).await?;
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                    return Ok(Some(if exists {
                        AdjustOutcome::UnknownVariant
                    } else {
                        AdjustOutcome::DropNotFound
                    }));
                };
                let before = row.stock()?;
                if let Some(refusal) = $crate::sql::restock_overflow(adjustment, row.total_stock) {
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                    return Err(refusal);
                }
                if adjustment.delta < 0 && row.available < -adjustment.delta {
                    tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                    return Ok(Some(AdjustOutcome::Insufficient {
                        available: before.available,
                    }));
                }
                row.total_stock += adjustment.delta;
                row.available += adjustment.delta;
                row.version += 1;
                let mut events = Vec::new();
                if adjustment.delta > 0 {
                    let view = o::drop_view_in(&mut tx, drop).await?.ok_or_else(|| {
                        ::livedrop_core::StoreError::backend("the adjusted drop is gone")
                    })?;
                    let none = ::std::collections::HashSet::new();
                    let served = o::serve_waitlist(
                        &mut tx,
                        &view.drop,
                        sku,
                        &mut row,
                        adjustment.at,
                        adjustment.hold,
                        locked.get(&drop).unwrap_or(&none),
                    )
                    .await?;
                    let Some(served) = served else {
                        tx.rollback().await.map_err(dialect::map_sqlx_error)?;
                        return Ok(None);
                    };
                    events = served;
                }
                o::write_stock(&mut tx, drop, sku, &row).await?;
                let after = row.stock()?;
                let entry = adjustment.ledger_entry(after);
                ::sqlx::query(
                    "INSERT INTO inventory_ledger (id, drop_id, sku, kind, delta, reason, \
                                                   actor_id, total, available, reserved, sold, \
                                                   created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(entry.id)
                .bind(entry.drop_id.0)
                .bind(&entry.sku)
                .bind(entry.kind.as_str())
                .bind(entry.delta)
                .bind(&entry.reason)
                .bind(entry.actor_id.map(|a| a.0))
                .bind(row.total_stock)
                .bind(row.available)
                .bind(row.reserved)
                .bind(row.sold)
                .bind(dialect::stamp(entry.created_at))
                .execute(&mut *tx)
                .await
                .map_err(dialect::map_sqlx_error)?;
                events.extend(::livedrop_core::event::Event::stock_moved(
                    drop,
                    sku,
                    &before,
                    &after,
                    row.version,
                    adjustment.at,
                ));
                dialect::append_events(&mut tx, &events).await?;
                self.inner.commit(tx, !events.is_empty()).await?;
                Ok(Some(AdjustOutcome::Applied(entry)))
            }
        }
    };
}

pub(crate) use catalog_ports;
