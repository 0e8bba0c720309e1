//! The production topology as bare processes: `scripts/topology` runs Redis,
//! three `errata serve` replicas and nginx in front of them against the CQL
//! server of `ERRATA_TEST_CQL`, drives errata-loadgen through nginx, flushes
//! and checks that every acknowledged error point was counted. Here it runs
//! with the binaries of this build, and its summary is checked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use errata_testkit as support;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The load generator: `ERRATA_LOADGEN_BIN` (scripts/test builds it), or
/// else built here beside the errata binary under test (same target
/// directory and profile): it is another package of the workspace, so cargo
/// does not build it for this test.
fn loadgen_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ERRATA_LOADGEN_BIN") {
        return path.into();
    }
    let errata = Path::new(env!("CARGO_BIN_EXE_errata"));
    let profile_dir = errata.parent().expect("the profile directory");
    let target_dir = profile_dir.parent().expect("the target directory");
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").into()));
    command
        .args([
            "build",
            "--quiet",
            "-p",
            "errata-loadgen",
            "--bin",
            "errata-loadgen",
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(repo());
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            command.arg("--release");
        }
        Some(other) => {
            command.args(["--profile", other]);
        }
        None => panic!("no profile in {}", errata.display()),
    }
    let status = command.status().expect("cargo runs");
    assert!(status.success(), "building errata-loadgen failed: {status}");
    let binary = profile_dir.join("errata-loadgen");
    assert!(binary.is_file(), "no {}", binary.display());
    binary
}

/// The keyspace of the topology runs (beside the test keyspaces, never one
/// of them: the script reuses it from run to run).
fn keyspace() -> String {
    let stem = std::env::var("ERRATA_TEST_CQL_KEYSPACE").unwrap_or_else(|_| "errata_test".into());
    format!("{stem}_topology")
}

fn run_topology(cql: &str, loadgen: &Path) -> Output {
    Command::new(repo().join("scripts/topology"))
        .current_dir(repo())
        .env("ERRATA_TEST_CQL", cql)
        .env("ERRATA_BIN", env!("CARGO_BIN_EXE_errata"))
        .env("ERRATA_LOADGEN_BIN", loadgen)
        .env("TOPOLOGY_KEYSPACE", keyspace())
        .env("TOPOLOGY_LEARNERS", "1000")
        .env("TOPOLOGY_CONNECTIONS", "16")
        .env("TOPOLOGY_SECONDS", "3")
        // Errors, not backtraces, in the failure message.
        .env("RUST_BACKTRACE", "0")
        .env_remove("TOPOLOGY_KEEP")
        .env_remove("RUST_LOG")
        .output()
        .expect("scripts/topology runs")
}

/// The `key=value` fields of the script's last line, `topology: PASS ...`.
fn summary(stdout: &str) -> HashMap<String, String> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("topology: PASS "))
        .unwrap_or_else(|| panic!("no PASS line in the output:\n{stdout}"));
    line["topology: PASS ".len()..]
        .split_whitespace()
        .map(|field| {
            let (k, v) = field.split_once('=').expect("key=value");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn number(fields: &HashMap<String, String>, key: &str) -> u64 {
    fields
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {fields:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {fields:?}"))
}

#[test]
fn three_replicas_behind_nginx_count_every_acknowledged_point() {
    let cql = support::cql_node();
    let loadgen = loadgen_binary();
    let started = Instant::now();
    let output = run_topology(&cql, &loadgen);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "scripts/topology failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    eprintln!(
        "{stdout}scripts/topology took {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let fields = summary(&stdout);
    assert_eq!(number(&fields, "replicas"), 3);
    assert_eq!(number(&fields, "errors"), 0, "failed requests");
    let acked = number(&fields, "acked");
    assert!(acked > 0, "no point acknowledged: {fields:?}");
    assert!(number(&fields, "ingests") > 0);
    assert!(number(&fields, "requests") >= number(&fields, "ingests"));
    assert_eq!(
        number(&fields, "recorded"),
        acked,
        "points recorded by the replicas"
    );
    assert_eq!(
        number(&fields, "counted"),
        acked,
        "points counted after the flush"
    );
    let per_replica: Vec<u64> = fields["replica_requests"]
        .split(',')
        .map(|n| n.parse().expect("a number"))
        .collect();
    assert_eq!(per_replica.len(), 3, "{fields:?}");
    assert!(
        per_replica.iter().all(|&n| n > 0),
        "a replica served nothing: {per_replica:?}"
    );
    assert!(
        number(&fields, "shared_learners") > 0,
        "no learner reached all three replicas"
    );
}

#[test]
fn the_topology_fails_loudly_without_a_cql_server() {
    // The same prerequisite as every cql test, so that this one cannot pass
    // where the suite did not run.
    support::cql_node();
    // A port nothing listens on: the script must stop at once, non-zero,
    // saying why, before it starts anything.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let output = run_topology(&closed.to_string(), Path::new("/nonexistent"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "it passed without a CQL server");
    assert!(
        stderr.contains("FAIL") && stderr.contains(&closed.to_string()),
        "no clear message: {stderr}"
    );
}
