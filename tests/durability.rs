//! Nothing acknowledged is lost when the process dies: the real `errata`
//! binary is stopped under load (SIGKILL, or SIGTERM for a graceful stop)
//! and restarted on the same data folder.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use uuid::Uuid;

const CLIENTS: usize = 16;
/// Acknowledged error points to wait for before stopping the server.
const ACKED_BEFORE_STOP: i64 = 600;
const POINTS_PER_REQUEST: i64 = 2;

struct Server {
    child: Child,
    address: SocketAddr,
}

/// Starts `errata serve` on a free port and waits for its "listening" line.
fn start(data_dir: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_errata"))
        .arg("serve")
        .env("ERRATA_STORE", "embedded")
        .env("ERRATA_DATA_DIR", data_dir)
        .env("ERRATA_BIND", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env_remove("ERRATA_API_TOKENS")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("errata binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let address = loop {
        let line = lines
            .next()
            .expect("errata exited before listening")
            .expect("readable log");
        if let Some(addr) = line.split("addr=").nth(1) {
            if line.contains("listening") {
                break addr.split_whitespace().next().unwrap().parse().unwrap();
            }
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, address }
}

async fn post(client: &reqwest::Client, server: SocketAddr, path: &str, body: Value) -> Value {
    let response = client
        .post(format!("http://{server}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// Creates a learner with one utterance; returns the user id and an error
/// report of two points for that utterance.
async fn learner(client: &reqwest::Client, server: SocketAddr) -> (String, Value) {
    let email = format!("{}@example.com", Uuid::new_v4());
    let user = post(
        client,
        server,
        "/users/",
        json!({"username": "k", "email": email}),
    )
    .await;
    let conversation = post(
        client,
        server,
        "/conversations/",
        json!({"user_id": user["user_id"]}),
    )
    .await;
    let utterance = post(
        client,
        server,
        "/utterances/",
        json!({"user_id": user["user_id"], "conversation_id": conversation["conversation_id"], "content": "x"}),
    )
    .await;
    let report = json!({
        "user_id": user["user_id"],
        "conversation_id": conversation["conversation_id"],
        "utterance_id": utterance["utterance_id"],
        "errors": [
            {"errorCategory": "Grammar", "errorSubCategory": "Articles"},
            {"errorCategory": "Fluency", "errorSubCategory": "Filler Words"}
        ]
    });
    (user["user_id"].as_str().unwrap().to_owned(), report)
}

/// Clients sending the report with fresh idempotency keys until the server
/// goes away, counting what was sent and what was acknowledged.
struct Load {
    acked: Arc<AtomicI64>,
    sent: Arc<AtomicI64>,
    progress: Arc<Notify>,
    clients: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(client: &reqwest::Client, server: SocketAddr, report: &Value) -> Self {
        let acked = Arc::new(AtomicI64::new(0));
        let sent = Arc::new(AtomicI64::new(0));
        let progress = Arc::new(Notify::new());
        let clients = (0..CLIENTS)
            .map(|_| {
                let (client, report) = (client.clone(), report.clone());
                let (acked, sent, progress) = (acked.clone(), sent.clone(), progress.clone());
                tokio::spawn(async move {
                    loop {
                        sent.fetch_add(POINTS_PER_REQUEST, Ordering::SeqCst);
                        let response = client
                            .post(format!("http://{server}/simulate-and-generate"))
                            .header("Idempotency-Key", Uuid::new_v4().to_string())
                            .json(&report)
                            .send()
                            .await;
                        match response {
                            Ok(r) if r.status().is_success() => {
                                // Only a complete, successful answer is an
                                // acknowledgement.
                                if r.json::<Value>().await.is_ok() {
                                    acked.fetch_add(POINTS_PER_REQUEST, Ordering::SeqCst);
                                    progress.notify_one();
                                }
                            }
                            Ok(r) => panic!("unexpected status {}", r.status()),
                            Err(_) => break, // the server is gone
                        }
                    }
                })
            })
            .collect();
        Self {
            acked,
            sent,
            progress,
            clients,
        }
    }

    async fn wait_for_acked(&self, points: i64) {
        while self.acked.load(Ordering::SeqCst) < points {
            self.progress.notified().await;
        }
    }

    /// Waits for every client to stop; returns (acknowledged, sent) points.
    async fn finish(self) -> (i64, i64) {
        for client in self.clients {
            client.await.unwrap();
        }
        (
            self.acked.load(Ordering::SeqCst),
            self.sent.load(Ordering::SeqCst),
        )
    }
}

/// The learner's frequencies on a fresh server over the same data.
async fn counts_after_restart(data: &Path, client: &reqwest::Client, user_id: &str) -> Vec<i64> {
    let mut restarted = start(data);
    let errors: Value = client
        .get(format!(
            "http://{}/users/{user_id}/errors",
            restarted.address
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    restarted.child.kill().unwrap();
    restarted.child.wait().unwrap();
    errors["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["errorFrequency"].as_i64().unwrap())
        .collect()
}

fn assert_nothing_lost(counts: &[i64], acked: i64, sent: i64) {
    let total: i64 = counts.iter().sum();
    eprintln!("acknowledged {acked}, sent {sent}, counted after restart {total}");
    assert!(
        total >= acked,
        "lost acknowledged errors: {total} counted, {acked} acknowledged"
    );
    assert!(
        total <= sent,
        "counted more than was sent: {total} > {sent}"
    );
    // Both points of a request land together or not at all.
    assert_eq!(counts.len(), 2);
    assert_eq!(
        counts[0], counts[1],
        "a request was half-applied: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_errors_survive_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let mut server = start(data.path());
    let client = reqwest::Client::new();
    let (user_id, report) = learner(&client, server.address).await;

    let load = Load::start(&client, server.address, &report);
    load.wait_for_acked(ACKED_BEFORE_STOP).await;
    server.child.kill().expect("SIGKILL"); // std's kill() is SIGKILL on Unix
    server.child.wait().unwrap();
    let (acked, sent) = load.finish().await;

    let counts = counts_after_restart(data.path(), &client, &user_id).await;
    assert_nothing_lost(&counts, acked, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_finishes_in_flight_requests_and_exits_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let mut server = start(data.path());
    let client = reqwest::Client::new();
    let (user_id, report) = learner(&client, server.address).await;

    let load = Load::start(&client, server.address, &report);
    load.wait_for_acked(ACKED_BEFORE_STOP).await;
    let signalled = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill(1) runs");
    assert!(signalled.success());
    let status = server.child.wait().unwrap();
    assert!(
        status.success(),
        "errata exited with {status} after SIGTERM"
    );
    let (acked, sent) = load.finish().await;

    let counts = counts_after_restart(data.path(), &client, &user_id).await;
    assert_nothing_lost(&counts, acked, sent);
}
