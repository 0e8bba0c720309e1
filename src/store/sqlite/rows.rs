//! One row type per table, with its column list and its mapping from a
//! rusqlite row, each written once, here.
//!
//! A statement names a table's columns with the table's `*_columns!()`
//! macro: a literal, so that a whole statement is one `concat!` literal,
//! which `prepare_cached` finds without formatting. `from_row` reads the
//! columns in that order. Two hot reads take less than a row, from an
//! index that holds only part of it: those parts are named here too.
//!
//! The tables of a learner's errors are only ever read by `user_id`, so
//! their row types leave it out; the write SQL names it with the rest.

use chrono::{DateTime, NaiveDate, Utc};
use r2d2_sqlite::rusqlite::{self, Row, Statement};
use uuid::Uuid;

use super::columns::{from_micros, str_column, uuid_column, week_column};
use crate::domain::{Correction, ErrorFrequency, ErrorKey, ErrorPoint, WeekCount};
use crate::store::{Conversation, RecentError, StoredEvent, User, Utterance};

/// The columns of `users`, in [`UserRow`]'s order.
macro_rules! user_columns {
    () => {
        "user_id, username, email, created_at, timezone"
    };
}
pub(super) use user_columns;

/// A learner's account. The table also keeps `email_key`, the e-mail as
/// compared for uniqueness (case-folded), which is only ever written and
/// looked up by.
pub(super) struct UserRow {
    pub user_id: Uuid,
    pub username: String,
    pub email: String,
    pub created_at: DateTime<Utc>,
    pub timezone: Option<String>,
}

impl UserRow {
    pub fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            user_id: uuid_column(r, 0)?,
            username: r.get(1)?,
            email: r.get(2)?,
            created_at: from_micros(r.get(3)?),
            timezone: r.get(4)?,
        })
    }
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self {
            user_id: row.user_id,
            username: row.username,
            email: row.email,
            created_at: row.created_at,
            timezone: row.timezone,
        }
    }
}

/// The columns of `conversations`, in [`ConversationRow`]'s order.
macro_rules! conversation_columns {
    () => {
        "conversation_id, user_id, started_at"
    };
}
pub(super) use conversation_columns;

pub(super) struct ConversationRow {
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    pub started_at: DateTime<Utc>,
}

impl ConversationRow {
    pub fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            conversation_id: uuid_column(r, 0)?,
            user_id: uuid_column(r, 1)?,
            started_at: from_micros(r.get(2)?),
        })
    }
}

impl From<ConversationRow> for Conversation {
    fn from(row: ConversationRow) -> Self {
        Self {
            conversation_id: row.conversation_id,
            user_id: row.user_id,
            started_at: row.started_at,
        }
    }
}

/// The columns of `utterances`, in [`UtteranceRow`]'s order.
macro_rules! utterance_columns {
    () => {
        "utterance_id, conversation_id, user_id, content, created_at"
    };
}
pub(super) use utterance_columns;

pub(super) struct UtteranceRow {
    pub utterance_id: Uuid,
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    pub content: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl UtteranceRow {
    pub fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            utterance_id: uuid_column(r, 0)?,
            conversation_id: uuid_column(r, 1)?,
            user_id: uuid_column(r, 2)?,
            content: r.get(3)?,
            created_at: from_micros(r.get(4)?),
        })
    }
}

impl From<UtteranceRow> for Utterance {
    fn from(row: UtteranceRow) -> Self {
        Self {
            utterance_id: row.utterance_id,
            conversation_id: row.conversation_id,
            user_id: row.user_id,
            content: row.content,
            created_at: row.created_at,
        }
    }
}

/// The columns of `error_events`, in [`EventRow`]'s order.
macro_rules! event_columns {
    () => {
        "event_id, conversation_id, utterance_id, category_key, subcategory_key,
         category, subcategory, occurred_at, correction, explanation"
    };
}
pub(super) use event_columns;

/// Writes one event (its `event_id` is the row's id).
pub(super) const INSERT_EVENT: &str = "INSERT INTO error_events
    (user_id, conversation_id, utterance_id, category_key, subcategory_key,
     category, subcategory, occurred_at, correction, explanation)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// An event about to be written with [`INSERT_EVENT`].
pub(super) struct NewEvent<'a> {
    pub user_id: &'a str,
    pub conversation_id: &'a str,
    pub utterance_id: &'a str,
    pub point: &'a ErrorPoint,
    pub key: &'a ErrorKey,
    /// The spelling the learner's count shows.
    pub shown: &'a (String, String),
    /// When it was recorded, in microseconds.
    pub at: i64,
}

impl NewEvent<'_> {
    pub fn insert(&self, statement: &mut Statement<'_>) -> rusqlite::Result<usize> {
        statement.execute(rusqlite::params![
            self.user_id,
            self.conversation_id,
            self.utterance_id,
            self.key.category,
            self.key.subcategory,
            self.shown.0,
            self.shown.1,
            self.at,
            self.point.correction.text,
            self.point.correction.explanation
        ])
    }
}

/// One recorded error point: the log every count is made from.
pub(super) struct EventRow {
    pub event_id: i64,
    pub conversation_id: Uuid,
    pub utterance_id: Uuid,
    pub key: ErrorKey,
    /// The spelling the learner's count shows.
    pub category: String,
    pub subcategory: String,
    pub occurred_at: DateTime<Utc>,
    pub correction: Correction,
}

