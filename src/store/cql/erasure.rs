//! Erasing a learner: everything stored about them, in every table and
//! in Redis, so that nothing racing the erasure brings any of it back.
//!
//! In order:
//!
//! 1. set the learner's erasure marker in Redis (it lives
//!    [`ERASURE`]): from now on no lease, commit or flusher take of
//!    theirs succeeds;
//! 2. take their flush lock, waiting for a flusher (or repair) that holds
//!    it to finish (an erasure that fails up to here, before it deleted
//!    anything, lifts its marker again: the learner is served at once): once the erasure has it, no counter batch of theirs is
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
use std::sync::Arc;

use chrono::{DateTime, Utc};
use scylla::client::session::Session;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use uuid::Uuid;

use super::accounts::Accounts;
use super::buffer::Buffer;
use super::memory::Memory;
use super::reads::Reader;
use super::rows::bucket;
use super::session::cql_error;
use crate::domain::Email;
use crate::store::policy::{ERASURE, ERASURE_LOCK_POLL, ERASURE_LOCK_WAIT};
use crate::store::retry::{retry_until, Poll};
use crate::store::{Backend, StoreError};

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

/// The statements of erasure, prepared once at start-up (one per table,
/// so they are not declared with `statements!`).
struct EraseStatements {
    /// `DELETE ... USING TIMESTAMP ? WHERE user_id = ?` for each table.
    rows: Vec<PreparedStatement>,
    counters: Vec<PreparedStatement>,
    events: PreparedStatement,
    email: PreparedStatement,
    user: PreparedStatement,
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
    Ok(statement)
}

impl EraseStatements {
    async fn prepare(session: &Session) -> Result<Self, StoreError> {
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
        })
    }
}

/// Erases learners.
pub struct Erasure {
    session: Arc<Session>,
    statements: EraseStatements,
    buffer: Arc<Buffer>,
    accounts: Arc<Accounts>,
    reader: Arc<Reader>,
    /// The learner's answers, lapses and memory states go with the rest.
    memory: Arc<Memory>,
}

impl Erasure {
    pub async fn new(
        session: Arc<Session>,
        buffer: Arc<Buffer>,
        accounts: Arc<Accounts>,
        reader: Arc<Reader>,
        memory: Arc<Memory>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            statements: EraseStatements::prepare(&session).await?,
            session,
            buffer,
            accounts,
            reader,
            memory,
        })
    }

    pub async fn erase_user(&self, user_id: Uuid) -> Result<(), StoreError> {
        let Some(user) = self.accounts.user(user_id).await? else {
            return Err(StoreError::UserNotFound);
        };
        // Rows written from here on, up to `ERASURE` later, stay hidden.
        let shadow = (Utc::now() + ERASURE).timestamp_micros();
        let marker = Uuid::new_v4().to_string();
        self.buffer.mark_erased(user_id, &marker).await?;
        self.accounts.forget(user_id);
        self.reader.forget(user_id);
        let prepared = async {
            self.lock_for_erasure(user_id).await?;
            let requests = self.buffer.requests(user_id).await?;
            let buckets = self.reader.buckets(user_id).await?;
            Ok::<_, StoreError>((requests, buckets))
        };
        let (requests, buckets) = match prepared.await {
            Ok(prepared) => prepared,
            Err(e) => {
                // Nothing is deleted yet and the learner still exists:
                // lift the marker so their requests are served again now,
                // not when it expires.
                if let Err(lift) = self.buffer.unmark_erased(user_id, &marker).await {
                    tracing::warn!(error = %lift, "a failed erasure could not lift its marker");
                }
                return Err(e);
            }
        };
        let mut buckets: BTreeSet<i32> = buckets.into_iter().collect();
        buckets.insert(bucket(Utc::now()));
        buckets.extend(
            requests
                .open_times_ms
                .iter()
                .filter_map(|ms| DateTime::from_timestamp_millis(*ms))
                .map(bucket),
        );
        self.memory.erase(user_id, &buckets).await?;
        let s = &self.statements;
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
        let locked = retry_until(ERASURE_LOCK_WAIT, ERASURE_LOCK_POLL, || async move {
            Ok(if self.buffer.lock(user_id, token).await? {
                Poll::Ready(())
            } else {
                Poll::Pending
            })
        })
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
        values: impl SerializeRow,
    ) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(statement, values)
            .await
            .map_err(cql_error)
            .map(|_| ())
    }
}
