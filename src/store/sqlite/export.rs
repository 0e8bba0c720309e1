//! A learner's export: their conversations, utterances and error events,
//! read page by page as the export is written.

use futures_util::stream::{self, StreamExt};
use r2d2::Pool;
use r2d2_sqlite::rusqlite::{params, Connection};
use r2d2_sqlite::SqliteConnectionManager;
use uuid::Uuid;

use super::connection::internal;
use super::rows::{
    conversation_columns, event_columns, utterance_columns, ConversationRow, EventRow, UtteranceRow,
};
use crate::store::{
    Backend, Conversation, ExportPage, ExportPages, StoreError, StoredEvent, Utterance, EXPORT_PAGE,
};

/// Where an export is: the section and the last key read in it.
enum Cursor {
    Conversations(String),
    Utterances(String),
    ErrorEvents(i64),
    Reviews(String),
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
            Cursor::Reviews(after) => {
                super::memory::reviews_page(conn, user_id, after, EXPORT_PAGE).map(|page| {
                    let next = page.last().map(|r| r.review_id.to_string());
                    (next.map(Cursor::Reviews), ExportPage::Reviews(page))
                })
            }
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
                    Cursor::ErrorEvents(_) => Cursor::Reviews(String::new()),
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
    conn.prepare_cached(concat!(
        "SELECT ",
        conversation_columns!(),
        " FROM conversations
         WHERE user_id = ?1 AND conversation_id > ?2 ORDER BY conversation_id LIMIT ?3"
    ))
    .and_then(|mut s| {
        s.query_map(
            params![user_id.to_string(), after, EXPORT_PAGE as i64],
            ConversationRow::from_row,
        )?
        .map(|row| row.map(Conversation::from))
        .collect()
    })
    .map_err(internal)
}

fn utterances(conn: &Connection, user_id: Uuid, after: &str) -> Result<Vec<Utterance>, StoreError> {
    conn.prepare_cached(concat!(
        "SELECT ",
        utterance_columns!(),
        " FROM utterances
         WHERE user_id = ?1 AND utterance_id > ?2 ORDER BY utterance_id LIMIT ?3"
    ))
    .and_then(|mut s| {
        s.query_map(
            params![user_id.to_string(), after, EXPORT_PAGE as i64],
            UtteranceRow::from_row,
        )?
        .map(|row| row.map(Utterance::from))
        .collect()
    })
    .map_err(internal)
}

fn events(conn: &Connection, user_id: Uuid, after: i64) -> Result<Vec<StoredEvent>, StoreError> {
    conn.prepare_cached(concat!(
        "SELECT ",
        event_columns!(),
        " FROM error_events WHERE user_id = ?1 AND event_id > ?2 ORDER BY event_id LIMIT ?3"
    ))
    .and_then(|mut s| {
        s.query_map(
            params![user_id.to_string(), after, EXPORT_PAGE as i64],
            EventRow::from_row,
        )?
        .map(|row| row.map(StoredEvent::from))
        .collect()
    })
    .map_err(internal)
}
