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
