//! The read SQL. Reads run on a pooled read-only connection and, thanks to
//! WAL, never wait for the writer; the lookups the writes need too
//! (`user_exists`, `conversation_owner`) run in the writer's transaction.

use std::collections::HashMap;

use r2d2_sqlite::rusqlite::{self, params, CachedStatement, Connection, OptionalExtension};
use uuid::Uuid;

use chrono::NaiveDate;

use super::connection::{from_micros, internal, uuid_column};
use super::writes::week_text;
use crate::domain::{Correction, ErrorFrequency, ErrorKey, FrequencyTable, WeekCount};
use crate::store::sentences::SentencePicker;
use crate::store::{
    Backend, PracticeInputs, PracticeQuery, RecentError, StoreError, User, WeeklyHistory,
};

pub(super) fn user(conn: &Connection, user_id: Uuid) -> Result<Option<User>, StoreError> {
    conn.prepare_cached("SELECT username, email, created_at FROM users WHERE user_id = ?1")
        .and_then(|mut s| {
            s.query_row([user_id.to_string()], |r| {
                Ok(User {
                    user_id,
                    username: r.get(0)?,
                    email: r.get(1)?,
                    created_at: from_micros(r.get(2)?),
                })
            })
            .optional()
        })
        .map_err(internal)
}

pub(super) fn user_exists(conn: &Connection, user_id: Uuid) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT 1 FROM users WHERE user_id = ?1")
        .and_then(|mut s| s.exists([user_id.to_string()]))
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

/// Every error count of the learner; `UserNotFound` for an unknown one.
pub(super) fn frequencies(conn: &Connection, user_id: Uuid) -> Result<FrequencyTable, StoreError> {
    let table: FrequencyTable = conn
        .prepare_cached(
            "SELECT category_key, subcategory_key, category, subcategory, frequency, last_seen
             FROM error_counts WHERE user_id = ?1",
        )
        .and_then(|mut s| s.query_map([user_id.to_string()], frequency_row)?.collect())
        .map_err(internal)?;
    if table.is_empty() && !user_exists(conn, user_id)? {
        return Err(StoreError::UserNotFound);
    }
    Ok(table)
}

/// The learner's `n` most frequent errors, in the order of
/// `FrequencyTable::top` (frequency, then the latest, then the key; keys
/// compare as bytes in both), ranked by SQLite so that only those are decoded.
fn top(conn: &Connection, user_id: Uuid, n: usize) -> Result<Vec<ErrorFrequency>, StoreError> {
    conn.prepare_cached(
        "SELECT category_key, subcategory_key, category, subcategory, frequency, last_seen
         FROM error_counts WHERE user_id = ?1 AND frequency > 0
         ORDER BY frequency DESC, last_seen DESC, category_key, subcategory_key
         LIMIT ?2",
    )
    .and_then(|mut s| {
        s.query_map(params![user_id.to_string(), n as i64], frequency_row)?
            .collect()
    })
    .map_err(internal)
}

/// An `error_counts` row selected as (category_key, subcategory_key,
/// category, subcategory, frequency, last_seen).
fn frequency_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ErrorFrequency> {
    Ok(ErrorFrequency {
        key: ErrorKey {
            category: r.get(0)?,
            subcategory: r.get(1)?,
        },
        category: r.get(2)?,
        subcategory: r.get(3)?,
        frequency: r.get(4)?,
        last_seen: Some(from_micros(r.get(5)?)),
    })
}

/// The learner's all-time counts and their weekly counts from `since` on.
pub(super) fn weekly_history(
    conn: &Connection,
    user_id: Uuid,
    since: NaiveDate,
) -> Result<WeeklyHistory, StoreError> {
    let table = frequencies(conn, user_id)?;
    let mut weeks = Vec::new();
    let mut rows = conn
        .prepare_cached(
            "SELECT week_start, category_key, subcategory_key, frequency
             FROM error_counts_by_week WHERE user_id = ?1 AND week_start >= ?2",
        )
        .map_err(internal)?;
    let mut rows = rows
        .query(params![user_id.to_string(), week_text(since)])
        .map_err(internal)?;
    while let Some(r) = rows.next().map_err(internal)? {
        let week = NaiveDate::parse_from_str(str_column(r, 0)?, "%Y-%m-%d").map_err(internal)?;
        weeks.push(WeekCount {
            week_start: week,
            key: ErrorKey {
                category: r.get(1).map_err(internal)?,
                subcategory: r.get(2).map_err(internal)?,
            },
            count: r.get(3).map_err(internal)?,
        });
    }
    Ok(WeeklyHistory { table, weeks })
}

