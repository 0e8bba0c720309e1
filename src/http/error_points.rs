//! Error points: recording what the AI found, and reading a learner's
//! frequencies and latest errors back.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, Detail, FieldError, ValidationDetail};
use super::extract::{in_range, path_uuid, JsonBody, QueryParams};
use super::AppState;
use crate::domain::error_point::{MAX_CORRECTION_CHARS, MAX_EXPLANATION_CHARS};
use crate::domain::{report_fingerprint, Correction, ErrorFrequency, ErrorName, ErrorPoint};
use crate::store::{ErrorReport, RecentError};

/// Most error points accepted in one request.
pub use crate::domain::MAX_POINTS;
/// Longest accepted `Idempotency-Key` header.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/simulate-and-generate", post(record_errors))
        .route(
            "/utterances/{utterance_id}/errors",
            post(record_utterance_errors),
        )
        .route("/users/{user_id}/errors", get(list_errors))
        .route("/users/{user_id}/errors/recent", get(recent_errors))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ErrorPointBody {
    /// 1 to 64 characters once trimmed and inner whitespace collapsed.
    #[serde(rename = "errorCategory")]
    #[schema(example = "Grammar")]
    pub error_category: String,
    /// 1 to 64 characters once trimmed and inner whitespace collapsed.
    #[serde(rename = "errorSubCategory")]
    #[schema(example = "Subject-Verb Agreement")]
    pub error_sub_category: String,
    /// The corrected sentence (or phrase) the AI proposes for this point.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 10000,
        example = "He goes to school every day."
    )]
    pub correction: Option<String>,
    /// Why, in a sentence or two.
    #[serde(default)]
    #[schema(
        max_length = 1000,
        example = "A third-person singular subject takes -s."
    )]
    pub explanation: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RecordErrors {
    pub user_id: Uuid,
    pub conversation_id: Uuid,
    pub utterance_id: Uuid,
    /// At most 64 error points.
    #[schema(max_items = 64)]
    pub errors: Vec<ErrorPointBody>,
    /// The whole utterance corrected: the correction of every point that
    /// has none of its own.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 10000)]
    pub corrected_content: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RecordUtteranceErrors {
    pub user_id: Uuid,
    pub conversation_id: Uuid,
    /// Accepted for clients that send it, when it matches the path (the
    /// path names the utterance, so the document leaves it out).
    #[serde(default)]
    #[schema(ignore)]
    pub utterance_id: Option<Uuid>,
    /// At most 64 error points.
    #[schema(max_items = 64)]
    pub errors: Vec<ErrorPointBody>,
    /// The whole utterance corrected: the correction of every point that
    /// has none of its own.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 10000)]
    pub corrected_content: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecordedBody {
    pub message: String,
    /// Error points counted by this request (0 when it was a duplicate).
    pub recorded: usize,
    /// The same request had already been recorded; nothing was counted.
    pub duplicate: bool,
}

/// A field of the body at `loc` whose text breaks a length rule.
fn length_failure(loc: Vec<serde_json::Value>, rule: &str, max: usize) -> FieldError {
    match rule {
        "too_short" => FieldError::new(
            loc,
            "String should have at least 1 character",
            "string_too_short",
        ),
        _ => FieldError::new(
            loc,
            format!("String should have at most {max} characters"),
            "string_too_long",
        ),
    }
}

/// Checks the corrections of the body; `corrected_content` becomes the
/// correction of every point without its own. Failures go to `failures`.
fn parse_corrections(
    errors: &[ErrorPointBody],
    corrected_content: Option<&str>,
    failures: &mut Vec<FieldError>,
) -> Vec<Correction> {
    if let Some(Err(rule)) = corrected_content.map(Correction::check_text) {
        let loc = vec!["body".into(), "corrected_content".into()];
        failures.push(length_failure(loc, rule, MAX_CORRECTION_CHARS));
    }
    let at = |index: usize, field: &str| -> Vec<serde_json::Value> {
        vec!["body".into(), "errors".into(), index.into(), field.into()]
    };
    let mut corrections = Vec::with_capacity(errors.len());
    for (index, body) in errors.iter().enumerate() {
        if let Some(Err(rule)) = body.correction.as_deref().map(Correction::check_text) {
            failures.push(length_failure(
                at(index, "correction"),
                rule,
                MAX_CORRECTION_CHARS,
            ));
        }
        if let Some(Err(rule)) = body
            .explanation
            .as_deref()
            .map(Correction::check_explanation)
        {
            failures.push(length_failure(
                at(index, "explanation"),
                rule,
                MAX_EXPLANATION_CHARS,
            ));
        }
        corrections.push(Correction {
            text: body
                .correction
                .clone()
                .or_else(|| corrected_content.map(str::to_owned)),
            explanation: body.explanation.clone().filter(|e| !e.trim().is_empty()),
        });
    }
    corrections
}

/// Parses every error point, collecting all failures with their location.
fn parse_points(
    errors: &[ErrorPointBody],
    corrected_content: Option<&str>,
) -> Result<Vec<ErrorPoint>, ApiError> {
    if errors.len() > MAX_POINTS {
        return Err(ApiError::invalid(
            ["body", "errors"],
            format!(
                "List should have at most {MAX_POINTS} items after validation, not {}",
                errors.len()
            ),
            "too_long",
        ));
    }
    let mut points = Vec::with_capacity(errors.len());
    let mut failures = Vec::new();
    let corrections = parse_corrections(errors, corrected_content, &mut failures);
    for ((index, body), correction) in errors.iter().enumerate().zip(corrections) {
        let category = ErrorName::parse(&body.error_category);
        let subcategory = ErrorName::parse(&body.error_sub_category);
        for (field, result) in [
            ("errorCategory", &category),
            ("errorSubCategory", &subcategory),
        ] {
            if let Err(e) = result {
                failures.push(FieldError::new(
                    [
                        serde_json::Value::from("body"),
                        "errors".into(),
                        index.into(),
                        field.into(),
                    ],
                    format!("{field} {e}"),
                    "value_error",
                ));
            }
        }
        if let (Ok(category), Ok(subcategory)) = (category, subcategory) {
            points.push(ErrorPoint {
                category,
                subcategory,
                correction,
            });
        }
    }
    if failures.is_empty() {
        Ok(points)
    } else {
        Err(ApiError::Validation(failures))
    }
}

pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let invalid = |msg: &str| ApiError::invalid(["header", "idempotency-key"], msg, "value_error");
    let key = value
        .to_str()
        .map_err(|_| invalid("must be visible ASCII"))?
        .trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(invalid("must be 1 to 255 characters"));
    }
    Ok(Some(key))
}

