//! The production shape: real `errata serve` processes sharing one Redis and
//! one CQL keyspace, and Redis killed with SIGKILL under load.

#[path = "support/cql.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use support::{
    cql_config, durable_counts, http_frequencies, http_learner, http_record, readyz_until,
    run_errata, RedisServer, ServeProcess,
};

const TAXONOMY: [(&str, &str); 3] = [
    ("Grammar", "Articles"),
    ("Vocabulary", "Word Choice"),
    ("Fluency", "Filler Words"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_under_concurrent_load_on_the_same_learners_count_exactly() {
    const CLIENTS: usize = 8;
    const REQUESTS: usize = 30;
    let redis = RedisServer::start();
    let (mut config, slot) = cql_config(&redis.url()).await;
    config.flush_interval_ms = 20; // both flushers race for the same learners
    let replicas = [ServeProcess::start(&config), ServeProcess::start(&config)];
    let bases: Vec<String> = replicas.iter().map(|r| r.url("")).collect();
    let client = reqwest::Client::new();
    let learners = [
        http_learner(&client, &bases[0]).await,
        http_learner(&client, &bases[1]).await,
    ];

    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, bases) = (client.clone(), bases.clone());
        tasks.push(tokio::spawn(async move {
            let mut sent: BTreeMap<(usize, usize), i64> = BTreeMap::new();
            for n in 0..REQUESTS {
                // Alternate replicas and learners; 1 to 3 points each.
                let base = &bases[(c + n) % 2];
                let l = (c + n / 2) % 2;
                let points: Vec<usize> = (0..=(c + n) % 3).map(|i| (c + n + i) % 3).collect();
                let errors: Vec<(&str, &str)> = points.iter().map(|&i| TAXONOMY[i]).collect();
                let status = http_record(&client, base, learners[l], &errors)
                    .await
                    .expect("recorded");
                assert_eq!(status, StatusCode::OK);
                for i in points {
                    *sent.entry((l, i)).or_insert(0) += 1;
                }
            }
            sent
        }));
    }
    let mut expected: BTreeMap<(usize, usize), i64> = BTreeMap::new();
    for task in tasks {
        for (k, n) in task.await.expect("a client") {
            *expected.entry(k).or_insert(0) += n;
        }
    }
    let expected_for = |l: usize| -> BTreeMap<(String, String), i64> {
        expected
            .iter()
            .filter(|((learner, _), _)| *learner == l)
            .map(|((_, i), n)| {
                let (c, s) = TAXONOMY[*i];
                ((c.to_owned(), s.to_owned()), *n)
            })
            .collect()
    };

    // Read-your-writes on either replica, while the flushers work.
    for (l, learner) in learners.iter().enumerate() {
        for base in &bases {
            assert_eq!(
                http_frequencies(&client, base, learner.0).await,
                expected_for(l)
            );
        }
    }
    run_errata(&config, &["flush"]);
    for (l, learner) in learners.iter().enumerate() {
        let durable: BTreeMap<(String, String), i64> = durable_counts(&slot.keyspace, learner.0)
            .await
            .into_iter()
            .collect();
        let wanted: BTreeMap<(String, String), i64> = expected_for(l)
            .into_iter()
            .map(|((c, s), n)| ((c.to_lowercase(), s.to_lowercase()), n))
            .collect();
        assert_eq!(durable, wanted, "learner {l}: durable counters");
        for base in &bases {
            assert_eq!(
                http_frequencies(&client, base, learner.0).await,
                expected_for(l)
            );
        }
    }
    let [a, b] = replicas;
    a.terminate();
    b.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_under_load_loses_no_acknowledged_increment() {
    const CLIENTS: usize = 6;
    let mut redis = RedisServer::start_with_aof();
    let (config, slot) = cql_config(&redis.url()).await;
    let replica = ServeProcess::start(&config);
    let base = replica.url("");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("a client");
    let learner = http_learner(&client, &base).await;

    let acked = Arc::new(AtomicI64::new(0));
    let sent = Arc::new(AtomicI64::new(0));
    let unavailable = Arc::new(AtomicI64::new(0));
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, base) = (client.clone(), base.clone());
        let (acked, sent, unavailable, running) = (
            acked.clone(),
            sent.clone(),
            unavailable.clone(),
            running.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while running.load(Ordering::SeqCst) {
                sent.fetch_add(2, Ordering::SeqCst);
                let errors = [TAXONOMY[0], TAXONOMY[1]];
                match http_record(&client, &base, learner, &errors).await {
                    Ok(StatusCode::OK) => {
                        acked.fetch_add(2, Ordering::SeqCst);
                    }
                    Ok(StatusCode::SERVICE_UNAVAILABLE) => {
                        unavailable.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Ok(other) => panic!("unexpected status {other}"),
                    Err(e) => panic!("errata did not answer: {e}"),
                }
            }
        }));
    }
    let wait_for = |points: i64| {
        let acked = acked.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while acked.load(Ordering::SeqCst) < points {
                assert!(std::time::Instant::now() < deadline, "load stalled");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for(200).await;
    redis.kill();
    let acked_at_kill = acked.load(Ordering::SeqCst);
    // Unready, with the reason, and the clients get 503s (polled: no sleep
    // standing in for either).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let reason = readyz_until(
        &client,
        &base,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(20),
    )
    .await;
    assert!(
        reason.contains("Redis unavailable"),
        "no reason given: {reason}"
    );
    while unavailable.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no 503 while Redis was down"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Restarted on its append-only file; errata keeps running.
    redis.restart();
    wait_for(acked_at_kill + 200).await;
    // Ingestion works again; readiness recovers too, without a restart.
    readyz_until(&client, &base, StatusCode::OK, Duration::from_secs(30)).await;
    running.store(false, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("a client");
    }
    let (acked, sent) = (acked.load(Ordering::SeqCst), sent.load(Ordering::SeqCst));

    run_errata(&config, &["flush"]);
    let seen: i64 = http_frequencies(&client, &base, learner.0)
        .await
        .values()
        .sum();
    let durable: i64 = durable_counts(&slot.keyspace, learner.0)
        .await
        .values()
        .sum();
    assert!(
        seen >= acked,
        "acknowledged {acked} points, only {seen} counted"
    );
    // A request answered 503 may still have counted (the answer was lost
    // with the connection), never more than what was sent.
    assert!(seen <= sent, "{seen} counted, only {sent} sent");
    assert_eq!(durable, seen, "flush left deltas in Redis");
    replica.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_drains_the_buffer_into_the_counters_before_exit() {
    const CLIENTS: usize = 8;
    let redis = RedisServer::start();
    let (mut config, slot) = cql_config(&redis.url()).await;
    // The flusher never gets its turn: only the shutdown drain can make
    // anything durable.
    config.flush_interval_ms = 600_000;
    let mut replica = ServeProcess::start(&config);
    let base = replica.url("");
    let client = reqwest::Client::new();
    let learner = http_learner(&client, &base).await;

    let acked = Arc::new(AtomicI64::new(0));
    let sent = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, base, acked, sent) =
            (client.clone(), base.clone(), acked.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            // Until the server stops answering: then every later request
            // fails to connect, and the client stops.
            loop {
                sent.fetch_add(2, Ordering::SeqCst);
                match http_record(&client, &base, learner, &[TAXONOMY[0], TAXONOMY[2]]).await {
                    Ok(StatusCode::OK) => {
                        acked.fetch_add(2, Ordering::SeqCst);
                    }
                    Ok(other) => panic!("unexpected status {other} while running"),
                    Err(_) => return,
                }
            }
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::SeqCst) < 300 {
        assert!(std::time::Instant::now() < deadline, "load stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pid = replica.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = replica.child.wait().expect("errata exits");
    assert!(
        status.success(),
        "errata exited with {status} after SIGTERM"
    );
    for task in tasks {
        task.await.expect("a client");
    }
    let (acked, sent) = (acked.load(Ordering::SeqCst), sent.load(Ordering::SeqCst));

    let pending: Vec<String> = support::redis_keys(&redis)
        .await
        .into_iter()
        .filter(|k| k.ends_with(":pending") || k.ends_with(":inflight"))
        .collect();
    assert!(
        pending.is_empty(),
        "left in Redis after the drain: {pending:?}"
    );
    let durable: i64 = durable_counts(&slot.keyspace, learner.0)
        .await
        .values()
        .sum();
    assert!(
        durable >= acked,
        "acknowledged {acked} points, {durable} durable"
    );
    assert!(durable <= sent, "{durable} durable, only {sent} sent");
}
