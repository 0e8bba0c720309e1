//! errata on a real Redis Cluster (three masters on loopback ports) while
//! the cluster moves slots: the learners' keys migrate from one master to
//! another under load, clients keep reporting (retrying with the same
//! `Idempotency-Key` until acknowledged), and afterwards, after
//! `errata flush`, every learner's counts equal what was acknowledged.
//!
//! The HTTP contract suite and the buffer tests also run on a cluster
//! (`ERRATA_TEST_REDIS=cluster`, see scripts/test-cql); this one always does.
//!
//! Seeded: the seed is printed first; `ERRATA_TEST_SEED=N` repeats the same
//! requests and slot moves (the timing between them is the machine's).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use errata::store::cql::buffer::pending_key;
use errata_testkit::{
    key_slot, record_until_acknowledged, seed, Api, Errata, Learner, RedisCluster, Rng, TestApp,
    TestRedis,
};

const ERRATA: Errata = Errata::at(env!("CARGO_BIN_EXE_errata"));
const LEARNERS: usize = 12;
const CLIENTS: usize = 6;
const TAXONOMY: [(&str, &str); 4] = [
    ("Grammar", "Articles"),
    ("Grammar", "Verb Tense"),
    ("Vocabulary", "Word Choice"),
    ("Pronunciation", "Th Sounds"),
];
/// Acknowledged reports between two slot moves: the moves happen under load.
const REPORTS_PER_MOVE: u64 = 15;
/// No part of the test may take longer.
const BOUND: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slots_moving_under_load_lose_nothing_and_count_nothing_twice() {
    let seed = seed();
    println!("ERRATA_TEST_SEED={seed}");
    let app = TestApp::spawn_with(Some(TestRedis::Cluster(RedisCluster::start())), |config| {
        config.flush_interval_ms = 100
    })
    .await;
    let TestRedis::Cluster(cluster) = app.redis() else {
        unreachable!("the app was given a cluster")
    };
    let mut learners = Vec::new();
    for _ in 0..LEARNERS {
        learners.push(app.learner().await);
    }
    let learners = Arc::new(learners);

    // Every learner's slot moves once, to the next master, in a seeded
    // order, each move after REPORTS_PER_MOVE more acknowledgements.
    let mut rng = Rng::new(seed);
    let mut slots: Vec<u16> = learners
        .iter()
        .map(|l| key_slot(&pending_key(l.user_id)))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for i in (1..slots.len()).rev() {
        slots.swap(i, rng.below(i + 1));
    }

    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..LEARNERS).map(|_| AtomicU64::new(0)).collect());
    let reports = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let api = Api::new(app.url(""));
            let (learners, acked, reports, stop) = (
                learners.clone(),
                acked.clone(),
                reports.clone(),
                stop.clone(),
            );
            let mut rng = Rng::new(seed ^ (client as u64 + 1));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let i = rng.below(LEARNERS);
                    let errors = &TAXONOMY[..1 + rng.below(TAXONOMY.len())];
                    let learner: &Learner = &learners[i];
                    record_until_acknowledged(
                        std::slice::from_ref(&api),
                        learner,
                        errors,
                        BOUND,
                        Duration::from_millis(20),
                    )
                    .await;
                    acked[i].fetch_add(errors.len() as u64, Ordering::Relaxed);
                    reports.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let started = Instant::now();
    let (mut moved, mut keys_moved) = (Vec::new(), 0);
    for &slot in &slots {
        let until = reports.load(Ordering::Relaxed) + REPORTS_PER_MOVE;
        while reports.load(Ordering::Relaxed) < until {
            assert!(
                started.elapsed() < BOUND,
                "seed {seed}: the load stalled at {} reports",
                reports.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let to = (cluster.owner(slot) + 1) % cluster.nodes.len();
        keys_moved += tokio::task::block_in_place(|| cluster.move_slot(slot, to));
        moved.push((slot, to));
    }
    // And some load on the new owners before it stops.
    let until = reports.load(Ordering::Relaxed) + REPORTS_PER_MOVE;
    while reports.load(Ordering::Relaxed) < until && started.elapsed() < BOUND {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("a client panicked");
    }
    for (slot, to) in &moved {
        assert_eq!(cluster.owner(*slot), *to, "seed {seed}: slot {slot} moved");
    }
    assert!(keys_moved > 0, "seed {seed}: the moved slots held no keys");

    ERRATA.run(&app.config, &["flush"]);
    let mut total = 0;
    for (i, learner) in learners.iter().enumerate() {
        let want = acked[i].load(Ordering::Relaxed) as i64;
        let counted = app.total_frequency(learner.user_id).await;
        assert_eq!(
            counted, want,
            "seed {seed}: learner {i} counted {counted}, acknowledged {want}"
        );
        total += want;
    }
    println!(
        "{} reports, {total} points acknowledged and counted, {} slots ({keys_moved} keys) moved under load in {:.1} s",
        reports.load(Ordering::Relaxed),
        moved.len(),
        started.elapsed().as_secs_f64()
    );
}
