//! One Redis server or a Redis Cluster, behind one connection type.
//!
//! `ERRATA_REDIS_URL` names one server (`redis://host:port`) or, as a
//! comma-separated list, some nodes of a Redis Cluster (the driver learns
//! the rest of the cluster from them). Every command and script of the
//! buffer touches the keys of one slot only, so the cluster connection
//! routes each by its first key and follows the cluster's redirections
//! (`MOVED`, `ASK`, `TRYAGAIN` while a slot migrates) by itself.
//!
//! With `ERRATA_REDIS_MIN_REPLICAS` set, a write that acknowledges something
//! is followed by `WAIT` in the same pipeline ([`Connection::waited`]): one
//! round trip, on the connection that sent the write, to the master that
//! ran it. (Sent alone, `WAIT` has no key, and a cluster would send it to
//! every master; in a pipeline it goes where the pipeline's keys go.)

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use ::redis::{
    Arg, Cmd, ErrorKind, FromRedisValue, Pipeline, RedisFuture, Script, ScriptInvocation,
    ServerErrorKind, Value,
};

use super::{bounded, unavailable};
use crate::store::policy::REDIS_CALL_TIMEOUT as CALL_TIMEOUT;
use crate::store::policy::REDIS_REPLICA_WAIT;
use crate::store::{Backend, StoreError};

use crate::store::policy::REDIS_CONNECT_TIMEOUT as CONNECT_TIMEOUT;

/// A cheap handle (clone it per call) on the one multiplexed connection.
/// Every round trip it makes is counted in `errata_redis_calls_total`, and
/// timed in `errata_redis_call_seconds`, by script name (or command, or
/// `pipeline`).
#[derive(Clone)]
pub struct Connection {
    link: Link,
    scripts: Arc<HashMap<String, &'static str>>,
    /// How many replicas must acknowledge a write that acknowledges
    /// something (`ERRATA_REDIS_MIN_REPLICAS`); 0: none, no `WAIT`.
    min_replicas: u32,
}

/// How many replicas acknowledged a write within [`REDIS_REPLICA_WAIT`]
/// (`None`: none were required, and no `WAIT` was sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acknowledged(Option<u32>);

#[derive(Clone)]
enum Link {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

/// `answer`, its round trip's time recorded in
/// `errata_redis_call_seconds` by `call` (answered or failed alike).
fn timed<'a, T: Send + 'a>(
    call: Cow<'static, str>,
    answer: RedisFuture<'a, T>,
) -> RedisFuture<'a, T> {
    let started = std::time::Instant::now();
    Box::pin(async move {
        let answered = answer.await;
        metrics::histogram!("errata_redis_call_seconds", "call" => call)
            .record(started.elapsed().as_secs_f64());
        answered
    })
}

/// Where one primary of the buffer listens (`None`: the single server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Primary(Option<(String, u16)>);

