//! The SQLite store (sqlx): every repository port of livedrop in one database file,
//! for a server that runs alone and keeps its data with zero set-up.
//!
//! [`SqliteStore`] implements the same ports as the PostgreSQL store (`PgStore`),
//! with the same guarantees, so
//! `Ports::from_store(Arc::new(store), cache, bus, clock)` wires it in one line:
//!
//! - the stock invariant is a set of `CHECK` constraints on each variant's
//!   `inventory` row;
//! - every write is one `BEGIN IMMEDIATE` transaction on the store's single writer
//!   connection, so each decision (stock, per-user limit, idempotency key, expiry)
//!   reads and writes with the database's write lock held (so one buyer's orders
//!   for several variants never pass the per-user limit together, and units that
//!   come back go to the variant's waitlist in the same transaction);
//! - every write appends its events to the `outbox` table in the same transaction,
//!   and wakes the relay in process once committed;
//! - the file runs in WAL mode (readers never wait for the writer) with a busy
//!   timeout, and `synchronous = FULL` by default, so an answered write survives a
//!   crash of the process or of the machine;
//! - a hot drop's concurrent orders are decided in batches, one transaction (one
//!   commit) per batch, see [`SqliteOptions::max_batch`].
//!
//! SQLite is one node: the store holds an exclusive lock on a sidecar file
//! (`<database>.lock`) for as long as it is open, and a second store on the same file,
//! in this process or another, is refused as [`StoreError::Unavailable`] with a
//! sentence saying so. PostgreSQL is the way to several processes.
//!
//! ```no_run
//! # async fn run() -> Result<(), livedrop_core::StoreError> {
//! use livedrop_adapters::sqlite::{SqliteOptions, SqliteStore};
//!
//! let store = SqliteStore::open("./livedrop.db", SqliteOptions::default()).await?;
//! store.migrate().await?;
//! # Ok(()) }
//! ```

mod catalog;
mod dialect;
mod error;
mod lock;
mod orders;
mod outbox;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use livedrop_core::{StoreError, StoreResult};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};
use tokio::sync::Notify;

use crate::sql::rows::Stamp;
use crate::sql::Combiners;

pub use crate::sql::{BatchProfile, BatchStep};
pub use error::map_sqlx_error;

/// Settings of [`SqliteStore::open`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Connections serving reads beside the one writer (default 4). In WAL mode
    /// reads never wait for a write.
    pub readers: u32,
    /// How long a statement waits for SQLite's file lock before failing as busy
    /// (default 5 s). Only another connection to the file can hold it.
    pub busy_timeout: Duration,
    /// How long a write waits for the writer connection before the store reports the
    /// database unavailable (default 30 s).
    pub acquire_timeout: Duration,
    /// Whether each commit is flushed to disk before it is answered (`true`, the
    /// default: `synchronous = FULL`, a commit survives a power cut) or only handed
    /// to the operating system (`synchronous = NORMAL`: survives a crash of the
    /// process, not of the machine).
    pub sync_commits: bool,
    /// The most orders of one drop decided in one transaction (default 256); 1
    /// decides every order in a transaction of its own.
    pub max_batch: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            readers: 4,
            busy_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(30),
            sync_commits: true,
            max_batch: 256,
        }
    }
}

/// Every repository port over one SQLite file. Cheap to clone (shares the pools).
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    /// The database file.
    path: PathBuf,
    /// The one connection every write transaction runs on: SQLite admits one writer
    /// at a time, so writers queue here in process instead of spinning on the file
    /// lock.
    pub(crate) writer: SqlitePool,
    /// Connections for reads outside transactions.
    pub(crate) readers: SqlitePool,
    /// Wakes `wait_for_append` after a commit that appended events.
    appended: Notify,
    /// The most orders decided in one transaction.
    pub(crate) max_batch: usize,
    /// One combiner queue per drop with orders in flight.
    pub(crate) combiners: Combiners,
    /// The exclusive lock on the sidecar lock file, held while the store is open.
    lock: std::sync::Mutex<Option<lock::FileLock>>,
    /// The directory of a [`SqliteStore::temporary`] store, deleted with the store
    /// (declared last: dropped after the pools).
    _temporary: Option<tempfile::TempDir>,
}

impl SqliteStore {
    /// Order combiner queues registered now: one per drop with orders in flight,
    /// none once every combiner has gone idle and retired. For diagnostics and the
    /// simulator's leftover check.
    pub fn combiner_queues(&self) -> usize {
        self.inner.combiners.len()
    }

    /// Where this store's group-reserve batch transactions spent their time so far,
    /// by step (see [`BatchProfile::since`] for an interval).
    pub fn batch_profile(&self) -> BatchProfile {
        self.inner.combiners.profile()
    }

    /// Opens (creating it if missing) the database file at `path`, after taking the
    /// exclusive lock on `<path>.lock`. Does not migrate; call
    /// [`SqliteStore::migrate`].
    pub async fn open(path: impl AsRef<Path>, options: SqliteOptions) -> StoreResult<Self> {
        Self::open_in(path.as_ref().to_path_buf(), options, None).await
    }

