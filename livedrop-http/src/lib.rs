#![doc = include_str!("../README.md")]

pub mod auth;
pub mod body;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod idempotency;
pub mod openapi;
pub mod rate_limit;
pub mod server;
pub mod state;
pub mod telemetry;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use error::{ApiError, ErrorBody};
pub use state::{AppState, HttpOptions};

use error::ShapedError;
use handlers::{catalog, events, internal, notifications, ops, orders, users};

/// The request id header, set when the client sends none and echoed on the response.
pub const REQUEST_ID: &str = "x-request-id";

/// Every endpoint of the HTTP contract over `state`, with its middleware: request ids,
/// tracing spans, per-route metrics, a request timeout, the body limit, gzip, and
/// error bodies in one shape for every failure (unknown routes and methods included).
pub fn router(state: AppState) -> Router {
    // Install the recorder before the first request is counted.
    let _ = telemetry::prometheus();
    let body_limit = state.options().body_limit;
    let timeout = state.options().request_timeout;

    let idempotent = || middleware::from_fn_with_state(state.clone(), idempotency::layer);

    let public = Router::new()
        .route("/users", post(users::register))
        .route("/sessions", post(users::login))
        .route("/users/me", get(users::me))
        .route("/users/{id}", get(users::get_user))
        .route(
            "/users/{id}/followers/me",
            put(users::follow).delete(users::unfollow),
        )
        .route("/users/{id}/followers", get(users::followers))
        .route("/users/{id}/following", get(users::following))
        .route(
            "/products",
            post(catalog::create_product).get(catalog::list_products),
        )
        .route(
            "/products/{id}",
            get(catalog::get_product).patch(catalog::patch_product),
        )
        .route(
            "/drops",
            post(catalog::create_drop).get(catalog::list_drops),
        )
        .route("/drops/{id}", get(catalog::get_drop))
        .route("/drops/{id}/cancel", post(catalog::cancel_drop))
        .route("/drops/{id}/events", get(events::drop_events))
        .route("/orders", post(orders::place_order).get(orders::my_orders))
        .route("/orders/{id}", get(orders::get_order))
        .route("/orders/{id}/confirm", post(orders::confirm_order))
        .route("/orders/{id}/cancel", post(orders::cancel_order))
        .route("/notifications", get(notifications::list))
        .route(
            "/notifications/read-all",
            post(notifications::mark_all_read),
        )
        .route("/notifications/{id}/read", post(notifications::mark_read))
        .route_layer(idempotent());

    let internal = Router::new()
        .route(
            "/internal/inventory/{drop_id}/adjust",
            post(internal::adjust),
        )
        .route(
            "/internal/inventory/{drop_id}/ledger",
            get(internal::ledger),
        )
        .route("/internal/cache/invalidate", post(internal::invalidate))
        .route_layer(idempotent())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_internal,
        ));

    let operations = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi));

    let request_id = HeaderName::from_static(REQUEST_ID);
    public
        .merge(internal)
        .merge(operations)
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(timeout, request_timeout))
        .layer(middleware::from_fn(telemetry::track))
        .layer(middleware::from_fn(shape_errors))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|request: &Request| {
                        let id = request
                            .headers()
                            .get(REQUEST_ID)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-");
                        tracing::info_span!(
                            "request",
                            method = %request.method(),
                            uri = %request.uri().path(),
                            request_id = %id,
                        )
                    }),
                )
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(CompressionLayer::new().gzip(true)),
        )
        .with_state(state)
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::no_route(uri.path())
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

async fn request_timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(?limit, "request timed out");
            ApiError::timeout().into_response()
        }
    }
}

/// Gives any error response that some layer produced without our body (a bare
/// status) the error shape, keeping its status and headers.
async fn shape_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<ShapedError>().is_some()
    {
        return response;
    }
    let (parts, _) = response.into_parts();
    let mut shaped = ApiError::from_status(status).into_response();
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            shaped.headers_mut().insert(name.clone(), value.clone());
        }
    }
    shaped
}
