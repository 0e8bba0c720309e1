//! Building and running the server: bind, serve, shut down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::config::Config;
use crate::domain::ExerciseBank;
use crate::http::{self, AppState};
use crate::store::{self, Background, Store};
use crate::telemetry;

pub struct Application {
    listener: TcpListener,
    store: Arc<dyn Store>,
    state: AppState,
}

impl Application {
    /// Opens the store and binds the listener (port 0 picks a free port).
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Clock::system()).await
    }

    /// The same, with the clock requests are recorded by (a test moves it
    /// to write history in past weeks).
    pub async fn build_with_clock(config: &Config, clock: Clock) -> anyhow::Result<Self> {
        Self::build_with(config, clock, Background::Serve).await
    }

    /// The same, with the store's background work chosen: a test that
    /// plays the flusher itself serves with `Background::Command`.
    pub async fn build_with(
        config: &Config,
        clock: Clock,
        background: Background,
    ) -> anyhow::Result<Self> {
        telemetry::prometheus();
        let bank = ExerciseBank::shipped().context("loading the exercise bank")?;
        let store = store::open_for(config, background)
            .await
            .context("opening the store")?;
        let listener = TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("binding {}", config.bind))?;
        let state = AppState {
            store: store.clone(),
            bank: Arc::new(bank),
            tokens: Arc::new(config.tokens()),
            clock,
        };
        Ok(Self {
            listener,
            store,
            state,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, lets in-flight requests finish,
    /// then drains the store's buffers. The store is shut down however
    /// serving ends; a serving error is still what this returns.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            store,
            state,
        } = self;
        let serving = async move {
            let router = http::router(state);
            tracing::info!(addr = %listener.local_addr()?, "errata listening");
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
                .context("serving HTTP")
        };
        serve_then_shut_down(store.as_ref(), serving).await
    }
}

/// Runs `serving` with the store's workers beside it, then shuts the store
/// down whether serving ended well or not: its buffered writes are drained
/// and its workers joined on every way out.
async fn serve_then_shut_down(
    store: &dyn Store,
    serving: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    tracing::info!(workers = ?store.workers(), "background workers running");
    let served = serving.await;
    if let Err(e) = &served {
        tracing::error!(error = format!("{e:#}"), "serving failed; shutting down");
    }
    tracing::info!("draining buffered writes before exit");
    let drained = store.shutdown().await.context("draining the store");
    tracing::info!(still_running = ?store.workers(), "background workers stopped");
    served.and(drained)
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    /// Serving that fails still shuts the store down, and the serving
    /// error is what comes back.
    #[tokio::test]
    async fn the_store_shuts_down_when_serving_fails() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        assert!(!store.workers().is_empty());
        let failed = serve_then_shut_down(&store, async { Err(anyhow::anyhow!("accept failed")) })
            .await
            .unwrap_err();
        assert_eq!(failed.to_string(), "accept failed");
        assert_eq!(store.workers(), Vec::<&str>::new());
        assert!(store.check_ready().await.is_err(), "writes still accepted");
    }

    /// And so does serving that ends well.
    #[tokio::test]
    async fn the_store_shuts_down_when_serving_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        serve_then_shut_down(&store, async { Ok(()) })
            .await
            .unwrap();
        assert_eq!(store.workers(), Vec::<&str>::new());
    }
}
