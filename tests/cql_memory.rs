//! The memory model's tables on the CQL server of `ERRATA_TEST_CQL`:
//! `errata migrate` adds them to a keyspace that lacks them (twice is
//! fine), `errata repair` rebuilds every memory state from the review log,
//! and an erased learner leaves no row in any of them.

use chrono::Utc;
use reqwest::StatusCode;
use scylla::client::session::Session;
use serde_json::{json, Value};
use uuid::Uuid;

use errata::config::StoreKind;
use errata_testkit::{cql_session, expect_status, Errata, TestApp};

const ERRATA: Errata = Errata::at(env!("CARGO_BIN_EXE_errata"));
const MEMORY_TABLES: [&str; 4] = ["answers", "answer_buckets", "answers_by_id", "memory"];

async fn run(session: &Session, cql: String) {
    session
        .query_unpaged(cql, ())
        .await
        .expect("a CQL statement");
}

async fn count(session: &Session, cql: String, user: Uuid) -> usize {
    session
        .query_unpaged(cql, (user,))
        .await
        .expect("a CQL read")
        .into_rows_result()
        .expect("rows")
        .rows_num()
}

async fn tables(session: &Session, keyspace: &str) -> Vec<String> {
    session
        .query_unpaged(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?",
            (keyspace,),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows::<(String,)>()
        .unwrap()
        .map(|r| r.unwrap().0)
        .collect()
}

/// A learner who said two errors and answered one exercise.
async fn practised(app: &TestApp) -> Uuid {
    let learner = app.learner().await;
    let errors = [
        ("Grammar", "Articles"),
        ("Grammar", "Subject-Verb Agreement"),
    ];
    expect_status(app.record(&learner, &errors).await, StatusCode::OK).await;
    let answer = json!({"exercise_id": "grammar-subject-verb-agreement-1",
        "errorCategory": "Grammar", "errorSubCategory": "Subject-Verb Agreement",
        "response": "goes"});
    expect_status(
        app.post(&format!("/users/{}/answers", learner.user_id), &answer)
            .await,
        StatusCode::CREATED,
    )
    .await;
    learner.user_id
}

async fn schedule(app: &TestApp, user_id: Uuid) -> Value {
    expect_status(
        app.get(&format!("/users/{user_id}/schedule")).await,
        StatusCode::OK,
    )
    .await["items"]
        .clone()
}

#[tokio::test]
async fn migrate_adds_the_memory_tables_to_a_keyspace_without_them_and_runs_twice() {
    let app = TestApp::spawn(StoreKind::Cql, |_| {}).await;
    let keyspace = app.config.cql_keyspace.clone();
    let session = cql_session().await;
    // The keyspace as an errata before the memory model left it.
    for table in MEMORY_TABLES {
        run(&session, format!("DROP TABLE IF EXISTS {keyspace}.{table}")).await;
    }
    run(
        &session,
        format!("ALTER TABLE {keyspace}.users DROP timezone"),
    )
    .await;
    let before = tables(&session, &keyspace).await;
    assert!(MEMORY_TABLES
        .iter()
        .all(|t| !before.contains(&t.to_string())));

    for _ in 0..2 {
        let out = ERRATA.run(&app.config, &["migrate"]);
        assert!(out.contains(&keyspace), "{out}");
    }
    let after = tables(&session, &keyspace).await;
    for table in MEMORY_TABLES {
        assert!(
            after.contains(&table.to_string()),
            "{table} missing: {after:?}"
        );
    }
    // The app's statements were prepared against the tables it started
    // with: a fresh process serves the migrated keyspace.
    drop(app);
    let app = TestApp::spawn(StoreKind::Cql, |_| {}).await;
    let user_id = practised(&app).await;
    assert_eq!(schedule(&app, user_id).await.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn repair_rebuilds_memory_states_from_the_review_log() {
    let app = TestApp::spawn(StoreKind::Cql, |_| {}).await;
    let keyspace = app.config.cql_keyspace.clone();
    let user_id = practised(&app).await;
    let truth = schedule(&app, user_id).await;
    let session = cql_session().await;
    let memory_rows = format!("SELECT * FROM {keyspace}.memory WHERE user_id = ?");
    assert_eq!(count(&session, memory_rows.clone(), user_id).await, 2);

    // A state gone wrong, one missing and one for no review at all.
    session
        .query_unpaged(
            format!(
                "UPDATE {keyspace}.memory SET stability = 999, reviews = 40 \
                 WHERE user_id = ? AND category_key = 'grammar' \
                 AND subcategory_key = 'subject-verb agreement'"
            ),
            (user_id,),
        )
        .await
        .unwrap();
    session
        .query_unpaged(
            format!(
                "DELETE FROM {keyspace}.memory WHERE user_id = ? AND category_key = 'grammar' \
                 AND subcategory_key = 'articles'"
            ),
            (user_id,),
        )
        .await
        .unwrap();
    session
        .query_unpaged(
            format!(
                "INSERT INTO {keyspace}.memory (user_id, category_key, subcategory_key, \
                 stability) VALUES (?, 'vocabulary', 'phantom', 1)"
            ),
            (user_id,),
        )
        .await
        .unwrap();

    let out = ERRATA.run(&app.config, &["repair", "--user", &user_id.to_string()]);
    assert!(
        out.contains("memory states rewritten from the review log: 3"),
        "{out}"
    );
    let stored: Vec<(String, f64, i32)> = session
        .query_unpaged(
            format!(
                "SELECT subcategory_key, stability, reviews FROM {keyspace}.memory \
                 WHERE user_id = ?"
            ),
            (user_id,),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows::<(String, f64, i32)>()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
    for item in truth.as_array().unwrap() {
        let key = item["errorSubCategory"].as_str().unwrap().to_lowercase();
        let row = stored.iter().find(|(k, _, _)| *k == key).unwrap();
        assert_eq!(row.1, item["stability"].as_f64().unwrap(), "{key}");
        assert_eq!(i64::from(row.2), item["reviews"].as_i64().unwrap(), "{key}");
    }
    // Nothing left to correct.
    let out = ERRATA.run(&app.config, &["repair", "--user", &user_id.to_string()]);
    assert!(
        out.contains("memory states rewritten from the review log: 0"),
        "{out}"
    );
}

#[tokio::test]
async fn an_erased_learner_leaves_no_row_in_the_memory_tables() {
    let app = TestApp::spawn(StoreKind::Cql, |_| {}).await;
    let keyspace = app.config.cql_keyspace.clone();
    let user_id = practised(&app).await;
    let session = cql_session().await;
    let bucket = errata::store::cql::bucket(Utc::now());
    let reads = [
        format!("SELECT * FROM {keyspace}.answers WHERE user_id = ? AND bucket = {bucket}"),
        format!("SELECT * FROM {keyspace}.answer_buckets WHERE user_id = ?"),
        format!("SELECT * FROM {keyspace}.answers_by_id WHERE user_id = ?"),
        format!("SELECT * FROM {keyspace}.memory WHERE user_id = ?"),
        format!("SELECT timezone FROM {keyspace}.users WHERE user_id = ?"),
    ];
    for read in &reads {
        assert!(count(&session, read.clone(), user_id).await > 0, "{read}");
    }
    assert_eq!(
        app.delete(&format!("/users/{user_id}")).await.status(),
        StatusCode::NO_CONTENT
    );
    for read in &reads {
        assert_eq!(count(&session, read.clone(), user_id).await, 0, "{read}");
    }
}
