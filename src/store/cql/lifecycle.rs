//! A learner's data as a whole: erasure and export.
//!
//! Erasure, in order:
//!
//! 1. set the learner's erasure marker in Redis (it lives
//!    [`buffer::ERASURE`]): from now on no lease, commit or flusher take of
//!    theirs succeeds;
//! 2. take their flush lock, waiting for a flusher (or repair) that holds
//!    it to finish: once the erasure has it, no counter batch of theirs is
//!    in flight, and none can start (step 1), so their counters, once
//!    deleted, are never written again (a deleted counter cannot safely be
//!    incremented; user ids are never reused, so nobody else will);
//! 3. read their open requests: an ingest that leased before step 1 may
//!    still write events, in the month bucket of its request's time;
//! 4. delete every partition of theirs, the rows with tombstones stamped
//!    `ERASURE` in the future, so that a racing write (an ingest's events
//!    and labels, a conversation or utterance whose owner check passed
//!    before the erasure) that lands meanwhile stays hidden; the counters
//!    with a plain delete (step 2 makes that safe);
//! 5. forget every Redis key of theirs but the marker;
//! 6. free the e-mail (a conditional delete, so a new sign-up can claim
//!    it at once), and delete the `users` row last: until then a failed
//!    erasure can be retried, and afterwards the learner is unknown.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};
use scylla::client::session::Session;
use scylla::response::PagingState;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;
use uuid::Uuid;

use super::buffer::{ERASURE, FLUSH_LOCK};
use super::ingest::bucket;
use super::session::{cql_error, from_timestamp, internal};
use super::Inner;
use crate::domain::Email;
use crate::store::retry::{retry_until, Poll};
use crate::store::{
    Backend, Conversation, ExportPage, ExportPages, StoreError, StoredEvent, Utterance, EXPORT_PAGE,
};

/// Every table partitioned by the learner alone, deleted by erasure with a
/// tombstone in the future. A new table of learner rows is one line here
/// (`error_events`, partitioned by learner and month, is deleted bucket by
/// bucket; `users` last). `utterances` goes first: the ingest takes a found
/// utterance row for proof that its conversation and learner exist, which
/// an erasure cut off half way must not leave true.
const LEARNER_TABLES: &[&str] = &[
    "utterances",
    "conversations",
    "error_buckets",
    "error_labels",
];
/// The learner's counter tables, deleted once no flush can reach them.
const LEARNER_COUNTERS: &[&str] = &["error_counts", "error_counts_by_week"];

/// How often an erasure looks again for the flush lock.
const LOCK_POLL: Duration = Duration::from_millis(20);

/// The statements of erasure and export, prepared once at start-up.
pub(super) struct Statements {
    /// `DELETE ... USING TIMESTAMP ? WHERE user_id = ?` for each table.
    rows: Vec<PreparedStatement>,
    counters: Vec<PreparedStatement>,
    events: PreparedStatement,
    email: PreparedStatement,
    user: PreparedStatement,
    conversations: PreparedStatement,
    utterances: PreparedStatement,
    event_pages: PreparedStatement,
}

async fn prepare(
    session: &Session,
    cql: String,
    idempotent: bool,
) -> Result<PreparedStatement, StoreError> {
    let mut statement = session
        .prepare(cql.as_str())
        .await
        .map_err(|e| StoreError::internal(format!("preparing {cql}"), e))?;
    statement.set_is_idempotent(idempotent);
    statement.set_page_size(EXPORT_PAGE as i32);
    Ok(statement)
}

impl Statements {
    pub(super) async fn prepare(session: &Session) -> Result<Self, StoreError> {
        let shadow =
            |table: &str| format!("DELETE FROM {table} USING TIMESTAMP ? WHERE user_id = ?");
        let mut rows = Vec::new();
        for table in LEARNER_TABLES {
            rows.push(prepare(session, shadow(table), true).await?);
        }
        let mut counters = Vec::new();
        for table in LEARNER_COUNTERS {
            let cql = format!("DELETE FROM {table} WHERE user_id = ?");
            counters.push(prepare(session, cql, true).await?);
        }
        Ok(Self {
            rows,
            counters,
            events: prepare(
                session,
                "DELETE FROM error_events USING TIMESTAMP ? WHERE user_id = ? AND bucket = ?"
                    .into(),
                true,
            )
            .await?,
            // A lightweight transaction, as the claim is: not retried.
            email: prepare(
                session,
                "DELETE FROM users_by_email WHERE email_key = ? IF user_id = ?".into(),
                false,
            )
            .await?,
            user: prepare(session, shadow("users"), true).await?,
            conversations: prepare(
                session,
                "SELECT conversation_id, started_at FROM conversations WHERE user_id = ?".into(),
                true,
            )
            .await?,
            utterances: prepare(
                session,
                "SELECT conversation_id, utterance_id, content, created_at \
                 FROM utterances WHERE user_id = ?"
                    .into(),
                true,
            )
            .await?,
            event_pages: prepare(
                session,
                "SELECT occurred_at, event_id, conversation_id, utterance_id, category, \
                 subcategory, snippet, correction, explanation \
                 FROM error_events WHERE user_id = ? AND bucket = ?"
                    .into(),
                true,
            )
            .await?,
        })
    }
}

