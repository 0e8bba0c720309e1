//! Conversations: a learner's tutoring sessions.

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
use crate::store::Conversation;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/conversations/", post(create_conversation))
        .route("/conversations", post(create_conversation))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateConversation {
    pub user_id: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationBody {
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    pub started_at: DateTime<Utc>,
}

/// Starts a conversation for a learner.
#[utoipa::path(post, path = "/conversations/", tag = "conversations",
    request_body = CreateConversation,
    responses(
        (status = 201, body = ConversationBody),
        (status = 404, description = "User not found", body = Detail),
        (status = 422, body = ValidationDetail),
    ))]
#[tracing::instrument(name = "create_conversation", skip_all, fields(user_id = %body.user_id))]
pub async fn create_conversation(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateConversation>,
) -> Result<(StatusCode, Json<ConversationBody>), ApiError> {
    let c = state.store.create_conversation(body.user_id).await?;
    Ok((StatusCode::CREATED, Json(c.into())))
}

impl From<Conversation> for ConversationBody {
    fn from(c: Conversation) -> Self {
        Self {
            conversation_id: c.conversation_id,
            user_id: c.user_id,
            started_at: c.started_at,
        }
    }
}
