//! The AI's corrections: how they go in with the error points, come back
//! in the latest errors, and make every exercise gradeable.

use reqwest::StatusCode;
use serde_json::{json, Value};

use errata_testkit::{expect_invalid, expect_status, report, spawn_app, Learner, TestApp};

/// Records `errors` for the learner's utterance, each with `correction`.
pub async fn record_corrected(
    app: &TestApp,
    learner: &Learner,
    errors: &[(&str, &str)],
    correction: &str,
) -> Value {
    let mut body = report(learner, errors);
    for point in body["errors"].as_array_mut().unwrap() {
        point["correction"] = json!(correction);
    }
    expect_status(
        app.post("/simulate-and-generate", &body).await,
        StatusCode::OK,
    )
    .await
}

async fn recent(app: &TestApp, learner: &Learner) -> Vec<Value> {
    let body = expect_status(
        app.get(&format!("/users/{}/errors/recent", learner.user_id))
            .await,
        StatusCode::OK,
    )
    .await;
    body["errors"].as_array().unwrap().clone()
}

async fn practice(app: &TestApp, learner: &Learner, query: &str) -> Value {
    expect_status(
        app.get(&format!(
            "/generate-exercise?user_id={}&{query}",
            learner.user_id
        ))
        .await,
        StatusCode::OK,
    )
    .await
}

#[tokio::test]
async fn corrections_are_stored_with_the_events_and_shown_in_the_latest_errors() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    let body = json!({
        "user_id": learner.user_id,
        "conversation_id": learner.conversation_id,
        "utterance_id": learner.utterance_id,
        "corrected_content": "He goes to school every day.",
        "errors": [
            {"errorCategory": "Grammar", "errorSubCategory": "Subject-Verb Agreement",
             "correction": "He goes", "explanation": "A third-person singular subject takes -s."},
            {"errorCategory": "Grammar", "errorSubCategory": "Plurals",
             "explanation": "After every, the noun is singular."},
        ],
    });
    let answer = expect_status(
        app.post("/simulate-and-generate", &body).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(answer["recorded"], 2);
    let mut events = recent(&app, &learner).await;
    events.sort_by_key(|e| e["errorSubCategory"].as_str().unwrap().to_owned());
    assert_eq!(events[0]["errorSubCategory"], "Plurals");
    // Without its own, a point takes the utterance's corrected content.
    assert_eq!(events[0]["correction"], "He goes to school every day.");
    assert_eq!(
        events[0]["explanation"],
        "After every, the noun is singular."
    );
    assert_eq!(events[1]["correction"], "He goes");
    assert_eq!(
        events[1]["explanation"],
        "A third-person singular subject takes -s."
    );

    // The utterance route takes them too; a client that sends none gets
    // nulls back.
    let said = app.say(&learner, "I has a cat.").await;
    let mut body = report(&said, &[("Grammar", "Auxiliaries")]);
    body["errors"][0]["correction"] = json!("I have a cat.");
    let path = format!("/utterances/{}/errors", said.utterance_id);
    expect_status(app.post(&path, &body).await, StatusCode::OK).await;
    let plain = app.say(&learner, "Me go.").await;
    expect_status(
        app.record(&plain, &[("Grammar", "Pronouns")]).await,
        StatusCode::OK,
    )
    .await;
    let events = recent(&app, &learner).await;
    assert_eq!(events[0]["errorSubCategory"], "Pronouns");
    assert_eq!(events[0]["correction"], Value::Null);
    assert_eq!(events[0]["explanation"], Value::Null);
    assert_eq!(events[1]["correction"], "I have a cat.");
}

#[tokio::test]
async fn bad_corrections_are_refused_with_their_location_and_count_nothing() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    let long = "x".repeat(10_001);
    let cases = [
        (
            json!({"correction": ""}),
            json!(["body", "errors", 0, "correction"]),
        ),
        (
            json!({"correction": long}),
            json!(["body", "errors", 0, "correction"]),
        ),
        (
            json!({"explanation": "y".repeat(1_001)}),
            json!(["body", "errors", 0, "explanation"]),
        ),
        (
            json!({"correction": 7}),
            json!(["body", "errors", 0, "correction"]),
        ),
    ];
    for (fields, loc) in cases {
        let mut body = report(&learner, &[("Grammar", "Articles")]);
        for (k, v) in fields.as_object().unwrap() {
            body["errors"][0][k] = v.clone();
        }
        expect_invalid(app.post("/simulate-and-generate", &body).await, loc).await;
    }
    for content in [json!(""), json!("z".repeat(10_001))] {
        let mut body = report(&learner, &[("Grammar", "Articles")]);
        body["corrected_content"] = content;
        let path = format!("/utterances/{}/errors", learner.utterance_id);
        expect_invalid(
            app.post(&path, &body).await,
            json!(["body", "corrected_content"]),
        )
        .await;
    }
    // The longest accepted values go in, and nothing refused was counted.
    let mut body = report(&learner, &[("Grammar", "Articles")]);
    body["errors"][0]["correction"] = json!("é".repeat(10_000));
    body["errors"][0]["explanation"] = json!("é".repeat(1_000));
    let answer = expect_status(
        app.post("/simulate-and-generate", &body).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(answer["recorded"], 1);
    assert_eq!(app.total_frequency(learner.user_id).await, 1);
}

