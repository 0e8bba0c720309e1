//! Recording error points: existence checks, deduplication, normalisation,
//! read-your-writes and the recent-errors listing.

use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use errata_testkit::{expect_detail, expect_invalid, expect_status, report, spawn_app, Learner};

const SVA: (&str, &str) = ("Grammar", "Subject-Verb Agreement");
const ARTICLES: (&str, &str) = ("Grammar", "Articles");
const WORD_CHOICE: (&str, &str) = ("Vocabulary", "Word Choice");

fn triples(v: &[(&str, &str, i64)]) -> Vec<(String, String, i64)> {
    v.iter()
        .map(|(c, s, n)| (c.to_string(), s.to_string(), *n))
        .collect()
}

#[tokio::test]
async fn the_seed_flow_works_end_to_end() {
    let app = spawn_app().await;
    let user = expect_status(
        app.post(
            "/users/",
            &json!({"username": "john_doe", "email": "john@example.com"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let conversation = expect_status(
        app.post("/conversations/", &json!({"user_id": user["user_id"]}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let utterance = expect_status(
        app.post(
            "/utterances/",
            &json!({
                "conversation_id": conversation["conversation_id"],
                "user_id": user["user_id"],
                "content": "She go to school every day."
            }),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let recorded = expect_status(
        app.post(
            "/simulate-and-generate",
            &json!({
                "user_id": user["user_id"],
                "conversation_id": conversation["conversation_id"],
                "utterance_id": utterance["utterance_id"],
                "errors": [
                    {"errorCategory": "Grammar", "errorSubCategory": "Subject-Verb Agreement"},
                    {"errorCategory": "Grammar", "errorSubCategory": "Verb Tense"},
                    {"errorCategory": "Grammar", "errorSubCategory": "Subject-Verb Agreement"}
                ]
            }),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(recorded["recorded"], 3);
    assert_eq!(recorded["duplicate"], false);
    assert!(recorded["message"].is_string());

    let user_id = user["user_id"].as_str().unwrap();
    let practice = expect_status(
        app.get(&format!("/generate-exercise?user_id={user_id}&top_n=2"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(practice["user_id"], user["user_id"]);
    assert_eq!(
        practice["top_errors"],
        json!([
            {"errorCategory": "Grammar", "errorSubCategory": "Subject-Verb Agreement", "errorFrequency": 2},
            {"errorCategory": "Grammar", "errorSubCategory": "Verb Tense", "errorFrequency": 1}
        ])
    );
    let exercises = practice["exercises"].as_array().unwrap();
    assert_eq!(exercises.len(), 4, "two per top error by default");
}

#[tokio::test]
async fn missing_references_are_404_naming_what_is_missing_and_count_nothing() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    let other = app.learner().await;
    let cases = [
        (
            Learner {
                user_id: Uuid::new_v4(),
                ..learner
            },
            "User not found",
        ),
        (
            Learner {
                conversation_id: Uuid::new_v4(),
                ..learner
            },
            "Conversation not found",
        ),
        (
            Learner {
                utterance_id: Uuid::new_v4(),
                ..learner
            },
            "Utterance not found",
        ),
        // Everything exists but does not belong together.
        (
            Learner {
                conversation_id: other.conversation_id,
                ..learner
            },
            "Conversation not found",
        ),
        (
            Learner {
                utterance_id: other.utterance_id,
                ..learner
            },
            "Utterance not found",
        ),
    ];
    for (bad, detail) in cases {
        expect_detail(
            app.record(&bad, &[SVA]).await,
            StatusCode::NOT_FOUND,
            detail,
        )
        .await;
    }
    assert_eq!(app.frequencies(learner.user_id).await, vec![]);
    assert_eq!(app.frequencies(other.user_id).await, vec![]);
}

#[tokio::test]
async fn an_identical_retry_counts_once() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    let first = expect_status(app.record(&learner, &[SVA, ARTICLES]).await, StatusCode::OK).await;
    assert_eq!(
        (first["recorded"].clone(), first["duplicate"].clone()),
        (json!(2), json!(false))
    );

    // The same list in another order and spelling is the same request.
    let retries = [
        vec![SVA, ARTICLES],
        vec![ARTICLES, SVA],
        vec![
            ("  grammar ", "ARTICLES"),
            ("GRAMMAR", "subject-verb   agreement"),
        ],
    ];
    for errors in retries {
        let again = expect_status(app.record(&learner, &errors).await, StatusCode::OK).await;
        assert_eq!(again["duplicate"], true, "{errors:?} was counted again");
        assert_eq!(again["recorded"], 0);
    }
    // A different list for the same utterance is a different request.
    let more = expect_status(app.record(&learner, &[SVA]).await, StatusCode::OK).await;
    assert_eq!(more["duplicate"], false);
    assert_eq!(
        app.frequencies(learner.user_id).await,
        triples(&[
            ("Grammar", "Subject-Verb Agreement", 2),
            ("Grammar", "Articles", 1)
        ])
    );
}

#[tokio::test]
async fn the_idempotency_key_identifies_a_request() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    let key = Uuid::new_v4().to_string();
    let first = expect_status(
        app.record_with_key(&learner, &[SVA], &key).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(first["duplicate"], false);
    let again = expect_status(
        app.record_with_key(&learner, &[SVA], &key).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(again["duplicate"], true);
    // Same content under fresh keys: each key is a new request.
    for _ in 0..3 {
        let fresh = Uuid::new_v4().to_string();
        let r = expect_status(
            app.record_with_key(&learner, &[SVA], &fresh).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(r["duplicate"], false);
    }
    assert_eq!(app.total_frequency(learner.user_id).await, 4);

    let too_long = "k".repeat(256);
    let response = app.record_with_key(&learner, &[SVA], &too_long).await;
    expect_invalid(response, json!(["header", "idempotency-key"])).await;
}

#[tokio::test]
async fn names_are_normalised_and_the_first_spelling_is_shown() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    let spellings = [
        ("Grammar", "Subject-Verb Agreement"),
        ("grammar", "subject-verb agreement"),
        ("  GRAMMAR\t", "Subject-Verb \n  AGREEMENT "),
    ];
    for spelling in spellings {
        let said = app.say(&learner, "He go home.").await;
        expect_status(app.record(&said, &[spelling]).await, StatusCode::OK).await;
    }
    assert_eq!(
        app.frequencies(learner.user_id).await,
        triples(&[("Grammar", "Subject-Verb Agreement", 3)])
    );
}

#[tokio::test]
async fn any_unicode_and_punctuation_in_names_is_safe() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    let hostile = [
        ("Grammar:Tense", "a:b:c"),
        ("{user_id}", "}{"),
        ("Grammatik", "Verbstellung – Nebensatz"),
        ("文法", "時制の一致 🙂"),
        ("\"quoted\"", "back\\slash; DROP TABLE users;--"),
        ("Grammar", "Tense:"),
        ("Grammar:", "Tense"),
    ];
    let said = app.say(&learner, "Various.").await;
    let response = app.record(&said, &hostile).await;
    assert_eq!(
        expect_status(response, StatusCode::OK).await["recorded"],
        hostile.len()
    );
    let frequencies = app.frequencies(learner.user_id).await;
    assert_eq!(frequencies.len(), hostile.len(), "{frequencies:?}");
    for (c, s) in hostile {
        assert!(
            frequencies
                .iter()
                .any(|(fc, fs, n)| fc == c && fs == s && *n == 1),
            "{c} / {s} missing from {frequencies:?}"
        );
    }
    // Later, ordinary requests for the same learner are unaffected.
    let said = app.say(&learner, "More.").await;
    expect_status(app.record(&said, &[SVA, SVA]).await, StatusCode::OK).await;
    let frequencies = app.frequencies(learner.user_id).await;
    assert_eq!(
        frequencies[0],
        ("Grammar".into(), "Subject-Verb Agreement".into(), 2)
    );
    let practice = app
        .get(&format!(
            "/generate-exercise?user_id={}&top_n=50",
            learner.user_id
        ))
        .await;
    let practice = expect_status(practice, StatusCode::OK).await;
    assert_eq!(
        practice["top_errors"].as_array().unwrap().len(),
        hostile.len() + 1
    );
}

#[tokio::test]
async fn invalid_error_points_are_422_and_count_nothing() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    let long = "x".repeat(65);
    let response = app.record(&learner, &[SVA, ("Grammar", "   ")]).await;
    let e = expect_invalid(response, json!(["body", "errors", 1, "errorSubCategory"])).await;
    assert_eq!(e["type"], "value_error");
    let response = app.record(&learner, &[(long.as_str(), "Tense")]).await;
    expect_invalid(response, json!(["body", "errors", 0, "errorCategory"])).await;

    let sixty_five = vec![SVA; 65];
    let response = app.record(&learner, &sixty_five).await;
    let e = expect_invalid(response, json!(["body", "errors"])).await;
    assert_eq!(e["type"], "too_long");

    let mut missing = report(&learner, &[SVA]);
    missing["errors"][0]
        .as_object_mut()
        .unwrap()
        .remove("errorSubCategory");
    let response = app.post("/simulate-and-generate", &missing).await;
    expect_invalid(response, json!(["body", "errors", 0, "errorSubCategory"])).await;

    let response = app
        .post(
            "/simulate-and-generate",
            &json!({"user_id": learner.user_id}),
        )
        .await;
    expect_invalid(response, json!(["body", "conversation_id"])).await;

    assert_eq!(app.frequencies(learner.user_id).await, vec![]);

    // The limits themselves are accepted.
    let at_limit = "é".repeat(64);
    let sixty_four = vec![(at_limit.as_str(), "Tense"); 64];
    let response = app.record(&learner, &sixty_four).await;
    assert_eq!(
        expect_status(response, StatusCode::OK).await["recorded"],
        64
    );
    assert_eq!(app.total_frequency(learner.user_id).await, 64);
}

#[tokio::test]
async fn every_acknowledged_error_is_visible_to_the_next_read() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    for n in 1..=25 {
        let said = app.say(&learner, "I goed there.").await;
        let error = if n % 2 == 0 { SVA } else { WORD_CHOICE };
        expect_status(app.record(&said, &[error]).await, StatusCode::OK).await;
        assert_eq!(app.total_frequency(learner.user_id).await, n);
        let practice = app
            .get(&format!("/generate-exercise?user_id={}", learner.user_id))
            .await;
        let practice = expect_status(practice, StatusCode::OK).await;
        let total: i64 = practice["top_errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["errorFrequency"].as_i64().unwrap())
            .sum();
        assert_eq!(total, n);
    }
}

#[tokio::test]
async fn ranking_breaks_ties_by_recency_then_name() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    for errors in [
        vec![("Grammar", "B")],
        vec![("Grammar", "A")],
        vec![WORD_CHOICE, WORD_CHOICE],
    ] {
        let said = app.say(&learner, "x").await;
        expect_status(app.record(&said, &errors).await, StatusCode::OK).await;
    }
    let said = app.say(&learner, "x").await;
    expect_status(
        app.record(&said, &[("Grammar", "B"), ("Grammar", "C")])
            .await,
        StatusCode::OK,
    )
    .await;
    // B: 2 (latest), Word Choice: 2 (older), C: 1 (latest), A: 1 (older).
    let names: Vec<String> = app
        .frequencies(learner.user_id)
        .await
        .into_iter()
        .map(|(_, s, _)| s)
        .collect();
    assert_eq!(names, ["B", "Word Choice", "C", "A"]);
}

#[tokio::test]
async fn the_utterance_route_records_the_same_way() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    let path = format!("/utterances/{}/errors", learner.utterance_id);
    let body = json!({
        "user_id": learner.user_id,
        "conversation_id": learner.conversation_id,
        "errors": [{"errorCategory": "Grammar", "errorSubCategory": "Articles"}]
    });
    let r = expect_status(app.post(&path, &body).await, StatusCode::OK).await;
    assert_eq!(r["recorded"], 1);
    // Same utterance and list through the other route: a duplicate.
    let r = expect_status(app.record(&learner, &[ARTICLES]).await, StatusCode::OK).await;
    assert_eq!(r["duplicate"], true);

    let mut mismatched = body.clone();
    mismatched["utterance_id"] = Value::from(Uuid::new_v4().to_string());
    expect_invalid(
        app.post(&path, &mismatched).await,
        json!(["body", "utterance_id"]),
    )
    .await;
    let response = app.post("/utterances/nope/errors", &body).await;
    expect_invalid(response, json!(["path", "utterance_id"])).await;
    assert_eq!(app.total_frequency(learner.user_id).await, 1);
}

#[tokio::test]
async fn recent_errors_list_the_latest_points_with_their_sentences() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    let first = app.say(&learner, "I have went there.").await;
    expect_status(
        app.record(&first, &[("Grammar", "Verb Tense")]).await,
        StatusCode::OK,
    )
    .await;
    let second = app.say(&learner, "She make a photo.").await;
    expect_status(
        app.record(&second, &[WORD_CHOICE, SVA]).await,
        StatusCode::OK,
    )
    .await;

    let body = expect_status(
        app.get(&format!("/users/{}/errors/recent", learner.user_id))
            .await,
        StatusCode::OK,
    )
    .await;
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 3);
    assert_eq!(errors[2]["errorSubCategory"], "Verb Tense");
    assert_eq!(errors[2]["utterance"], "I have went there.");
    assert_eq!(errors[2]["utterance_id"], first.utterance_id.to_string());
    assert_eq!(errors[0]["utterance"], "She make a photo.");
    assert_eq!(
        errors[0]["conversation_id"],
        learner.conversation_id.to_string()
    );

    let limited = expect_status(
        app.get(&format!("/users/{}/errors/recent?limit=1", learner.user_id))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(limited["errors"].as_array().unwrap().len(), 1);

    for bad in ["0", "101", "many"] {
        let response = app
            .get(&format!(
                "/users/{}/errors/recent?limit={bad}",
                learner.user_id
            ))
            .await;
        expect_invalid(response, json!(["query", "limit"])).await;
    }
    let response = app
        .get(&format!("/users/{}/errors/recent", Uuid::new_v4()))
        .await;
    expect_detail(response, StatusCode::NOT_FOUND, "User not found").await;
    let response = app.get(&format!("/users/{}/errors", Uuid::new_v4())).await;
    expect_detail(response, StatusCode::NOT_FOUND, "User not found").await;
}
