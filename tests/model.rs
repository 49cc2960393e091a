//! Property test: random sequences of operations run against the services on the
//! in-memory adapters and against a plain reference model. After every step the
//! stock invariant holds, nothing is negative, the per-user limit holds, every
//! replayed key returns its first result, and the services agree with the model.

#![allow(clippy::unwrap_used)]

mod common;

use common::model::{case, run};
use common::World;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    #[test]
    fn services_match_the_reference_model(case in case()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run(World::new(), case))?;
    }
}
