//! How well a learner remembers each of their errors: the FSRS model
//! (FSRS-6, default parameters) folded over the error's reviews.
//!
//! Each error of a learner is one item. Its reviews are the graded answers
//! to exercises for it and the days on which the learner's speech showed it
//! (a failed recall, `again`). The memory state is a pure function of that
//! set of reviews — whatever order they were stored in — so every backend
//! keeps the reviews as the source of truth and the state as a cache of
//! [`MemoryModel::fold`].

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::LazyLock;

use chrono::{DateTime, TimeDelta, Utc};
use fsrs::{current_retrievability, MemoryState as Fsrs, DEFAULT_PARAMETERS, FSRS};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ErrorKey, ScoredError, Timezone};

/// The recall probability a due date aims at: an item falls due when the
/// model expects the learner to recall it nine times in ten.
pub const DESIRED_RETENTION: f32 = 0.9;

/// How a review went, from forgotten to effortless.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Grade {
    Again,
    Hard,
    Good,
    Easy,
}

impl Grade {
    pub const ALL: [Grade; 4] = [Grade::Again, Grade::Hard, Grade::Good, Grade::Easy];

    /// FSRS's rating: 1 (again) to 4 (easy); also how grades are stored.
    pub fn rating(self) -> i8 {
        match self {
            Self::Again => 1,
            Self::Hard => 2,
            Self::Good => 3,
            Self::Easy => 4,
        }
    }

    pub fn from_rating(rating: i8) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.rating() == rating)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Again => "again",
            Self::Hard => "hard",
            Self::Good => "good",
            Self::Easy => "easy",
        }
    }
}

/// Where a review came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReviewKind {
    /// A graded answer to an exercise.
    Answer,
    /// The learner's speech showed the error: a failed recall.
    Lapse,
}

impl ReviewKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answer => "answer",
            Self::Lapse => "lapse",
        }
    }

    pub fn parse(stored: &str) -> Option<Self> {
        match stored {
            "answer" => Some(Self::Answer),
            "lapse" => Some(Self::Lapse),
            _ => None,
        }
    }
}

/// One review of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Review {
    pub review_id: Uuid,
    pub at: DateTime<Utc>,
    pub grade: Grade,
    pub kind: ReviewKind,
}

/// The identity of a lapse: one per learner, error and day, so the speech
/// errors of one day write one review however many there were.
pub fn lapse_id(user_id: Uuid, key: &ErrorKey, day: chrono::NaiveDate) -> Uuid {
    Uuid::new_v5(&user_id, format!("lapse/{}/{day}", key.encode()).as_bytes())
}

/// An item's memory after its reviews.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryState {
    /// Days after which recall falls to 90 %.
    pub stability: f64,
    /// 1 (easy) to 10 (hard): how much each review raises stability.
    pub difficulty: f64,
    pub last_review: DateTime<Utc>,
    /// When recall is expected to fall to [`DESIRED_RETENTION`]: the start
    /// of that day in the learner's time zone.
    pub due: DateTime<Utc>,
    /// Reviews that counted (lapses on a day already lapsed do not).
    pub reviews: u32,
    /// Reviews graded `again`.
    pub lapses: u32,
}

/// FSRS with its default parameters.
pub struct MemoryModel {
    fsrs: FSRS,
}

static MODEL: LazyLock<MemoryModel> = LazyLock::new(|| MemoryModel {
    // The crate's own default parameters always pass its validation.
    fsrs: FSRS::new(&DEFAULT_PARAMETERS).expect("FSRS accepts its default parameters"),
});

