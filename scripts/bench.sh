#!/usr/bin/env bash
# Every component benchmark in one run, side by side: in-memory contention with its
# atomic ceiling, PostgreSQL row lock vs group reserve, the Redis admission gate vs
# PostgreSQL on a sold-out drop, and drop-live fan-out to 10,000 and 100,000 followers.
# Starts the services it needs. Figures go to BENCHMARKS.md by hand, with this command.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/services.sh up
export LIVEDROP_TEST_DATABASE_URL="${LIVEDROP_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
export LIVEDROP_TEST_REDIS_URL="${LIVEDROP_TEST_REDIS_URL:-redis://127.0.0.1:6379}"

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; load: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench --features postgres,redis --bench inventory --bench postgres_hot_drop --bench redis_gate "$@"
cargo test --release -p livedrop-adapters --features postgres,testing --test postgres fan_out_ \
  -- --ignored --nocapture --test-threads 1
