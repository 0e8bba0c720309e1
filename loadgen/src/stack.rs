//! The cql-mode stack under test: a Redis (started here unless one is
//! given), a fresh keyspace on the given CQL nodes (`errata migrate`), and
//! the replicas (`errata serve`, started by the caller with [`Cql::env`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

/// Where the cql-mode replicas keep their data.
pub struct Cql {
    pub nodes: String,
    pub keyspace: String,
    pub redis_url: String,
    /// The Redis this process started (stopped with the stack).
    redis: Option<(Child, PathBuf)>,
}

impl Cql {
    /// Uses `redis_url`, or starts a `redis-server` as deployed (append-only
    /// file, fsynced before each answer) on a free port; names a fresh keyspace.
    pub async fn start(nodes: &str, redis_url: Option<&str>) -> anyhow::Result<Self> {
        let keyspace = format!("loadgen_{}", uuid::Uuid::new_v4().simple())[..20].to_owned();
        let (redis_url, redis) = match redis_url {
            Some(url) => (url.to_owned(), None),
            None => {
                let (child, dir, url) = start_redis().await?;
                (url, Some((child, dir)))
            }
        };
        Ok(Self {
            nodes: nodes.to_owned(),
            keyspace,
            redis_url,
            redis,
        })
    }

    /// The process id of the Redis this process started, if it did.
    pub fn redis_pid(&self) -> Option<u32> {
        self.redis.as_ref().and_then(|(child, _)| child.id())
    }

    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("ERRATA_STORE", "cql"),
            ("ERRATA_CQL_NODES", &self.nodes),
            ("ERRATA_CQL_KEYSPACE", &self.keyspace),
            ("ERRATA_REDIS_URL", &self.redis_url),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Runs `errata COMMAND` (`migrate`, `flush`) against the stack.
    pub fn run(&self, binary: &Path, command: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        let output = std::process::Command::new(binary)
            .arg(command)
            .envs(self.env())
            .output()
            .with_context(|| format!("running errata {command}"))?;
        if !output.status.success() {
            bail!(
                "errata {command} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        eprintln!(
            "  errata {command}: done in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    pub async fn stop(mut self) {
        if let Some((mut child, dir)) = self.redis.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

async fn start_redis() -> anyhow::Result<(Child, PathBuf, String)> {
    let dir = crate::server::temp_data_dir()?;
    let started = Instant::now();
    loop {
        let port = crate::server::free_port()?;
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server (is it installed?)")?;
        // Answered by this server itself: were the port taken meanwhile,
        // ours exits and another one's answer must not be taken for it.
        while pid_on(port).await != child.id() {
            if child.try_wait()?.is_some() {
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("redis-server did not answer redis-cli on {port} within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if child.try_wait()?.is_none() {
            let url = format!("redis://127.0.0.1:{port}");
            eprintln!("  redis: {url}, data in {}", dir.display());
            return Ok((child, dir, url));
        }
    }
}

/// The process id of the Redis answering on `port`, if one answers (asked
/// with `redis-cli`, which comes with `redis-server`).
async fn pid_on(port: u16) -> Option<u32> {
    let info = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "info", "server"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(2), info)
        .await
        .ok()?
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| line.trim().strip_prefix("process_id:"))
        .and_then(|pid| pid.parse().ok())
}
