//! The memory model in the embedded store. Writes run in the writer's
//! transaction: each change to an error's reviews (an answer, its undo, a
//! lapse, a new time zone) refolds that error's whole log and rewrites its
//! `memory` row in the same transaction. The single writer serialises
//! them, so the row always equals the ordered fold of the log, whatever
//! order the reviews came in.

use r2d2_sqlite::rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::columns::micros;
use super::connection::internal;
use super::lookups::{user, user_exists};
use super::memory_rows::{memory_columns, review_columns, MemoryRow, ReviewRow};
use crate::domain::{lapse_id, ErrorKey, Grade, MemoryModel, MemoryState, ReviewKind, Timezone};
use crate::store::{
    AnswerOutcome, ErrorReport, ItemMemory, NewAnswer, StoreError, StoredReview, User,
};

/// Stores the answer unless its id is already stored (a retry), and
/// refolds its error.
pub(super) fn record_answer(
    tx: &Connection,
    answer: NewAnswer,
) -> Result<AnswerOutcome, StoreError> {
    let learner = user(tx, answer.user_id)?.ok_or(StoreError::UserNotFound)?;
    if let Some(first) = review(tx, answer.user_id, answer.answer_id)? {
        let state = item_state(tx, answer.user_id, &first.key)?;
        return Ok(AnswerOutcome {
            answer: first,
            duplicate: true,
            state,
        });
    }
    let stored = StoredReview::from(&answer);
    insert_review(tx, answer.user_id, &stored)?;
    let state = refold(tx, answer.user_id, &stored.key, learner.tz())?;
    Ok(AnswerOutcome {
        answer: stored,
        duplicate: false,
        state,
    })
}

/// Removes the learner's answer `answer_id` and refolds its error; `false`
/// when they have no such answer.
pub(super) fn undo_answer(
    tx: &Connection,
    user_id: Uuid,
    answer_id: Uuid,
) -> Result<bool, StoreError> {
    let learner = user(tx, user_id)?.ok_or(StoreError::UserNotFound)?;
    let Some(answer) = review(tx, user_id, answer_id)?.filter(|r| r.kind == ReviewKind::Answer)
    else {
        return Ok(false);
    };
    tx.prepare_cached("DELETE FROM answers WHERE answer_id = ?1 AND user_id = ?2")
        .and_then(|mut s| s.execute([answer_id.to_string(), user_id.to_string()]))
        .map_err(internal)?;
    refold(tx, user_id, &answer.key, learner.tz())?;
    Ok(true)
}

/// One lapse per distinct error of the report, on the learner's day it
/// was received: a second report that day keeps the day's row (at the
/// earlier of the two times).
pub(super) fn record_lapses(tx: &Connection, report: &ErrorReport) -> Result<(), StoreError> {
    let Some(learner) = user(tx, report.user_id)? else {
        return Ok(());
    };
    let tz = learner.tz();
    let day = tz.day_of(report.received_at);
    for tally in report.tally() {
        let lapse = StoredReview {
            review_id: lapse_id(report.user_id, &tally.key, day),
            kind: ReviewKind::Lapse,
            exercise_id: None,
            category: tally.first.category.as_str().to_owned(),
            subcategory: tally.first.subcategory.as_str().to_owned(),
            key: tally.key,
            grade: Grade::Again,
            correct: None,
            at: report.received_at,
        };
        insert_review(tx, report.user_id, &lapse)?;
        refold(tx, report.user_id, &lapse.key, tz)?;
    }
    Ok(())
}

/// Sets the learner's time zone and refolds every error of theirs in it.
pub(super) fn set_timezone(
    tx: &Connection,
    user_id: Uuid,
    tz: Timezone,
) -> Result<User, StoreError> {
    if !user_exists(tx, user_id)? {
        return Err(StoreError::UserNotFound);
    }
    tx.prepare_cached("UPDATE users SET timezone = ?1 WHERE user_id = ?2")
        .and_then(|mut s| s.execute([tz.name(), &user_id.to_string()]))
        .map_err(internal)?;
    let keys: Vec<ErrorKey> = tx
        .prepare_cached(
            "SELECT DISTINCT category_key, subcategory_key FROM answers WHERE user_id = ?1",
        )
        .and_then(|mut s| {
            s.query_map([user_id.to_string()], |r| {
                Ok(ErrorKey {
                    category: r.get(0)?,
                    subcategory: r.get(1)?,
                })
            })?
            .collect()
        })
        .map_err(internal)?;
    for key in keys {
        refold(tx, user_id, &key, tz)?;
    }
    user(tx, user_id)?.ok_or(StoreError::UserNotFound)
}

fn insert_review(tx: &Connection, user_id: Uuid, r: &StoredReview) -> Result<(), StoreError> {
    tx.prepare_cached(concat!(
        "INSERT INTO answers (user_id, ",
        review_columns!(),
        ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
         ON CONFLICT (answer_id) DO UPDATE SET answered_at = min(answered_at, excluded.answered_at)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            user_id.to_string(),
            r.review_id.to_string(),
            r.kind.as_str(),
            r.exercise_id,
            r.key.category,
            r.key.subcategory,
            r.category,
            r.subcategory,
            r.grade.rating(),
            r.correct,
            micros(r.at)
        ])
    })
    .map(drop)
    .map_err(internal)
}

