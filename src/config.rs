//! Configuration: every setting is an environment variable and also a flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::store::policy::FLUSH_INTERVAL_MS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// SQLite file on this machine, no setup.
    Embedded,
    /// ScyllaDB or Apache Cassandra, with Redis as the write-behind buffer.
    Cql,
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(
        long,
        env = "ERRATA_BIND",
        default_value = "127.0.0.1:8000",
        global = true
    )]
    pub bind: SocketAddr,

    /// Storage backend.
    #[arg(
        long,
        env = "ERRATA_STORE",
        value_enum,
        default_value = "embedded",
        global = true
    )]
    pub store: StoreKind,

    /// Embedded mode: the folder holding the SQLite file.
    #[arg(long, env = "ERRATA_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,

    /// Cql mode: contact points, comma-separated host:port.
    #[arg(
        long,
        env = "ERRATA_CQL_NODES",
        default_value = "127.0.0.1:9042",
        value_delimiter = ',',
        global = true
    )]
    pub cql_nodes: Vec<String>,

    /// Cql mode: keyspace.
    #[arg(
        long,
        env = "ERRATA_CQL_KEYSPACE",
        default_value = "errata",
        global = true
    )]
    pub cql_keyspace: String,

    /// Cql mode, `errata migrate`: the keyspace's replication strategy,
    /// `SimpleStrategy` or `NetworkTopologyStrategy` (then every data center
    /// the cluster reports gets the replication factor).
    #[arg(
        long,
        env = "ERRATA_CQL_REPLICATION_STRATEGY",
        default_value = "SimpleStrategy",
        global = true
    )]
    pub cql_replication_strategy: String,

    /// Cql mode, `errata migrate`: the keyspace's replication factor.
    #[arg(
        long,
        env = "ERRATA_CQL_REPLICATION_FACTOR",
        default_value_t = 1,
        global = true
    )]
    pub cql_replication_factor: u32,

    /// Cql mode: the consistency level of every read and write (`ONE`,
    /// `LOCAL_ONE`, `QUORUM`, `LOCAL_QUORUM`, `EACH_QUORUM`, `ALL`);
    /// lightweight transactions run at `LOCAL_SERIAL`.
    #[arg(
        long,
        env = "ERRATA_CQL_CONSISTENCY",
        default_value = "LOCAL_QUORUM",
        global = true
    )]
    pub cql_consistency: String,

    /// Cql mode: the local data center. When set, requests go to its nodes
    /// first (others only when none of them can serve); unset, every node
    /// is used.
    #[arg(long, env = "ERRATA_CQL_LOCAL_DC", global = true)]
    pub cql_local_dc: Option<String>,

    /// Cql mode: the Redis write-behind buffer (a comma-separated list of
    /// URLs: the nodes of a Redis Cluster).
    #[arg(
        long,
        env = "ERRATA_REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        global = true
    )]
    pub redis_url: String,

    /// Cql mode: how many Redis replicas must have a write before errata
    /// acknowledges what it records (Redis `WAIT` after each commit, on the
    /// learner's master); fewer within 1 s and the request answers 503.
    /// 0: no wait, and a failover to a lagging replica may lose
    /// acknowledged counts and deduplication markers.
    #[arg(
        long,
        env = "ERRATA_REDIS_MIN_REPLICAS",
        default_value_t = 0,
        global = true
    )]
    pub redis_min_replicas: u32,

    /// Cql mode: how often the flusher drains Redis, in milliseconds.
    #[arg(
        long,
        env = "ERRATA_FLUSH_INTERVAL_MS",
        default_value_t = FLUSH_INTERVAL_MS,
        global = true
    )]
    pub flush_interval_ms: u64,

    /// Comma-separated bearer tokens; unset means no authentication.
    #[arg(
        long,
        env = "ERRATA_API_TOKENS",
        value_delimiter = ',',
        hide_env_values = true,
        global = true
    )]
    pub api_tokens: Vec<String>,
}

/// The defaults of every setting, as the command line has them (for
/// embedding errata and for tests, which override what they need).
impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
            store: StoreKind::Embedded,
            data_dir: PathBuf::from("./data"),
            cql_nodes: vec!["127.0.0.1:9042".into()],
            cql_keyspace: "errata".into(),
            cql_replication_strategy: "SimpleStrategy".into(),
            cql_replication_factor: 1,
            cql_consistency: "LOCAL_QUORUM".into(),
            cql_local_dc: None,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_min_replicas: 0,
            flush_interval_ms: FLUSH_INTERVAL_MS,
            api_tokens: Vec::new(),
        }
    }
}

impl Config {
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms.max(1))
    }

    /// The configured tokens, blanks dropped; empty means no authentication.
    pub fn tokens(&self) -> Vec<String> {
        self.api_tokens
            .iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn the_defaults_are_the_command_lines() {
        let vars: Vec<String> = std::env::vars()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with("ERRATA_"))
            .collect();
        if !vars.is_empty() {
            // The command line would read them; the defaults do not.
            eprintln!("skipping the comparison of defaults: {vars:?} set");
            return;
        }
        let parsed = Cli::parse_from(["errata"]).config;
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Config::default()));
    }
}
