//! Optional `Idempotency-Key` on POSTs other than `POST /orders` (whose key the core
//! handles itself) and `POST /sessions` (a login is not a change worth replaying).
//!
//! Keys live in the core's [`IdempotencyStore`](livedrop_core::ports::IdempotencyStore),
//! scoped by user (the bearer token's user; anonymous requests and the operator each
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
use livedrop_core::ports::BeginOutcome;
use livedrop_core::{Error, UserId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::bearer;
use crate::error::ApiError;
use crate::state::AppState;

/// The header marking a replayed response.
pub const REPLAYED: &str = "idempotent-replayed";

/// The scope of keys sent without a bearer token on public routes.
pub const ANONYMOUS_SCOPE: UserId = UserId(Uuid::nil());
/// The scope of keys sent to the internal API.
pub const OPERATOR_SCOPE: UserId = UserId(Uuid::from_u128(u128::MAX));

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
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
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

    let livedrop = state.livedrop();
    let store = livedrop.ports().idempotency.clone();
    let now = livedrop.ports().clock.now();
    let lease = livedrop.config().idempotency_lease;
    match store.begin(scope, &key, &fingerprint, now, lease).await {
        Err(e) => return ApiError::from(Error::from(e)).into_response(),
        Ok(BeginOutcome::Mismatch) => {
            return ApiError::from(Error::IdempotencyKeyReused).into_response()
        }
        Ok(BeginOutcome::InFlight) => {
            return ApiError::from(Error::IdempotencyKeyInFlight).into_response()
        }
        Ok(BeginOutcome::Replay(value)) => return replay(value),
        Ok(BeginOutcome::Started) => {}
    }

    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = response.status();
    let transient = status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT;
    if transient {
        if let Err(e) = store.release(scope, &key).await {
            tracing::warn!(error = %e, "could not release an idempotency key; it frees when its lease runs out");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_STORED).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "could not buffer a response for idempotent replay");
            if let Err(e) = store.release(scope, &key).await {
                tracing::warn!(error = %e, "could not release an idempotency key");
            }
            return ApiError::from(Error::Internal).into_response();
        }
    };
    let stored = Stored {
        status: status.as_u16(),
        body: if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
        },
    };
    match serde_json::to_value(&stored) {
        Ok(value) => {
            if let Err(e) = store.complete(scope, &key, &value).await {
                tracing::warn!(error = %e, "could not store an idempotent response");
            }
        }
        Err(e) => tracing::error!(error = %e, "could not encode an idempotent response"),
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn replay(value: serde_json::Value) -> Response {
    let Ok(stored) = serde_json::from_value::<Stored>(value) else {
        tracing::error!("undecodable idempotency record");
        return ApiError::from(Error::Internal).into_response();
    };
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
