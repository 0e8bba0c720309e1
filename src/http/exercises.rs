//! Personalised practice: the learner's top errors and exercises for them.

use std::collections::HashMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, Detail, ValidationDetail};
use super::errors::FrequencyBody;
use super::extract::{in_range, QueryParams};
use super::AppState;
use crate::domain::{ErrorKey, Exercise, OwnSentence};
use crate::store::RecentError;

/// How many of the latest error events are searched for the learner's own
/// sentences.
const RECENT_WINDOW: usize = 200;
/// The latest events are read in this smaller window first; the full window
/// is read only when the small one cannot already decide every top error's
/// sentences (the result is the same either way: the small window is the
/// start of the full one).
const FIRST_WINDOW: usize = 48;
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
    pub top_n: Option<i64>,
    /// Exercises per top error, 1 to 10 (default 2).
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

    let table = state.store.frequencies(user_id).await?;
    let top = table.top(top_n);
    if top.is_empty() {
        return Err(ApiError::NotFound(
            "No errors found for the given user".into(),
        ));
    }
    let (recent, round) = tokio::try_join!(
        state.store.recent_errors(user_id, FIRST_WINDOW),
        state.store.next_exercise_round(user_id),
    )?;
    let whole_history = recent.len() < FIRST_WINDOW;
    let mut own = own_sentences(recent);
    let decided = top.iter().all(|error| {
        own.get(&error.key)
            .is_some_and(|s| s.len() >= OWN_SENTENCES_PER_ERROR)
    });
    if !whole_history && !decided {
        own = own_sentences(state.store.recent_errors(user_id, RECENT_WINDOW).await?);
    }
    let exercises = top
        .iter()
        .flat_map(|error| {
            let mine = own.get(&error.key).map(Vec::as_slice).unwrap_or_default();
            state.bank.exercises_for(error, mine, per_error, round)
        })
        .collect();
    Ok(Json(PracticeBody {
        user_id,
        top_errors: top.iter().map(FrequencyBody::from).collect(),
        exercises,
    }))
}

/// The learner's latest distinct sentences for each error they carried.
fn own_sentences(recent: Vec<RecentError>) -> HashMap<ErrorKey, Vec<OwnSentence>> {
    let mut own: HashMap<ErrorKey, Vec<OwnSentence>> = HashMap::new();
    for event in recent {
        let Some(text) = event.utterance.filter(|t| !t.trim().is_empty()) else {
            continue;
        };
        let sentences = own.entry(event.key).or_default();
        if sentences.len() < OWN_SENTENCES_PER_ERROR
            && !sentences
                .iter()
                .any(|s| s.utterance_id == event.utterance_id)
        {
            sentences.push(OwnSentence {
                utterance_id: event.utterance_id,
                text,
            });
        }
    }
    own
}
