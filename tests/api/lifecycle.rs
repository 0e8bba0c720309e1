//! A learner's data as a whole: the export of everything stored about them,
//! and erasure, after which they are unknown everywhere.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use errata_testkit::{
    expect_detail, expect_invalid, expect_status, id, report, spawn_app, TestApp,
};

const SVA: (&str, &str) = ("Grammar", "Subject-Verb Agreement");
const ARTICLES: (&str, &str) = ("Grammar", "Articles");

async fn sign_up(app: &TestApp, email: &str) -> Uuid {
    let response = app
        .post("/users/", &json!({"username": "ana", "email": email}))
        .await;
    id(
        &expect_status(response, StatusCode::CREATED).await,
        "user_id",
    )
}

async fn export(app: &TestApp, user_id: Uuid) -> Value {
    let response = app.get(&format!("/users/{user_id}/export")).await;
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "the export is JSON"
    );
    expect_status(response, StatusCode::OK).await
}

fn ids(items: &Value, field: &str) -> BTreeSet<String> {
    items
        .as_array()
        .expect("a list")
        .iter()
        .map(|item| item[field].as_str().expect("an id").to_owned())
        .collect()
}

#[tokio::test]
async fn the_export_holds_everything_stored_about_the_learner() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    let second = app.create_conversation(learner.user_id).await;
    let said = app
        .create_utterance(learner.user_id, second, "She have two cat.")
        .await;
    let body = json!({"user_id": learner.user_id, "conversation_id": second});
    let response = app.post("/utterances/", &body).await;
    let silent = id(
        &expect_status(response, StatusCode::CREATED).await,
        "utterance_id",
    );
    expect_status(app.record(&learner, &[SVA, SVA]).await, StatusCode::OK).await;
    let other = errata_testkit::Learner {
        conversation_id: second,
        utterance_id: said,
        ..learner
    };
    expect_status(app.record(&other, &[ARTICLES]).await, StatusCode::OK).await;
    // Someone else's data never shows.
    let stranger = app.learner().await;
    expect_status(app.record(&stranger, &[ARTICLES]).await, StatusCode::OK).await;

    let doc = export(&app, learner.user_id).await;
    let user = expect_status(
        app.get(&format!("/users/{}", learner.user_id)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(doc["user"], user);
    assert_eq!(
        ids(&doc["conversations"], "conversation_id"),
        BTreeSet::from([learner.conversation_id.to_string(), second.to_string()])
    );
    assert_eq!(
        ids(&doc["utterances"], "utterance_id"),
        BTreeSet::from([
            learner.utterance_id.to_string(),
            said.to_string(),
            silent.to_string()
        ])
    );
    let utterances = doc["utterances"].as_array().unwrap();
    let text = |u: Uuid| {
        utterances
            .iter()
            .find(|x| x["utterance_id"] == u.to_string())
            .map(|x| x["content"].clone())
            .unwrap()
    };
    assert_eq!(text(said), json!("She have two cat."));
    assert_eq!(text(silent), Value::Null);

    let events = doc["error_events"].as_array().expect("events");
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(ids(&doc["error_events"], "event_id").len(), 3);
    for event in events {
        assert!(event["occurred_at"].is_string());
        assert_eq!(event["errorCategory"], "Grammar");
    }
    let sva_events: Vec<&Value> = events
        .iter()
        .filter(|e| e["errorSubCategory"] == SVA.1)
        .collect();
    assert_eq!(sva_events.len(), 2);
    assert!(sva_events
        .iter()
        .all(|e| e["utterance_id"] == learner.utterance_id.to_string()
            && e["conversation_id"] == learner.conversation_id.to_string()));

    let listed = expect_status(
        app.get(&format!("/users/{}/errors", learner.user_id)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(doc["frequencies"], listed["errors"]);
}

#[tokio::test]
async fn a_learner_without_records_exports_empty_sections() {
    let app = spawn_app().await;
    let user_id = app.create_user().await;
    let doc = export(&app, user_id).await;
    for section in ["conversations", "utterances", "error_events", "frequencies"] {
        assert_eq!(doc[section], json!([]), "{section}");
    }
    assert_eq!(doc["user"]["user_id"], user_id.to_string());
}

#[tokio::test]
async fn unknown_learners_have_no_export_and_cannot_be_erased() {
    let app = spawn_app().await;
    let nobody = Uuid::new_v4();
    let response = app.get(&format!("/users/{nobody}/export")).await;
    expect_detail(response, StatusCode::NOT_FOUND, "User not found").await;
    let response = app.delete(&format!("/users/{nobody}")).await;
    expect_detail(response, StatusCode::NOT_FOUND, "User not found").await;
    let response = app.get("/users/not-a-uuid/export").await;
    expect_invalid(response, json!(["path", "user_id"])).await;
    let response = app.delete("/users/not-a-uuid").await;
    expect_invalid(response, json!(["path", "user_id"])).await;
}

#[tokio::test]
async fn an_erased_learner_is_unknown_everywhere_and_the_email_is_free() {
    let app = spawn_app().await;
    let email = format!("{}@Example.com", Uuid::new_v4());
    let user_id = sign_up(&app, &email).await;
    let conversation_id = app.create_conversation(user_id).await;
    let utterance_id = app
        .create_utterance(user_id, conversation_id, "He go to school.")
        .await;
    let learner = errata_testkit::Learner {
        user_id,
        conversation_id,
        utterance_id,
    };
    expect_status(app.record(&learner, &[SVA, ARTICLES]).await, StatusCode::OK).await;
    let practice = app
        .get(&format!("/generate-exercise?user_id={user_id}"))
        .await;
    expect_status(practice, StatusCode::OK).await;
    let neighbour = app.learner().await;
    expect_status(app.record(&neighbour, &[SVA]).await, StatusCode::OK).await;

    let response = app.delete(&format!("/users/{user_id}")).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.text().await.unwrap().is_empty());

    let gone = "User not found";
    for path in [
        format!("/users/{user_id}"),
        format!("/users/{user_id}/errors"),
        format!("/users/{user_id}/errors/recent"),
        format!("/users/{user_id}/export"),
        format!("/generate-exercise?user_id={user_id}"),
    ] {
        expect_detail(app.get(&path).await, StatusCode::NOT_FOUND, gone).await;
    }
    let response = app
        .post("/conversations/", &json!({"user_id": user_id}))
        .await;
    expect_detail(response, StatusCode::NOT_FOUND, gone).await;
    let response = app
        .post(
            "/utterances/",
            &json!({"user_id": user_id, "conversation_id": conversation_id}),
        )
        .await;
    expect_detail(response, StatusCode::NOT_FOUND, "Conversation not found").await;
    let response = app.record(&learner, &[SVA]).await;
    expect_detail(response, StatusCode::NOT_FOUND, gone).await;
    let body = report(&learner, &[SVA]);
    let response = app
        .post(&format!("/utterances/{utterance_id}/errors"), &body)
        .await;
    expect_detail(response, StatusCode::NOT_FOUND, gone).await;
    let response = app.delete(&format!("/users/{user_id}")).await;
    expect_detail(response, StatusCode::NOT_FOUND, gone).await;

    // The address is free again (in any case) and makes a new learner.
    let again = sign_up(&app, &email.to_lowercase()).await;
    assert_ne!(again, user_id);
    let doc = export(&app, again).await;
    assert_eq!(doc["error_events"], json!([]));
    assert_eq!(app.frequencies(again).await, vec![]);
    // The neighbour kept everything.
    assert_eq!(
        app.frequencies(neighbour.user_id).await,
        vec![("Grammar".into(), SVA.1.into(), 1)]
    );
}

#[tokio::test]
async fn reports_racing_the_erasure_are_counted_before_it_or_refused() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    expect_status(app.record(&learner, &[SVA]).await, StatusCode::OK).await;
    let racers: Vec<_> = (0..24)
        .map(|n| {
            let client = app.client.clone();
            let url = app.url("/simulate-and-generate");
            let mut body = report(&learner, &[SVA, ARTICLES]);
            body["errors"][0]["errorSubCategory"] = json!(format!("Racing {n}"));
            tokio::spawn(async move {
                client
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .expect("POST")
                    .status()
            })
        })
        .collect();
    let erased = app.delete(&format!("/users/{}", learner.user_id)).await;
    assert_eq!(erased.status(), StatusCode::NO_CONTENT);
    for racer in racers {
        let status = racer.await.expect("a racer");
        assert!(
            status == StatusCode::OK || status == StatusCode::NOT_FOUND,
            "a racing report answered {status}"
        );
    }
    // Whatever was counted went with the learner, and stays gone.
    let path = format!("/users/{}/errors", learner.user_id);
    expect_detail(
        app.get(&path).await,
        StatusCode::NOT_FOUND,
        "User not found",
    )
    .await;
    let export = format!("/users/{}/export", learner.user_id);
    expect_detail(
        app.get(&export).await,
        StatusCode::NOT_FOUND,
        "User not found",
    )
    .await;
}

#[tokio::test]
async fn a_long_history_is_exported_whole_across_pages() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    let names: Vec<String> = (0..64).map(|n| format!("Error {n}")).collect();
    let points: Vec<(&str, &str)> = names.iter().map(|n| ("Grammar", n.as_str())).collect();
    // More events than one page of the export holds (1,000).
    let reports = 20;
    for n in 0..reports {
        let said = app.say(&learner, &format!("Sentence {n}.")).await;
        let body = expect_status(app.record(&said, &points).await, StatusCode::OK).await;
        assert_eq!(body["recorded"], 64);
    }
    let doc = export(&app, learner.user_id).await;
    let events = doc["error_events"].as_array().expect("events");
    assert_eq!(events.len(), reports * 64);
    assert_eq!(ids(&doc["error_events"], "event_id").len(), reports * 64);
    assert_eq!(doc["utterances"].as_array().unwrap().len(), reports + 1);
    let total: i64 = doc["frequencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["errorFrequency"].as_i64().unwrap())
        .sum();
    assert_eq!(total, (reports * 64) as i64);
}

#[tokio::test]
async fn the_export_carries_the_corrections_the_ai_gave() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    crate::practice::record_corrected(&app, &learner, &[SVA], "He goes to school every day.").await;
    expect_status(app.record(&learner, &[ARTICLES]).await, StatusCode::OK).await;
    let doc = export(&app, learner.user_id).await;
    let events = doc["error_events"].as_array().expect("events");
    let by_subcategory = |name: &str| {
        events
            .iter()
            .find(|e| e["errorSubCategory"] == name)
            .unwrap_or_else(|| panic!("an event of {name}"))
    };
    assert_eq!(
        by_subcategory(SVA.1)["correction"],
        "He goes to school every day."
    );
    assert_eq!(by_subcategory(ARTICLES.1)["correction"], Value::Null);
    assert_eq!(by_subcategory(ARTICLES.1)["explanation"], Value::Null);
}
