#!/usr/bin/env bash
# Every component benchmark in one run, side by side: in-memory contention with its
# atomic ceiling, PostgreSQL row lock vs group reserve, the Redis admission gate vs
# PostgreSQL on a sold-out drop, drop-live fan-out to 10,000 and 100,000 followers,
# and the reference server's resident memory (scripts/rss.sh). Starts the services it
# needs. Results stay machine-readable in target/bench/ (run.json: command, commit,
# machine; fan_out.jsonl; rss.jsonl; http_*.json) and target/criterion/ (criterion's
# estimates.json per benchmark); the last step renders them as SVG charts and a CSV
# into docs/bench/ (examples/bench_charts.rs). Figures go to BENCHMARKS.md by hand.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/services.sh up
export LIVEDROP_TEST_DATABASE_URL="${LIVEDROP_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
export LIVEDROP_TEST_REDIS_URL="${LIVEDROP_TEST_REDIS_URL:-redis://127.0.0.1:6379}"

results=target/bench
mkdir -p "$results"
rm -f "$results"/*.json "$results"/*.jsonl
commit="$(git rev-parse --short HEAD)"
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then commit="$commit+uncommitted"; fi
cores="$(nproc)"
gib="$(awk '/^MemTotal:/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)"
load="$(cut -d' ' -f1-3 /proc/loadavg)"
command="scripts/bench.sh${*:+ $*}"
printf '{"command":"%s","commit":"%s","cores":%s,"mem_gib":%s,"load":"%s","started_unix":%s,"started_utc":"%s"}\n' \
  "$command" "$commit" "$cores" "$gib" "$load" "$(date +%s)" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  >"$results/run.json"

echo "== machine: $cores cores, $gib GiB; load: $load; commit $commit"
BENCH_RESULTS="$PWD/$results" \
  cargo bench --features postgres,redis --bench inventory --bench postgres_hot_drop --bench redis_gate "$@"
cargo test --release -p livedrop-adapters --features postgres,testing --test postgres fan_out_ \
  -- --ignored --nocapture --test-threads 1 | tee "$results/fan_out.log"
sed -n 's/.*bench-result //p' "$results/fan_out.log" >"$results/fan_out.jsonl"
BENCH_RESULTS="$results" scripts/rss.sh
cargo run --release --features postgres,redis --example bench_charts -- \
  --results "$results" --criterion target/criterion --out docs/bench
