//! The state every handler shares.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use futures::future::BoxFuture;
use livedrop_core::service::Livedrop;
use tokio_util::sync::CancellationToken;

use crate::auth::{InternalToken, TokenKeys};
use crate::rate_limit::OrderLimits;

/// A readiness probe of one dependency: `Err` carries the cause (logged, not sent).
pub type CheckFn = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A named readiness probe.
#[derive(Clone)]
pub struct ReadinessCheck {
    /// The dependency, e.g. `store`.
    pub name: String,
    /// The probe.
    pub check: CheckFn,
    /// Whether a failure makes the instance unready. An optional dependency (the
    /// cache: reads fall back to the store, orders never use it) only degrades it.
    pub required: bool,
}

impl std::fmt::Debug for ReadinessCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadinessCheck")
            .field("name", &self.name)
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

impl ReadinessCheck {
    /// A probe named `name` of a required dependency.
    pub fn new<F, Fut>(name: &str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        Self {
            name: name.to_owned(),
            check: Arc::new(move || Box::pin(check())),
            required: true,
        }
    }

    /// The same probe, of a dependency whose failure only degrades the service.
    pub fn optional(mut self) -> Self {
        self.required = false;
        self
    }
}

/// Tunables of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Signs and checks bearer tokens.
    pub tokens: TokenKeys,
    /// The token guarding `/internal/*`; `None` disables the internal API.
    pub internal_token: Option<String>,
    /// `POST /orders` per user per second (0 = off; default 10).
    pub order_rate_per_user: u32,
    /// `POST /orders` per client address per second (0 = off, the default).
    pub order_rate_per_ip: u32,
    /// Largest request body (default 64 KiB).
    pub body_limit: usize,
    /// How long a request may take before 408 (default 30 s; streams are exempt once
    /// their headers are sent).
    pub request_timeout: Duration,
    /// Readiness probes; [`AppState::new`] adds `store` and `cache` probes over the
    /// ports when this is empty.
    pub readiness: Vec<ReadinessCheck>,
    /// Serve the storefront page at `/` (default on).
    pub storefront: bool,
}

impl HttpOptions {
    /// Defaults with `tokens`.
    pub fn new(tokens: TokenKeys) -> Self {
        Self {
            tokens,
            internal_token: None,
            order_rate_per_user: 10,
            order_rate_per_ip: 0,
            body_limit: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            readiness: Vec::new(),
            storefront: true,
        }
    }
}

struct Inner {
    livedrop: Livedrop,
    options: HttpOptions,
    limits: OrderLimits,
    internal: InternalToken,
    shutdown: CancellationToken,
}

/// The state of the router: the core services plus the HTTP layer's own parts.
/// Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over `livedrop` with `options`.
    pub fn new(livedrop: Livedrop, mut options: HttpOptions) -> Self {
        if options.readiness.is_empty() {
            options.readiness = default_checks(&livedrop);
        }
        let limits = OrderLimits::new(options.order_rate_per_user, options.order_rate_per_ip);
        let internal = InternalToken(options.internal_token.as_deref().map(Arc::from));
        Self {
            inner: Arc::new(Inner {
                livedrop,
                options,
                limits,
                internal,
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// The core services.
    pub fn livedrop(&self) -> &Livedrop {
        &self.inner.livedrop
    }

    /// The token keys.
    pub fn tokens(&self) -> &TokenKeys {
        &self.inner.options.tokens
    }

    /// The options.
    pub fn options(&self) -> &HttpOptions {
        &self.inner.options
    }

    /// The order rate limits.
    pub(crate) fn limits(&self) -> &OrderLimits {
        &self.inner.limits
    }

    /// Cancelled when the server shuts down: long-lived streams end on it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }
}

impl FromRef<AppState> for TokenKeys {
    fn from_ref(state: &AppState) -> Self {
        state.tokens().clone()
    }
}

impl FromRef<AppState> for InternalToken {
    fn from_ref(state: &AppState) -> Self {
        state.inner.internal.clone()
    }
}

/// Probes through the services: the store with a cheap read, the cache with a get.
pub(crate) fn default_checks(livedrop: &Livedrop) -> Vec<ReadinessCheck> {
    let store = livedrop.clone();
    let cache = livedrop.clone();
    vec![
        ReadinessCheck::new("store", move || {
            let livedrop = store.clone();
            async move { livedrop.probe_store().await.map_err(describe) }
        }),
        ReadinessCheck::new("cache", move || {
            let livedrop = cache.clone();
            async move { livedrop.probe_cache().await.map_err(describe) }
        })
        .optional(),
    ]
}

/// An error and its causes on one line, as a readiness probe reports them.
pub(crate) fn describe(e: impl std::error::Error + Send + Sync + 'static) -> String {
    format!("{:#}", anyhow::Error::new(e))
}
