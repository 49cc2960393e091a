// Run: scripts/bench.sh (which runs this last), or on its own after one:
//   cargo run --release --features postgres,redis --example bench_charts -- \
//     --results target/bench --criterion target/criterion --out docs/bench
//
//! Renders the results of one `scripts/bench.sh` run as SVG charts, and writes every
//! figure it plots to `results.csv` beside them.
//!
//! Reads `run.json` (the command, commit, machine and start time `bench.sh` recorded),
//! criterion's `estimates.json` for the benchmarks measured since that start (older
//! results in `target/criterion` are left out), `fan_out.jsonl` (the fan-out test's
//! `bench-result` lines) and, when present, `rss.jsonl` (`scripts/rss.sh`). Every chart
//! names its command, commit and machine under its plot. SVG only, text left to the
//! viewer's fonts, so nothing here needs a system font. Its own unit tests run with
//! `cargo test --example bench_charts`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::prelude::*;
use serde::Deserialize;
use serde_json::Value;

/// Renders `scripts/bench.sh` results as SVG charts.
#[derive(Debug, Parser)]
#[command(name = "bench_charts")]
struct Args {
    /// Directory with `run.json`, `fan_out.jsonl` and `rss.jsonl`.
    #[arg(long, default_value = "target/bench")]
    results: PathBuf,
    /// Criterion's output directory.
    #[arg(long, default_value = "target/criterion")]
    criterion: PathBuf,
    /// Where the SVGs and `results.csv` go.
    #[arg(long, default_value = "docs/bench")]
    out: PathBuf,
}

/// What `bench.sh` recorded when it started.
#[derive(Debug, Deserialize)]
struct Run {
    command: String,
    commit: String,
    cores: u32,
    mem_gib: u32,
    load: String,
    started_unix: u64,
    started_utc: String,
}

impl Run {
    /// The lines under every chart: the command that measured it, the commit, the
    /// machine.
    fn footer(&self, measured_by: &str) -> [String; 2] {
        [
            format!("Command: {} (runs: {measured_by})", self.command),
            format!(
                "Commit {} · machine: {} cores, {} GiB, load {} at the start · {}",
                self.commit, self.cores, self.mem_gib, self.load, self.started_utc
            ),
        ]
    }
}

/// One line on a chart.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

/// One criterion benchmark: group, function, parameter, and operations per second
/// (from the median time per iteration; every group here counts one element per
/// iteration).
struct Measured {
    group: String,
    function: String,
    param: f64,
    per_second: f64,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn json_lines(path: &Path) -> anyhow::Result<Vec<Value>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("parsing {}", path.display())))
        .collect()
}

/// Criterion results written since `since`: `<group>/<function>/<param>/new/`.
fn criterion_results(root: &Path, since: SystemTime) -> anyhow::Result<Vec<Measured>> {
    let mut found = Vec::new();
    if !root.exists() {
        return Ok(found);
    }
    for group in fs::read_dir(root)? {
        let group = group?.path();
        if !group.is_dir() {
            continue;
        }
        for function in fs::read_dir(&group)? {
            let function = function?.path();
            if !function.is_dir() {
                continue;
            }
            for param in fs::read_dir(&function)? {
                let dir = param?.path().join("new");
                let estimates = dir.join("estimates.json");
                let Ok(meta) = fs::metadata(&estimates) else {
                    continue;
                };
                if meta.modified()? < since {
                    continue;
                }
                let bench: Value = read_json(&dir.join("benchmark.json"))?;
                let est: Value = read_json(&estimates)?;
                let median_ns = est["median"]["point_estimate"]
                    .as_f64()
                    .context("estimates.json without a median")?;
                let text = |v: &Value| v.as_str().map(str::to_owned);
                let (Some(group), Some(function), Some(value)) = (
                    text(&bench["group_id"]),
                    text(&bench["function_id"]),
                    text(&bench["value_str"]),
                ) else {
                    bail!("{}: no group, function or value", dir.display());
                };
                found.push(Measured {
                    group,
                    function,
                    param: value
                        .parse()
                        .with_context(|| format!("parameter {value}"))?,
                    per_second: 1e9 / median_ns,
                });
            }
        }
    }
    Ok(found)
}

