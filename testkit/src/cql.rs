//! The CQL server named by `ERRATA_TEST_CQL`, in one keyspace per running
//! test (migrated once, whichever test process gets there first), and what
//! the tests read from it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use uuid::Uuid;

use crate::config::cql_config_on;

/// (category_key, subcategory_key) → n, as stored.
type Stored = BTreeMap<(String, String), i64>;

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

#[allow(clippy::incompatible_msrv)] // File::try_lock: tests run on a newer toolchain
pub(crate) async fn take_keyspace() -> KeyspaceSlot {
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
    let config = cql_config_on(vec![cql_node()], keyspace, "");
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
    let session = cql_session().await;
    let emails: Vec<(String,)> = rows(
        &session,
        format!("SELECT email_key FROM {keyspace}.users_by_email"),
        (),
    )
    .await;
    let delete = session
        .prepare(format!(
            "DELETE FROM {keyspace}.users_by_email WHERE email_key = ?"
        ))
        .await
        .expect("preparing the delete");
    for email in emails {
        session
            .execute_unpaged(&delete, email)
            .await
            .expect("releasing an e-mail claim");
    }
}

/// The rows of one unpaged query.
async fn rows<T>(
    session: &Session,
    statement: impl Into<scylla::statement::unprepared::Statement>,
    values: impl scylla::serialize::row::SerializeRow,
) -> Vec<T>
where
    T: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
{
    session
        .query_unpaged(statement, values)
        .await
        .expect("a CQL query")
        .into_rows_result()
        .expect("rows")
        .rows::<T>()
        .expect("rows of the expected types")
        .map(|r| r.expect("a row"))
        .collect()
}

/// A CQL session on the test server, for checking what is stored.
pub async fn cql_session() -> Session {
    SessionBuilder::new()
        .known_node(cql_node())
        .build()
        .await
        .expect("a CQL session")
}

/// The learner's durable counters, as (category_key, subcategory_key) → n.
pub async fn durable_counts(keyspace: &str, user_id: Uuid) -> Stored {
    durable_counts_in(&cql_session().await, keyspace, user_id).await
}

/// The same through `session`, read at consistency ALL (every replica
/// agrees, so a count is never read from one that missed a write).
pub async fn durable_counts_in(session: &Session, keyspace: &str, user_id: Uuid) -> Stored {
    let mut statement = scylla::statement::unprepared::Statement::new(format!(
        "SELECT category_key, subcategory_key, frequency FROM {keyspace}.error_counts \
         WHERE user_id = ?"
    ));
    statement.set_consistency(scylla::statement::Consistency::All);
    let counters: Vec<(String, String, scylla::value::Counter)> =
        rows(session, statement, (user_id,)).await;
    counters
        .into_iter()
        .map(|(c, s, n)| ((c, s), n.0))
        .collect()
}

/// How many events of each error (category_key, subcategory_key) the
/// learner's log holds, over every month bucket.
pub async fn event_counts(keyspace: &str, user_id: Uuid) -> Stored {
    let session = cql_session().await;
    let buckets: Vec<(i32,)> = rows(
        &session,
        format!("SELECT bucket FROM {keyspace}.error_buckets WHERE user_id = ?"),
        (user_id,),
    )
    .await;
    let mut statement = scylla::statement::Statement::new(format!(
        "SELECT category_key, subcategory_key FROM {keyspace}.error_events \
         WHERE user_id = ? AND bucket = ?"
    ));
    statement.set_page_size(5000);
    let mut counts = BTreeMap::new();
    for (bucket,) in buckets {
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

/// Every row the learner still has, as (table, rows), over every table of
/// `keyspace` whose partition key holds `user_id` (found in the schema, so
/// a table added later is covered) and the e-mail claim `email_key`. A
/// partition key with more parts (a month bucket) is searched with
/// `ALLOW FILTERING`: a test keyspace is small. Empty once the learner is
/// erased.
pub async fn learner_rows(
    session: &Session,
    keyspace: &str,
    user_id: Uuid,
    email_key: &str,
) -> Vec<(String, usize)> {
    let columns: Vec<(String, String, String)> = rows(
        session,
        "SELECT table_name, column_name, kind FROM system_schema.columns \
         WHERE keyspace_name = ?",
        (keyspace,),
    )
    .await;
    let mut partition_parts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (table, column, kind) in columns {
        if kind == "partition_key" {
            partition_parts.entry(table).or_default().push(column);
        }
    }
    let mut left = Vec::new();
    for (table, parts) in &partition_parts {
        if !parts.iter().any(|c| c == "user_id") {
            continue;
        }
        let filtering = if parts.len() > 1 {
            " ALLOW FILTERING"
        } else {
            ""
        };
        let mut statement = scylla::statement::Statement::new(format!(
            "SELECT user_id FROM {keyspace}.{table} WHERE user_id = ?{filtering}"
        ));
        statement.set_consistency(scylla::statement::Consistency::All);
        let found: Vec<(Uuid,)> = rows(session, statement, (user_id,)).await;
        if !found.is_empty() {
            left.push((table.clone(), found.len()));
        }
    }
    let claims: Vec<(Uuid,)> = rows(
        session,
        format!("SELECT user_id FROM {keyspace}.users_by_email WHERE email_key = ?"),
        (email_key,),
    )
    .await;
    if !claims.is_empty() {
        left.push(("users_by_email".to_owned(), claims.len()));
    }
    left
}
