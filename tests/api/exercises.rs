//! GET /generate-exercise.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::practice::record_corrected;
use errata_testkit::{expect_detail, expect_invalid, expect_status, spawn_app, TestApp};

async fn practice(app: &TestApp, query: &str) -> Value {
    expect_status(
        app.get(&format!("/generate-exercise?{query}")).await,
        StatusCode::OK,
    )
    .await
}

fn exercise_ids(body: &Value) -> HashSet<String> {
    body["exercises"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["exercise_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn unknown_learners_and_learners_without_errors_are_404() {
    let app = spawn_app().await;
    let response = app
        .get(&format!("/generate-exercise?user_id={}", Uuid::new_v4()))
        .await;
    expect_detail(response, StatusCode::NOT_FOUND, "User not found").await;

    let user_id = app.create_user().await;
    let response = app
        .get(&format!("/generate-exercise?user_id={user_id}"))
        .await;
    expect_detail(
        response,
        StatusCode::NOT_FOUND,
        "No errors found for the given user",
    )
    .await;
}

#[tokio::test]
async fn query_parameters_are_validated() {
    let app = spawn_app().await;
    let user_id = app.create_user().await;
    for (query, loc) in [
        ("".to_owned(), json!(["query", "user_id"])),
        ("user_id=abc".to_owned(), json!(["query", "user_id"])),
        (
            format!("user_id={user_id}&top_n=0"),
            json!(["query", "top_n"]),
        ),
        (
            format!("user_id={user_id}&top_n=51"),
            json!(["query", "top_n"]),
        ),
        (
            format!("user_id={user_id}&top_n=five"),
            json!(["query", "top_n"]),
        ),
        (
            format!("user_id={user_id}&per_error=0"),
            json!(["query", "per_error"]),
        ),
        (
            format!("user_id={user_id}&per_error=11"),
            json!(["query", "per_error"]),
        ),
    ] {
        let response = app.get(&format!("/generate-exercise?{query}")).await;
        expect_invalid(response, loc).await;
    }
}

#[tokio::test]
async fn exercises_target_each_top_error_with_well_formed_items() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    let mut errors = vec![("Grammar", "Articles"); 3];
    errors.extend([("Vocabulary", "Collocations"); 2]);
    errors.push(("Pronunciation", "Word Stress"));
    errors.push(("Made Up", "Something Unheard Of"));
    expect_status(app.record(&learner, &errors).await, StatusCode::OK).await;

    let body = practice(
        &app,
        &format!("user_id={}&top_n=3&per_error=3", learner.user_id),
    )
    .await;
    let top: Vec<&str> = body["top_errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["errorSubCategory"].as_str().unwrap())
        .collect();
    // Word Stress and Something Unheard Of tie on frequency and recency:
    // the name decides ("made up" sorts before "pronunciation").
    assert_eq!(top, ["Articles", "Collocations", "Something Unheard Of"]);
    let exercises = body["exercises"].as_array().unwrap();
    assert_eq!(exercises.len(), 9);
    for (i, exercise) in exercises.iter().enumerate() {
        assert_eq!(exercise["errorSubCategory"], top[i / 3], "{exercise}");
        let kind = exercise["kind"].as_str().unwrap();
        assert!(
            [
                "multiple_choice",
                "fill_in_the_blank",
                "correct_the_sentence"
            ]
            .contains(&kind),
            "{exercise}"
        );
        assert!(["bank", "your_utterance"].contains(&exercise["source"].as_str().unwrap()));
        assert!(!exercise["prompt"].as_str().unwrap().is_empty());
        assert!(exercise["explanation"].is_string());
        if kind == "multiple_choice" {
            let options = exercise["options"].as_array().unwrap();
            assert!(options.contains(&exercise["answer"]), "{exercise}");
        }
    }
}

#[tokio::test]
async fn unknown_subcategories_get_generic_exercises() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    expect_status(
        app.record(&learner, &[("Style", "Register")]).await,
        StatusCode::OK,
    )
    .await;
    let body = practice(&app, &format!("user_id={}&per_error=4", learner.user_id)).await;
    let bank: Vec<&Value> = body["exercises"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] == "bank")
        .collect();
    assert!(!bank.is_empty());
    for e in bank {
        assert_eq!(e["errorSubCategory"], "Register");
        assert!(
            !e["prompt"].as_str().unwrap().contains("{subcategory}"),
            "{e}"
        );
    }
}

#[tokio::test]
async fn the_learners_own_sentence_becomes_a_correction_exercise() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    let said = app.say(&learner, "Yesterday she go to the market.").await;
    // Only a sentence whose correction is known becomes an exercise.
    record_corrected(
        &app,
        &said,
        &[("Grammar", "Verb Tense")],
        "Yesterday she went to the market.",
    )
    .await;
    let mut found = false;
    // The own-sentence item is among the first rotations.
    for _ in 0..3 {
        let body = practice(&app, &format!("user_id={}&per_error=2", learner.user_id)).await;
        for e in body["exercises"].as_array().unwrap() {
            if e["source"] == "your_utterance" {
                assert_eq!(e["kind"], "correct_the_sentence");
                assert!(e["prompt"]
                    .as_str()
                    .unwrap()
                    .contains("Yesterday she go to the market."));
                let id = e["exercise_id"].as_str().unwrap();
                assert!(
                    id.starts_with(&format!("utterance-{}-", said.utterance_id)),
                    "{id}"
                );
                found = true;
            }
        }
    }
    assert!(found, "no your_utterance exercise was served");
}

#[tokio::test]
async fn consecutive_calls_rotate_instead_of_repeating() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    record_corrected(
        &app,
        &learner,
        &[("Grammar", "Articles")],
        "He goes to school every day.",
    )
    .await;
    let query = format!("user_id={}&top_n=1&per_error=2", learner.user_id);
    let mut seen = HashSet::new();
    let mut previous = HashSet::new();
    for call in 0..3 {
        let ids = exercise_ids(&practice(&app, &query).await);
        assert_eq!(ids.len(), 2);
        assert!(ids.is_disjoint(&previous), "call {call} repeated {ids:?}");
        seen.extend(ids.iter().cloned());
        previous = ids;
    }
    assert_eq!(seen.len(), 6, "three calls should show six different items");
}

#[tokio::test]
async fn top_n_cuts_the_list_and_defaults_to_five() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    let names: Vec<String> = (0..8).map(|i| format!("Sub {i}")).collect();
    let errors: Vec<(&str, &str)> = names.iter().map(|n| ("Grammar", n.as_str())).collect();
    expect_status(app.record(&learner, &errors).await, StatusCode::OK).await;
    let body = practice(&app, &format!("user_id={}", learner.user_id)).await;
    assert_eq!(body["top_errors"].as_array().unwrap().len(), 5);
    assert_eq!(body["exercises"].as_array().unwrap().len(), 10);
    let body = practice(
        &app,
        &format!("user_id={}&top_n=50&per_error=1", learner.user_id),
    )
    .await;
    assert_eq!(body["top_errors"].as_array().unwrap().len(), 8);
    assert_eq!(body["exercises"].as_array().unwrap().len(), 8);
}
