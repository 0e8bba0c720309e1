//! Counting in cql mode when a writer is late, against a real
//! `redis-server` and the CQL server of `ERRATA_TEST_CQL`: a flusher that
//! stalls past its lock while a repair takes the learner, a counter batch
//! (a flusher's, a repair's) that reaches Cassandra after its client gave
//! up on it, an erasure meeting either, a repair of a learner being erased,
//! and an erasure that cannot start. Each test plays the late writer
//! itself (the buffer's own calls, or a store whose CQL link holds its next
//! batch) so the race happens every run, in the order that broke counts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use errata::store::cql::buffer::{erased_key, learner_of, lock_key, Buffer, Take};
use errata::store::{open_for, Background, Store};
use errata_testkit::{
    cql_node, cql_session, durable_counts, event_counts, redis_keys, FaultProxy, Learner, TestApp,
    TestRedis,
};
use redis::AsyncCommands;
use reqwest::StatusCode;
use scylla::value::Counter;
use uuid::Uuid;

const ARTICLES: (&str, &str) = ("Grammar", "Articles");
const TENSE: (&str, &str) = ("Grammar", "Verb Tense");
/// How long a held batch waits past its client's timeout before it is
/// delivered (the driver gives up after 5 s; the locks live 30 s).
const LATE_BY: Duration = Duration::from_secs(3);

/// An in-process errata whose background flusher never runs (the tests
/// play the flusher, or flush through a store of their own).
async fn spawn_without_flusher() -> TestApp {
    TestApp::spawn_without_flusher(TestRedis::start()).await
}

/// A store on the app's keyspace and Redis, as `errata repair` and
/// `errata flush` open it, reaching CQL directly or through `proxy`.
async fn command_store(app: &TestApp, proxy: Option<&FaultProxy>) -> Arc<dyn Store> {
    let mut config = app.config.clone();
    if let Some(proxy) = proxy {
        config.cql_nodes = vec![proxy.address.to_string()];
    }
    open_for(&config, Background::Command)
        .await
        .expect("a command's store")
}

/// Records `reports` one-point reports of the learner, acknowledged.
async fn record(app: &TestApp, learner: &Learner, reports: usize) {
    for n in 0..reports {
        let error = if n % 2 == 0 { ARTICLES } else { TENSE };
        let status = app.try_record(learner, &[error]).await.expect("recorded");
        assert_eq!(status, StatusCode::OK);
    }
}

/// Adds `delta` to the learner's counter of `key` (category_key,
/// subcategory_key) straight in CQL: a flusher's batch, or a count gone
/// wrong.
async fn add_to_counter(keyspace: &str, user: Uuid, key: &(String, String), delta: i64) {
    cql_session()
        .await
        .query_unpaged(
            format!(
                "UPDATE {keyspace}.error_counts SET frequency = frequency + ? \
                 WHERE user_id = ? AND category_key = ? AND subcategory_key = ?"
            ),
            (Counter(delta), user, &key.0, &key.1),
        )
        .await
        .expect("a counter update");
}

