//! Personalised practice: the learner's top errors and exercises for them.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, Detail, ValidationDetail};
use super::error_points::FrequencyBody;
use super::extract::{in_range, QueryParams};
use super::AppState;
use crate::domain::Exercise;
use crate::store::PracticeQuery;

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
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PracticeBody {
    pub user_id: Uuid,
    /// The learner's most frequent errors, most frequent first.
    pub top_errors: Vec<FrequencyBody>,
    /// `per_error` exercises for each top error, in the same order.
    pub exercises: Vec<Exercise>,
}

/// The learner's most frequent errors and exercises targeting them.
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
    let user_id = query.user_id;

    let query = PracticeQuery {
        top_n,
        sentences_per_error: OWN_SENTENCES_PER_ERROR,
        window: RECENT_WINDOW,
    };
    let inputs = state.store.practice_inputs(user_id, query).await?;
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
        top_errors: inputs.top.iter().map(FrequencyBody::from).collect(),
        exercises,
    }))
}
