//! The storefront page at `/`: served by the binary with its script and style, off
//! with `LIVEDROP_STOREFRONT=0`, and a buyer's whole journey through it in headless
//! Chromium (playwright-core), one per allocation mode: first come
//! (`tests/browser/journey.mjs`), a waitlist hand-over (`waitlist.mjs`), a draw
//! (`draw.mjs`, entries closing a few seconds after the start) and a waiting room
//! (`waiting_room.mjs`, the sale starting a few seconds after the queue is joined).
//!
//! The browser test needs `LIVEDROP_TEST_BROWSER` (the Chromium binary) and
//! `scripts/browser.sh` run once (it installs both and prints the path); unset, it
//! says why it skips, and under `LIVEDROP_TEST_REQUIRE=1` it fails instead.
//! Screenshots and the page's HTML of a failed journey are kept in
//! `target/browser-artifacts/`.
//!
//! `cargo test -p livedrop-http --test storefront`

#![allow(clippy::unwrap_used)]

mod harness;

use std::path::Path;
use std::process::Command;

use harness::Server;
use livedrop_core::testing::env;
use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use serde_json::Value;

fn settings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all = vec![
        ("LIVEDROP_IN_MEMORY", "1"),
        ("LIVEDROP_TOKEN_SECRET", harness::SECRET),
        ("LIVEDROP_ORDER_RATE_PER_USER", "0"),
    ];
    all.extend_from_slice(pairs);
    all.into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

async fn get(url: String) -> reqwest::Response {
    reqwest::get(url).await.unwrap()
}

async fn get_json(url: String) -> Value {
    get(url).await.json().await.unwrap()
}

