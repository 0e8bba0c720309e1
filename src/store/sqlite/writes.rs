//! The write SQL. Each function runs inside the writer's transaction, in
//! the savepoint of the one request it serves.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use r2d2_sqlite::rusqlite::{params, Connection};
use uuid::Uuid;

use super::columns::{micros, week_text};
use super::connection::internal;
use super::lookups::{conversation_owner, email_holder, user, user_exists, utterance_place};
use super::rows::{
    conversation_columns, ingest_request_columns, user_columns, utterance_columns,
    IngestRequestRow, NewEvent, INSERT_EVENT,
};
use crate::domain::{week_start, ErrorKey};
use crate::store::{
    Conversation, ErrorReport, NewUser, NewUtterance, PointTally, RecordOutcome, StoreError, User,
    Utterance,
};

/// Fingerprints looked at per write (the writer's other requests wait
/// for it, so it is kept to a few milliseconds).
pub(super) const FINGERPRINT_CHUNK: usize = 1000;

/// Where a pass over `ingest_requests` is: the last key looked at.
pub(super) type FingerprintCursor = (String, String);

/// One chunk of a pass that forgets old request fingerprints.
#[derive(Debug)]
pub(super) struct Expiry {
    /// Where the pass is (`None`: at the start of the table).
    pub after: Option<FingerprintCursor>,
    /// Fingerprints recorded before this are forgotten.
    pub before: DateTime<Utc>,
}

#[derive(Debug)]
pub(super) struct ExpiredChunk {
    pub removed: usize,
    /// `None` when the pass reached the end of the table.
    pub next: Option<FingerprintCursor>,
}

pub(super) fn insert_user(tx: &Connection, new: NewUser) -> Result<User, StoreError> {
    let email_key = new.email.key().to_owned();
    let user = User::new(new);
    let inserted = tx
        .prepare_cached(concat!(
            "INSERT INTO users (",
            user_columns!(),
            ", email_key) VALUES (?1, ?2, ?3, ?4, ?6, ?5) ON CONFLICT (email_key) DO NOTHING"
        ))
        .and_then(|mut s| {
            s.execute(params![
                user.user_id.to_string(),
                user.username,
                user.email,
                micros(user.created_at),
                email_key,
                user.timezone
            ])
        })
        .map_err(internal)?;
    if inserted == 0 {
        return earlier_attempt(tx, &email_key, &user);
    }
    Ok(user)
}

/// The account of an earlier attempt of this sign-up, if the one holding
/// the e-mail is one (its answer was lost, so the client retried);
/// otherwise the e-mail is another's.
fn earlier_attempt(tx: &Connection, email_key: &str, attempt: &User) -> Result<User, StoreError> {
    match email_holder(tx, email_key)?
        .map(|id| user(tx, id))
        .transpose()?
        .flatten()
    {
        Some(earlier) if earlier.retried_by(attempt) => {
            tracing::info!(user_id = %earlier.user_id, "a retried sign-up found its earlier attempt's account");
            Ok(earlier)
        }
        _ => Err(StoreError::EmailTaken),
    }
}

pub(super) fn insert_conversation(
    tx: &Connection,
    user_id: Uuid,
) -> Result<Conversation, StoreError> {
    if !user_exists(tx, user_id)? {
        return Err(StoreError::UserNotFound);
    }
    let conversation = Conversation::new(user_id);
    tx.prepare_cached(concat!(
        "INSERT INTO conversations (",
        conversation_columns!(),
        ") VALUES (?1, ?2, ?3)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            conversation.conversation_id.to_string(),
            user_id.to_string(),
            micros(conversation.started_at)
        ])
    })
    .map_err(internal)?;
    Ok(conversation)
}

pub(super) fn insert_utterance(
    tx: &Connection,
    new: NewUtterance,
) -> Result<Utterance, StoreError> {
    if conversation_owner(tx, new.conversation_id)? != Some(new.user_id) {
        return Err(StoreError::ConversationNotFound);
    }
    let utterance = Utterance::new(new);
    tx.prepare_cached(concat!(
        "INSERT INTO utterances (",
        utterance_columns!(),
        ") VALUES (?1, ?2, ?3, ?4, ?5)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            utterance.utterance_id.to_string(),
            utterance.conversation_id.to_string(),
            utterance.user_id.to_string(),
            utterance.content,
            micros(utterance.created_at)
        ])
    })
    .map_err(internal)?;
    Ok(utterance)
}

/// Counts the report's points and logs them as events, unless its
/// fingerprint was already recorded.
pub(super) fn record(tx: &Connection, report: ErrorReport) -> Result<RecordOutcome, StoreError> {
    check_belongs_together(tx, &report)?;
    let user_id = report.user_id.to_string();
    let at = micros(report.received_at);
    let first_time = tx
        .prepare_cached(concat!(
            "INSERT INTO ingest_requests (",
            ingest_request_columns!(),
            ") VALUES (?1, ?2, ?3) ON CONFLICT (user_id, fingerprint) DO NOTHING"
        ))
        .and_then(|mut s| s.execute(params![user_id, report.fingerprint.to_string(), at]))
        .map_err(internal)?
        == 1;
    if !first_time {
        return Ok(RecordOutcome {
            recorded: 0,
            duplicate: true,
        });
    }
    let shown = count_points(tx, &user_id, &report, at)?;
    insert_events(tx, &user_id, &report, at, &shown)?;
    super::memory::record_lapses(tx, &report)?;
    Ok(RecordOutcome {
        recorded: report.points.len(),
        duplicate: false,
    })
}