/// The lines of `group`, one per function, in `order`, named by `label`.
fn series_of(found: &[Measured], group: &str, order: &[(&str, &str)]) -> Vec<Series> {
    order
        .iter()
        .filter_map(|(function, label)| {
            let mut points: Vec<_> = found
                .iter()
                .filter(|m| m.group == group && m.function == *function)
                .map(|m| (m.param, m.per_second))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (!points.is_empty()).then(|| Series {
                name: (*label).to_owned(),
                points,
            })
        })
        .collect()
}

/// 1234 → "1.2k", 1_500_000 → "1.5M".
fn si(v: f64) -> String {
    let (scaled, unit) = match v.abs() {
        a if a >= 1e9 => (v / 1e9, "G"),
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e3 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    if scaled.abs() >= 100.0 || scaled.fract().abs() < 1e-9 {
        format!("{scaled:.0}{unit}")
    } else {
        format!("{scaled:.1}{unit}")
    }
}

const SIZE: (u32, u32) = (960, 600);
const FOOTER: u32 = 52;

/// How a tick's value is written.
type Label<'a> = &'a dyn Fn(&f64) -> String;

/// An axis: its range, its description, how its ticks are written.
type Axis<'a, R> = (R, &'a str, Label<'a>);

/// Draws `series` over the axes `x` and `y`, with the footer under the plot.
fn draw<X, Y>(
    path: &Path,
    title: &str,
    footer: &[String; 2],
    (x, x_desc, x_fmt): Axis<'_, X>,
    (y, y_desc, y_fmt): Axis<'_, Y>,
    series: &[Series],
    legend: SeriesLabelPosition,
) -> anyhow::Result<()>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (plot, foot) = root.split_vertically(SIZE.1 - FOOTER);
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(x_fmt)
        .y_label_formatter(y_fmt)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(2))
            });
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(legend)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    for (i, line) in footer.iter().enumerate() {
        foot.draw(&Text::new(
            line.clone(),
            (14, 8 + 20 * i as i32),
            ("sans-serif", 13).into_font().color(&BLACK.mix(0.75)),
        ))?;
    }
    root.present()?;
    Ok(())
}

/// The smallest and largest value over all points of `series` on one axis.
fn bounds(series: &[Series], axis: impl Fn(&(f64, f64)) -> f64) -> anyhow::Result<(f64, f64)> {
    let values: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(&axis))
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.is_empty() || !(lo.is_finite() && hi.is_finite()) {
        bail!("no points to plot");
    }
    Ok((lo, hi))
}

/// Throughput against concurrent buyers, both axes logarithmic, ticks at the
/// measured buyer counts.
fn buyers_chart(
    path: &Path,
    title: &str,
    footer: &[String; 2],
    y_desc: &str,
    series: &[Series],
) -> anyhow::Result<()> {
    let (x_lo, x_hi) = bounds(series, |p| p.0)?;
    let (y_lo, y_hi) = bounds(series, |p| p.1)?;
    let mut ticks: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    draw(
        path,
        title,
        footer,
        (
            (x_lo * 0.8..x_hi * 1.25).log_scale().with_key_points(ticks),
            "concurrent buyers (tasks)",
            &|v| format!("{v:.0}"),
        ),
        // A decade of headroom above the highest line keeps the legend off the data.
        ((y_lo / 2.0..y_hi * 10.0).log_scale(), y_desc, &|v| si(*v)),
        series,
        SeriesLabelPosition::UpperRight,
    )
}

