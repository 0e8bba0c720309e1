//! A quiet start for every measured workload phase: nothing left for
//! errata's flushers from the phase before, and the `--settle` command
//! (e.g. "no compactions pending") satisfied.
//!
//! "Nothing left to flush" is errata's `errata_buffer_pending_learners`
//! gauge at 0 on every replica: the number of learners in the dirty sets
//! (learners with pending or in-flight deltas), which each replica's
//! flusher sets at the start of every tick (every flush interval, 1 s by
//! default). A tick that finds work sets it before flushing, so the wait
//! asks for it to read 0 for longer than a flush interval: a tick has then
//! found the sets empty after the load stopped. (`errata_flush_lag_seconds`
//! is the age of the last batch flushed, kept when nothing is left, so it
//! cannot say it.)

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

const PENDING: &str = "errata_buffer_pending_learners";
/// Longer than errata's default flush interval (`ERRATA_FLUSH_INTERVAL_MS`,
/// 1,000 ms), so that a tick ran within it.
const QUIET_FOR: Duration = Duration::from_millis(1500);
const POLL: Duration = Duration::from_millis(250);
/// How long to wait for the gauge to appear (a flusher's first tick).
const APPEAR_WITHIN: Duration = Duration::from_secs(3);
const SETTLE_RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Serialize)]
pub struct QuietStart {
    /// Seconds waited for the replicas' flushers to have nothing left
    /// (None: the replicas have no flusher, e.g. the embedded store).
    pub flush_wait_seconds: Option<f64>,
    /// Whether the flush wait gave up at `--quiet-timeout`.
    pub flush_wait_timed_out: bool,
    /// Seconds until `--settle` succeeded (None without one), and how many
    /// times it ran.
    pub settle_seconds: Option<f64>,
    pub settle_attempts: u32,
}

impl QuietStart {
    pub fn print(&self) {
        let flush = match self.flush_wait_seconds {
            Some(s) if self.flush_wait_timed_out => format!("{s:.1} s for the flush (gave up)"),
            Some(s) => format!("{s:.1} s for the flush"),
            None => "no flusher to wait for".to_owned(),
        };
        let settle = match self.settle_seconds {
            Some(s) => format!(", {s:.1} s for --settle ({} runs)", self.settle_attempts),
            None => String::new(),
        };
        println!("  quiet start: waited {flush}{settle}");
    }
}

/// Waits for the flushers of the replicas at `bases`, then for `settle`.
pub async fn wait(
    client: &reqwest::Client,
    bases: &[String],
    settle: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<QuietStart> {
    let started = Instant::now();
    let mut seen = false;
    let mut zero_since: Option<Instant> = None;
    let mut timed_out = false;
    loop {
        let snapshot = crate::metrics::scrape(client, bases).await?;
        match snapshot.get(PENDING) {
            Some(pending) => {
                seen = true;
                if pending > 0.0 {
                    zero_since = None;
                } else if zero_since.get_or_insert_with(Instant::now).elapsed() >= QUIET_FOR {
                    break;
                }
            }
            None if started.elapsed() >= APPEAR_WITHIN => break,
            None => {}
        }
        if started.elapsed() >= timeout {
            eprintln!(
                "  quiet start: errata still has learners to flush after {timeout:?}; going on"
            );
            timed_out = true;
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let flush_wait_seconds = seen.then(|| started.elapsed().as_secs_f64());
    let (settle_seconds, settle_attempts) = match settle {
        Some(command) => {
            let (seconds, attempts) = run_settle(command, timeout).await?;
            (Some(seconds), attempts)
        }
        None => (None, 0),
    };
    Ok(QuietStart {
        flush_wait_seconds,
        flush_wait_timed_out: timed_out,
        settle_seconds,
        settle_attempts,
    })
}

/// Runs `command` until it succeeds, at most for `timeout`.
async fn run_settle(command: &str, timeout: Duration) -> anyhow::Result<(f64, u32)> {
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .kill_on_drop(true)
            .status()
            .await
            .with_context(|| format!("running --settle {command:?}"))?;
        if status.success() {
            return Ok((started.elapsed().as_secs_f64(), attempts));
        }
        if started.elapsed() + SETTLE_RETRY >= timeout {
            bail!(
                "--settle {command:?} did not succeed within {timeout:?} ({attempts} runs, last: {status})"
            );
        }
        tokio::time::sleep(SETTLE_RETRY).await;
    }
}
