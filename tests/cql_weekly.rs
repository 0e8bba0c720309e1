//! Weekly counts in cql mode, against a real `redis-server` and the CQL
//! server of `ERRATA_TEST_CQL`: buffered in the week of the request's time,
//! applied by the flusher beside the all-time counts, recomputed by repair,
//! and `errata migrate` bringing an older keyspace up to date.

use std::collections::BTreeMap;

use chrono::{Datelike, Days, NaiveDate, Utc};
use errata_testkit::{
    cql_config, cql_session, redis_keys, Errata, RedisServer, TestApp, TestRedis,
};
use redis::AsyncCommands;
use reqwest::StatusCode;
use uuid::Uuid;

const ERRATA: Errata = Errata::at(env!("CARGO_BIN_EXE_errata"));

/// An in-process errata with a clock the test moves, whose flusher never
/// runs on its own.
async fn spawn_without_flusher() -> TestApp {
    TestApp::spawn_without_flusher(TestRedis::start()).await
}

fn monday(back: u64) -> NaiveDate {
    let today = Utc::now().date_naive();
    today - Days::new(u64::from(today.weekday().num_days_from_monday()) + 7 * back)
}

type Weekly = BTreeMap<(NaiveDate, String), i64>;

/// The learner's durable weekly counters: (week, subcategory key) → n.
async fn durable_weeks(keyspace: &str, user: Uuid) -> Weekly {
    let session = cql_session().await;
    let rows = session
        .query_unpaged(
            format!(
                "SELECT week_start, subcategory_key, frequency FROM {keyspace}.error_counts_by_week \
                 WHERE user_id = ?"
            ),
            (user,),
        )
        .await
        .expect("reading the weekly counters")
        .into_rows_result()
        .expect("rows");
    let mut weeks = Weekly::new();
    for row in rows
        .rows::<(scylla::value::CqlDate, String, scylla::value::Counter)>()
        .expect("typed rows")
    {
        let (week, subcategory, n) = row.expect("a row");
        let day = NaiveDate::default() + chrono::TimeDelta::days(i64::from(week.0) - (1i64 << 31));
        if n.0 != 0 {
            weeks.insert((day, subcategory), n.0);
        }
    }
    weeks
}

async fn progress_totals(app: &TestApp, user: Uuid) -> Vec<i64> {
    let body: serde_json::Value =
        reqwest::get(format!("{}/users/{user}/progress?weeks=4", app.base))
            .await
            .expect("GET progress")
            .json()
            .await
            .expect("JSON");
    body["weeks"]
        .as_array()
        .expect("weeks")
        .iter()
        .map(|w| w["total"].as_i64().expect("a total"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weekly_counts_are_flushed_with_the_all_time_ones_and_repaired_from_the_log() {
    let app = spawn_without_flusher().await;
    let learner = app.learner().await;
    let user = learner.user_id;
    // Three weeks ago: two reports; now: one more of each error.
    app.clock.set(Utc::now() - chrono::Duration::weeks(3));
    for _ in 0..2 {
        let status = app.try_record(&learner, &[("Grammar", "Articles")]).await;
        assert_eq!(status.expect("recorded"), StatusCode::OK);
    }
    app.clock.reset();
    let errors = [("Grammar", "Articles"), ("Grammar", "Tense")];
    let status = app.try_record(&learner, &errors).await;
    assert_eq!(status.expect("recorded"), StatusCode::OK);
    let expected: Weekly = [
        ((monday(3), "articles".to_owned()), 2),
        ((monday(0), "articles".to_owned()), 1),
        ((monday(0), "tense".to_owned()), 1),
    ]
    .into();

    // Acknowledged, only in Redis, and read back all the same.
    let mut redis = app.redis().client().await;
    let pending: BTreeMap<String, i64> = redis
        .hgetall(format!("errata:{{{user}}}:pending_weeks"))
        .await
        .expect("HGETALL");
    assert_eq!(pending.len(), 3, "{pending:?}");
    assert_eq!(pending.values().sum::<i64>(), 4);
    assert!(durable_weeks(&app.config.cql_keyspace, user)
        .await
        .is_empty());
    assert_eq!(progress_totals(&app, user).await, [2, 0, 0, 2]);

    let out = ERRATA.run(&app.config, &["flush"]);
    assert!(out.contains("flush done: 1 learners flushed"), "{out}");
    assert_eq!(
        durable_weeks(&app.config.cql_keyspace, user).await,
        expected
    );
    let left: Vec<String> = redis_keys(app.redis())
        .await
        .into_iter()
        .filter(|k| k.contains("weeks"))
        .collect();
    assert!(left.is_empty(), "left in Redis: {left:?}");
    assert_eq!(progress_totals(&app, user).await, [2, 0, 0, 2]);

    // A batch applied twice (a flusher that died before DONE) or lost:
    // repair recomputes the weeks from the events' own times.
    let session = cql_session().await;
    let ks = &app.config.cql_keyspace;
    session
        .query_unpaged(
            format!(
                "UPDATE {ks}.error_counts_by_week SET frequency = frequency + 5 \
                 WHERE user_id = ? AND week_start = ? AND category_key = 'grammar' \
                 AND subcategory_key = 'tense'"
            ),
            (
                user,
                scylla::value::CqlDate(
                    ((1i64 << 31) + (monday(0) - NaiveDate::default()).num_days()) as u32,
                ),
            ),
        )
        .await
        .expect("corrupting a weekly counter");
    let out = ERRATA.run(&app.config, &["repair", "--user", &user.to_string()]);
    assert!(out.contains("repair done: 1 counts corrected"), "{out}");
    assert_eq!(durable_weeks(ks, user).await, expected);
    let out = ERRATA.run(&app.config, &["repair", "--user", &user.to_string()]);
    assert!(out.contains("repair done: 0 counts corrected"), "{out}");
}

#[tokio::test]
async fn migrate_brings_an_older_keyspace_up_to_date_and_changes_nothing_twice() {
    let redis = RedisServer::start();
    let (config, slot) = cql_config(&redis.url()).await;
    let session = cql_session().await;
    let ks = &slot.keyspace;
    // The keyspace as the first release made it.
    for statement in [
        format!("DROP TABLE IF EXISTS {ks}.error_counts_by_week"),
        format!("ALTER TABLE {ks}.error_events DROP explanation"),
        format!("ALTER TABLE {ks}.error_events DROP correction"),
    ] {
        session
            .query_unpaged(statement.as_str(), ())
            .await
            .expect("taking the keyspace back");
    }
    session.await_schema_agreement().await.expect("agreement");
    for _ in 0..2 {
        let out = ERRATA.run(&config, &["migrate"]);
        assert!(out.contains("up to date"), "{out}");
    }
    let rows = session
        .query_unpaged(
            "SELECT column_name FROM system_schema.columns \
             WHERE keyspace_name = ? AND table_name = 'error_events'",
            (ks.as_str(),),
        )
        .await
        .expect("columns")
        .into_rows_result()
        .expect("rows");
    let columns: Vec<String> = rows
        .rows::<(String,)>()
        .expect("typed")
        .map(|r| r.expect("a row").0)
        .collect();
    assert!(columns.iter().any(|c| c == "correction"), "{columns:?}");
    assert!(columns.iter().any(|c| c == "explanation"), "{columns:?}");
    session
        .query_unpaged(
            format!("SELECT * FROM {ks}.error_counts_by_week LIMIT 1"),
            (),
        )
        .await
        .expect("the weekly table is back");
}
