//! The rows of the cql tables (`cql/*.cql`), one named type each, and the
//! layout rules every component shares: which month bucket an event goes
//! in, its id, the sentence slot of an utterance. The one place where a
//! row becomes a record of the store (`User`, `RecentError`, …) and back.
//!
//! Rows read from CQL derive `DeserializeRow` (columns matched by name);
//! rows written derive `SerializeRow`, matched by the bind markers' names,
//! or by position where a marker has no column name (`USING TIMESTAMP ?`,
//! `sentences[?] = ?`).

mod memory;
mod sentence;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Utc};
use scylla::value::{Counter, CqlDate, CqlTimestamp};
use scylla::{DeserializeRow, SerializeRow};
use uuid::Uuid;

pub use self::memory::{MemoryRow, ReviewRow, INSERT_REVIEW};
pub use self::sentence::SentenceCell;
use super::session::{from_date, from_timestamp, timestamp};
use crate::domain::{Correction, ErrorKey, ErrorPoint, WeekCount};
use crate::store::policy::SNIPPET_CHARS;
use crate::store::{Conversation, ErrorReport, RecentError, StoredEvent, User, Utterance};

// ---------------------------------------------------------------------
// Layout
// ---------------------------------------------------------------------

/// How many of a learner's sentences each error keeps beside its label
/// (`error_labels.sentences`), for practice to read with the label instead
/// of searching the event log: one more than the three a practice request
/// shows. Two utterances can share a slot (the later one stays), so the
/// slots hold the newest sentence and up to three other recent ones, not
/// always exactly the latest four.
pub const SENTENCE_SLOTS: u128 = 4;

/// Twice 2026-01-01T00:00:00Z in microseconds. Spelling cells are written
/// with the timestamp `SPELLING_CLOCK - now`: it decreases as time goes on,
/// so the first write wins, and it stays in the past (ScyllaDB refuses
/// timestamps far in the future) until 2082.
const SPELLING_CLOCK: i64 = 2 * 1_767_225_600_000_000;

/// The month bucket of `error_events`, as yyyymm.
pub fn bucket(t: DateTime<Utc>) -> i32 {
    t.year() * 100 + t.month() as i32
}

/// The id of a report's point in `error_events`: it follows from the
/// request's identity, so every attempt of the request writes the same row.
pub fn event_id(fingerprint: Uuid, index: usize) -> Uuid {
    Uuid::new_v5(&fingerprint, index.to_string().as_bytes())
}

/// The slot of `error_labels.sentences` an utterance's sentence goes in:
/// fixed by the utterance, so that every point and every retry of it
/// rewrites one slot, and spread by its random bits, so that an error keeps
/// up to [`SENTENCE_SLOTS`] of its latest sentences without reading
/// anything first. A slot's cell is written with the event's time as its
/// write timestamp, so it always holds the latest of its utterances.
pub fn sentence_slot(utterance_id: Uuid) -> i32 {
    (utterance_id.as_u128() % SENTENCE_SLOTS) as i32
}

/// What the events keep of an utterance.
pub fn snippet(content: Option<&str>) -> Option<Arc<str>> {
    content.map(|c| c.chars().take(SNIPPET_CHARS).collect::<String>().into())
}

/// The write timestamp of a spelling written at `at` (the first wins).
pub fn spelling_write_time(at: DateTime<Utc>) -> i64 {
    SPELLING_CLOCK - at.timestamp_micros()
}

// ---------------------------------------------------------------------
// users, conversations, utterances
// ---------------------------------------------------------------------

/// A row of `users`.
#[derive(Debug, Clone, SerializeRow, DeserializeRow)]
pub struct UserRow {
    pub user_id: Uuid,
    #[scylla(default_when_null)]
    pub username: String,
    #[scylla(default_when_null)]
    pub email: String,
    pub created_at: Option<CqlTimestamp>,
    /// The learner's IANA time zone (null: UTC).
    pub timezone: Option<String>,
}

