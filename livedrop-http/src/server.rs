//! Serving: [`build`] assembles a server from its [`Settings`] (the backends
//! wired, the admin bootstrapped, the demo seeded) and binds its address; [`Server::serve`] runs the background tasks and the router until
//! shutdown, then drains and closes. `src/main.rs` is a thin shell over this module,
//! so tests can start a server in-process too.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use livedrop_core::service::Livedrop;
use tokio::net::TcpListener;

use crate::state::AppState;
use crate::wiring::{wire, Closer};

pub use crate::demo::{seed_demo, Demo};
pub use crate::settings::Settings;

/// A configured server, bound to its address, not yet serving.
pub struct Server {
    state: AppState,
    listener: TcpListener,
    local_addr: SocketAddr,
    demo: Option<Demo>,
    closers: Vec<Closer>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// Connects the configured backends (running migrations), bootstraps the admin,
/// seeds the demo if asked, and binds the address. Every failure is one clear line.
pub async fn build(settings: &Settings) -> anyhow::Result<Server> {
    let addr = settings.socket_addr()?;
    settings.check()?;
    let wiring = wire(settings).await?;
    let livedrop = Livedrop::new(wiring.ports.clone(), settings.core_config());
    if let Some(admin) = settings.admin()? {
        let user = livedrop
            .bootstrap_admin(admin.email, admin.password, "Administrator")
            .await
            .with_context(|| format!("admin bootstrap for {} failed", admin.email))?;
        tracing::info!(admin = %user.id, email = %user.email, "admin account ready");
    }
    let tokens = settings.token_keys()?;
    let options = settings.http_options(tokens, wiring.readiness(&livedrop));
    let state = AppState::new(livedrop, options);
    let demo = if settings.demo {
        Some(seed_demo(&state).await.context("demo seeding failed")?)
    } else {
        None
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local_addr = listener.local_addr().context("no local address")?;
    Ok(Server {
        state,
        listener,
        local_addr,
        demo,
        closers: wiring.closers,
    })
}

impl Server {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The router's state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// What `--demo` seeded.
    pub fn demo(&self) -> Option<&Demo> {
        self.demo.as_ref()
    }

    /// Runs the background tasks and serves until `shutdown` completes; then stops
    /// accepting, ends live streams, drains in-flight requests, stops the background
    /// tasks and closes the backends.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Server {
            state,
            listener,
            local_addr,
            closers,
            ..
        } = self;
        let background = state.livedrop().spawn_background();
        let housekeeping = {
            let state = state.clone();
            let token = state.shutdown_token();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = every.tick() => state.limits().retain_recent(),
                    }
                }
            })
        };
        let token = state.shutdown_token();
        let app = crate::routes::router(state.clone());
        tracing::info!(addr = %local_addr, "serving");
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight requests");
            token.cancel();
        })
        .await;
        state.shutdown_token().cancel();
        let _ = housekeeping.await;
        background.shutdown().await;
        for close in closers {
            close.await;
        }
        tracing::info!("stopped");
        served.context("the server failed")
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
