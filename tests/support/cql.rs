//! Real servers for the cql-mode tests: a `redis-server` child process per
//! test, and the CQL server named by `ERRATA_TEST_CQL`, in one keyspace per
//! test run (migrated once, whichever test process gets there first).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use errata::config::{Config, StoreKind};
use tempfile::TempDir;
use tokio::sync::OnceCell;

/// A `redis-server` child process, killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    aof: bool,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn pong(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut answer = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && &answer == b"+PONG\r\n"
}

impl RedisServer {
    /// A fresh server without persistence.
    pub fn start() -> Self {
        Self::launch(free_port(), tempfile::tempdir().expect("a temp dir"), false)
    }

    /// A fresh server that fsyncs its append-only file at every write.
    pub fn start_with_aof() -> Self {
        Self::launch(free_port(), tempfile::tempdir().expect("a temp dir"), true)
    }

    fn launch(port: u16, dir: TempDir, aof: bool) -> Self {
        let mut server = Self {
            child: None,
            port,
            dir,
            aof,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--save")
            .arg("");
        if self.aof {
            command
                .args(["--appendonly", "yes", "--appendfsync", "always"])
                .args(["--aof-use-rdb-preamble", "no"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (is it installed? scripts/test installs it)");
        self.child = Some(child);
        let started = Instant::now();
        while !pong(self.port) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server on port {} did not answer",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILL: no chance to write anything more.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and folder (and AOF).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("a redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connecting to the test redis")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The CQL server of the test run: `ERRATA_TEST_CQL=host:port`.
pub fn cql_node() -> String {
    match std::env::var("ERRATA_TEST_CQL") {
        Ok(node) if !node.trim().is_empty() => node.trim().to_owned(),
        _ => panic!(
            "ERRATA_TEST_CQL is not set: the cql tests need a CQL server \
             (scripts/test starts one with ../shared/tools/cassandra)"
        ),
    }
}

/// One keyspace per test run: nextest runs every test in its own process,
/// so the run id names it; `cargo test` runs a binary in one process.
pub fn test_keyspace() -> String {
    if let Ok(keyspace) = std::env::var("ERRATA_TEST_CQL_KEYSPACE") {
        return keyspace;
    }
    let run = std::env::var("NEXTEST_RUN_ID")
        .map(|id| id.replace('-', "").chars().take(16).collect::<String>())
        .unwrap_or_else(|_| format!("p{}", std::process::id()));
    format!("errata_t{run}")
}

/// A cql-mode configuration on the test run's keyspace (migrated) and the
/// given Redis.
pub async fn cql_config(redis_url: &str) -> Config {
    let keyspace = migrated_keyspace().await;
    Config {
        bind: "127.0.0.1:0".parse().expect("an address"),
        store: StoreKind::Cql,
        data_dir: PathBuf::from("./data"),
        cql_nodes: vec![cql_node()],
        cql_keyspace: keyspace,
        cql_replication_strategy: "SimpleStrategy".into(),
        cql_replication_factor: 1,
        redis_url: redis_url.to_owned(),
        flush_interval_ms: 50,
        api_tokens: Vec::new(),
    }
}

/// Migrates the run's keyspace once per process, and once per run across
/// processes (a lock directory keeps concurrent CREATEs away from the server).
pub async fn migrated_keyspace() -> String {
    static MIGRATED: OnceCell<String> = OnceCell::const_new();
    MIGRATED
        .get_or_init(|| async {
            let keyspace = test_keyspace();
            let ready = std::env::temp_dir().join(format!("{keyspace}.migrated"));
            let lock = std::env::temp_dir().join(format!("{keyspace}.lock"));
            // Under nextest the run id is unique, so a marker left by a
            // sibling process is trustworthy; otherwise always migrate.
            let trust_marker = std::env::var("NEXTEST_RUN_ID").is_ok()
                && std::env::var("ERRATA_TEST_CQL_KEYSPACE").is_err();
            let started = Instant::now();
            while !(trust_marker && ready.exists()) {
                if std::fs::create_dir(&lock).is_ok() {
                    let config = Config {
                        cql_keyspace: keyspace.clone(),
                        ..bare_config()
                    };
                    let migrated = errata::store::migrate(&config).await;
                    let _ = std::fs::remove_dir(&lock);
                    migrated.expect("migrating the test keyspace");
                    std::fs::write(&ready, b"").expect("marking the keyspace migrated");
                    break;
                }
                if started.elapsed() > Duration::from_secs(90) {
                    // A migrating process died: take its lock over.
                    let _ = std::fs::remove_dir(&lock);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            keyspace
        })
        .await
        .clone()
}

fn bare_config() -> Config {
    Config {
        bind: "127.0.0.1:0".parse().expect("an address"),
        store: StoreKind::Cql,
        data_dir: PathBuf::from("./data"),
        cql_nodes: vec![cql_node()],
        cql_keyspace: String::new(),
        cql_replication_strategy: "SimpleStrategy".into(),
        cql_replication_factor: 1,
        redis_url: String::new(),
        flush_interval_ms: 50,
        api_tokens: Vec::new(),
    }
}
