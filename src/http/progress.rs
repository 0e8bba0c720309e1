//! A learner's progress: their errors week by week.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, Detail, ValidationDetail};
use super::error_points::FrequencyBody;
use super::extract::{in_range, path_uuid, QueryParams};
use super::AppState;
use crate::domain::weeks::weeks_before;
use crate::domain::{week_start, weekly_progress};

/// Most weeks one progress request covers (a year).
pub const MAX_WEEKS: i64 = 52;

pub fn router() -> Router<AppState> {
    Router::new().route("/users/{user_id}/progress", get(progress))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProgressQuery {
    /// How many ISO weeks, the current one included, 1 to 52 (default 8).
    #[param(minimum = 1, maximum = 52)]
    pub weeks: Option<i64>,
}

/// One ISO week of the learner's errors.
#[derive(Debug, Serialize, ToSchema)]
pub struct WeekBody {
    /// The Monday (UTC) that starts the week.
    #[schema(value_type = String, format = Date, example = "2026-11-30")]
    pub week_start: NaiveDate,
    /// Error points recorded in the week.
    pub total: i64,
    /// The week's errors with their count that week, ranked like the top
    /// errors (most frequent first; ties to the most recent, then the name).
    pub errors: Vec<FrequencyBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProgressBody {
    pub user_id: Uuid,
    /// Oldest first, the current week last; weeks without errors included.
    pub weeks: Vec<WeekBody>,
}

/// The learner's errors per ISO week (Monday to Sunday, UTC), for the last
/// `weeks` weeks.
#[utoipa::path(get, path = "/users/{user_id}/progress", tag = "errors",
    params(("user_id" = Uuid, Path), ProgressQuery),
    responses((status = 200, body = ProgressBody), (status = 404, body = Detail), (status = 422, body = ValidationDetail)))]
#[tracing::instrument(name = "progress", skip(state, query))]
pub async fn progress(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    QueryParams(query): QueryParams<ProgressQuery>,
) -> Result<Json<ProgressBody>, ApiError> {
    let user_id = path_uuid("user_id", &user_id)?;
    let weeks = in_range(["query", "weeks"], query.weeks.unwrap_or(8), 1, MAX_WEEKS)? as u32;
    let current = week_start(state.clock.now());
    let since = weeks_before(current, weeks - 1);
    let history = state.store.weekly_history(user_id, since).await?;
    let weeks = weekly_progress(&history.table, &history.weeks, current, weeks)
        .into_iter()
        .map(|week| WeekBody {
            week_start: week.week_start,
            total: week.total,
            errors: week.errors.iter().map(FrequencyBody::from).collect(),
        })
        .collect();
    Ok(Json(ProgressBody { user_id, weeks }))
}