/// The practice inputs in one read: the top errors (by the counts, or by
/// the weekly counts for recency), then the corrected events among the
/// learner's latest `window`, from their partial index, newest first,
/// comparing keys in place and stopping as soon as every top error has its
/// sentences. Only the
/// events that may add a sentence are decoded, and each utterance's text is
/// looked up once.
pub(super) fn practice_inputs(
    conn: &Connection,
    user_id: Uuid,
    query: PracticeQuery,
) -> Result<PracticeInputs, StoreError> {
    let (top, scores) = match query.rank.since() {
        None => (top(conn, user_id, query.top_n)?, Vec::new()),
        Some(since) => weekly_history(conn, user_id, since)?.top(query.rank, query.top_n),
    };
    if top.is_empty() {
        if !user_exists(conn, user_id)? {
            return Err(StoreError::UserNotFound);
        }
        return Ok(PracticeInputs::default());
    }
    let mut picker = SentencePicker::new(top, query.sentences_per_error);
    let oldest = oldest_in_window(conn, user_id, query.window)?;
    let mut texts = UtteranceTexts::new(conn)?;
    let mut correction = conn
        .prepare_cached("SELECT correction, explanation FROM error_events WHERE event_id = ?1")
        .map_err(internal)?;
    let mut events = conn
        .prepare_cached(
            "SELECT category_key, subcategory_key, utterance_id, event_id
             FROM error_events INDEXED BY error_events_corrected
             WHERE user_id = ?1 AND correction IS NOT NULL AND event_id >= ?2
             ORDER BY event_id DESC",
        )
        .map_err(internal)?;
    let mut rows = events
        .query(params![user_id.to_string(), oldest])
        .map_err(internal)?;
    while !picker.is_done() {
        let Some(r) = rows.next().map_err(internal)? else {
            break;
        };
        let key = (str_column(r, 0)?, str_column(r, 1)?);
        let Some(i) = picker.wants(key.0, key.1) else {
            continue;
        };
        let utterance_id = uuid_column(r, 2).map_err(internal)?;
        let event_id: i64 = r.get(3).map_err(internal)?;
        let proposed = correction
            .query_row([event_id], |c| {
                Ok(Correction {
                    text: c.get(0)?,
                    explanation: c.get(1)?,
                })
            })
            .map_err(internal)?;
        picker.offer(i, utterance_id, texts.get(utterance_id)?, &proposed);
    }
    Ok(PracticeInputs {
        scores,
        ..picker.finish()
    })
}

/// The id of the oldest of the learner's latest `window` events (0 when
/// they have fewer): the corrected events searched for sentences are those
/// of the window, as in the generic answer. A walk of the covering index.
fn oldest_in_window(conn: &Connection, user_id: Uuid, window: usize) -> Result<i64, StoreError> {
    let Some(offset) = window.checked_sub(1) else {
        return Ok(i64::MAX);
    };
    conn.prepare_cached(
        "SELECT event_id FROM error_events INDEXED BY error_events_recent
         WHERE user_id = ?1 ORDER BY event_id DESC LIMIT 1 OFFSET ?2",
    )
    .and_then(|mut s| {
        s.query_row(params![user_id.to_string(), offset as i64], |r| r.get(0))
            .optional()
    })
    .map(Option::unwrap_or_default)
    .map_err(internal)
}

