//! The deterministic simulator in the test command.

use livedrop_adapters::sim::{run, SimConfig};

#[test]
fn explore() {
    let config = SimConfig::default();
    let t = std::time::Instant::now();
    let n: u64 = std::env::var("N").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    std::thread::scope(|s| {
        for w in 0..2u64 {
            let config = &config;
            s.spawn(move || {
                let mut seed = w;
                while seed < n {
                    let report = run(seed, config);
                    if !report.known.is_empty() || !report.violations.is_empty() {
                        let mut classes: Vec<_> = report.violations.iter().map(|v| (v.check, v.class)).collect();
                        classes.dedup();
                        println!("seed {seed}: {classes:?}");
                    }
                    seed += 2;
                }
            });
        }
    });
    println!("{:?}", t.elapsed());
}
