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
    /// then drains the store's buffers.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let router = http::router(self.state);
        let workers = self.store.workers();
        tracing::info!(?workers, "background workers running");
        tracing::info!(addr = %self.listener.local_addr()?, "errata listening");
        axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving HTTP")?;
        tracing::info!("draining buffered writes before exit");
        self.store.shutdown().await.context("draining the store")?;
        tracing::info!(?workers, "background workers stopped");
        Ok(())
    }
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
