//! The Redis write-behind buffer of the cql store, against a real
//! `redis-server` and the CQL server of `ERRATA_TEST_CQL`: key layout,
//! `errata flush`, and a flusher that dies between its counter batch and the
//! delete of its in-flight deltas.

use std::collections::BTreeMap;

use errata_testkit as support;
use redis::AsyncCommands;
use reqwest::StatusCode;
use support::{
    case_folded, durable_counts, expect_status, key_slot, redis_keys, Api, Errata, Learner,
    RedisServer, TestApp, TestRedis,
};
use uuid::Uuid;

const ERRATA: Errata = Errata::at(env!("CARGO_BIN_EXE_errata"));

const TAXONOMY: [(&str, &str); 3] = [
    ("Grammar", "Articles"),
    ("Vocabulary", "Word Choice"),
    // Separators in names must never break keys.
    ("Odd: {Names}", "a}b{c:d"),
];

/// An in-process errata whose background flusher never runs on its own.
async fn spawn_without_flusher() -> TestApp {
    TestApp::spawn_without_flusher(TestRedis::start()).await
}

/// Records `requests` reports cycling through the taxonomy; returns the
/// expected frequencies by (category, subcategory).
async fn load(app: &TestApp, learner: Learner, requests: usize) -> BTreeMap<(String, String), i64> {
    let mut expected = BTreeMap::new();
    for n in 0..requests {
        let errors: Vec<(&str, &str)> = (0..=n % 3).map(|i| TAXONOMY[(n + i) % 3]).collect();
        let status = app.try_record(&learner, &errors).await.expect("recorded");
        assert_eq!(status, StatusCode::OK);
        for (c, s) in errors {
            *expected.entry((c.to_owned(), s.to_owned())).or_insert(0) += 1;
        }
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_of_a_learner_hashes_to_one_cluster_slot() {
    // The CRC16 rule as Redis Cluster states it.
    assert_eq!(key_slot("123456789"), 0x31C3);
    assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
    let app = spawn_without_flusher().await;
    let learners = [app.learner().await, app.learner().await];
    for learner in learners {
        load(&app, learner, 3).await;
        let response = app
            .get(&format!("/generate-exercise?user_id={}", learner.user_id))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let keys = redis_keys(app.redis()).await;
    let mut slots_by_learner: BTreeMap<Uuid, Vec<(String, u16)>> = BTreeMap::new();
    let mut dirty_keys = 0;
    for key in &keys {
        let owner = learners
            .iter()
            .find(|l| key.contains(&l.user_id.to_string()));
        match owner {
            Some(learner) => slots_by_learner
                .entry(learner.user_id)
                .or_default()
                .push((key.clone(), key_slot(key))),
            None => {
                assert!(key.starts_with("errata:dirty:{"), "unexpected key {key}");
                dirty_keys += 1;
            }
        }
    }
    assert!(dirty_keys >= 1, "learners were not marked dirty: {keys:?}");
    for (learner, keys) in &slots_by_learner {
        // pending, request markers, rotation, …
        assert!(keys.len() >= 3, "too few keys for {learner}: {keys:?}");
        let slot = keys[0].1;
        assert!(
            keys.iter().all(|(_, s)| *s == slot),
            "keys of {learner} span slots: {keys:?}"
        );
    }
    assert_eq!(slots_by_learner.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errata_flush_empties_redis_and_the_counters_are_exact() {
    let app = spawn_without_flusher().await;
    let learner = app.learner().await;
    let expected = load(&app, learner, 20).await;

    // Acknowledged but not flushed: visible, yet only in Redis.
    assert_eq!(app.frequency_counts(learner.user_id).await, expected);
    assert!(durable_counts(&app.config.cql_keyspace, learner.user_id)
        .await
        .is_empty());
    let mut redis = app.redis().client().await;
    let pending: BTreeMap<String, i64> = redis
        .hgetall(format!("errata:{{{}}}:pending", learner.user_id))
        .await
        .expect("HGETALL");
    assert_eq!(
        pending.values().sum::<i64>(),
        expected.values().sum::<i64>()
    );

    let out = ERRATA.run(&app.config, &["flush"]);
    assert!(out.contains("flush done: 1 learners flushed"), "{out}");

    let buffered: Vec<String> = redis_keys(app.redis())
        .await
        .into_iter()
        .filter(|k| k.ends_with(":pending") || k.ends_with(":inflight") || k.contains(":dirty:"))
        .collect();
    assert!(buffered.is_empty(), "left in Redis: {buffered:?}");
    assert_eq!(
        durable_counts(&app.config.cql_keyspace, learner.user_id).await,
        case_folded(&expected)
    );
    assert_eq!(app.frequency_counts(learner.user_id).await, expected);
    // Nothing left to do.
    let out = ERRATA.run(&app.config, &["flush"]);
    assert!(out.contains("flush done: 0 learners flushed"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flusher_dying_after_its_batch_never_loses_counts_and_repair_makes_them_exact() {
    let app = spawn_without_flusher().await;
    let learner = app.learner().await;
    let first = load(&app, learner, 6).await;
    ERRATA.run(&app.config, &["flush"]);
    let second = load(&app, learner, 9).await;
    let mut acked = first.clone();
    for (k, n) in &second {
        *acked.entry(k.clone()).or_insert(0) += n;
    }

    // What a flusher leaves when it dies right after its counter batch: the
    // deltas moved to in-flight, already applied to the counters, its lock
    // expired.
    let mut redis = app.redis().client().await;
    let user = learner.user_id;
    let _: () = redis
        .rename(
            format!("errata:{{{user}}}:pending"),
            format!("errata:{{{user}}}:inflight"),
        )
        .await
        .expect("RENAME");
    let inflight: BTreeMap<String, i64> = redis
        .hgetall(format!("errata:{{{user}}}:inflight"))
        .await
        .expect("HGETALL");
    let session = support::cql_session().await;
    let ks = &app.config.cql_keyspace;
    for ((c, s), n) in case_folded(&second) {
        session
            .query_unpaged(
                format!(
                    "UPDATE {ks}.error_counts SET frequency = frequency + ? \
                     WHERE user_id = ? AND category_key = ? AND subcategory_key = ?"
                ),
                (scylla::value::Counter(n), user, c, s),
            )
            .await
            .expect("applying the dead flusher's batch");
    }
    assert_eq!(inflight.values().sum::<i64>(), second.values().sum::<i64>());

    // Never below what was acknowledged (here: the batch counts twice).
    let seen = app.frequency_counts(user).await;
    for (k, n) in &acked {
        assert!(seen.get(k).copied().unwrap_or(0) >= *n, "{k:?}: {seen:?}");
    }
    // The next flush replays the in-flight deltas: still never below.
    ERRATA.run(&app.config, &["flush"]);
    let durable = durable_counts(ks, user).await;
    for (k, n) in case_folded(&acked) {
        assert!(durable.get(&k).copied().unwrap_or(0) >= n, "{k:?}");
    }
    assert_ne!(
        durable,
        case_folded(&acked),
        "the replay should have over-counted"
    );

    // Repair recomputes from the event log.
    let out = ERRATA.run(&app.config, &["repair", "--user", &user.to_string()]);
    assert!(
        out.contains(&format!("repair done: {} counts corrected", second.len())),
        "{out}"
    );
    assert_eq!(durable_counts(ks, user).await, case_folded(&acked));
    assert_eq!(app.frequency_counts(user).await, acked);
    // A second repair finds nothing to correct.
    let out = ERRATA.run(&app.config, &["repair", "--user", &user.to_string()]);
    assert!(out.contains("repair done: 0 counts corrected"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_while_deltas_are_buffered_counts_them_once() {
    let app = spawn_without_flusher().await;
    let learner = app.learner().await;
    let user = learner.user_id;
    let flushed = load(&app, learner, 5).await;
    ERRATA.run(&app.config, &["flush"]);
    // Corrupt a counter, then leave new deltas pending and others in flight.
    let ks = &app.config.cql_keyspace;
    let session = support::cql_session().await;
    session
        .query_unpaged(
            format!(
                "UPDATE {ks}.error_counts SET frequency = frequency + 7 \
                 WHERE user_id = ? AND category_key = 'grammar' AND subcategory_key = 'articles'"
            ),
            (user,),
        )
        .await
        .expect("corrupting a counter");
    let in_flight = load(&app, learner, 4).await;
    let mut redis = app.redis().client().await;
    let _: () = redis
        .rename(
            format!("errata:{{{user}}}:pending"),
            format!("errata:{{{user}}}:inflight"),
        )
        .await
        .expect("RENAME");
    let pending = load(&app, learner, 3).await;
    let mut acked = flushed;
    for (k, n) in in_flight.iter().chain(pending.iter()) {
        *acked.entry(k.clone()).or_insert(0) += n;
    }

    ERRATA.run(&app.config, &["repair"]);
    assert_eq!(app.frequency_counts(user).await, acked);
    ERRATA.run(&app.config, &["flush"]);
    assert_eq!(durable_counts(ks, user).await, case_folded(&acked));
    assert_eq!(app.frequency_counts(user).await, acked);
}

/// Posts a report of two articles with this idempotency key; returns the
/// JSON answer.
async fn record_keyed(app: &TestApp, learner: Learner, key: &str) -> serde_json::Value {
    let errors = [("Grammar", "Articles"), ("Grammar", "Articles")];
    expect_status(
        app.record_with_key(&learner, &errors, key).await,
        StatusCode::OK,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_that_died_holding_its_lease_does_not_swallow_the_retry() {
    let app = spawn_without_flusher().await;
    let learner = app.learner().await;
    let mut redis = app.redis().client().await;
    let fingerprint_of =
        |key: &str| errata::domain::report_fingerprint(learner.utterance_id, &[], Some(key));

    // An attempt died after taking its lease (and maybe writing events):
    // its lease has run out. The retry takes it over, keeping the first
    // attempt's time, and counts once.
    let first_attempt_ms = chrono::Utc::now().timestamp_millis() - 60_000;
    let _: () = redis
        .set(
            format!(
                "errata:{{{}}}:req:{}",
                learner.user_id,
                fingerprint_of("dead")
            ),
            format!("L|{first_attempt_ms}|0|dead-token"),
        )
        .await
        .expect("SET");
    let answer = record_keyed(&app, learner, "dead").await;
    assert_eq!(answer["duplicate"], false, "{answer}");
    assert_eq!(answer["recorded"], 2);
    let recent: serde_json::Value = app
        .get(&format!("/users/{}/errors/recent", learner.user_id))
        .await
        .json()
        .await
        .expect("JSON");
    let first = chrono::DateTime::from_timestamp_millis(first_attempt_ms).expect("a time");
    for event in recent["errors"].as_array().expect("a list") {
        let at: chrono::DateTime<chrono::Utc> = event["occurred_at"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("a time");
        assert_eq!(
            at, first,
            "the takeover must rewrite the first attempt's events"
        );
    }
    assert_eq!(record_keyed(&app, learner, "dead").await["duplicate"], true);

    // An attempt still running holds a live lease: the retry waits for it
    // and, when it dies without counting, takes over.
    let deadline_ms = chrono::Utc::now().timestamp_millis() + 700;
    let _: () = redis
        .set(
            format!(
                "errata:{{{}}}:req:{}",
                learner.user_id,
                fingerprint_of("slow")
            ),
            format!("L|{deadline_ms}|{deadline_ms}|slow-token"),
        )
        .await
        .expect("SET");
    let started = std::time::Instant::now();
    let answer = record_keyed(&app, learner, "slow").await;
    assert_eq!(answer["duplicate"], false, "{answer}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(500));

    let expected: BTreeMap<(String, String), i64> =
        [(("Grammar".to_owned(), "Articles".to_owned()), 4)].into();
    assert_eq!(app.frequency_counts(learner.user_id).await, expected);
    ERRATA.run(&app.config, &["flush"]);
    assert_eq!(
        durable_counts(&app.config.cql_keyspace, learner.user_id).await,
        case_folded(&expected)
    );
}

#[tokio::test]
async fn an_abandoned_attempt_leaves_its_time_to_the_retry() {
    use errata::store::cql::buffer::{Buffer, Commit, Lease};
    let redis = TestRedis::start();
    let buffer = Buffer::connect(&redis.url()).await.expect("the buffer");
    let (user, fingerprint) = (Uuid::now_v7(), Uuid::new_v4());
    let first_ms = chrono::Utc::now().timestamp_millis() - 5_000;

    // The first attempt leases the request, fails after (maybe) writing its
    // events, and abandons it.
    let lease = buffer
        .lease(user, fingerprint, first_ms, "first")
        .await
        .expect("a lease");
    assert!(matches!(lease, Lease::Acquired { at_ms } if at_ms == first_ms));
    buffer.abandon(user, fingerprint, "first").await;

    // The retry arrives later, yet writes its events at the first time: on
    // the rows the first attempt may have written, not beside them.
    let retry = buffer
        .lease(user, fingerprint, first_ms + 3_000, "retry")
        .await
        .expect("a lease");
    assert!(
        matches!(retry, Lease::Acquired { at_ms } if at_ms == first_ms),
        "the retry did not get the first attempt's time"
    );
    // A third attempt meanwhile waits for the retry's live lease.
    let third = buffer
        .lease(user, fingerprint, first_ms + 4_000, "third")
        .await
        .expect("a lease");
    assert!(matches!(third, Lease::Busy));
    // Once counted, the request is a duplicate.
    let counted = buffer
        .commit(user, fingerprint, "retry", &[])
        .await
        .expect("a commit");
    assert_eq!(counted, Commit::Counted);
    let after = buffer
        .lease(user, fingerprint, first_ms + 5_000, "late")
        .await
        .expect("a lease");
    assert!(matches!(after, Lease::Done));
}

#[tokio::test]
async fn a_late_done_never_deletes_deltas_another_flusher_moved() {
    use errata::domain::ErrorKey;
    use errata::store::cql::buffer::{lock_key, Buffer, Commit, Lease, Take};
    let redis = TestRedis::start();
    let buffer = Buffer::connect(&redis.url()).await.expect("the buffer");
    let user = Uuid::now_v7();
    let key = |s: &str| ErrorKey {
        category: "grammar".into(),
        subcategory: s.into(),
    };
    let count = |deltas: Vec<(ErrorKey, i64)>| {
        let buffer = &buffer;
        async move {
            let fingerprint = Uuid::new_v4();
            let now = chrono::Utc::now().timestamp_millis();
            let lease = buffer
                .lease(user, fingerprint, now, "r")
                .await
                .expect("lease");
            assert!(matches!(lease, Lease::Acquired { .. }));
            assert_eq!(
                buffer
                    .commit(user, fingerprint, "r", &deltas)
                    .await
                    .expect("commit"),
                Commit::Counted
            );
        }
    };
    let mut redis_conn = redis.client().await;

    count(vec![(key("articles"), 2)]).await;
    // Flusher 1 takes the deltas and pauses past its lock.
    assert!(matches!(
        buffer.take(user, "f1").await.expect("take"),
        Take::Deltas { .. }
    ));
    let _: () = redis_conn.del(lock_key(user)).await.expect("DEL");
    // Flusher 2 re-applies them and finishes; new deltas come in, flusher 3
    // moves them in flight and its batch fails.
    assert!(matches!(
        buffer.take(user, "f2").await.expect("take"),
        Take::Deltas { replay: true, .. }
    ));
    assert!(buffer.done(user, "f2").await.expect("done"));
    count(vec![(key("tenses"), 3)]).await;
    assert!(matches!(
        buffer.take(user, "f3").await.expect("take"),
        Take::Deltas { replay: false, .. }
    ));
    buffer.release(user, "f3").await.expect("release");

    // Flusher 1 wakes up and says DONE: it must not delete flusher 3's deltas.
    assert!(!buffer.done(user, "f1").await.expect("done"));
    let buffered = buffer.buffered(user).await.expect("buffered");
    assert_eq!(
        buffered.inflight,
        [(key("tenses"), 3)].into_iter().collect(),
        "acknowledged deltas were lost"
    );
}

#[tokio::test]
async fn a_report_without_points_starts_no_flush_lag() {
    use errata::store::cql::buffer::{dirty_key, dirty_shard, since_key, Buffer, Commit, Lease};
    let redis = TestRedis::start();
    let buffer = Buffer::connect(&redis.url()).await.expect("the buffer");
    let (user, fingerprint) = (Uuid::now_v7(), Uuid::new_v4());
    let now = chrono::Utc::now().timestamp_millis();
    let lease = buffer
        .lease(user, fingerprint, now, "t")
        .await
        .expect("lease");
    assert!(matches!(lease, Lease::Acquired { .. }));
    assert_eq!(
        buffer
            .commit(user, fingerprint, "t", &[])
            .await
            .expect("commit"),
        Commit::Counted
    );
    let mut conn = redis.client().await;
    let since: Option<i64> = conn.get(since_key(user)).await.expect("GET");
    assert_eq!(since, None, "an empty report started the flush-lag clock");
    let dirty: bool = conn
        .sismember(dirty_key(dirty_shard(user)), user.to_string())
        .await
        .expect("SISMEMBER");
    assert!(!dirty, "an empty report marked the learner dirty");
    // And it is remembered as counted.
    let again = buffer
        .lease(user, fingerprint, now, "u")
        .await
        .expect("lease");
    assert!(matches!(again, Lease::Done));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_during_a_flush_waits_or_says_503_but_never_guesses() {
    use errata::store::cql::buffer::{lock_key, Buffer, Take};
    let app = spawn_without_flusher().await;
    let learner = app.learner().await;
    let expected = load(&app, learner, 3).await;
    let user = learner.user_id;

    // A flusher has taken the deltas and its counter batch has not come back:
    // the counters may or may not hold them.
    let buffer = Buffer::connect(&app.redis().url())
        .await
        .expect("the buffer");
    assert!(matches!(
        buffer.take(user, "slow").await.expect("take"),
        Take::Deltas { .. }
    ));
    let started = std::time::Instant::now();
    let response = app.get(&format!("/users/{user}/errors")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    // The batch fails and the flusher lets go: a read waiting meanwhile
    // answers as soon as the learner is settled, with every count once.
    let waiting = {
        let api = app.api.clone();
        tokio::spawn(async move { api.get(&format!("/users/{user}/errors")).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut conn = app.redis().client().await;
    let _: () = conn.del(lock_key(user)).await.expect("DEL");
    let response = waiting.await.expect("the read");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.frequency_counts(user).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_runs_no_flusher_of_its_own() {
    let app = spawn_without_flusher().await;
    let learner = app.learner().await;
    let expected = load(&app, learner, 4).await;
    let user = learner.user_id;
    // Were repair to start a flusher, at this interval it would take the
    // learner's deltas while repair runs (and might be cut off at exit
    // between its counter batch and its DONE).
    let mut config = app.config.clone();
    config.flush_interval_ms = 1;
    for _ in 0..3 {
        ERRATA.run(&config, &["repair", "--user", &user.to_string()]);
    }
    let mut conn = app.redis().client().await;
    let pending: BTreeMap<String, i64> = conn
        .hgetall(format!("errata:{{{user}}}:pending"))
        .await
        .expect("HGETALL");
    let total: i64 = pending.values().sum();
    assert_eq!(
        total,
        expected.values().sum::<i64>(),
        "repair moved buffered deltas: {pending:?}"
    );
    assert!(durable_counts(&app.config.cql_keyspace, user)
        .await
        .is_empty());
    assert_eq!(app.frequency_counts(user).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errata_flush_finds_deltas_that_lost_their_dirty_mark() {
    use errata::store::cql::buffer::{dirty_key, dirty_shard, Buffer, Take};
    let app = spawn_without_flusher().await;
    let (one, two) = (app.learner().await, app.learner().await);
    let expected_one = load(&app, one, 3).await;
    let expected_two = load(&app, two, 2).await;
    // Learner two's deltas are in flight from a flusher whose batch failed.
    let buffer = Buffer::connect(&app.redis().url())
        .await
        .expect("the buffer");
    assert!(matches!(
        buffer.take(two.user_id, "failed").await.expect("take"),
        Take::Deltas { .. }
    ));
    buffer
        .release(two.user_id, "failed")
        .await
        .expect("release");
    // Both lose their dirty marks (a handler cancelled after its commit).
    let mut conn = app.redis().client().await;
    for user in [one.user_id, two.user_id] {
        let _: () = conn
            .srem(dirty_key(dirty_shard(user)), user.to_string())
            .await
            .expect("SREM");
    }
    ERRATA.run(&app.config, &["flush"]);
    let ks = &app.config.cql_keyspace;
    assert_eq!(
        durable_counts(ks, one.user_id).await,
        case_folded(&expected_one)
    );
    assert_eq!(
        durable_counts(ks, two.user_id).await,
        case_folded(&expected_two)
    );
    let left: Vec<String> = redis_keys(app.redis())
        .await
        .into_iter()
        .filter(|k| k.ends_with(":pending") || k.ends_with(":inflight"))
        .collect();
    assert!(left.is_empty(), "left in Redis: {left:?}");
}

/// Writes a request's events as an attempt of it would (the rows its
/// identity gives: `v5(fingerprint, index)` at the request's time), without
/// counting it: what an attempt leaves that is cut off before its commit.
async fn write_events_of(
    keyspace: &str,
    learner: Learner,
    fingerprint: Uuid,
    at_ms: i64,
    points: usize,
) {
    let session = support::cql_session().await;
    let at = chrono::DateTime::from_timestamp_millis(at_ms).expect("a time");
    let month = errata::store::cql::bucket(at);
    session
        .query_unpaged(
            format!("INSERT INTO {keyspace}.error_buckets (user_id, bucket) VALUES (?, ?)"),
            (learner.user_id, month),
        )
        .await
        .expect("the bucket");
    for index in 0..points {
        session
            .query_unpaged(
                format!(
                    "INSERT INTO {keyspace}.error_events (user_id, bucket, occurred_at, event_id, \
                     conversation_id, utterance_id, category_key, subcategory_key, category, \
                     subcategory) VALUES (?, ?, ?, ?, ?, ?, 'grammar', 'articles', 'Grammar', \
                     'Articles')"
                ),
                (
                    learner.user_id,
                    month,
                    scylla::value::CqlTimestamp(at_ms),
                    Uuid::new_v5(&fingerprint, index.to_string().as_bytes()),
                    learner.conversation_id,
                    learner.utterance_id,
                ),
            )
            .await
            .expect("an event");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_leaves_out_the_events_of_requests_not_yet_counted() {
    use errata::domain::ErrorKey;
    use errata::store::cql::buffer::{Buffer, Commit, Lease};
    let app = spawn_without_flusher().await;
    let learner = app.learner().await;
    let user = learner.user_id;
    let mut acked = load(&app, learner, 3).await;
    ERRATA.run(&app.config, &["flush"]);
    let buffer = Buffer::connect(&app.redis().url())
        .await
        .expect("the buffer");
    let ks = &app.config.cql_keyspace;
    let fingerprint_of =
        |key: &str| errata::domain::report_fingerprint(learner.utterance_id, &[], Some(key));
    let now = chrono::Utc::now().timestamp_millis();

    // One attempt wrote its events and failed (503): abandoned, it will be
    // retried. Another wrote its events and is about to commit.
    let abandoned = fingerprint_of("abandoned");
    let lease = buffer.lease(user, abandoned, now - 2_000, "first").await;
    assert!(matches!(lease, Ok(Lease::Acquired { .. })));
    write_events_of(ks, learner, abandoned, now - 2_000, 2).await;
    buffer.abandon(user, abandoned, "first").await;
    let committing = fingerprint_of("committing");
    let lease = buffer.lease(user, committing, now - 1_000, "live").await;
    assert!(matches!(lease, Ok(Lease::Acquired { .. })));
    write_events_of(ks, learner, committing, now - 1_000, 2).await;

    // Repair runs now: neither request is counted, so neither's events are.
    let out = ERRATA.run(&app.config, &["repair", "--user", &user.to_string()]);
    assert!(out.contains("repair done: 0 counts corrected"), "{out}");

    // Both are counted afterwards, once each.
    let articles = ErrorKey {
        category: "grammar".into(),
        subcategory: "articles".into(),
    };
    let committed = buffer
        .commit(user, committing, "live", &[(articles, 2)])
        .await
        .expect("a commit");
    assert_eq!(committed, Commit::Counted);
    let answer = record_keyed(&app, learner, "abandoned").await;
    assert_eq!(
        (answer["recorded"].clone(), answer["duplicate"].clone()),
        (2.into(), false.into())
    );
    *acked
        .entry(("Grammar".to_owned(), "Articles".to_owned()))
        .or_insert(0) += 4;
    ERRATA.run(&app.config, &["flush"]);
    assert_eq!(durable_counts(ks, user).await, case_folded(&acked));
    assert_eq!(support::event_counts(ks, user).await, case_folded(&acked));
    assert_eq!(app.frequency_counts(user).await, acked);
    let out = ERRATA.run(&app.config, &["repair", "--user", &user.to_string()]);
    assert!(out.contains("repair done: 0 counts corrected"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waits_for_a_repair_reading_its_learners_log() {
    use errata::domain::ErrorKey;
    use errata::store::cql::buffer::{fence_key, Buffer, Commit, Lease};
    use errata::store::policy::FENCE;
    let app = spawn_without_flusher().await;
    let learner = app.learner().await;
    let user = learner.user_id;
    let buffer = Buffer::connect(&app.redis().url())
        .await
        .expect("the buffer");
    let mut conn = app.redis().client().await;
    let articles = || {
        vec![(
            ErrorKey {
                category: "grammar".into(),
                subcategory: "articles".into(),
            },
            1,
        )]
    };

    // A repair holds the learner: lock, then fence (which lives only a few
    // seconds unless renewed, should the repair die).
    assert!(buffer.lock(user, "repair").await.expect("lock"));
    assert!(buffer.fence(user, "repair").await.expect("fence"));
    let ttl: i64 = conn.pttl(fence_key(user)).await.expect("PTTL");
    assert!(ttl > 0 && ttl <= FENCE.as_millis() as i64, "{ttl}");
    // Only the lock's holder may fence or renew.
    assert!(!buffer.fence(user, "other").await.expect("fence"));
    assert!(!buffer.renew(user, "other").await.expect("renew"));

    // A request's commit is refused meanwhile, its lease kept.
    let fingerprint = Uuid::new_v4();
    let now = chrono::Utc::now().timestamp_millis();
    assert!(matches!(
        buffer
            .lease(user, fingerprint, now, "r")
            .await
            .expect("lease"),
        Lease::Acquired { .. }
    ));
    assert_eq!(
        buffer
            .commit(user, fingerprint, "r", &articles())
            .await
            .expect("commit"),
        Commit::Fenced
    );
    // Over HTTP the request waits a little, then answers 503.
    let started = std::time::Instant::now();
    let response = app
        .record_with_key(&learner, &[("Grammar", "Articles")], "during-repair")
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_secs(1) && waited < std::time::Duration::from_secs(5),
        "{waited:?}"
    );

    // The snapshot sees both requests open, and lifts the fence.
    let snapshot = buffer
        .snapshot(user, "repair")
        .await
        .expect("snapshot")
        .expect("lock and fence held");
    let during =
        errata::domain::report_fingerprint(learner.utterance_id, &[], Some("during-repair"));
    let mut open = snapshot.open.clone();
    open.sort();
    let mut want = vec![fingerprint, during];
    want.sort();
    assert_eq!(open, want);
    assert!(snapshot.pending.is_empty() && snapshot.inflight.is_empty());
    assert!(buffer
        .snapshot(user, "repair")
        .await
        .expect("snapshot")
        .is_none());
    assert_eq!(
        buffer
            .commit(user, fingerprint, "r", &articles())
            .await
            .expect("commit"),
        Commit::Counted
    );
    buffer.release(user, "repair").await.expect("release");
    let answer = record_keyed(&app, learner, "during-repair").await;
    assert_eq!(answer["duplicate"], false);
    let counted = buffer.snapshot(user, "repair").await.expect("snapshot");
    assert!(counted.is_none(), "the lock was released");
    let expected: BTreeMap<(String, String), i64> =
        [(("Grammar".to_owned(), "Articles".to_owned()), 3)].into();
    assert_eq!(app.frequency_counts(user).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flusher_cut_off_from_redis_after_its_batch_keeps_the_learner_until_done() {
    use errata::store::cql::buffer::inflight_key;
    use support::{cql_node, FaultProxy};
    // The clients' replica never flushes; the flusher under test is a real
    // `errata serve` that reaches CQL and Redis through fault proxies (one
    // Redis server: a cluster's clients follow its nodes' own addresses).
    let app = TestApp::spawn_without_flusher(TestRedis::Server(RedisServer::start())).await;
    let (cql, redis) = (
        FaultProxy::start(cql_node()).await,
        FaultProxy::start(format!("127.0.0.1:{}", app.redis().server().port)).await,
    );
    let mut config = app.config.clone();
    config.cql_nodes = vec![cql.address.to_string()];
    config.redis_url = format!("redis://{}", redis.address);
    config.flush_interval_ms = 100;
    let flusher = ERRATA.serve(&config);
    Api::new(flusher.url(""))
        .readyz_until(StatusCode::OK, std::time::Duration::from_secs(10))
        .await;
    let learner = app.learner().await;
    let user = learner.user_id;

    // Its counter batch is held on the way to CQL: it has taken the deltas.
    cql.hold();
    let status = app.try_record(&learner, &TAXONOMY).await.expect("recorded");
    assert_eq!(status, StatusCode::OK);
    let acked: BTreeMap<(String, String), i64> = TAXONOMY
        .iter()
        .map(|(c, s)| ((c.to_string(), s.to_string()), 1))
        .collect();
    let mut conn = app.redis().client().await;
    let started = std::time::Instant::now();
    while !conn
        .exists::<_, bool>(inflight_key(user))
        .await
        .expect("EXISTS")
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "no take"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Redis goes away for it, then the batch goes through and is applied:
    // DONE cannot reach Redis.
    redis.hold();
    let outage = std::time::Instant::now();
    cql.restore().await;
    let ks = &app.config.cql_keyspace;
    while durable_counts(ks, user).await != case_folded(&acked) {
        assert!(
            outage.elapsed() < std::time::Duration::from_secs(10),
            "no batch"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Past the point where the flusher used to give up (20 s), within its
    // lock (30 s): the connections drop, what it sent meanwhile is lost,
    // and Redis is reachable again.
    tokio::time::sleep_until((outage + std::time::Duration::from_secs(22)).into()).await;
    redis.cut();
    redis.restore().await;
    // Its DONE gets through: the batch is never applied a second time.
    while conn
        .exists::<_, bool>(inflight_key(user))
        .await
        .expect("EXISTS")
    {
        assert!(
            outage.elapsed() < std::time::Duration::from_secs(40),
            "the in-flight deltas stayed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        durable_counts(ks, user).await,
        case_folded(&acked),
        "the applied batch was applied again"
    );
    ERRATA.run(&app.config, &["flush"]);
    assert_eq!(durable_counts(ks, user).await, case_folded(&acked));
    flusher.terminate();
}

/// The flusher is the store's own task: listed while the store serves,
/// gone once it is closed, and never started for a one-shot command.
#[tokio::test]
async fn the_flusher_runs_while_the_store_serves_and_stops_with_it() {
    use errata::store::{open_for, Background};
    let redis = TestRedis::start();
    let (config, _keyspace) = support::cql_config(&redis.url()).await;
    let serving = open_for(&config, Background::Serve).await.unwrap();
    assert_eq!(serving.workers(), ["flusher"]);
    serving.close().await.unwrap();
    assert!(serving.workers().is_empty(), "{:?}", serving.workers());
    let command = open_for(&config, Background::Command).await.unwrap();
    assert!(command.workers().is_empty(), "{:?}", command.workers());
}
