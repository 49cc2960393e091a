//! The PostgreSQL store (sqlx): every repository port of livedrop over one database.
//!
//! [`PgStore`] implements [`UserRepository`](livedrop_core::ports::UserRepository),
//! [`ProductRepository`](livedrop_core::ports::ProductRepository),
//! [`DropRepository`](livedrop_core::ports::DropRepository),
//! [`InventoryRepository`](livedrop_core::ports::InventoryRepository),
//! [`OrderRepository`](livedrop_core::ports::OrderRepository),
//! [`WaitlistRepository`](livedrop_core::ports::WaitlistRepository),
//! [`IdempotencyStore`](livedrop_core::ports::IdempotencyStore),
//! [`NotificationRepository`](livedrop_core::ports::NotificationRepository) and
//! [`Outbox`](livedrop_core::ports::Outbox), so
//! `Ports::from_store(Arc::new(store), cache, bus, clock)` wires it in one line.
//!
//! Guarantees, each enforced by the database so they hold across processes:
//!
//! - the stock invariant is a set of `CHECK` constraints on each variant's
//!   `inventory` row (one row per variant, so buyers of different sizes never queue
//!   on one row lock);
//! - every reservation decides under its buyer's lock (a transaction-scoped advisory
//!   lock on the (drop, buyer) pair: one buyer's orders for several sizes, from any
//!   number of processes, never pass the per-user limit together) and the row locks
//!   of the variants it orders, taken in sku order; see [`ReserveStrategy`];
//! - units that come back (a cancel, an expired hold, a restock) go to the variant's
//!   waitlist in the same transaction, under the waiting buyers' locks;
//! - every write appends its events to the `outbox` table in the same transaction;
//! - only one process at a time relays the outbox (a session advisory lock), so
//!   per-aggregate order survives several relays.
//!
//! ```no_run
//! # async fn run() -> Result<(), livedrop_core::StoreError> {
//! use livedrop_adapters::postgres::{PgOptions, PgStore, ReserveStrategy};
//!
//! let store = PgStore::connect("postgres://postgres@127.0.0.1/livedrop", PgOptions::default())
//!     .await?
//!     .with_strategy(ReserveStrategy::group());
//! store.migrate().await?;
//! # Ok(()) }
//! ```

mod catalog;
mod dialect;
mod error;
mod group;
mod orders;
mod outbox;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;
use std::time::Duration;

use livedrop_core::{StoreError, StoreResult};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection, Postgres, Transaction};
use tokio::sync::OnceCell;

pub use crate::sql::{BatchProfile, BatchStep};
pub use error::map_sqlx_error;

/// How `place_order` takes stock on a drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReserveStrategy {
    /// The baseline: one transaction per order that takes its buyer's lock, locks
    /// its variant's inventory row (`SELECT … FOR UPDATE`), decides, writes the
    /// order and its events, commits.
    RowLock,
    /// Group reserve: concurrent orders for the same drop in this process are queued
    /// to one combiner task per drop, which takes up to `max_batch` of them, takes
    /// their buyers' locks and the rows of the variants they order once (in sorted
    /// order), decides each in arrival order (duplicate key, variant, liveness,
    /// per-user limit, stock), writes every order row and outbox event with multi-row
    /// inserts, commits once and answers each caller. Same guarantees as
    /// [`RowLock`](Self::RowLock), one commit per batch instead of per order.
    Group {
        /// The most orders decided in one transaction.
        max_batch: usize,
        /// The most batches of one drop in flight at once. With two, the next
        /// batch takes its connection, its buyers' locks and its reads while the
        /// one ahead holds the variant rows, and queues on the rows right behind
        /// it; batches still lock the rows in the order they formed. That hides
        /// round trips to a distant database; with the database on the same few
        /// cores it splits the queue into smaller batches and costs more than it
        /// hides (BENCHMARKS.md), hence the default of one.
        in_flight: usize,
    },
}

impl ReserveStrategy {
    /// [`ReserveStrategy::Group`] with batches of up to 256 orders, one in flight.
    pub fn group() -> Self {
        ReserveStrategy::Group {
            max_batch: 256,
            in_flight: 1,
        }
    }
}

impl Default for ReserveStrategy {
    fn default() -> Self {
        ReserveStrategy::group()
    }
}

/// Connection settings of [`PgStore::connect`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Most pooled connections (default 10).
    pub max_connections: u32,
    /// How long a query waits for a pooled connection before the store reports the
    /// database unavailable (default 5 s).
    pub acquire_timeout: Duration,
    /// A schema to create (if missing) and put first on every connection's
    /// `search_path`, isolating this store's tables; `None` uses the server's default.
    /// Letters, digits and `_` only.
    pub schema: Option<String>,
    /// The reservation strategy (default [`ReserveStrategy::group`]).
    pub strategy: ReserveStrategy,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            schema: None,
            strategy: ReserveStrategy::default(),
        }
    }
}

