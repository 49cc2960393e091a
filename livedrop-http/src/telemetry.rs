//! Prometheus metrics and the per-request metrics middleware.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use. Metrics are global
/// to the process (the `metrics` facade has one recorder), so every router in a
/// process shares them.
pub(crate) fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let buckets = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let builder = match PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "histogram buckets refused; using summaries");
                PrometheusBuilder::new()
            }
        };
        match builder.install_recorder() {
            Ok(handle) => handle,
            Err(e) => {
                tracing::warn!(error = %e, "a metrics recorder is already installed; /metrics shows only what reaches ours");
                PrometheusBuilder::new().build_recorder().handle()
            }
        }
    })
}

/// Counts requests and records latencies by method, matched route and status.
pub(crate) async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("livedrop_http_requests_total", &labels).increment(1);
    metrics::histogram!("livedrop_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Refreshes the gauges read at scrape time (cache statistics, outbox backlog) and
/// renders the Prometheus text.
pub(crate) async fn render(state: &AppState) -> String {
    let livedrop = state.livedrop();
    let stats = livedrop.cache().stats();
    metrics::counter!("livedrop_cache_hits_total").absolute(stats.hits.load(Ordering::Relaxed));
    metrics::counter!("livedrop_cache_misses_total").absolute(stats.misses.load(Ordering::Relaxed));
    metrics::counter!("livedrop_cache_errors_total").absolute(stats.errors.load(Ordering::Relaxed));
    match tokio::time::timeout(std::time::Duration::from_secs(2), livedrop.outbox_backlog()).await {
        Ok(Ok(backlog)) => {
            metrics::gauge!("livedrop_outbox_backlog").set(backlog as f64);
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "outbox backlog unreadable"),
        Err(_) => tracing::warn!("outbox backlog read timed out"),
    }
    let handle = prometheus();
    handle.run_upkeep();
    handle.render()
}