impl From<&User> for UserRow {
    fn from(user: &User) -> Self {
        Self {
            user_id: user.user_id,
            username: user.username.clone(),
            email: user.email.clone(),
            created_at: Some(timestamp(user.created_at)),
            timezone: user.timezone.clone(),
        }
    }
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self {
            user_id: row.user_id,
            username: row.username,
            email: row.email,
            created_at: row.created_at.map(from_timestamp).unwrap_or_default(),
            timezone: row.timezone,
        }
    }
}

/// A row of `conversations`.
#[derive(Debug, Clone, SerializeRow, DeserializeRow)]
pub struct ConversationRow {
    pub user_id: Uuid,
    pub conversation_id: Uuid,
    pub started_at: Option<CqlTimestamp>,
}

impl From<&Conversation> for ConversationRow {
    fn from(c: &Conversation) -> Self {
        Self {
            user_id: c.user_id,
            conversation_id: c.conversation_id,
            started_at: Some(timestamp(c.started_at)),
        }
    }
}

impl From<ConversationRow> for Conversation {
    fn from(row: ConversationRow) -> Self {
        Self {
            conversation_id: row.conversation_id,
            user_id: row.user_id,
            started_at: row.started_at.map(from_timestamp).unwrap_or_default(),
        }
    }
}

/// A row of `utterances`.
#[derive(Debug, Clone, SerializeRow, DeserializeRow)]
pub struct UtteranceRow {
    pub user_id: Uuid,
    pub conversation_id: Uuid,
    pub utterance_id: Uuid,
    pub content: Option<String>,
    pub created_at: Option<CqlTimestamp>,
}

impl From<&Utterance> for UtteranceRow {
    fn from(u: &Utterance) -> Self {
        Self {
            user_id: u.user_id,
            conversation_id: u.conversation_id,
            utterance_id: u.utterance_id,
            content: u.content.clone(),
            created_at: Some(timestamp(u.created_at)),
        }
    }
}

impl From<UtteranceRow> for Utterance {
    fn from(row: UtteranceRow) -> Self {
        Self {
            utterance_id: row.utterance_id,
            conversation_id: row.conversation_id,
            user_id: row.user_id,
            content: row.content,
            created_at: row.created_at.map(from_timestamp).unwrap_or_default(),
        }
    }
}

// ---------------------------------------------------------------------
// error_events
// ---------------------------------------------------------------------

/// Every column of `error_events`, in [`EventRow`]'s order: the one list
/// the statements that write or read whole events use.
macro_rules! event_columns {
    () => {
        "user_id, bucket, occurred_at, event_id, conversation_id, utterance_id, \
         category_key, subcategory_key, category, subcategory, snippet, correction, explanation"
    };
}

/// Writes one event.
pub const INSERT_EVENT: &str = concat!(
    "INSERT INTO error_events (",
    event_columns!(),
    ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
);
/// The latest events of a month, newest first.
pub const SELECT_RECENT_EVENTS: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM error_events WHERE user_id = ? AND bucket = ? LIMIT ?"
);
/// Every event of a month (paged).
pub const SELECT_MONTH_EVENTS: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM error_events WHERE user_id = ? AND bucket = ?"
);

/// A row of `error_events`: one error point of a report.
#[derive(Debug, Clone, SerializeRow, DeserializeRow)]
pub struct EventRow {
    pub user_id: Uuid,
    pub bucket: i32,
    pub occurred_at: CqlTimestamp,
    pub event_id: Uuid,
    pub conversation_id: Option<Uuid>,
    pub utterance_id: Option<Uuid>,
    pub category_key: String,
    pub subcategory_key: String,
    pub category: Option<String>,
    pub subcategory: Option<String>,
    pub snippet: Option<String>,
    pub correction: Option<String>,
    pub explanation: Option<String>,
}

