//! Users, conversations and utterances.

use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use errata_testkit::{expect_detail, expect_invalid, expect_status, id, spawn_app};

#[tokio::test]
async fn creating_a_user_returns_201_with_the_new_id() {
    let app = spawn_app().await;
    let response = app
        .post(
            "/users/",
            &json!({"username": "ana", "email": "ana@example.com"}),
        )
        .await;
    let body = expect_status(response, StatusCode::CREATED).await;
    let user_id = id(&body, "user_id");
    assert_eq!(body["username"], "ana");
    assert_eq!(body["email"], "ana@example.com");
    assert!(chrono::DateTime::parse_from_rfc3339(body["created_at"].as_str().unwrap()).is_ok());

    let fetched = expect_status(app.get(&format!("/users/{user_id}")).await, StatusCode::OK).await;
    assert_eq!(fetched, body);
}

#[tokio::test]
async fn the_path_without_a_trailing_slash_works_too() {
    let app = spawn_app().await;
    let response = app
        .post(
            "/users",
            &json!({"username": "ana", "email": "ana@example.com"}),
        )
        .await;
    expect_status(response, StatusCode::CREATED).await;
}

#[tokio::test]
async fn emails_are_unique_case_insensitively() {
    let app = spawn_app().await;
    let first = app
        .post(
            "/users/",
            &json!({"username": "ana", "email": "Ana@Example.com"}),
        )
        .await;
    expect_status(first, StatusCode::CREATED).await;
    for email in ["ana@example.com", "ANA@EXAMPLE.COM", "  ana@example.COM "] {
        let again = app
            .post("/users/", &json!({"username": "other", "email": email}))
            .await;
        expect_detail(again, StatusCode::BAD_REQUEST, "Email already registered").await;
    }
}

#[tokio::test]
async fn a_sign_up_asked_again_gets_the_account_its_first_attempt_made() {
    // A client whose answer was lost asks again: the same username and
    // e-mail, moments later.
    let app = spawn_app().await;
    let sign_up = json!({"username": "ana", "email": "Ana@Example.com"});
    let first = expect_status(app.post("/users/", &sign_up).await, StatusCode::CREATED).await;
    for _ in 0..2 {
        let again = expect_status(app.post("/users/", &sign_up).await, StatusCode::CREATED).await;
        assert_eq!(again, first);
    }
    // Not the same sign-up: another username, or the address spelled
    // otherwise. The address is taken.
    for (username, email) in [("ana2", "Ana@Example.com"), ("ana", "ana@example.com")] {
        let other = app
            .post("/users/", &json!({"username": username, "email": email}))
            .await;
        expect_detail(other, StatusCode::BAD_REQUEST, "Email already registered").await;
    }
}

#[tokio::test]
async fn invalid_users_get_422_naming_the_field() {
    let app = spawn_app().await;
    let missing = app.post("/users/", &json!({"username": "ana"})).await;
    let e = expect_invalid(missing, json!(["body", "email"])).await;
    assert_eq!(e["type"], "missing");
    assert_eq!(e["msg"], "Field required");

    let bad_email = app
        .post(
            "/users/",
            &json!({"username": "ana", "email": "not-an-address"}),
        )
        .await;
    expect_invalid(bad_email, json!(["body", "email"])).await;

    let blank_name = app
        .post(
            "/users/",
            &json!({"username": "  ", "email": "ana@example.com"}),
        )
        .await;
    expect_invalid(blank_name, json!(["body", "username"])).await;

    let wrong_type = app
        .post(
            "/users/",
            &json!({"username": 5, "email": "ana@example.com"}),
        )
        .await;
    expect_invalid(wrong_type, json!(["body", "username"])).await;

    let malformed = app.post_raw("/users/", "{\"username\": ").await;
    let body = expect_status(malformed, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["detail"][0]["type"], "json_invalid");
    assert_eq!(body["detail"][0]["loc"][0], "body");

    let empty = app.post_raw("/users/", "").await;
    expect_invalid(empty, json!(["body"])).await;

    // None of that stored anything: the address is still free.
    let ok = app
        .post(
            "/users/",
            &json!({"username": "ana", "email": "ana@example.com"}),
        )
        .await;
    expect_status(ok, StatusCode::CREATED).await;
}

