//! One way to get a running errata for a test: [`spawn_app`] starts the real
//! server on port 0 with a fresh store and returns a client for it.
//!
//! The backend is chosen by configuration, so the same suite runs against
//! every store: `ERRATA_TEST_STORE=embedded` (the default) gives each test a
//! temporary SQLite file; `ERRATA_TEST_STORE=cql` gives each test its own
//! `redis-server` child process and the CQL server named by
//! `ERRATA_TEST_CQL=host:port`, in one keyspace per test run.

use std::net::SocketAddr;

use errata::clock::Clock;
use errata::config::{Config, StoreKind};
use errata::startup::Application;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

#[path = "../support/cql.rs"]
pub mod cql_support;

use cql_support::{KeyspaceSlot, RedisServer};

pub struct TestApp {
    pub address: SocketAddr,
    pub client: reqwest::Client,
    /// The app's clock: set it to record at another time.
    pub clock: Clock,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    _data: TempDir,
    /// Cql mode: this test's Redis (killed when the app is dropped).
    _redis: Option<RedisServer>,
    _keyspace: Option<KeyspaceSlot>,
}

/// A learner with one conversation and one utterance, ready to record errors.
#[derive(Debug, Clone, Copy)]
pub struct Learner {
    pub user_id: Uuid,
    pub conversation_id: Uuid,
    pub utterance_id: Uuid,
}

fn test_store() -> StoreKind {
    match std::env::var("ERRATA_TEST_STORE").as_deref() {
        Err(_) | Ok("") | Ok("embedded") => StoreKind::Embedded,
        Ok("cql") => StoreKind::Cql,
        Ok(other) => panic!("ERRATA_TEST_STORE={other:?}: expected embedded or cql"),
    }
}

async fn base_config(
    data: &TempDir,
    redis: Option<&RedisServer>,
) -> (Config, Option<KeyspaceSlot>) {
    let (mut config, slot) = match redis {
        Some(redis) => {
            let (config, slot) = cql_support::cql_config(&redis.url()).await;
            (config, Some(slot))
        }
        None => (
            Config {
                bind: "127.0.0.1:0".parse().unwrap(),
                data_dir: data.path().to_owned(),
                flush_interval_ms: 50,
                ..Config::default()
            },
            None,
        ),
    };
    config.data_dir = data.path().to_owned();
    (config, slot)
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts errata with the test configuration, adjusted by `adjust`.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let data = tempfile::tempdir().expect("a temporary data folder");
    let redis = (test_store() == StoreKind::Cql).then(RedisServer::start);
    let (mut config, keyspace) = base_config(&data, redis.as_ref()).await;
    adjust(&mut config);
    let clock = Clock::system();
    let app = Application::build_with_clock(&config, clock.clone())
        .await
        .expect("errata failed to start");
    let address = app.local_addr().unwrap();
    let (shutdown, stop) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stop.await;
    }));
    TestApp {
        address,
        client: reqwest::Client::new(),
        clock,
        shutdown: Some(shutdown),
        server: Some(server),
        _data: data,
        _redis: redis,
        _keyspace: keyspace,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("GET failed")
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST failed")
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Response {
        self.client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST failed")
    }

    pub async fn create_user(&self) -> Uuid {
        let email = format!("{}@example.com", Uuid::new_v4());
        let response = self
            .post("/users/", &json!({"username": "learner", "email": email}))
            .await;
        let body = expect_status(response, StatusCode::CREATED).await;
        id(&body, "user_id")
    }

    pub async fn create_conversation(&self, user_id: Uuid) -> Uuid {
        let response = self
            .post("/conversations/", &json!({"user_id": user_id}))
            .await;
        let body = expect_status(response, StatusCode::CREATED).await;
        id(&body, "conversation_id")
    }

    pub async fn create_utterance(
        &self,
        user_id: Uuid,
        conversation_id: Uuid,
        content: &str,
    ) -> Uuid {
        let response = self
            .post(
                "/utterances/",
                &json!({"user_id": user_id, "conversation_id": conversation_id, "content": content}),
            )
            .await;
        let body = expect_status(response, StatusCode::CREATED).await;
        id(&body, "utterance_id")
    }

    pub async fn learner(&self) -> Learner {
        let user_id = self.create_user().await;
        let conversation_id = self.create_conversation(user_id).await;
        let utterance_id = self
            .create_utterance(user_id, conversation_id, "He go to school every days.")
            .await;
        Learner {
            user_id,
            conversation_id,
            utterance_id,
        }
    }

    /// Another utterance in the learner's conversation.
    pub async fn say(&self, learner: &Learner, content: &str) -> Learner {
        let utterance_id = self
            .create_utterance(learner.user_id, learner.conversation_id, content)
            .await;
        Learner {
            utterance_id,
            ..*learner
        }
    }

    pub async fn record(&self, learner: &Learner, errors: &[(&str, &str)]) -> Response {
        self.post("/simulate-and-generate", &report(learner, errors))
            .await
    }

    pub async fn record_with_key(
        &self,
        learner: &Learner,
        errors: &[(&str, &str)],
        key: &str,
    ) -> Response {
        self.client
            .post(self.url("/simulate-and-generate"))
            .header("Idempotency-Key", key)
            .json(&report(learner, errors))
            .send()
            .await
            .expect("POST failed")
    }

    /// The learner's frequencies as (category, subcategory, frequency), ranked.
    pub async fn frequencies(&self, user_id: Uuid) -> Vec<(String, String, i64)> {
        let response = self.get(&format!("/users/{user_id}/errors")).await;
        let body = expect_status(response, StatusCode::OK).await;
        body["errors"]
            .as_array()
            .expect("errors is a list")
            .iter()
            .map(|e| {
                (
                    e["errorCategory"].as_str().unwrap().to_owned(),
                    e["errorSubCategory"].as_str().unwrap().to_owned(),
                    e["errorFrequency"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    pub async fn total_frequency(&self, user_id: Uuid) -> i64 {
        self.frequencies(user_id).await.iter().map(|e| e.2).sum()
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

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
    }
}

pub fn report(learner: &Learner, errors: &[(&str, &str)]) -> Value {
    json!({
        "user_id": learner.user_id,
        "conversation_id": learner.conversation_id,
        "utterance_id": learner.utterance_id,
        "errors": errors
            .iter()
            .map(|(c, s)| json!({"errorCategory": c, "errorSubCategory": s}))
            .collect::<Vec<_>>(),
    })
}

/// Asserts the status (showing the body when it differs) and returns the JSON body.
pub async fn expect_status(response: Response, status: StatusCode) -> Value {
    let actual = response.status();
    let text = response.text().await.expect("a response body");
    assert_eq!(actual, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("body is not JSON: {text}"))
}

/// Asserts a `{"detail": "..."}` error with this status and text.
pub async fn expect_detail(response: Response, status: StatusCode, detail: &str) {
    let body = expect_status(response, status).await;
    assert_eq!(body, json!({ "detail": detail }));
}

/// Asserts a 422 whose detail list has an entry at `loc`; returns that entry.
pub async fn expect_invalid(response: Response, loc: Value) -> Value {
    let body = expect_status(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let errors = body["detail"].as_array().expect("detail is a list");
    errors
        .iter()
        .find(|e| e["loc"] == loc)
        .unwrap_or_else(|| panic!("no error at {loc}: {body}"))
        .clone()
}

pub fn id(body: &Value, field: &str) -> Uuid {
    body[field]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .unwrap_or_else(|| panic!("{field} is not a UUID in {body}"))
}
