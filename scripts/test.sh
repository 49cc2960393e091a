#!/usr/bin/env bash
# The full test suite, as CI runs it: formatting, lints, and every test against real
# PostgreSQL, Redis, a Kafka-protocol broker and headless Chromium. Starts or installs
# what is missing first; a service that cannot be reached fails the run (tests never
# skip here).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/services.sh up
trap 'scripts/services.sh down' EXIT

export LIVEDROP_TEST_DATABASE_URL="${LIVEDROP_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
export LIVEDROP_TEST_REDIS_URL="${LIVEDROP_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
export LIVEDROP_TEST_KAFKA_BROKERS="${LIVEDROP_TEST_KAFKA_BROKERS:-127.0.0.1:19092}"
# The storefront's browser tests: Debian's Chromium driven by playwright-core.
LIVEDROP_TEST_BROWSER="$(scripts/browser.sh)"
export LIVEDROP_TEST_BROWSER
# Every test runs: one that would skip for a missing service fails instead.
export LIVEDROP_TEST_REQUIRE=1
export RUST_BACKTRACE=1

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --workspace --all-targets --all-features -- -D warnings
# Docs build without a warning (broken or private intra-doc links).
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --all-features --no-deps
cargo test --workspace --all-features --no-fail-fast "$@"
