//! A learner's data as a whole in cql mode, against a real `redis-server`
//! and the CQL server of `ERRATA_TEST_CQL`: the export of a history over
//! several month buckets, and erasure, with the requests and flushers that
//! race it held
//! half way: a flusher whose counter batch is in flight, an ingest that
//! passed its ownership checks and writes its events after the erasure, a
//! conversation created on a check made before it, a practice request
//! moving the rotation along. Nothing of the learner may come back, in any
//! table or key.

use std::time::{Duration, Instant};

use chrono::Datelike;
use errata::domain::ErrorKey;
use errata::store::cql::buffer::{erased_key, Buffer, Commit, Lease, Take};
use errata_testkit::{
    cql_session, dirty_sets_holding, durable_counts, learner_rows, redis_keys, Errata, Learner,
    TestApp, TestRedis,
};
use redis::AsyncCommands;
use reqwest::StatusCode;
use scylla::value::Counter;
use uuid::Uuid;

const ERRATA: Errata = Errata::at(env!("CARGO_BIN_EXE_errata"));

/// An in-process errata whose background flusher never runs on its own
/// (the tests play the flusher).
async fn spawn_without_flusher() -> TestApp {
    TestApp::spawn_without_flusher(TestRedis::start()).await
}

/// A new learner with one report recorded.
async fn recorded_learner(app: &TestApp) -> Learner {
    let learner = app.learner().await;
    let status = app
        .try_record(&learner, &[("Grammar", "Tense")])
        .await
        .expect("recorded");
    assert_eq!(status, StatusCode::OK);
    learner
}

/// Every row the learner still has, in any table (see `learner_rows`).
async fn left_in_cql(keyspace: &str, user: Uuid, email_key: &str) -> Vec<(String, usize)> {
    learner_rows(&cql_session().await, keyspace, user, email_key).await
}

/// The learner's Redis keys, and whether a dirty set still holds them.
async fn left_in_redis(redis: &TestRedis, user: Uuid) -> (Vec<String>, bool) {
    let keys: Vec<String> = redis_keys(redis)
        .await
        .into_iter()
        .filter(|k| k.contains(&user.to_string()))
        .collect();
    let mut conn = redis.client().await;
    let dirty = !dirty_sets_holding(&mut conn, user).await.is_empty();
    (keys, dirty)
}

