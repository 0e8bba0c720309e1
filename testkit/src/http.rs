//! One HTTP client for every errata a test talks to, in-process or a
//! spawned `errata serve`, and the assertions on its answers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

/// (category, subcategory) → how many: frequencies shown or acknowledged
/// (or, case-folded, as the CQL counters key them).
pub type Counts = BTreeMap<(String, String), i64>;

/// A learner with one conversation and one utterance, ready to record errors.
#[derive(Debug, Clone, Copy)]
pub struct Learner {
    pub user_id: Uuid,
    pub conversation_id: Uuid,
    pub utterance_id: Uuid,
}

/// A client of one errata at `base` (`http://host:port`).
#[derive(Debug, Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(base: impl Into<String>) -> Self {
        Self::with_client(reqwest::Client::new(), base)
    }

    /// Through `client` (its timeouts, its connection pool).
    pub fn with_client(client: reqwest::Client, base: impl Into<String>) -> Self {
        Self {
            client,
            base: base.into(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("GET failed")
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.client
            .delete(self.url(path))
            .send()
            .await
            .expect("DELETE failed")
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

    /// A new learner, its conversation and an utterance.
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

    /// Posts a report of these errors without an idempotency key.
    pub async fn record(&self, learner: &Learner, errors: &[(&str, &str)]) -> Response {
        self.send_report(learner, errors, None)
            .await
            .expect("POST failed")
    }

    /// Posts a report of these errors with this idempotency key.
    pub async fn record_with_key(
        &self,
        learner: &Learner,
        errors: &[(&str, &str)],
        key: &str,
    ) -> Response {
        self.send_report(learner, errors, Some(key))
            .await
            .expect("POST failed")
    }

    /// Posts a report with a fresh idempotency key; the status of its
    /// complete answer, or why there was none (a server going away).
    pub async fn try_record(
        &self,
        learner: &Learner,
        errors: &[(&str, &str)],
    ) -> Result<StatusCode, reqwest::Error> {
        let key = Uuid::new_v4().to_string();
        self.try_record_with_key(learner, errors, &key).await
    }

    /// The same with this idempotency key.
    pub async fn try_record_with_key(
        &self,
        learner: &Learner,
        errors: &[(&str, &str)],
        key: &str,
    ) -> Result<StatusCode, reqwest::Error> {
        let response = self.send_report(learner, errors, Some(key)).await?;
        let status = response.status();
        // Only a complete answer is an acknowledgement.
        response.bytes().await?;
        Ok(status)
    }

    async fn send_report(
        &self,
        learner: &Learner,
        errors: &[(&str, &str)],
        key: Option<&str>,
    ) -> Result<Response, reqwest::Error> {
        let mut request = self.client.post(self.url("/simulate-and-generate"));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.json(&report(learner, errors)).send().await
    }

    /// The learner's frequencies as (category, subcategory, frequency), ranked.
    pub async fn frequencies(&self, user_id: Uuid) -> Vec<(String, String, i64)> {
        let response = self.get(&format!("/users/{user_id}/errors")).await;
        frequencies_in(&expect_status(response, StatusCode::OK).await)
    }

    /// The learner's frequencies as (category, subcategory) → n.
    pub async fn frequency_counts(&self, user_id: Uuid) -> Counts {
        let response = self.get(&format!("/users/{user_id}/errors")).await;
        counts_in(&expect_status(response, StatusCode::OK).await)
    }

    pub async fn total_frequency(&self, user_id: Uuid) -> i64 {
        self.frequencies(user_id).await.iter().map(|e| e.2).sum()
    }

    /// /readyz until it answers `want` (at most `within`); returns the body.
    pub async fn readyz_until(&self, want: StatusCode, within: Duration) -> String {
        let started = Instant::now();
        loop {
            let response = self.get("/readyz").await;
            let status = response.status();
            let body = response.text().await.expect("a body");
            if status == want {
                return body;
            }
            assert!(
                started.elapsed() < within,
                "/readyz still answers {status} {body} after {within:?}, not {want}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Posts the report with one idempotency key, as a client that wants it
/// counted does: retried (on the next of `replicas`) after a 503 or a
/// broken connection until it is acknowledged, at most for `within`.
/// Returns how many attempts failed first. Any other answer is a failure
/// of the test.
pub async fn record_until_acknowledged(
    replicas: &[Api],
    learner: &Learner,
    errors: &[(&str, &str)],
    within: Duration,
    pause: Duration,
) -> usize {
    let key = Uuid::new_v4().to_string();
    let started = Instant::now();
    let mut failed = 0;
    loop {
        let api = &replicas[failed % replicas.len()];
        match api.try_record_with_key(learner, errors, &key).await {
            Ok(StatusCode::OK) => return failed,
            Ok(StatusCode::SERVICE_UNAVAILABLE) | Err(_) => failed += 1,
            Ok(other) => panic!("recording answered {other}"),
        }
        assert!(
            started.elapsed() < within,
            "a report was not acknowledged in {within:?} ({failed} attempts)"
        );
        tokio::time::sleep(pause).await;
    }
}

/// The body of a report of these errors about the learner's utterance.
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

/// The (category, subcategory, frequency) list of a frequencies answer.
fn frequencies_in(body: &Value) -> Vec<(String, String, i64)> {
    body["errors"]
        .as_array()
        .expect("errors is a list")
        .iter()
        .map(|e| {
            (
                e["errorCategory"].as_str().expect("text").to_owned(),
                e["errorSubCategory"].as_str().expect("text").to_owned(),
                e["errorFrequency"].as_i64().expect("a number"),
            )
        })
        .collect()
}

/// The (category, subcategory) → frequency of a frequencies answer.
pub fn counts_in(body: &Value) -> Counts {
    frequencies_in(body)
        .into_iter()
        .map(|(c, s, n)| ((c, s), n))
        .collect()
}

/// The counts keyed as the CQL counters key them (case-folded names).
pub fn case_folded(counts: &Counts) -> Counts {
    let mut folded = Counts::new();
    for ((c, s), n) in counts {
        *folded
            .entry((c.to_lowercase(), s.to_lowercase()))
            .or_insert(0) += n;
    }
    folded
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
