//! Every metric, label and label value that the alert rules
//! (deploy/prometheus/alerts.yml) and the dashboard (deploy/grafana/errata.json)
//! name and that the cql store exports, checked on a real `errata serve`
//! in cql mode: traffic, then the CQL cluster cut off (503s, failing
//! readiness, refused counter batches) and restored, then a count made
//! wrong and `errata repair --metrics-file` correcting it, whose file the
//! textfile collector would export. The embedded store's metrics are
//! checked by tests/monitoring.rs.

use std::time::{Duration, Instant};

use errata::config::StoreKind;
use errata_testkit::monitoring::{self, assert_exported, Exported};
use errata_testkit::{cql_config, cql_node, cql_session, Api, Errata, FaultProxy, RedisServer};
use reqwest::StatusCode;

const ERRATA: Errata = Errata::at(env!("CARGO_BIN_EXE_errata"));

/// The value of an unlabelled sample in a scrape, if there is one.
fn sample(text: &str, metric: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(metric)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Scrapes until `metric` has a sample above zero, at most `within`.
async fn until_positive(api: &Api, metric: &str, within: Duration) -> String {
    let started = Instant::now();
    loop {
        let text = monitoring::scrape(api).await;
        if sample(&text, metric).is_some_and(|v| v > 0.0) {
            return text;
        }
        assert!(
            started.elapsed() < within,
            "{metric} still not above zero after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_errata_on_the_cql_store_exports_what_the_rules_and_the_dashboard_name() {
    let redis = RedisServer::start();
    let (mut config, slot) = cql_config(&redis.url()).await;
    let proxy = FaultProxy::start(cql_node()).await;
    config.cql_nodes = vec![proxy.address.to_string()];
    // Long enough that a delta recorded just before the cut is still in
    // Redis when the flusher next runs (and fails to apply it).
    config.flush_interval_ms = 1_000;
    let replica = ERRATA.serve(&config);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a client");
    let api = Api::with_client(client, replica.url(""));
    api.readyz_until(StatusCode::OK, Duration::from_secs(30))
        .await;

    let learners = monitoring::drive_traffic(&api, 3).await;
    until_positive(&api, "errata_flush_batches_total", Duration::from_secs(30)).await;

    // The CQL cluster unreachable: readiness fails, requests answer 503,
    // and a counter batch taken from Redis is refused. The cut comes right
    // after a recording, so that the flusher's next pass takes it; should
    // that pass have come first, the next recording tries again.
    let learner = learners[0];
    let started = Instant::now();
    loop {
        let said = api.say(&learner, "He don't like it.").await;
        let status = api
            .try_record(&said, &[("Grammar", "Negation")])
            .await
            .expect("recorded");
        assert_eq!(status, StatusCode::OK);
        proxy.cut();
        api.readyz_until(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(15))
            .await;
        let sign_up = api
            .post(
                "/users/",
                &serde_json::json!({
                    "username": "cut_off",
                    "email": format!("{}@example.com", uuid::Uuid::new_v4()),
                }),
            )
            .await;
        assert_eq!(sign_up.status(), StatusCode::SERVICE_UNAVAILABLE);
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut failed = false;
        while !failed && Instant::now() < deadline {
            let text = monitoring::scrape(&api).await;
            failed = sample(&text, "errata_flush_failures_total").is_some_and(|v| v > 0.0);
            if !failed {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        proxy.restore().await;
        api.readyz_until(StatusCode::OK, Duration::from_secs(30))
            .await;
        if failed {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no counter batch was refused while the CQL cluster was cut off"
        );
    }
    // Back: the flusher applies what waited.
    api.readyz_until(StatusCode::OK, Duration::from_secs(30))
        .await;
    ERRATA.run(&config, &["flush"]);

    // A count made wrong behind errata's back, then repaired.
    let session = cql_session().await;
    let keyspace = &slot.keyspace;
    let (category, subcategory): (String, String) = session
        .query_unpaged(
            format!(
                "SELECT category_key, subcategory_key FROM {keyspace}.error_counts \
                 WHERE user_id = ? LIMIT 1"
            ),
            (learner.user_id,),
        )
        .await
        .expect("reading a counter")
        .into_rows_result()
        .expect("rows")
        .first_row::<(String, String)>()
        .expect("the learner has a counter");
    session
        .query_unpaged(
            format!(
                "UPDATE {keyspace}.error_counts SET frequency = frequency + 2 \
                 WHERE user_id = ? AND category_key = ? AND subcategory_key = ?"
            ),
            (learner.user_id, &category, &subcategory),
        )
        .await
        .expect("making a count wrong");
    let dir = tempfile::tempdir().expect("a folder for the textfile");
    let file = dir.path().join("repair.prom");
    let out = ERRATA.run(
        &config,
        &[
            "repair",
            "--user",
            &learner.user_id.to_string(),
            "--metrics-file",
            file.to_str().unwrap(),
        ],
    );
    let repair = std::fs::read_to_string(&file).expect("errata repair wrote its metrics");
    let corrected = sample(&repair, "errata_repair_corrections").expect("a correction count");
    assert!(corrected >= 1.0, "{out}\n{repair}");
    assert_eq!(sample(&repair, "errata_repair_success"), Some(1.0));

    let mut exported = Exported::parse(&monitoring::scrape(&api).await);
    exported.add(&repair);
    assert_exported(&exported, StoreKind::Cql);
    replica.terminate();
}
