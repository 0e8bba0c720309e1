//! One way to get a running errata in the test's own process:
//! [`spawn_app`] starts the real server on port 0 with a fresh store and
//! returns a client for it.
//!
//! The backend is chosen by configuration, so the same suite runs against
//! every store: `ERRATA_TEST_STORE=embedded` (the default) gives each test a
//! temporary SQLite file; `ERRATA_TEST_STORE=cql` gives each test its own
//! `redis-server` child process and the CQL server named by
//! `ERRATA_TEST_CQL=host:port`, in a keyspace of its own while it runs.

use std::net::SocketAddr;
use std::ops::Deref;

use errata::clock::Clock;
use errata::config::{Config, StoreKind};
use errata::startup::Application;
use errata::store::Background;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::{cql_config, test_config};
use crate::cql::KeyspaceSlot;
use crate::http::Api;
use crate::redis_server::TestRedis;

/// errata serving in this process; stopped when dropped. Its [`Api`] is
/// reached through it (`app.learner()`, `app.get(…)`).
pub struct TestApp {
    pub api: Api,
    /// The app's clock: set it to record at another time.
    pub clock: Clock,
    pub address: SocketAddr,
    /// What it was started with (for `errata flush` on the same store, say).
    pub config: Config,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    /// Cql mode: this test's Redis (killed when the app is dropped).
    redis: Option<TestRedis>,
    _keyspace: Option<KeyspaceSlot>,
    _data: TempDir,
}

/// The store `ERRATA_TEST_STORE` names (embedded unless it says cql).
fn test_store() -> StoreKind {
    match std::env::var("ERRATA_TEST_STORE").as_deref() {
        Err(_) | Ok("") | Ok("embedded") => StoreKind::Embedded,
        Ok("cql") => StoreKind::Cql,
        Ok(other) => panic!("ERRATA_TEST_STORE={other:?}: expected embedded or cql"),
    }
}

/// errata on the store of `ERRATA_TEST_STORE`, with the test configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// The same, the configuration adjusted by `adjust`.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    TestApp::spawn(test_store(), adjust).await
}

impl TestApp {
    /// errata on a fresh `store`: a temporary data folder, and in cql mode
    /// a Redis and a keyspace of its own; the test configuration adjusted
    /// by `adjust`.
    pub async fn spawn(store: StoreKind, adjust: impl FnOnce(&mut Config)) -> Self {
        let redis = (store == StoreKind::Cql).then(TestRedis::start);
        Self::spawn_with(redis, adjust).await
    }

    /// errata in cql mode on `redis`, with no background flusher (the test
    /// plays the flusher, or runs `errata flush`).
    pub async fn spawn_without_flusher(redis: TestRedis) -> Self {
        Self::start(Some(redis), |_| {}, Background::Command).await
    }

    /// errata in cql mode on `redis` (in embedded mode without one).
    pub async fn spawn_with(redis: Option<TestRedis>, adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start(redis, adjust, Background::Serve).await
    }

    /// errata in cql mode on a Redis the test holds itself (its servers,
    /// or a proxy in front of them) at `redis_url`.
    pub async fn spawn_on_redis(redis_url: &str, adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_on(None, Some(redis_url.to_owned()), adjust, Background::Serve).await
    }

    async fn start(
        redis: Option<TestRedis>,
        adjust: impl FnOnce(&mut Config),
        background: Background,
    ) -> Self {
        let url = redis.as_ref().map(TestRedis::url);
        Self::start_on(redis, url, adjust, background).await
    }

    /// In cql mode when there is a Redis `url` (this app's `redis`, or the
    /// test's).
    async fn start_on(
        redis: Option<TestRedis>,
        url: Option<String>,
        adjust: impl FnOnce(&mut Config),
        background: Background,
    ) -> Self {
        let data = tempfile::tempdir().expect("a temporary data folder");
        let (keyspace, mut config) = match url {
            None => (None, test_config(data.path())),
            Some(url) => {
                let (mut config, slot) = cql_config(&url).await;
                config.data_dir = data.path().to_owned();
                (Some(slot), config)
            }
        };
        adjust(&mut config);
        let clock = Clock::system();
        let app = Application::build_with(&config, clock.clone(), background)
            .await
            .expect("errata failed to start");
        let address = app.local_addr().expect("a listening address");
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async move {
            let _ = stop.await;
        }));
        Self {
            api: Api::new(format!("http://{address}")),
            clock,
            address,
            config,
            shutdown: Some(shutdown),
            server: Some(server),
            redis,
            _keyspace: keyspace,
            _data: data,
        }
    }

    /// This app's Redis (cql mode only).
    pub fn redis(&self) -> &TestRedis {
        self.redis.as_ref().expect("an app in cql mode has a Redis")
    }

    /// Stops the server the way a SIGTERM would, draining buffers.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task panicked")
                .expect("server failed");
        }
    }
}

impl Deref for TestApp {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
    }
}