/// What both ingest routes record: the body's errors for one utterance.
struct Ingest<'a> {
    user_id: Uuid,
    conversation_id: Uuid,
    utterance_id: Uuid,
    errors: &'a [ErrorPointBody],
    corrected_content: Option<&'a str>,
}

async fn record(
    state: &AppState,
    headers: &HeaderMap,
    ingest: Ingest<'_>,
) -> Result<Json<RecordedBody>, ApiError> {
    let Ingest {
        user_id,
        conversation_id,
        utterance_id,
        errors,
        corrected_content,
    } = ingest;
    let points = parse_points(errors, corrected_content)?;
    let key = idempotency_key(headers)?;
    let fingerprint = report_fingerprint(utterance_id, &points, key);
    let outcome = state
        .store
        .record_errors(ErrorReport {
            user_id,
            conversation_id,
            utterance_id,
            points,
            fingerprint,
            received_at: state.clock.now(),
        })
        .await?;
    metrics::counter!("errata_error_points_recorded_total").increment(outcome.recorded as u64);
    let message = if outcome.duplicate {
        "Duplicate request: these errors were already recorded"
    } else {
        "Errors recorded"
    };
    Ok(Json(RecordedBody {
        message: message.into(),
        recorded: outcome.recorded,
        duplicate: outcome.duplicate,
    }))
}

/// Records the error points the AI found in one utterance. A retry of the
/// same request (same utterance and error list, or same `Idempotency-Key`)
/// counts once.
#[utoipa::path(post, path = "/simulate-and-generate", tag = "errors",
    request_body = RecordErrors,
    params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~](?:[\t -~]{0,253}[!-~])?$",
            description = "identifies a request across retries: 1 to 255 visible ASCII characters")),
    responses(
        (status = 200, body = RecordedBody),
        (status = 404, description = "User, Conversation or Utterance not found", body = Detail),
        (status = 422, body = ValidationDetail),
    ))]
#[tracing::instrument(name = "record_errors", skip_all, fields(user_id = %body.user_id))]
pub async fn record_errors(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<RecordErrors>,
) -> Result<Json<RecordedBody>, ApiError> {
    let ingest = Ingest {
        user_id: body.user_id,
        conversation_id: body.conversation_id,
        utterance_id: body.utterance_id,
        errors: &body.errors,
        corrected_content: body.corrected_content.as_deref(),
    };
    record(&state, &headers, ingest).await
}

/// The same as `POST /simulate-and-generate`, addressed by utterance.
#[utoipa::path(post, path = "/utterances/{utterance_id}/errors", tag = "errors",
    request_body = RecordUtteranceErrors,
    params(("utterance_id" = Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~](?:[\t -~]{0,253}[!-~])?$",
            description = "identifies a request across retries: 1 to 255 visible ASCII characters")),
    responses(
        (status = 200, body = RecordedBody),
        (status = 404, description = "User, Conversation or Utterance not found", body = Detail),
        (status = 422, body = ValidationDetail),
    ))]
