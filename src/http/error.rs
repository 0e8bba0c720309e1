//! The one error type of the HTTP layer, shaped like FastAPI's so the seed
//! service's clients keep working: `{"detail": "..."}`, and for validation
//! failures `422 {"detail": [{"loc": [...], "msg": "...", "type": "..."}]}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::store::StoreError;

/// One step of a validation failure's location: a field's name or a list
/// index (as FastAPI sends them).
#[derive(ToSchema)]
#[allow(dead_code)] // only describes the document: `loc` holds JSON values
#[serde(untagged)]
pub enum LocItem {
    Name(String),
    Index(u64),
}

/// One validation failure: where (`loc`), what (`msg`) and its kind (`type`).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FieldError {
    #[schema(value_type = Vec<LocItem>)]
    pub loc: Vec<Value>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
}

impl FieldError {
    pub fn new<L: Into<Value>>(
        loc: impl IntoIterator<Item = L>,
        msg: impl Into<String>,
        kind: &str,
    ) -> Self {
        Self {
            loc: loc.into_iter().map(Into::into).collect(),
            msg: msg.into(),
            kind: kind.to_owned(),
        }
    }
}

/// `{"detail": "..."}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Detail {
    pub detail: String,
}

/// `{"detail": [...]}`: the body of every 422.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationDetail {
    pub detail: Vec<FieldError>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("request body too large")]
    PayloadTooLarge { limit: usize },
    #[error("not authenticated")]
    Unauthorized,
    /// `reason` is shown; `log` (the whole error chain) is only logged.
    #[error("{reason}")]
    Unavailable { reason: String, log: String },
    /// Logged in full, never shown to the caller.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid<L: Into<Value>>(
        loc: impl IntoIterator<Item = L>,
        msg: impl Into<String>,
        kind: &str,
    ) -> Self {
        Self::Validation(vec![FieldError::new(loc, msg, kind)])
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::EmailTaken => Self::BadRequest(e.to_string()),
            StoreError::UserNotFound
            | StoreError::ConversationNotFound
            | StoreError::UtteranceNotFound => Self::NotFound(e.to_string()),
            StoreError::Unavailable { .. } => Self::Unavailable {
                reason: e.public_reason(),
                log: e.chain(),
            },
            StoreError::Internal { .. } | StoreError::Config(_) => Self::Internal(e.chain()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let detail = |status: StatusCode, text: String| (status, Json(Detail { detail: text }));
        match self {
            Self::NotFound(text) => detail(StatusCode::NOT_FOUND, text).into_response(),
            Self::BadRequest(text) => detail(StatusCode::BAD_REQUEST, text).into_response(),
            Self::Validation(errors) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(ValidationDetail { detail: errors }),
            )
                .into_response(),
            Self::PayloadTooLarge { limit } => detail(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body too large: the limit is {limit} bytes"),
            )
            .into_response(),
            Self::Unauthorized => {
                let mut response =
                    detail(StatusCode::UNAUTHORIZED, "Not authenticated".into()).into_response();
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            }
            Self::Unavailable { reason, log } => {
                tracing::warn!(error = %log, "backend unavailable");
                metrics::counter!("errata_store_errors_total", "kind" => "unavailable")
                    .increment(1);
                let mut response = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({ "detail": format!("Service unavailable: {reason}") })),
                )
                    .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                response
            }
            Self::Internal(reason) => {
                tracing::error!(%reason, "internal error");
                metrics::counter!("errata_store_errors_total", "kind" => "internal").increment(1);
                detail(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal Server Error".into(),
                )
                .into_response()
            }
        }
    }
}
