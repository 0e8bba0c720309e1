//! Structured logs and metrics. Handlers log ids, never e-mail addresses or
//! what learners said; metrics go to one process-wide Prometheus recorder.

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use tracing_subscriber::EnvFilter;

/// Where the logs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTo {
    Stdout,
    /// For a command whose stdout is its output (`errata seed`).
    Stderr,
}

/// Installs the global subscriber, filtered by `RUST_LOG` (default `info`).
pub fn init(to: LogTo) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = match to {
        LogTo::Stdout => builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
        LogTo::Stderr => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .try_init(),
    };
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])
            .expect("static bucket list is not empty")
            // Counter statements per flush batch: a count, not seconds.
            .set_buckets_for_metric(
                Matcher::Full("errata_flush_batch_size".into()),
                &[1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0],
            )
            .expect("static bucket list is not empty")
            // How long deltas wait in Redis: the flush interval and more.
            .set_buckets_for_metric(
                Matcher::Full("errata_flush_lag_distribution_seconds".into()),
                &[0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0],
            )
            .expect("static bucket list is not empty")
            // Requests per embedded-store commit: a count, not seconds.
            .set_buckets_for_metric(
                Matcher::Full("errata_sqlite_commit_requests".into()),
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
            )
            .expect("static bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only when another recorder is already installed, which
        // leaves metrics to that one.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The Prometheus text of every metric, the process's memory included
/// (read at each scrape).
pub fn render() -> String {
    record_process_memory();
    prometheus().render()
}

/// `process_resident_memory_bytes` and `process_virtual_memory_bytes`,
/// the names Prometheus's client libraries give them, from
/// `/proc/self/status` (Linux; elsewhere they are not exported).
fn record_process_memory() {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return;
    };
    for (field, metric) in [
        ("VmRSS:", "process_resident_memory_bytes"),
        ("VmSize:", "process_virtual_memory_bytes"),
    ] {
        if let Some(bytes) = status_bytes(&status, field) {
            metrics::gauge!(metric).set(bytes as f64);
        }
    }
}

/// A `Field:   1234 kB` line of `/proc/self/status`, in bytes.
fn status_bytes(status: &str, field: &str) -> Option<u64> {
    let value = status.lines().find_map(|l| l.strip_prefix(field))?;
    let kib = value
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

/// What `errata repair` found, in the Prometheus text format, for a
/// textfile collector (node_exporter's `--collector.textfile.directory`) to
/// export: the repair is a short-lived process that no scraper sees.
/// `corrected` is None when the repair failed.
pub fn repair_textfile(corrected: Option<u64>, finished_unix_seconds: u64) -> String {
    let mut text = String::new();
    text.push_str(
        "# HELP errata_repair_corrections Counts the latest errata repair corrected (nonzero: counts were wrong).\n\
         # TYPE errata_repair_corrections gauge\n",
    );
    if let Some(n) = corrected {
        text.push_str(&format!("errata_repair_corrections {n}\n"));
    }
    text.push_str(&format!(
        "# HELP errata_repair_success Whether the latest errata repair finished (1) or failed (0).\n\
         # TYPE errata_repair_success gauge\n\
         errata_repair_success {}\n\
         # HELP errata_repair_last_run_timestamp_seconds When the latest errata repair ended.\n\
         # TYPE errata_repair_last_run_timestamp_seconds gauge\n\
         errata_repair_last_run_timestamp_seconds {finished_unix_seconds}\n",
        u8::from(corrected.is_some()),
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_memory_fields_in_bytes() {
        let status = "Name:\terrata\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(status_bytes(status, "VmRSS:"), Some(2048 * 1024));
        assert_eq!(status_bytes(status, "VmSize:"), Some(123456 * 1024));
        assert_eq!(status_bytes(status, "VmSwap:"), None);
    }

    #[test]
    fn the_repair_textfile_says_what_the_repair_found() {
        let found = repair_textfile(Some(3), 1_700_000_000);
        assert!(found.contains("\nerrata_repair_corrections 3\n"));
        assert!(found.contains("\nerrata_repair_success 1\n"));
        assert!(found.contains("\nerrata_repair_last_run_timestamp_seconds 1700000000\n"));
        let failed = repair_textfile(None, 1_700_000_000);
        assert!(!failed.contains("\nerrata_repair_corrections "));
        assert!(failed.contains("\nerrata_repair_success 0\n"));
    }
}
