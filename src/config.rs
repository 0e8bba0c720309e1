//! Configuration: every setting is an environment variable and also a flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

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

    /// Cql mode: the Redis write-behind buffer.
    #[arg(
        long,
        env = "ERRATA_REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        global = true
    )]
    pub redis_url: String,

    /// Cql mode: how often the flusher drains Redis, in milliseconds.
    #[arg(
        long,
        env = "ERRATA_FLUSH_INTERVAL_MS",
        default_value_t = 1000,
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
