//! Which external services a test run has, from `LIVEDROP_TEST_*` variables.
//!
//! A test that needs PostgreSQL, Redis, a Kafka broker or a browser reads its variable through
//! [`service_var`]: unset (or empty), the test prints why and skips — unless
//! `LIVEDROP_TEST_REQUIRE=1` is set (as `scripts/test.sh` does), where it fails
//! instead. A variable that is set names a service that must be reachable: a test
//! that cannot reach it fails, whatever `LIVEDROP_TEST_REQUIRE` says.

/// The PostgreSQL URL of the tests (`postgres://…`).
pub const DATABASE_URL: &str = "LIVEDROP_TEST_DATABASE_URL";
/// The Redis URL of the tests (`redis://…`).
pub const REDIS_URL: &str = "LIVEDROP_TEST_REDIS_URL";
/// The Kafka bootstrap servers of the tests (`host:port`).
pub const KAFKA_BROKERS: &str = "LIVEDROP_TEST_KAFKA_BROKERS";
/// The Chromium binary the storefront's browser tests drive (`scripts/browser.sh`
/// installs it and prints its path).
pub const BROWSER: &str = "LIVEDROP_TEST_BROWSER";
/// Set to `1` to turn every skip for a missing service into a failure.
pub const REQUIRE: &str = "LIVEDROP_TEST_REQUIRE";

/// Whether `LIVEDROP_TEST_REQUIRE` asks that no test skip.
pub fn required() -> bool {
    std::env::var(REQUIRE).is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"))
}

/// Skips (returns `None` after printing `why` for `test`), or panics when
/// [`required`]: the one place a missing service becomes a skip or a failure.
pub fn skip(test: &str, why: &str) -> Option<std::convert::Infallible> {
    if required() {
        panic!("{test}: {why}, and {REQUIRE}=1 forbids skipping");
    }
    eprintln!("skipping {test}: {why}");
    None
}

/// The value of `var`, or `None` (the test skips, see [`skip`]) when it is unset or
/// empty.
pub fn service_var(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => Some(value),
        _ => {
            skip(test, &format!("{var} is not set"))?;
            None
        }
    }
}

/// The values of every variable in `vars`, or `None` (the test skips, see [`skip`])
/// naming those unset.
pub fn service_vars<const N: usize>(vars: [&str; N], test: &str) -> Option<[String; N]> {
    let values = vars.map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()));
    let missing: Vec<&str> = vars
        .iter()
        .zip(&values)
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| *k)
        .collect();
    if !missing.is_empty() {
        skip(test, &format!("{} not set", missing.join(", ")))?;
        return None;
    }
    Some(values.map(Option::unwrap_or_default))
}
