//! What the memory model's backends keep and return: answers and lapses
//! (the review log), and each error's memory state folded from them.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{ErrorKey, Grade, MemoryState, Review, ReviewKind};

/// A graded answer to an exercise, about to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAnswer {
    pub user_id: Uuid,
    /// From the request's identity (see `domain::answers::answer_id`).
    pub answer_id: Uuid,
    pub exercise_id: String,
    pub key: ErrorKey,
    pub category: String,
    pub subcategory: String,
    pub grade: Grade,
    /// Whether errata found the response right (`None`: graded by the
    /// client).
    pub correct: Option<bool>,
    pub answered_at: DateTime<Utc>,
}

/// One review as stored: an answer, or a day the learner's speech showed
/// the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReview {
    pub review_id: Uuid,
    pub kind: ReviewKind,
    /// The exercise answered (`None` for a lapse).
    pub exercise_id: Option<String>,
    pub key: ErrorKey,
    pub category: String,
    pub subcategory: String,
    pub grade: Grade,
    pub correct: Option<bool>,
    pub at: DateTime<Utc>,
}

impl StoredReview {
    pub fn review(&self) -> Review {
        Review {
            review_id: self.review_id,
            at: self.at,
            grade: self.grade,
            kind: self.kind,
        }
    }
}

impl From<&NewAnswer> for StoredReview {
    fn from(a: &NewAnswer) -> Self {
        Self {
            review_id: a.answer_id,
            kind: ReviewKind::Answer,
            exercise_id: Some(a.exercise_id.clone()),
            key: a.key.clone(),
            category: a.category.clone(),
            subcategory: a.subcategory.clone(),
            grade: a.grade,
            correct: a.correct,
            at: a.answered_at,
        }
    }
}

/// What storing an answer did.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerOutcome {
    /// The answer as stored: the first one, for a retry.
    pub answer: StoredReview,
    /// The answer had already been given (a retry).
    pub duplicate: bool,
    /// The error's memory state with the answer counted.
    pub state: Option<MemoryState>,
}

/// One error's memory state, with the spelling it is shown in.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemMemory {
    pub key: ErrorKey,
    pub category: String,
    pub subcategory: String,
    pub state: MemoryState,
}

/// The reviews of `reviews` grouped by error, each folded: the memory
/// of every error they touch, spelled as its earliest review.
pub fn fold_items(
    reviews: impl IntoIterator<Item = StoredReview>,
    tz: crate::domain::Timezone,
) -> Vec<ItemMemory> {
    use std::collections::BTreeMap;
    let mut by_item: BTreeMap<ErrorKey, Vec<StoredReview>> = BTreeMap::new();
    for review in reviews {
        by_item.entry(review.key.clone()).or_default().push(review);
    }
    let model = crate::domain::MemoryModel::standard();
    by_item
        .into_iter()
        .filter_map(|(key, mut reviews)| {
            reviews.sort_by_key(|r| r.at);
            let first = reviews.first()?.clone();
            let state = model.fold(reviews.iter().map(StoredReview::review), tz)?;
            Some(ItemMemory {
                key,
                category: first.category,
                subcategory: first.subcategory,
                state,
            })
        })
        .collect()
}
