//! Sign-up in cql mode against the CQL server of `ERRATA_TEST_CQL`: a
//! sign-up whose e-mail claim (`INSERT … IF NOT EXISTS`) applied but whose
//! answer was lost converges when the client retries it.

use std::time::Duration;

use errata::config::StoreKind;
use errata_testkit as support;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{cql_session, TestApp};
use uuid::Uuid;

/// What a sign-up whose claim timed out but applied leaves behind: the
/// account's row and the e-mail claimed by it, created `age` ago.
async fn half_made_sign_up(keyspace: &str, username: &str, email: &str, age: Duration) -> Uuid {
    let session = cql_session().await;
    let user_id = Uuid::now_v7();
    let created_at = chrono::Utc::now() - chrono::Duration::from_std(age).expect("an age");
    session
        .query_unpaged(
            format!(
                "INSERT INTO {keyspace}.users (user_id, username, email, created_at) \
                 VALUES (?, ?, ?, ?)"
            ),
            (
                user_id,
                username,
                email,
                scylla::value::CqlTimestamp(created_at.timestamp_millis()),
            ),
        )
        .await
        .expect("the account's row");
    session
        .query_unpaged(
            format!(
                "INSERT INTO {keyspace}.users_by_email (email_key, user_id) VALUES (?, ?) \
                 IF NOT EXISTS"
            ),
            (email.to_lowercase(), user_id),
        )
        .await
        .expect("the e-mail claim");
    user_id
}

async fn sign_up(
    client: &reqwest::Client,
    base: &str,
    username: &str,
    email: &str,
) -> (StatusCode, Value) {
    let response = client
        .post(format!("{base}/users/"))
        .json(&json!({"username": username, "email": email}))
        .send()
        .await
        .expect("POST /users/");
    let status = response.status();
    (status, response.json().await.expect("JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_sign_up_whose_claim_applied_gets_that_account() {
    let app = TestApp::spawn(StoreKind::Cql, |_| {}).await;
    let (client, base) = (&app.client, app.base.as_str());
    let ks = &app.config.cql_keyspace;

    // The retry of the sign-up gets the account its first attempt made.
    let email = format!("Ana.{}@Example.com", Uuid::new_v4());
    let first = half_made_sign_up(ks, "ana", &email, Duration::from_secs(3)).await;
    let (status, body) = sign_up(client, base, "ana", &email).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["user_id"], first.to_string(), "{body}");
    assert_eq!(body["email"], email);
    let again = client
        .get(format!("{base}/users/{first}"))
        .send()
        .await
        .expect("GET");
    assert_eq!(again.status(), StatusCode::OK);
    // And again: the same answer, however often it is retried.
    let (status, body) = sign_up(client, base, "ana", &email).await;
    assert_eq!(
        (status, body["user_id"].clone()),
        (StatusCode::CREATED, json!(first.to_string()))
    );

    // Not a retry: another username, another spelling of the address, or
    // an account made long ago. The address is taken.
    let (status, body) = sign_up(client, base, "someone else", &email).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["detail"], "Email already registered");
    let (status, _) = sign_up(client, base, "ana", &email.to_lowercase()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let old = format!("old.{}@example.com", Uuid::new_v4());
    half_made_sign_up(ks, "ana", &old, Duration::from_secs(3600)).await;
    let (status, _) = sign_up(client, base, "ana", &old).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // An ordinary sign-up and a duplicate of it behave as ever.
    let fresh = format!("bo.{}@example.com", Uuid::new_v4());
    let (status, _) = sign_up(client, base, "bo", &fresh).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = sign_up(client, base, "ana", &fresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    app.shutdown().await;
}
