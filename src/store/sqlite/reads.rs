//! The read SQL. Reads run on a pooled read-only connection and, thanks to
//! WAL, never wait for the writer.

use std::collections::HashMap;

use chrono::NaiveDate;
use r2d2_sqlite::rusqlite::{params, CachedStatement, Connection, OptionalExtension};
use uuid::Uuid;

use super::columns::week_text;
use super::connection::internal;
use super::lookups::user_exists;
use super::rows::{
    corrected_entry_columns, count_columns, event_columns, event_correction,
    event_correction_columns, week_count_columns, CorrectedEntry, CountRow, EventRow, WeekCountRow,
};
use crate::domain::{ErrorFrequency, FrequencyTable, WeekCount};
use crate::store::sentences::SentencePicker;
use crate::store::{
    Backend, PracticeInputs, PracticeQuery, RecentError, StoreError, WeeklyHistory,
};

/// Every error count of the learner; `UserNotFound` for an unknown one.
pub(super) fn frequencies(conn: &Connection, user_id: Uuid) -> Result<FrequencyTable, StoreError> {
    let table: FrequencyTable = conn
        .prepare_cached(concat!(
            "SELECT ",
            count_columns!(),
            " FROM error_counts WHERE user_id = ?1"
        ))
        .and_then(|mut s| {
            s.query_map([user_id.to_string()], CountRow::from_row)?
                .map(|row| row.map(ErrorFrequency::from))
                .collect()
        })
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
    conn.prepare_cached(concat!(
        "SELECT ",
        count_columns!(),
        " FROM error_counts WHERE user_id = ?1 AND frequency > 0
         ORDER BY frequency DESC, last_seen DESC, category_key, subcategory_key
         LIMIT ?2"
    ))
    .and_then(|mut s| {
        s.query_map(params![user_id.to_string(), n as i64], CountRow::from_row)?
            .map(|row| row.map(ErrorFrequency::from))
            .collect()
    })
    .map_err(internal)
}

/// The learner's all-time counts and their weekly counts from `since` on.
pub(super) fn weekly_history(
    conn: &Connection,
    user_id: Uuid,
    since: NaiveDate,
) -> Result<WeeklyHistory, StoreError> {
    let table = frequencies(conn, user_id)?;
    let weeks = conn
        .prepare_cached(concat!(
            "SELECT ",
            week_count_columns!(),
            " FROM error_counts_by_week WHERE user_id = ?1 AND week_start >= ?2"
        ))
        .and_then(|mut s| {
            s.query_map(
                params![user_id.to_string(), week_text(since)],
                WeekCountRow::from_row,
            )?
            .map(|row| row.map(WeekCount::from))
            .collect()
        })
        .map_err(internal)?;
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
        .prepare_cached(concat!(
            "SELECT ",
            event_correction_columns!(),
            " FROM error_events WHERE event_id = ?1"
        ))
        .map_err(internal)?;
    let mut events = conn
        .prepare_cached(concat!(
            "SELECT ",
            corrected_entry_columns!(),
            " FROM error_events INDEXED BY error_events_corrected
             WHERE user_id = ?1 AND correction IS NOT NULL AND event_id >= ?2
             ORDER BY event_id DESC"
        ))
        .map_err(internal)?;
    let mut rows = events
        .query(params![user_id.to_string(), oldest])
        .map_err(internal)?;
    while !picker.is_done() {
        let Some(r) = rows.next().map_err(internal)? else {
            break;
        };
        let entry = CorrectedEntry::new(r);
        let (category_key, subcategory_key) = entry.key().map_err(internal)?;
        let Some(i) = picker.wants(category_key, subcategory_key) else {
            continue;
        };
        let utterance_id = entry.utterance_id().map_err(internal)?;
        let event_id = entry.event_id().map_err(internal)?;
        let proposed = correction
            .query_row([event_id], event_correction)
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
    let mut texts: HashMap<Uuid, Option<String>> = HashMap::new();
    let mut utterance = conn
        .prepare_cached("SELECT content FROM utterances WHERE utterance_id = ?1")
        .map_err(internal)?;
    let recent: Vec<RecentError> = conn
        .prepare_cached(concat!(
            "SELECT ",
            event_columns!(),
            " FROM error_events INDEXED BY error_events_recent
             WHERE user_id = ?1 ORDER BY event_id DESC LIMIT ?2"
        ))
        .and_then(|mut s| {
            let mut rows = s.query(params![user_id.to_string(), limit as i64])?;
            let mut recent = Vec::new();
            while let Some(r) = rows.next()? {
                let event = EventRow::from_row(r)?;
                let text = match texts.get(&event.utterance_id) {
                    Some(text) => text.clone(),
                    None => {
                        let text: Option<String> = utterance
                            .query_row([event.utterance_id.to_string()], |u| u.get(0))
                            .optional()?
                            .flatten();
                        texts.insert(event.utterance_id, text.clone());
                        text
                    }
                };
                recent.push(event.into_recent(text));
            }
            Ok(recent)
        })
        .map_err(internal)?;
    if recent.is_empty() && !user_exists(conn, user_id)? {
        return Err(StoreError::UserNotFound);
    }
    Ok(recent)
}

/// The database answers a query.
pub(super) fn check(conn: &Connection) -> Result<(), StoreError> {
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
        .map_err(|e| StoreError::unavailable(Backend::Sqlite, "the database does not answer", e))
}
