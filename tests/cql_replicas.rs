//! The production shape: real `errata serve` processes sharing one Redis and
//! one CQL keyspace; Redis killed with SIGKILL, a replica stopped with
//! SIGTERM and `errata repair` running, all under load.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use errata_testkit as support;
use reqwest::StatusCode;
use support::{
    case_folded, cql_config, durable_counts, event_counts, record_until_acknowledged, Api, Counts,
    Errata, RedisServer, ServeProcess, TestRedis,
};

const ERRATA: Errata = Errata::at(env!("CARGO_BIN_EXE_errata"));

/// The points acknowledged for learner `l`, from (learner, TAXONOMY index) → n.
fn acked_for(acked: &BTreeMap<(usize, usize), i64>, l: usize) -> Counts {
    acked
        .iter()
        .filter(|((learner, _), _)| *learner == l)
        .map(|((_, i), n)| {
            let (c, s) = TAXONOMY[*i];
            ((c.to_owned(), s.to_owned()), *n)
        })
        .collect()
}

/// A client of each replica, all through `client`.
fn apis(client: &reqwest::Client, replicas: &[ServeProcess]) -> Vec<Api> {
    replicas
        .iter()
        .map(|r| Api::with_client(client.clone(), r.url("")))
        .collect()
}

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
    let replicas = [ERRATA.serve(&config), ERRATA.serve(&config)];
    let apis = apis(&reqwest::Client::new(), &replicas);
    let learners = [apis[0].learner().await, apis[1].learner().await];

    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let apis = apis.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent: BTreeMap<(usize, usize), i64> = BTreeMap::new();
            for n in 0..REQUESTS {
                // Alternate replicas and learners; 1 to 3 points each.
                let api = &apis[(c + n) % 2];
                let l = (c + n / 2) % 2;
                let points: Vec<usize> = (0..=(c + n) % 3).map(|i| (c + n + i) % 3).collect();
                let errors: Vec<(&str, &str)> = points.iter().map(|&i| TAXONOMY[i]).collect();
                let status = api
                    .try_record(&learners[l], &errors)
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
    let expected_for = |l: usize| acked_for(&expected, l);

    // Read-your-writes on either replica, while the flushers work.
    for (l, learner) in learners.iter().enumerate() {
        for api in &apis {
            assert_eq!(api.frequency_counts(learner.user_id).await, expected_for(l));
        }
    }
    ERRATA.run(&config, &["flush"]);
    for (l, learner) in learners.iter().enumerate() {
        let durable: BTreeMap<(String, String), i64> =
            durable_counts(&slot.keyspace, learner.user_id)
                .await
                .into_iter()
                .collect();
        let wanted = case_folded(&expected_for(l));
        assert_eq!(durable, wanted, "learner {l}: durable counters");
        for api in &apis {
            assert_eq!(api.frequency_counts(learner.user_id).await, expected_for(l));
        }
    }
    let [a, b] = replicas;
    a.terminate();
    b.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_under_load_loses_no_acknowledged_increment() {
    const CLIENTS: usize = 6;
    // As deployed: the append-only file fsynced before each answer.
    let mut redis = RedisServer::start_as_deployed();
    let (config, slot) = cql_config(&redis.url()).await;
    let replica = ERRATA.serve(&config);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("a client");
    let api = Api::with_client(client, replica.url(""));
    let learner = api.learner().await;

    let acked = Arc::new(AtomicI64::new(0));
    let unavailable = Arc::new(AtomicI64::new(0));
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let api = api.clone();
        let (acked, unavailable, running) = (acked.clone(), unavailable.clone(), running.clone());
        tasks.push(tokio::spawn(async move {
            let errors = [TAXONOMY[0], TAXONOMY[1]];
            while running.load(Ordering::SeqCst) {
                // Each report is retried with its key until acknowledged.
                let key = uuid::Uuid::new_v4().to_string();
                let started = std::time::Instant::now();
                loop {
                    match api.try_record_with_key(&learner, &errors, &key).await {
                        Ok(StatusCode::OK) => break,
                        Ok(StatusCode::SERVICE_UNAVAILABLE) => {
                            unavailable.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(other) => panic!("unexpected status {other}"),
                        Err(e) => panic!("errata did not answer: {e}"),
                    }
                    assert!(
                        started.elapsed() < Duration::from_secs(60),
                        "a report was never acknowledged"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                acked.fetch_add(2, Ordering::SeqCst);
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
    // Unready, with the reason, and the clients get 503s (polled: no sleep
    // standing in for either).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let reason = api
        .readyz_until(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(20))
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
    let acked_at_restart = acked.load(Ordering::SeqCst);
    redis.restart();
    wait_for(acked_at_restart + 200).await;
    // Ingestion works again; readiness recovers too, without a restart.
    api.readyz_until(StatusCode::OK, Duration::from_secs(30))
        .await;
    running.store(false, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("a client");
    }
    let acked = acked.load(Ordering::SeqCst);

    // Every report was retried with its key until acknowledged: each is
    // counted exactly once, however its attempts were cut off.
    ERRATA.run(&config, &["flush"]);
    let seen: i64 = api.frequency_counts(learner.user_id).await.values().sum();
    let durable: i64 = durable_counts(&slot.keyspace, learner.user_id)
        .await
        .values()
        .sum();
    assert_eq!(seen, acked, "acknowledged {acked} points, {seen} counted");
    assert_eq!(
        durable, acked,
        "flush left deltas in Redis, or replayed some"
    );
    let logged: i64 = event_counts(&slot.keyspace, learner.user_id)
        .await
        .values()
        .sum();
    assert_eq!(logged, acked, "the event log holds {logged} points");
    replica.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_drains_the_buffer_into_the_counters_before_exit() {
    const CLIENTS: usize = 8;
    const ERRORS: [(&str, &str); 2] = [TAXONOMY[0], TAXONOMY[2]];
    let redis = TestRedis::start();
    let (mut config, slot) = cql_config(&redis.url()).await;
    // The flusher never gets its turn: only the shutdown drain can make
    // anything durable.
    config.flush_interval_ms = 600_000;
    let mut replica = ERRATA.serve(&config);
    let api = Api::new(replica.url(""));
    let learner = api.learner().await;

    let acked = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (api, acked) = (api.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            // Until the server stops answering: the report then in flight
            // may or may not have been counted; its key says which later.
            loop {
                let key = uuid::Uuid::new_v4().to_string();
                match api.try_record_with_key(&learner, &ERRORS, &key).await {
                    Ok(StatusCode::OK) => {
                        acked.fetch_add(2, Ordering::SeqCst);
                    }
                    Ok(other) => panic!("unexpected status {other} while running"),
                    Err(_) => return key,
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
    let mut unanswered = Vec::new();
    for task in tasks {
        unanswered.push(task.await.expect("a client"));
    }
    let acked_before_exit = acked.load(Ordering::SeqCst);

    let pending: Vec<String> = support::redis_keys(&redis)
        .await
        .into_iter()
        .filter(|k| k.ends_with(":pending") || k.ends_with(":inflight"))
        .collect();
    assert!(
        pending.is_empty(),
        "left in Redis after the drain: {pending:?}"
    );
    let durable: i64 = durable_counts(&slot.keyspace, learner.user_id)
        .await
        .values()
        .sum();
    assert!(
        durable >= acked_before_exit,
        "acknowledged {acked_before_exit} points, {durable} durable"
    );

    // The clients retry their unanswered reports on a new replica: each
    // counts once, whether or not its first attempt had.
    let replica = ERRATA.serve(&config);
    let api = Api::with_client(api.client.clone(), replica.url(""));
    let mut total = acked_before_exit;
    for key in &unanswered {
        let status = api
            .try_record_with_key(&learner, &ERRORS, key)
            .await
            .expect("recorded");
        assert_eq!(status, StatusCode::OK);
        total += 2;
    }
    replica.terminate();
    assert_eq!(
        durable_counts(&slot.keyspace, learner.user_id)
            .await
            .values()
            .sum::<i64>(),
        total,
        "{} reports were unanswered at the exit",
        unanswered.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repair_running_under_load_finds_nothing_to_correct_and_counts_stay_exact() {
    const CLIENTS: usize = 6;
    const LOAD: Duration = Duration::from_secs(20);
    const REPAIRS: usize = 5;
    let redis = RedisServer::start();
    let (mut config, slot) = cql_config(&redis.url()).await;
    config.flush_interval_ms = 20;
    let replicas = [ERRATA.serve(&config), ERRATA.serve(&config)];
    let apis = apis(&reqwest::Client::new(), &replicas);
    let mut learners = Vec::new();
    for api in apis.iter().cycle().take(3) {
        learners.push(api.learner().await);
    }

    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (learners, running) = (learners.clone(), running.clone());
        let mut apis = apis.clone();
        apis.rotate_left(c % 2);
        tasks.push(tokio::spawn(async move {
            let mut acked: BTreeMap<(usize, usize), i64> = BTreeMap::new();
            let mut n = 0;
            while running.load(Ordering::SeqCst) {
                let l = (c + n) % learners.len();
                let points: Vec<usize> = (0..=(c + n) % 3).map(|i| (c + n + i) % 3).collect();
                let errors: Vec<(&str, &str)> = points.iter().map(|&i| TAXONOMY[i]).collect();
                record_until_acknowledged(
                    &apis,
                    &learners[l],
                    &errors,
                    Duration::from_secs(30),
                    Duration::from_millis(20),
                )
                .await;
                for i in points {
                    *acked.entry((l, i)).or_insert(0) += 1;
                }
                n += 1;
            }
            acked
        }));
    }
    // `errata repair` over and over while the clients record and both
    // flushers flush: the counts are right all along, so no repair may
    // find anything to correct.
    let repairs = {
        let (config, running, learners) = (config.clone(), running.clone(), learners.clone());
        tokio::task::spawn_blocking(move || {
            let mut runs = 0;
            let started = std::time::Instant::now();
            // Only this test's learners: the keyspace holds other tests' too.
            let mut args = vec!["repair".to_owned()];
            for learner in &learners {
                args.extend(["--user".to_owned(), learner.user_id.to_string()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            while runs < REPAIRS || started.elapsed() < LOAD {
                let out = ERRATA.run(&config, &args);
                assert!(
                    out.contains("repair done: 0 counts corrected"),
                    "repair {runs} under load: {out}"
                );
                runs += 1;
            }
            running.store(false, Ordering::SeqCst);
            runs
        })
    };
    let runs = repairs.await.expect("the repairs");
    let mut acked: BTreeMap<(usize, usize), i64> = BTreeMap::new();
    for task in tasks {
        for (k, n) in task.await.expect("a client") {
            *acked.entry(k).or_insert(0) += n;
        }
    }
    eprintln!(
        "{runs} repairs under load, {} points acknowledged",
        acked.values().sum::<i64>()
    );

    ERRATA.run(&config, &["flush"]);
    for (l, learner) in learners.iter().enumerate() {
        let wanted = case_folded(&acked_for(&acked, l));
        assert_eq!(
            durable_counts(&slot.keyspace, learner.user_id).await,
            wanted,
            "learner {l}: durable counters"
        );
        assert_eq!(
            event_counts(&slot.keyspace, learner.user_id).await,
            wanted,
            "learner {l}: the event log"
        );
    }
    for learner in &learners {
        let out = ERRATA.run(&config, &["repair", "--user", &learner.user_id.to_string()]);
        assert!(out.contains("repair done: 0 counts corrected"), "{out}");
    }
    let [a, b] = replicas;
    a.terminate();
    b.terminate();
}
