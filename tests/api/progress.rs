//! Weekly counts: GET /users/{id}/progress and GET /generate-exercise with
//! rank=recent, on history written with the app's clock moved into the
//! past (no test sleeps across a week boundary).

use chrono::{DateTime, Datelike, Days, NaiveDate, TimeZone, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use errata_testkit::{expect_detail, expect_invalid, expect_status, spawn_app, Learner, TestApp};

fn monday_of(t: DateTime<Utc>) -> NaiveDate {
    let day = t.date_naive();
    day - Days::new(u64::from(day.weekday().num_days_from_monday()))
}

async fn progress(app: &TestApp, user: Uuid, query: &str) -> Value {
    expect_status(
        app.get(&format!("/users/{user}/progress?{query}")).await,
        StatusCode::OK,
    )
    .await
}

/// The errors of one week as (subcategory, count), in the order served.
fn week_errors(week: &Value) -> Vec<(String, i64)> {
    week["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["errorSubCategory"].as_str().unwrap().to_owned(),
                e["errorFrequency"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn record_at(app: &TestApp, learner: &Learner, at: DateTime<Utc>, errors: &[(&str, &str)]) {
    app.clock.set(at);
    // Each report on its own utterance, so none is a retry of another.
    let said = app.say(learner, "I goed there.").await;
    expect_status(app.record(&said, errors).await, StatusCode::OK).await;
}

#[tokio::test]
async fn the_current_week_holds_what_was_just_recorded_and_empty_weeks_are_listed() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    let fresh = progress(&app, learner.user_id, "").await;
    let weeks = fresh["weeks"].as_array().unwrap();
    assert_eq!(weeks.len(), 8, "eight weeks by default");
    assert!(weeks
        .iter()
        .all(|w| w["total"] == 0 && w["errors"] == json!([])));

    expect_status(
        app.record(
            &learner,
            &[
                ("Grammar", "Articles"),
                ("Grammar", "Articles"),
                ("Vocabulary", "Word Choice"),
            ],
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let body = progress(&app, learner.user_id, "weeks=3").await;
    assert_eq!(body["user_id"], json!(learner.user_id));
    let weeks = body["weeks"].as_array().unwrap();
    assert_eq!(weeks.len(), 3);
    let current = monday_of(app.clock.now());
    let starts: Vec<String> = weeks
        .iter()
        .map(|w| w["week_start"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = [14, 7, 0]
        .iter()
        .map(|d| (current - Days::new(*d)).format("%Y-%m-%d").to_string())
        .collect();
    assert_eq!(starts, expected, "oldest first, the current week last");
    assert_eq!(weeks[2]["total"], 3);
    assert_eq!(
        week_errors(&weeks[2]),
        [("Articles".to_owned(), 2), ("Word Choice".to_owned(), 1)]
    );
    assert_eq!(weeks[0]["total"], 0);
    assert_eq!(weeks[1]["errors"], json!([]));
}

#[tokio::test]
async fn a_week_ends_on_sunday_at_midnight_utc() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    // 2026-12-27 is a Sunday; 2026-12-28 starts ISO week 53 of 2026.
    let sunday = Utc.with_ymd_and_hms(2026, 12, 27, 23, 59, 58).unwrap();
    record_at(&app, &learner, sunday, &[("Grammar", "Articles")]).await;
    let monday = Utc.with_ymd_and_hms(2026, 12, 28, 0, 0, 0).unwrap();
    record_at(
        &app,
        &learner,
        monday,
        &[("Grammar", "Tense"), ("Grammar", "Tense")],
    )
    .await;
    // A week later, in 2027.
    app.clock
        .set(Utc.with_ymd_and_hms(2027, 1, 4, 9, 0, 0).unwrap());
    let body = progress(&app, learner.user_id, "weeks=3").await;
    let weeks = body["weeks"].as_array().unwrap();
    let starts: Vec<&str> = weeks
        .iter()
        .map(|w| w["week_start"].as_str().unwrap())
        .collect();
    assert_eq!(starts, ["2026-12-21", "2026-12-28", "2027-01-04"]);
    assert_eq!(week_errors(&weeks[0]), [("Articles".to_owned(), 1)]);
    assert_eq!(week_errors(&weeks[1]), [("Tense".to_owned(), 2)]);
    assert_eq!(weeks[2]["total"], 0);
}

#[tokio::test]
async fn progress_refuses_bad_weeks_and_unknown_learners() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    for bad in ["0", "53", "-1", "eight"] {
        expect_invalid(
            app.get(&format!("/users/{}/progress?weeks={bad}", learner.user_id))
                .await,
            json!(["query", "weeks"]),
        )
        .await;
    }
    let body = progress(&app, learner.user_id, "weeks=52").await;
    assert_eq!(body["weeks"].as_array().unwrap().len(), 52);
    expect_detail(
        app.get(&format!("/users/{}/progress", Uuid::new_v4()))
            .await,
        StatusCode::NOT_FOUND,
        "User not found",
    )
    .await;
}

#[tokio::test]
async fn recency_ranks_what_the_learner_gets_wrong_lately() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    let now = Utc::now();
    // Five weeks ago: four Articles errors. This week: two Tense errors.
    let long_ago = now - chrono::Duration::weeks(5);
    record_at(
        &app,
        &learner,
        long_ago,
        &[("Grammar", "Articles"), ("Grammar", "Articles")],
    )
    .await;
    record_at(
        &app,
        &learner,
        long_ago,
        &[("Grammar", "Articles"), ("Grammar", "Articles")],
    )
    .await;
    record_at(
        &app,
        &learner,
        now,
        &[("Grammar", "Tense"), ("Grammar", "Tense")],
    )
    .await;
    app.clock.reset();

    let get = |query: String| {
        let app = &app;
        async move {
            expect_status(
                app.get(&format!("/generate-exercise?{query}")).await,
                StatusCode::OK,
            )
            .await
        }
    };
    let user = learner.user_id;
    let by_count = get(format!("user_id={user}")).await;
    assert_eq!(by_count["top_errors"][0]["errorSubCategory"], "Articles");
    assert!(by_count["top_errors"][0].get("score").is_none());
    let explicit = get(format!("user_id={user}&rank=frequency")).await;
    assert_eq!(explicit["top_errors"], by_count["top_errors"]);

    let recent = get(format!("user_id={user}&rank=recent&half_life_days=7")).await;
    let top = recent["top_errors"].as_array().unwrap();
    assert_eq!(top[0]["errorSubCategory"], "Tense");
    assert_eq!(top[0]["score"], 2.0);
    assert_eq!(top[0]["errorFrequency"], 2);
    assert_eq!(top[1]["errorSubCategory"], "Articles");
    // 4 × 2^(−35/7).
    assert!(
        (top[1]["score"].as_f64().unwrap() - 0.125).abs() < 1e-9,
        "{top:?}"
    );
    assert_eq!(top[1]["errorFrequency"], 4, "errorFrequency stays all-time");
    // A half-life of a year: the old pile weighs more again.
    let slow = get(format!("user_id={user}&rank=recent&half_life_days=365")).await;
    assert_eq!(slow["top_errors"][0]["errorSubCategory"], "Articles");
    // Default half-life: 14 days.
    let default = get(format!("user_id={user}&rank=recent")).await;
    let score = default["top_errors"][1]["score"].as_f64().unwrap();
    assert!((score - 4.0 * (-2.5f64).exp2()).abs() < 1e-9, "{default}");

    let body = progress(&app, user, "weeks=6").await;
    let weeks = body["weeks"].as_array().unwrap();
    assert_eq!(week_errors(&weeks[0]), [("Articles".to_owned(), 4)]);
    assert_eq!(week_errors(&weeks[5]), [("Tense".to_owned(), 2)]);
}

#[tokio::test]
async fn bad_rank_parameters_are_refused() {
    let app = spawn_app().await;
    let learner = app.learner().await;
    expect_status(
        app.record(&learner, &[("Grammar", "Articles")]).await,
        StatusCode::OK,
    )
    .await;
    let user = learner.user_id;
    for (query, loc) in [
        ("rank=newest", json!(["query", "rank"])),
        (
            "rank=recent&half_life_days=0",
            json!(["query", "half_life_days"]),
        ),
        (
            "rank=recent&half_life_days=366",
            json!(["query", "half_life_days"]),
        ),
        (
            "rank=recent&half_life_days=x",
            json!(["query", "half_life_days"]),
        ),
    ] {
        expect_invalid(
            app.get(&format!("/generate-exercise?user_id={user}&{query}"))
                .await,
            loc,
        )
        .await;
    }
    expect_detail(
        app.get(&format!(
            "/generate-exercise?user_id={}&rank=recent",
            Uuid::new_v4()
        ))
        .await,
        StatusCode::NOT_FOUND,
        "User not found",
    )
    .await;
}

/// Every `$ref` in `value`, as "#/components/schemas/Name".
fn refs(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                found.push(r.clone());
            }
            map.values().for_each(|v| refs(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
        _ => {}
    }
}

#[tokio::test]
async fn the_openapi_document_states_the_new_rules_and_every_reference_resolves() {
    let app = spawn_app().await;
    let doc = expect_status(app.get("/openapi.json").await, StatusCode::OK).await;
    let progress = &doc["paths"]["/users/{user_id}/progress"]["get"];
    let weeks = progress["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "weeks")
        .expect("a weeks parameter");
    assert_eq!(weeks["schema"]["minimum"], 1);
    assert_eq!(weeks["schema"]["maximum"], 52);
    let params = doc["paths"]["/generate-exercise"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let half_life = params
        .iter()
        .find(|p| p["name"] == "half_life_days")
        .expect("half_life_days");
    assert_eq!(half_life["schema"]["maximum"], 365);
    let point = &doc["components"]["schemas"]["ErrorPointBody"]["properties"];
    assert_eq!(point["correction"]["maxLength"], 10_000);
    assert_eq!(point["correction"]["minLength"], 1);
    assert_eq!(point["explanation"]["maxLength"], 1_000);
    let mut found = Vec::new();
    refs(&doc, &mut found);
    for r in found {
        let name = r
            .strip_prefix("#/components/schemas/")
            .expect("a schema ref");
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "{r} does not resolve"
        );
    }
}
