//! What a request costs the CQL server, counted by a real `errata serve`
//! replica's own `/metrics` (`errata_cql_statements_total` by kind): an
//! ingest is one batch, a practice request two reads (three by recency),
//! and the sentences practice shows come with those reads, from the labels,
//! not from the event log; `errata repair` puts them back when they are
//! missing. And `errata seed`, the load generator's bulk setup, writes
//! learners a replica then serves.

use std::collections::BTreeMap;

use errata::store::cql::buffer::Buffer;
use errata_testkit as support;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{cql_config, cql_session, expect_status, report, Api, Errata, Learner, RedisServer};

const ERRATA: Errata = Errata::at(env!("CARGO_BIN_EXE_errata"));

/// The replica's CQL statements so far, by kind.
async fn statements(api: &Api) -> BTreeMap<String, u64> {
    let text = api.get("/metrics").await.text().await.expect("metrics");
    text.lines()
        .filter_map(|line| line.strip_prefix("errata_cql_statements_total{kind=\""))
        .filter_map(|rest| {
            let (kind, value) = rest.split_once("\"} ")?;
            Some((kind.to_owned(), value.trim().parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// The statements by kind that `work` made the replica run.
async fn cost<F: std::future::Future>(api: &Api, work: F) -> (F::Output, BTreeMap<String, u64>) {
    let before = statements(api).await;
    let output = work.await;
    let after = statements(api).await;
    let spent = after
        .into_iter()
        .filter_map(|(kind, n)| {
            let spent = n - before.get(&kind).copied().unwrap_or(0);
            (spent > 0).then_some((kind, spent))
        })
        .collect();
    (output, spent)
}

fn kinds(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()
}

/// Records `errors` about the learner's utterance, corrected as `fix`.
async fn record_corrected(api: &Api, learner: &Learner, errors: &[(&str, &str)], fix: &str) {
    let mut body = report(learner, errors);
    body["corrected_content"] = json!(fix);
    expect_status(
        api.post("/simulate-and-generate", &body).await,
        StatusCode::OK,
    )
    .await;
}

/// The learner's own-sentence exercises over a few rotations.
async fn own_sentences(api: &Api, learner: &Learner) -> Vec<Value> {
    let mut own = Vec::new();
    for _ in 0..6 {
        let body = expect_status(
            api.get(&format!(
                "/generate-exercise?user_id={}&per_error=2",
                learner.user_id
            ))
            .await,
            StatusCode::OK,
        )
        .await;
        for e in body["exercises"].as_array().expect("exercises") {
            if e["source"] == "your_utterance" {
                own.push(e.clone());
            }
        }
    }
    own
}

#[tokio::test]
async fn an_ingest_is_one_batch_and_practice_two_reads_with_the_sentences() {
    let redis = RedisServer::start();
    let (mut config, _slot) = cql_config(&redis.url()).await;
    // No flush while costs are counted (the buffered deltas are merged in).
    config.flush_interval_ms = 600_000;
    let replica = ERRATA.serve(&config);
    let api = Api::new(replica.url(""));
    let learner = api.learner().await;
    let said = api.say(&learner, "Yesterday she go to the market.").await;

    let ((), spent) = cost(
        &api,
        record_corrected(
            &api,
            &said,
            &[("Grammar", "Verb Tense")],
            "Yesterday she went to the market.",
        ),
    )
    .await;
    // This replica created the learner, conversation and utterance: no
    // ownership read, and labels, bucket and events in one batch.
    assert_eq!(spent, kinds(&[("report_batch", 1)]));

    let practice = format!("/generate-exercise?user_id={}&per_error=2", learner.user_id);
    let (body, spent) = cost(&api, async {
        expect_status(api.get(&practice).await, StatusCode::OK).await
    })
    .await;
    assert_eq!(
        spent,
        kinds(&[("select_counts", 1), ("select_labels_sentences", 1)])
    );
    assert_eq!(body["top_errors"][0]["errorSubCategory"], "Verb Tense");
    let (_, spent) = cost(&api, async {
        expect_status(
            api.get(&format!("{practice}&rank=recent")).await,
            StatusCode::OK,
        )
        .await
    })
    .await;
    assert_eq!(
        spent,
        kinds(&[
            ("select_counts", 1),
            ("select_labels_sentences", 1),
            ("select_week_counts", 1)
        ])
    );

    // The sentence came with the labels: graded by the correction.
    let own = own_sentences(&api, &learner).await;
    let item = own
        .first()
        .expect("an exercise from the corrected sentence");
    assert_eq!(item["answer"], "Yesterday she went to the market.");
    assert!(item["prompt"]
        .as_str()
        .unwrap()
        .contains("Yesterday she go to the market."));
}

/// The total of `generate-exercise`'s top errors, and what the request cost
/// in CQL.
async fn practise(api: &Api, learner: &Learner) -> (i64, BTreeMap<String, u64>) {
    let practice = format!("/generate-exercise?user_id={}&top_n=10", learner.user_id);
    let (body, spent) = cost(api, async {
        expect_status(api.get(&practice).await, StatusCode::OK).await
    })
    .await;
    let total = body["top_errors"]
        .as_array()
        .expect("top errors")
        .iter()
        .map(|e| e["errorFrequency"].as_i64().expect("a frequency"))
        .sum();
    (total, spent)
}

#[tokio::test]
async fn a_repeated_read_is_served_from_memory_until_the_learner_changes() {
    let redis = RedisServer::start();
    let (mut config, _slot) = cql_config(&redis.url()).await;
    config.flush_interval_ms = 600_000;
    let (a, b) = (ERRATA.serve(&config), ERRATA.serve(&config));
    let (a, b) = (Api::new(a.url("")), Api::new(b.url("")));
    let learner = a.learner().await;
    let record = |api: &Api, error: (&'static str, &'static str)| {
        let (api, learner) = (api.clone(), learner);
        async move {
            expect_status(api.record(&learner, &[error]).await, StatusCode::OK).await;
        }
    };
    record(&a, ("Grammar", "Articles")).await;
    let reads = kinds(&[("select_counts", 1), ("select_labels_sentences", 1)]);

    // On replica b: read once from CQL, then from memory.
    assert_eq!(practise(&b, &learner).await, (1, reads.clone()));
    assert_eq!(practise(&b, &learner).await, (1, kinds(&[])));
    // A request counted on replica a: b reads CQL again, and shows it.
    record(&a, ("Grammar", "Verb Tense")).await;
    assert_eq!(practise(&b, &learner).await, (2, reads.clone()));
    assert_eq!(practise(&b, &learner).await, (2, kinds(&[])));
    // A flush moves the deltas into the counters: read again, same total.
    ERRATA.run(&config, &["flush"]);
    assert_eq!(practise(&b, &learner).await, (2, reads.clone()));
    assert_eq!(practise(&b, &learner).await, (2, kinds(&[])));
    // A new read version (what a repair gives the learner once it has
    // refilled their labels): read again.
    let buffer = Buffer::connect(&redis.url()).await.expect("the buffer");
    buffer
        .new_read_version(learner.user_id)
        .await
        .expect("a new version");
    assert_eq!(practise(&b, &learner).await, (2, reads.clone()));
    assert_eq!(practise(&b, &learner).await, (2, kinds(&[])));
    // A repair may change counters and labels: read again.
    ERRATA.run(&config, &["repair", "--user", &learner.user_id.to_string()]);
    assert_eq!(practise(&b, &learner).await, (2, reads.clone()));
    // Erased on replica a: b knows nothing of the learner any more.
    let erased = a.delete(&format!("/users/{}", learner.user_id)).await;
    assert_eq!(erased.status(), StatusCode::NO_CONTENT);
    let practice = format!("/generate-exercise?user_id={}", learner.user_id);
    assert_eq!(b.get(&practice).await.status(), StatusCode::NOT_FOUND);
    let hits = b.get("/metrics").await.text().await.expect("metrics");
    assert!(
        hits.lines()
            .any(|l| l == "errata_read_cache_total{result=\"hit\"} 4"),
        "{hits}"
    );
}

#[tokio::test]
async fn repair_puts_back_the_sentences_a_label_lacks() {
    let redis = RedisServer::start();
    let (config, _slot) = cql_config(&redis.url()).await;
    let replica = ERRATA.serve(&config);
    let api = Api::new(replica.url(""));
    let learner = api.learner().await;
    let said = api.say(&learner, "I goed home.").await;
    expect_status(
        api.record(&said, &[("Grammar", "Irregular Verbs")]).await,
        StatusCode::OK,
    )
    .await;
    assert!(own_sentences(&api, &learner).await.is_empty());

    // An event whose correction is known and whose label keeps no
    // sentence: as for events recorded before the labels kept them.
    let session = cql_session().await;
    let ks = &config.cql_keyspace;
    let (bucket,): (i32,) = session
        .query_unpaged(
            format!("SELECT bucket FROM {ks}.error_buckets WHERE user_id = ?"),
            (learner.user_id,),
        )
        .await
        .expect("buckets")
        .into_rows_result()
        .expect("rows")
        .first_row()
        .expect("one bucket");
    let (at, event): (scylla::value::CqlTimestamp, uuid::Uuid) = session
        .query_unpaged(
            format!(
                "SELECT occurred_at, event_id FROM {ks}.error_events \
                 WHERE user_id = ? AND bucket = ?"
            ),
            (learner.user_id, bucket),
        )
        .await
        .expect("events")
        .into_rows_result()
        .expect("rows")
        .single_row()
        .expect("one event");
    session
        .query_unpaged(
            format!(
                "UPDATE {ks}.error_events SET correction = 'I went home.' \
                 WHERE user_id = ? AND bucket = ? AND occurred_at = ? AND event_id = ?"
            ),
            (learner.user_id, bucket, at, event),
        )
        .await
        .expect("the correction set");
    // Practice does not search the event log.
    assert!(own_sentences(&api, &learner).await.is_empty());

    ERRATA.run(&config, &["repair", "--user", &learner.user_id.to_string()]);
    let own = own_sentences(&api, &learner).await;
    let item = own.first().expect("repair put the sentence back");
    assert_eq!(item["answer"], "I went home.");
    assert!(item["exercise_id"]
        .as_str()
        .unwrap()
        .contains(&said.utterance_id.to_string()));
    // Repair changed no count.
    assert_eq!(api.total_frequency(learner.user_id).await, 1);
}

#[tokio::test]
async fn seeded_learners_are_served_like_signed_up_ones() {
    let redis = RedisServer::start();
    let (mut config, _slot) = cql_config(&redis.url()).await;
    // No flush while costs are counted.
    config.flush_interval_ms = 600_000;
    let out = ERRATA.run(&config, &["seed", "--learners", "20", "--utterances", "2"]);
    let learners: Vec<Vec<uuid::Uuid>> = out
        .lines()
        .map(|line| {
            line.split(' ')
                .map(|id| id.parse().expect("an id"))
                .collect()
        })
        .collect();
    assert_eq!(learners.len(), 20);
    assert!(learners.iter().all(|ids| ids.len() == 4), "{out}");

    // A replica that created none of them reads their facts from CQL.
    let replica = ERRATA.serve(&config);
    let api = Api::new(replica.url(""));
    let ids = &learners[7];
    let user = expect_status(api.get(&format!("/users/{}", ids[0])).await, StatusCode::OK).await;
    let learner = Learner {
        user_id: ids[0],
        conversation_id: ids[1],
        utterance_id: ids[3],
    };
    let record = |learner: Learner, error: (&'static str, &'static str)| {
        let api = &api;
        async move { api.record(&learner, &[error]).await.status() }
    };
    // The utterance's row proves the whole chain: one read, then the
    // facts are known.
    let (status, spent) = cost(&api, record(learner, ("Grammar", "Articles"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        spent,
        kinds(&[("select_utterance", 1), ("report_batch", 1)])
    );
    let (status, spent) = cost(&api, record(learner, ("Grammar", "Verb Tense"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(spent, kinds(&[("report_batch", 1)]));
    assert_eq!(api.total_frequency(learner.user_id).await, 2);
    // Another learner's utterance is not this learner's: not found under
    // this learner's conversation (known), so the utterance is the 404.
    let foreign = Learner {
        utterance_id: learners[8][2],
        ..learner
    };
    let (status, spent) = cost(&api, record(foreign, ("Grammar", "Articles"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(spent, kinds(&[("select_utterance", 1)]));
    // The e-mail is taken, as a sign-up would have taken it.
    let again = api
        .post(
            "/users/",
            &json!({"username": "someone", "email": user["email"]}),
        )
        .await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
}