    /// A migrated store on a new file in a new temporary directory, both deleted
    /// when the store is dropped: durable semantics for tests and throwaway runs.
    pub async fn temporary(options: SqliteOptions) -> StoreResult<Self> {
        let dir = tempfile::Builder::new()
            .prefix("livedrop-sqlite-")
            .tempdir()
            .map_err(|e| StoreError::unavailable("database", e))?;
        let store = Self::open_in(dir.path().join("livedrop.db"), options, Some(dir)).await?;
        store.migrate().await?;
        Ok(store)
    }

    async fn open_in(
        path: PathBuf,
        options: SqliteOptions,
        temporary: Option<tempfile::TempDir>,
    ) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::unavailable(
                    "database",
                    format!("cannot create the directory {}: {e}", dir.display()),
                )
            })?;
        }
        let lock = lock::FileLock::acquire(&path)?;
        let base = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true)
            .synchronous(if options.sync_commits {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            });
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(options.acquire_timeout)
            // The writer lives as long as the store: reconnecting would only cost.
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(base.clone().journal_mode(SqliteJournalMode::Wal))
            .await
            .map_err(map_sqlx_error)?;
        let readers = SqlitePoolOptions::new()
            .max_connections(options.readers.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(base.pragma("query_only", "ON"))
            .await
            .map_err(map_sqlx_error)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                writer,
                readers,
                appended: Notify::new(),
                // Two parameters per order in a batch's key lookup stay within SQLite's limit.
                max_batch: options.max_batch.clamp(1, 4_096),
                combiners: Combiners::default(),
                lock: std::sync::Mutex::new(Some(lock)),
                _temporary: temporary,
            }),
        })
    }

    /// Opens the file named by a `sqlite://PATH` (or `sqlite:PATH`) URL; see
    /// [`SqliteStore::open`]. Query parameters are not accepted.
    pub async fn open_url(url: &str, options: SqliteOptions) -> StoreResult<Self> {
        Self::open(path_of_url(url)?, options).await
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Applies the embedded migrations (`livedrop-adapters/migrations-sqlite`).
    pub async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations-sqlite")
            .run(&self.inner.writer)
            .await
            .map_err(|e| crate::sql::migrate_error(e, map_sqlx_error))
    }

    /// Whether the database answers (for readiness checks).
    pub async fn ping(&self) -> StoreResult<()> {
        crate::sql::ping(self.inner.reader(), map_sqlx_error).await
    }

    /// Closes the pools (checkpointing the WAL into the file) and releases the file
    /// lock; later calls fail as unavailable.
    pub async fn close(&self) {
        self.inner.readers.close().await;
        self.inner.writer.close().await;
        self.inner
            .lock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}

/// The file a `sqlite://PATH` or `sqlite:PATH` URL names.
pub fn path_of_url(url: &str) -> StoreResult<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::backend(format!("{url:?} is not a sqlite:// URL")))?;
    if rest.is_empty() || rest.contains('?') || rest == ":memory:" {
        return Err(StoreError::backend(format!(
            "{url:?} must name a database file, as in sqlite://./livedrop.db"
        )));
    }
    PathBuf::from_str(rest).map_err(StoreError::backend)
}

impl Inner {
    /// Where reads go: the read-only pool.
    pub(crate) fn reader(&self) -> &SqlitePool {
        &self.readers
    }

    /// Where a write of one statement goes: the writer connection.
    pub(crate) fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// Batches of one drop in flight at once: one, as the one writer holds the
    /// whole database for its transaction.
    pub(crate) fn batches_in_flight(&self) -> usize {
        1
    }

    /// A write transaction: `BEGIN IMMEDIATE` on the writer connection, so the
    /// database's write lock is held from the first statement. Dropped without
    /// commit, it rolls back.
    pub(crate) async fn write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_sqlx_error)
    }

    /// Commits `tx`; `appended` says whether it appended events to the outbox, in
    /// which case relays waiting in `wait_for_append` are woken.
    pub(crate) async fn commit(
        &self,
        tx: Transaction<'static, Sqlite>,
        appended: bool,
    ) -> StoreResult<()> {
        tx.commit().await.map_err(map_sqlx_error)?;
        if appended {
            // Wake every current waiter, and leave a permit for one arriving between
            // its `pending` call and its wait (a spurious wake-up at worst).
            self.appended.notify_waiters();
            self.appended.notify_one();
        }
        Ok(())
    }
}

/// A timestamp as stored: microseconds since the Unix epoch.
pub(crate) fn micros(t: livedrop_core::Timestamp) -> i64 {
    Stamp::stamp(t)
}

/// A stored timestamp.
pub(crate) fn timestamp(micros: i64) -> StoreResult<livedrop_core::Timestamp> {
    micros.time()
}

pub(crate) use crate::sql::to_u32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_files() {
        assert_eq!(
            path_of_url("sqlite://./data/livedrop.db").ok(),
            Some(PathBuf::from("./data/livedrop.db"))
        );
        assert_eq!(
            path_of_url("sqlite:///var/lib/livedrop.db").ok(),
            Some(PathBuf::from("/var/lib/livedrop.db"))
        );
        assert_eq!(path_of_url("sqlite:x.db").ok(), Some(PathBuf::from("x.db")));
        assert!(path_of_url("sqlite://").is_err());
        assert!(path_of_url("sqlite://:memory:").is_err());
        assert!(path_of_url("sqlite://x.db?mode=ro").is_err());
        assert!(path_of_url("postgres://x").is_err());
    }
}