/// Corrections annotate a request; they are not part of its identity: the
/// same errors of the same utterance, reported again with other wording,
/// count once, and the first correction stays.
#[tokio::test]
async fn a_retry_with_another_correction_is_the_same_request() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    let errors = [("Grammar", "Subject-Verb Agreement")];
    let first = record_corrected(&app, &learner, &errors, "He goes to school.").await;
    assert_eq!(first["duplicate"], false);
    let again = record_corrected(&app, &learner, &errors, "He walks to school.").await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(app.total_frequency(learner.user_id).await, 1);
    let events = recent(&app, &learner).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["correction"], "He goes to school.");
}

#[tokio::test]
async fn without_corrections_every_exercise_comes_from_the_bank_with_an_answer() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    expect_status(
        app.record(&learner, &[("Grammar", "Articles"), ("Style", "Register")])
            .await,
        StatusCode::OK,
    )
    .await;
    for _ in 0..4 {
        let body = practice(&app, &learner, "per_error=3").await;
        let exercises = body["exercises"].as_array().unwrap();
        assert_eq!(exercises.len(), 6);
        for e in exercises {
            assert_eq!(e["source"], "bank", "{e}");
            assert!(e["answer"].as_str().is_some_and(|a| !a.is_empty()), "{e}");
        }
    }
}

#[tokio::test]
async fn an_own_sentence_is_graded_by_the_ais_correction() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    let said = app.say(&learner, "Yesterday I go home.").await;
    let mut body = report(&said, &[("Grammar", "Verb Tense")]);
    body["errors"][0]["correction"] = json!("Yesterday I went home.");
    body["errors"][0]["explanation"] = json!("Past events take the past tense.");
    expect_status(
        app.post("/simulate-and-generate", &body).await,
        StatusCode::OK,
    )
    .await;
    let plain = app.say(&learner, "She don't know.").await;
    let mut body = report(&plain, &[("Grammar", "Negation")]);
    body["corrected_content"] = json!("She doesn't know.");
    expect_status(
        app.post("/simulate-and-generate", &body).await,
        StatusCode::OK,
    )
    .await;

    let mut own = Vec::new();
    // The rotation reaches every item of a pool within its length.
    for _ in 0..12 {
        let body = practice(&app, &learner, "per_error=2").await;
        for e in body["exercises"].as_array().unwrap() {
            assert!(e["answer"].as_str().is_some_and(|a| !a.is_empty()), "{e}");
            if e["source"] == "your_utterance" {
                own.push(e.clone());
            }
        }
    }
    let tense = own
        .iter()
        .find(|e| e["errorSubCategory"] == "Verb Tense")
        .expect("an exercise from the corrected sentence");
    assert_eq!(tense["kind"], "correct_the_sentence");
    assert!(tense["prompt"]
        .as_str()
        .unwrap()
        .contains("Yesterday I go home."));
    assert_eq!(tense["answer"], "Yesterday I went home.");
    assert_eq!(tense["explanation"], "Past events take the past tense.");
    let negation = own
        .iter()
        .find(|e| e["errorSubCategory"] == "Negation")
        .expect("an exercise from the sentence corrected as a whole");
    assert_eq!(negation["answer"], "She doesn't know.");
    assert_eq!(
        negation["explanation"],
        "This sentence had a Grammar / Negation error."
    );
    // The first utterance, reported without a correction, is never used.
    assert!(own.iter().all(|e| e["exercise_id"]
        .as_str()
        .unwrap()
        .contains(&said.utterance_id.to_string())
        || e["exercise_id"]
            .as_str()
            .unwrap()
            .contains(&plain.utterance_id.to_string())));
}

#[tokio::test]
async fn the_largest_report_the_contract_allows_is_recorded_whole() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    // Three bytes a character: the stored copies are as large as they get.
    let said = app.say(&learner, &"说".repeat(600)).await;
    let errors: Vec<(String, String)> = (0..64)
        .map(|i| ("Grammar".to_owned(), format!("Rule {i}")))
        .collect();
    let errors: Vec<(&str, &str)> = errors
        .iter()
        .map(|(c, s)| (c.as_str(), s.as_str()))
        .collect();
    let mut body = report(&said, &errors);
    // Applies to all 64 points.
    body["corrected_content"] = json!("对".repeat(10_000));
    let answer = expect_status(
        app.post("/simulate-and-generate", &body).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(answer["recorded"], 64, "{answer}");
    assert_eq!(app.total_frequency(learner.user_id).await, 64);
    let latest = expect_status(
        app.get(&format!(
            "/users/{}/errors/recent?limit=100",
            learner.user_id
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    let latest = latest["errors"].as_array().expect("a list");
    assert_eq!(latest.len(), 64);
    assert!(latest
        .iter()
        .all(|e| e["correction"].as_str().map(|c| c.chars().count()) == Some(10_000)));
}
