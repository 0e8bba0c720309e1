//! Personalised practice: the learner's top errors and exercises for them.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, Detail, ValidationDetail};
use super::extract::{in_range, QueryParams};
use super::AppState;
use crate::domain::weeks::MAX_HALF_LIFE_DAYS;
use std::sync::Arc;

use crate::domain::{rank_due, week_start, Decay, ErrorFrequency, Exercise, ScoredError};
use crate::store::{PracticeInputs, PracticeQuery, Rank};

/// How many of the latest error events are searched for the learner's own
/// sentences.
const RECENT_WINDOW: usize = 200;
/// At most this many of the learner's own sentences per error.
const OWN_SENTENCES_PER_ERROR: usize = 3;

pub fn router() -> Router<AppState> {
    Router::new().route("/generate-exercise", get(generate_exercise))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExerciseQuery {
    pub user_id: Uuid,
    /// How many top errors, 1 to 50 (default 5).
    #[param(minimum = 1, maximum = 50)]
    pub top_n: Option<i64>,
    /// Exercises per top error, 1 to 10 (default 2).
    #[param(minimum = 1, maximum = 10)]
    pub per_error: Option<i64>,
    /// How the top errors are chosen (default `frequency`).
    pub rank: Option<RankParam>,
    /// For `rank=recent`: after how many days a week's errors weigh half,
    /// 1 to 365 (default 14).
    #[param(minimum = 1, maximum = 365)]
    pub half_life_days: Option<i64>,
}

/// How the top errors are ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RankParam {
    /// By all-time count.
    #[default]
    Frequency,
    /// By weekly counts decayed by age: Σ count × 2^(−age_days / half_life_days).
    Recent,
    /// By the memory model's current retrievability, lowest (most likely
    /// forgotten) first; ties by the `recent` order.
    Due,
}

/// One of the learner's top errors.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopErrorBody {
    #[serde(rename = "errorCategory")]
    pub error_category: String,
    #[serde(rename = "errorSubCategory")]
    pub error_sub_category: String,
    /// The all-time count, whatever the ranking.
    #[serde(rename = "errorFrequency")]
    pub error_frequency: i64,
    /// The score the error was ranked by: the decayed count for
    /// `rank=recent`, the retrievability (0 to 1) for `rank=due`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

impl TopErrorBody {
    pub fn new(e: &ErrorFrequency, score: Option<f64>) -> Self {
        Self {
            error_category: e.category.clone(),
            error_sub_category: e.subcategory.clone(),
            error_frequency: e.frequency,
            score,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PracticeBody {
    pub user_id: Uuid,
    /// The learner's top errors, in rank order.
    pub top_errors: Vec<TopErrorBody>,
    /// `per_error` exercises for each top error, in the same order.
    pub exercises: Vec<Exercise>,
}

/// The learner's top errors (most frequent, or with `rank=recent` the most
/// frequent lately) and exercises targeting them, each with its answer.
/// Consecutive calls rotate through the available exercises.
#[utoipa::path(get, path = "/generate-exercise", tag = "exercises",
    params(ExerciseQuery),
    responses(
        (status = 200, body = PracticeBody),
        (status = 404, description = "User not found, or No errors found for the given user", body = Detail),
        (status = 422, body = ValidationDetail),
    ))]
#[tracing::instrument(name = "generate_exercise", skip_all, fields(user_id = %query.user_id))]
pub async fn generate_exercise(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<ExerciseQuery>,
) -> Result<Json<PracticeBody>, ApiError> {
    let top_n = in_range(["query", "top_n"], query.top_n.unwrap_or(5), 1, 50)? as usize;
    let per_error = in_range(["query", "per_error"], query.per_error.unwrap_or(2), 1, 10)? as usize;
    let half_life = in_range(
        ["query", "half_life_days"],
        query.half_life_days.unwrap_or(14),
        1,
        i64::from(MAX_HALF_LIFE_DAYS),
    )?;
    let now = state.clock.now();
    let recent = Rank::Recent {
        decay: Decay::new(half_life as u32),
        current_week: week_start(now),
    };
    let user_id = query.user_id;
    let rank = match query.rank.unwrap_or_default() {
        RankParam::Frequency => Rank::Frequency,
        RankParam::Recent => recent,
        RankParam::Due => {
            return practice(
                &state,
                due_inputs(&state, user_id, recent, top_n).await?,
                user_id,
                per_error,
            )
            .await
        }
    };

    let query = PracticeQuery {
        top_n,
        sentences_per_error: OWN_SENTENCES_PER_ERROR,
        window: RECENT_WINDOW,
        rank,
    };
    let inputs = state.store.practice_inputs(user_id, query).await?;
    practice(&state, inputs, user_id, per_error).await
}

/// The practice inputs of `rank=due`: every error ranked by `recent`,
/// reordered by the memory model, and the learner's own sentences for
/// the top ones.
async fn due_inputs(
    state: &AppState,
    user_id: Uuid,
    recent: Rank,
    top_n: usize,
) -> Result<Arc<PracticeInputs>, ApiError> {
    let since = recent
        .since()
        .unwrap_or_else(|| week_start(state.clock.now()));
    let (history, memory, latest) = tokio::try_join!(
        state.store.weekly_history(user_id, since),
        state.store.memory(user_id),
        state.store.recent_errors(user_id, RECENT_WINDOW),
    )?;
    let (top, scores) = history.top(recent, usize::MAX);
    let by_recency = top
        .into_iter()
        .zip(scores)
        .map(|(error, score)| ScoredError { error, score })
        .collect();
    let states = memory.into_iter().map(|m| (m.key, m.state)).collect();
    let ranked = rank_due(by_recency, &states, state.clock.now(), top_n);
    let (top, scores): (Vec<_>, Vec<_>) = ranked.into_iter().map(|s| (s.error, s.score)).unzip();
    let mut inputs = PracticeInputs::from_recent(top, &latest, OWN_SENTENCES_PER_ERROR);
    inputs.scores = scores;
    Ok(Arc::new(inputs))
}

/// The response for the ranked errors: exercises for each, moving the
/// learner's rotation along.
async fn practice(
    state: &AppState,
    inputs: Arc<PracticeInputs>,
    user_id: Uuid,
    per_error: usize,
) -> Result<Json<PracticeBody>, ApiError> {
    if inputs.top.is_empty() {
        return Err(ApiError::NotFound(
            "No errors found for the given user".into(),
        ));
    }
    // Only learners with errors move a rotation along (no state is kept for
    // unknown ids).
    let round = state.store.next_exercise_round(user_id).await?;
    let exercises = inputs
        .top
        .iter()
        .zip(&inputs.sentences)
        .flat_map(|(error, mine)| state.bank.exercises_for(error, mine, per_error, round))
        .collect();
    Ok(Json(PracticeBody {
        user_id,
        top_errors: inputs
            .top
            .iter()
            .enumerate()
            .map(|(i, e)| TopErrorBody::new(e, inputs.scores.get(i).copied()))
            .collect(),
        exercises,
    }))
}