#[tokio::test]
async fn unknown_users_are_404_and_malformed_ids_422() {
    let app = spawn_app().await;
    let response = app.get(&format!("/users/{}", Uuid::new_v4())).await;
    expect_detail(response, StatusCode::NOT_FOUND, "User not found").await;
    let response = app.get("/users/42").await;
    let e = expect_invalid(response, json!(["path", "user_id"])).await;
    assert_eq!(e["type"], "uuid_parsing");
}

#[tokio::test]
async fn conversations_belong_to_existing_users() {
    let app = spawn_app().await;
    let user_id = app.create_user().await;
    let response = app
        .post("/conversations/", &json!({"user_id": user_id}))
        .await;
    let body = expect_status(response, StatusCode::CREATED).await;
    id(&body, "conversation_id");
    assert_eq!(id(&body, "user_id"), user_id);
    assert!(body["started_at"].is_string());

    let response = app
        .post("/conversations/", &json!({"user_id": Uuid::new_v4()}))
        .await;
    expect_detail(response, StatusCode::NOT_FOUND, "User not found").await;

    let response = app
        .post("/conversations/", &json!({"user_id": "nope"}))
        .await;
    expect_invalid(response, json!(["body", "user_id"])).await;
    let response = app.post("/conversations/", &json!({})).await;
    expect_invalid(response, json!(["body", "user_id"])).await;
}

#[tokio::test]
async fn utterances_are_recorded_in_the_learners_own_conversations() {
    let app = spawn_app().await;
    let user_id = app.create_user().await;
    let conversation_id = app.create_conversation(user_id).await;
    let response = app
        .post(
            "/utterances/",
            &json!({"user_id": user_id, "conversation_id": conversation_id, "content": "I has a cat."}),
        )
        .await;
    let body = expect_status(response, StatusCode::CREATED).await;
    id(&body, "utterance_id");
    assert_eq!(id(&body, "conversation_id"), conversation_id);
    assert_eq!(id(&body, "user_id"), user_id);
    assert_eq!(body["content"], "I has a cat.");
    assert!(body["timestamp"].is_string());

    // Content is optional.
    let response = app
        .post(
            "/utterances/",
            &json!({"user_id": user_id, "conversation_id": conversation_id}),
        )
        .await;
    let body = expect_status(response, StatusCode::CREATED).await;
    assert!(body["content"].is_null());

    // Another learner's conversation is not found, as is a missing one.
    let stranger = app.create_user().await;
    for (user, conversation) in [(stranger, conversation_id), (user_id, Uuid::new_v4())] {
        let response = app
            .post(
                "/utterances/",
                &json!({"user_id": user, "conversation_id": conversation, "content": "x"}),
            )
            .await;
        expect_detail(response, StatusCode::NOT_FOUND, "Conversation not found").await;
    }
}

#[tokio::test]
async fn utterance_content_is_limited_to_10000_characters() {
    let app = spawn_app().await;
    let user_id = app.create_user().await;
    let conversation_id = app.create_conversation(user_id).await;
    let at_limit = "é".repeat(10_000);
    let response = app
        .post(
            "/utterances/",
            &json!({"user_id": user_id, "conversation_id": conversation_id, "content": at_limit}),
        )
        .await;
    let body = expect_status(response, StatusCode::CREATED).await;
    assert_eq!(body["content"].as_str().unwrap().chars().count(), 10_000);

    let over = "a".repeat(10_001);
    let response = app
        .post(
            "/utterances/",
            &json!({"user_id": user_id, "conversation_id": conversation_id, "content": over}),
        )
        .await;
    let e = expect_invalid(response, json!(["body", "content"])).await;
    assert_eq!(e["type"], "string_too_long");
}
