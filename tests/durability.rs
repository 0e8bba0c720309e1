//! An acknowledged request survives `kill -9`: the real `errata` binary is
//! killed mid-load and restarted on the same data folder.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::Notify;
use uuid::Uuid;

const CLIENTS: usize = 16;
/// Acknowledged error points to wait for before the kill.
const ACKED_BEFORE_KILL: i64 = 600;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_errors_survive_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let mut server = start(data.path());
    let client = reqwest::Client::new();
    let user = post(
        &client,
        server.address,
        "/users/",
        json!({"username": "k", "email": "k@example.com"}),
    )
    .await;
    let conversation = post(
        &client,
        server.address,
        "/conversations/",
        json!({"user_id": user["user_id"]}),
    )
    .await;
    let utterance = post(
        &client,
        server.address,
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

    let acked = Arc::new(AtomicI64::new(0));
    let sent = Arc::new(AtomicI64::new(0));
    let progress = Arc::new(Notify::new());
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (client, report) = (client.clone(), report.clone());
        let (acked, sent, progress) = (acked.clone(), sent.clone(), progress.clone());
        let address = server.address;
        clients.push(tokio::spawn(async move {
            loop {
                sent.fetch_add(2, Ordering::SeqCst);
                let response = client
                    .post(format!("http://{address}/simulate-and-generate"))
                    .header("Idempotency-Key", Uuid::new_v4().to_string())
                    .json(&report)
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status().is_success() => {
                        // Only a complete, successful answer is an acknowledgement.
                        if r.json::<Value>().await.is_ok() {
                            acked.fetch_add(2, Ordering::SeqCst);
                            progress.notify_one();
                        }
                    }
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => break, // the server is gone
                }
            }
        }));
    }
    while acked.load(Ordering::SeqCst) < ACKED_BEFORE_KILL {
        progress.notified().await;
    }
    server.child.kill().expect("SIGKILL"); // std's kill() is SIGKILL on Unix
    server.child.wait().unwrap();
    for c in clients {
        c.await.unwrap();
    }
    let (acked, sent) = (acked.load(Ordering::SeqCst), sent.load(Ordering::SeqCst));

    let mut restarted = start(data.path());
    let user_id = user["user_id"].as_str().unwrap();
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
    let counts: Vec<i64> = errors["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["errorFrequency"].as_i64().unwrap())
        .collect();
    restarted.child.kill().unwrap();
    restarted.child.wait().unwrap();

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
