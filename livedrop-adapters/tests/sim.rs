//! The deterministic simulator in the test command.

use livedrop_adapters::sim::{run, SimConfig};

#[test]
fn explore() {
    let config = SimConfig::default();
    let t = std::time::Instant::now();
    for seed in 0..20 {
        let report = run(seed, &config);
        println!("{report}");
    }
    println!("{:?}", t.elapsed());
}
