//! Every case of the conformance suite runs on every backend: each `pub async fn`
//! of a suite's files is listed in that suite's macro (`store_conformance!`,
//! `cache_conformance!`, `bus_conformance!`, `gate_conformance!`), and each macro
//! lists only cases that exist. Read from the sources, so a case written but not
//! listed fails here instead of silently never running.
//!
//! `cargo test -p livedrop-core --test suite_listing`
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeSet;

/// The store suite's files: `(module name, source)`.
const STORE: &[(&str, &str)] = &[
    ("mod", include_str!("../src/testing/store/mod.rs")),
    ("users", include_str!("../src/testing/store/users.rs")),
    ("products", include_str!("../src/testing/store/products.rs")),
    ("drops", include_str!("../src/testing/store/drops.rs")),
    ("orders", include_str!("../src/testing/store/orders.rs")),
    (
        "inventory",
        include_str!("../src/testing/store/inventory.rs"),
    ),
    (
        "idempotency",
        include_str!("../src/testing/store/idempotency.rs"),
    ),
    (
        "notifications",
        include_str!("../src/testing/store/notifications.rs"),
    ),
    ("outbox", include_str!("../src/testing/store/outbox.rs")),
    (
        "semantics",
        include_str!("../src/testing/store/semantics.rs"),
    ),
    ("variants", include_str!("../src/testing/store/variants.rs")),
    (
        "waitlists",
        include_str!("../src/testing/store/waitlists.rs"),
    ),
];
const CACHE: &str = include_str!("../src/testing/cache.rs");
const BUS: &str = include_str!("../src/testing/bus.rs");
const GATE: &str = include_str!("../src/testing/gate.rs");
const TESTING: &str = include_str!("../src/testing/mod.rs");
const MACROS: &str = include_str!("../src/testing/macros.rs");

/// The names of the `pub async fn`s in `source`.
fn cases(source: &str) -> BTreeSet<String> {
    source
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("pub async fn "))
        .map(|rest| {
            rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// The names of the modules `source` declares (`mod x;` or `pub mod x;`).
fn modules(source: &str) -> BTreeSet<String> {
    source
        .lines()
        .map(str::trim)
        .filter_map(|line| {
            line.strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("mod "))
        })
        .filter_map(|rest| rest.strip_suffix(';'))
        .map(str::to_owned)
        .collect()
}

/// The cases macro `name` lists: the identifiers after its
/// `module, suite, $factory;` line, up to the closing brace.
fn listed(name: &str) -> BTreeSet<String> {
    let start = MACROS
        .find(&format!("macro_rules! {name} {{"))
        .unwrap_or_else(|| panic!("macros.rs defines no {name}!"));
    let body = &MACROS[start..];
    let header = format!("{name}, ");
    let after = body
        .find(&header)
        .unwrap_or_else(|| panic!("{name}! expands no `{name}, suite, $factory;` line"));
    let list = &body[after..];
    let list = &list[list.find(';').unwrap() + 1..];
    let list = &list[..list.find('}').unwrap()];
    list.split(',')
        .map(str::trim)
        .filter(|case| !case.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Which suite module macro `name` calls its cases in.
fn suite_of(name: &str) -> String {
    let start = MACROS.find(&format!("macro_rules! {name} {{")).unwrap();
    let body = &MACROS[start..];
    let after = body.find(&format!("{name}, ")).unwrap() + name.len() + 2;
    body[after..].split(',').next().unwrap().trim().to_owned()
}

fn assert_same(suite: &str, written: BTreeSet<String>, listed: BTreeSet<String>) {
    let missing: Vec<_> = written.difference(&listed).collect();
    let unknown: Vec<_> = listed.difference(&written).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "{suite}: cases not listed in its macro: {missing:?}; listed but not written: {unknown:?}"
    );
    assert!(!written.is_empty(), "{suite}: no case found");
}

/// The cases written for `suite` are the ones its `<suite>_conformance` macro lists,
/// and the macro runs that suite.
fn assert_listed(suite: &str, written: BTreeSet<String>) {
    let name = format!("{suite}_conformance");
    assert_same(suite, written, listed(&name));
    assert_eq!(suite_of(&name), suite);
}

#[test]
fn every_store_case_is_listed_in_store_conformance() {
    assert_listed(
        "store",
        STORE.iter().flat_map(|(_, src)| cases(src)).collect(),
    );
}

#[test]
fn every_cache_case_is_listed_in_cache_conformance() {
    assert_listed("cache", cases(CACHE));
}

#[test]
fn every_bus_case_is_listed_in_bus_conformance() {
    assert_listed("bus", cases(BUS));
}

#[test]
fn every_gate_case_is_listed_in_gate_conformance() {
    assert_listed("gate", cases(GATE));
}

/// The files read above are all the suite has: a new store file, or a new suite
/// module, must be added here (and to a macro) before it can hold cases.
#[test]
fn the_check_reads_every_suite_file() {
    let store_files: BTreeSet<String> = STORE
        .iter()
        .map(|(name, _)| (*name).to_owned())
        .filter(|name| name != "mod")
        .collect();
    assert_eq!(modules(STORE[0].1), store_files, "testing/store/ modules");
    let suites: BTreeSet<String> = ["bus", "cache", "env", "fixtures", "gate", "macros", "store"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        modules(TESTING),
        suites,
        "testing/ modules: a new suite needs its macro and a place in this check"
    );
    // The helpers hold no cases.
    assert!(cases(include_str!("../src/testing/env.rs")).is_empty());
    assert!(cases(include_str!("../src/testing/fixtures.rs")).is_empty());
}

/// The parsers themselves: a listed case, a missing one and an unknown one.
#[test]
fn the_parsers_find_cases_and_listings() {
    let source = "pub async fn a(x: &X) {}\n    pub async fn b_2<T>() {}\nasync fn private() {}\npub fn sync() {}";
    assert_eq!(cases(source), ["a", "b_2"].map(String::from).into());
    let written: BTreeSet<String> = ["a", "b"].map(String::from).into();
    let result = std::panic::catch_unwind(|| {
        assert_same("t", written.clone(), ["a"].map(String::from).into())
    });
    assert!(result.is_err(), "a missing case is caught");
    let result = std::panic::catch_unwind(|| {
        assert_same(
            "t",
            written.clone(),
            ["a", "b", "c"].map(String::from).into(),
        )
    });
    assert!(result.is_err(), "an unknown case is caught");
    assert!(listed("bus_conformance").contains("bus_round_trip"));
}
