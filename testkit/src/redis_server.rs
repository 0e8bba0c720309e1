//! A `redis-server` child process per test, and what the tests ask Redis.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use errata::store::cql::buffer::Connection;
use tempfile::TempDir;

use crate::redis_cluster::RedisCluster;

/// A `redis-server` child process, killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    /// `appendfsync` of the append-only file; `None`: no persistence.
    fsync: Option<&'static str>,
    /// A node of a Redis Cluster (see [`crate::redis_cluster`]).
    cluster: bool,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The process id of the Redis answering on `port`, once it serves (its
/// append-only file loaded: `INFO` is answered while loading, `PING` is
/// not). A server started on a port another test's server took between
/// [`free_port`] and its bind exits, and the other one must not be taken
/// for it.
fn pid_on(port: u16) -> Option<u32> {
    let client = redis::Client::open(url(port)).ok()?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    conn.set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    redis::cmd("PING").query::<String>(&mut conn).ok()?;
    let info: redis::InfoDict = redis::cmd("INFO").arg("server").query(&mut conn).ok()?;
    info.get("process_id")
}

impl RedisServer {
    /// A fresh server without persistence.
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// A fresh server as deployed (docker-compose.yml): the append-only
    /// file on, fsynced before each answer (`appendfsync always`), so a
    /// SIGKILL loses nothing it answered. (With `everysec` it would: Redis
    /// then answers writes that wait, for up to 2 s, behind a lagging fsync,
    /// before they reach the file.)
    pub fn start_as_deployed() -> Self {
        Self::launch(Some("always"))
    }

    /// A fresh server with cluster support on, not yet in a cluster.
    pub(crate) fn start_cluster_node() -> Self {
        Self::launch_as(None, true)
    }

    fn launch(fsync: Option<&'static str>) -> Self {
        Self::launch_as(fsync, false)
    }

    fn launch_as(fsync: Option<&'static str>, cluster: bool) -> Self {
        let mut server = Self {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("a temp dir"),
            fsync,
            cluster,
        };
        server.spawn(true);
        server
    }

    /// Starts `redis-server` on the port and waits until it answers, itself.
    /// A port taken meanwhile by another process is given up for a new one
    /// when `may_move` (a first start); a restart must keep its port.
    fn spawn(&mut self, may_move: bool) {
        let started = Instant::now();
        loop {
            let mut child = self
                .command()
                .spawn()
                .expect("redis-server starts (is it installed? scripts/test installs it)");
            loop {
                if started.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("redis-server on port {} did not answer", self.port);
                }
                if pid_on(self.port) == Some(child.id()) {
                    self.child = Some(child);
                    return;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    assert!(
                        may_move,
                        "redis-server could not start again on port {} ({status})",
                        self.port
                    );
                    self.port = free_port();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn command(&self) -> Command {
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
        if self.cluster {
            command
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .arg("--cluster-config-file")
                .arg(self.dir.path().join("nodes.conf"));
        }
        command.stdout(Stdio::null()).stderr(Stdio::null());
        command
    }

    pub fn url(&self) -> String {
        url(self.port)
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
        self.spawn(false);
    }

    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        client(self.port).await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Redis of a cql-mode test: one server, or a three-master Redis
/// Cluster when `ERRATA_TEST_REDIS=cluster` (scripts/test runs the contract
/// suite and the buffer tests both ways).
pub enum TestRedis {
    Server(RedisServer),
    Cluster(RedisCluster),
}

impl TestRedis {
    /// What `ERRATA_TEST_REDIS` asks for: `cluster`, or one server.
    pub fn start() -> Self {
        match std::env::var("ERRATA_TEST_REDIS").as_deref() {
            Ok("cluster") => Self::Cluster(RedisCluster::start()),
            Ok("") | Ok("server") | Err(_) => Self::Server(RedisServer::start()),
            Ok(other) => panic!("ERRATA_TEST_REDIS={other}: expected `server` or `cluster`"),
        }
    }

    /// `ERRATA_REDIS_URL`: the server's URL, or the cluster's list.
    pub fn url(&self) -> String {
        match self {
            Self::Server(server) => server.url(),
            Self::Cluster(cluster) => cluster.url(),
        }
    }

    /// The one server (for a test that puts a proxy in front of it).
    pub fn server(&self) -> &RedisServer {
        match self {
            Self::Server(server) => server,
            Self::Cluster(_) => panic!("this test needs one Redis server, not a cluster"),
        }
    }

    /// A connection as errata makes it: to the server or the cluster.
    pub async fn client(&self) -> Connection {
        Connection::open(&self.url())
            .await
            .expect("connecting to the test redis")
    }
}

fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

/// A connection to the test Redis on `port` (for a server a test holds
/// behind a lock, where [`RedisServer::client`] cannot wait).
pub async fn client(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url(port))
        .expect("a redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connecting to the test redis")
}

/// Every key in the test Redis (on every primary of a cluster).
pub async fn redis_keys(redis: &TestRedis) -> Vec<String> {
    let mut conn = redis.client().await;
    let mut keys = Vec::new();
    for primary in conn.primaries().await.expect("the primaries") {
        let some: Vec<String> = conn
            .query_on(&primary, redis::cmd("KEYS").arg("*"))
            .await
            .expect("KEYS");
        keys.extend(some);
    }
    keys
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_whose_port_was_taken_meanwhile_moves_to_another() {
        let first = RedisServer::start();
        // As if another test's server had bound the port between
        // `free_port` and this one's start.
        let mut second = RedisServer {
            child: None,
            port: first.port,
            dir: tempfile::tempdir().expect("a temp dir"),
            fsync: None,
            cluster: false,
        };
        second.spawn(true);
        assert_ne!(second.port, first.port, "both would share one Redis");
        let pid = second.child.as_ref().map(Child::id);
        assert_eq!(pid_on(second.port), pid);
        assert_eq!(pid_on(first.port), first.child.as_ref().map(Child::id));
    }
}