impl EventRow {
    /// The event of the report's point number `index` (of `point`, whose
    /// key is `key`), recorded at `at` in the utterance whose snippet is
    /// `snippet`.
    pub fn new(
        report: &ErrorReport,
        index: usize,
        point: &ErrorPoint,
        key: ErrorKey,
        at: DateTime<Utc>,
        snippet: Option<String>,
    ) -> Self {
        Self {
            user_id: report.user_id,
            bucket: bucket(at),
            occurred_at: timestamp(at),
            event_id: event_id(report.fingerprint, index),
            conversation_id: Some(report.conversation_id),
            utterance_id: Some(report.utterance_id),
            category_key: key.category,
            subcategory_key: key.subcategory,
            category: Some(point.category.as_str().to_owned()),
            subcategory: Some(point.subcategory.as_str().to_owned()),
            snippet,
            correction: point.correction.text.clone(),
            explanation: point.correction.explanation.clone(),
        }
    }

    /// About how many bytes of text the row carries.
    pub fn text_bytes(&self) -> usize {
        let texts = [
            &self.category,
            &self.subcategory,
            &self.snippet,
            &self.correction,
            &self.explanation,
        ];
        self.category_key.len()
            + self.subcategory_key.len()
            + texts
                .into_iter()
                .map(|t| t.as_ref().map_or(0, String::len))
                .sum::<usize>()
    }

    /// The event as a recent error, in the spelling it was recorded with.
    pub fn into_recent(self) -> RecentError {
        RecentError {
            category: self.category.unwrap_or_else(|| self.category_key.clone()),
            subcategory: self
                .subcategory
                .unwrap_or_else(|| self.subcategory_key.clone()),
            key: ErrorKey {
                category: self.category_key,
                subcategory: self.subcategory_key,
            },
            conversation_id: self.conversation_id.unwrap_or_default(),
            utterance_id: self.utterance_id.unwrap_or_default(),
            utterance: self.snippet,
            correction: Correction {
                text: self.correction,
                explanation: self.explanation,
            },
            occurred_at: from_timestamp(self.occurred_at),
        }
    }

    /// The event as the export shows it.
    pub fn into_stored(self) -> StoredEvent {
        StoredEvent {
            event_id: self.event_id.to_string(),
            conversation_id: self.conversation_id.unwrap_or_default(),
            utterance_id: self.utterance_id.unwrap_or_default(),
            category: self.category.unwrap_or_default(),
            subcategory: self.subcategory.unwrap_or_default(),
            occurred_at: from_timestamp(self.occurred_at),
            snippet: self.snippet,
            correction: self.correction,
            explanation: self.explanation,
        }
    }
}

/// What repair reads of an event: which error, when, and its id.
#[derive(Debug, Clone, DeserializeRow)]
pub struct EventKeyRow {
    pub category_key: String,
    pub subcategory_key: String,
    pub event_id: Uuid,
    pub occurred_at: CqlTimestamp,
}

// ---------------------------------------------------------------------
// error_labels
// ---------------------------------------------------------------------

/// A row of `error_labels` without its sentences: how the learner's error
/// is spelled and when it was last seen.
#[derive(Debug, Clone, DeserializeRow)]
pub struct LabelRow {
    pub category_key: String,
    pub subcategory_key: String,
    pub category: Option<String>,
    pub subcategory: Option<String>,
    pub last_seen: Option<CqlTimestamp>,
}

/// A whole row of `error_labels`, with the sentences kept for practice.
#[derive(Debug, Clone, DeserializeRow)]
pub struct LabelSentencesRow {
    pub category_key: String,
    pub subcategory_key: String,
    pub category: Option<String>,
    pub subcategory: Option<String>,
    pub last_seen: Option<CqlTimestamp>,
    pub sentences: Option<HashMap<i32, SentenceCell>>,
}

/// The first spelling of an error: `UPDATE error_labels USING TIMESTAMP ?
/// SET category = ?, subcategory = ? WHERE …` (bound by position).
#[derive(Debug, Clone, SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
pub struct SpellingWrite {
    pub write_time: i64,
    pub category: String,
    pub subcategory: String,
    pub user_id: Uuid,
    pub category_key: String,
    pub subcategory_key: String,
}

