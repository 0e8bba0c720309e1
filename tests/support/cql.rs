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

/// The name stem of this test run's keyspaces: nextest runs every test in
/// its own process, so its run id names the run; `cargo test` runs a test
/// binary in one process.
fn run_stem() -> String {
    if let Ok(stem) = std::env::var("ERRATA_TEST_CQL_KEYSPACE") {
        return stem;
    }
    let run = std::env::var("NEXTEST_RUN_ID")
        .map(|id| id.replace('-', "").chars().take(16).collect::<String>())
        .unwrap_or_else(|_| format!("p{}", std::process::id()));
    format!("errata_t{run}")
}

/// Most keyspaces one test run uses (as many as tests run at once).
const SLOTS: usize = 16;

/// A keyspace of the run, held exclusively (an advisory file lock, released
/// when dropped or when the process dies). Tests use fixed e-mail addresses,
/// so two tests must never share a keyspace at the same time, and a taken
/// keyspace starts with no e-mail claimed.
pub struct KeyspaceSlot {
    pub keyspace: String,
    _lock: std::fs::File,
}

/// A cql-mode configuration on a keyspace of this run and the given Redis.
pub async fn cql_config(redis_url: &str) -> (Config, KeyspaceSlot) {
    let slot = take_keyspace().await;
    let config = Config {
        cql_keyspace: slot.keyspace.clone(),
        redis_url: redis_url.to_owned(),
        ..bare_config()
    };
    (config, slot)
}

#[allow(clippy::incompatible_msrv)] // File::try_lock: tests run on a newer toolchain
async fn take_keyspace() -> KeyspaceSlot {
    let stem = run_stem();
    let started = Instant::now();
    loop {
        for slot in 0..SLOTS {
            let keyspace = format!("{stem}_s{slot}");
            let path = std::env::temp_dir().join(format!("{keyspace}.lock"));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .expect("a keyspace lock file");
            if file.try_lock().is_ok() {
                prepare_keyspace(&keyspace).await;
                return KeyspaceSlot {
                    keyspace,
                    _lock: file,
                };
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no free test keyspace"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates the keyspace if needed and releases every e-mail claimed in it.
async fn prepare_keyspace(keyspace: &str) {
    let config = Config {
        cql_keyspace: keyspace.to_owned(),
        ..bare_config()
    };
    errata::store::migrate(&config)
        .await
        .expect("migrating the test keyspace");
    let session = scylla::client::session_builder::SessionBuilder::new()
        .known_node(cql_node())
        .build()
        .await
        .expect("a CQL session");
    let rows = session
        .query_unpaged(
            format!("SELECT email_key FROM {keyspace}.users_by_email"),
            &[],
        )
        .await
        .expect("listing e-mail claims")
        .into_rows_result()
        .expect("rows");
    let emails: Vec<String> = rows
        .rows::<(String,)>()
        .expect("text rows")
        .map(|r| r.expect("an e-mail").0)
        .collect();
    let delete = session
        .prepare(format!(
            "DELETE FROM {keyspace}.users_by_email WHERE email_key = ?"
        ))
        .await
        .expect("preparing the delete");
    for email in emails {
        session
            .execute_unpaged(&delete, (email,))
            .await
            .expect("releasing an e-mail claim");
    }
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