fn review(
    conn: &Connection,
    user_id: Uuid,
    review_id: Uuid,
) -> Result<Option<StoredReview>, StoreError> {
    conn.prepare_cached(concat!(
        "SELECT ",
        review_columns!(),
        " FROM answers WHERE answer_id = ?1 AND user_id = ?2"
    ))
    .and_then(|mut s| {
        s.query_row(
            [review_id.to_string(), user_id.to_string()],
            ReviewRow::from_row,
        )
        .optional()
    })
    .map_err(internal)
}

/// Folds the error's whole log and rewrites its memory row (removing it
/// when no review is left).
fn refold(
    tx: &Connection,
    user_id: Uuid,
    key: &ErrorKey,
    tz: Timezone,
) -> Result<Option<MemoryState>, StoreError> {
    let reviews: Vec<StoredReview> = tx
        .prepare_cached(concat!(
            "SELECT ",
            review_columns!(),
            " FROM answers WHERE user_id = ?1 AND category_key = ?2 AND subcategory_key = ?3 \
             ORDER BY answered_at"
        ))
        .and_then(|mut s| {
            s.query_map(
                params![user_id.to_string(), key.category, key.subcategory],
                ReviewRow::from_row,
            )?
            .collect()
        })
        .map_err(internal)?;
    let Some(first) = reviews.first() else {
        tx.prepare_cached(
            "DELETE FROM memory WHERE user_id = ?1 AND category_key = ?2 AND subcategory_key = ?3",
        )
        .and_then(|mut s| s.execute(params![user_id.to_string(), key.category, key.subcategory]))
        .map_err(internal)?;
        return Ok(None);
    };
    let (category, subcategory) = (first.category.clone(), first.subcategory.clone());
    let state = MemoryModel::standard().fold(reviews.iter().map(StoredReview::review), tz);
    if let Some(s) = &state {
        tx.prepare_cached(concat!(
            "INSERT OR REPLACE INTO memory (user_id, ",
            memory_columns!(),
            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
        ))
        .and_then(|mut st| {
            st.execute(params![
                user_id.to_string(),
                key.category,
                key.subcategory,
                category,
                subcategory,
                s.stability,
                s.difficulty,
                micros(s.last_review),
                micros(s.due),
                s.reviews,
                s.lapses
            ])
        })
        .map_err(internal)?;
    }
    Ok(state)
}

fn item_state(
    conn: &Connection,
    user_id: Uuid,
    key: &ErrorKey,
) -> Result<Option<MemoryState>, StoreError> {
    conn.prepare_cached(concat!(
        "SELECT ",
        memory_columns!(),
        " FROM memory WHERE user_id = ?1 AND category_key = ?2 AND subcategory_key = ?3"
    ))
    .and_then(|mut s| {
        s.query_row(
            params![user_id.to_string(), key.category, key.subcategory],
            MemoryRow::from_row,
        )
        .optional()
    })
    .map(|item| item.map(|i| i.state))
    .map_err(internal)
}

/// The learner's answers (not lapses), newest first.
pub(super) fn answers(
    conn: &Connection,
    user_id: Uuid,
    limit: usize,
) -> Result<Vec<StoredReview>, StoreError> {
    if !user_exists(conn, user_id)? {
        return Err(StoreError::UserNotFound);
    }
    conn.prepare_cached(concat!(
        "SELECT ",
        review_columns!(),
        " FROM answers WHERE user_id = ?1 AND kind = 'answer' \
         ORDER BY answered_at DESC, answer_id DESC LIMIT ?2"
    ))
    .and_then(|mut s| {
        s.query_map(
            params![user_id.to_string(), limit as i64],
            ReviewRow::from_row,
        )?
        .collect()
    })
    .map_err(internal)
}

/// A page of the learner's reviews, answers and lapses, by id after
/// `after`, for the export.
pub(super) fn reviews_page(
    conn: &Connection,
    user_id: Uuid,
    after: &str,
    limit: usize,
) -> Result<Vec<StoredReview>, StoreError> {
    conn.prepare_cached(concat!(
        "SELECT ",
        review_columns!(),
        " FROM answers WHERE user_id = ?1 AND answer_id > ?2 ORDER BY answer_id LIMIT ?3"
    ))
    .and_then(|mut s| {
        s.query_map(
            params![user_id.to_string(), after, limit as i64],
            ReviewRow::from_row,
        )?
        .collect()
    })
    .map_err(internal)
}

/// Every error's memory state.
pub(super) fn memory(conn: &Connection, user_id: Uuid) -> Result<Vec<ItemMemory>, StoreError> {
    if !user_exists(conn, user_id)? {
        return Err(StoreError::UserNotFound);
    }
    conn.prepare_cached(concat!(
        "SELECT ",
        memory_columns!(),
        " FROM memory WHERE user_id = ?1"
    ))
    .and_then(|mut s| {
        s.query_map([user_id.to_string()], MemoryRow::from_row)?
            .collect()
    })
    .map_err(internal)
}

/// The AI's correction of the learner's sentence for the error.
pub(super) fn own_correction(
    conn: &Connection,
    user_id: Uuid,
    utterance_id: Uuid,
    key: &ErrorKey,
) -> Result<Option<String>, StoreError> {
    conn.prepare_cached(
        "SELECT correction FROM error_events WHERE user_id = ?1 AND utterance_id = ?2 \
         AND category_key = ?3 AND subcategory_key = ?4 AND correction IS NOT NULL \
         ORDER BY event_id LIMIT 1",
    )
    .and_then(|mut s| {
        s.query_row(
            params![
                user_id.to_string(),
                utterance_id.to_string(),
                key.category,
                key.subcategory
            ],
            |r| r.get(0),
        )
        .optional()
    })
    .map_err(internal)
}
