//! Users and follows, products, drops and stock adjustments.

use async_trait::async_trait;
use livedrop_core::clock::Timestamp;
use livedrop_core::event::Event;
use livedrop_core::id::{DropId, ProductId, UserId};
use livedrop_core::model::{
    self, AdjustOutcome, Adjustment, DropFilter, DropState, DropView, FollowEntry, LedgerEntry,
    LedgerKind, Product, ProductFilter, Stock, User,
};
use livedrop_core::page::{Page, PageRequest};
use livedrop_core::ports::{
    DropRepository, InventoryRepository, ProductRepository, UpdateOutcome, UserRepository,
};
use livedrop_core::text::fold_case;
use livedrop_core::StoreResult;
use sqlx::Row;
use uuid::Uuid;

use super::rows::{append_events, DropRow, LedgerRow, ProductRow, StockRow, UserRow};
use super::{after, map_sqlx_error, overfetch, PgStore};

#[async_trait]
impl UserRepository for PgStore {
    async fn insert_user(&self, user: &User) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO users (id, email, display_name, role, password_hash, created_at, \
                                email_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(user.id.0)
        .bind(&user.email)
        .bind(&user.display_name)
        .bind(user.role.as_str())
        .bind(&user.password_hash)
        .bind(user.created_at)
        .bind(fold_case(&user.email))
        .execute(&self.inner.pool)
        .await
        .map_err(map_sqlx_error)?;
        Ok(())
    }

    async fn user(&self, id: UserId) -> StoreResult<Option<User>> {
        let sql = format!("SELECT {} FROM users WHERE id = $1", UserRow::COLUMNS);
        sqlx::query_as::<_, UserRow>(&sql)
            .bind(id.0)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(map_sqlx_error)?
            .map(UserRow::into_user)
            .transpose()
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let sql = format!(
            "SELECT {} FROM users WHERE email_key = $1",
            UserRow::COLUMNS
        );
        sqlx::query_as::<_, UserRow>(&sql)
            .bind(fold_case(email))
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(map_sqlx_error)?
            .map(UserRow::into_user)
            .transpose()
    }

    async fn follow(
        &self,
        follower: UserId,
        creator: UserId,
        at: Timestamp,
        events: &[Event],
    ) -> StoreResult<bool> {
        let mut tx = self.inner.pool.begin().await.map_err(map_sqlx_error)?;
        let new = sqlx::query(
            "INSERT INTO follows (follower_id, creator_id, followed_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(follower.0)
        .bind(creator.0)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx_error)?
        .rows_affected()
            == 1;
        if new {
            append_events(&mut tx, events).await?;
        }
        tx.commit().await.map_err(map_sqlx_error)?;
        Ok(new)
    }

