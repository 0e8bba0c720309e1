//! The CQL store unreachable and back: a real `errata serve` reaches the CQL
//! server of `ERRATA_TEST_CQL` only through a TCP proxy in this test, which
//! is cut (listener closed, every connection dropped) and restored on the
//! same port. While it is cut errata must say so on /readyz and answer 503,
//! promptly (not 500, not a hang), to ingestion, practice and sign-up, and
//! count nothing; once it is back errata must recover on its own: ready,
//! ingesting, and its flusher making the counts durable again.

use std::time::{Duration, Instant};

use errata_testkit::{cql_config, cql_node, durable_counts, Api, Errata, FaultProxy, RedisServer};
use reqwest::StatusCode;

const ERRATA: Errata = Errata::at(env!("CARGO_BIN_EXE_errata"));

const ARTICLES: (&str, &str) = ("Grammar", "Articles");
const WORD_CHOICE: (&str, &str) = ("Vocabulary", "Word Choice");
/// No request may take longer than this during the outage (errata's CQL
/// request timeout is 5 s).
const BOUND: Duration = Duration::from_secs(8);
/// How long the outage lasts.
const OUTAGE: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cql_cluster_is_a_prompt_503_and_recovers_on_its_own() {
    let redis = RedisServer::start();
    let (mut config, slot) = cql_config(&redis.url()).await;
    let proxy = FaultProxy::start(cql_node()).await;
    config.cql_nodes = vec![proxy.address.to_string()];
    config.flush_interval_ms = 100;
    let replica = ERRATA.serve(&config);
    let base = replica.url("");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a client");
    let api = Api::with_client(client.clone(), &base);
    api.readyz_until(StatusCode::OK, Duration::from_secs(10))
        .await;
    let learner = api.learner().await;
    let status = api
        .try_record(&learner, &[ARTICLES])
        .await
        .expect("recorded");
    assert_eq!(status, StatusCode::OK);
    // Durable before the cut: a counter batch cut in flight may have been
    // applied and is then applied again (the documented case `errata
    // repair` corrects), which would make the exact check below flaky.
    ERRATA.run(&config, &["flush"]);

    proxy.cut();
    let reason = api
        .readyz_until(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(15))
        .await;
    assert!(
        reason.contains("Not ready: CQL store unavailable"),
        "no reason given: {reason}"
    );
    // Clients keep coming for a while (long enough for the driver's
    // reconnection attempts to back off): every ingestion, practice request,
    // sign-up and readiness probe gets a prompt 503, never a 500 or a hang.
    let outage = Instant::now();
    let mut attempts = 0;
    while attempts < 3 || outage.elapsed() < OUTAGE {
        attempts += 1;
        let ingest = client
            .post(format!("{base}/simulate-and-generate"))
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&errata_testkit::report(&learner, &[WORD_CHOICE]));
        let practice = client.get(format!(
            "{base}/generate-exercise?user_id={}",
            learner.user_id
        ));
        let sign_up = client
            .post(format!("{base}/users/"))
            .json(&serde_json::json!({
                "username": "late",
                "email": format!("{}@example.com", uuid::Uuid::new_v4()),
            }));
        for (what, request) in [
            ("ingestion", ingest),
            ("practice", practice),
            ("sign-up", sign_up),
        ] {
            let started = Instant::now();
            let response = request
                .send()
                .await
                .unwrap_or_else(|e| panic!("errata did not answer {what} during the outage: {e}"));
            let elapsed = started.elapsed();
            let status = response.status();
            let retry_after = response.headers().get("retry-after").cloned();
            let text = response.text().await.expect("a body");
            assert_eq!(
                status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{what} during the outage: {text}"
            );
            assert!(elapsed < BOUND, "{what}: a 503 took {elapsed:?}");
            // A short reason of errata's own: no address, no driver text.
            let port = proxy.address.port().to_string();
            for internal in [port.as_str(), "127.0.0.1", "os error", "onnection", "frame"] {
                assert!(
                    !text.contains(internal),
                    "{what}: the body gives away {internal:?}: {text}"
                );
            }
            assert_eq!(
                retry_after.as_ref().and_then(|v| v.to_str().ok()),
                Some("1"),
                "{what}: no Retry-After"
            );
            if attempts == 1 {
                eprintln!("{what} during the outage: 503 in {elapsed:?}: {text}");
            }
        }
        api.readyz_until(StatusCode::SERVICE_UNAVAILABLE, Duration::ZERO)
            .await;
    }
    eprintln!("/readyz during the outage: {reason}");

    proxy.restore().await;
    let restored = Instant::now();
    api.readyz_until(StatusCode::OK, Duration::from_secs(30))
        .await;
    eprintln!("ready again {:?} after the restore", restored.elapsed());
    let status = api
        .try_record(&learner, &[ARTICLES, WORD_CHOICE])
        .await
        .expect("recorded");
    assert_eq!(status, StatusCode::OK, "ingestion after the outage");

    // The 503s counted nothing, everything acknowledged is counted, and
    // the replica's own flusher makes it durable again.
    let expected = [
        (("Grammar".to_owned(), "Articles".to_owned()), 2),
        (("Vocabulary".to_owned(), "Word Choice".to_owned()), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(api.frequency_counts(learner.user_id).await, expected);
    let wanted = [
        (("grammar".to_owned(), "articles".to_owned()), 2),
        (("vocabulary".to_owned(), "word choice".to_owned()), 1),
    ]
    .into_iter()
    .collect();
    let started = Instant::now();
    loop {
        let durable = durable_counts(&slot.keyspace, learner.user_id).await;
        if durable == wanted {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the flusher did not make the counts durable after the outage: {durable:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    replica.terminate();
}
