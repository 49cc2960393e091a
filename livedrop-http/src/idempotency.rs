//! Optional `Idempotency-Key` on POSTs other than `POST /orders` (whose key the core
//! handles itself) and `POST /sessions` (a login is not a change worth replaying).
//!
//! Transport only: the protocol (claims, leases, replay, release on a dropped
//! request) is the core's [`Livedrop::idempotently`](livedrop_core::service::Livedrop::idempotently);
//! this layer reads the header, fingerprints the request and carries the response.
//! Keys are scoped by user (the bearer token's user; anonymous requests and the operator each
//! have their own scope). The fingerprint is a hash of method, path, query and body.
//! The first completed response (status and JSON body) is stored and replayed to a
//! retry with the same request, marked `Idempotent-Replayed: true`; the same key with
//! another request is 422 `idempotency_key_reused`; a retry while the first request
//! runs is 409 `idempotency_key_in_flight`. Server errors, timeouts and rate limits
//! are not stored: the retry runs afresh.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use livedrop_core::{Error, UserId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::bearer;
use crate::error::ApiError;
use crate::state::AppState;

/// The header marking a replayed response.
pub(crate) const REPLAYED: &str = "idempotent-replayed";

/// The scope of keys sent without a bearer token on public routes.
pub(crate) const ANONYMOUS_SCOPE: UserId = UserId(Uuid::nil());
/// The scope of keys sent to the internal API.
pub(crate) const OPERATOR_SCOPE: UserId = UserId(Uuid::from_u128(u128::MAX));

/// Largest response body stored for replay.
const MAX_STORED: usize = 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    status: u16,
    body: serde_json::Value,
}

fn check_key(raw: &HeaderValue) -> Result<String, ApiError> {
    let key = raw.to_str().unwrap_or_default();
    livedrop_core::service::check_idempotency_key(Some(key))
        .map(str::to_owned)
        .map_err(ApiError::from)
}

fn exempt(method: &Method, path: &str) -> bool {
    method != Method::POST || path == "/orders" || path == "/sessions"
}

/// The middleware: see the [module docs](self). Mount it inside the internal
/// guard so only authorized requests reach stored responses.
pub(crate) async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if exempt(request.method(), &path) {
        return next.run(request).await;
    }
    let Some(raw) = request.headers().get("idempotency-key") else {
        return next.run(request).await;
    };
    let key = match check_key(raw) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let scope = if path.starts_with("/internal/") {
        OPERATOR_SCOPE
    } else {
        match bearer(request.headers()) {
            None => ANONYMOUS_SCOPE,
            Some(token) => match state.tokens().verify(token) {
                Ok(actor) => actor.id,
                // The handler answers 401; nothing to remember.
                Err(_) => return next.run(request).await,
            },
        }
    };

    let limit = state.options().body_limit;
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => return ApiError::too_large(limit).into_response(),
    };
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update(b"\n");
    hasher.update(parts.uri.path().as_bytes());
    hasher.update(b"\n");
    hasher.update(parts.uri.query().unwrap_or_default().as_bytes());
    hasher.update(b"\n");
    hasher.update(&bytes);
    let fingerprint = format!("http:{}", hex::encode(hasher.finalize()));

    // The protocol is the core's; this layer only carries the response: a final
    // one (anything but a server error, a timeout or a rate limit) is what the core
    // stores and replays.
    let mut live: Option<Response> = None;
    let outcome = {
        let live = &mut live;
        state
            .livedrop()
            .idempotently(scope, &key, &fingerprint, || async move {
                let response = next
                    .run(Request::from_parts(parts, Body::from(bytes)))
                    .await;
                let status = response.status();
                if status.is_server_error()
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::REQUEST_TIMEOUT
                {
                    *live = Some(response);
                    return Err(Error::unavailable("a retry"));
                }
                let (parts, body) = response.into_parts();
                let bytes = axum::body::to_bytes(body, MAX_STORED).await.map_err(|e| {
                    Error::internal(format!(
                        "could not buffer a response for idempotent replay: {e}"
                    ))
                })?;
                let stored = Stored {
                    status: status.as_u16(),
                    body: if bytes.is_empty() {
                        serde_json::Value::Null
                    } else {
                        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
                    },
                };
                *live = Some(Response::from_parts(parts, Body::from(bytes)));
                Ok(stored)
            })
            .await
    };
    match (outcome, live) {
        (Ok(done), _) if done.replayed => replay(done.value),
        // This run's own response, stored or not.
        (_, Some(response)) => response,
        (Err(e), None) => ApiError::from(e).into_response(),
        // A fresh run always leaves its response; answer with what was stored.
        (Ok(done), None) => replay(done.value),
    }
}

fn replay(stored: Stored) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = if stored.body.is_null() {
        status.into_response()
    } else {
        (status, axum::Json(stored.body)).into_response()
    };
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    if stored.status >= 400 {
        response.extensions_mut().insert(crate::error::ShapedError);
    }
    response
}
