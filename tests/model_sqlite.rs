//! The reference-model property test of `model.rs`, on the SQLite store: the same
//! random operation sequences, each case on a fresh migrated database file.

#![allow(clippy::unwrap_used)]

mod common;

use common::model::{op, run, starts};
use common::World;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_matches_the_reference_model(
        stocks in prop::array::uniform2(1u32..12),
        limits in prop::array::uniform2(prop::option::weighted(0.8, 1u32..5)),
        starts in starts(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async { run(World::sqlite().await, stocks, limits, starts, ops).await })?;
    }
}
