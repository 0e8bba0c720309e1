//! The schema as an operator sees it: `scripts/cassandra cqlsh` against the
//! CQL server of `ERRATA_TEST_CQL`, on a keyspace `errata migrate` made.

use std::process::Command;

use errata_testkit::{cql_config, cql_node, Errata, RedisServer};

const ERRATA: Errata = Errata::at(env!("CARGO_BIN_EXE_errata"));

fn cqlsh(statement: &str) -> String {
    let node = cql_node();
    // scripts/cassandra's cqlsh reaches 127.0.0.1 on ERRATA_CASSANDRA_PORT.
    let port = node
        .rsplit_once(':')
        .expect("ERRATA_TEST_CQL is host:port")
        .1;
    let output = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cassandra"))
        .env("ERRATA_CASSANDRA_PORT", port)
        .args(["cqlsh", "-e", statement])
        .output()
        .expect("scripts/cassandra runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "cqlsh -e {statement:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn squeezed(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test]
async fn describe_shows_the_counter_table_partitioned_by_learner() {
    let redis = RedisServer::start();
    let (config, slot) = cql_config(&redis.url()).await;
    // Migrating again changes nothing and says so.
    let again = ERRATA.run(&config, &["migrate"]);
    assert!(again.contains("up to date"), "{again}");

    let table = squeezed(&cqlsh(&format!(
        "DESCRIBE TABLE {}.error_counts",
        slot.keyspace
    )));
    assert!(
        table.contains(&format!("CREATE TABLE {}.error_counts", slot.keyspace)),
        "{table}"
    );
    assert!(table.contains("frequency counter"), "{table}");
    assert!(
        table.contains("PRIMARY KEY (user_id, category_key, subcategory_key)"),
        "{table}"
    );

    let keyspace = squeezed(&cqlsh(&format!("DESCRIBE KEYSPACE {}", slot.keyspace)));
    for name in [
        "users",
        "users_by_email",
        "conversations",
        "utterances",
        "error_events",
    ] {
        assert!(
            keyspace.contains(&format!("CREATE TABLE {}.{name} ", slot.keyspace)),
            "{name} missing: {keyspace}"
        );
    }
    assert!(
        keyspace.contains("PRIMARY KEY ((user_id, bucket), occurred_at, event_id)"),
        "{keyspace}"
    );
}
