//! The router: every route declared once, with its OpenAPI entry, through
//! `utoipa-axum`'s [`OpenApiRouter`] and `routes!`; the document it collects is what
//! `GET /openapi.json` serves. Around the routes, the middleware every request
//! crosses: request ids, tracing spans, per-route metrics, the request timeout, the
//! body limit, gzip, and one error shape for every failure. The storefront page
//! (`storefront`) is merged beside the API, outside the document.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ShapedError};
use crate::handlers::{
    catalog, events, fair, internal, notifications, ops, orders, users, waitlist,
};
use crate::openapi::ApiDoc;
use crate::state::AppState;
use crate::{auth, idempotency, storefront, telemetry};

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
    let (mut routes, document) = api(&state).split_for_parts();
    if state.options().storefront {
        routes = routes.merge(storefront::routes());
    }

    let request_id = HeaderName::from_static(REQUEST_ID);
    routes
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(Arc::new(document)))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
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

/// The routes and their OpenAPI entries: public ones (optional `Idempotency-Key`),
/// the internal API behind its token, and the operations endpoints.
fn api(state: &AppState) -> OpenApiRouter<AppState> {
    let idempotent = || middleware::from_fn_with_state(state.clone(), idempotency::layer);

    let public = OpenApiRouter::new()
        .routes(routes!(users::register))
        .routes(routes!(users::login))
        .routes(routes!(users::me))
        .routes(routes!(users::get_user))
        .routes(routes!(users::follow, users::unfollow))
        .routes(routes!(users::followers))
        .routes(routes!(users::following))
        .routes(routes!(catalog::create_product, catalog::list_products))
        .routes(routes!(catalog::get_product, catalog::patch_product))
        .routes(routes!(catalog::create_drop, catalog::list_drops))
        .routes(routes!(catalog::get_drop))
        .routes(routes!(catalog::cancel_drop))
        .routes(routes!(events::drop_events))
        .routes(routes!(waitlist::join, waitlist::read, waitlist::leave))
        .routes(routes!(fair::enter, fair::read, fair::withdraw))
        .routes(routes!(fair::results))
        .routes(routes!(fair::join_queue))
        .routes(routes!(fair::queue_me))
        .routes(routes!(orders::place_order, orders::my_orders))
        .routes(routes!(orders::get_order))
        .routes(routes!(orders::confirm_order))
        .routes(routes!(orders::cancel_order))
        .routes(routes!(orders::extend_order))
        .routes(routes!(notifications::list))
        .routes(routes!(notifications::mark_all_read))
        .routes(routes!(notifications::mark_read))
        .route_layer(idempotent());

    let internal = OpenApiRouter::new()
        .routes(routes!(internal::adjust))
        .routes(routes!(internal::ledger))
        .routes(routes!(internal::invalidate))
        .route_layer(idempotent())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_internal,
        ));

    let operations = OpenApiRouter::new()
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi));

    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(public)
        .merge(internal)
        .merge(operations)
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::no_route(uri.path())
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// Gives any error response that some layer produced without our body (a bare
/// status, such as the timeout layer's 408) the error shape, keeping its status and
/// headers.
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
