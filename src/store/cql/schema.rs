//! `errata migrate` for the cql store: applies the files in `cql/`.

use scylla::client::session::Session;

use super::session::{cql_error, internal, StoreResult};
use crate::config::Config;
use crate::store::{Backend, StoreError};

/// The schema files, in the order they are applied.
const FILES: [(&str, &str); 5] = [
    (
        "001_keyspace.cql",
        include_str!("../../../cql/001_keyspace.cql"),
    ),
    (
        "002_tables.cql",
        include_str!("../../../cql/002_tables.cql"),
    ),
    (
        "003_practice.cql",
        include_str!("../../../cql/003_practice.cql"),
    ),
    (
        "004_sentences.cql",
        include_str!("../../../cql/004_sentences.cql"),
    ),
    (
        "005_memory.cql",
        include_str!("../../../cql/005_memory.cql"),
    ),
];

/// An `ALTER TABLE ks.table ADD column type` statement: its keyspace,
/// table and column, to run it only when the column is missing.
fn added_column(statement: &str) -> Option<(&str, &str, &str)> {
    let mut words = statement.split_whitespace();
    let alter =
        words.next()?.eq_ignore_ascii_case("ALTER") && words.next()?.eq_ignore_ascii_case("TABLE");
    let table = words.next()?;
    if !alter || !words.next()?.eq_ignore_ascii_case("ADD") {
        return None;
    }
    let column = words.next()?;
    let (keyspace, table) = table.split_once('.')?;
    Some((keyspace, table, column))
}

async fn column_exists(
    session: &Session,
    (keyspace, table, column): (&str, &str, &str),
) -> StoreResult<bool> {
    let rows = session
        .query_unpaged(
            "SELECT column_name FROM system_schema.columns \
             WHERE keyspace_name = ? AND table_name = ? AND column_name = ?",
            (keyspace, table, column),
        )
        .await
        .map_err(cql_error)?
        .into_rows_result()
        .map_err(internal)?;
    Ok(rows.rows_num() > 0)
}

/// Runs one statement of a schema file; an `ADD` of a column that exists
/// is skipped (and one that another migration added meanwhile is fine).
/// Returns whether it ran.
async fn apply(session: &Session, name: &str, statement: &str) -> StoreResult<bool> {
    let added = added_column(statement);
    if let Some(column) = added {
        if column_exists(session, column).await? {
            return Ok(false);
        }
    }
    match session.query_unpaged(statement, &[]).await {
        Ok(_) => Ok(true),
        Err(e) => match added {
            Some(column) if column_exists(session, column).await? => Ok(false),
            _ => Err(StoreError::internal(format!("{name}: {statement}"), e)),
        },
    }
}

/// A keyspace name must be a plain CQL identifier: it is put into statements.
pub fn check_keyspace(name: &str) -> StoreResult<()> {
    let valid = !name.is_empty()
        && name.len() <= 48
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if !valid {
        return Err(StoreError::Config(format!(
            "keyspace {name:?}: expected letters, digits and '_', starting with a letter"
        )));
    }
    Ok(())
}

/// The statements of one file: `--` comments dropped, split on ';'.
pub fn statements(text: &str) -> Vec<String> {
    let without_comments: String = text
        .lines()
        .map(|line| match line.find("--") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn succeeds(session: &Session, cql: &str) -> bool {
    session.query_unpaged(cql, &[]).await.is_ok()
}

/// The replication map for the keyspace.
async fn replication(session: &Session, config: &Config) -> StoreResult<String> {
    let factor = config.cql_replication_factor;
    if factor < 1 {
        return Err(StoreError::Config(
            "the replication factor must be at least 1".into(),
        ));
    }
    match config.cql_replication_strategy.as_str() {
        "SimpleStrategy" => Ok(format!(
            "{{'class': 'SimpleStrategy', 'replication_factor': {factor}}}"
        )),
        "NetworkTopologyStrategy" => {
            let mut centers: Vec<String> = Vec::new();
            for table in ["system.local", "system.peers"] {
                let rows = session
                    .query_unpaged(format!("SELECT data_center FROM {table}"), &[])
                    .await
                    .map_err(cql_error)?
                    .into_rows_result()
                    .map_err(internal)?;
                for row in rows.rows::<(Option<String>,)>().map_err(internal)? {
                    if let (Some(dc),) = row.map_err(internal)? {
                        if !centers.contains(&dc) {
                            centers.push(dc);
                        }
                    }
                }
            }
            if centers.is_empty() {
                return Err(StoreError::bug("the cluster reports no data center"));
            }
            let entries: Vec<String> = centers
                .iter()
                .map(|dc| format!("'{}': {factor}", dc.replace('\'', "''")))
                .collect();
            Ok(format!(
                "{{'class': 'NetworkTopologyStrategy', {}}}",
                entries.join(", ")
            ))
        }
        other => Err(StoreError::Config(format!(
            "replication strategy {other:?}: expected SimpleStrategy or NetworkTopologyStrategy"
        ))),
    }
}

/// Creates the keyspace and tables if missing; returns a line saying so.
pub async fn migrate(config: &Config) -> StoreResult<String> {
    check_keyspace(&config.cql_keyspace)?;
    let session = super::session::connect(config, None).await?;
    let replication = replication(&session, config).await?;
    // Only ScyllaDB has system.scylla_local, and only a ScyllaDB with
    // tablets has system.tablets; counters need tablets off there.
    let scylla = succeeds(&session, "SELECT key FROM system.scylla_local LIMIT 1").await;
    let tablets = scylla && succeeds(&session, "SELECT * FROM system.tablets LIMIT 1").await;
    let options = if tablets {
        "AND tablets = {'enabled': false}"
    } else {
        ""
    };
    let mut applied = 0;
    for (name, text) in FILES {
        let text = text
            .replace("{keyspace}", &config.cql_keyspace)
            .replace("{replication}", &replication)
            .replace("{options}", options);
        for statement in statements(&text) {
            if apply(&session, name, &statement).await? {
                applied += 1;
            }
        }
    }
    session
        .await_schema_agreement()
        .await
        .map_err(|e| StoreError::unavailable(Backend::Cql, "waiting for schema agreement", e))?;
    Ok(format!(
        "cql store: keyspace {} is up to date ({applied} statements, {}{})",
        config.cql_keyspace,
        if scylla { "ScyllaDB" } else { "Cassandra" },
        if tablets { ", tablets disabled" } else { "" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_split_and_comments_dropped() {
        let found = statements("-- a; comment\nCREATE x (a int); -- tail\n\n CREATE y;\n");
        assert_eq!(found, ["CREATE x (a int)", "CREATE y"]);
    }

    #[test]
    fn every_shipped_statement_is_idempotent() {
        for (name, text) in FILES {
            for statement in statements(text) {
                assert!(
                    statement.contains("IF NOT EXISTS") || added_column(&statement).is_some(),
                    "{name}: {statement} is not idempotent"
                );
            }
        }
    }

    #[test]
    fn added_columns_are_recognised() {
        assert_eq!(
            added_column("ALTER TABLE ks.error_events ADD correction text"),
            Some(("ks", "error_events", "correction"))
        );
        assert_eq!(added_column("ALTER TABLE ks.t WITH comment = 'x'"), None);
        assert_eq!(
            added_column("CREATE TABLE IF NOT EXISTS ks.t (a int)"),
            None
        );
    }

    #[test]
    fn keyspace_names_are_checked() {
        assert!(check_keyspace("errata_t1").is_ok());
        assert!(check_keyspace("1abc").is_err());
        assert!(check_keyspace("a; DROP").is_err());
        assert!(check_keyspace("").is_err());
    }
}
