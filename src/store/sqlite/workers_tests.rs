//! The store's workers and its hold on the data directory: listed while
//! they run, joined by `shutdown` and by a drop, one store per directory.

use super::connection::DATABASE_FILE;
use super::tests::{one_learner_with_a_sentence, point, record, OneLearner};
use super::SqliteStore;
use crate::store::{Store, StoreError};

/// A clean shutdown stops the writer and leaves the WAL folded into the
/// database: the -wal file is empty (or gone), later writes are refused,
/// and the store opened again reads everything that was written.
#[tokio::test]
async fn shutdown_folds_the_wal_into_the_database() {
    let OneLearner {
        dir,
        store,
        al,
        said,
    } = one_learner_with_a_sentence().await;
    for n in 0..50 {
        record(&store, al, said, vec![point(n), point(n + 1)]).await;
    }
    // A reader that has read stays open past the shutdown, which keeps
    // SQLite from folding the WAL in as the writer's connection closes.
    assert_eq!(store.frequencies(al.0).await.unwrap().total(), 100);
    let wal = dir.path().join(format!("{DATABASE_FILE}-wal"));
    let wal_size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert!(
        wal_size() > 0,
        "the WAL is empty already: the test proves nothing"
    );

    store.shutdown().await.unwrap();
    assert_eq!(wal_size(), 0, "the WAL was left holding data");
    assert!(store.create_conversation(al.0).await.is_err());
    assert!(store.check_ready().await.is_err());
    // A second shutdown has nothing left to stop.
    store.shutdown().await.unwrap();

    drop(store);
    let again = SqliteStore::open(dir.path()).await.unwrap();
    assert_eq!(again.frequencies(al.0).await.unwrap().total(), 100);
}

/// The store reports the workers whose threads run: all three while it is
/// open, none once `shutdown` has joined them.
#[tokio::test]
async fn workers_are_listed_while_running_and_none_after_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let mut running = store.workers();
    running.sort_unstable();
    assert_eq!(running, ["checkpointer", "expirer", "writer"]);
    store.shutdown().await.unwrap();
    assert_eq!(store.workers(), Vec::<&str>::new());
}

/// A store dropped without `shutdown` still stops its workers and waits
/// for them before the drop returns: the WAL is already folded in (only
/// the stopped workers do that while another connection stays open), and
/// the data directory opens again at once.
#[tokio::test]
async fn dropping_the_store_stops_and_joins_its_workers() {
    let OneLearner {
        dir,
        store,
        al,
        said,
    } = one_learner_with_a_sentence().await;
    for n in 0..50 {
        record(&store, al, said, vec![point(n), point(n + 1)]).await;
    }
    // A connection of its own that has read keeps SQLite from folding the
    // WAL in when the store's last connection closes.
    let path = dir.path().join(DATABASE_FILE);
    let outside = r2d2_sqlite::rusqlite::Connection::open(&path).unwrap();
    let counted: i64 = outside
        .query_row("SELECT sum(frequency) FROM error_counts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(counted, 100);
    let wal = dir.path().join(format!("{DATABASE_FILE}-wal"));
    let wal_size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert!(
        wal_size() > 0,
        "the WAL is empty already: the test proves nothing"
    );

    drop(store);
    assert_eq!(wal_size(), 0, "the workers were still running after drop");
    let again = SqliteStore::open(dir.path()).await.unwrap();
    assert_eq!(again.frequencies(al.0).await.unwrap().total(), 100);
    assert_eq!(again.workers().len(), 3);
}

/// Two processes on one data directory would each keep answers the
/// other's writes made stale: the second is refused, with the reason.
#[tokio::test]
async fn one_store_per_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let first = SqliteStore::open(dir.path()).await.unwrap();
    let second = SqliteStore::open(dir.path()).await;
    match second {
        Err(e @ StoreError::Unavailable { .. }) => {
            let reason = e.to_string();
            assert!(reason.contains("another errata process"), "{reason}")
        }
        other => panic!("a second store opened: {:?}", other.err()),
    }
    drop(first);
    SqliteStore::open(dir.path()).await.unwrap();
}