/// Every repository port over PostgreSQL. Cheap to clone (shares one pool).
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("strategy", &self.inner.strategy)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) pool: PgPool,
    pub(crate) strategy: ReserveStrategy,
    /// The schema the tables live in, read once from the pool.
    schema: OnceCell<String>,
    /// The connection holding the relay's session advisory lock, when this process
    /// is the relay.
    relay: tokio::sync::Mutex<Option<outbox::RelaySession>>,
    /// The LISTEN connection of `wait_for_append`.
    listener: tokio::sync::Mutex<Option<PgListener>>,
    /// One combiner queue per drop with orders in flight (group strategy).
    pub(crate) combiners: crate::sql::Combiners,
}

impl PgStore {
    /// Order combiner queues registered now (group strategy): one per drop with
    /// orders in flight, none once every combiner has gone idle and retired. For
    /// diagnostics and the simulator's leftover check.
    pub fn combiner_queues(&self) -> usize {
        self.inner.combiners.len()
    }

    /// Where this store's group-reserve batch transactions spent their time so far,
    /// by step (see [`BatchProfile::since`] for an interval).
    pub fn batch_profile(&self) -> BatchProfile {
        self.inner.combiners.profile()
    }

    /// Connects a pool to `url` with `options`, creating `options.schema` if set.
    /// Does not migrate; call [`PgStore::migrate`].
    pub async fn connect(url: &str, options: PgOptions) -> StoreResult<Self> {
        let mut connect: PgConnectOptions = url.parse().map_err(map_sqlx_error)?;
        // Name the connections so operators can find them in pg_stat_activity; a
        // name given in the URL wins.
        if connect.get_application_name().is_none() {
            connect = connect.application_name("livedrop");
        }
        if let Some(schema) = &options.schema {
            if schema.is_empty()
                || !schema
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(StoreError::backend(format!(
                    "schema name {schema:?} must be letters, digits and '_'"
                )));
            }
            let mut conn = PgConnection::connect_with(&connect)
                .await
                .map_err(map_sqlx_error)?;
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                .execute(&mut conn)
                .await
                .map_err(map_sqlx_error)?;
            conn.close().await.map_err(map_sqlx_error)?;
            connect = connect.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(map_sqlx_error)?;
        Ok(Self::from_pool(pool).with_strategy(options.strategy))
    }

    /// A store over an existing pool (its connections' `search_path` decides the
    /// schema), with the default strategy.
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                strategy: ReserveStrategy::default(),
                schema: OnceCell::new(),
                relay: tokio::sync::Mutex::new(None),
                listener: tokio::sync::Mutex::new(None),
                combiners: Default::default(),
            }),
        }
    }

    /// The same pool with another reservation strategy (a new store: relay and
    /// listener connections are not shared).
    pub fn with_strategy(self, strategy: ReserveStrategy) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool: self.inner.pool.clone(),
                strategy,
                schema: OnceCell::new(),
                relay: tokio::sync::Mutex::new(None),
                listener: tokio::sync::Mutex::new(None),
                combiners: Default::default(),
            }),
        }
    }

    /// The reservation strategy in use.
    pub fn strategy(&self) -> ReserveStrategy {
        self.inner.strategy
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Applies the embedded migrations (`livedrop-adapters/migrations`) to the
    /// connections' schema. Safe to run from several processes at once.
    pub async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations")
            .run(&self.inner.pool)
            .await
            .map_err(|e| crate::sql::migrate_error(e, map_sqlx_error))
    }

    /// Whether the database answers (for readiness checks).
    pub async fn ping(&self) -> StoreResult<()> {
        crate::sql::ping(self.inner.reader(), map_sqlx_error).await
    }

    /// Gives up the relay lock and the listener and closes the pool; later calls fail
    /// as unavailable.
    pub async fn close(&self) {
        if let Some(session) = self.inner.relay.lock().await.take() {
            session.close().await;
        }
        self.inner.listener.lock().await.take();
        self.inner.pool.close().await;
    }
}

impl Inner {
    /// Where reads go: the pool.
    pub(crate) fn reader(&self) -> &PgPool {
        &self.pool
    }

    /// Where a write of one statement goes: the pool.
    pub(crate) fn writer(&self) -> &PgPool {
        &self.pool
    }

    /// Batches of one drop in flight at once ([`ReserveStrategy::Group`]).
    pub(crate) fn batches_in_flight(&self) -> usize {
        match self.strategy {
            ReserveStrategy::Group { in_flight, .. } => in_flight,
            ReserveStrategy::RowLock => 1,
        }
    }

    /// A write transaction. Dropped without commit, it rolls back.
    pub(crate) async fn write(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(map_sqlx_error)
    }

    /// Commits `tx`. Whether it appended events to the outbox does not matter
    /// here: the outbox trigger notifies listeners on commit.
    pub(crate) async fn commit(
        &self,
        tx: Transaction<'static, Postgres>,
        _appended: bool,
    ) -> StoreResult<()> {
        tx.commit().await.map_err(map_sqlx_error)
    }

    /// The schema the store's tables live in.
    pub(crate) async fn schema(&self) -> StoreResult<&str> {
        self.schema
            .get_or_try_init(|| async {
                sqlx::query_scalar::<_, String>("SELECT current_schema()::text")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(map_sqlx_error)
            })
            .await
            .map(String::as_str)
    }
}

pub(crate) use crate::sql::to_u32;
