//! The lookups both sides need: reads answer with them, and the writes
//! check with them, in the writer's transaction, that what a request names
//! exists and belongs together.

use r2d2_sqlite::rusqlite::{Connection, OptionalExtension};
use uuid::Uuid;

use super::columns::uuid_column;
use super::connection::internal;
use super::rows::{user_columns, UserRow};
use crate::store::{StoreError, User};

pub(super) fn user(conn: &Connection, user_id: Uuid) -> Result<Option<User>, StoreError> {
    conn.prepare_cached(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users WHERE user_id = ?1"
    ))
    .and_then(|mut s| {
        s.query_row([user_id.to_string()], UserRow::from_row)
            .optional()
    })
    .map(|row| row.map(User::from))
    .map_err(internal)
}

pub(super) fn user_exists(conn: &Connection, user_id: Uuid) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT 1 FROM users WHERE user_id = ?1")
        .and_then(|mut s| s.exists([user_id.to_string()]))
        .map_err(internal)
}

/// The learner holding the e-mail (by its key), if any.
pub(super) fn email_holder(conn: &Connection, email_key: &str) -> Result<Option<Uuid>, StoreError> {
    conn.prepare_cached("SELECT user_id FROM users WHERE email_key = ?1")
        .and_then(|mut s| s.query_row([email_key], |r| uuid_column(r, 0)).optional())
        .map_err(internal)
}

pub(super) fn conversation_owner(
    conn: &Connection,
    conversation_id: Uuid,
) -> Result<Option<Uuid>, StoreError> {
    conn.prepare_cached("SELECT user_id FROM conversations WHERE conversation_id = ?1")
        .and_then(|mut s| {
            s.query_row([conversation_id.to_string()], |r| uuid_column(r, 0))
                .optional()
        })
        .map_err(internal)
}

/// The (conversation, learner) an utterance was said in, if it exists.
pub(super) fn utterance_place(
    conn: &Connection,
    utterance_id: Uuid,
) -> Result<Option<(Uuid, Uuid)>, StoreError> {
    conn.prepare_cached("SELECT conversation_id, user_id FROM utterances WHERE utterance_id = ?1")
        .and_then(|mut s| {
            s.query_row([utterance_id.to_string()], |r| {
                Ok((uuid_column(r, 0)?, uuid_column(r, 1)?))
            })
            .optional()
        })
        .map_err(internal)
}
