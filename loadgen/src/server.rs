//! The server under test: either one this process starts (with a fresh data
//! directory) or one already running at a URL.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

pub struct Spawned {
    child: Child,
    pub pid: u32,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    keep: bool,
}

/// A fresh, empty directory under the system temp dir.
pub fn temp_data_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("errata-loadgen-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl Spawned {
    /// Starts `binary` serving on `port` with the store `env` names (the
    /// embedded one in `data_dir` when it names none; its log goes there as
    /// `{name}.log`), and waits until `/healthz` answers.
    pub async fn start(
        binary: &Path,
        data_dir: PathBuf,
        name: &str,
        port: u16,
        env: &[(String, String)],
        keep: bool,
    ) -> anyhow::Result<Self> {
        let log = data_dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log)?;
        let mut command = Command::new(binary);
        command
            .env("ERRATA_DATA_DIR", &data_dir)
            .env("ERRATA_BIND", format!("127.0.0.1:{port}"))
            .env("ERRATA_STORE", "embedded")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let mut server = Self {
            child,
            pid,
            data_dir,
            log,
            keep,
        };
        let url = format!("http://127.0.0.1:{port}/healthz");
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "the server exited with {status} before it was ready; see {}",
                    server.log.display()
                );
            }
            if let Ok(response) = client.get(&url).send().await {
                if response.status().is_success() {
                    return Ok(server);
                }
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the server was not ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server (SIGTERM, so a cql replica drains its buffer) and
    /// removes its data directory unless kept.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
            let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        }
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// Resident memory of a process from /proc, in KiB.
pub struct MemoryKib {
    pub vm_rss: u64,
    pub vm_hwm: u64,
    /// Anonymous (heap) and file-backed parts of VmRSS.
    pub rss_anon: u64,
    pub rss_file: u64,
}

pub fn memory_kib(pid: u32) -> Option<MemoryKib> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some(MemoryKib {
        vm_rss: field("VmRSS:")?,
        vm_hwm: field("VmHWM:")?,
        rss_anon: field("RssAnon:").unwrap_or(0),
        rss_file: field("RssFile:").unwrap_or(0),
    })
}