/// The learner's keys in Redis.
async fn keys_of(redis: &TestRedis, user: Uuid) -> Vec<String> {
    let mut keys: Vec<String> = redis_keys(redis)
        .await
        .into_iter()
        .filter(|key| learner_of(key) == Some(user))
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flusher_finishing_after_a_repair_took_its_learner_deletes_nothing() {
    let app = spawn_without_flusher().await;
    let keyspace = app.config.cql_keyspace.clone();
    let learner = app.learner().await;
    let user = learner.user_id;
    record(&app, &learner, 6).await;
    let buffer = Buffer::connect(&app.redis().url()).await.expect("Redis");

    // A flusher takes the learner and its counter batch is applied...
    let Take::Deltas { deltas, .. } = buffer.take(user, "stalled").await.expect("a take") else {
        panic!("the learner's deltas were not taken");
    };
    for (key, delta) in &deltas {
        let key = (key.category.clone(), key.subcategory.clone());
        add_to_counter(&keyspace, user, &key, *delta).await;
    }
    // ...then it stalls past its lock, which lapses, and a repair takes
    // the learner meanwhile.
    let mut redis = app.redis().client().await;
    let _: i64 = redis.del(lock_key(user)).await.expect("DEL");
    let store = command_store(&app, None).await;
    store.repair(Some(user)).await.expect("a repair");

    // The stalled flusher wakes and finishes: the in-flight deltas are no
    // longer its batch, and stay for the next flusher.
    let finished = buffer.done(user, "stalled").await.expect("DONE");
    assert!(
        !finished,
        "a late DONE deleted deltas a repair had counted on"
    );
    store.flush().await.expect("a flush");
    assert_eq!(
        durable_counts(&keyspace, user).await,
        event_counts(&keyspace, user).await,
        "the counts are not the log's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_batch_delivered_late_brings_no_count_of_an_erased_learner_back() {
    let app = spawn_without_flusher().await;
    let keyspace = app.config.cql_keyspace.clone();
    let learner = app.learner().await;
    let user = learner.user_id;
    record(&app, &learner, 4).await;

    // A flusher whose counter batch gets no answer: the link holds it.
    let proxy = FaultProxy::start(cql_node()).await;
    let late = command_store(&app, Some(&proxy)).await;
    proxy.hold_next_batch();
    let flushed = late.flush().await;
    assert!(flushed.is_err(), "the held batch was answered: {flushed:?}");
    assert!(proxy.is_held(), "no counter batch was held");

    // The learner is erased, and the batch arrives after all.
    let api = app.api.clone();
    let erasure = tokio::spawn(async move { api.delete(&format!("/users/{user}")).await.status() });
    tokio::time::sleep(LATE_BY).await;
    proxy.restore().await;
    assert_eq!(erasure.await.expect("the erasure"), StatusCode::NO_CONTENT);

    assert_eq!(
        durable_counts(&keyspace, user).await,
        BTreeMap::new(),
        "an erased learner has counts"
    );
    let errors = app.get(&format!("/users/{user}/errors")).await;
    assert_eq!(errors.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_run_again_after_its_correction_timed_out_corrects_once() {
    let app = spawn_without_flusher().await;
    let keyspace = app.config.cql_keyspace.clone();
    let learner = app.learner().await;
    let user = learner.user_id;
    record(&app, &learner, 4).await;
    let direct = command_store(&app, None).await;
    direct.flush().await.expect("a flush");
    let logged = event_counts(&keyspace, user).await;
    assert_eq!(durable_counts(&keyspace, user).await, logged);
    // A count gone wrong.
    let key = logged.keys().next().expect("an error").clone();
    add_to_counter(&keyspace, user, &key, 2).await;

    // A repair whose correction gets no answer: it fails.
    let proxy = FaultProxy::start(cql_node()).await;
    let late = command_store(&app, Some(&proxy)).await;
    proxy.hold_next_batch();
    let first = late.repair(Some(user)).await;
    assert!(
        first.is_err(),
        "the held correction was answered: {first:?}"
    );
    assert!(proxy.is_held(), "no correction batch was held");

    // The operator runs it again at once, as the docs advise; the first
    // correction arrives meanwhile.
    let again = tokio::spawn(async move { direct.repair(Some(user)).await });
    tokio::time::sleep(LATE_BY).await;
    proxy.restore().await;
    let corrected = again.await.expect("the second run").expect("a repair");
    assert_eq!(corrected, 0, "the second run corrected what the first did");
    assert_eq!(durable_counts(&keyspace, user).await, logged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_leaves_no_key_of_an_erased_learner() {
    let app = spawn_without_flusher().await;
    let (erased, kept) = (app.learner().await, app.learner().await);
    record(&app, &erased, 2).await;
    record(&app, &kept, 2).await;
    let store = command_store(&app, None).await;
    store.flush().await.expect("a flush");
    let status = app
        .delete(&format!("/users/{}", erased.user_id))
        .await
        .status();
    assert_eq!(status, StatusCode::NO_CONTENT);

    // A repair of the learner while the erasure's marker lives, and a full
    // one whose list was made before the erasure.
    assert_eq!(store.repair(Some(erased.user_id)).await.expect("repair"), 0);
    store.repair(None).await.expect("a full repair");
    assert_eq!(
        keys_of(app.redis(), erased.user_id).await,
        vec![erased_key(erased.user_id)]
    );
    // And once the marker is gone.
    let mut redis = app.redis().client().await;
    let _: i64 = redis.del(erased_key(erased.user_id)).await.expect("DEL");
    assert_eq!(store.repair(Some(erased.user_id)).await.expect("repair"), 0);
    assert_eq!(
        keys_of(app.redis(), erased.user_id).await,
        Vec::<String>::new()
    );
    // The other learner is repaired as ever.
    assert_eq!(store.repair(Some(kept.user_id)).await.expect("repair"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_that_cannot_start_leaves_the_learner_served() {
    let app = spawn_without_flusher().await;
    let learner = app.learner().await;
    let user = learner.user_id;
    record(&app, &learner, 1).await;
    // A long repair holds the learner: the erasure cannot take its lock.
    let mut redis = app.redis().client().await;
    let _: () = redis
        .set_ex(lock_key(user), "a long repair", 120)
        .await
        .expect("SET");
    let status = app.delete(&format!("/users/{user}")).await.status();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    // The learner still exists: served at once, not refused for the
    // erasure marker's ten minutes.
    let exists: bool = redis.exists(erased_key(user)).await.expect("EXISTS");
    assert!(!exists, "a failed erasure left its marker");
    let status = app
        .try_record(&learner, &[ARTICLES])
        .await
        .expect("recorded");
    assert_eq!(status, StatusCode::OK);
    let errors = app.get(&format!("/users/{user}/errors")).await;
    assert_eq!(errors.status(), StatusCode::OK);
}