impl Inner {
    pub(super) async fn erase_user(&self, user_id: Uuid) -> Result<(), StoreError> {
        let Some(user) = self.fetch_user(user_id).await? else {
            return Err(StoreError::UserNotFound);
        };
        // Rows written from here on, up to `ERASURE` later, stay hidden.
        let shadow = (Utc::now() + ERASURE).timestamp_micros();
        self.buffer.mark_erased(user_id).await?;
        self.ownership.forget(user_id);
        self.reads.forget(user_id);
        self.lock_for_erasure(user_id).await?;
        let requests = self.buffer.requests(user_id).await?;
        let mut buckets: BTreeSet<i32> = self.buckets(user_id).await?.into_iter().collect();
        buckets.insert(bucket(Utc::now()));
        buckets.extend(
            requests
                .open_times_ms
                .iter()
                .filter_map(|ms| DateTime::from_timestamp_millis(*ms))
                .map(bucket),
        );
        let s = &self.lifecycle;
        for bucket in buckets {
            self.run(&s.events, (shadow, user_id, bucket)).await?;
        }
        for statement in &s.rows {
            self.run(statement, (shadow, user_id)).await?;
        }
        for statement in &s.counters {
            self.run(statement, (user_id,)).await?;
        }
        self.buffer.forget(user_id, &requests).await?;
        if let Ok(email) = Email::parse(&user.email) {
            self.run(&s.email, (email.key(), user_id)).await?;
        }
        self.run(&s.user, (shadow, user_id)).await
    }

    /// Takes the learner's flush lock, waiting for a flusher's batch (or a
    /// repair) to finish; the lock then expires by itself (the erasure
    /// marker keeps every flusher away meanwhile).
    async fn lock_for_erasure(&self, user_id: Uuid) -> Result<(), StoreError> {
        let token = Uuid::new_v4().to_string();
        let token = token.as_str();
        let locked = retry_until(
            FLUSH_LOCK + Duration::from_secs(2),
            LOCK_POLL,
            || async move {
                Ok(if self.buffer.lock(user_id, token).await? {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                })
            },
        )
        .await?;
        locked.ok_or_else(|| {
            StoreError::busy(
                Backend::Redis,
                "the learner's counts are being flushed; retry",
            )
        })
    }

    async fn run(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(statement, values)
            .await
            .map_err(cql_error)
            .map(|_| ())
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
pub(super) fn export_pages(inner: Arc<Inner>, user_id: Uuid) -> ExportPages {
    stream::unfold(Cursor::Conversations(PagingState::start()), move |cursor| {
        let inner = inner.clone();
        async move {
            match inner.next_page(user_id, cursor).await {
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

impl Inner {
    async fn next_page(
        &self,
        user_id: Uuid,
        mut cursor: Cursor,
    ) -> Result<Option<(ExportPage, Cursor)>, StoreError> {
        let s = &self.lifecycle;
        loop {
            cursor = match cursor {
                Cursor::Conversations(paging) => {
                    let (rows, next) = self.page(&s.conversations, (user_id,), paging).await?;
                    let page = rows
                        .into_iter()
                        .map(
                            |(conversation_id, started_at): (Uuid, Option<CqlTimestamp>)| {
                                Conversation {
                                    conversation_id,
                                    user_id,
                                    started_at: started_at.map(from_timestamp).unwrap_or_default(),
                                }
                            },
                        )
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
                        .map(|row| utterance(user_id, row))
                        .collect::<Vec<_>>();
                    let next = next.map_or(Cursor::Buckets, Cursor::Utterances);
                    if !page.is_empty() {
                        return Ok(Some((ExportPage::Utterances(page), next)));
                    }
                    next
                }
                Cursor::Buckets => {
                    let buckets = self.buckets(user_id).await?;
                    Cursor::ErrorEvents(buckets, PagingState::start())
                }
                Cursor::ErrorEvents(mut buckets, paging) => {
                    let Some(&bucket) = buckets.first() else {
                        return Ok(None);
                    };
                    let (rows, next) = self.page(&s.event_pages, (user_id, bucket), paging).await?;
                    let page = rows.into_iter().map(event).collect::<Vec<_>>();
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
        values: impl scylla::serialize::row::SerializeRow,
        paging: PagingState,
    ) -> Result<Page<R>, StoreError>
    where
        R: for<'frame, 'metadata> scylla::deserialize::row::DeserializeRow<'frame, 'metadata>,
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

type UtteranceRow = (Uuid, Uuid, Option<String>, Option<CqlTimestamp>);

fn utterance(
    user_id: Uuid,
    (conversation_id, utterance_id, content, created_at): UtteranceRow,
) -> Utterance {
    Utterance {
        utterance_id,
        conversation_id,
        user_id,
        content,
        created_at: created_at.map(from_timestamp).unwrap_or_default(),
    }
}

type EventRow = (
    CqlTimestamp,
    Uuid,
    Option<Uuid>,
    Option<Uuid>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn event(
    (
        occurred_at,
        event_id,
        conversation_id,
        utterance_id,
        category,
        subcategory,
        snippet,
        correction,
        explanation,
    ): EventRow,
) -> StoredEvent {
    StoredEvent {
        event_id: event_id.to_string(),
        conversation_id: conversation_id.unwrap_or_default(),
        utterance_id: utterance_id.unwrap_or_default(),
        category: category.unwrap_or_default(),
        subcategory: subcategory.unwrap_or_default(),
        occurred_at: from_timestamp(occurred_at),
        snippet,
        correction,
        explanation,
    }
}
