//! Many clients at once on one learner: counts stay exact.

use std::collections::HashMap;
use std::sync::Arc;

use reqwest::StatusCode;
use uuid::Uuid;

use errata_testkit::{expect_status, spawn_app};

const CLIENTS: usize = 32;
const REQUESTS_PER_CLIENT: usize = 25;
const TAXONOMY: [(&str, &str); 4] = [
    ("Grammar", "Articles"),
    ("Grammar", "Verb Tense"),
    ("Vocabulary", "Word Choice"),
    ("Fluency", "Filler Words"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_on_one_learner_get_exact_totals() {
    let app = Arc::new(spawn_app().await);
    let learner = app.learner().await;
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let app = app.clone();
        clients.push(tokio::spawn(async move {
            let mut sent: HashMap<usize, i64> = HashMap::new();
            for n in 0..REQUESTS_PER_CLIENT {
                // 1 to 3 points, a mix of the taxonomy, unique request keys.
                let points: Vec<usize> = (0..=(client + n) % 3)
                    .map(|i| (client + n + i) % 4)
                    .collect();
                let errors: Vec<(&str, &str)> = points.iter().map(|&i| TAXONOMY[i]).collect();
                let key = Uuid::new_v4().to_string();
                let response = app.record_with_key(&learner, &errors, &key).await;
                let body = expect_status(response, StatusCode::OK).await;
                assert_eq!(body["recorded"], errors.len());
                for i in points {
                    *sent.entry(i).or_default() += 1;
                }
            }
            sent
        }));
    }
    let mut expected: HashMap<usize, i64> = HashMap::new();
    for client in clients {
        for (i, n) in client.await.unwrap() {
            *expected.entry(i).or_default() += n;
        }
    }
    let frequencies = app.frequencies(learner.user_id).await;
    for (i, (category, subcategory)) in TAXONOMY.iter().enumerate() {
        let actual = frequencies
            .iter()
            .find(|(c, s, _)| c == category && s == subcategory)
            .map_or(0, |e| e.2);
        assert_eq!(actual, expected[&i], "{category} / {subcategory}");
    }
    let total: i64 = expected.values().sum();
    assert_eq!(app.total_frequency(learner.user_id).await, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_of_one_request_count_once() {
    let app = Arc::new(spawn_app().await);
    let learner = app.learner().await;
    let key = Uuid::new_v4().to_string();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (app, key) = (app.clone(), key.clone());
        clients.push(tokio::spawn(async move {
            let response = app
                .record_with_key(
                    &learner,
                    &[("Grammar", "Articles"), ("Grammar", "Articles")],
                    &key,
                )
                .await;
            expect_status(response, StatusCode::OK).await["duplicate"] == false
        }));
    }
    let mut firsts = 0;
    for client in clients {
        firsts += usize::from(client.await.unwrap());
    }
    assert_eq!(firsts, 1, "exactly one request may count");
    assert_eq!(app.total_frequency(learner.user_id).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_learners_at_once_keep_their_own_counts() {
    let app = Arc::new(spawn_app().await);
    let mut tasks = Vec::new();
    for n in 1..=16i64 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let learner = app.learner().await;
            for _ in 0..n {
                let key = Uuid::new_v4().to_string();
                let response = app
                    .record_with_key(&learner, &[("Grammar", "Articles")], &key)
                    .await;
                expect_status(response, StatusCode::OK).await;
            }
            (learner.user_id, n)
        }));
    }
    for task in tasks {
        let (user_id, n) = task.await.unwrap();
        assert_eq!(app.total_frequency(user_id).await, n);
    }
}
