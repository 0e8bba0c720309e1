//! Answers to exercises: graded, kept as reviews of the memory model,
//! listed and undone; and the schedule the model derives from them.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, Detail, FieldError, ValidationDetail};
use super::error_points::idempotency_key;
use super::extract::{in_range, path_uuid, JsonBody, QueryParams};
use super::AppState;
use crate::domain::answers::{answer_id, grade_of, MAX_EXERCISE_ID_CHARS, MAX_RESPONSE_CHARS};
use crate::domain::{
    is_correct, ErrorFrequency, ErrorKey, ErrorName, ExerciseRef, Grade, MemoryModel,
};
use crate::store::{ItemMemory, NewAnswer, StoredReview};

/// Most answers or schedule items one listing returns.
pub const MAX_LISTED: i64 = 500;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/users/{user_id}/answers",
            post(record_answer).get(list_answers),
        )
        .route("/users/{user_id}/answers/{answer_id}", delete(undo_answer))
        .route("/users/{user_id}/schedule", get(schedule))
}

/// An answer to an exercise: either the learner's `response`, which errata
/// grades against the exercise's answer key, or the client's own `grade`.
/// Exactly one of the two.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AnswerRequest {
    /// An exercise id as `/generate-exercise` gave it.
    #[schema(min_length = 1, max_length = 200, example = "grammar-sva-1")]
    pub exercise_id: String,
    /// The error practised: 1 to 64 characters once trimmed.
    #[serde(rename = "errorCategory")]
    #[schema(example = "Grammar")]
    pub error_category: String,
    #[serde(rename = "errorSubCategory")]
    #[schema(example = "Subject-Verb Agreement")]
    pub error_sub_category: String,
    /// What the learner wrote or chose. Case, surrounding whitespace and
    /// final punctuation do not matter: right is `good`, wrong `again`.
    #[serde(default)]
    #[schema(max_length = 10000, example = "goes")]
    pub response: Option<String>,
    /// The grade, for exercises graded by the client.
    #[serde(default)]
    pub grade: Option<Grade>,
    /// When the learner answered, RFC 3339 (default: now). The same
    /// exercise answered at the same time is the same answer.
    #[serde(default)]
    #[schema(
        pattern = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
    )]
    pub answered_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AnswerResultBody {
    pub answer_id: Uuid,
    /// Whether the response was right (null when the client graded).
    pub correct: Option<bool>,
    /// The exercise's answer key.
    pub expected: String,
    pub grade: Grade,
    /// When the error is next due for practice.
    pub next_due: Option<DateTime<Utc>>,
    /// A retry of an answer already counted.
    pub duplicate: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AnswerBody {
    pub answer_id: Uuid,
    pub exercise_id: String,
    #[serde(rename = "errorCategory")]
    pub error_category: String,
    #[serde(rename = "errorSubCategory")]
    pub error_sub_category: String,
    pub grade: Grade,
    pub correct: Option<bool>,
    pub answered_at: DateTime<Utc>,
}

impl From<StoredReview> for AnswerBody {
    fn from(r: StoredReview) -> Self {
        Self {
            answer_id: r.review_id,
            exercise_id: r.exercise_id.unwrap_or_default(),
            error_category: r.category,
            error_sub_category: r.subcategory,
            grade: r.grade,
            correct: r.correct,
            answered_at: r.at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AnswersBody {
    pub user_id: Uuid,
    /// Newest first.
    pub answers: Vec<AnswerBody>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// How many, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// One error's memory state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleItemBody {
    #[serde(rename = "errorCategory")]
    pub error_category: String,
    #[serde(rename = "errorSubCategory")]
    pub error_sub_category: String,
    /// The probability of recalling it now, 0 to 1.
    pub retrievability: f64,
    /// Days after its last review at which recall falls to 90 %.
    pub stability: f64,
    /// 1 (easy) to 10 (hard).
    pub difficulty: f64,
    /// The start of the learner's day on which recall is expected to fall
    /// to 90 %.
    pub due: DateTime<Utc>,
    pub last_review: DateTime<Utc>,
    /// Reviews counted: answers, and at most one lapse per day the error
    /// was heard in the learner's speech.
    pub reviews: u32,
    /// Reviews graded `again`.
    pub lapses: u32,
}

impl ScheduleItemBody {
    pub fn new(item: ItemMemory, now: DateTime<Utc>) -> Self {
        Self {
            retrievability: MemoryModel::standard().retrievability(&item.state, now),
            error_category: item.category,
            error_sub_category: item.subcategory,
            stability: item.state.stability,
            difficulty: item.state.difficulty,
            due: item.state.due,
            last_review: item.state.last_review,
            reviews: item.state.reviews,
            lapses: item.state.lapses,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleBody {
    pub user_id: Uuid,
    /// Soonest due first.
    pub items: Vec<ScheduleItemBody>,
}

/// The validated parts of an answer.
struct Checked {
    key: ErrorKey,
    category: String,
    subcategory: String,
}

fn check(body: &AnswerRequest) -> Result<Checked, ApiError> {
    let mut failures = Vec::new();
    let fail = |field: &str, msg: String| FieldError::new(["body", field], msg, "value_error");
    let category = ErrorName::parse(&body.error_category)
        .map_err(|e| failures.push(fail("errorCategory", format!("errorCategory {e}"))))
        .ok();
    let subcategory = ErrorName::parse(&body.error_sub_category)
        .map_err(|e| failures.push(fail("errorSubCategory", format!("errorSubCategory {e}"))))
        .ok();
    let id_chars = body.exercise_id.chars().count();
    if id_chars == 0 || id_chars > MAX_EXERCISE_ID_CHARS {
        failures.push(fail(
            "exercise_id",
            "exercise_id must be 1 to 200 characters".into(),
        ));
    }
    if body
        .response
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_RESPONSE_CHARS)
    {
        failures.push(fail(
            "response",
            "response must be at most 10000 characters".into(),
        ));
    }
    if body.response.is_some() == body.grade.is_some() {
        failures.push(FieldError::new(
            ["body"],
            "exactly one of response and grade is required",
            "value_error",
        ));
    }
    match (category, subcategory) {
        (Some(category), Some(subcategory)) if failures.is_empty() => Ok(Checked {
            key: ErrorKey {
                category: category.key().to_owned(),
                subcategory: subcategory.key().to_owned(),
            },
            category: category.as_str().to_owned(),
            subcategory: subcategory.as_str().to_owned(),
        }),
        _ => Err(ApiError::Validation(failures)),
    }
}

/// The answer key of the exercise, for this error of this learner.
async fn answer_key(
    state: &AppState,
    user_id: Uuid,
    exercise_id: &str,
    checked: &Checked,
) -> Result<String, ApiError> {
    let not_found = || ApiError::NotFound("Exercise not found".into());
    match ExerciseRef::parse(exercise_id, &checked.key).ok_or_else(not_found)? {
        ExerciseRef::Bank(id) => {
            let error = ErrorFrequency {
                key: checked.key.clone(),
                category: checked.category.clone(),
                subcategory: checked.subcategory.clone(),
                frequency: 0,
                last_seen: None,
            };
            state.bank.answer_key(&id, &error).ok_or_else(not_found)
        }
        ExerciseRef::OwnSentence { utterance_id } => state
            .store
            .own_correction(user_id, utterance_id, &checked.key)
            .await?
            .ok_or_else(not_found),
    }
}

/// Records the learner's answer to an exercise, graded (from `response`
/// against the answer key, or the client's `grade`), as a review of the
/// error's memory. A retry (same `Idempotency-Key`, or same exercise and
/// `answered_at`) counts once and answers 200 with the first answer.
#[utoipa::path(post, path = "/users/{user_id}/answers", tag = "practice",
    request_body = AnswerRequest,
    params(("user_id" = Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~](?:[\t -~]{0,253}[!-~])?$",
            description = "identifies an answer across retries: 1 to 255 visible ASCII characters")),
    responses(
        (status = 201, body = AnswerResultBody),
        (status = 200, description = "A retry: the first answer, with duplicate true", body = AnswerResultBody),
        (status = 404, description = "User not found, or Exercise not found", body = Detail),
        (status = 422, body = ValidationDetail),
    ))]
#[tracing::instrument(name = "record_answer", skip_all, fields(user_id = %user_id))]
pub async fn record_answer(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<AnswerRequest>,
) -> Result<(StatusCode, Json<AnswerResultBody>), ApiError> {
    let user_id = path_uuid("user_id", &user_id)?;
    let checked = check(&body)?;
    let key = idempotency_key(&headers)?;
    if state.store.user(user_id).await?.is_none() {
        return Err(ApiError::NotFound("User not found".into()));
    }
    let expected = answer_key(&state, user_id, &body.exercise_id, &checked).await?;
    let (grade, correct) = match (&body.response, body.grade) {
        (Some(response), _) => {
            let correct = is_correct(&expected, response);
            (grade_of(correct), Some(correct))
        }
        (None, Some(grade)) => (grade, None),
        (None, None) => return Err(ApiError::Internal("an answer without a grade".into())),
    };
    let answered_at = body.answered_at.map(|t| t.trunc_subsecs(3));
    let outcome = state
        .store
        .record_answer(NewAnswer {
            user_id,
            answer_id: answer_id(user_id, key, &body.exercise_id, answered_at),
            exercise_id: body.exercise_id,
            key: checked.key,
            category: checked.category,
            subcategory: checked.subcategory,
            grade,
            correct,
            answered_at: answered_at.unwrap_or_else(|| state.clock.now()),
        })
        .await?;
    let status = if outcome.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    metrics::counter!("errata_answers_recorded_total").increment(u64::from(!outcome.duplicate));
    Ok((
        status,
        Json(AnswerResultBody {
            answer_id: outcome.answer.review_id,
            correct: outcome.answer.correct,
            expected,
            grade: outcome.answer.grade,
            next_due: outcome.state.map(|s| s.due),
            duplicate: outcome.duplicate,
        }),
    ))
}

/// Undoes an answer: the error's memory is refolded as if it had never
/// been given.
#[utoipa::path(delete, path = "/users/{user_id}/answers/{answer_id}", tag = "practice",
    params(("user_id" = Uuid, Path), ("answer_id" = Uuid, Path)),
    responses(
        (status = 204, description = "Undone"),
        (status = 404, description = "User not found, or Answer not found", body = Detail),
        (status = 422, body = ValidationDetail),
    ))]
#[tracing::instrument(name = "undo_answer", skip(state))]
pub async fn undo_answer(
    State(state): State<AppState>,
    Path((user_id, answer_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let user_id = path_uuid("user_id", &user_id)?;
    let answer_id = path_uuid("answer_id", &answer_id)?;
    if state.store.undo_answer(user_id, answer_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("Answer not found".into()))
    }
}

/// The learner's answers, newest first.
#[utoipa::path(get, path = "/users/{user_id}/answers", tag = "practice",
    params(("user_id" = Uuid, Path), ListQuery),
    responses(
        (status = 200, body = AnswersBody),
        (status = 404, description = "User not found", body = Detail),
        (status = 422, body = ValidationDetail),
    ))]
