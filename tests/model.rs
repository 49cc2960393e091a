//! Property test: random sequences of operations run against the services on the
//! in-memory adapters and against a plain reference model. After every step the
//! stock invariant holds, nothing is negative, the per-user limit holds, every
//! replayed key returns its first result, and the services agree with the model.

#![allow(clippy::unwrap_used)]

mod common;

use common::model::{op, run, starts};
use common::World;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    #[test]
    fn services_match_the_reference_model(
        stocks in prop::array::uniform2(1u32..12),
        limits in prop::array::uniform2(prop::option::weighted(0.8, 1u32..5)),
        starts in starts(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run(World::new(), stocks, limits, starts, ops))?;
    }
}