/// A text column, borrowed from the row rather than copied.
fn str_column<'r>(r: &'r rusqlite::Row<'_>, index: usize) -> Result<&'r str, StoreError> {
    r.get_ref(index)
        .and_then(|v| Ok(v.as_str()?))
        .map_err(internal)
}

/// Utterances' texts, each looked up once during one read.
struct UtteranceTexts<'c> {
    lookup: CachedStatement<'c>,
    known: Vec<(Uuid, Option<String>)>,
}

impl<'c> UtteranceTexts<'c> {
    fn new(conn: &'c Connection) -> Result<Self, StoreError> {
        Ok(Self {
            lookup: conn
                .prepare_cached("SELECT content FROM utterances WHERE utterance_id = ?1")
                .map_err(internal)?,
            known: Vec::new(),
        })
    }

    fn get(&mut self, utterance_id: Uuid) -> Result<Option<&str>, StoreError> {
        let at = match self.known.iter().position(|(id, _)| *id == utterance_id) {
            Some(at) => at,
            None => {
                let text = self
                    .lookup
                    .query_row([utterance_id.to_string()], |u| {
                        u.get::<_, Option<String>>(0)
                    })
                    .optional()
                    .map_err(internal)?
                    .flatten();
                self.known.push((utterance_id, text));
                self.known.len() - 1
            }
        };
        Ok(self.known[at].1.as_deref())
    }
}

/// The learner's latest error points, newest first; `UserNotFound` for an
/// unknown learner. The events come from one covering index (no table
/// lookups); the text of each distinct utterance is read once, not once per
/// event.
pub(super) fn recent_errors(
    conn: &Connection,
    user_id: Uuid,
    limit: usize,
) -> Result<Vec<RecentError>, StoreError> {
    let mut texts: HashMap<String, Option<String>> = HashMap::new();
    let mut utterance = conn
        .prepare_cached("SELECT content FROM utterances WHERE utterance_id = ?1")
        .map_err(internal)?;
    let recent: Vec<RecentError> = conn
        .prepare_cached(
            "SELECT category, subcategory, conversation_id, utterance_id,
                    occurred_at, category_key, subcategory_key, correction, explanation
             FROM error_events INDEXED BY error_events_recent
             WHERE user_id = ?1 ORDER BY event_id DESC LIMIT ?2",
        )
        .and_then(|mut s| {
            let mut rows = s.query(params![user_id.to_string(), limit as i64])?;
            let mut recent = Vec::new();
            while let Some(r) = rows.next()? {
                let utterance_text: &str = r.get_ref(3)?.as_str()?;
                let text = match texts.get(utterance_text) {
                    Some(text) => text.clone(),
                    None => {
                        let text: Option<String> = utterance
                            .query_row([utterance_text], |u| u.get(0))
                            .optional()?
                            .flatten();
                        texts.insert(utterance_text.to_owned(), text.clone());
                        text
                    }
                };
                recent.push(recent_error_row(r, text)?);
            }
            Ok(recent)
        })
        .map_err(internal)?;
    if recent.is_empty() && !user_exists(conn, user_id)? {
        return Err(StoreError::UserNotFound);
    }
    Ok(recent)
}

/// An `error_events` row selected as (category, subcategory,
/// conversation_id, utterance_id, occurred_at, category_key,
/// subcategory_key, correction, explanation), with its utterance's text.
fn recent_error_row(r: &rusqlite::Row<'_>, text: Option<String>) -> rusqlite::Result<RecentError> {
    Ok(RecentError {
        key: ErrorKey {
            category: r.get(5)?,
            subcategory: r.get(6)?,
        },
        category: r.get(0)?,
        subcategory: r.get(1)?,
        conversation_id: uuid_column(r, 2)?,
        utterance_id: uuid_column(r, 3)?,
        utterance: text,
        correction: Correction {
            text: r.get(7)?,
            explanation: r.get(8)?,
        },
        occurred_at: from_micros(r.get(4)?),
    })
}

/// The database answers a query.
pub(super) fn check(conn: &Connection) -> Result<(), StoreError> {
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
        .map_err(|e| StoreError::unavailable(Backend::Sqlite, "the database does not answer", e))
}
