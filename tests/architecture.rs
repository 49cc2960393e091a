//! The layering ARCHITECTURE.md promises, checked on the sources: within each crate,
//! no top-level module refers to one that refers back to it (test modules included),
//! and the core names no adapter or HTTP crate.
//!
//! `cargo test --test architecture`
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const CRATES: [&str; 3] = ["livedrop-core", "livedrop-adapters", "livedrop-http"];

/// Every `.rs` file below `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The source without comments (doc comments name modules freely).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The leading identifier of `s`.
fn ident(s: &str) -> &str {
    let s = s.trim_start();
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules `code` names through `crate::` paths, including each name of
/// a `crate::{a, b::c}` group.
fn referenced(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.insert(ident(&group[start..i]).to_owned());
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(&group[start..i]).to_owned());
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest).to_owned());
        }
    }
    out.retain(|name| !name.is_empty() && name != "self");
    out
}

/// For one crate: each top-level module and the top-level modules it refers to.
fn module_graph(krate: &str) -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(krate)
        .join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in sources(&src) {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str();
        let module = first.to_string_lossy().trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let code = code_of(&fs::read_to_string(&file).unwrap());
        let refs = graph.entry(module.clone()).or_default();
        refs.extend(referenced(&code).into_iter().filter(|m| *m != module));
    }
    graph
}

#[test]
fn no_module_refers_to_one_that_refers_back() {
    let mut cycles = Vec::new();
    for krate in CRATES {
        let graph = module_graph(krate);
        assert!(graph.len() > 3, "{krate}: found only {graph:?}");
        for (module, refs) in &graph {
            for other in refs {
                if module < other && graph.get(other).is_some_and(|r| r.contains(module)) {
                    cycles.push(format!("{krate}: {module} <-> {other}"));
                }
            }
        }
    }
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_core_names_no_adapter_or_transport() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("livedrop-core/src");
    let mut found = Vec::new();
    for file in sources(&src) {
        let code = code_of(&fs::read_to_string(&file).unwrap());
        for name in [
            "livedrop_adapters",
            "livedrop_http",
            "sqlx",
            "redis::",
            "rdkafka",
            "axum",
        ] {
            if code.contains(name) {
                found.push(format!("{} names {name}", file.display()));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_reference_reader_sees_groups_and_paths() {
    let code = "use crate::{event::Event, id::{A, B}, self};\nfn f() { crate::model::x(); }";
    let names: Vec<_> = referenced(code).into_iter().collect();
    assert_eq!(names, ["event", "id", "model"]);
    assert_eq!(code_of("a // crate::x\n/// crate::y\nb"), "a \n\nb");
}
