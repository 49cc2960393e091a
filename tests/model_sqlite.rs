//! The reference-model property test of `model.rs`, on the SQLite store: the same
//! random operation sequences, each case on a fresh migrated database file.

#![allow(clippy::unwrap_used)]

mod common;

use common::model::{case, run};
use common::World;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_matches_the_reference_model(case in case()) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async { run(World::sqlite().await, case).await })?;
    }
}