/// From `batch_profile` lines (one per buyer count): milliseconds per batch against
/// buyers for the whole group-reserve batch, the time it held the variant rows, its
/// steps before the rows, its wait for the rows, its commit, and the raw ceiling's
/// whole batch and commit.
fn batch_profile_series(lines: &[Value]) -> Vec<Series> {
    let ms = |v: &Value, steps: &[&str]| -> Option<f64> {
        steps
            .iter()
            .map(|s| v["steps"][s]["ms_per_batch"].as_f64())
            .sum()
    };
    type Pick = fn(&Value, &dyn Fn(&Value, &[&str]) -> Option<f64>) -> Option<f64>;
    let lines_of: [(&str, Pick); 7] = [
        ("group reserve: whole batch", |v, _| {
            v["group"]["ms_per_batch"].as_f64()
        }),
        (
            "group reserve: variant rows held (lock to commit)",
            |v, _| v["group"]["rows_held_ms_per_batch"].as_f64(),
        ),
        ("group reserve: begin, buyers' locks, key reads", |v, ms| {
            ms(&v["group"], &["begin", "buyer_locks", "known"])
        }),
        (
            "group reserve: waiting for and locking the rows",
            |v, ms| ms(&v["group"], &["stock_rows"]),
        ),
        ("group reserve: commit", |v, ms| {
            ms(&v["group"], &["commit"])
        }),
        ("raw ceiling: whole batch", |v, _| {
            v["raw_ceiling"]["ms_per_batch"].as_f64()
        }),
        ("raw ceiling: commit", |v, ms| {
            ms(&v["raw_ceiling"], &["commit"])
        }),
    ];
    lines_of
        .iter()
        .filter_map(|(name, pick)| {
            let mut points: Vec<(f64, f64)> = lines
                .iter()
                .filter(|v| v["bench"] == "batch_profile")
                .filter_map(|v| Some((v["buyers"].as_f64()?, pick(v, &ms)?)))
                .filter(|p| p.1 > 0.0)
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (!points.is_empty()).then(|| Series {
                name: (*name).to_owned(),
                points,
            })
        })
        .collect()
}

