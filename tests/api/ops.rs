//! Health, readiness, metrics, the API document and authentication.

use reqwest::StatusCode;
use serde_json::json;

use errata_testkit::{expect_detail, expect_status, spawn_app, spawn_app_with};

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    expect_status(app.get("/healthz").await, StatusCode::OK).await;
    let ready = expect_status(app.get("/readyz").await, StatusCode::OK).await;
    assert_eq!(ready["status"], "ready");
}

#[tokio::test]
async fn metrics_count_requests_per_route_and_status() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    expect_status(
        app.record(&learner, &[("Grammar", "Articles")]).await,
        StatusCode::OK,
    )
    .await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("errata_http_requests_total")
                && l.contains("route=\"/simulate-and-generate\"")
                && l.contains("status=\"200\"")
        })
        .unwrap_or_else(|| panic!("no request counter for the route in:\n{text}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1.0);
    assert!(text.contains("errata_http_request_duration_seconds_bucket"));
    // Route templates, never raw paths with ids.
    assert!(!text.contains(&learner.user_id.to_string()));
}

#[tokio::test]
async fn the_openapi_document_describes_every_endpoint() {
    let app = spawn_app().await;
    let doc = expect_status(app.get("/openapi.json").await, StatusCode::OK).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/users/",
        "/users/{user_id}",
        "/conversations/",
        "/utterances/",
        "/simulate-and-generate",
        "/utterances/{utterance_id}/errors",
        "/generate-exercise",
        "/users/{user_id}/errors",
        "/users/{user_id}/errors/recent",
        "/healthz",
        "/readyz",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not documented");
    }
    let docs = app.get("/docs").await;
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.unwrap().contains("/openapi.json"));
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;
    let response = app.get("/healthz").await;
    let id = response
        .headers()
        .get("x-request-id")
        .expect("a request id");
    assert!(!id.is_empty());
    let mine = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(mine.headers()["x-request-id"], "trace-me-42");
}

#[tokio::test]
async fn with_tokens_set_every_endpoint_but_healthz_needs_one() {
    let app = spawn_app_with(|c| c.api_tokens = vec!["s3cret".into(), "other-token".into()]).await;
    expect_status(app.get("/healthz").await, StatusCode::OK).await;
    let body = json!({"username": "ana", "email": "ana@example.com"});
    for path in ["/readyz", "/metrics", "/openapi.json", "/users/x"] {
        let response = app.get(path).await;
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        expect_detail(response, StatusCode::UNAUTHORIZED, "Not authenticated").await;
    }
    let wrong = app
        .client
        .post(app.url("/users/"))
        .bearer_auth("s3cret-not")
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_detail(wrong, StatusCode::UNAUTHORIZED, "Not authenticated").await;
    for token in ["s3cret", "other-token"] {
        let ok = app
            .client
            .get(app.url("/readyz"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        expect_status(ok, StatusCode::OK).await;
    }
    let created = app
        .client
        .post(app.url("/users/"))
        .bearer_auth("s3cret")
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_status(created, StatusCode::CREATED).await;
}

#[tokio::test]
async fn a_graceful_shutdown_finishes_cleanly() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    expect_status(
        app.record(&learner, &[("Grammar", "Articles")]).await,
        StatusCode::OK,
    )
    .await;
    app.shutdown().await;
}
