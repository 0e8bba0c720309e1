//! The memory model's rows: `answers` (the review log) and `memory` (each
//! error's state, a cache of the fold of its reviews), with their column
//! lists and mappings, written once, here.

use r2d2_sqlite::rusqlite::{self, types::Type, Row};

use super::columns::{from_micros, uuid_column};
use crate::domain::{ErrorKey, Grade, MemoryState, ReviewKind};
use crate::store::{ItemMemory, StoredReview};

/// The columns of `answers` but `user_id`, in [`ReviewRow`]'s order.
macro_rules! review_columns {
    () => {
        "answer_id, kind, exercise_id, category_key, subcategory_key, category, subcategory, \
         grade, correct, answered_at"
    };
}
pub(super) use review_columns;

/// One review of the log.
pub(super) struct ReviewRow;

impl ReviewRow {
    pub fn from_row(r: &Row<'_>) -> rusqlite::Result<StoredReview> {
        let kind: String = r.get(1)?;
        let grade: i8 = r.get(7)?;
        let invalid = |index: usize, what: String| {
            rusqlite::Error::FromSqlConversionFailure(index, Type::Text, what.into())
        };
        Ok(StoredReview {
            review_id: uuid_column(r, 0)?,
            kind: ReviewKind::parse(&kind).ok_or_else(|| invalid(1, format!("kind {kind:?}")))?,
            exercise_id: r.get(2)?,
            key: ErrorKey {
                category: r.get(3)?,
                subcategory: r.get(4)?,
            },
            category: r.get(5)?,
            subcategory: r.get(6)?,
            grade: Grade::from_rating(grade).ok_or_else(|| invalid(7, format!("grade {grade}")))?,
            correct: r.get(8)?,
            at: from_micros(r.get(9)?),
        })
    }
}

/// The columns of `memory` but `user_id`, in [`MemoryRow`]'s order.
macro_rules! memory_columns {
    () => {
        "category_key, subcategory_key, category, subcategory, stability, difficulty, \
         last_review, due, reviews, lapses"
    };
}
pub(super) use memory_columns;

/// One error's memory state.
pub(super) struct MemoryRow;

impl MemoryRow {
    pub fn from_row(r: &Row<'_>) -> rusqlite::Result<ItemMemory> {
        Ok(ItemMemory {
            key: ErrorKey {
                category: r.get(0)?,
                subcategory: r.get(1)?,
            },
            category: r.get(2)?,
            subcategory: r.get(3)?,
            state: MemoryState {
                stability: r.get(4)?,
                difficulty: r.get(5)?,
                last_review: from_micros(r.get(6)?),
                due: from_micros(r.get(7)?),
                reviews: r.get(8)?,
                lapses: r.get(9)?,
            },
        })
    }
}