impl MemoryModel {
    /// The one model every backend and the simulation use.
    pub fn standard() -> &'static Self {
        &MODEL
    }

    /// The memory state after `reviews` (`None` when none counts), the
    /// same whatever order they come in:
    /// - a review stored more than once (same id) counts once, at its
    ///   earliest time;
    /// - reviews are taken in time order, ties by id;
    /// - of the lapses of one day in the learner's time zone only the
    ///   first counts;
    /// - the days between two reviews are counted in that time zone.
    pub fn fold(
        &self,
        reviews: impl IntoIterator<Item = Review>,
        tz: Timezone,
    ) -> Option<MemoryState> {
        let mut state: Option<(Fsrs, MemoryState)> = None;
        for review in counted(reviews, tz) {
            let elapsed = match &state {
                Some((_, s)) => (tz.day_of(review.at) - tz.day_of(s.last_review))
                    .num_days()
                    .max(0),
                None => 0,
            };
            let previous = state.as_ref().map(|(f, _)| *f);
            let Ok(next) = self.fsrs.next_states(
                previous,
                DESIRED_RETENTION,
                u32::try_from(elapsed).unwrap_or(u32::MAX),
            ) else {
                // Not finite: cannot happen from valid states; the review
                // is passed over rather than poisoning the item.
                continue;
            };
            let chosen = match review.grade {
                Grade::Again => next.again,
                Grade::Hard => next.hard,
                Grade::Good => next.good,
                Grade::Easy => next.easy,
            };
            let (reviews, lapses) = state.map_or((0, 0), |(_, s)| (s.reviews, s.lapses));
            let days = chosen.interval.round().max(1.0) as i64;
            let due_day = tz.day_of(review.at) + TimeDelta::days(days);
            state = Some((
                chosen.memory,
                MemoryState {
                    stability: f64::from(chosen.memory.stability),
                    difficulty: f64::from(chosen.memory.difficulty),
                    last_review: review.at,
                    due: tz.start_of(due_day),
                    reviews: reviews + 1,
                    lapses: lapses + u32::from(review.grade == Grade::Again),
                },
            ));
        }
        state.map(|(_, s)| s)
    }

    /// The probability that the learner recalls the item at `now`.
    pub fn retrievability(&self, state: &MemoryState, now: DateTime<Utc>) -> f64 {
        let days = (now - state.last_review).num_milliseconds().max(0) as f32 / 86_400_000.0;
        let memory = Fsrs {
            stability: state.stability as f32,
            difficulty: state.difficulty as f32,
        };
        f64::from(current_retrievability(memory, days, DEFAULT_PARAMETERS[20]))
    }
}

/// The reviews that count, in the order they are folded (see
/// [`MemoryModel::fold`]).
pub fn counted(reviews: impl IntoIterator<Item = Review>, tz: Timezone) -> Vec<Review> {
    let mut earliest: HashMap<Uuid, Review> = HashMap::new();
    for review in reviews {
        earliest
            .entry(review.review_id)
            .and_modify(|kept| {
                if review.at < kept.at {
                    *kept = review;
                }
            })
            .or_insert(review);
    }
    let mut ordered: Vec<Review> = earliest.into_values().collect();
    ordered.sort_by(|a, b| a.at.cmp(&b.at).then(a.review_id.cmp(&b.review_id)));
    let mut lapsed_on = None;
    ordered.retain(|review| {
        if review.kind != ReviewKind::Lapse {
            return true;
        }
        let day = tz.day_of(review.at);
        let first = lapsed_on != Some(day);
        lapsed_on = Some(day);
        first
    });
    ordered
}

/// The learner's errors ordered for practice by how likely they are to be
/// forgotten now: lowest retrievability first, ties by `recent` order
/// (its decayed frequency). An error with no memory state yet (recorded
/// before reviews were kept) scores 0: nothing says it is remembered.
pub fn rank_due(
    recent: Vec<ScoredError>,
    states: &HashMap<ErrorKey, MemoryState>,
    now: DateTime<Utc>,
    n: usize,
) -> Vec<ScoredError> {
    let model = MemoryModel::standard();
    let mut ranked: Vec<(usize, ScoredError)> = recent
        .into_iter()
        .enumerate()
        .map(|(order, scored)| {
            let retrievability = states
                .get(&scored.error.key)
                .map_or(0.0, |s| model.retrievability(s, now));
            (
                order,
                ScoredError {
                    score: retrievability,
                    error: scored.error,
                },
            )
        })
        .collect();
    ranked.sort_by(|(ia, a), (ib, b)| {
        a.score
            .partial_cmp(&b.score)
            .unwrap_or(Ordering::Equal)
            .then(ia.cmp(ib))
    });
    ranked.into_iter().take(n).map(|(_, s)| s).collect()
}

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;
