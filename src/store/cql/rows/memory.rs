//! The rows of the memory model's tables (`cql/005_memory.cql`): the
//! review log (`answers`) and each error's state (`memory`).

use scylla::value::CqlTimestamp;
use scylla::{DeserializeRow, SerializeRow};
use uuid::Uuid;

use super::bucket;
use crate::domain::{ErrorKey, Grade, ReviewKind};
use crate::store::cql::session::{from_timestamp, timestamp};
use crate::store::{ItemMemory, StoredReview};

/// Writes one review (an answer, or a lapse).
pub const INSERT_REVIEW: &str =
    "INSERT INTO answers (user_id, bucket, answered_at, answer_id, kind, \
     exercise_id, category_key, subcategory_key, category, subcategory, grade, correct) \
     VALUES (:user_id, :bucket, :answered_at, :answer_id, :kind, :exercise_id, \
     :category_key, :subcategory_key, :category, :subcategory, :grade, :correct)";

/// A row of `answers`: one review.
#[derive(Debug, Clone, SerializeRow, DeserializeRow)]
pub struct ReviewRow {
    pub user_id: Uuid,
    pub bucket: i32,
    pub answered_at: CqlTimestamp,
    pub answer_id: Uuid,
    pub kind: Option<String>,
    pub exercise_id: Option<String>,
    #[scylla(default_when_null)]
    pub category_key: String,
    #[scylla(default_when_null)]
    pub subcategory_key: String,
    #[scylla(default_when_null)]
    pub category: String,
    #[scylla(default_when_null)]
    pub subcategory: String,
    #[scylla(default_when_null)]
    pub grade: i8,
    pub correct: Option<bool>,
}

impl ReviewRow {
    pub fn new(user_id: Uuid, r: &StoredReview) -> Self {
        Self {
            user_id,
            bucket: bucket(r.at),
            answered_at: timestamp(r.at),
            answer_id: r.review_id,
            kind: Some(r.kind.as_str().to_owned()),
            exercise_id: r.exercise_id.clone(),
            category_key: r.key.category.clone(),
            subcategory_key: r.key.subcategory.clone(),
            category: r.category.clone(),
            subcategory: r.subcategory.clone(),
            grade: r.grade.rating(),
            correct: r.correct,
        }
    }

    /// The review, unless the row is not one this version wrote.
    pub fn into_review(self) -> Option<StoredReview> {
        Some(StoredReview {
            review_id: self.answer_id,
            kind: ReviewKind::parse(self.kind.as_deref()?)?,
            exercise_id: self.exercise_id,
            key: ErrorKey {
                category: self.category_key,
                subcategory: self.subcategory_key,
            },
            category: self.category,
            subcategory: self.subcategory,
            grade: Grade::from_rating(self.grade)?,
            correct: self.correct,
            at: from_timestamp(self.answered_at),
        })
    }
}

/// A row of `memory`: one error's state.
#[derive(Debug, Clone, PartialEq, SerializeRow, DeserializeRow)]
pub struct MemoryRow {
    pub user_id: Uuid,
    pub category_key: String,
    pub subcategory_key: String,
    #[scylla(default_when_null)]
    pub category: String,
    #[scylla(default_when_null)]
    pub subcategory: String,
    #[scylla(default_when_null)]
    pub stability: f64,
    #[scylla(default_when_null)]
    pub difficulty: f64,
    pub last_review: Option<CqlTimestamp>,
    pub due: Option<CqlTimestamp>,
    #[scylla(default_when_null)]
    pub reviews: i32,
    #[scylla(default_when_null)]
    pub lapses: i32,
}

impl MemoryRow {
    pub fn new(user_id: Uuid, item: &ItemMemory) -> Self {
        Self {
            user_id,
            category_key: item.key.category.clone(),
            subcategory_key: item.key.subcategory.clone(),
            category: item.category.clone(),
            subcategory: item.subcategory.clone(),
            stability: item.state.stability,
            difficulty: item.state.difficulty,
            last_review: Some(timestamp(item.state.last_review)),
            due: Some(timestamp(item.state.due)),
            reviews: i32::try_from(item.state.reviews).unwrap_or(i32::MAX),
            lapses: i32::try_from(item.state.lapses).unwrap_or(i32::MAX),
        }
    }
}
