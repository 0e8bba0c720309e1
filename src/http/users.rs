//! Learners' accounts: signing up and reading one (erasing one is
//! `erasure`, on the same path).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{ApiError, Detail, FieldError, ValidationDetail};
use super::extract::{path_uuid, JsonBody};
use super::AppState;
use crate::domain::{Email, Timezone, Username};
use crate::store::{NewUser, User};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/users/", post(create_user))
        .route("/users", post(create_user))
        .route(
            "/users/{user_id}",
            get(get_user)
                .patch(update_user)
                .delete(super::erasure::delete_user),
        )
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateUser {
    /// 1 to 64 characters once trimmed (the pattern states it).
    #[schema(example = "ana")]
    pub username: String,
    /// Once trimmed: at most 254 characters, one `@` with something before
    /// it, a domain with a dot neither first nor last, no whitespace or
    /// control characters (the pattern states it). Unique
    /// case-insensitively.
    #[schema(example = "ana@example.com")]
    pub email: String,
    /// The IANA time zone the learner's days are counted in (default UTC).
    #[serde(default)]
    #[schema(value_type = Option<TimezoneName>)]
    pub timezone: Option<String>,
}

/// An IANA time zone name.
#[derive(ToSchema)]
#[schema(example = "Europe/Paris")]
pub struct TimezoneName(#[allow(dead_code)] String);

/// A learner's settings to change.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateUser {
    /// The IANA time zone the learner's days are counted in: where one
    /// day's lapses count once and due dates begin.
    #[schema(value_type = TimezoneName)]
    pub timezone: String,
}

fn parse_timezone(raw: &str) -> Result<Timezone, FieldError> {
    Timezone::parse(raw)
        .map_err(|e| FieldError::new(["body", "timezone"], format!("timezone {e}"), "value_error"))
}

impl TryFrom<CreateUser> for NewUser {
    type Error = ApiError;

    fn try_from(body: CreateUser) -> Result<Self, ApiError> {
        let username = Username::parse(&body.username);
        let email = Email::parse(&body.email);
        let timezone = body.timezone.as_deref().map(parse_timezone).transpose();
        match (username, email, timezone) {
            (Ok(username), Ok(email), Ok(timezone)) => Ok(NewUser {
                username,
                email,
                timezone,
            }),
            (username, email, timezone) => {
                let mut errors = Vec::new();
                if let Err(e) = username {
                    let msg = e.to_string();
                    errors.push(FieldError::new(["body", "username"], msg, "value_error"));
                }
                if let Err(e) = email {
                    let msg = e.to_string();
                    errors.push(FieldError::new(["body", "email"], msg, "value_error"));
                }
                if let Err(e) = timezone {
                    errors.push(e);
                }
                Err(ApiError::Validation(errors))
            }
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserBody {
    pub user_id: Uuid,
    pub username: String,
    pub email: String,
    pub created_at: DateTime<Utc>,
    /// The IANA time zone the learner's days are counted in.
    #[schema(example = "UTC")]
    pub timezone: String,
}

impl From<User> for UserBody {
    fn from(user: User) -> Self {
        Self {
            timezone: user.tz().name().to_owned(),
            user_id: user.user_id,
            username: user.username,
            email: user.email,
            created_at: user.created_at,
        }
    }
}

/// Registers a learner. E-mail addresses are unique, case-insensitively.
/// The same sign-up asked again (same username and e-mail, within 10
/// minutes: its first answer was lost) gets the account it made.
#[utoipa::path(post, path = "/users/", tag = "users", request_body = CreateUser,
    responses(
        (status = 201, body = UserBody),
        (status = 400, description = "Email already registered", body = Detail),
        (status = 422, body = ValidationDetail),
    ))]
#[tracing::instrument(name = "create_user", skip_all)]
pub async fn create_user(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateUser>,
) -> Result<(StatusCode, Json<UserBody>), ApiError> {
    let user = state.store.create_user(body.try_into()?).await?;
    tracing::info!(user_id = %user.user_id, "user created");
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// One learner's account.
#[utoipa::path(get, path = "/users/{user_id}", tag = "users",
    params(("user_id" = Uuid, Path)),
    responses((status = 200, body = UserBody), (status = 404, body = Detail), (status = 422, body = ValidationDetail)))]
#[tracing::instrument(name = "get_user", skip(state))]
pub async fn get_user(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> Result<Json<UserBody>, ApiError> {
    let user_id = path_uuid("user_id", &user_id)?;
    match state.store.user(user_id).await? {
        Some(user) => Ok(Json(user.into())),
        None => Err(ApiError::NotFound("User not found".into())),
    }
}

/// Changes the learner's settings: their time zone. Their memory states
/// are refolded in it (days between reviews, one lapse per day, due dates).
#[utoipa::path(patch, path = "/users/{user_id}", tag = "users", request_body = UpdateUser,
    params(("user_id" = Uuid, Path)),
    responses((status = 200, body = UserBody), (status = 404, body = Detail), (status = 422, body = ValidationDetail)))]
#[tracing::instrument(name = "update_user", skip(state, body))]
pub async fn update_user(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    JsonBody(body): JsonBody<UpdateUser>,
) -> Result<Json<UserBody>, ApiError> {
    let user_id = path_uuid("user_id", &user_id)?;
    let tz = parse_timezone(&body.timezone).map_err(|e| ApiError::Validation(vec![e]))?;
    let user = state.store.set_timezone(user_id, tz).await?;
    Ok(Json(user.into()))
}
