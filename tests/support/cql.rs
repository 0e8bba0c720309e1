//! Real servers for the cql-mode tests: a `redis-server` child process per
//! test, and the CQL server named by `ERRATA_TEST_CQL`, in one keyspace per
//! test run (migrated once, whichever test process gets there first); and a
//! TCP fault proxy to put between errata and either.

#![allow(dead_code)]

#[path = "fault_proxy.rs"]
mod fault_proxy;
#[allow(unused_imports)] // not every test breaks connections
pub use fault_proxy::FaultProxy;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use errata::config::{Config, StoreKind};
use tempfile::TempDir;

/// A `redis-server` child process, killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    /// `appendfsync` of the append-only file; `None`: no persistence.
    fsync: Option<&'static str>,
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
        Self::launch(None)
    }

    /// A fresh server that fsyncs its append-only file at every write.
    pub fn start_with_aof() -> Self {
        Self::launch(Some("always"))
    }

    /// A fresh server as deployed (docker-compose.yml): the append-only
    /// file on, fsynced once a second. A SIGKILL loses nothing it answered
    /// (the writes are in the kernel's page cache); a power loss could.
    pub fn start_as_deployed() -> Self {
        Self::launch(Some("everysec"))
    }

    fn launch(fsync: Option<&'static str>) -> Self {
        let mut server = Self {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("a temp dir"),
            fsync,
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
        if let Some(fsync) = self.fsync {
            command
                .args(["--appendonly", "yes", "--appendfsync", fsync])
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
             (scripts/test starts one with scripts/cassandra)"
        ),
    }
}

/// The name stem of the test keyspaces. They are reused from run to run
/// (every table costs the server memory, so a run must not add new ones);
/// a test holds its keyspace exclusively while it runs.
fn run_stem() -> String {
    std::env::var("ERRATA_TEST_CQL_KEYSPACE").unwrap_or_else(|_| "errata_test".into())
}

/// Most keyspaces the tests use (as many as tests run at once).
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
    // A keyspace this nextest run already migrated needs no second pass
    // (each pass costs schema round trips); the run id is unique.
    let run = std::env::var("NEXTEST_RUN_ID").unwrap_or_default();
    let marker = std::env::temp_dir().join(format!("{keyspace}.{run}.migrated"));
    if run.is_empty() || !marker.exists() {
        errata::store::migrate(&config)
            .await
            .expect("migrating the test keyspace");
        let _ = std::fs::write(&marker, b"");
    }
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
        cql_nodes: vec![cql_node()],
        cql_keyspace: String::new(),
        redis_url: String::new(),
        flush_interval_ms: 50,
        ..Config::default()
    }
}

/// The environment that points the `errata` binary at this configuration.
pub fn errata_env(config: &Config) -> Vec<(&'static str, String)> {
    vec![
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
            "ERRATA_FLUSH_INTERVAL_MS",
            config.flush_interval_ms.to_string(),
        ),
        ("ERRATA_BIND", "127.0.0.1:0".into()),
        ("RUST_LOG", "info".into()),
    ]
}

