//! Practice that remembers: answers graded and kept as reviews, undone,
//! retried; each error's memory state (FSRS) folded from them in time
//! order whatever order they arrive in; the due ranking, the schedule, the
//! learner's time zone, and answers in the export and the erasure.

use chrono::{DateTime, TimeZone, Utc};
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use errata_testkit::{expect_detail, expect_invalid, expect_status, spawn_app, TestApp};

use crate::practice::record_corrected;

const SVA: (&str, &str) = ("Grammar", "Subject-Verb Agreement");
const SVA_EXERCISE: &str = "grammar-subject-verb-agreement-1";

async fn answer(app: &TestApp, user_id: Uuid, body: Value) -> reqwest::Response {
    app.post(&format!("/users/{user_id}/answers"), &body).await
}

fn graded(exercise: &str, grade: &str, at: Option<DateTime<Utc>>) -> Value {
    let mut body = json!({"exercise_id": exercise, "errorCategory": SVA.0,
        "errorSubCategory": SVA.1, "grade": grade});
    if let Some(at) = at {
        body["answered_at"] = json!(at);
    }
    body
}

async fn schedule(app: &TestApp, user_id: Uuid) -> Vec<Value> {
    let body = expect_status(
        app.get(&format!("/users/{user_id}/schedule")).await,
        StatusCode::OK,
    )
    .await;
    body["items"].as_array().unwrap().clone()
}

async fn item(app: &TestApp, user_id: Uuid, subcategory: &str) -> Option<Value> {
    schedule(app, user_id).await.into_iter().find(|i| {
        i["errorSubCategory"]
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case(subcategory))
    })
}

