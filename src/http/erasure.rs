//! Erasing a learner: the `DELETE` of their account, which takes everything
//! stored about them with it.

use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::error::{ApiError, Detail, ValidationDetail};
use super::extract::path_uuid;
use super::AppState;

/// Erases the learner: their account, e-mail, conversations, utterances,
/// error events, counts and buffered state. Afterwards every endpoint
/// answers 404 for them and the e-mail may be registered again.
#[utoipa::path(delete, path = "/users/{user_id}", tag = "users",
    params(("user_id" = Uuid, Path)),
    responses(
        (status = 204, description = "Erased"),
        (status = 404, description = "User not found", body = Detail),
        (status = 422, body = ValidationDetail),
    ))]
#[tracing::instrument(name = "delete_user", skip(state))]
pub async fn delete_user(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let user_id = path_uuid("user_id", &user_id)?;
    state.store.erase_user(user_id).await?;
    tracing::info!(%user_id, "user erased");
    Ok(StatusCode::NO_CONTENT)
}