/// Runs `errata <args>` (the real binary) to completion; returns its stdout.
pub fn run_errata(config: &Config, args: &[&str]) -> String {
    try_run_errata(config, args).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `errata <args>`; its stdout, or why it failed.
pub fn try_run_errata(config: &Config, args: &[&str]) -> Result<String, String> {
    let output = Command::new(env!("CARGO_BIN_EXE_errata"))
        .args(args)
        .envs(errata_env(config))
        .env_remove("ERRATA_API_TOKENS")
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

/// An `errata serve` process, killed when dropped.
pub struct ServeProcess {
    pub child: Child,
    pub address: std::net::SocketAddr,
}

impl ServeProcess {
    pub fn start(config: &Config) -> Self {
        Self::try_start(config).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `errata serve`; an error when it exits before listening (its
    /// CQL or Redis unreachable, say) or is not listening within 30 s.
    pub fn try_start(config: &Config) -> Result<Self, String> {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(env!("CARGO_BIN_EXE_errata"))
            .arg("serve")
            .envs(errata_env(config))
            .env_remove("ERRATA_API_TOKENS")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("errata serve does not start: {e}"))?;
        let stdout = child.stdout.take().expect("a piped stdout");
        // The log is read on a thread of its own: the flusher's complaints
        // go to the test's output, the listening address comes back here.
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
                        .and_then(|a| a.parse::<std::net::SocketAddr>().ok());
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
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut said = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match address.recv_timeout(left) {
                Ok(Ok(address)) => return Ok(Self { child, address }),
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

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// SIGTERM, then waits: a graceful shutdown drains the buffer.
    pub fn terminate(mut self) {
        let _ = self.terminate_and_wait();
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate_and_wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CQL session on the test server, for checking what is stored.
pub async fn cql_session() -> scylla::client::session::Session {
    scylla::client::session_builder::SessionBuilder::new()
        .known_node(cql_node())
        .build()
        .await
        .expect("a CQL session")
}

/// The learner's durable counters, as (category_key, subcategory_key) → n.
pub async fn durable_counts(
    keyspace: &str,
    user_id: uuid::Uuid,
) -> std::collections::BTreeMap<(String, String), i64> {
    durable_counts_in(&cql_session().await, keyspace, user_id).await
}

/// The same through `session`, read at consistency ALL (every replica
/// agrees, so a count is never read from one that missed a write).
pub async fn durable_counts_in(
    session: &scylla::client::session::Session,
    keyspace: &str,
    user_id: uuid::Uuid,
) -> std::collections::BTreeMap<(String, String), i64> {
    let mut statement = scylla::statement::unprepared::Statement::new(format!(
        "SELECT category_key, subcategory_key, frequency FROM {keyspace}.error_counts \
         WHERE user_id = ?"
    ));
    statement.set_consistency(scylla::statement::Consistency::All);
    let rows = session
        .query_unpaged(statement, (user_id,))
        .await
        .expect("reading counters")
        .into_rows_result()
        .expect("rows");
    rows.rows::<(String, String, scylla::value::Counter)>()
        .expect("counter rows")
        .map(|r| {
            let (c, s, n) = r.expect("a counter row");
            ((c, s), n.0)
        })
        .collect()
}

/// How many events of each error (category_key, subcategory_key) the
/// learner's log holds, over every month bucket.
pub async fn event_counts(
    keyspace: &str,
    user_id: uuid::Uuid,
) -> std::collections::BTreeMap<(String, String), i64> {
    let session = cql_session().await;
    let buckets = session
        .query_unpaged(
            format!("SELECT bucket FROM {keyspace}.error_buckets WHERE user_id = ?"),
            (user_id,),
        )
        .await
        .expect("reading buckets")
        .into_rows_result()
        .expect("rows");
    let buckets: Vec<i32> = buckets
        .rows::<(i32,)>()
        .expect("int rows")
        .map(|r| r.expect("a bucket").0)
        .collect();
    let mut statement = scylla::statement::Statement::new(format!(
        "SELECT category_key, subcategory_key FROM {keyspace}.error_events \
         WHERE user_id = ? AND bucket = ?"
    ));
    statement.set_page_size(5000);
    let mut counts = std::collections::BTreeMap::new();
    for bucket in buckets {
        let mut paging = scylla::response::PagingState::start();
        loop {
            let (result, next) = session
                .query_single_page(statement.clone(), (user_id, bucket), paging)
                .await
                .expect("reading events");
            let rows = result.into_rows_result().expect("rows");
            for row in rows.rows::<(String, String)>().expect("text rows") {
                *counts.entry(row.expect("an event")).or_insert(0) += 1;
            }
            match next.into_paging_control_flow() {
                std::ops::ControlFlow::Break(()) => break,
                std::ops::ControlFlow::Continue(state) => paging = state,
            }
        }
    }
    counts
}

/// A learner with a conversation and an utterance, created over HTTP at
/// `base` (`http://host:port`): (user_id, conversation_id, utterance_id).
pub async fn http_learner(
    client: &reqwest::Client,
    base: &str,
) -> (uuid::Uuid, uuid::Uuid, uuid::Uuid) {
    use serde_json::{json, Value};
    async fn created(
        client: &reqwest::Client,
        url: String,
        body: Value,
        field: &str,
    ) -> uuid::Uuid {
        let response = client.post(url).json(&body).send().await.expect("POST");
        assert_eq!(response.status(), reqwest::StatusCode::CREATED);
        let body: Value = response.json().await.expect("JSON");
        body[field]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("an id")
    }
    let email = format!("{}@example.com", uuid::Uuid::new_v4());
    let user = created(
        client,
        format!("{base}/users/"),
        json!({"username": "learner", "email": email}),
        "user_id",
    )
    .await;
    let conversation = created(
        client,
        format!("{base}/conversations/"),
        json!({"user_id": user}),
        "conversation_id",
    )
    .await;
    let utterance = created(
        client,
        format!("{base}/utterances/"),
        json!({"user_id": user, "conversation_id": conversation, "content": "He go to school."}),
        "utterance_id",
    )
    .await;
    (user, conversation, utterance)
}

/// The body of a report of these errors about the learner's utterance.
pub fn report_body(
    learner: (uuid::Uuid, uuid::Uuid, uuid::Uuid),
    errors: &[(&str, &str)],
) -> serde_json::Value {
    serde_json::json!({
        "user_id": learner.0,
        "conversation_id": learner.1,
        "utterance_id": learner.2,
        "errors": errors
            .iter()
            .map(|(c, s)| serde_json::json!({"errorCategory": c, "errorSubCategory": s}))
            .collect::<Vec<_>>(),
    })
}

/// Posts one report with a fresh idempotency key; returns the status.
pub async fn http_record(
    client: &reqwest::Client,
    base: &str,
    learner: (uuid::Uuid, uuid::Uuid, uuid::Uuid),
    errors: &[(&str, &str)],
) -> Result<reqwest::StatusCode, reqwest::Error> {
    let key = uuid::Uuid::new_v4().to_string();
    http_record_keyed(client, base, learner, errors, &key).await
}

/// Posts one report with this idempotency key; returns the status.
pub async fn http_record_keyed(
    client: &reqwest::Client,
    base: &str,
    learner: (uuid::Uuid, uuid::Uuid, uuid::Uuid),
    errors: &[(&str, &str)],
    key: &str,
) -> Result<reqwest::StatusCode, reqwest::Error> {
    let body = report_body(learner, errors);
    let response = client
        .post(format!("{base}/simulate-and-generate"))
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    // Only a complete answer is an acknowledgement.
    response.bytes().await?;
    Ok(status)
}

/// Posts the report with one idempotency key, as a client that wants it
/// counted does: retried (on the next of `bases`) after a 503 or a broken
/// connection until it is acknowledged, at most for `within`. Returns how
/// many attempts failed first. Any other answer is a failure of the test.
pub async fn record_until_acknowledged(
    client: &reqwest::Client,
    bases: &[String],
    learner: (uuid::Uuid, uuid::Uuid, uuid::Uuid),
    errors: &[(&str, &str)],
    within: Duration,
) -> usize {
    let key = uuid::Uuid::new_v4().to_string();
    let started = Instant::now();
    let mut failed = 0;
    loop {
        let base = &bases[failed % bases.len()];
        match http_record_keyed(client, base, learner, errors, &key).await {
            Ok(reqwest::StatusCode::OK) => return failed,
            Ok(reqwest::StatusCode::SERVICE_UNAVAILABLE) | Err(_) => failed += 1,
            Ok(other) => panic!("recording answered {other}"),
        }
        assert!(
            started.elapsed() < within,
            "a report was not acknowledged in {within:?} ({failed} attempts)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The learner's frequencies over HTTP, as (category, subcategory) → n.
pub async fn http_frequencies(
    client: &reqwest::Client,
    base: &str,
    user: uuid::Uuid,
) -> std::collections::BTreeMap<(String, String), i64> {
    let body: serde_json::Value = client
        .get(format!("{base}/users/{user}/errors"))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    body["errors"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| {
            (
                (
                    e["errorCategory"].as_str().expect("text").to_owned(),
                    e["errorSubCategory"].as_str().expect("text").to_owned(),
                ),
                e["errorFrequency"].as_i64().expect("a number"),
            )
        })
        .collect()
}

/// Every key in the Redis server.
pub async fn redis_keys(redis: &RedisServer) -> Vec<String> {
    let mut conn = redis.client().await;
    redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .expect("KEYS")
}

/// Redis Cluster's slot of a key: CRC16 (XMODEM) of the hash tag (the text
/// between the first '{' and the next '}', when not empty) or of the key.
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match key.find('{') {
        Some(open) => match key[open + 1..].find('}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    let mut crc: u16 = 0;
    for &byte in hashed {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// /readyz until it answers `want` (at most `within`); returns the body.
pub async fn readyz_until(
    client: &reqwest::Client,
    base: &str,
    want: reqwest::StatusCode,
    within: Duration,
) -> String {
    let started = Instant::now();
    loop {
        let response = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("/readyz answers");
        let status = response.status();
        let body = response.text().await.expect("a body");
        if status == want {
            return body;
        }
        assert!(
            started.elapsed() < within,
            "/readyz still answers {status} {body} after {within:?}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
