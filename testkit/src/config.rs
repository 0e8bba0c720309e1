//! The configuration every test starts from; a test changes only the
//! fields it is about (`Config { flush_interval_ms: 20, ..config }`).

use std::path::Path;

use errata::config::{Config, StoreKind};

use crate::cql::{cql_node, take_keyspace, KeyspaceSlot};

/// The embedded store in `data_dir`, listening on a free port, flushing
/// every 50 ms (where there is a buffer to flush).
pub fn test_config(data_dir: &Path) -> Config {
    Config {
        data_dir: data_dir.to_owned(),
        ..base()
    }
}

fn base() -> Config {
    Config {
        bind: "127.0.0.1:0".parse().expect("an address"),
        flush_interval_ms: 50,
        ..Config::default()
    }
}

/// The cql store on these nodes and keyspace with this Redis; otherwise
/// as [`test_config`].
pub fn cql_config_on(nodes: Vec<String>, keyspace: &str, redis_url: &str) -> Config {
    Config {
        store: StoreKind::Cql,
        cql_nodes: nodes,
        cql_keyspace: keyspace.to_owned(),
        redis_url: redis_url.to_owned(),
        ..base()
    }
}

/// A cql-mode configuration on a keyspace of this run (held until the slot
/// is dropped) on the CQL server of `ERRATA_TEST_CQL`, with this Redis.
pub async fn cql_config(redis_url: &str) -> (Config, KeyspaceSlot) {
    let slot = take_keyspace().await;
    let config = cql_config_on(vec![cql_node()], &slot.keyspace, redis_url);
    (config, slot)
}