impl EventRow {
    pub fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            event_id: r.get(0)?,
            conversation_id: uuid_column(r, 1)?,
            utterance_id: uuid_column(r, 2)?,
            key: ErrorKey {
                category: r.get(3)?,
                subcategory: r.get(4)?,
            },
            category: r.get(5)?,
            subcategory: r.get(6)?,
            occurred_at: from_micros(r.get(7)?),
            correction: correction_from(r, 8)?,
        })
    }

    /// The event as a learner's recent error, with its utterance's text.
    pub fn into_recent(self, utterance: Option<String>) -> RecentError {
        RecentError {
            key: self.key,
            category: self.category,
            subcategory: self.subcategory,
            conversation_id: self.conversation_id,
            utterance_id: self.utterance_id,
            utterance,
            correction: self.correction,
            occurred_at: self.occurred_at,
        }
    }
}

impl From<EventRow> for StoredEvent {
    fn from(row: EventRow) -> Self {
        Self {
            event_id: row.event_id.to_string(),
            conversation_id: row.conversation_id,
            utterance_id: row.utterance_id,
            category: row.category,
            subcategory: row.subcategory,
            occurred_at: row.occurred_at,
            // The embedded store keeps the text with the utterance only.
            snippet: None,
            correction: row.correction.text,
            explanation: row.correction.explanation,
        }
    }
}

/// An event's `correction, explanation`, from column `at` on.
fn correction_from(r: &Row<'_>, at: usize) -> rusqlite::Result<Correction> {
    Ok(Correction {
        text: r.get(at)?,
        explanation: r.get(at + 1)?,
    })
}

/// What the practice read takes of an event it keeps, by `event_id`.
macro_rules! event_correction_columns {
    () => {
        "correction, explanation"
    };
}
pub(super) use event_correction_columns;

/// Reads [`event_correction_columns`].
pub(super) fn event_correction(r: &Row<'_>) -> rusqlite::Result<Correction> {
    correction_from(r, 0)
}

/// The columns of an `error_events_corrected` index entry, in
/// [`CorrectedEntry`]'s order.
macro_rules! corrected_entry_columns {
    () => {
        "category_key, subcategory_key, utterance_id, event_id"
    };
}
pub(super) use corrected_entry_columns;

/// An entry of the index of corrected events, read in place: the practice
/// walk compares its key without copying and decodes the rest only for
/// the entries it keeps.
pub(super) struct CorrectedEntry<'r, 's>(&'r Row<'s>);

impl<'r, 's> CorrectedEntry<'r, 's> {
    pub fn new(row: &'r Row<'s>) -> Self {
        Self(row)
    }

    /// (category_key, subcategory_key), borrowed from the row.
    pub fn key(&self) -> rusqlite::Result<(&'r str, &'r str)> {
        Ok((str_column(self.0, 0)?, str_column(self.0, 1)?))
    }

    pub fn utterance_id(&self) -> rusqlite::Result<Uuid> {
        uuid_column(self.0, 2)
    }

    pub fn event_id(&self) -> rusqlite::Result<i64> {
        self.0.get(3)
    }
}

/// The columns of `error_counts`, in [`CountRow`]'s order.
macro_rules! count_columns {
    () => {
        "category_key, subcategory_key, category, subcategory, frequency, last_seen"
    };
}
pub(super) use count_columns;

/// A learner's all-time count of one error.
pub(super) struct CountRow {
    pub key: ErrorKey,
    /// The first spelling seen.
    pub category: String,
    pub subcategory: String,
    pub frequency: i64,
    pub last_seen: DateTime<Utc>,
}

impl CountRow {
    pub fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            key: ErrorKey {
                category: r.get(0)?,
                subcategory: r.get(1)?,
            },
            category: r.get(2)?,
            subcategory: r.get(3)?,
            frequency: r.get(4)?,
            last_seen: from_micros(r.get(5)?),
        })
    }
}

impl From<CountRow> for ErrorFrequency {
    fn from(row: CountRow) -> Self {
        Self {
            key: row.key,
            category: row.category,
            subcategory: row.subcategory,
            frequency: row.frequency,
            last_seen: Some(row.last_seen),
        }
    }
}

/// The columns of `error_counts_by_week`, in [`WeekCountRow`]'s order.
macro_rules! week_count_columns {
    () => {
        "week_start, category_key, subcategory_key, frequency"
    };
}
pub(super) use week_count_columns;

/// A learner's count of one error in one week.
pub(super) struct WeekCountRow {
    /// The Monday (UTC) that starts the week.
    pub week_start: NaiveDate,
    pub key: ErrorKey,
    pub frequency: i64,
}

impl WeekCountRow {
    pub fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            week_start: week_column(r, 0)?,
            key: ErrorKey {
                category: r.get(1)?,
                subcategory: r.get(2)?,
            },
            frequency: r.get(3)?,
        })
    }
}

impl From<WeekCountRow> for WeekCount {
    fn from(row: WeekCountRow) -> Self {
        Self {
            week_start: row.week_start,
            key: row.key,
            count: row.frequency,
        }
    }
}

/// The columns of `ingest_requests`, in [`IngestRequestRow`]'s order.
macro_rules! ingest_request_columns {
    () => {
        "user_id, fingerprint, received_at"
    };
}
pub(super) use ingest_request_columns;

/// The fingerprint of a recorded error report. The key is kept as text:
/// a pass over the table walks it in the order of its text.
pub(super) struct IngestRequestRow {
    pub user_id: String,
    pub fingerprint: String,
    pub received_at: DateTime<Utc>,
}

impl IngestRequestRow {
    pub fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            user_id: r.get(0)?,
            fingerprint: r.get(1)?,
            received_at: from_micros(r.get(2)?),
        })
    }
}