fn header(response: &reqwest::Response, name: reqwest::header::HeaderName) -> &str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn the_storefront_is_served_at_root_with_its_script_and_style() {
    let server = Server::start("storefront-on", &settings(&[])).await;

    let page = get(format!("{}/", server.base)).await;
    assert_eq!(page.status(), 200);
    assert_eq!(header(&page, CONTENT_TYPE), "text/html; charset=utf-8");
    assert!(
        header(&page, CONTENT_SECURITY_POLICY).contains("default-src 'self'"),
        "the page is served with a content security policy"
    );
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script src="/storefront.js" defer></script>"#));
    assert!(html.contains(r#"href="/storefront.css""#));

    for (path, kind, needle) in [
        ("/storefront.js", "text/javascript", "Idempotency-Key"),
        ("/storefront.css", "text/css", ".status.live"),
    ] {
        let file = get(format!("{}{path}", server.base)).await;
        assert_eq!(file.status(), 200, "{path}");
        assert!(header(&file, CONTENT_TYPE).starts_with(kind), "{path}");
        assert!(file.text().await.unwrap().contains(needle), "{path}");
    }

    // The page is not part of the API's document.
    let doc = get_json(format!("{}/openapi.json", server.base)).await;
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.contains_key("/drops"));
    assert!(
        !paths.contains_key("/"),
        "the storefront is not an API path"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_storefront_flag_leaves_root_unrouted_and_the_api_unchanged() {
    let server = Server::start("storefront-off", &settings(&[("LIVEDROP_STOREFRONT", "0")])).await;

    let page = get(format!("{}/", server.base)).await;
    assert_eq!(page.status(), 404);
    let body: Value = page.json().await.unwrap();
    assert_eq!(body["code"], "not_found", "{body}");
    assert_eq!(
        get(format!("{}/storefront.js", server.base)).await.status(),
        404
    );
    assert_eq!(get(format!("{}/drops", server.base)).await.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn the_demo_gives_the_storefront_a_drop_in_every_mode() {
    let server = Server::start("storefront-demo", &settings(&[("LIVEDROP_DEMO", "1")])).await;
    for (status, expected) in [
        (
            "live",
            &[
                ("Demo hoodie", "first_come"),
                ("Demo raffle (draw)", "draw"),
                ("Demo sneaker (sizes)", "first_come"),
            ][..],
        ),
        (
            "scheduled",
            &[
                ("Demo cap", "first_come"),
                ("Demo console (waiting room)", "first_come"),
            ][..],
        ),
    ] {
        let page = get_json(format!("{}/drops?status={status}", server.base)).await;
        let mut found = Vec::new();
        for drop in page["items"].as_array().unwrap() {
            let product = get_json(format!(
                "{}/products/{}",
                server.base,
                drop["product_id"].as_str().unwrap()
            ))
            .await;
            let title = product["title"].as_str().unwrap().to_owned();
            let allocation = drop["allocation"].as_str().unwrap().to_owned();
            match title.as_str() {
                "Demo raffle (draw)" => assert!(drop["draw"]["commitment"].is_string(), "{drop}"),
                "Demo console (waiting room)" => {
                    assert!(drop["waiting_room"]["admit_per_minute"].is_u64(), "{drop}")
                }
                "Demo sneaker (sizes)" => {
                    assert!(drop["variants"].as_array().unwrap().len() > 1, "{drop}")
                }
                _ => {}
            }
            found.push((title, allocation));
        }
        found.sort();
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(t, a)| ((*t).to_owned(), (*a).to_owned()))
            .collect();
        assert_eq!(found, expected, "{status}: {page}");
    }
    server.stop().await;
}

/// The Chromium binary, or `None` after saying why the browser test skips (a
/// failure instead under `LIVEDROP_TEST_REQUIRE=1`).
fn browser(test: &str) -> Option<String> {
    let path = env::service_var(env::BROWSER, test)?;
    assert!(
        Path::new(&path).exists(),
        "{}={path}: no such file (run scripts/browser.sh)",
        env::BROWSER
    );
    Some(path)
}

/// Runs `tests/browser/<script>` in headless Chromium against a fresh in-memory
/// server started with `extra` settings, and asserts it reached `<name>: done`.
/// Skips (saying why) without a browser; a failed journey leaves its screenshot and
/// HTML in `target/browser-artifacts/`.
async fn journey(test: &str, script: &str, name: &str, extra: &[(&str, &str)]) {
    let Some(chromium) = browser(test) else {
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed in {} (run scripts/browser.sh)",
        dir.display()
    );
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let server = Server::start(test, &settings(extra)).await;

    let base = server.base.clone();
    let script = dir.join(script);
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .env("BASE", base)
            .env("CHROMIUM", chromium)
            .env("ARTIFACTS", artifacts)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the {name} journey failed ({}):\n{stdout}\n{stderr}\nserver log:\n{}",
        output.status,
        server.log_tail()
    );
    assert!(
        stdout.contains(&format!("{name}: done")),
        "the {name} journey did not reach its end:\n{stdout}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_buyer_journey_through_the_storefront_in_chromium() {
    journey(
        "a_buyer_journey_through_the_storefront_in_chromium",
        "journey.mjs",
        "journey",
        &[("LIVEDROP_HOLD_SECONDS", "300")],
    )
    .await;
}

#[tokio::test]
async fn a_waitlisted_buyer_is_handed_a_cancelled_unit_in_chromium() {
    journey(
        "a_waitlisted_buyer_is_handed_a_cancelled_unit_in_chromium",
        "waitlist.mjs",
        "waitlist",
        &[("LIVEDROP_HOLD_SECONDS", "300")],
    )
    .await;
}

#[tokio::test]
async fn a_buyer_enters_a_draw_wins_and_pays_in_chromium() {
    journey(
        "a_buyer_enters_a_draw_wins_and_pays_in_chromium",
        "draw.mjs",
        "draw",
        &[("LIVEDROP_HOLD_SECONDS", "300")],
    )
    .await;
}

#[tokio::test]
async fn a_buyer_waits_in_the_queue_and_buys_with_the_token_in_chromium() {
    journey(
        "a_buyer_waits_in_the_queue_and_buys_with_the_token_in_chromium",
        "waiting_room.mjs",
        "waiting-room",
        &[("LIVEDROP_HOLD_SECONDS", "300")],
    )
    .await;
}
