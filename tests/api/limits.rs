//! Limits and malformed input never corrupt or block later requests.

use reqwest::StatusCode;
use serde_json::json;

use errata_testkit::{expect_detail, expect_status, report, spawn_app};

#[tokio::test]
async fn bodies_over_64_kib_are_refused_with_413_and_later_requests_work() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    let mut body = report(&learner, &[("Grammar", "Articles")]);
    body["padding"] = json!("x".repeat(64 * 1024));
    let response = app.post("/simulate-and-generate", &body).await;
    let status = response.status();
    let detail = response.json::<serde_json::Value>().await.unwrap();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        detail["detail"].as_str().unwrap().contains("65536"),
        "{detail}"
    );

    // Just under the limit is fine (unknown fields are ignored).
    let mut body = report(&learner, &[("Grammar", "Articles")]);
    let base = serde_json::to_vec(&body).unwrap().len();
    body["padding"] = json!("x".repeat(64 * 1024 - base - 20));
    assert!(serde_json::to_vec(&body).unwrap().len() <= 64 * 1024);
    let response = app.post("/simulate-and-generate", &body).await;
    assert_eq!(expect_status(response, StatusCode::OK).await["recorded"], 1);
    assert_eq!(app.total_frequency(learner.user_id).await, 1);
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    let app = spawn_app().await;
    let response = app
        .post(
            "/users/",
            &json!({"username": "ana", "email": "ana@example.com", "age": 31, "extra": {"a": [1]}}),
        )
        .await;
    expect_status(response, StatusCode::CREATED).await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_same_shape() {
    let app = spawn_app().await;
    expect_detail(
        app.get("/nowhere").await,
        StatusCode::NOT_FOUND,
        "Not Found",
    )
    .await;
    let response = app.get("/simulate-and-generate").await;
    expect_detail(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "Method Not Allowed",
    )
    .await;
}

#[tokio::test]
async fn a_flood_of_bad_requests_leaves_the_service_healthy() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    let bad_bodies = [
        "{",
        "[]",
        "null",
        "{\"user_id\": []}",
        "{\"errors\": \"x\"}",
        "\u{0}\u{1}",
        "{\"user_id\": \"00000000-0000-0000-0000-000000000000\", \"errors\": [{}]}",
    ];
    for body in bad_bodies.iter().cycle().take(70) {
        let response = app.post_raw("/simulate-and-generate", *body).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body:?}"
        );
    }
    let response = app.record(&learner, &[("Grammar", "Articles")]).await;
    expect_status(response, StatusCode::OK).await;
    assert_eq!(app.total_frequency(learner.user_id).await, 1);
}
