//! The storefront: a plain HTML, CSS and JavaScript page over the public API, served
//! at `/` from files compiled into the binary (no build step). It lists the live and
//! upcoming drops; a drop's page shows a countdown, live stock from
//! `GET /drops/{id}/events`, and a buy button that keeps its `Idempotency-Key` until
//! the order's answer arrives, so a retry after a lost answer cannot order twice.
//! Each allocation mode has its panel: a sold-out size's waitlist; a draw's entry
//! (enter, replace, withdraw), its commitment, result and revealed seed, and the
//! public results, re-ranked in the browser; a waiting room's place and estimated
//! wait, refreshed by the stream's `queue` events, and a buy button that sends the
//! `Admission-Token`. `#/notifications` lists offers and draw results.
//! `HttpOptions::storefront` (`--storefront false`) leaves `/` unrouted.

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::state::AppState;

const INDEX: &str = include_str!("../storefront/index.html");
const SCRIPT: &str = include_str!("../storefront/storefront.js");
const STYLE: &str = include_str!("../storefront/storefront.css");

/// Everything the page loads comes from this server; scripts only from files.
const POLICY: &str = "default-src 'self'; img-src 'self' https: data:; \
                      object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// `/`, `/storefront.js` and `/storefront.css`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async { file("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/storefront.js",
            get(|| async { file("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/storefront.css",
            get(|| async { file("text/css; charset=utf-8", STYLE) }),
        )
}

fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY)),
        ],
        body,
    )
}