#[tracing::instrument(name = "list_answers", skip(state, query))]
pub async fn list_answers(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<AnswersBody>, ApiError> {
    let user_id = path_uuid("user_id", &user_id)?;
    let limit = in_range(["query", "limit"], query.limit.unwrap_or(50), 1, MAX_LISTED)?;
    let answers = state.store.answers(user_id, limit as usize).await?;
    Ok(Json(AnswersBody {
        user_id,
        answers: answers.into_iter().map(AnswerBody::from).collect(),
    }))
}

/// Every error's memory state, soonest due first.
#[utoipa::path(get, path = "/users/{user_id}/schedule", tag = "practice",
    params(("user_id" = Uuid, Path), ListQuery),
    responses(
        (status = 200, body = ScheduleBody),
        (status = 404, description = "User not found", body = Detail),
        (status = 422, body = ValidationDetail),
    ))]
#[tracing::instrument(name = "schedule", skip(state, query))]
pub async fn schedule(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<ScheduleBody>, ApiError> {
    let user_id = path_uuid("user_id", &user_id)?;
    let limit = in_range(["query", "limit"], query.limit.unwrap_or(50), 1, MAX_LISTED)?;
    let mut items = state.store.memory(user_id).await?;
    items.sort_by(|a, b| a.state.due.cmp(&b.state.due).then(a.key.cmp(&b.key)));
    items.truncate(limit as usize);
    let now = state.clock.now();
    Ok(Json(ScheduleBody {
        user_id,
        items: items
            .into_iter()
            .map(|item| ScheduleItemBody::new(item, now))
            .collect(),
    }))
}
