//! What errata's tests share, so that each piece is written once:
//!
//! - [`app`]: errata in-process on port 0 ([`TestApp`]), on the store
//!   `ERRATA_TEST_STORE` names or the one a test asks for;
//! - [`process`]: the real `errata` binary run as a command or as an
//!   `errata serve` replica ([`Errata`], [`ServeProcess`]);
//! - [`http`]: one HTTP client ([`Api`]) for either, and the assertions on
//!   its answers;
//! - [`config`]: the configuration every test starts from;
//! - [`redis_server`]: a `redis-server` child process per test, or
//!   [`redis_cluster`]: a Redis Cluster of three ([`TestRedis`] is either);
//! - [`cql`]: the CQL server of `ERRATA_TEST_CQL`, its test keyspaces and
//!   what is stored in them;
//! - [`fault_proxy`]: a TCP forwarder that breaks connections;
//! - [`monitoring`]: what the alert rules and the dashboard name, and
//!   whether a scrape of `/metrics` exports it;
//! - [`rng`]: a seeded generator and the seed of a run.
//!
//! A test crate uses it as `use errata_testkit as support;`.

pub mod app;
pub mod config;
pub mod cql;
pub mod fault_proxy;
pub mod http;
pub mod monitoring;
pub mod process;
pub mod redis_cluster;
pub mod redis_server;
pub mod rng;

pub use app::{spawn_app, spawn_app_with, TestApp};
pub use config::{cql_config, cql_config_on, test_config};
pub use cql::{
    cql_node, cql_session, durable_counts, durable_counts_in, event_counts, learner_rows,
    KeyspaceSlot,
};
pub use fault_proxy::FaultProxy;
pub use http::{
    case_folded, counts_in, expect_detail, expect_invalid, expect_status, id,
    record_until_acknowledged, report, Api, Counts, Learner,
};
pub use process::{Errata, ServeProcess};
pub use redis_cluster::RedisCluster;
pub use redis_server::{
    dirty_sets_holding, key_slot, learner_keys, redis_keys, RedisServer, TestRedis,
};
pub use rng::{seed, seed_or, Rng};