async fn email_key_of(client: &reqwest::Client, base: &str, user: Uuid) -> String {
    let user: serde_json::Value = client
        .get(format!("{base}/users/{user}"))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("a user");
    user["email"].as_str().expect("an e-mail").to_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_waits_for_a_flush_in_flight_and_nothing_comes_back() {
    let app = spawn_without_flusher().await;
    let client = reqwest::Client::new();
    let learner = app.learner().await;
    let user = learner.user_id;
    for _ in 0..3 {
        let status = app
            .try_record(&learner, &[("Grammar", "Tense")])
            .await
            .expect("recorded");
        assert_eq!(status, StatusCode::OK);
    }
    let email_key = email_key_of(&client, &app.base, user).await;
    let before: Vec<String> = left_in_cql(&app.config.cql_keyspace, user, &email_key)
        .await
        .into_iter()
        .map(|(table, _)| table)
        .collect();
    for table in [
        "users",
        "users_by_email",
        "utterances",
        "error_events",
        "error_labels",
    ] {
        assert!(
            before.iter().any(|t| t == table),
            "the learner's rows in {table} are not seen: {before:?}"
        );
    }

    // A flusher has taken the learner's deltas; its counter batch is on its
    // way to Cassandra.
    let buffer = Buffer::connect(&app.redis().url())
        .await
        .expect("the buffer");
    let Take::Deltas { deltas, .. } = buffer.take(user, "in-flight").await.expect("take") else {
        panic!("nothing to flush");
    };
    assert_eq!(deltas.iter().map(|(_, n)| n).sum::<i64>(), 3);

    let erasure = {
        let (client, url) = (client.clone(), format!("{}/users/{user}", app.base));
        tokio::spawn(async move { client.delete(url).send().await.expect("DELETE").status() })
    };
    // The erasure has begun (its marker is set) but waits for the flush.
    let mut conn = app.redis().client().await;
    let started = Instant::now();
    while !conn
        .exists::<_, bool>(erased_key(user))
        .await
        .expect("EXISTS")
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no erasure began"
        );
        tokio::task::yield_now().await;
    }
    assert!(
        !erasure.is_finished(),
        "the erasure did not wait for the flush"
    );

    // The batch lands, then the flusher says so.
    let session = cql_session().await;
    let keyspace = &app.config.cql_keyspace;
    for (key, delta) in &deltas {
        session
            .query_unpaged(
                format!(
                    "UPDATE {keyspace}.error_counts SET frequency = frequency + ? \
                     WHERE user_id = ? AND category_key = ? AND subcategory_key = ?"
                ),
                (Counter(*delta), user, &key.category, &key.subcategory),
            )
            .await
            .expect("the counter batch");
    }
    assert!(buffer.done(user, "in-flight").await.expect("done"));
    assert_eq!(erasure.await.expect("the erasure"), StatusCode::NO_CONTENT);

    assert_eq!(left_in_cql(keyspace, user, &email_key).await, vec![]);
    let (keys, dirty) = left_in_redis(app.redis(), user).await;
    assert_eq!(
        keys,
        vec![erased_key(user)],
        "only the erasure marker stays"
    );
    assert!(!dirty, "the learner is still marked dirty");

    // A flusher coming later finds nothing, and a drain writes nothing.
    assert!(matches!(
        buffer.take(user, "late").await.expect("take"),
        Take::Empty
    ));
    ERRATA.run(&app.config, &["flush"]);
    assert!(durable_counts(keyspace, user).await.is_empty());
    assert_eq!(left_in_cql(keyspace, user, &email_key).await, vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_passed_their_checks_before_the_erasure_stay_hidden() {
    let app = spawn_without_flusher().await;
    let client = reqwest::Client::new();
    let learner = recorded_learner(&app).await;
    let (user, conversation, utterance) = (
        learner.user_id,
        learner.conversation_id,
        learner.utterance_id,
    );
    let email_key = email_key_of(&client, &app.base, user).await;

    // An ingest passed its ownership checks and leased its request.
    let buffer = Buffer::connect(&app.redis().url())
        .await
        .expect("the buffer");
    // It began a second before this month did, so its writes land in the
    // month before, which the learner's bucket lists do not name.
    let fingerprint = Uuid::new_v4();
    let now = chrono::Utc::now();
    let month = now
        .date_naive()
        .with_day(1)
        .expect("the first of the month")
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    let began = month - chrono::Duration::seconds(1);
    let lease = buffer
        .lease(user, fingerprint, began.timestamp_millis(), "racer")
        .await
        .expect("a lease");
    assert!(matches!(lease, Lease::Acquired { .. }));

    let erased = client
        .delete(format!("{}/users/{user}", app.base))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(erased.status(), StatusCode::NO_CONTENT);

    // Only now do its writes land, and those of a conversation whose
    // owner check passed before the erasure; then it commits.
    let session = cql_session().await;
    let keyspace = &app.config.cql_keyspace;
    let bucket = errata::store::cql::bucket(began);
    let ts = scylla::value::CqlTimestamp(began.timestamp_millis());
    // Its lapse, in the review log of the same month.
    session
        .query_unpaged(
            format!(
                "INSERT INTO {keyspace}.answers (user_id, bucket, answered_at, answer_id, kind, \
                 category_key, subcategory_key, category, subcategory) \
                 VALUES (?, {bucket}, ?, ?, 'lapse', 'grammar', 'tense', 'Grammar', 'Tense')"
            ),
            (user, ts, Uuid::new_v4()),
        )
        .await
        .expect("a late lapse");
    for cql in [
        format!(
            "INSERT INTO {keyspace}.error_events (user_id, bucket, occurred_at, event_id, \
             conversation_id, utterance_id, category_key, subcategory_key, category, \
             subcategory, snippet) VALUES (?, {bucket}, ?, ?, ?, ?, 'grammar', 'tense', \
             'Grammar', 'Tense', 'late')"
        ),
        format!(
            "INSERT INTO {keyspace}.error_labels (user_id, category_key, subcategory_key, \
             category, subcategory, last_seen) VALUES (?, 'grammar', 'tense', 'Grammar', \
             'Tense', ?)"
        ),
    ] {
        let values: Vec<scylla::value::CqlValue> = if cql.contains("error_events") {
            vec![
                scylla::value::CqlValue::Uuid(user),
                scylla::value::CqlValue::Timestamp(ts),
                scylla::value::CqlValue::Uuid(Uuid::new_v4()),
                scylla::value::CqlValue::Uuid(conversation),
                scylla::value::CqlValue::Uuid(utterance),
            ]
        } else {
            vec![
                scylla::value::CqlValue::Uuid(user),
                scylla::value::CqlValue::Timestamp(ts),
            ]
        };
        session
            .query_unpaged(cql, values)
            .await
            .expect("a late write");
    }
    for cql in [
        format!("INSERT INTO {keyspace}.error_buckets (user_id, bucket) VALUES (?, {bucket})"),
        format!(
            "INSERT INTO {keyspace}.conversations (user_id, conversation_id, started_at) \
             VALUES (?, {}, toTimestamp(now()))",
            Uuid::now_v7()
        ),
    ] {
        session
            .query_unpaged(cql, (user,))
            .await
            .expect("a late write");
    }
    let key = ErrorKey {
        category: "grammar".into(),
        subcategory: "tense".into(),
    };
    let commit = buffer
        .commit(user, fingerprint, "racer", &[(key, 1)])
        .await
        .expect("a commit");
    assert_eq!(commit, Commit::Erased);
    // Nor may a new attempt start.
    let again = buffer
        .lease(user, Uuid::new_v4(), now.timestamp_millis(), "next")
        .await
        .expect("a lease");
    assert!(matches!(again, Lease::Erased));
    // A practice request that read the learner before the erasure cannot
    // bring their rotation back either.
    assert!(matches!(
        buffer.next_round(user).await,
        Err(errata::store::StoreError::UserNotFound)
    ));

    assert_eq!(left_in_cql(keyspace, user, &email_key).await, vec![]);
    let (keys, dirty) = left_in_redis(app.redis(), user).await;
    assert_eq!(keys, vec![erased_key(user)]);
    assert!(!dirty);
    let response = client
        .get(format!("{}/users/{user}/errors", app.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_reads_every_month_bucket_newest_first_page_by_page() {
    let app = spawn_without_flusher().await;
    let client = reqwest::Client::new();
    let learner = recorded_learner(&app).await;
    let (user, conversation, utterance) = (
        learner.user_id,
        learner.conversation_id,
        learner.utterance_id,
    );

    // Older months, each longer than a page of the export.
    let session = cql_session().await;
    let keyspace = &app.config.cql_keyspace;
    let per_bucket = 1_200;
    for (bucket, month) in [(202510, "2025-10-15"), (202511, "2025-11-15")] {
        session
            .query_unpaged(
                format!("INSERT INTO {keyspace}.error_buckets (user_id, bucket) VALUES (?, ?)"),
                (user, bucket),
            )
            .await
            .expect("a bucket");
        let insert = session
            .prepare(format!(
                "INSERT INTO {keyspace}.error_events (user_id, bucket, occurred_at, event_id, \
                 conversation_id, utterance_id, category_key, subcategory_key, category, \
                 subcategory, snippet) VALUES (?, ?, '{month}', ?, ?, ?, 'grammar', \
                 'articles', 'Grammar', 'Articles', 'old')"
            ))
            .await
            .expect("a statement");
        for _ in 0..per_bucket {
            session
                .execute_unpaged(
                    &insert,
                    (user, bucket, Uuid::new_v4(), conversation, utterance),
                )
                .await
                .expect("an event");
        }
    }

    let doc: serde_json::Value = client
        .get(format!("{}/users/{user}/export", app.base))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("a JSON export");
    let events = doc["error_events"].as_array().expect("events");
    assert_eq!(events.len(), 1 + 2 * per_bucket);
    // Newest first: this month's event, then November, then October.
    assert_eq!(events[0]["errorSubCategory"], "Tense");
    assert_eq!(events[0]["snippet"], "He go to school every days.");
    let months: Vec<&str> = events[1..]
        .iter()
        .map(|e| &e["occurred_at"].as_str().expect("a time")[..7])
        .collect();
    let november = months.iter().filter(|m| **m == "2025-11").count();
    assert_eq!(november, per_bucket);
    assert!(months[..per_bucket].iter().all(|m| *m == "2025-11"));
    assert!(months[per_bucket..].iter().all(|m| *m == "2025-10"));
    let distinct: std::collections::BTreeSet<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().expect("an id"))
        .collect();
    assert_eq!(distinct.len(), events.len());
}
