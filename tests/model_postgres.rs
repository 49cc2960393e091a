//! The reference-model property test of `model.rs`, on the PostgreSQL store under
//! both reserve strategies: the same random operation sequences (bursts of orders in
//! flight at once included, so group reserve's batches are model-checked), fewer
//! cases than in memory (each case migrates a fresh schema).

#![allow(clippy::unwrap_used)]

mod common;

use common::model::{op, run, starts};
use common::World;
use livedrop::adapters::postgres::ReserveStrategy;
use proptest::prelude::*;

fn check(
    strategy: ReserveStrategy,
    stocks: [u32; 2],
    limits: [Option<u32>; 2],
    starts: [Option<i64>; 2],
    ops: Vec<common::model::Op>,
) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        match World::postgres_with(strategy).await {
            Some(world) => run(world, stocks, limits, starts, ops).await,
            None => Ok(()),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn postgres_row_lock_matches_the_reference_model(
        stocks in prop::array::uniform2(1u32..12),
        limits in prop::array::uniform2(prop::option::weighted(0.8, 1u32..5)),
        starts in starts(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        check(ReserveStrategy::RowLock, stocks, limits, starts, ops)?;
    }

    #[test]
    fn postgres_group_reserve_matches_the_reference_model(
        stocks in prop::array::uniform2(1u32..12),
        limits in prop::array::uniform2(prop::option::weighted(0.8, 1u32..5)),
        starts in starts(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        check(ReserveStrategy::group(), stocks, limits, starts, ops)?;
    }
}
