//! A learner's export: everything stored about them as one JSON document,
//! streamed as it is read.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::answers::ScheduleItemBody;
use super::conversations::ConversationBody;
use super::error::{ApiError, Detail, ValidationDetail};
use super::error_points::FrequencyBody;
use super::extract::path_uuid;
use super::users::UserBody;
use super::utterances::UtteranceBody;
use super::AppState;
use crate::domain::{Grade, ReviewKind};
use crate::store::{ExportPage, ExportPages, Store, StoreError, StoredEvent, StoredReview};

pub fn router() -> Router<AppState> {
    Router::new().route("/users/{user_id}/export", get(export_user))
}

/// One recorded error point, with every field stored for it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportedEventBody {
    /// The event's id in the store (a number in embedded mode, a UUID in
    /// cql mode), as a string.
    pub event_id: String,
    pub conversation_id: Uuid,
    pub utterance_id: Uuid,
    #[serde(rename = "errorCategory")]
    pub error_category: String,
    #[serde(rename = "errorSubCategory")]
    pub error_sub_category: String,
    pub occurred_at: DateTime<Utc>,
    /// The utterance's text as kept with the event, where the store keeps
    /// a copy (cql mode).
    pub snippet: Option<String>,
    /// The AI's correction for this point (its own or the report's
    /// `corrected_content`), when given.
    pub correction: Option<String>,
    /// The AI's explanation of the correction, when given.
    pub explanation: Option<String>,
}

impl From<StoredEvent> for ExportedEventBody {
    fn from(e: StoredEvent) -> Self {
        Self {
            event_id: e.event_id,
            conversation_id: e.conversation_id,
            utterance_id: e.utterance_id,
            error_category: e.category,
            error_sub_category: e.subcategory,
            occurred_at: e.occurred_at,
            snippet: e.snippet,
            correction: e.correction,
            explanation: e.explanation,
        }
    }
}

/// Everything stored about a learner (documents the streamed body).
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportBody {
    pub user: UserBody,
    pub conversations: Vec<ConversationBody>,
    pub utterances: Vec<UtteranceBody>,
    pub error_events: Vec<ExportedEventBody>,
    /// The memory model's reviews: answers and lapses.
    pub answers: Vec<ExportedReviewBody>,
    /// Most frequent first.
    pub frequencies: Vec<FrequencyBody>,
    /// Each error's memory state, soonest due first.
    pub memory: Vec<ScheduleItemBody>,
}

/// One review of the memory model: an answer, or a day the learner's
/// speech showed the error (a lapse).
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportedReviewBody {
    pub answer_id: Uuid,
    pub kind: ReviewKind,
    /// The exercise answered (null for a lapse).
    pub exercise_id: Option<String>,
    #[serde(rename = "errorCategory")]
    pub error_category: String,
    #[serde(rename = "errorSubCategory")]
    pub error_sub_category: String,
    pub grade: Grade,
    pub correct: Option<bool>,
    pub answered_at: DateTime<Utc>,
}

impl From<StoredReview> for ExportedReviewBody {
    fn from(r: StoredReview) -> Self {
        Self {
            answer_id: r.review_id,
            kind: r.kind,
            exercise_id: r.exercise_id,
            error_category: r.category,
            error_sub_category: r.subcategory,
            grade: r.grade,
            correct: r.correct,
            answered_at: r.at,
        }
    }
}

/// Everything stored about the learner as one JSON document, streamed:
/// the records are read page by page as the body is written, so a long
/// history costs the server one page of memory. A store failure after the
/// first bytes cuts the body short (the document is then incomplete JSON).
#[utoipa::path(get, path = "/users/{user_id}/export", tag = "users",
    params(("user_id" = Uuid, Path)),
    responses(
        (status = 200, body = ExportBody),
        (status = 404, description = "User not found", body = Detail),
        (status = 422, body = ValidationDetail),
    ))]
#[tracing::instrument(name = "export_user", skip(state))]
pub async fn export_user(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> Result<Response, ApiError> {
    let user_id = path_uuid("user_id", &user_id)?;
    let Some((user, pages)) = state.store.export(user_id).await? else {
        return Err(ApiError::NotFound("User not found".into()));
    };
    let body = export_body(UserBody::from(user), pages, state.store.clone(), user_id)?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response())
}

/// The sections of the document after `user`, in the order written.
const SECTIONS: [&str; 4] = ["conversations", "utterances", "error_events", "answers"];

