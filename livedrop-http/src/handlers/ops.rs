//! Operations: liveness, readiness, metrics, the OpenAPI document.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Extension;
use serde_json::json;

use crate::body::{CheckBody, HealthBody};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::Json;
use crate::state::AppState;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Up", body = HealthBody)))]
pub(crate) async fn healthz() -> Json<HealthBody> {
    Json(HealthBody {
        status: "ok".into(),
        checks: vec![],
    })
}

/// Every required dependency answers (each probe bounded by 2 s). A failing optional
/// one (the cache: reads fall back to the store and orders never use it) is reported
/// as `degraded` while the instance stays in rotation.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = HealthBody),
        (status = 503, description = "unavailable, naming the failing dependencies", body = ErrorBody),
    ))]
pub(crate) async fn readyz(State(state): State<AppState>) -> ApiResult<Json<HealthBody>> {
    let probes = state.options().readiness.iter().map(|c| async move {
        let outcome = match tokio::time::timeout(Duration::from_secs(2), (c.check)()).await {
            Ok(r) => r,
            Err(_) => Err("timed out after 2 s".to_owned()),
        };
        (c.name.clone(), c.required, outcome)
    });
    let results = futures::future::join_all(probes).await;
    let mut checks = Vec::new();
    let mut failing = Vec::new();
    for (name, required, outcome) in results {
        let status = match outcome {
            Ok(()) => "ok",
            Err(cause) if !required => {
                tracing::warn!(dependency = %name, %cause, "optional dependency failing; serving without it");
                "degraded"
            }
            Err(cause) => {
                tracing::warn!(dependency = %name, %cause, "readiness check failed");
                failing.push(name.clone());
                "failing"
            }
        };
        checks.push(CheckBody {
            name,
            status: status.into(),
        });
    }
    let degraded = checks.iter().any(|c| c.status == "degraded");
    if failing.is_empty() {
        Ok(Json(HealthBody {
            status: if degraded { "degraded" } else { "ok" }.into(),
            checks,
        }))
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("{} unavailable", failing.join(", ")),
        )
        .with_details(
            json!({ "dependency": failing.join(","), "failing": failing, "checks": checks }),
        ))
    }
}

/// Prometheus text: requests and latencies by route and status, orders placed and
/// rejected by code, cache hits/misses/errors, outbox backlog.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let text = crate::telemetry::render(&state).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub(crate) async fn openapi(
    Extension(document): Extension<Arc<utoipa::openapi::OpenApi>>,
) -> impl IntoResponse {
    axum::Json(document.as_ref().clone())
}
