//! A learner's data as a whole: erasing it (in the writer's transaction)
//! and reading it out page by page for an export.

use futures_util::stream::{self, StreamExt};
use r2d2::Pool;
use r2d2_sqlite::rusqlite::{params, Connection};
use r2d2_sqlite::SqliteConnectionManager;
use uuid::Uuid;

use super::connection::{from_micros, internal, uuid_column};
use super::reads::user_exists;
use crate::store::{
    Backend, Conversation, ExportPage, ExportPages, StoreError, StoredEvent, Utterance, EXPORT_PAGE,
};

/// Every table that holds rows of a learner, by its `user_id` column:
/// erasure deletes from each (a new table of learner data is one line
/// here). `users` is last, as its row is what says the learner exists.
const LEARNER_TABLES: &[&str] = &[
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

/// Where an export is: the section and the last key read in it.
enum Cursor {
    Conversations(String),
    Utterances(String),
    ErrorEvents(i64),
    Done,
}

/// The learner's conversations, utterances and error events, read a page
/// at a time (by key, each from an index on `user_id`) as the stream is
/// polled.
pub(super) fn export_pages(readers: Pool<SqliteConnectionManager>, user_id: Uuid) -> ExportPages {
    let start = Cursor::Conversations(String::new());
    stream::unfold(start, move |cursor| {
        let readers = readers.clone();
        async move {
            let conn = match readers.get() {
                Ok(conn) => conn,
                Err(e) => {
                    let e = StoreError::unavailable(Backend::Sqlite, "no database connection", e);
                    return Some((Err(e), Cursor::Done));
                }
            };
            next_page(&conn, user_id, cursor)
        }
    })
    .boxed()
}

/// The page at `cursor` and where the next one starts; empty sections are
/// skipped, `None` at the end.
fn next_page(
    conn: &Connection,
    user_id: Uuid,
    mut cursor: Cursor,
) -> Option<(Result<ExportPage, StoreError>, Cursor)> {
    loop {
        let read = match &cursor {
            Cursor::Conversations(after) => conversations(conn, user_id, after).map(|page| {
                let next = page.last().map(|c| c.conversation_id.to_string());
                (
                    next.map(Cursor::Conversations),
                    ExportPage::Conversations(page),
                )
            }),
            Cursor::Utterances(after) => utterances(conn, user_id, after).map(|page| {
                let next = page.last().map(|u| u.utterance_id.to_string());
                (next.map(Cursor::Utterances), ExportPage::Utterances(page))
            }),
            Cursor::ErrorEvents(after) => events(conn, user_id, *after).map(|page| {
                let next = page.last().and_then(|e| e.event_id.parse().ok());
                (next.map(Cursor::ErrorEvents), ExportPage::ErrorEvents(page))
            }),
            Cursor::Done => return None,
        };
        match read {
            Err(e) => return Some((Err(e), Cursor::Done)),
            Ok((Some(next), page)) => return Some((Ok(page), next)),
            // The section is over: the next one starts.
            Ok((None, _)) => {
                cursor = match cursor {
                    Cursor::Conversations(_) => Cursor::Utterances(String::new()),
                    Cursor::Utterances(_) => Cursor::ErrorEvents(0),
                    _ => Cursor::Done,
                }
            }
        }
    }
}

fn conversations(
    conn: &Connection,
    user_id: Uuid,
    after: &str,
) -> Result<Vec<Conversation>, StoreError> {
    conn.prepare_cached(
        "SELECT conversation_id, started_at FROM conversations
         WHERE user_id = ?1 AND conversation_id > ?2 ORDER BY conversation_id LIMIT ?3",
    )
    .and_then(|mut s| {
        s.query_map(
            params![user_id.to_string(), after, EXPORT_PAGE as i64],
            |r| {
                Ok(Conversation {
                    conversation_id: uuid_column(r, 0)?,
                    user_id,
                    started_at: from_micros(r.get(1)?),
                })
            },
        )?
        .collect()
    })
    .map_err(internal)
}

fn utterances(conn: &Connection, user_id: Uuid, after: &str) -> Result<Vec<Utterance>, StoreError> {
    conn.prepare_cached(
        "SELECT utterance_id, conversation_id, content, created_at FROM utterances
         WHERE user_id = ?1 AND utterance_id > ?2 ORDER BY utterance_id LIMIT ?3",
    )
    .and_then(|mut s| {
        s.query_map(
            params![user_id.to_string(), after, EXPORT_PAGE as i64],
            |r| {
                Ok(Utterance {
                    utterance_id: uuid_column(r, 0)?,
                    conversation_id: uuid_column(r, 1)?,
                    user_id,
                    content: r.get(2)?,
                    created_at: from_micros(r.get(3)?),
                })
            },
        )?
        .collect()
    })
    .map_err(internal)
}

fn events(conn: &Connection, user_id: Uuid, after: i64) -> Result<Vec<StoredEvent>, StoreError> {
    conn.prepare_cached(
        "SELECT event_id, conversation_id, utterance_id, category, subcategory, occurred_at,
                correction, explanation
         FROM error_events WHERE user_id = ?1 AND event_id > ?2 ORDER BY event_id LIMIT ?3",
    )
    .and_then(|mut s| {
        s.query_map(
            params![user_id.to_string(), after, EXPORT_PAGE as i64],
            |r| {
                Ok(StoredEvent {
                    event_id: r.get::<_, i64>(0)?.to_string(),
                    conversation_id: uuid_column(r, 1)?,
                    utterance_id: uuid_column(r, 2)?,
                    category: r.get(3)?,
                    subcategory: r.get(4)?,
                    occurred_at: from_micros(r.get(5)?),
                    snippet: None,
                    correction: r.get(6)?,
                    explanation: r.get(7)?,
                })
            },
        )?
        .collect()
    })
    .map_err(internal)
}