impl Connection {
    /// Connects to the server, or to the cluster when `url` lists several.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let nodes = cluster_nodes(url);
        if nodes.len() > 1 {
            let client = ClusterClientBuilder::new(nodes)
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(CALL_TIMEOUT)
                .retries(4)
                .max_retry_wait(500)
                .build()
                .map_err(unavailable)?;
            let conn = bounded(client.get_async_connection()).await?;
            return Ok(Self::over(Link::Cluster(conn)));
        }
        let client = ::redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = bounded(ConnectionManager::new_with_config(client, config)).await?;
        Ok(Self::over(Link::Server(conn)))
    }

    fn over(link: Link) -> Self {
        Self {
            link,
            scripts: Arc::default(),
            min_replicas: 0,
        }
    }

    /// Writes that acknowledge something wait for `n` replicas from now on.
    pub fn require_replicas(&mut self, n: u32) {
        self.min_replicas = n;
    }

    /// How many replicas a write that acknowledges something waits for.
    pub fn min_replicas(&self) -> u32 {
        self.min_replicas
    }

    /// Sends `pipe` (whose keys are all in one slot: the learner's), then,
    /// when replicas are required, `WAIT` for them in the same round trip;
    /// returns the pipeline's answers and how many replicas acknowledged.
    /// `scripts` are loaded and the pipeline sent again when the server
    /// did not know one of them (nothing of it ran then).
    ///
    /// `WAIT` counts the replicas that have everything this connection
    /// wrote before it, so the pipeline's writes and every earlier one.
    /// A pipeline whose answer shows it wrote nothing must not rely on the
    /// count ([`Connection::replicated`] is for writes only).
    pub async fn waited<T: FromRedisValue>(
        &mut self,
        mut pipe: Pipeline,
        scripts: &[&ScriptInvocation<'_>],
    ) -> Result<(T, Acknowledged), StoreError> {
        let waits = self.min_replicas > 0;
        if waits {
            pipe.cmd("WAIT")
                .arg(self.min_replicas)
                .arg(REDIS_REPLICA_WAIT.as_millis() as u64);
        }
        let mut loaded = false;
        let mut answers = loop {
            match tokio::time::timeout(CALL_TIMEOUT, pipe.query_async::<Vec<Value>>(self)).await {
                Ok(Ok(answers)) => break answers,
                Ok(Err(e))
                    if !loaded
                        && !scripts.is_empty()
                        && e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) =>
                {
                    for script in scripts {
                        bounded(script.load_async(self)).await?;
                    }
                    loaded = true;
                }
                Ok(Err(e)) => return Err(unavailable(e)),
                Err(_) => return Err(StoreError::busy(Backend::Redis, "a call timed out")),
            }
        };
        let acknowledged = if waits {
            let count = answers
                .pop()
                .and_then(|n| ::redis::from_redis_value::<u32>(n).ok())
                .ok_or_else(|| StoreError::bug("redis: WAIT answered no count"))?;
            Acknowledged(Some(count))
        } else {
            Acknowledged(None)
        };
        let answer = ::redis::from_redis_value(Value::Array(answers))
            .map_err(|e| StoreError::internal("redis: an unexpected answer", e))?;
        Ok((answer, acknowledged))
    }

    /// A write (`call`: its script or command) is acknowledged only when
    /// enough replicas have it: counts the wait in
    /// `errata_redis_replica_waits_total{call,outcome}` and answers 503
    /// when fewer replicas acknowledged than required.
    pub fn replicated(
        &self,
        call: &'static str,
        acknowledged: Acknowledged,
    ) -> Result<(), StoreError> {
        let Acknowledged(Some(count)) = acknowledged else {
            return Ok(());
        };
        let enough = count >= self.min_replicas;
        let outcome = if enough { "replicated" } else { "short" };
        metrics::counter!(
            "errata_redis_replica_waits_total",
            "call" => call,
            "outcome" => outcome
        )
        .increment(1);
        if enough {
            return Ok(());
        }
        Err(StoreError::busy(
            Backend::Redis,
            format!(
                "{count} of the {} Redis replicas required acknowledged the write in time",
                self.min_replicas
            ),
        ))
    }

    /// Names the scripts (by SHA1) for the call counter.
    pub fn name_scripts<'a>(
        &mut self,
        scripts: impl IntoIterator<Item = (&'a Script, &'static str)>,
    ) {
        self.scripts = Arc::new(
            scripts
                .into_iter()
                .map(|(script, name)| (script.get_hash().to_owned(), name))
                .collect(),
        );
    }

    /// Counts one round trip for `cmd`, labelled with the script's name
    /// (no allocation on the hot path: the scripts' names are static), else
    /// the command's.
    fn count_call(scripts: &HashMap<String, &'static str>, cmd: &Cmd) -> Cow<'static, str> {
        let mut args = cmd.args_iter().filter_map(|arg| match arg {
            Arg::Simple(bytes) => Some(bytes),
            _ => None,
        });
        let command = args.next().unwrap_or_default();
        let script = (command.eq_ignore_ascii_case(b"EVALSHA")
            || command.eq_ignore_ascii_case(b"EVAL"))
        .then(|| args.next())
        .flatten()
        .and_then(|sha| std::str::from_utf8(sha).ok())
        .and_then(|sha| scripts.get(sha));
        let call: Cow<'static, str> = match script {
            Some(name) => Cow::Borrowed(*name),
            None => Cow::Owned(String::from_utf8_lossy(command).to_ascii_uppercase()),
        };
        metrics::counter!("errata_redis_calls_total", "call" => call.clone()).increment(1);
        call
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.link, Link::Cluster(_))
    }

    /// Every primary that holds keys: the server, or each cluster master.
    pub async fn primaries(&mut self) -> Result<Vec<Primary>, StoreError> {
        let Link::Cluster(conn) = &mut self.link else {
            return Ok(vec![Primary(None)]);
        };
        let nodes: String = bounded(::redis::cmd("CLUSTER").arg("NODES").query_async(conn)).await?;
        Ok(masters(&nodes)
            .into_iter()
            .map(|address| Primary(Some(address)))
            .collect())
    }

    /// Runs `cmd` on one primary (a keyless command such as `SCAN`, whose
    /// answer differs per node).
    pub async fn query_on<T: FromRedisValue>(
        &mut self,
        primary: &Primary,
        cmd: &Cmd,
    ) -> Result<T, StoreError> {
        match (&mut self.link, &primary.0) {
            (Link::Cluster(conn), Some((host, port))) => {
                Self::count_call(&self.scripts, cmd);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                let value = bounded(conn.route_command(cmd.clone(), routing)).await?;
                ::redis::from_redis_value(value)
                    .map_err(|e| StoreError::internal("redis: an unexpected answer", e))
            }
            _ => bounded(cmd.query_async(self)).await,
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let call = Self::count_call(&self.scripts, cmd);
        let answer = match &mut self.link {
            Link::Server(conn) => conn.req_packed_command(cmd),
            Link::Cluster(conn) => conn.req_packed_command(cmd),
        };
        timed(call, answer)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        metrics::counter!("errata_redis_calls_total", "call" => "pipeline").increment(1);
        let answer = match &mut self.link {
            Link::Server(conn) => conn.req_packed_commands(pipeline, offset, count),
            Link::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        };
        timed(Cow::Borrowed("pipeline"), answer)
    }

    fn get_db(&self) -> i64 {
        match &self.link {
            Link::Server(conn) => conn.get_db(),
            Link::Cluster(conn) => conn.get_db(),
        }
    }
}