#[tokio::test]
async fn a_response_is_graded_against_the_answer_key() {
    let app = spawn_app().await;
    let user_id = app.create_user().await;
    let right = json!({"exercise_id": SVA_EXERCISE, "errorCategory": "grammar",
        "errorSubCategory": "subject-verb agreement", "response": "  GOES. "});
    let body = expect_status(answer(&app, user_id, right).await, StatusCode::CREATED).await;
    assert_eq!(body["correct"], true);
    assert_eq!(body["grade"], "good");
    assert_eq!(body["expected"], "goes");
    assert_eq!(body["duplicate"], false);
    assert!(body["next_due"].as_str().unwrap() > Utc::now().to_rfc3339().as_str());

    let wrong = json!({"exercise_id": SVA_EXERCISE, "errorCategory": SVA.0,
        "errorSubCategory": SVA.1, "response": "go"});
    let body = expect_status(answer(&app, user_id, wrong).await, StatusCode::CREATED).await;
    assert_eq!(
        (body["correct"].clone(), body["grade"].clone()),
        (json!(false), json!("again"))
    );

    let body = expect_status(
        answer(&app, user_id, graded(SVA_EXERCISE, "easy", None)).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(
        (body["correct"].clone(), body["grade"].clone()),
        (Value::Null, json!("easy"))
    );
    let item = item(&app, user_id, SVA.1).await.unwrap();
    assert_eq!(
        (item["reviews"].clone(), item["lapses"].clone()),
        (json!(3), json!(1))
    );
}

#[tokio::test]
async fn exactly_one_of_response_and_grade_and_a_known_exercise() {
    let app = spawn_app().await;
    let user_id = app.create_user().await;
    let both = json!({"exercise_id": SVA_EXERCISE, "errorCategory": SVA.0,
        "errorSubCategory": SVA.1, "response": "goes", "grade": "good"});
    expect_invalid(answer(&app, user_id, both).await, json!(["body"])).await;
    let neither = json!({"exercise_id": SVA_EXERCISE, "errorCategory": SVA.0,
        "errorSubCategory": SVA.1});
    expect_invalid(answer(&app, user_id, neither).await, json!(["body"])).await;
    let bad_grade = graded(SVA_EXERCISE, "perfect", None);
    assert_eq!(
        answer(&app, user_id, bad_grade).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let unknown = graded("grammar-no-such-exercise", "good", None);
    expect_detail(
        answer(&app, user_id, unknown).await,
        StatusCode::NOT_FOUND,
        "Exercise not found",
    )
    .await;
    let forged = graded(
        &format!("utterance-{}-00000000", Uuid::now_v7()),
        "good",
        None,
    );
    expect_detail(
        answer(&app, user_id, forged).await,
        StatusCode::NOT_FOUND,
        "Exercise not found",
    )
    .await;
    expect_detail(
        answer(&app, Uuid::now_v7(), graded(SVA_EXERCISE, "good", None)).await,
        StatusCode::NOT_FOUND,
        "User not found",
    )
    .await;
    assert!(schedule(&app, user_id).await.is_empty());
}

#[tokio::test]
async fn an_own_sentence_exercise_is_graded_by_its_correction() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    record_corrected(&app, &learner, &[SVA], "He goes to school every day.").await;
    let practice = expect_status(
        app.get(&format!(
            "/generate-exercise?user_id={}&per_error=5",
            learner.user_id
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    let own = practice["exercises"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"] == "your_utterance")
        .unwrap()
        .clone();
    let body = json!({"exercise_id": own["exercise_id"], "errorCategory": SVA.0,
        "errorSubCategory": SVA.1, "response": "he goes to school every day"});
    let body = expect_status(
        answer(&app, learner.user_id, body).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(body["correct"], true);
    assert_eq!(body["expected"], "He goes to school every day.");
    // The same exercise id named for another error is no exercise.
    let other = json!({"exercise_id": own["exercise_id"], "errorCategory": "Grammar",
        "errorSubCategory": "Articles", "grade": "good"});
    expect_detail(
        answer(&app, learner.user_id, other).await,
        StatusCode::NOT_FOUND,
        "Exercise not found",
    )
    .await;
}

#[tokio::test]
async fn a_retried_answer_counts_once() {
    let app = spawn_app().await;
    let user_id = app.create_user().await;
    let url = app.url(&format!("/users/{user_id}/answers"));
    let send = |grade: &str| {
        app.api
            .client
            .post(&url)
            .header("Idempotency-Key", "answer-1")
            .json(&graded(SVA_EXERCISE, grade, None))
            .send()
    };
    let first = expect_status(send("good").await.unwrap(), StatusCode::CREATED).await;
    let again = expect_status(send("good").await.unwrap(), StatusCode::OK).await;
    assert_eq!(again["answer_id"], first["answer_id"]);
    assert_eq!(again["duplicate"], true);

    let at = Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, 0).unwrap();
    let timed = graded("grammar-subject-verb-agreement-2", "hard", Some(at));
    let first = expect_status(
        answer(&app, user_id, timed.clone()).await,
        StatusCode::CREATED,
    )
    .await;
    let again = expect_status(answer(&app, user_id, timed).await, StatusCode::OK).await;
    assert_eq!(again["answer_id"], first["answer_id"]);
    assert_eq!(again["grade"], "hard");

    let item = item(&app, user_id, SVA.1).await.unwrap();
    assert_eq!(item["reviews"], 2);
    let listed = expect_status(
        app.get(&format!("/users/{user_id}/answers")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["answers"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn an_undone_answer_leaves_the_state_as_if_never_given() {
    let app = spawn_app().await;
    let user_id = app.create_user().await;
    let day = |d: u32| Utc.with_ymd_and_hms(2026, 2, d, 12, 0, 0).unwrap();
    for (d, grade) in [(1, "good"), (4, "good")] {
        let body = graded(SVA_EXERCISE, grade, Some(day(d)));
        expect_status(answer(&app, user_id, body).await, StatusCode::CREATED).await;
    }
    let before = item(&app, user_id, SVA.1).await.unwrap();
    let mistake = graded(SVA_EXERCISE, "again", Some(day(2)));
    let mistake = expect_status(answer(&app, user_id, mistake).await, StatusCode::CREATED).await;
    let during = item(&app, user_id, SVA.1).await.unwrap();
    assert_ne!(during["stability"], before["stability"]);

    let path = format!(
        "/users/{user_id}/answers/{}",
        mistake["answer_id"].as_str().unwrap()
    );
    assert_eq!(app.delete(&path).await.status(), StatusCode::NO_CONTENT);
    let after = item(&app, user_id, SVA.1).await.unwrap();
    for field in [
        "stability",
        "difficulty",
        "due",
        "last_review",
        "reviews",
        "lapses",
    ] {
        assert_eq!(after[field], before[field], "{field}");
    }
    expect_detail(
        app.delete(&path).await,
        StatusCode::NOT_FOUND,
        "Answer not found",
    )
    .await;
    let listed = expect_status(
        app.get(&format!("/users/{user_id}/answers")).await,
        StatusCode::OK,
    )
    .await;
    let listed = listed["answers"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed[0]["answered_at"].as_str() > listed[1]["answered_at"].as_str());
}

/// FSRS stepped by hand: each review's days since the last one, in UTC.
fn fold_by_hand(reviews: &[(DateTime<Utc>, u32)]) -> (f32, f32) {
    let fsrs = fsrs::FSRS::new(&fsrs::DEFAULT_PARAMETERS).unwrap();
    let mut sorted = reviews.to_vec();
    sorted.sort();
    let mut state = None;
    let mut last: Option<DateTime<Utc>> = None;
    for (at, rating) in sorted {
        let days = last.map_or(0, |l| (at.date_naive() - l.date_naive()).num_days() as u32);
        let next = fsrs.next_states(state, 0.9, days).unwrap();
        let chosen = [next.again, next.hard, next.good, next.easy][rating as usize - 1].clone();
        state = Some(chosen.memory);
        last = Some(at);
    }
    let state = state.unwrap();
    (state.stability, state.difficulty)
}

#[tokio::test]
async fn concurrent_out_of_order_answers_fold_in_time_order() {
    let app = spawn_app().await;
    let user_id = app.create_user().await;
    let at = |d: u32, h: u32| Utc.with_ymd_and_hms(2026, 1, d, h, 0, 0).unwrap();
    let reviews = [
        (at(5, 10), 3),
        (at(5, 12), 1),
        (at(8, 9), 3),
        (at(15, 20), 2),
        (at(16, 7), 4),
        (at(30, 23), 1),
        (at(31, 1), 3),
    ];
    let names = ["again", "hard", "good", "easy"];
    // Newest first, all at once.
    let sends = reviews.iter().rev().enumerate().map(|(i, (when, rating))| {
        let exercise = format!("grammar-subject-verb-agreement-{}", i % 5 + 1);
        let body = graded(&exercise, names[*rating as usize - 1], Some(*when));
        let app = &app;
        async move { answer(app, user_id, body).await.status() }
    });
    for status in join_all(sends).await {
        assert_eq!(status, StatusCode::CREATED);
    }
    let (stability, difficulty) = fold_by_hand(&reviews);
    let item = item(&app, user_id, SVA.1).await.unwrap();
    let close = |got: &Value, want: f32| (got.as_f64().unwrap() - f64::from(want)).abs() < 1e-4;
    assert!(
        close(&item["stability"], stability),
        "{item} vs {stability}"
    );
    assert!(
        close(&item["difficulty"], difficulty),
        "{item} vs {difficulty}"
    );
    assert_eq!(item["reviews"], 7);
    assert_eq!(item["lapses"], 2);
    let last: DateTime<Utc> = item["last_review"].as_str().unwrap().parse().unwrap();
    assert_eq!(last, at(31, 1));
}

#[tokio::test]
async fn due_ranking_puts_the_least_remembered_error_first() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    let articles = ("Grammar", "Articles");
    expect_status(app.record(&learner, &[SVA, articles]).await, StatusCode::OK).await;
    expect_status(app.record(&learner, &[articles]).await, StatusCode::OK).await;
    // Subject-verb agreement practised well since; articles only lapsed.
    for exercise in [
        "grammar-subject-verb-agreement-1",
        "grammar-subject-verb-agreement-2",
    ] {
        let body = graded(exercise, "easy", None);
        expect_status(
            answer(&app, learner.user_id, body).await,
            StatusCode::CREATED,
        )
        .await;
    }
    let ranked = expect_status(
        app.get(&format!(
            "/generate-exercise?user_id={}&rank=due",
            learner.user_id
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    let top = ranked["top_errors"].as_array().unwrap();
    assert_eq!(top[0]["errorSubCategory"], "Articles");
    assert_eq!(top[1]["errorSubCategory"], SVA.1);
    let scores: Vec<f64> = top.iter().map(|e| e["score"].as_f64().unwrap()).collect();
    assert!(scores[0] <= scores[1] && scores.iter().all(|s| (0.0..=1.0).contains(s)));
    assert_eq!(top[0]["errorFrequency"], 2);
    // By frequency, the order is the other way round for neither count:
    // articles were heard twice, so frequency also leads with them.
    let schedule = schedule(&app, learner.user_id).await;
    assert_eq!(schedule.len(), 2);
    assert!(schedule[0]["due"].as_str() <= schedule[1]["due"].as_str());
    assert_eq!(schedule[0]["errorSubCategory"], "Articles");
}

#[tokio::test]
async fn one_lapse_per_error_and_day_of_the_learners_time_zone() {
    let app = spawn_app().await;
    let tokyo = expect_status(
        app.post(
            "/users/",
            &json!({"username": "kenji", "email": format!("{}@example.com", Uuid::now_v7()),
                    "timezone": "Asia/Tokyo"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(tokyo["timezone"], "Asia/Tokyo");
    let tokyo_id: Uuid = tokyo["user_id"].as_str().unwrap().parse().unwrap();
    let utc = app.learner().await;
    let conversation = app.create_conversation(tokyo_id).await;
    let utterance = app.create_utterance(tokyo_id, conversation, "He go.").await;
    let tokyo_learner = errata_testkit::Learner {
        user_id: tokyo_id,
        conversation_id: conversation,
        utterance_id: utterance,
    };
    // 14:00 and 16:00 UTC: one day in UTC, two in Tokyo (23:00, 01:00).
    for hour in [14, 16] {
        app.clock
            .set(Utc.with_ymd_and_hms(2026, 3, 1, hour, 0, 0).unwrap());
        for learner in [&utc, &tokyo_learner] {
            let learner = app.say(learner, &format!("at {hour}")).await;
            expect_status(app.record(&learner, &[SVA]).await, StatusCode::OK).await;
        }
    }
    app.clock.reset();
    let lapses = |item: Option<Value>| item.unwrap()["lapses"].as_i64().unwrap();
    assert_eq!(lapses(item(&app, utc.user_id, SVA.1).await), 1);
    assert_eq!(lapses(item(&app, tokyo_id, SVA.1).await), 2);

    let patch = |user_id: Uuid, tz: &str| {
        app.api
            .client
            .patch(app.url(&format!("/users/{user_id}")))
            .json(&json!({"timezone": tz}))
            .send()
    };
    let moved = expect_status(patch(tokyo_id, "UTC").await.unwrap(), StatusCode::OK).await;
    assert_eq!(moved["timezone"], "UTC");
    assert_eq!(lapses(item(&app, tokyo_id, SVA.1).await), 1);
    let user = expect_status(
        app.get(&format!("/users/{}", utc.user_id)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(user["timezone"], "UTC");
    expect_invalid(
        patch(tokyo_id, "Mars/Olympus").await.unwrap(),
        json!(["body", "timezone"]),
    )
    .await;
    assert_eq!(
        patch(Uuid::now_v7(), "UTC").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn answers_are_exported_and_erased_with_the_learner() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    expect_status(app.record(&learner, &[SVA]).await, StatusCode::OK).await;
    let body = graded(SVA_EXERCISE, "good", None);
    let given = expect_status(
        answer(&app, learner.user_id, body).await,
        StatusCode::CREATED,
    )
    .await;
    let export = expect_status(
        app.get(&format!("/users/{}/export", learner.user_id)).await,
        StatusCode::OK,
    )
    .await;
    let reviews = export["answers"].as_array().unwrap();
    assert_eq!(reviews.len(), 2, "{export}");
    assert!(reviews
        .iter()
        .any(|r| r["answer_id"] == given["answer_id"] && r["kind"] == "answer"));
    assert!(reviews.iter().any(|r| r["kind"] == "lapse"));
    assert_eq!(export["memory"].as_array().unwrap().len(), 1);
    assert_eq!(export["memory"][0]["reviews"], 2);

    let user = format!("/users/{}", learner.user_id);
    assert_eq!(app.delete(&user).await.status(), StatusCode::NO_CONTENT);
    for path in ["answers", "schedule"] {
        expect_detail(
            app.get(&format!("{user}/{path}")).await,
            StatusCode::NOT_FOUND,
            "User not found",
        )
        .await;
    }
}
