//! The reference-model property test of `model.rs`, on the PostgreSQL store under
//! both reserve strategies: the same random operation sequences (bursts of orders in
//! flight at once included, so group reserve's batches are model-checked), fewer
//! cases than in memory (each case migrates a fresh schema).

#![allow(clippy::unwrap_used)]

mod common;

use common::model::{case, run, Case};
use common::World;
use livedrop::adapters::postgres::ReserveStrategy;
use proptest::prelude::*;

fn check(strategy: ReserveStrategy, case: Case) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        match World::postgres_with(strategy).await {
            Some(world) => run(world, case).await,
            None => Ok(()),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn postgres_row_lock_matches_the_reference_model(case in case()) {
        check(ReserveStrategy::RowLock, case)?;
    }

    #[test]
    fn postgres_group_reserve_matches_the_reference_model(case in case()) {
        check(ReserveStrategy::group(), case)?;
    }
}
