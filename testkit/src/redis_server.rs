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
    /// The port of the master this server replicates (`--replicaof`).
    replica_of: Option<u16>,
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

    /// A fresh replica of `master` (`--replicaof`), persisted as it is;
    /// returns once the master counts it among its synchronised replicas.
    pub fn start_replica_of(master: &RedisServer) -> Self {
        Self::start_replica_via(master, master.port)
    }

    /// The same, replicating from `port` (a proxy in front of `master`, to
    /// hold its replication link).
    pub fn start_replica_via(master: &RedisServer, port: u16) -> Self {
        let mut replica = Self {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("a temp dir"),
            fsync: master.fsync,
            cluster: false,
            replica_of: Some(port),
        };
        replica.spawn(true);
        master.wait_for_replicas(1);
        replica
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
            replica_of: None,
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
        if let Some(master) = self.replica_of {
            command
                .args(["--replicaof", "127.0.0.1"])
                .arg(master.to_string());
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

    /// Whether its process runs (not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
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

    /// A blocking command to this server (for a test's own steps).
    pub fn command_sync<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let client = redis::Client::open(self.url()).expect("a redis url");
        let mut conn = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("connecting to the test redis");
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("a read timeout");
        cmd.query(&mut conn)
            .unwrap_or_else(|e| panic!("redis on port {}: {e}", self.port))
    }

    /// What `INFO replication` says about `field`.
    pub fn replication<T: redis::FromRedisValue>(&self, field: &str) -> Option<T> {
        let info: redis::InfoDict = self.command_sync(redis::cmd("INFO").arg("replication"));
        info.get(field)
    }

    /// The replication offset this server has reached (a master's: what it
    /// has written; a replica's: what it has received).
    pub fn replication_offset(&self) -> u64 {
        self.replication(if self.replica_of.is_some() {
            "slave_repl_offset"
        } else {
            "master_repl_offset"
        })
        .unwrap_or(0)
    }

    /// Until at least `n` replicas are connected and online (10 s at most).
    pub fn wait_for_replicas(&self, n: usize) {
        let started = Instant::now();
        loop {
            let info: redis::InfoDict = self.command_sync(redis::cmd("INFO").arg("replication"));
            let online = (0..16)
                .filter_map(|i| info.get::<String>(&format!("slave{i}")))
                .filter(|slave| slave.contains("state=online"))
                .count();
            if online >= n {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis on port {}: {online} of {n} replicas online",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A replica becomes a master (`REPLICAOF NO ONE`), as a failover
    /// promotes it; it keeps whatever it had received.
    pub fn promote(&mut self) {
        let _: () = self.command_sync(redis::cmd("REPLICAOF").arg("NO").arg("ONE"));
        self.replica_of = None;
    }

    /// Starts this (killed) server again as a replica of `master`, as a
    /// failed master rejoins after a failover; returns once `master` has
    /// it online.
    pub fn rejoin_as_replica_of(&mut self, master: &RedisServer) {
        self.kill();
        self.replica_of = Some(master.port);
        self.spawn(false);
        master.wait_for_replicas(1);
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

/// What Redis still holds of a learner: every key naming them, and the
/// dirty sets (`errata:dirty:{N}`) that still list them (marked
/// "(member)"). After an erasure the only key left is the erasure marker,
/// until it expires.
pub async fn learner_keys(
    conn: &mut redis::aio::MultiplexedConnection,
    user: uuid::Uuid,
) -> Vec<String> {
    use redis::AsyncCommands;
    let mut left: Vec<String> = conn.keys(format!("*{user}*")).await.expect("KEYS");
    for key in dirty_sets_holding(conn, user).await {
        left.push(format!("{key} (member)"));
    }
    left.sort();
    left
}

/// The dirty sets (`errata:dirty:{N}`, every shard) that list the learner.
pub async fn dirty_sets_holding<C>(conn: &mut C, user: uuid::Uuid) -> Vec<String>
where
    C: redis::aio::ConnectionLike + Send + Sync,
{
    use errata::store::cql::buffer::{dirty_key, DIRTY_SHARDS};
    use redis::AsyncCommands;
    let mut holding = Vec::new();
    for shard in 0..DIRTY_SHARDS {
        let key = dirty_key(shard);
        let member: bool = conn
            .sismember(&key, user.to_string())
            .await
            .expect("SISMEMBER");
        if member {
            holding.push(key);
        }
    }
    holding
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
            replica_of: None,
        };
        second.spawn(true);
        assert_ne!(second.port, first.port, "both would share one Redis");
        let pid = second.child.as_ref().map(Child::id);
        assert_eq!(pid_on(second.port), pid);
        assert_eq!(pid_on(first.port), first.child.as_ref().map(Child::id));
    }
}
