//! Nothing acknowledged is lost when the process dies: the real `errata`
//! binary is stopped under load (SIGKILL, or SIGTERM for a graceful stop)
//! and restarted on the same data folder.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use errata_testkit::{report, test_config, Api, Errata, ServeProcess};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use uuid::Uuid;

const ERRATA: Errata = Errata::at(env!("CARGO_BIN_EXE_errata"));

const CLIENTS: usize = 16;
/// Acknowledged error points to wait for before stopping the server.
const ACKED_BEFORE_STOP: i64 = 600;
const POINTS_PER_REQUEST: i64 = 2;

/// Starts `errata serve` on the embedded store in `data_dir`.
fn start(data_dir: &Path) -> ServeProcess {
    ERRATA.serve(&test_config(data_dir))
}

/// Creates a learner with one utterance; returns the user id and an error
/// report of two points for that utterance.
async fn learner(client: &reqwest::Client, server: SocketAddr) -> (Uuid, Value) {
    let learner = Api::with_client(client.clone(), format!("http://{server}"))
        .learner()
        .await;
    let report = report(
        &learner,
        &[("Grammar", "Articles"), ("Fluency", "Filler Words")],
    );
    (learner.user_id, report)
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

/// A server on the data folder, a learner of it and the load on it,
/// once `ACKED_BEFORE_STOP` points are acknowledged.
async fn under_load(data: &Path, client: &reqwest::Client) -> (ServeProcess, Uuid, Load) {
    let server = start(data);
    let (user_id, report) = learner(client, server.address).await;
    let load = Load::start(client, server.address, &report);
    load.wait_for_acked(ACKED_BEFORE_STOP).await;
    (server, user_id, load)
}

/// The learner's frequencies on a fresh server over the same data.
async fn counts_after_restart(data: &Path, client: &reqwest::Client, user_id: Uuid) -> Vec<i64> {
    let mut restarted = start(data);
    let shown = Api::with_client(client.clone(), restarted.url(""))
        .frequencies(user_id)
        .await;
    restarted.child.kill().unwrap();
    restarted.child.wait().unwrap();
    shown.into_iter().map(|(_, _, n)| n).collect()
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
    let client = reqwest::Client::new();
    let (mut server, user_id, load) = under_load(data.path(), &client).await;
    server.child.kill().expect("SIGKILL"); // std's kill() is SIGKILL on Unix
    server.child.wait().unwrap();
    let (acked, sent) = load.finish().await;

    let counts = counts_after_restart(data.path(), &client, user_id).await;
    assert_nothing_lost(&counts, acked, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_finishes_in_flight_requests_and_exits_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let (mut server, user_id, load) = under_load(data.path(), &client).await;
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

    let counts = counts_after_restart(data.path(), &client, user_id).await;
    assert_nothing_lost(&counts, acked, sent);
}
