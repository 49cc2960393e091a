// Run: cargo run --example simulate --features sim -- --seeds 200
//
//! A simulation campaign: runs the deterministic simulator (`livedrop_adapters::sim`)
//! over many seeds and reports every seed that breaks a guarantee, with the one
//! command that replays it.
//!
//! ```text
//! cargo run --example simulate --features sim -- --seed 1234 --steps 200
//! cargo run --release --example simulate --features sim -- --seeds 10000 --tolerate all
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use livedrop::adapters::sim::{run, KnownIssue, Report, SimConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Switch {
    On,
    Off,
}

#[derive(Debug, Parser)]
#[command(about = "Deterministic simulation campaign for livedrop")]
struct Args {
    /// First seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How many seeds, from --seed on.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Workload steps per seed.
    #[arg(long, default_value_t = 200)]
    steps: u32,
    /// Server processes per run.
    #[arg(long, default_value_t = 3)]
    processes: usize,
    /// Inject faults (rates drawn from each seed).
    #[arg(long, value_enum, default_value_t = Switch::On)]
    faults: Switch,
    /// Known bug classes not to count as failures: `all`, `none`, or a comma list of
    /// single-flight-leak, ambiguous-retry, shutdown-commits-unhandled,
    /// no-shared-broker, idempotency-claim-lost.
    #[arg(long, default_value = "none")]
    tolerate: String,
    /// Worker threads (each seed runs on its own single-threaded runtime).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Print every seed's report, not only failing ones.
    #[arg(long)]
    verbose: bool,
}

fn parse_tolerate(s: &str) -> anyhow::Result<Vec<KnownIssue>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "all" => out.extend(KnownIssue::ALL),
            "none" => {}
            other => match KnownIssue::parse(other) {
                Some(class) => out.push(class),
                None => anyhow::bail!("unknown class {other:?}"),
            },
        }
    }
    Ok(out)
}

fn repro(args: &Args, seed: u64) -> String {
    format!(
        "cargo run --example simulate --features sim -- --seed {seed} --steps {} --processes {} --faults {} --tolerate {}",
        args.steps,
        args.processes,
        if args.faults == Switch::On { "on" } else { "off" },
        args.tolerate
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = SimConfig {
        steps: args.steps,
        processes: args.processes.max(1),
        faults: args.faults == Switch::On,
        tolerate: parse_tolerate(&args.tolerate)?,
        deployment: None,
    };
    let bar = ProgressBar::new(args.seeds);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} seeds {elapsed_precise} eta {eta} {msg}",
    )?);
    // Progress goes to the terminal; without one, reports still reach stdout.
    let say = |line: String| {
        if bar.is_hidden() {
            println!("{line}");
        } else {
            bar.println(line);
        }
    };
    let next = AtomicU64::new(0);
    let failed = Mutex::new(Vec::<Report>::new());
    let (steps, requests, virtual_secs) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..args.threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= args.seeds {
                    return;
                }
                let report = run(args.seed + i, &config);
                steps.fetch_add(u64::from(report.steps), Ordering::Relaxed);
                requests.fetch_add(report.requests, Ordering::Relaxed);
                virtual_secs.fetch_add(report.virtual_time.as_secs(), Ordering::Relaxed);
                if args.verbose {
                    say(report.to_string());
                }
                if !report.passed() {
                    if !args.verbose {
                        say(report.to_string());
                    }
                    say(format!("replay: {}", repro(&args, report.seed)));
                    failed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(report);
                }
                bar.inc(1);
                let f = failed.lock().unwrap_or_else(|p| p.into_inner()).len();
                bar.set_message(format!("{f} failed"));
            });
        }
    });
    bar.finish();
    let wall = started.elapsed().as_secs_f64();
    let steps = steps.into_inner();
    let failed = failed.into_inner().unwrap_or_else(|p| p.into_inner());
    println!(
        "{} seeds x {} steps in {wall:.1} s on {} thread(s): {:.0} simulated steps/s, {:.0} seeds/min, {} requests, {} s of virtual time",
        args.seeds,
        args.steps,
        args.threads.max(1),
        steps as f64 / wall,
        args.seeds as f64 * 60.0 / wall,
        requests.into_inner(),
        virtual_secs.into_inner(),
    );
    if failed.is_empty() {
        println!("every seed passed");
        Ok(())
    } else {
        let mut seeds: Vec<u64> = failed.iter().map(|r| r.seed).collect();
        seeds.sort_unstable();
        println!("{} seed(s) failed: {seeds:?}", seeds.len());
        println!("replay the first: {}", repro(&args, seeds[0]));
        std::process::exit(1);
    }
}
