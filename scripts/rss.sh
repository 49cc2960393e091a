#!/usr/bin/env bash
# Resident memory of the reference server (VmRSS from /proc/PID/status), with the
# in-memory store, with SQLite (the default store), with PostgreSQL (a fresh
# schema in LIVEDROP_TEST_DATABASE_URL's database; cache and bus in-process) and with
# PostgreSQL, Redis and Kafka as operators run it (`postgres-redis-kafka`: a fresh
# schema, Redis namespace and topic prefix; needs the broker of scripts/kafka.sh on
# LIVEDROP_TEST_KAFKA_BROKERS, default 127.0.0.1:19092): at rest a few seconds after
# start, when the load generator's set-up (registering 200 buyers and a creator,
# which hashes their passwords) is done, the highest sample while examples/loadgen.rs
# drives orders on one hot drop (64 in flight, 10 s, the per-user rate limit off),
# and at rest 3 s after. Samples every 0.2 s. Writes one JSON line per store (with the
# samples) to target/bench/rss.jsonl and the load generator's summary to
# target/bench/http_<store>.json; exits non-zero if a load run fails its checks
# (oversell, duplicate orders). RSS_STORES picks the stores (default: all four, in
# that order).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out="${BENCH_RESULTS:-target/bench}"
port="${RSS_PORT:-18095}"
mkdir -p "$out"
cargo build --release -p livedrop-http --bin livedrop-http
cargo build --release --features postgres,redis --example loadgen
server=target/release/livedrop-http
loadgen=target/release/examples/loadgen

tmp="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

: >"$out/rss.jsonl"
pg_url="${LIVEDROP_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
redis_url="${LIVEDROP_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
brokers="${LIVEDROP_TEST_KAFKA_BROKERS:-127.0.0.1:19092}"
for store in ${RSS_STORES:-memory sqlite postgres postgres-redis-kafka}; do
  run_id="ld_rss_$(date +%s)"
  case "$store" in
    memory) store_env=(LIVEDROP_IN_MEMORY=1) ;;
    sqlite) store_env=(LIVEDROP_DATABASE_URL="sqlite://$tmp/livedrop.db") ;;
    postgres) store_env=(LIVEDROP_DATABASE_URL="$pg_url" LIVEDROP_DATABASE_SCHEMA="$run_id") ;;
    postgres-redis-kafka)
      store_env=(LIVEDROP_DATABASE_URL="$pg_url" LIVEDROP_DATABASE_SCHEMA="$run_id"
        LIVEDROP_REDIS_URL="$redis_url" LIVEDROP_REDIS_NAMESPACE="$run_id"
        LIVEDROP_KAFKA_BROKERS="$brokers" LIVEDROP_KAFKA_TOPIC_PREFIX="$run_id") ;;
    *) echo "rss: unknown store $store" >&2; exit 2 ;;
  esac
  env LIVEDROP_ADDR="127.0.0.1:$port" LIVEDROP_LOG=warn LIVEDROP_ORDER_RATE_PER_USER=0 \
    "${store_env[@]}" "$server" &
  pid=$!
  for _ in $(seq 1 300); do
    if curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; then break; fi
    sleep 0.1
  done
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null
  sleep 3
  rest=$(status_kib "$pid" VmRSS)

  "$loadgen" --target "http://127.0.0.1:$port" --quiet --json --requests 100000000 \
    --buyers 200 --stock 1000000 --concurrency 64 --duration 10 >"$tmp/load.out" 2>"$tmp/load.err" &
  lpid=$!
  started=$(date +%s.%N)
  peak=0
  set_up=""
  samples=""
  while kill -0 "$lpid" 2>/dev/null; do
    r=$(status_kib "$pid" VmRSS)
    t=$(awk -v now="$(date +%s.%N)" -v t0="$started" 'BEGIN { printf "%.2f", now - t0 }')
    samples="$samples${samples:+,}[$t,$r]"
    if [ -z "$set_up" ]; then
      if grep -q '^set-up:' "$tmp/load.err"; then set_up=$r; fi
    elif [ "$r" -gt "$peak" ]; then
      peak=$r
    fi
    sleep 0.2
  done
  cat "$tmp/load.err" >&2
  wait "$lpid"
  sleep 3
  after=$(status_kib "$pid" VmRSS)
  hwm=$(status_kib "$pid" VmHWM)
  tail -n 1 "$tmp/load.out" >"$out/http_$store.json"
  kill "$pid"
  wait "$pid" || true
  pid=""
  line="{\"bench\":\"rss\",\"store\":\"$store\",\"rest_kib\":$rest,\"set_up_kib\":${set_up:-null},\"load_peak_kib\":$peak,\"after_load_kib\":$after,\"hwm_kib\":$hwm,\"samples\":[$samples],\"load\":$(cat "$out/http_$store.json")}"
  echo "$line" >>"$out/rss.jsonl"
  echo "rss $store: at rest ${rest} KiB, after set-up ${set_up:-?} KiB, orders peak ${peak} KiB (VmHWM ${hwm} KiB), after load ${after} KiB"
done