/// An utterance is only ever stored in its user's own conversation, and
/// nothing is deleted: when it matches, the user and the conversation
/// exist and belong together. Otherwise this names what is missing, user
/// first.
fn check_belongs_together(tx: &Connection, report: &ErrorReport) -> Result<(), StoreError> {
    if utterance_place(tx, report.utterance_id)? == Some((report.conversation_id, report.user_id)) {
        return Ok(());
    }
    if !user_exists(tx, report.user_id)? {
        return Err(StoreError::UserNotFound);
    }
    if conversation_owner(tx, report.conversation_id)? != Some(report.user_id) {
        return Err(StoreError::ConversationNotFound);
    }
    Err(StoreError::UtteranceNotFound)
}

/// The spelling the learner's table shows for each error (the first one
/// seen), which the events then carry too.
type Shown = HashMap<ErrorKey, (String, String)>;

/// Two upserts per distinct error of the report (the all-time count and
/// the count of the week the report was received in); returns the
/// spelling each row shows.
fn count_points(
    tx: &Connection,
    user_id: &str,
    report: &ErrorReport,
    at: i64,
) -> Result<Shown, StoreError> {
    let tally = report.tally();
    let mut shown = Shown::with_capacity(tally.len());
    let mut upsert = tx
        .prepare_cached(
            "INSERT INTO error_counts
               (user_id, category_key, subcategory_key, category, subcategory, frequency, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (user_id, category_key, subcategory_key) DO UPDATE SET
               frequency = frequency + excluded.frequency,
               last_seen = max(last_seen, excluded.last_seen)
             RETURNING category, subcategory",
        )
        .map_err(internal)?;
    let mut weekly = tx
        .prepare_cached(
            "INSERT INTO error_counts_by_week
               (user_id, week_start, category_key, subcategory_key, frequency)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (user_id, week_start, category_key, subcategory_key) DO UPDATE SET
               frequency = frequency + excluded.frequency",
        )
        .map_err(internal)?;
    let week = week_text(week_start(report.received_at));
    for PointTally { key, first, count } in tally {
        weekly
            .execute(params![user_id, week, key.category, key.subcategory, count])
            .map_err(internal)?;
        let spelling = upsert
            .query_row(
                params![
                    user_id,
                    key.category,
                    key.subcategory,
                    first.category.as_str(),
                    first.subcategory.as_str(),
                    count,
                    at
                ],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(internal)?;
        shown.insert(key, spelling);
    }
    Ok(shown)
}

/// One event per point of the report, in the spelling its count shows.
fn insert_events(
    tx: &Connection,
    user_id: &str,
    report: &ErrorReport,
    at: i64,
    shown: &Shown,
) -> Result<(), StoreError> {
    let mut insert_event = tx.prepare_cached(INSERT_EVENT).map_err(internal)?;
    let (conversation_id, utterance_id) = (
        report.conversation_id.to_string(),
        report.utterance_id.to_string(),
    );
    for point in &report.points {
        let key = point.key();
        let event = NewEvent {
            user_id,
            conversation_id: &conversation_id,
            utterance_id: &utterance_id,
            point,
            key: &key,
            shown: &shown[&key],
            at,
        };
        event.insert(&mut insert_event).map_err(internal)?;
    }
    Ok(())
}

/// Looks at the next `FINGERPRINT_CHUNK` fingerprints after `after` (in key
/// order) and deletes those recorded before `before`.
pub(super) fn expire_fingerprints(
    tx: &Connection,
    Expiry { after, before }: Expiry,
) -> Result<ExpiredChunk, StoreError> {
    let (user_id, fingerprint) = after.unwrap_or_default();
    let keys: Vec<IngestRequestRow> = tx
        .prepare_cached(concat!(
            "SELECT ",
            ingest_request_columns!(),
            " FROM ingest_requests WHERE (user_id, fingerprint) > (?1, ?2)
             ORDER BY user_id, fingerprint LIMIT ?3"
        ))
        .and_then(|mut s| {
            s.query_map(
                params![user_id, fingerprint, FINGERPRINT_CHUNK as i64],
                IngestRequestRow::from_row,
            )?
            .collect()
        })
        .map_err(internal)?;
    let mut delete = tx
        .prepare_cached("DELETE FROM ingest_requests WHERE user_id = ?1 AND fingerprint = ?2")
        .map_err(internal)?;
    let mut removed = 0;
    for key in keys.iter().filter(|key| key.received_at < before) {
        removed += delete
            .execute(params![key.user_id, key.fingerprint])
            .map_err(internal)?;
    }
    let next = if keys.len() < FINGERPRINT_CHUNK {
        None
    } else {
        keys.last()
            .map(|key| (key.user_id.clone(), key.fingerprint.clone()))
    };
    Ok(ExpiredChunk { removed, next })
}