fn write_csv(path: &Path, rows: &[(String, String, f64, f64)]) -> anyhow::Result<()> {
    let mut csv = String::from("chart,series,x,y\n");
    for (chart, series, x, y) in rows {
        let series = series.replace('"', "\"\"");
        writeln!(csv, "{chart},\"{series}\",{x},{y:.3}")?;
    }
    fs::write(path, csv).with_context(|| format!("writing {}", path.display()))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let run: Run = read_json(&args.results.join("run.json"))?;
    let since = UNIX_EPOCH + Duration::from_secs(run.started_unix);
    let found = criterion_results(&args.criterion, since)?;
    fs::create_dir_all(&args.out)?;
    let mut rows: Vec<(String, String, f64, f64)> = Vec::new();
    let mut charted = |name: &str, series: &[Series]| {
        for s in series {
            for &(x, y) in &s.points {
                rows.push((name.to_owned(), s.name.clone(), x, y));
            }
        }
    };
    let mut written = Vec::new();

    // Every store and strategy on one hot drop.
    let mut all = series_of(
        &found,
        "hot_drop_reserve",
        &[
            ("memory_store", "in memory, store (memory_store)"),
            ("memory_service", "in memory, service (memory_service)"),
        ],
    );
    all.extend(series_of(
        &found,
        "postgres_hot_drop",
        &[
            ("group", "PostgreSQL, group reserve"),
            ("row_lock", "PostgreSQL, row lock"),
        ],
    ));

    // The in-memory lines beside the bare atomic counter.
    let memory = series_of(
        &found,
        "hot_drop_reserve",
        &[
            ("atomic_ceiling", "AtomicI64 ceiling (no store)"),
            ("memory_store", "memory_store (one drop)"),
            ("memory_store_drops", "memory_store_drops (a drop per task)"),
            ("memory_service", "memory_service"),
        ],
    );

    // PostgreSQL: the two strategies, group reserve with two batches in flight, and
    // the raw ceiling of its writes.
    let pg = series_of(
        &found,
        "postgres_hot_drop",
        &[
            (
                "raw_ceiling",
                "raw ceiling: the batches' writes alone, same sizes",
            ),
            ("group", "group reserve (one batch in flight)"),
            (
                "group_two_in_flight",
                "group reserve, two batches in flight",
            ),
            ("row_lock", "row lock (SELECT … FOR UPDATE)"),
        ],
    );

    // A sold-out drop: attempts turned away.
    let gate = series_of(
        &found,
        "sold_out_hot_drop",
        &[
            ("redis_gate", "Redis admission gate"),
            ("postgres_store", "straight to PostgreSQL"),
        ],
    );

    // One chart of each line set against buyers, when the set has results.
    for (name, title, benches, y, series) in [
        (
            "orders_vs_buyers",
            "Orders/s on one hot drop against buyers, per store and strategy",
            "benches/inventory.rs, benches/postgres_hot_drop.rs",
            "orders/s (log)",
            all,
        ),
        (
            "in_memory",
            "In memory: reservations/s on one hot drop against tasks",
            "benches/inventory.rs",
            "reservations/s (log)",
            memory,
        ),
        (
            "postgres_hot_drop",
            "PostgreSQL: orders/s on one hot drop against buyers",
            "benches/postgres_hot_drop.rs",
            "orders/s (log)",
            pg,
        ),
        (
            "sold_out_gate",
            "Sold-out drop: attempts answered per second against buyers",
            "benches/redis_gate.rs",
            "attempts/s (log)",
            gate,
        ),
    ] {
        if series.is_empty() {
            continue;
        }
        buyers_chart(
            &args.out.join(format!("{name}.svg")),
            title,
            &run.footer(benches),
            y,
            &series,
        )?;
        charted(name, &series);
        written.push(name);
    }

    // Group reserve's batch transactions, step by step, beside the raw ceiling's.
    let profile = batch_profile_series(&json_lines(&args.results.join("batch_profile.jsonl"))?);
    if !profile.is_empty() {
        let name = "batch_profile";
        buyers_chart(
            &args.out.join(format!("{name}.svg")),
            "PostgreSQL group reserve: where a batch transaction's time goes",
            &run.footer("benches/postgres_hot_drop.rs (PgStore::batch_profile)"),
            "ms per batch transaction (log)",
            &profile,
        )?;
        charted(name, &profile);
        written.push(name);
    }

    // Fan-out: followers notified against time since the first batch started.
    let mut fan_out: Vec<Series> = json_lines(&args.results.join("fan_out.jsonl"))?
        .iter()
        .filter(|v| v["bench"] == "fan_out" || v["bench"] == "fan_out_service")
        .map(|v| -> anyhow::Result<Series> {
            let followers = v["followers"].as_f64().context("followers")?;
            let service = v["bench"] == "fan_out_service";
            let seconds = if service {
                v["all_seconds"].as_f64().context("all_seconds")?
            } else {
                v["seconds"].as_f64().context("seconds")?
            };
            let mut points = Vec::new();
            for p in v["progress"].as_array().context("progress")? {
                let (Some(n), Some(t)) = (p[0].as_f64(), p[1].as_f64()) else {
                    bail!("a progress point is not [followers, seconds]");
                };
                // Both axes are logarithmic.
                if t > 0.0 && n > 0.0 {
                    points.push((t, n));
                }
            }
            let how = if service {
                ", service, orders on another drop meanwhile"
            } else if v["just_imported"] == true {
                ", store, audience just imported"
            } else {
                ", store"
            };
            Ok(Series {
                name: format!("{} followers{how}: {seconds:.2} s", si(followers)),
                points,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    fan_out.sort_by_key(|s| s.points.len());
    if !fan_out.is_empty() {
        let name = "fan_out";
        let (t_lo, t_hi) = bounds(&fan_out, |p| p.0)?;
        let (n_lo, n_hi) = bounds(&fan_out, |p| p.1)?;
        draw(
            &args.out.join(format!("{name}.svg")),
            "Drop-live fan-out on PostgreSQL: followers notified against time",
            &run.footer(
                "cargo test --release -p livedrop-adapters --features postgres,testing --test postgres fan_out_ -- --ignored",
            ),
            (
                (t_lo * 0.8..t_hi * 1.25).log_scale(),
                "seconds since the fan-out started (log)",
                &|v| format!("{v}"),
            ),
            (
                (n_lo * 0.8..n_hi * 2.0).log_scale(),
                "followers notified (log)",
                &|v| si(*v),
            ),
            &fan_out,
            SeriesLabelPosition::LowerRight,
        )?;
        charted(name, &fan_out);
        written.push(name);
    }

    // HTTP latency percentiles per store, from scripts/rss.sh's load runs.
    let rss = json_lines(&args.results.join("rss.jsonl"))?;
    let percentiles = ["p50_ms", "p95_ms", "p99_ms", "max_ms"];
    let http: Vec<Series> = rss
        .iter()
        .filter_map(|v| {
            let lat = &v["load"]["request_latency"];
            let points: Vec<_> = percentiles
                .iter()
                .enumerate()
                .filter_map(|(i, p)| lat[p].as_f64().map(|ms| (i as f64, ms)))
                .collect();
            let rate = v["load"]["requests_per_s"].as_f64()?;
            (points.len() == percentiles.len()).then(|| Series {
                name: format!(
                    "{} ({} req/s)",
                    v["store"].as_str().unwrap_or("?"),
                    si(rate)
                ),
                points,
            })
        })
        .collect();
    if !http.is_empty() {
        let name = "http_latency";
        let (y_lo, y_hi) = bounds(&http, |p| p.1)?;
        // Ticks fall between the percentiles too; only whole positions get a name.
        let labels = |v: &f64| {
            if (v - v.round()).abs() > 0.01 || *v < -0.01 {
                return String::new();
            }
            percentiles
                .get(v.round() as usize)
                .map(|p| p.trim_end_matches("_ms").to_owned())
                .unwrap_or_default()
        };
        draw(
            &args.out.join(format!("{name}.svg")),
            "HTTP orders on a hot drop: request latency per store (64 in flight)",
            &run.footer(
                "scripts/rss.sh: livedrop-http + examples/loadgen.rs --buyers 200 --concurrency 64 --duration 10",
            ),
            (
                -0.2..3.2,
                "percentile",
                &labels,
            ),
            ((y_lo / 2.0..y_hi * 2.0).log_scale(), "ms (log)", &|v| format!("{v}")),
            &http,
            SeriesLabelPosition::UpperLeft,
        )?;
        charted(name, &http);
        written.push(name);
    }

    // Resident memory over the load run, per store.
    let memory: Vec<Series> = rss
        .iter()
        .filter_map(|v| {
            let points: Vec<_> = v["samples"]
                .as_array()?
                .iter()
                .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()? / 1024.0)))
                .collect();
            let rest = v["rest_kib"].as_f64()? / 1024.0;
            (!points.is_empty()).then(|| Series {
                name: format!(
                    "{} (at rest {rest:.0} MiB)",
                    v["store"].as_str().unwrap_or("?")
                ),
                points,
            })
        })
        .collect();
    if !memory.is_empty() {
        let name = "server_memory";
        let (_, t_hi) = bounds(&memory, |p| p.0)?;
        let (_, m_hi) = bounds(&memory, |p| p.1)?;
        draw(
            &args.out.join(format!("{name}.svg")),
            "Reference server's resident memory (VmRSS) during a load run",
            &run.footer(
                "scripts/rss.sh: loadgen set-up (201 registrations), then 10 s of orders, 64 in flight",
            ),
            (0.0..t_hi * 1.02, "seconds since the load generator started", &|v| {
                format!("{v:.0}")
            }),
            (0.0..m_hi * 1.08, "VmRSS, MiB", &|v| format!("{v:.0}")),
            &memory,
            SeriesLabelPosition::UpperLeft,
        )?;
        charted(name, &memory);
        written.push(name);
    }

    if written.is_empty() {
        bail!(
            "no results since {} in {} or {}",
            run.started_utc,
            args.criterion.display(),
            args.results.display()
        );
    }
    write_csv(&args.out.join("results.csv"), &rows)?;
    for name in written {
        println!("{}", args.out.join(format!("{name}.svg")).display());
    }
    println!("{}", args.out.join("results.csv").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_rounds_to_a_unit() {
        assert_eq!(si(532.4), "532");
        assert_eq!(si(6_101.9), "6.1k");
        assert_eq!(si(180_076.0), "180k");
        assert_eq!(si(210_328_659.0), "210M");
        assert_eq!(si(2_000_000.0), "2M");
    }

    fn write_result(root: &Path, function: &str, param: u32, median_ns: f64) {
        let dir = root
            .join("g")
            .join(function)
            .join(param.to_string())
            .join("new");
        fs::create_dir_all(&dir).expect("dir");
        let bench = serde_json::json!({
            "group_id": "postgres_hot_drop", "function_id": function, "value_str": param.to_string(),
        });
        fs::write(dir.join("benchmark.json"), bench.to_string()).expect("benchmark.json");
        let est = serde_json::json!({"median": {"point_estimate": median_ns}});
        fs::write(dir.join("estimates.json"), est.to_string()).expect("estimates.json");
    }

    #[test]
    fn criterion_results_become_lines_per_function_sorted_by_buyers() {
        let root = tempfile::tempdir().expect("tempdir");
        write_result(root.path(), "group", 64, 250_000.0);
        write_result(root.path(), "group", 1, 2_500_000.0);
        write_result(root.path(), "row_lock", 16, 2_000_000.0);
        let found = criterion_results(root.path(), UNIX_EPOCH).expect("read");
        let series = series_of(
            &found,
            "postgres_hot_drop",
            &[
                ("group", "group"),
                ("row_lock", "row lock"),
                ("absent", "x"),
            ],
        );
        let lines: Vec<_> = series
            .iter()
            .map(|s| (s.name.as_str(), s.points.clone()))
            .collect();
        assert_eq!(
            lines,
            vec![
                ("group", vec![(1.0, 400.0), (64.0, 4_000.0)]),
                ("row lock", vec![(16.0, 500.0)]),
            ]
        );
    }

    #[test]
    fn a_batch_profile_becomes_milliseconds_per_batch_against_buyers() {
        let line = |buyers: u32, commit: f64| {
            serde_json::json!({
                "bench": "batch_profile",
                "buyers": buyers,
                "group": {
                    "ms_per_batch": 10.0,
                    "rows_held_ms_per_batch": 6.0,
                    "steps": {
                        "begin": {"ms_per_batch": 1.0},
                        "buyer_locks": {"ms_per_batch": 0.5},
                        "known": {"ms_per_batch": 0.25},
                        "stock_rows": {"ms_per_batch": 2.0},
                        "commit": {"ms_per_batch": commit}
                    }
                },
                "raw_ceiling": null
            })
        };
        let series = batch_profile_series(&[line(64, 4.0), line(1, 3.0)]);
        let named = |n: &str| {
            series
                .iter()
                .find(|s| s.name.starts_with(n))
                .map(|s| s.points.clone())
        };
        assert_eq!(
            named("group reserve: commit"),
            Some(vec![(1.0, 3.0), (64.0, 4.0)])
        );
        assert_eq!(
            named("group reserve: begin"),
            Some(vec![(1.0, 1.75), (64.0, 1.75)])
        );
        assert_eq!(
            named("group reserve: variant rows held"),
            Some(vec![(1.0, 6.0), (64.0, 6.0)])
        );
        assert_eq!(named("raw ceiling"), None, "no ceiling measured, no line");
    }

    #[test]
    fn results_older_than_the_run_are_left_out() {
        let root = tempfile::tempdir().expect("tempdir");
        write_result(root.path(), "group", 4, 1_000_000.0);
        let later = SystemTime::now() + Duration::from_secs(3_600);
        assert!(criterion_results(root.path(), later)
            .expect("read")
            .is_empty());
    }
}