    async fn unfollow(&self, follower: UserId, creator: UserId) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM follows WHERE follower_id = $1 AND creator_id = $2")
            .bind(follower.0)
            .bind(creator.0)
            .execute(&self.inner.pool)
            .await
            .map_err(map_sqlx_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn followers(
        &self,
        creator: UserId,
        page: PageRequest,
    ) -> StoreResult<Page<FollowEntry>> {
        self.follow_listing(creator, "creator_id", "follower_id", page)
            .await
    }

    async fn following(
        &self,
        follower: UserId,
        page: PageRequest,
    ) -> StoreResult<Page<FollowEntry>> {
        self.follow_listing(follower, "follower_id", "creator_id", page)
            .await
    }
}

fn follow_page(rows: Vec<sqlx::postgres::PgRow>, limit: u32) -> StoreResult<Page<FollowEntry>> {
    let items = rows
        .into_iter()
        .map(|r| {
            Ok(FollowEntry {
                user_id: UserId(r.try_get("user_id")?),
                display_name: r.try_get("display_name")?,
                followed_at: r.try_get("followed_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(map_sqlx_error)?;
    Ok(Page::from_overfetch(items, limit, FollowEntry::cursor))
}

impl PgStore {
    /// One side of the follow graph, newest first: the users on column `other` of
    /// the follows whose column `own` is `user` (the two columns are fixed names).
    async fn follow_listing(
        &self,
        user: UserId,
        own: &'static str,
        other: &'static str,
        page: PageRequest,
    ) -> StoreResult<Page<FollowEntry>> {
        let (at, id) = after(&page);
        let sql = format!(
            "SELECT f.{other} AS user_id, COALESCE(u.display_name, '') AS display_name, \
                    f.followed_at \
             FROM follows f LEFT JOIN users u ON u.id = f.{other} \
             WHERE f.{own} = $1 \
               AND ($2::timestamptz IS NULL OR (f.followed_at, f.{other}) < ($2, $3::uuid)) \
             ORDER BY f.followed_at DESC, f.{other} DESC LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(user.0)
            .bind(at)
            .bind(id)
            .bind(overfetch(&page))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(map_sqlx_error)?;
        follow_page(rows, page.limit)
    }
}

/// What product search matches terms against, folded as `Product::matches` folds it.
fn search_text(product: &Product) -> String {
    fold_case(&format!("{} {}", product.title, product.description))
}

#[async_trait]
impl ProductRepository for PgStore {
    async fn insert_product(&self, product: &Product, events: &[Event]) -> StoreResult<()> {
        let mut tx = self.inner.pool.begin().await.map_err(map_sqlx_error)?;
        sqlx::query(
            "INSERT INTO products (id, creator_id, title, description, price_cents, currency, \
                                   image_url, created_at, updated_at, version, search_text) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(product.id.0)
        .bind(product.creator_id.0)
        .bind(&product.title)
        .bind(&product.description)
        .bind(product.price_cents)
        .bind(&product.currency)
        .bind(&product.image_url)
        .bind(product.created_at)
        .bind(product.updated_at)
        .bind(product.version)
        .bind(search_text(product))
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx_error)?;
        append_events(&mut tx, events).await?;
        tx.commit().await.map_err(map_sqlx_error)
    }

    async fn product(&self, id: ProductId) -> StoreResult<Option<Product>> {
        let sql = format!("SELECT {} FROM products WHERE id = $1", ProductRow::COLUMNS);
        Ok(sqlx::query_as::<_, ProductRow>(&sql)
            .bind(id.0)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(map_sqlx_error)?
            .map(ProductRow::into_product))
    }

    async fn update_product(
        &self,
        product: &Product,
        events: &[Event],
    ) -> StoreResult<UpdateOutcome> {
        let mut tx = self.inner.pool.begin().await.map_err(map_sqlx_error)?;
        let updated = sqlx::query(
            "UPDATE products SET creator_id = $2, title = $3, description = $4, \
                 price_cents = $5, currency = $6, image_url = $7, created_at = $8, \
                 updated_at = $9, version = $10, search_text = $11 \
             WHERE id = $1 AND version = $10 - 1",
        )
        .bind(product.id.0)
        .bind(product.creator_id.0)
        .bind(&product.title)
        .bind(&product.description)
        .bind(product.price_cents)
        .bind(&product.currency)
        .bind(&product.image_url)
        .bind(product.created_at)
        .bind(product.updated_at)
        .bind(product.version)
        .bind(search_text(product))
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx_error)?
        .rows_affected()
            == 1;
        if updated {
            append_events(&mut tx, events).await?;
            tx.commit().await.map_err(map_sqlx_error)?;
            return Ok(UpdateOutcome::Updated);
        }
        let current: Option<i64> = sqlx::query_scalar("SELECT version FROM products WHERE id = $1")
            .bind(product.id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_sqlx_error)?;
        tx.rollback().await.map_err(map_sqlx_error)?;
        Ok(match current {
            Some(current) => UpdateOutcome::VersionMismatch { current },
            None => UpdateOutcome::NotFound,
        })
    }

    async fn list_products(
        &self,
        filter: &ProductFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Product>> {
        let (at, id) = after(&page);
        // Every term must occur in "title description" folded, as `Product::matches` says.
        let sql = format!(
            "SELECT {} FROM products p \
             WHERE ($1::uuid IS NULL OR p.creator_id = $1) \
               AND ($2::timestamptz IS NULL OR (p.created_at, p.id) < ($2, $3::uuid)) \
               AND NOT EXISTS (SELECT 1 FROM UNNEST($4::text[]) AS t(term) \
                               WHERE strpos(p.search_text, t.term) = 0) \
             ORDER BY p.created_at DESC, p.id DESC LIMIT $5",
            ProductRow::COLUMNS
        );
        let rows = sqlx::query_as::<_, ProductRow>(&sql)
            .bind(filter.creator_id.map(|c| c.0))
            .bind(at)
            .bind(id)
            .bind(&filter.terms)
            .bind(overfetch(&page))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(map_sqlx_error)?;
        let items = rows.into_iter().map(ProductRow::into_product).collect();
        Ok(Page::from_overfetch(items, page.limit, Product::cursor))
    }
}

#[async_trait]
impl DropRepository for PgStore {
    async fn insert_drop(
        &self,
        drop: &model::Drop,
        total_stock: u32,
        events: &[Event],
    ) -> StoreResult<()> {
        let mut tx = self.inner.pool.begin().await.map_err(map_sqlx_error)?;
        sqlx::query(
            "INSERT INTO drops (id, product_id, creator_id, title, price_cents, currency, \
                                starts_at, ends_at, per_user_limit, state, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(drop.id.0)
        .bind(drop.product_id.0)
        .bind(drop.creator_id.0)
        .bind(&drop.title)
        .bind(drop.price_cents)
        .bind(&drop.currency)
        .bind(drop.starts_at)
        .bind(drop.ends_at)
        .bind(i64::from(drop.per_user_limit))
        .bind(drop.state.as_str())
        .bind(drop.created_at)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx_error)?;
        let total = i64::from(total_stock);
        sqlx::query(
            "INSERT INTO inventory (drop_id, total_stock, available, reserved, sold, version) \
             VALUES ($1, $2, $2, 0, 0, 0)",
        )
        .bind(drop.id.0)
        .bind(total)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx_error)?;
        sqlx::query(
            "INSERT INTO inventory_ledger (id, drop_id, kind, delta, reason, actor_id, total, \
                                           available, reserved, sold, created_at) \
             VALUES ($1, $2, 'initial', $3, 'initial stock', $4, $3, $3, 0, 0, $5)",
        )
        .bind(Uuid::now_v7())
        .bind(drop.id.0)
        .bind(total)
        .bind(drop.creator_id.0)
        .bind(drop.created_at)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx_error)?;
        append_events(&mut tx, events).await?;
        tx.commit().await.map_err(map_sqlx_error)
    }

    async fn drop_by_id(&self, id: DropId) -> StoreResult<Option<model::Drop>> {
        Ok(self.drop_view(id).await?.map(|v| v.drop))
    }

    async fn drop_view(&self, id: DropId) -> StoreResult<Option<DropView>> {
        let sql = format!(
            "SELECT {} FROM drops d JOIN inventory i ON i.drop_id = d.id WHERE d.id = $1",
            DropRow::COLUMNS
        );
        sqlx::query_as::<_, DropRow>(&sql)
            .bind(id.0)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(map_sqlx_error)?
            .map(DropRow::into_view)
            .transpose()
    }

    async fn list_drops(
        &self,
        filter: &DropFilter,
        now: Timestamp,
        page: PageRequest,
    ) -> StoreResult<Page<DropView>> {
        let (at, id) = after(&page);
        // The status expression is `Drop::status_at` in SQL.
        let sql = format!(
            "SELECT {} FROM drops d JOIN inventory i ON i.drop_id = d.id \
             WHERE ($1::uuid IS NULL OR d.creator_id = $1) \
               AND ($2::timestamptz IS NULL OR (d.created_at, d.id) < ($2, $3::uuid)) \
               AND ($4::text IS NULL OR $4 = CASE \
                     WHEN d.state = 'cancelled' THEN 'cancelled' \
                     WHEN $5 >= d.ends_at THEN 'ended' \
                     WHEN $5 < d.starts_at THEN 'scheduled' \
                     WHEN i.available = 0 THEN 'sold_out' \
                     ELSE 'live' END) \
             ORDER BY d.created_at DESC, d.id DESC LIMIT $6",
            DropRow::COLUMNS
        );
        let rows = sqlx::query_as::<_, DropRow>(&sql)
            .bind(filter.creator_id.map(|c| c.0))
            .bind(at)
            .bind(id)
            .bind(filter.status.map(|s| s.as_str()))
            .bind(now)
            .bind(overfetch(&page))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(map_sqlx_error)?;
        let items = rows
            .into_iter()
            .map(DropRow::into_view)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, page.limit, |v: &DropView| {
            v.drop.cursor()
        }))
    }

    async fn transition(
        &self,
        id: DropId,
        from: &[DropState],
        to: DropState,
        events: &[Event],
    ) -> StoreResult<bool> {
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let mut tx = self.inner.pool.begin().await.map_err(map_sqlx_error)?;
        let moved = sqlx::query("UPDATE drops SET state = $2 WHERE id = $1 AND state = ANY($3)")
            .bind(id.0)
            .bind(to.as_str())
            .bind(&from)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx_error)?
            .rows_affected()
            == 1;
        if moved {
            append_events(&mut tx, events).await?;
            tx.commit().await.map_err(map_sqlx_error)?;
        } else {
            tx.rollback().await.map_err(map_sqlx_error)?;
        }
        Ok(moved)
    }

    async fn due_transitions(&self, now: Timestamp, limit: u32) -> StoreResult<Vec<model::Drop>> {
        // One indexed scan per lagging state, merged; each side picks by the merged
        // order (start, then id), so a short `limit` keeps the same drops every store does.
        let sql = format!(
            "SELECT {cols} FROM drops d JOIN inventory i ON i.drop_id = d.id \
             WHERE d.id IN ( \
                 (SELECT id FROM drops WHERE state = 'scheduled' AND starts_at <= $1 \
                  ORDER BY starts_at, id LIMIT $2) \
                 UNION ALL \
                 (SELECT id FROM drops WHERE state = 'live' AND ends_at <= $1 \
                  ORDER BY starts_at, id LIMIT $2)) \
             ORDER BY d.starts_at, d.id LIMIT $2",
            cols = DropRow::COLUMNS
        );
        let rows = sqlx::query_as::<_, DropRow>(&sql)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(map_sqlx_error)?;
        rows.iter().map(DropRow::to_drop).collect()
    }
}

#[async_trait]
impl InventoryRepository for PgStore {
    async fn stock(&self, drop: DropId) -> StoreResult<Option<Stock>> {
        let sql = format!(
            "SELECT {} FROM inventory WHERE drop_id = $1",
            StockRow::COLUMNS
        );
        sqlx::query_as::<_, StockRow>(&sql)
            .bind(drop.0)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(map_sqlx_error)?
            .map(|r| r.stock())
            .transpose()
    }

    async fn adjust(&self, adjustment: &Adjustment) -> StoreResult<AdjustOutcome> {
        let mut tx = self.inner.pool.begin().await.map_err(map_sqlx_error)?;
        let sql = format!(
            "SELECT {} FROM inventory WHERE drop_id = $1 FOR UPDATE",
            StockRow::COLUMNS
        );
        let Some(row) = sqlx::query_as::<_, StockRow>(&sql)
            .bind(adjustment.drop_id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_sqlx_error)?
        else {
            tx.rollback().await.map_err(map_sqlx_error)?;
            return Ok(AdjustOutcome::DropNotFound);
        };
        let before = row.stock()?;
        if let Some(refusal) = crate::sql::restock_overflow(adjustment, row.total_stock) {
            tx.rollback().await.map_err(map_sqlx_error)?;
            return Err(refusal);
        }
        if adjustment.delta < 0 && row.available < -adjustment.delta {
            tx.rollback().await.map_err(map_sqlx_error)?;
            return Ok(AdjustOutcome::Insufficient {
                available: before.available,
            });
        }
        let sql = format!(
            "UPDATE inventory SET total_stock = total_stock + $2, available = available + $2, \
                 version = version + 1 \
             WHERE drop_id = $1 RETURNING {}",
            StockRow::COLUMNS
        );
        let after_row = sqlx::query_as::<_, StockRow>(&sql)
            .bind(adjustment.drop_id.0)
            .bind(adjustment.delta)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_sqlx_error)?;
        let after = after_row.stock()?;
        let kind = if adjustment.delta >= 0 {
            LedgerKind::Restock
        } else {
            LedgerKind::Shrink
        };
        let entry = LedgerEntry {
            id: adjustment.entry_id,
            drop_id: adjustment.drop_id,
            kind,
            delta: adjustment.delta,
            reason: adjustment.reason.clone(),
            actor_id: adjustment.actor_id,
            stock_after: after,
            created_at: adjustment.at,
        };
        sqlx::query(
            "INSERT INTO inventory_ledger (id, drop_id, kind, delta, reason, actor_id, total, \
                                           available, reserved, sold, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(entry.id)
        .bind(entry.drop_id.0)
        .bind(kind.as_str())
        .bind(entry.delta)
        .bind(&entry.reason)
        .bind(entry.actor_id.map(|a| a.0))
        .bind(after_row.total_stock)
        .bind(after_row.available)
        .bind(after_row.reserved)
        .bind(after_row.sold)
        .bind(entry.created_at)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx_error)?;
        let events = Event::stock_moved(
            adjustment.drop_id.0,
            &before,
            &after,
            after_row.version,
            adjustment.at,
        );
        append_events(&mut tx, &events).await?;
        tx.commit().await.map_err(map_sqlx_error)?;
        Ok(AdjustOutcome::Applied(entry))
    }

    async fn ledger(&self, drop: DropId, page: PageRequest) -> StoreResult<Page<LedgerEntry>> {
        let (at, id) = after(&page);
        let sql = format!(
            "SELECT {} FROM inventory_ledger \
             WHERE drop_id = $1 \
               AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid)) \
             ORDER BY created_at DESC, id DESC LIMIT $4",
            LedgerRow::COLUMNS
        );
        let rows = sqlx::query_as::<_, LedgerRow>(&sql)
            .bind(drop.0)
            .bind(at)
            .bind(id)
            .bind(overfetch(&page))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(map_sqlx_error)?;
        let items = rows
            .into_iter()
            .map(LedgerRow::into_entry)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, page.limit, LedgerEntry::cursor))
    }
}
