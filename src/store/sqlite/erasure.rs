//! Erasing a learner, in the writer's transaction: every row of theirs,
//! from every table.

use r2d2_sqlite::rusqlite::Connection;
use uuid::Uuid;

use super::connection::internal;
use super::lookups::user_exists;
use crate::store::StoreError;

/// Every table that holds rows of a learner, by its `user_id` column:
/// erasure deletes from each (a new table of learner data is one line
/// here). `users` is last, as its row is what says the learner exists.
const LEARNER_TABLES: &[&str] = &[
    "answers",
    "memory",
    "error_events",
    "error_counts",
    "error_counts_by_week",
    "ingest_requests",
    "utterances",
    "conversations",
    "users",
];

/// Deletes every row of the learner; `UserNotFound` when there is none.
/// Runs in one request's savepoint of the writer's transaction, so a
/// request racing it either committed before (and is erased with the
/// rest) or comes after and finds no learner.
pub(super) fn erase(tx: &Connection, user_id: Uuid) -> Result<(), StoreError> {
    if !user_exists(tx, user_id)? {
        return Err(StoreError::UserNotFound);
    }
    let user_id = user_id.to_string();
    for table in LEARNER_TABLES {
        tx.prepare_cached(&format!("DELETE FROM {table} WHERE user_id = ?1"))
            .and_then(|mut s| s.execute([&user_id]))
            .map_err(internal)?;
    }
    Ok(())
}
