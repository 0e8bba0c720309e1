//! The production topology as bare processes: `scripts/topology` starts
//! Redis (append-only file on), `errata migrate`, three `errata serve`
//! replicas and nginx in front of them on the CQL server of
//! `ERRATA_TEST_CQL`, drives the load generator through nginx with learners
//! shared by all replicas, runs `errata flush`, and checks the totals.

use std::path::PathBuf;
use std::process::Command;

/// The load generator: `ERRATA_LOADGEN_BIN`, or the one built beside this
/// test's `errata`; `None` lets the script build it.
fn loadgen() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ERRATA_LOADGEN_BIN") {
        return Some(path.into());
    }
    let beside = PathBuf::from(env!("CARGO_BIN_EXE_errata")).with_file_name("errata-loadgen");
    beside.exists().then_some(beside)
}

/// The figure after `label` in the summary line, e.g. "acknowledged 123".
fn figure(summary: &str, label: &str) -> u64 {
    let rest = summary
        .split(label)
        .nth(1)
        .unwrap_or_else(|| panic!("no {label:?} in {summary:?}"));
    rest.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {label:?} in {summary:?}"))
}

#[test]
fn three_replicas_behind_nginx_count_every_acknowledged_point_exactly() {
    let cql = std::env::var("ERRATA_TEST_CQL").expect(
        "ERRATA_TEST_CQL=host:port must name a running Cassandra/ScyllaDB \
         (scripts/test starts one); this test does not pass without it",
    );
    let root = env!("CARGO_MANIFEST_DIR");
    let mut command = Command::new(format!("{root}/scripts/topology"));
    command
        .current_dir(root)
        .env("ERRATA_TEST_CQL", cql)
        .env("ERRATA_BIN", env!("CARGO_BIN_EXE_errata"))
        // Errors, not backtraces, in the failure message.
        .env("RUST_BACKTRACE", "0");
    if let Some(loadgen) = loadgen() {
        command.env("ERRATA_LOADGEN_BIN", loadgen);
    }
    let output = command.output().expect("scripts/topology runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "scripts/topology failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("topology: PASS"))
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}\n{stderr}"));
    let (acked, counted, recorded) = (
        figure(summary, "acknowledged"),
        figure(summary, "counted"),
        figure(summary, "(total"),
    );
    assert!(acked > 0, "no load went through: {summary}");
    assert_eq!(acked, counted, "{summary}");
    assert_eq!(acked, recorded, "{summary}");
}