/// Writes the document as its pages come: opens and closes each section's
/// array, separates its items.
struct DocumentWriter {
    /// Index into `SECTIONS` of the open array.
    section: usize,
    /// No item written in the open array yet.
    first: bool,
}

impl DocumentWriter {
    fn head(user: &UserBody) -> Result<(Self, Bytes), ApiError> {
        let mut out = b"{\"user\":".to_vec();
        serde_json::to_writer(&mut out, user).map_err(|e| ApiError::Internal(e.to_string()))?;
        out.extend_from_slice(format!(",\"{}\":[", SECTIONS[0]).as_bytes());
        let writer = Self {
            section: 0,
            first: true,
        };
        Ok((writer, Bytes::from(out)))
    }

    /// Closes arrays up to `section`, which is then open.
    fn open(&mut self, section: usize, out: &mut Vec<u8>) {
        while self.section < section {
            self.section += 1;
            self.first = true;
            out.extend_from_slice(format!("],\"{}\":[", SECTIONS[self.section]).as_bytes());
        }
    }

    fn items<T: Serialize>(&mut self, items: impl IntoIterator<Item = T>, out: &mut Vec<u8>) {
        for item in items {
            if !self.first {
                out.push(b',');
            }
            self.first = false;
            // Serialising these plain records cannot fail.
            let _ = serde_json::to_writer(&mut *out, &item);
        }
    }

    fn page(&mut self, page: ExportPage) -> Bytes {
        let mut out = Vec::new();
        match page {
            ExportPage::Conversations(page) => {
                self.open(0, &mut out);
                self.items(page.into_iter().map(ConversationBody::from), &mut out);
            }
            ExportPage::Utterances(page) => {
                self.open(1, &mut out);
                self.items(page.into_iter().map(UtteranceBody::from), &mut out);
            }
            ExportPage::ErrorEvents(page) => {
                self.open(2, &mut out);
                self.items(page.into_iter().map(ExportedEventBody::from), &mut out);
            }
            ExportPage::Reviews(page) => {
                self.open(3, &mut out);
                self.items(page.into_iter().map(ExportedReviewBody::from), &mut out);
            }
        }
        Bytes::from(out)
    }

    fn tail(&mut self, frequencies: Vec<FrequencyBody>, memory: Vec<ScheduleItemBody>) -> Bytes {
        let mut out = Vec::new();
        self.open(SECTIONS.len() - 1, &mut out);
        out.extend_from_slice(b"],\"frequencies\":");
        let _ = serde_json::to_writer(&mut out, &frequencies);
        out.extend_from_slice(b",\"memory\":");
        let _ = serde_json::to_writer(&mut out, &memory);
        out.push(b'}');
        Bytes::from(out)
    }
}

enum Phase {
    Pages,
    Done,
}

/// The body's chunks: the head, one per page, then the frequencies.
fn export_body(
    user: UserBody,
    pages: ExportPages,
    store: Arc<dyn Store>,
    user_id: Uuid,
) -> Result<impl futures_util::Stream<Item = Result<Bytes, StoreError>>, ApiError> {
    let (writer, head) = DocumentWriter::head(&user)?;
    let rest = stream::unfold(
        (writer, pages, Phase::Pages),
        move |(mut writer, mut pages, phase)| {
            let store = store.clone();
            async move {
                match phase {
                    Phase::Pages => match pages.next().await {
                        Some(Ok(page)) => {
                            Some((Ok(writer.page(page)), (writer, pages, Phase::Pages)))
                        }
                        Some(Err(e)) => Some((Err(cut_short(e)), (writer, pages, Phase::Done))),
                        None => {
                            let read =
                                tokio::try_join!(store.frequencies(user_id), store.memory(user_id));
                            let chunk = match read {
                                Ok((table, mut memory)) => {
                                    memory.sort_by_key(|m| m.state.due);
                                    let now = crate::store::now();
                                    Ok(writer.tail(
                                        table.ranked().iter().map(FrequencyBody::from).collect(),
                                        memory
                                            .into_iter()
                                            .map(|m| ScheduleItemBody::new(m, now))
                                            .collect(),
                                    ))
                                }
                                Err(e) => Err(cut_short(e)),
                            };
                            Some((chunk, (writer, pages, Phase::Done)))
                        }
                    },
                    Phase::Done => None,
                }
            }
        },
    );
    Ok(stream::once(async move { Ok(head) }).chain(rest))
}

/// A failure once the body has begun can only end it early; it is logged.
fn cut_short(e: StoreError) -> StoreError {
    tracing::warn!(error = %e.chain(), "export cut short");
    e
}