/// The URLs of a comma-separated list (one for a single server).
fn cluster_nodes(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|node| !node.is_empty())
        .collect()
}

/// The masters in a `CLUSTER NODES` answer that are not failing:
/// `<id> <ip:port@cport[,hostname]> <flags> <master> … <slots>`.
fn masters(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = fields.nth(1)?;
            let flags = fields.next()?;
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master") || flags.iter().any(|f| f.starts_with("fail")) {
                return None;
            }
            let address = address.split(['@', ',']).next()?;
            let (host, port) = address.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_is_a_server_several_are_a_cluster() {
        assert_eq!(
            cluster_nodes("redis://127.0.0.1:6379"),
            ["redis://127.0.0.1:6379"]
        );
        assert_eq!(
            cluster_nodes("redis://a:1, redis://b:2,,redis://c:3"),
            ["redis://a:1", "redis://b:2", "redis://c:3"]
        );
    }

    #[test]
    fn the_masters_of_a_cluster_are_its_live_primaries() {
        let nodes = "\
07c3 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
67ed 127.0.0.1:30002@40002,host-b master - 0 1 2 connected 5461-10922
292f 127.0.0.1:30003@40003 master,fail - 0 1 3 connected
e7d1 127.0.0.1:30004@40004 slave 07c3 0 1 1 connected
6ec2 ::1:30005@40005 master - 0 1 4 connected 10923-16383
";
        assert_eq!(
            masters(nodes),
            [
                ("127.0.0.1".to_owned(), 30001),
                ("127.0.0.1".to_owned(), 30002),
                ("::1".to_owned(), 30005),
            ]
        );
    }
}
