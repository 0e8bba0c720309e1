//! The real `errata` binary: a command run to completion (`errata flush`,
//! `repair`, `migrate`) or an `errata serve` replica.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use errata::config::{Config, StoreKind};

/// The `errata` binary under test. Cargo tells a test where it is, not a
/// library, so a test names it:
/// `const ERRATA: Errata = Errata::at(env!("CARGO_BIN_EXE_errata"));`
#[derive(Debug, Clone, Copy)]
pub struct Errata {
    path: &'static str,
}

impl Errata {
    pub const fn at(path: &'static str) -> Self {
        Self { path }
    }

    /// The binary, pointed at `config` by its environment.
    fn command(&self, config: &Config) -> Command {
        let mut command = Command::new(self.path);
        command
            .envs(errata_env(config))
            .env_remove("ERRATA_API_TOKENS");
        command
    }

    /// Runs `errata <args>` to completion; returns its stdout.
    pub fn run(&self, config: &Config, args: &[&str]) -> String {
        self.try_run(config, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `errata <args>`; its stdout, or why it failed.
    pub fn try_run(&self, config: &Config, args: &[&str]) -> Result<String, String> {
        let output = self
            .command(config)
            .args(args)
            .output()
            .expect("the errata binary runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "errata {args:?} failed: {stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// Starts `errata serve` and waits until it listens.
    pub fn serve(&self, config: &Config) -> ServeProcess {
        self.try_serve(config).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `errata serve`; an error when it exits before listening (its
    /// CQL or Redis unreachable, say) or is not listening within 30 s.
    pub fn try_serve(&self, config: &Config) -> Result<ServeProcess, String> {
        let mut child = self
            .command(config)
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("errata serve does not start: {e}"))?;
        let stdout = child.stdout.take().expect("a piped stdout");
        let address = read_log(stdout);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut said = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match address.recv_timeout(left) {
                Ok(Ok(address)) => return Ok(ServeProcess { child, address }),
                Ok(Err(line)) => said.push(line),
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait();
                    return Err(format!(
                        "errata serve did not listen ({status:?}): {}",
                        said.join("\n")
                    ));
                }
            }
        }
    }
}

/// The environment that points the `errata` binary at this configuration.
pub fn errata_env(config: &Config) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("ERRATA_BIND", "127.0.0.1:0".into()),
        ("RUST_LOG", "info".into()),
    ];
    match config.store {
        StoreKind::Embedded => env.extend([
            ("ERRATA_STORE", "embedded".into()),
            ("ERRATA_DATA_DIR", config.data_dir.display().to_string()),
        ]),
        StoreKind::Cql => env.extend([
            ("ERRATA_STORE", "cql".into()),
            ("ERRATA_CQL_NODES", config.cql_nodes.join(",")),
            ("ERRATA_CQL_KEYSPACE", config.cql_keyspace.clone()),
            (
                "ERRATA_CQL_REPLICATION_STRATEGY",
                config.cql_replication_strategy.clone(),
            ),
            (
                "ERRATA_CQL_REPLICATION_FACTOR",
                config.cql_replication_factor.to_string(),
            ),
            ("ERRATA_CQL_CONSISTENCY", config.cql_consistency.clone()),
            ("ERRATA_REDIS_URL", config.redis_url.clone()),
            (
                "ERRATA_REDIS_MIN_REPLICAS",
                config.redis_min_replicas.to_string(),
            ),
            (
                "ERRATA_FLUSH_INTERVAL_MS",
                config.flush_interval_ms.to_string(),
            ),
        ]),
    }
    env
}

/// Reads the log on a thread of its own: the listening address (or each
/// line said before it) comes back on the channel; afterwards the
/// flusher's complaints go to the test's output and the rest is drained,
/// so the server never blocks on a full pipe.
fn read_log(
    stdout: std::process::ChildStdout,
) -> std::sync::mpsc::Receiver<Result<SocketAddr, String>> {
    let (listening, address) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut listening = Some(listening);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(tx) = &listening {
                let addr = line
                    .contains("listening")
                    .then(|| line.split("addr=").nth(1))
                    .flatten()
                    .and_then(|a| a.split_whitespace().next())
                    .and_then(|a| a.parse::<SocketAddr>().ok());
                match addr {
                    Some(addr) => {
                        let _ = tx.send(Ok(addr));
                        listening = None;
                    }
                    None => {
                        let _ = tx.send(Err(line));
                    }
                }
            } else if line.contains("flusher")
                || line.contains("re-applying")
                || line.contains("panicked")
            {
                eprintln!("errata serve: {line}");
            }
        }
    });
    address
}

/// An `errata serve` process, killed when dropped.
pub struct ServeProcess {
    pub child: Child,
    pub address: SocketAddr,
}

impl ServeProcess {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// SIGTERM, then waits: a graceful shutdown drains the buffer.
    pub fn terminate(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
