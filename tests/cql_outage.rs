//! The CQL cluster unreachable under a running replica: readiness says so
//! with the reason, requests that need it answer 503 promptly (not 500, not
//! a hang), ingestion included, and everything recovers on its own when
//! the cluster is back, without losing what was acknowledged.
//! The outage is a TCP proxy between `errata serve` and the test's CQL
//! server that the test cuts and restores.

#[path = "support/cql.rs"]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use support::{
    cql_config, cql_node, http_frequencies, http_learner, http_record, RedisServer, ServeProcess,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards connections to the CQL server until cut; while cut, it closes
/// every open connection and every new one at once.
struct Proxy {
    address: std::net::SocketAddr,
    cut: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let address = listener.local_addr().expect("an address");
        let cut = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let acceptor = tokio::spawn({
            let (cut, connections) = (cut.clone(), connections.clone());
            async move {
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        return;
                    };
                    if cut.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    connections.lock().unwrap().push(task);
                }
            }
        });
        Self {
            address,
            cut,
            connections,
            acceptor,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.acceptor.abort();
    }
}

/// Polls `GET /readyz` until it answers `want`; returns the body.
async fn readiness(client: &reqwest::Client, base: &str, want: StatusCode) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz answers");
        let status = response.status();
        let body = response.text().await.expect("a body");
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "readyz still {status} ({body}), waiting for {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const ERRORS: [(&str, &str); 2] = [("Grammar", "Articles"), ("Fluency", "Filler Words")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cql_cluster_is_a_prompt_503_and_recovers_on_its_own() {
    let redis = RedisServer::start();
    let (mut config, _slot) = cql_config(&redis.url()).await;
    let proxy = Proxy::start(cql_node()).await;
    config.cql_nodes = vec![proxy.address.to_string()];
    let replica = ServeProcess::start(&config);
    let base = replica.url("");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a client");
    let learner = http_learner(&client, &base).await;
    let mut acked = 0;
    assert_eq!(
        http_record(&client, &base, learner, &ERRORS).await.unwrap(),
        StatusCode::OK
    );
    acked += 2;

    proxy.cut();
    let reason = readiness(&client, &base, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(reason.contains("cql"), "readyz does not say why: {reason}");
    // A request that needs the cluster: creating a learner.
    let started = Instant::now();
    let response = client
        .post(format!("{base}/users/"))
        .json(&serde_json::json!({"username": "late", "email": format!("{}@example.com", uuid::Uuid::new_v4())}))
        .send()
        .await
        .expect("errata answers during the outage");
    let (status, body) = (response.status(), response.text().await.unwrap());
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("detail"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the 503 took {:?}",
        started.elapsed()
    );
    // Ingestion checks the learner's utterance in the cluster: 503, promptly.
    let started = Instant::now();
    let status = http_record(&client, &base, learner, &ERRORS).await.unwrap();
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "ingestion during the outage"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the 503 took {:?}",
        started.elapsed()
    );

    proxy.restore();
    readiness(&client, &base, StatusCode::OK).await;
    assert_eq!(
        http_record(&client, &base, learner, &ERRORS).await.unwrap(),
        StatusCode::OK
    );
    acked += 2;
    let counted: i64 = http_frequencies(&client, &base, learner.0)
        .await
        .values()
        .sum();
    assert_eq!(
        counted, acked,
        "acknowledged {acked} points, counted {counted}"
    );
    replica.terminate();
}
