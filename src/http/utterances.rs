//! Utterances: what a learner said, one turn of a conversation.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{ApiError, Detail, ValidationDetail};
use super::extract::JsonBody;
use super::AppState;
use crate::store::{NewUtterance, Utterance};

/// Longest accepted utterance text, in characters.
pub const MAX_CONTENT_CHARS: usize = 10_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/utterances/", post(create_utterance))
        .route("/utterances", post(create_utterance))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateUtterance {
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    /// What the learner said (at most 10,000 characters).
    #[serde(default)]
    #[schema(max_length = 10000)]
    pub content: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UtteranceBody {
    pub utterance_id: Uuid,
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    pub content: Option<String>,
    pub timestamp: DateTime<Utc>,
}

/// Records an utterance in one of the learner's conversations.
#[utoipa::path(post, path = "/utterances/", tag = "utterances",
    request_body = CreateUtterance,
    responses(
        (status = 201, body = UtteranceBody),
        (status = 404, description = "Conversation not found (also when it is another learner's)", body = Detail),
        (status = 422, body = ValidationDetail),
    ))]
#[tracing::instrument(name = "create_utterance", skip_all,
    fields(user_id = %body.user_id, conversation_id = %body.conversation_id))]
pub async fn create_utterance(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateUtterance>,
) -> Result<(StatusCode, Json<UtteranceBody>), ApiError> {
    if let Some(content) = &body.content {
        if content.chars().count() > MAX_CONTENT_CHARS {
            return Err(ApiError::invalid(
                ["body", "content"],
                format!("String should have at most {MAX_CONTENT_CHARS} characters"),
                "string_too_long",
            ));
        }
    }
    let u = state
        .store
        .create_utterance(NewUtterance {
            user_id: body.user_id,
            conversation_id: body.conversation_id,
            content: body.content,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(u.into())))
}

impl From<Utterance> for UtteranceBody {
    fn from(u: Utterance) -> Self {
        Self {
            utterance_id: u.utterance_id,
            conversation_id: u.conversation_id,
            user_id: u.user_id,
            content: u.content,
            timestamp: u.created_at,
        }
    }
}
