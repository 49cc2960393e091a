//! The reference-model property test of `model.rs`, on the PostgreSQL store: the same
//! random operation sequences, fewer cases (each case migrates a fresh schema).

#![allow(clippy::unwrap_used)]

mod common;

use common::model::{op, run};
use common::World;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn postgres_matches_the_reference_model(
        stocks in prop::array::uniform2(1u32..12),
        limits in prop::array::uniform2(1u32..5),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async {
            match World::postgres().await {
                Some(world) => run(world, stocks, limits, ops).await,
                None => Ok(()),
            }
        })?;
    }
}
