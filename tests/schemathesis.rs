//! The API document against the server: schemathesis (pinned, installed
//! into a venv by scripts/schemathesis) runs every check, its examples,
//! coverage, fuzzing and stateful phases (following the document's links
//! from sign-ups to the operations taking their ids) against a real errata
//! server on the embedded store, and any finding fails the test. Settings: tests/schemathesis/schemathesis.toml.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use errata::config::Config;
use errata::startup::Application;
use tokio::sync::oneshot;

fn schemathesis(url: &str) -> std::process::Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Command::new(root.join("scripts/schemathesis"))
        .arg("--config-file")
        .arg(root.join("tests/schemathesis/schemathesis.toml"))
        .args(["run", url, "--checks", "all", "--no-color"])
        // A JUnit report stays under the target directory for a look later.
        .args(["--report", "junit", "--report-dir"])
        .arg(Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis"))
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .output()
        .expect("scripts/schemathesis runs")
}

/// How often the server answered `route` with `status` (from /metrics).
async fn answered(base: &str, method: &str, route: &str, status: u16) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let labels = format!("method=\"{method}\",route=\"{route}\",status=\"{status}\"");
    text.lines()
        .filter(|l| l.starts_with("errata_http_requests_total{") && l.contains(&labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing() {
    let data = tempfile::tempdir().expect("a data folder");
    let config = Config {
        bind: "127.0.0.1:0".parse().expect("an address"),
        data_dir: data.path().to_owned(),
        ..Config::default()
    };
    let app = Application::build(&config).await.expect("errata starts");
    let base = format!("http://{}", app.local_addr().expect("an address"));
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));

    let url = format!("{base}/openapi.json");
    let output = tokio::task::spawn_blocking(move || schemathesis(&url))
        .await
        .expect("schemathesis's thread");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "schemathesis found:\n{report}");
    for phase in ["Examples", "Coverage", "Fuzzing", "Stateful"] {
        assert!(
            report.contains(&format!("✅ {phase}")),
            "the {phase} phase did not pass:\n{report}"
        );
    }
    // The links led the fuzzer past sign-up into the learner's data.
    for (method, route) in [
        ("POST", "/conversations/"),
        ("POST", "/utterances/"),
        ("DELETE", "/users/{user_id}"),
        ("GET", "/users/{user_id}/export"),
    ] {
        let created = if method == "POST" { 201 } else { 200 };
        let ok = answered(&base, method, route, created).await
            + answered(&base, method, route, 204).await;
        assert!(ok > 0.0, "{method} {route} never succeeded:\n{report}");
    }
    eprintln!("{report}");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops")
        .expect("the server task")
        .expect("a clean shutdown");
}
