//! A fresh PostgreSQL schema per test (feature `testing`): the one way every crate's
//! tests, benchmarks and the simulator's PostgreSQL run get a database of their own.
//!
//! ```no_run
//! # async fn run() {
//! use livedrop_adapters::postgres::testing::TestSchema;
//!
//! // `None` (the test prints why and passes, or fails under LIVEDROP_TEST_REQUIRE=1)
//! // when LIVEDROP_TEST_DATABASE_URL is unset.
//! let Some(schema) = TestSchema::new("my test").await else { return };
//! let store = schema.store().await; // migrated
//! # drop(store);
//! // The schema is dropped with `schema`.
//! # }
//! ```
//!
//! Schemas are named `tc_<unix seconds>_<random>`; each new one first drops those a
//! run left behind more than half an hour ago (a test killed before its `Drop` ran), so
//! [`TestSchema::keep`] is safe for schemas that must outlive their value.

use std::time::Duration;

use livedrop_core::testing::env;
use sqlx::{Connection, PgConnection};

use super::{PgOptions, PgStore};

/// How old a `tc_` schema must be before a new test drops it as left behind.
const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

/// A schema of its own for one test, on the test database; dropped (best effort)
/// when the value is.
#[derive(Debug)]
pub struct TestSchema {
    url: String,
    name: String,
    keep: bool,
}

impl TestSchema {
    /// A fresh schema on `LIVEDROP_TEST_DATABASE_URL`, or `None` when it is unset
    /// (`test` says what skipped, see [`env::service_var`]). A database that is set
    /// but unreachable fails the test.
    pub async fn new(test: &str) -> Option<Self> {
        let url = env::service_var(env::DATABASE_URL, test)?;
        Some(Self::on(&url).await)
    }

    /// A fresh schema on the database at `url` (not created until a store connects:
    /// [`TestSchema::connect`] creates it). Drops the `tc_` schemas left behind.
    pub async fn on(url: &str) -> Self {
        let secs = chrono::Utc::now().timestamp();
        let mut conn = PgConnection::connect(url).await.unwrap_or_else(|e| {
            panic!(
                "{} is set but PostgreSQL is unreachable: {e}",
                env::DATABASE_URL
            )
        });
        let stale: Vec<String> = sqlx::query_scalar(
            "SELECT nspname::text FROM pg_namespace WHERE nspname ~ '^tc_[0-9]+_' \
             AND split_part(nspname, '_', 2)::int8 < $1",
        )
        .bind(secs - STALE_AFTER.as_secs() as i64)
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
        for schema in stale {
            // Another run may be dropping it too.
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .execute(&mut conn)
                .await;
        }
        let _ = conn.close().await;
        Self {
            url: url.to_owned(),
            name: format!(
                "tc_{secs}_{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            ),
            keep: false,
        }
    }

    /// The schema's name: letters, digits and `_`, usable as a Redis namespace, a
    /// topic prefix or an `application_name` too.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// [`PgOptions`] on this schema: 4 connections, a 30 s acquire timeout (tests
    /// share one database server), the default strategy.
    pub fn options(&self) -> PgOptions {
        PgOptions {
            max_connections: 4,
            acquire_timeout: Duration::from_secs(30),
            schema: Some(self.name.clone()),
            ..PgOptions::default()
        }
    }

    /// A store on this schema with `options` (whose schema is replaced by this
    /// one), creating the schema; not migrated. Another call stands in for another
    /// process.
    pub async fn connect(&self, options: PgOptions) -> PgStore {
        let options = PgOptions {
            schema: Some(self.name.clone()),
            ..options
        };
        PgStore::connect(&self.url, options)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{} is set but the database is unusable: {e:?}",
                    env::DATABASE_URL
                )
            })
    }

    /// A migrated store on this schema with [`TestSchema::options`].
    pub async fn store(&self) -> PgStore {
        let store = self.connect(self.options()).await;
        store.migrate().await.expect("the migrations apply");
        store
    }

    /// A plain connection whose `search_path` is this schema.
    pub async fn conn(&self) -> PgConnection {
        let mut conn = PgConnection::connect(&self.url)
            .await
            .expect("PostgreSQL answers");
        sqlx::query(&format!("SET search_path TO \"{}\"", self.name))
            .execute(&mut conn)
            .await
            .expect("search_path is set");
        conn
    }

    /// Leaves the schema in place when the value is dropped (a later test drops it
    /// once it is stale): for a store that outlives this value, such as the one a
    /// conformance factory returns.
    pub fn keep(mut self) -> String {
        self.keep = true;
        std::mem::take(&mut self.name)
    }
}

impl Drop for TestSchema {
    /// Drops the schema on a thread of its own (with its own runtime, so it works
    /// inside and outside one), waiting at most 5 s for locks: a connection a
    /// panicking test left mid-transaction must not hang the drop; the schema is
    /// then left for a later sweep.
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let (url, name) = (self.url.clone(), self.name.clone());
        let dropping = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(mut conn) = PgConnection::connect(&url).await else {
                    return;
                };
                let _ = sqlx::query("SET lock_timeout = '5s'")
                    .execute(&mut conn)
                    .await;
                let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                    .execute(&mut conn)
                    .await;
                let _ = conn.close().await;
            });
        });
        let _ = dropping.join();
    }
}

/// The raw ceiling of group reserve on one drop: `orders` (each for one unit of a
/// variant of `drop`, under keys not used before) written in batches of `batch`,
/// one after another, each in a transaction of its own holding nothing but the
/// statement a batch transaction writes with (stock rows, order rows, their events,
/// their idempotency keys). No lock, no read, no combiner; the writes are prepared
/// before each transaction starts and not timed. What PostgreSQL costs for the
/// writes alone, for benchmarks beside [`PgStore::batch_profile`]: the answer
/// counts the `Begin`, `Write` and `Commit` steps only.
pub async fn raw_batches(
    store: &PgStore,
    drop: &livedrop_core::model::Drop,
    orders: &[livedrop_core::model::Order],
    batch: usize,
    now: livedrop_core::Timestamp,
) -> livedrop_core::StoreResult<super::BatchProfile> {
    use crate::sql::{self, BatchStep, BatchSteps, Combiners, Placement};

    let profile = Combiners::default();
    let mut skus: Vec<&str> = orders.iter().map(|o| o.sku.as_str()).collect();
    skus.sort_unstable();
    skus.dedup();
    let mut stock = {
        let mut conn = store
            .inner
            .pool
            .acquire()
            .await
            .map_err(super::map_sqlx_error)?;
        super::orders::variant_rows(&mut conn, drop.id.0, &skus).await?
    };
    for chunk in orders.chunks(batch.max(1)) {
        let placements: Vec<Placement> = chunk
            .iter()
            .map(|o| Placement {
                order: o.clone(),
                now,
            })
            .collect();
        let decision = sql::decide_batch(
            drop,
            stock.clone(),
            Default::default(),
            Default::default(),
            Default::default(),
            &placements,
        )?;
        for row in &decision.stock {
            stock.insert(row.sku.clone(), row.stock);
        }
        let mut steps = BatchSteps::start();
        let mut tx = store.inner.write().await?;
        steps.done(BatchStep::Begin);
        super::group::write_batch(&mut tx, drop.id, &decision).await?;
        steps.done(BatchStep::Write);
        store.inner.commit(tx, true).await?;
        steps.done(BatchStep::Commit);
        profile.record(chunk.len(), &steps);
    }
    Ok(profile.profile())
}
