//! Exporting a learner: their conversations, utterances and error events,
//! one driver page at a time, as the response streams.

use std::ops::ControlFlow;
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use scylla::client::session::Session;
use scylla::deserialize::row::DeserializeRow;
use scylla::response::PagingState;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use uuid::Uuid;

use super::reads::Reader;
use super::rows::{ConversationRow, EventRow, UtteranceRow, SELECT_MONTH_EVENTS};
use super::session::{cql_error, internal};
use super::statements::statements;
use crate::store::{Conversation, ExportPage, ExportPages, StoreError, Utterance, EXPORT_PAGE};

statements! {
    /// The statements of export.
    struct ExportStatements {
        conversations: IDEMPOTENT =>
            "SELECT user_id, conversation_id, started_at FROM conversations WHERE user_id = ?",
        utterances: IDEMPOTENT =>
            "SELECT user_id, conversation_id, utterance_id, content, created_at \
             FROM utterances WHERE user_id = ?",
        event_pages: IDEMPOTENT => SELECT_MONTH_EVENTS,
    }
}

/// Reads a learner's records page by page.
pub struct Exporter {
    session: Arc<Session>,
    statements: ExportStatements,
    reader: Arc<Reader>,
}

impl Exporter {
    pub async fn new(session: Arc<Session>, reader: Arc<Reader>) -> Result<Self, StoreError> {
        let mut statements = ExportStatements::prepare(&session).await?;
        for statement in [
            &mut statements.conversations,
            &mut statements.utterances,
            &mut statements.event_pages,
        ] {
            statement.set_page_size(EXPORT_PAGE as i32);
        }
        Ok(Self {
            session,
            statements,
            reader,
        })
    }
}

/// Where an export is: the section, and the driver's paging state in it.
enum Cursor {
    Conversations(PagingState),
    Utterances(PagingState),
    /// The buckets still to read (newest first), and where in the first.
    ErrorEvents(Vec<i32>, PagingState),
    /// The buckets are read when the events section starts.
    Buckets,
    Done,
}

/// The learner's conversations, utterances and error events (bucket by
/// bucket), one driver page at a time as the stream is polled.
pub fn export_pages(exporter: Arc<Exporter>, user_id: Uuid) -> ExportPages {
    stream::unfold(Cursor::Conversations(PagingState::start()), move |cursor| {
        let exporter = exporter.clone();
        async move {
            match exporter.next_page(user_id, cursor).await {
                Ok(Some((page, next))) => Some((Ok(page), next)),
                Ok(None) => None,
                Err(e) => Some((Err(e), Cursor::Done)),
            }
        }
    })
    .boxed()
}

/// A page's rows and where the next page starts (`None`: the section is
/// over).
type Page<R> = (Vec<R>, Option<PagingState>);

impl Exporter {
    async fn next_page(
        &self,
        user_id: Uuid,
        mut cursor: Cursor,
    ) -> Result<Option<(ExportPage, Cursor)>, StoreError> {
        let s = &self.statements;
        loop {
            cursor = match cursor {
                Cursor::Conversations(paging) => {
                    let (rows, next) = self.page(&s.conversations, (user_id,), paging).await?;
                    let page = rows
                        .into_iter()
                        .map(|row: ConversationRow| Conversation::from(row))
                        .collect::<Vec<_>>();
                    let next = next.map_or(Cursor::Utterances(PagingState::start()), |p| {
                        Cursor::Conversations(p)
                    });
                    if !page.is_empty() {
                        return Ok(Some((ExportPage::Conversations(page), next)));
                    }
                    next
                }
                Cursor::Utterances(paging) => {
                    let (rows, next) = self.page(&s.utterances, (user_id,), paging).await?;
                    let page = rows
                        .into_iter()
                        .map(|row: UtteranceRow| Utterance::from(row))
                        .collect::<Vec<_>>();
                    let next = next.map_or(Cursor::Buckets, Cursor::Utterances);
                    if !page.is_empty() {
                        return Ok(Some((ExportPage::Utterances(page), next)));
                    }
                    next
                }
                Cursor::Buckets => {
                    let buckets = self.reader.buckets(user_id).await?;
                    Cursor::ErrorEvents(buckets, PagingState::start())
                }
                Cursor::ErrorEvents(mut buckets, paging) => {
                    let Some(&bucket) = buckets.first() else {
                        return Ok(None);
                    };
                    let (rows, next) = self.page(&s.event_pages, (user_id, bucket), paging).await?;
                    let page = rows
                        .into_iter()
                        .map(EventRow::into_stored)
                        .collect::<Vec<_>>();
                    let next = match next {
                        Some(paging) => Cursor::ErrorEvents(buckets, paging),
                        None => {
                            buckets.remove(0);
                            Cursor::ErrorEvents(buckets, PagingState::start())
                        }
                    };
                    if !page.is_empty() {
                        return Ok(Some((ExportPage::ErrorEvents(page), next)));
                    }
                    next
                }
                Cursor::Done => return Ok(None),
            }
        }
    }

    /// One page of a statement's rows, with the driver's paging.
    async fn page<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
        paging: PagingState,
    ) -> Result<Page<R>, StoreError>
    where
        R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata>,
    {
        let (result, next) = self
            .session
            .execute_single_page(statement, values, paging)
            .await
            .map_err(cql_error)?;
        let rows = result
            .into_rows_result()
            .map_err(internal)?
            .rows::<R>()
            .map_err(internal)?
            .collect::<Result<Vec<R>, _>>()
            .map_err(internal)?;
        let next = match next.into_paging_control_flow() {
            ControlFlow::Break(()) => None,
            ControlFlow::Continue(state) => Some(state),
        };
        Ok((rows, next))
    }
}