/// When an error was last seen: `UPDATE error_labels USING TIMESTAMP ?
/// SET last_seen = ? WHERE …` (bound by position).
#[derive(Debug, Clone, SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
pub struct SeenWrite {
    pub write_time: i64,
    pub last_seen: CqlTimestamp,
    pub user_id: Uuid,
    pub category_key: String,
    pub subcategory_key: String,
}

/// [`SeenWrite`] with the sentence it was seen in, in its slot:
/// `… SET last_seen = ?, sentences[?] = ? WHERE …` (bound by position).
#[derive(Debug, Clone, SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
pub struct SeenSentenceWrite {
    pub write_time: i64,
    pub last_seen: CqlTimestamp,
    pub slot: i32,
    pub sentence: SentenceCell,
    pub user_id: Uuid,
    pub category_key: String,
    pub subcategory_key: String,
}

/// A sentence put back in its slot by repair: `… USING TIMESTAMP ? SET
/// sentences[?] = ? WHERE …` (bound by position).
#[derive(Debug, Clone, SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
pub struct SentenceWrite {
    pub write_time: i64,
    pub slot: i32,
    pub sentence: SentenceCell,
    pub user_id: Uuid,
    pub category_key: String,
    pub subcategory_key: String,
}

// ---------------------------------------------------------------------
// error_counts, error_counts_by_week
// ---------------------------------------------------------------------

/// A row of `error_counts`.
#[derive(Debug, Clone, DeserializeRow)]
pub struct CountRow {
    pub category_key: String,
    pub subcategory_key: String,
    pub frequency: Option<Counter>,
}

impl CountRow {
    pub fn into_count(self) -> (ErrorKey, i64) {
        let key = ErrorKey {
            category: self.category_key,
            subcategory: self.subcategory_key,
        };
        (key, self.frequency.map_or(0, |c| c.0))
    }
}

/// `UPDATE error_counts SET frequency = frequency + ? WHERE …` (bound by
/// position: the increment's marker has no column name of its own).
#[derive(Debug, Clone, SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
pub struct CountDelta<'a> {
    pub delta: Counter,
    pub user_id: Uuid,
    pub category_key: &'a str,
    pub subcategory_key: &'a str,
}

/// A row of `error_counts_by_week`.
#[derive(Debug, Clone, DeserializeRow)]
pub struct WeekCountRow {
    pub week_start: CqlDate,
    pub category_key: String,
    pub subcategory_key: String,
    pub frequency: Option<Counter>,
}

impl From<WeekCountRow> for WeekCount {
    fn from(row: WeekCountRow) -> Self {
        Self {
            week_start: from_date(row.week_start),
            key: ErrorKey {
                category: row.category_key,
                subcategory: row.subcategory_key,
            },
            count: row.frequency.map_or(0, |c| c.0),
        }
    }
}

/// `UPDATE error_counts_by_week SET frequency = frequency + ? WHERE …`
/// (bound by position).
#[derive(Debug, Clone, SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
pub struct WeekCountDelta<'a> {
    pub delta: Counter,
    pub user_id: Uuid,
    pub week_start: CqlDate,
    pub category_key: &'a str,
    pub subcategory_key: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn events_are_bucketed_by_month() {
        let t = Utc.with_ymd_and_hms(2026, 11, 28, 23, 59, 59).unwrap();
        assert_eq!(bucket(t), 202611);
        let t = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(bucket(t), 202701);
    }

    #[test]
    fn spelling_timestamps_decrease_and_stay_in_the_past() {
        let now = Utc::now().timestamp_micros();
        let later = now + 1_000_000;
        assert!(SPELLING_CLOCK - now > SPELLING_CLOCK - later);
        assert!(SPELLING_CLOCK - now < now);
        assert!(SPELLING_CLOCK - now > 0);
    }

    #[test]
    fn snippets_are_cut_by_characters() {
        let long = "é".repeat(SNIPPET_CHARS + 10);
        assert_eq!(
            snippet(Some(&long)).map(|s| s.chars().count()),
            Some(SNIPPET_CHARS)
        );
        assert_eq!(snippet(None), None);
    }
}