#[tracing::instrument(name = "record_utterance_errors", skip_all, fields(user_id = %body.user_id))]
pub async fn record_utterance_errors(
    State(state): State<AppState>,
    Path(utterance_id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<RecordUtteranceErrors>,
) -> Result<Json<RecordedBody>, ApiError> {
    let utterance_id = path_uuid("utterance_id", &utterance_id)?;
    if body.utterance_id.is_some_and(|id| id != utterance_id) {
        return Err(ApiError::invalid(
            ["body", "utterance_id"],
            "utterance_id in the body does not match the path",
            "value_error",
        ));
    }
    let ingest = Ingest {
        user_id: body.user_id,
        conversation_id: body.conversation_id,
        utterance_id,
        errors: &body.errors,
        corrected_content: body.corrected_content.as_deref(),
    };
    record(&state, &headers, ingest).await
}

/// One error type and how often the learner made it.
#[derive(Debug, Serialize, ToSchema)]
pub struct FrequencyBody {
    #[serde(rename = "errorCategory")]
    pub error_category: String,
    #[serde(rename = "errorSubCategory")]
    pub error_sub_category: String,
    #[serde(rename = "errorFrequency")]
    pub error_frequency: i64,
}

impl From<&ErrorFrequency> for FrequencyBody {
    fn from(e: &ErrorFrequency) -> Self {
        Self {
            error_category: e.category.clone(),
            error_sub_category: e.subcategory.clone(),
            error_frequency: e.frequency,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FrequenciesBody {
    pub user_id: Uuid,
    /// Most frequent first; ties go to the most recent, then to the name.
    pub errors: Vec<FrequencyBody>,
}

/// Every error type the learner has made, with its frequency.
#[utoipa::path(get, path = "/users/{user_id}/errors", tag = "errors",
    params(("user_id" = Uuid, Path)),
    responses((status = 200, body = FrequenciesBody), (status = 404, body = Detail), (status = 422, body = ValidationDetail)))]
#[tracing::instrument(name = "list_errors", skip(state))]
pub async fn list_errors(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> Result<Json<FrequenciesBody>, ApiError> {
    let user_id = path_uuid("user_id", &user_id)?;
    let table = state.store.frequencies(user_id).await?;
    Ok(Json(FrequenciesBody {
        user_id,
        errors: table.ranked().iter().map(FrequencyBody::from).collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecentQuery {
    /// How many events, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecentErrorBody {
    #[serde(rename = "errorCategory")]
    pub error_category: String,
    #[serde(rename = "errorSubCategory")]
    pub error_sub_category: String,
    pub conversation_id: Uuid,
    pub utterance_id: Uuid,
    /// What the learner said, when the utterance had text.
    pub utterance: Option<String>,
    /// The correction the AI proposed for this point (its own, or the
    /// report's `corrected_content`), when it gave one.
    pub correction: Option<String>,
    /// The AI's explanation of the correction, when given.
    pub explanation: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

impl From<RecentError> for RecentErrorBody {
    fn from(e: RecentError) -> Self {
        Self {
            error_category: e.category,
            error_sub_category: e.subcategory,
            conversation_id: e.conversation_id,
            utterance_id: e.utterance_id,
            utterance: e.utterance,
            correction: e.correction.text,
            explanation: e.correction.explanation,
            occurred_at: e.occurred_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecentErrorsBody {
    pub user_id: Uuid,
    /// Newest first.
    pub errors: Vec<RecentErrorBody>,
}

/// The learner's latest error points, newest first, with the utterance text.
#[utoipa::path(get, path = "/users/{user_id}/errors/recent", tag = "errors",
    params(("user_id" = Uuid, Path), RecentQuery),
    responses((status = 200, body = RecentErrorsBody), (status = 404, body = Detail), (status = 422, body = ValidationDetail)))]
#[tracing::instrument(name = "recent_errors", skip(state, query))]
pub async fn recent_errors(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    QueryParams(query): QueryParams<RecentQuery>,
) -> Result<Json<RecentErrorsBody>, ApiError> {
    let user_id = path_uuid("user_id", &user_id)?;
    let limit = in_range(["query", "limit"], query.limit.unwrap_or(20), 1, 100)?;
    let recent = state.store.recent_errors(user_id, limit as usize).await?;
    Ok(Json(RecentErrorsBody {
        user_id,
        errors: recent.into_iter().map(Into::into).collect(),
    }))
}
