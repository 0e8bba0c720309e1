//! The cql store: ScyllaDB or Apache Cassandra for what is kept, Redis as the
//! write-behind buffer of the counts.
//!
//! Recording a report validates it against CQL, leases its fingerprint in
//! Redis, appends the events and labels to CQL (idempotent writes), then adds
//! the count deltas to the learner's pending hash and turns the lease into a
//! "done" marker in one Lua script; only then is it acknowledged. A flusher
//! task in every process moves pending deltas to an in-flight hash, applies
//! them as one counter batch per learner and deletes them after success.
//! Reads merge durable counters with the in-flight and pending deltas.

pub mod buffer;
pub mod schema;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Utc};
use futures_util::StreamExt;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::response::PagingState;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{Counter, CqlTimestamp, CqlValue, Row};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

use self::buffer::{Buffer, Lease, Take, DIRTY_SHARDS, LEASE};
use super::{
    Conversation, ErrorReport, NewUser, NewUtterance, RecentError, RecordOutcome, Store,
    StoreError, User, Utterance,
};
use crate::config::Config;
use crate::domain::{ErrorFrequency, ErrorKey, FrequencyTable};

/// No CQL request may take longer than this (then 503).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Characters of the utterance kept with each event.
const SNIPPET_CHARS: usize = 500;
/// Events per unlogged batch (one partition), to stay far below batch limits.
const EVENTS_PER_BATCH: usize = 16;
/// Learners one flusher tick takes from each dirty shard.
const LEARNERS_PER_TICK: usize = 64;
/// Learners a flusher flushes at once (each is a few Redis and CQL round
/// trips; one at a time, a replica flushed only ~100 learners a second).
const FLUSH_CONCURRENCY: usize = 16;
/// A flusher stops retrying to finish a flush this long before its lock
/// expires (then another flusher may take the learner).
const FINISH_MARGIN: Duration = Duration::from_secs(10);
/// How long `flush` keeps draining before it gives up.
const FLUSH_DEADLINE: Duration = Duration::from_secs(60);
/// Twice 2026-01-01T00:00:00Z in microseconds. Spelling cells are written
/// with the timestamp `SPELLING_CLOCK - now`: it decreases as time goes on,
/// so the first write wins, and it stays in the past (ScyllaDB refuses
/// timestamps far in the future) until 2082.
const SPELLING_CLOCK: i64 = 2 * 1_767_225_600_000_000;

struct Statements {
    insert_user: PreparedStatement,
    claim_email: PreparedStatement,
    delete_user: PreparedStatement,
    select_user: PreparedStatement,
    insert_conversation: PreparedStatement,
    select_conversation: PreparedStatement,
    insert_utterance: PreparedStatement,
    select_utterance: PreparedStatement,
    insert_event: PreparedStatement,
    insert_bucket: PreparedStatement,
    label_spelling: PreparedStatement,
    label_seen: PreparedStatement,
    select_counts: PreparedStatement,
    select_labels: PreparedStatement,
    select_buckets: PreparedStatement,
    select_recent: PreparedStatement,
    select_event_keys: PreparedStatement,
    add_count: PreparedStatement,
    select_learners: PreparedStatement,
    ping: PreparedStatement,
}

impl Statements {
    async fn prepare(session: &Session) -> Result<Self, StoreError> {
        let prepare = |cql: &'static str, idempotent: bool| async move {
            let mut statement = session
                .prepare(cql)
                .await
                .map_err(|e| StoreError::Internal(format!("preparing {cql}: {e}")))?;
            statement.set_is_idempotent(idempotent);
            Ok::<_, StoreError>(statement)
        };
        Ok(Self {
            insert_user: prepare(
                "INSERT INTO users (user_id, username, email, created_at) VALUES (?, ?, ?, ?)",
                true,
            )
            .await?,
            // A retried LWT could report its own earlier success as a
            // conflict, so it is not retried by the driver.
            claim_email: prepare(
                "INSERT INTO users_by_email (email_key, user_id) VALUES (?, ?) IF NOT EXISTS",
                false,
            )
            .await?,
            delete_user: prepare("DELETE FROM users WHERE user_id = ?", true).await?,
            select_user: prepare(
                "SELECT username, email, created_at FROM users WHERE user_id = ?",
                true,
            )
            .await?,
            insert_conversation: prepare(
                "INSERT INTO conversations (user_id, conversation_id, started_at) VALUES (?, ?, ?)",
                true,
            )
            .await?,
            select_conversation: prepare(
                "SELECT started_at FROM conversations WHERE user_id = ? AND conversation_id = ?",
                true,
            )
            .await?,
            insert_utterance: prepare(
                "INSERT INTO utterances (user_id, conversation_id, utterance_id, content, created_at)
                 VALUES (?, ?, ?, ?, ?)",
                true,
            )
            .await?,
            select_utterance: prepare(
                "SELECT content FROM utterances
                 WHERE user_id = ? AND conversation_id = ? AND utterance_id = ?",
                true,
            )
            .await?,
            insert_event: prepare(
                "INSERT INTO error_events (user_id, bucket, occurred_at, event_id, conversation_id,
                   utterance_id, category_key, subcategory_key, category, subcategory, snippet)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                true,
            )
            .await?,
            insert_bucket: prepare(
                "INSERT INTO error_buckets (user_id, bucket) VALUES (?, ?)",
                true,
            )
            .await?,
            label_spelling: prepare(
                "UPDATE error_labels USING TIMESTAMP ? SET category = ?, subcategory = ?
                 WHERE user_id = ? AND category_key = ? AND subcategory_key = ?",
                true,
            )
            .await?,
            label_seen: prepare(
                "UPDATE error_labels USING TIMESTAMP ? SET last_seen = ?
                 WHERE user_id = ? AND category_key = ? AND subcategory_key = ?",
                true,
            )
            .await?,
            select_counts: prepare(
                "SELECT category_key, subcategory_key, frequency FROM error_counts WHERE user_id = ?",
                true,
            )
            .await?,
            select_labels: prepare(
                "SELECT category_key, subcategory_key, category, subcategory, last_seen
                 FROM error_labels WHERE user_id = ?",
                true,
            )
            .await?,
            select_buckets: prepare("SELECT bucket FROM error_buckets WHERE user_id = ?", true)
                .await?,
            select_recent: prepare(
                "SELECT occurred_at, category_key, subcategory_key, category, subcategory,
                        conversation_id, utterance_id, snippet
                 FROM error_events WHERE user_id = ? AND bucket = ? LIMIT ?",
                true,
            )
            .await?,
            select_event_keys: prepare(
                "SELECT category_key, subcategory_key FROM error_events
                 WHERE user_id = ? AND bucket = ?",
                true,
            )
            .await?,
            // Counter updates are never idempotent: a retry could count twice.
            add_count: prepare(
                "UPDATE error_counts SET frequency = frequency + ?
                 WHERE user_id = ? AND category_key = ? AND subcategory_key = ?",
                false,
            )
            .await?,
            select_learners: prepare("SELECT DISTINCT user_id FROM error_labels", true).await?,
            ping: prepare("SELECT release_version FROM system.local", true).await?,
        })
    }
}

struct Inner {
    session: Session,
    statements: Statements,
    buffer: Buffer,
}

pub struct CqlStore {
    inner: Arc<Inner>,
    flusher: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

enum Flushed {
    /// Deltas were applied.
    Yes,
    /// Nothing was buffered.
    Nothing,
    /// Another flusher owns the learner now.
    Busy,
}

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("cql: {e}"))
}

/// Unreachable or overloaded nodes are 503s; anything else is a bug (500).
fn cql_error(e: ExecutionError) -> StoreError {
    let unavailable = match &e {
        ExecutionError::ConnectionPoolError(_)
        | ExecutionError::RequestTimeout(_)
        | ExecutionError::EmptyPlan => true,
        ExecutionError::LastAttemptError(attempt) => match attempt {
            RequestAttemptError::BrokenConnectionError(_)
            | RequestAttemptError::UnableToAllocStreamId => true,
            RequestAttemptError::DbError(db, _) => matches!(
                db,
                DbError::Unavailable { .. }
                    | DbError::Overloaded
                    | DbError::IsBootstrapping
                    | DbError::ReadTimeout { .. }
                    | DbError::WriteTimeout { .. }
                    | DbError::ReadFailure { .. }
                    | DbError::WriteFailure { .. }
            ),
            _ => false,
        },
        _ => false,
    };
    if unavailable {
        StoreError::Unavailable(format!("cql: {e}"))
    } else {
        StoreError::Internal(format!("cql: {e}"))
    }
}

fn timestamp(t: DateTime<Utc>) -> CqlTimestamp {
    CqlTimestamp(t.timestamp_millis())
}

fn from_timestamp(t: CqlTimestamp) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.0).unwrap_or_default()
}

/// The month bucket of `error_events`, as yyyymm.
pub fn bucket(t: DateTime<Utc>) -> i32 {
    t.year() * 100 + t.month() as i32
}

fn snippet(content: Option<&str>) -> Option<String> {
    content.map(|c| c.chars().take(SNIPPET_CHARS).collect())
}

impl CqlStore {
    /// Connects to CQL and Redis, prepares every statement and starts the
    /// flusher.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        schema::check_keyspace(&config.cql_keyspace)?;
        let profile = ExecutionProfile::builder()
            .request_timeout(Some(REQUEST_TIMEOUT))
            .build();
        let session = SessionBuilder::new()
            .known_nodes(&config.cql_nodes)
            .connection_timeout(Duration::from_secs(5))
            .default_execution_profile_handle(profile.into_handle())
            .use_keyspace(&config.cql_keyspace, false)
            .build()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "connecting to {:?}, keyspace {} (did `errata migrate` run?): {e}",
                    config.cql_nodes,
                    config.cql_keyspace
                )
            })?;
        let statements = Statements::prepare(&session).await?;
        let buffer = Buffer::connect(&config.redis_url).await?;
        let inner = Arc::new(Inner {
            session,
            statements,
            buffer,
        });
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run_flusher(inner.clone(), config.flush_interval(), stopped));
        Ok(Self {
            inner,
            flusher: Mutex::new(Some((stop, task))),
        })
    }

    async fn stop_flusher(&self) {
        let running = self.flusher.lock().ok().and_then(|mut f| f.take());
        if let Some((stop, task)) = running {
            let _ = stop.send(());
            let _ = task.await;
        }
    }
}

/// The background flusher: every interval, takes some learners of every
/// dirty shard and flushes them. Replicas cooperate through the flush locks.
async fn run_flusher(inner: Arc<Inner>, interval: Duration, mut stop: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(interval) => {}
        }
        match inner.buffer.dirty_learners().await {
            Ok(n) => metrics::gauge!("errata_buffer_pending_learners").set(n as f64),
            Err(e) => tracing::warn!(error = %e, "flusher: cannot count dirty learners"),
        }
        for shard in 0..DIRTY_SHARDS {
            let learners = match inner.buffer.dirty(shard, Some(LEARNERS_PER_TICK)).await {
                Ok(learners) => learners,
                Err(e) => {
                    tracing::warn!(error = %e, "flusher: cannot read dirty learners");
                    break;
                }
            };
            futures_util::stream::iter(learners)
                .for_each_concurrent(FLUSH_CONCURRENCY, |user| {
                    let inner = &inner;
                    async move {
                        if let Err(e) = inner.flush_learner(user).await {
                            tracing::warn!(error = %e, %user, "flusher: flush failed, will retry");
                        }
                    }
                })
                .await;
        }
    }
}

impl Inner {
    async fn user_exists(&self, user_id: Uuid) -> Result<bool, StoreError> {
        Ok(self.fetch_user(user_id).await?.is_some())
    }

    async fn fetch_user(&self, user_id: Uuid) -> Result<Option<User>, StoreError> {
        let rows = self
            .session
            .execute_unpaged(&self.statements.select_user, (user_id,))
            .await
            .map_err(cql_error)?
            .into_rows_result()
            .map_err(internal)?;
        let row = rows
            .maybe_first_row::<(Option<String>, Option<String>, Option<CqlTimestamp>)>()
            .map_err(internal)?;
        Ok(row.map(|(username, email, created_at)| User {
            user_id,
            username: username.unwrap_or_default(),
            email: email.unwrap_or_default(),
            created_at: created_at.map(from_timestamp).unwrap_or_default(),
        }))
    }

    async fn conversation_exists(
        &self,
        user_id: Uuid,
        conversation_id: Uuid,
    ) -> Result<bool, StoreError> {
        let rows = self
            .session
            .execute_unpaged(
                &self.statements.select_conversation,
                (user_id, conversation_id),
            )
            .await
            .map_err(cql_error)?
            .into_rows_result()
            .map_err(internal)?;
        Ok(rows.rows_num() > 0)
    }

    /// `None` when the utterance is not in this learner's conversation.
    async fn utterance_content(
        &self,
        user_id: Uuid,
        conversation_id: Uuid,
        utterance_id: Uuid,
    ) -> Result<Option<Option<String>>, StoreError> {
        let rows = self
            .session
            .execute_unpaged(
                &self.statements.select_utterance,
                (user_id, conversation_id, utterance_id),
            )
            .await
            .map_err(cql_error)?
            .into_rows_result()
            .map_err(internal)?;
        let row = rows
            .maybe_first_row::<(Option<String>,)>()
            .map_err(internal)?;
        Ok(row.map(|(content,)| content))
    }

    /// Writes the events, labels and bucket of a leased report (idempotent:
    /// a takeover rewrites the same rows).
    async fn write_events(
        &self,
        report: &ErrorReport,
        at: DateTime<Utc>,
        content: Option<&str>,
    ) -> Result<(), StoreError> {
        let s = &self.statements;
        let (user, month) = (report.user_id, bucket(at));
        let at_micros = at.timestamp_micros();
        let snippet = snippet(content);

        let mut labels = Batch::new(BatchType::Unlogged);
        labels.set_is_idempotent(true);
        let mut label_values: Vec<(i64, String, String, Uuid, String, String)> = Vec::new();
        let mut seen_values: Vec<(i64, CqlTimestamp, Uuid, String, String)> = Vec::new();
        let mut keys: Vec<ErrorKey> = Vec::new();
        for point in &report.points {
            let key = point.key();
            if keys.contains(&key) {
                continue;
            }
            label_values.push((
                SPELLING_CLOCK - at_micros,
                point.category.as_str().to_owned(),
                point.subcategory.as_str().to_owned(),
                user,
                key.category.clone(),
                key.subcategory.clone(),
            ));
            seen_values.push((
                at_micros,
                timestamp(at),
                user,
                key.category.clone(),
                key.subcategory.clone(),
            ));
            keys.push(key);
        }
        // One unlogged batch on the learner's partition: bucket, spellings
        // and last-seen times.
        labels.append_statement(s.insert_bucket.clone());
        for _ in &label_values {
            labels.append_statement(s.label_spelling.clone());
        }
        for _ in &seen_values {
            labels.append_statement(s.label_seen.clone());
        }
        let labels_write = async {
            let mut values: Vec<Box<dyn scylla::serialize::row::SerializeRow + Send + Sync>> =
                Vec::with_capacity(1 + label_values.len() + seen_values.len());
            values.push(Box::new((user, month)));
            for v in label_values {
                values.push(Box::new(v));
            }
            for v in seen_values {
                values.push(Box::new(v));
            }
            self.session
                .batch(&labels, values)
                .await
                .map_err(cql_error)
                .map(|_| ())
        };

        let events_write = async {
            let rows: Vec<_> = report
                .points
                .iter()
                .enumerate()
                .map(|(index, point)| {
                    let key = point.key();
                    (
                        user,
                        month,
                        timestamp(at),
                        Uuid::new_v5(&report.fingerprint, index.to_string().as_bytes()),
                        report.conversation_id,
                        report.utterance_id,
                        key.category,
                        key.subcategory,
                        point.category.as_str().to_owned(),
                        point.subcategory.as_str().to_owned(),
                        snippet.clone(),
                    )
                })
                .collect();
            for chunk in rows.chunks(EVENTS_PER_BATCH) {
                let mut batch = Batch::new(BatchType::Unlogged);
                batch.set_is_idempotent(true);
                for _ in chunk {
                    batch.append_statement(s.insert_event.clone());
                }
                self.session.batch(&batch, chunk).await.map_err(cql_error)?;
            }
            Ok::<_, StoreError>(())
        };
        tokio::try_join!(labels_write, events_write)?;
        Ok(())
    }

    /// Durable counters of a learner.
    async fn counts(&self, user_id: Uuid) -> Result<HashMap<ErrorKey, i64>, StoreError> {
        let rows = self
            .session
            .execute_unpaged(&self.statements.select_counts, (user_id,))
            .await
            .map_err(cql_error)?
            .into_rows_result()
            .map_err(internal)?;
        let mut counts = HashMap::new();
        for row in rows
            .rows::<(String, String, Option<Counter>)>()
            .map_err(internal)?
        {
            let (category, subcategory, frequency) = row.map_err(internal)?;
            counts.insert(
                ErrorKey {
                    category,
                    subcategory,
                },
                frequency.map_or(0, |c| c.0),
            );
        }
        Ok(counts)
    }

    /// Spellings and last-seen times of a learner's errors.
    async fn labels(
        &self,
        user_id: Uuid,
    ) -> Result<HashMap<ErrorKey, (String, String, Option<DateTime<Utc>>)>, StoreError> {
        let rows = self
            .session
            .execute_unpaged(&self.statements.select_labels, (user_id,))
            .await
            .map_err(cql_error)?
            .into_rows_result()
            .map_err(internal)?;
        let mut labels = HashMap::new();
        type LabelRow = (
            String,
            String,
            Option<String>,
            Option<String>,
            Option<CqlTimestamp>,
        );
        for row in rows.rows::<LabelRow>().map_err(internal)? {
            let (category_key, subcategory_key, category, subcategory, last_seen) =
                row.map_err(internal)?;
            labels.insert(
                ErrorKey {
                    category: category_key.clone(),
                    subcategory: subcategory_key.clone(),
                },
                (
                    category.unwrap_or(category_key),
                    subcategory.unwrap_or(subcategory_key),
                    last_seen.map(from_timestamp),
                ),
            );
        }
        Ok(labels)
    }

    async fn buckets(&self, user_id: Uuid) -> Result<Vec<i32>, StoreError> {
        let rows = self
            .session
            .execute_unpaged(&self.statements.select_buckets, (user_id,))
            .await
            .map_err(cql_error)?
            .into_rows_result()
            .map_err(internal)?;
        rows.rows::<(i32,)>()
            .map_err(internal)?
            .map(|row| row.map(|(b,)| b).map_err(internal))
            .collect()
    }

    /// Every event of a learner, counted by error (paged: the log may be long).
    async fn event_counts(&self, user_id: Uuid) -> Result<HashMap<ErrorKey, i64>, StoreError> {
        let mut counts: HashMap<ErrorKey, i64> = HashMap::new();
        for month in self.buckets(user_id).await? {
            let mut paging = PagingState::start();
            loop {
                let (result, next) = self
                    .session
                    .execute_single_page(
                        &self.statements.select_event_keys,
                        (user_id, month),
                        paging,
                    )
                    .await
                    .map_err(cql_error)?;
                let rows = result.into_rows_result().map_err(internal)?;
                for row in rows.rows::<(String, String)>().map_err(internal)? {
                    let (category, subcategory) = row.map_err(internal)?;
                    *counts
                        .entry(ErrorKey {
                            category,
                            subcategory,
                        })
                        .or_default() += 1;
                }
                match next.into_paging_control_flow() {
                    std::ops::ControlFlow::Break(()) => break,
                    std::ops::ControlFlow::Continue(state) => paging = state,
                }
            }
        }
        Ok(counts)
    }

    /// Adds the deltas to the learner's counters in one counter batch.
    async fn apply_counts(&self, user: Uuid, deltas: &[(ErrorKey, i64)]) -> Result<(), StoreError> {
        let values: Vec<(Counter, Uuid, &str, &str)> = deltas
            .iter()
            .filter(|(_, delta)| *delta != 0)
            .map(|(key, delta)| {
                (
                    Counter(*delta),
                    user,
                    key.category.as_str(),
                    key.subcategory.as_str(),
                )
            })
            .collect();
        if values.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::new(BatchType::Counter);
        batch.set_is_idempotent(false);
        for _ in &values {
            batch.append_statement(self.statements.add_count.clone());
        }
        self.session
            .batch(&batch, values)
            .await
            .map_err(cql_error)?;
        Ok(())
    }

    /// Applies every buffered delta of one learner.
    async fn flush_learner(&self, user: Uuid) -> Result<Flushed, StoreError> {
        let token = Uuid::new_v4().to_string();
        let mut flushed = Flushed::Nothing;
        loop {
            match self.buffer.take(user, &token).await? {
                Take::Busy => return Ok(Flushed::Busy),
                Take::Empty => {
                    self.buffer.clean(user).await?;
                    return Ok(flushed);
                }
                Take::Deltas {
                    deltas,
                    replay,
                    age,
                } => {
                    if replay {
                        tracing::warn!(%user, "re-applying in-flight deltas of an interrupted flush");
                    } else {
                        metrics::gauge!("errata_flush_lag_seconds").set(age.as_secs_f64());
                    }
                    if let Err(e) = self.apply_counts(user, &deltas).await {
                        metrics::counter!("errata_flush_failures_total").increment(1);
                        if let Err(release) = self.buffer.release(user, &token).await {
                            tracing::warn!(error = %release, "could not release a flush lock");
                        }
                        return Err(e);
                    }
                    metrics::counter!("errata_flush_batches_total").increment(1);
                    metrics::histogram!("errata_flush_batch_size").record(deltas.len() as f64);
                    if !self.finish_flush(user, &token).await? {
                        tracing::warn!(%user, "flush lock expired during a counter batch");
                    }
                    flushed = Flushed::Yes;
                }
            }
        }
    }

    /// Deletes the in-flight deltas after their batch was applied. Redis may
    /// be briefly away: retrying while the flush lock is still ours beats
    /// leaving the deltas to be applied a second time by the next flusher.
    async fn finish_flush(&self, user: Uuid, token: &str) -> Result<bool, StoreError> {
        let started = Instant::now();
        loop {
            match self.buffer.done(user, token).await {
                Ok(done) => return Ok(done),
                Err(e) if started.elapsed() + FINISH_MARGIN < buffer::FLUSH_LOCK => {
                    tracing::warn!(error = %e, %user, "flusher: cannot finish a flush yet, retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Recomputes one learner's counts from the event log and corrects the
    /// counters by the difference. Returns how many counts changed.
    async fn repair_learner(&self, user: Uuid) -> Result<usize, StoreError> {
        let token = Uuid::new_v4().to_string();
        let started = Instant::now();
        while !self.buffer.lock(user, &token).await? {
            if started.elapsed() > buffer::FLUSH_LOCK {
                return Err(StoreError::Unavailable(format!(
                    "learner {user} stayed locked by a flusher"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let result = self.repair_locked(user).await;
        if let Err(e) = self.buffer.release(user, &token).await {
            tracing::warn!(error = %e, "could not release a repair lock");
        }
        result
    }

    async fn repair_locked(&self, user: Uuid) -> Result<usize, StoreError> {
        // With the lock held no flush runs, so counters and in-flight deltas
        // stand still; pending deltas may grow, so read them around the log.
        let mut attempt = 0;
        let (events, buffered) = loop {
            let before = self.buffer.buffered(user).await?;
            let events = self.event_counts(user).await?;
            let after = self.buffer.buffered(user).await?;
            attempt += 1;
            if before.pending == after.pending || attempt >= 5 {
                break (events, after);
            }
        };
        let counts = self.counts(user).await?;
        let mut keys: Vec<&ErrorKey> = events.keys().chain(counts.keys()).collect();
        keys.sort();
        keys.dedup();
        let corrections: Vec<(ErrorKey, i64)> = keys
            .into_iter()
            .filter_map(|key| {
                let buffered_delta = buffered.pending.get(key).copied().unwrap_or(0)
                    + buffered.inflight.get(key).copied().unwrap_or(0);
                let target = events.get(key).copied().unwrap_or(0) - buffered_delta;
                let diff = target - counts.get(key).copied().unwrap_or(0);
                (diff != 0).then(|| (key.clone(), diff))
            })
            .collect();
        if !corrections.is_empty() {
            tracing::info!(%user, corrections = corrections.len(), "repair: correcting counters");
            self.apply_counts(user, &corrections).await?;
        }
        Ok(corrections.len())
    }

    /// Every learner that has errors (a full scan: for `errata repair`).
    async fn learners(&self) -> Result<Vec<Uuid>, StoreError> {
        let mut learners = Vec::new();
        let mut paging = PagingState::start();
        loop {
            let (result, next) = self
                .session
                .execute_single_page(&self.statements.select_learners, (), paging)
                .await
                .map_err(cql_error)?;
            let rows = result.into_rows_result().map_err(internal)?;
            for row in rows.rows::<(Uuid,)>().map_err(internal)? {
                learners.push(row.map_err(internal)?.0);
            }
            match next.into_paging_control_flow() {
                std::ops::ControlFlow::Break(()) => break,
                std::ops::ControlFlow::Continue(state) => paging = state,
            }
        }
        Ok(learners)
    }

    async fn drain(&self) -> Result<usize, StoreError> {
        let started = Instant::now();
        let mut flushed = 0;
        loop {
            let mut any = false;
            let mut busy = false;
            for shard in 0..DIRTY_SHARDS {
                for user in self.buffer.dirty(shard, None).await? {
                    any = true;
                    match self.flush_learner(user).await? {
                        Flushed::Yes => flushed += 1,
                        Flushed::Busy => busy = true,
                        Flushed::Nothing => {}
                    }
                }
            }
            if !any {
                return Ok(flushed);
            }
            if started.elapsed() > FLUSH_DEADLINE {
                return Err(StoreError::Unavailable(
                    "flush: learners kept arriving or stayed locked".into(),
                ));
            }
            if busy {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

fn first_column_true(row: Option<Row>) -> bool {
    matches!(
        row.and_then(|r| r.columns.into_iter().next().flatten()),
        Some(CqlValue::Boolean(true))
    )
}

#[async_trait]
impl Store for CqlStore {
    async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        let s = &self.inner.statements;
        let user = User {
            user_id: Uuid::now_v7(),
            username: new.username.as_str().to_owned(),
            email: new.email.as_str().to_owned(),
            created_at: super::now(),
        };
        // The row first, then the e-mail claim: a crash in between leaves an
        // unreachable row, never an e-mail claimed by nobody.
        self.inner
            .session
            .execute_unpaged(
                &s.insert_user,
                (
                    user.user_id,
                    &user.username,
                    &user.email,
                    timestamp(user.created_at),
                ),
            )
            .await
            .map_err(cql_error)?;
        let claim = self
            .inner
            .session
            .execute_unpaged(&s.claim_email, (new.email.key(), user.user_id))
            .await
            .map_err(cql_error)?
            .into_rows_result()
            .map_err(internal)?;
        let applied = first_column_true(claim.maybe_first_row::<Row>().map_err(internal)?);
        if !applied {
            if let Err(e) = self
                .inner
                .session
                .execute_unpaged(&s.delete_user, (user.user_id,))
                .await
            {
                tracing::warn!(error = %e, "could not remove the row of a refused sign-up");
            }
            return Err(StoreError::EmailTaken);
        }
        Ok(user)
    }

    async fn user(&self, user_id: Uuid) -> Result<Option<User>, StoreError> {
        self.inner.fetch_user(user_id).await
    }

    async fn create_conversation(&self, user_id: Uuid) -> Result<Conversation, StoreError> {
        if !self.inner.user_exists(user_id).await? {
            return Err(StoreError::UserNotFound);
        }
        let conversation = Conversation {
            conversation_id: Uuid::now_v7(),
            user_id,
            started_at: super::now(),
        };
        self.inner
            .session
            .execute_unpaged(
                &self.inner.statements.insert_conversation,
                (
                    user_id,
                    conversation.conversation_id,
                    timestamp(conversation.started_at),
                ),
            )
            .await
            .map_err(cql_error)?;
        Ok(conversation)
    }

    async fn create_utterance(&self, new: NewUtterance) -> Result<Utterance, StoreError> {
        if !self
            .inner
            .conversation_exists(new.user_id, new.conversation_id)
            .await?
        {
            return Err(StoreError::ConversationNotFound);
        }
        let utterance = Utterance {
            utterance_id: Uuid::now_v7(),
            conversation_id: new.conversation_id,
            user_id: new.user_id,
            content: new.content,
            created_at: super::now(),
        };
        self.inner
            .session
            .execute_unpaged(
                &self.inner.statements.insert_utterance,
                (
                    utterance.user_id,
                    utterance.conversation_id,
                    utterance.utterance_id,
                    &utterance.content,
                    timestamp(utterance.created_at),
                ),
            )
            .await
            .map_err(cql_error)?;
        Ok(utterance)
    }

    async fn record_errors(&self, report: ErrorReport) -> Result<RecordOutcome, StoreError> {
        let inner = &self.inner;
        let (user, conversation, utterance) = tokio::join!(
            inner.user_exists(report.user_id),
            inner.conversation_exists(report.user_id, report.conversation_id),
            inner.utterance_content(report.user_id, report.conversation_id, report.utterance_id),
        );
        if !user? {
            return Err(StoreError::UserNotFound);
        }
        if !conversation? {
            return Err(StoreError::ConversationNotFound);
        }
        let Some(content) = utterance? else {
            return Err(StoreError::UtteranceNotFound);
        };

        let token = Uuid::new_v4().to_string();
        let started = Instant::now();
        let at_ms = loop {
            match inner
                .buffer
                .lease(
                    report.user_id,
                    report.fingerprint,
                    report.received_at.timestamp_millis(),
                    &token,
                )
                .await?
            {
                Lease::Acquired { at_ms } => break at_ms,
                Lease::Done => {
                    return Ok(RecordOutcome {
                        recorded: 0,
                        duplicate: true,
                    })
                }
                Lease::Busy => {
                    if started.elapsed() > LEASE + Duration::from_secs(2) {
                        return Err(StoreError::Unavailable(
                            "the same request is still being recorded".into(),
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        let at = DateTime::from_timestamp_millis(at_ms).unwrap_or(report.received_at);
        if let Err(e) = inner.write_events(&report, at, content.as_deref()).await {
            inner
                .buffer
                .abandon(report.user_id, report.fingerprint, &token)
                .await;
            return Err(e);
        }
        let mut deltas: Vec<(ErrorKey, i64)> = Vec::new();
        for point in &report.points {
            let key = point.key();
            match deltas.iter_mut().find(|(k, _)| *k == key) {
                Some((_, n)) => *n += 1,
                None => deltas.push((key, 1)),
            }
        }
        if !inner
            .buffer
            .commit(report.user_id, report.fingerprint, &token, &deltas)
            .await?
        {
            return Err(StoreError::Unavailable(
                "the request's lease expired before it was counted; retry it".into(),
            ));
        }
        Ok(RecordOutcome {
            recorded: report.points.len(),
            duplicate: false,
        })
    }

    async fn frequencies(&self, user_id: Uuid) -> Result<FrequencyTable, StoreError> {
        let inner = &self.inner;
        const ATTEMPTS: usize = 50;
        let mut attempt = 0;
        let (buffered, counts, labels) = loop {
            attempt += 1;
            let last = attempt >= ATTEMPTS;
            let buffered = inner.buffer.buffered(user_id).await?;
            if buffered.locked && !buffered.inflight.is_empty() && !last {
                // A counter batch may be half way: the counters may or may
                // not hold the in-flight deltas yet.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            let (counts, labels) = tokio::try_join!(inner.counts(user_id), inner.labels(user_id))?;
            if inner.buffer.epoch(user_id).await? == buffered.epoch || last {
                break (buffered, counts, labels);
            }
        };
        let mut table: HashMap<ErrorKey, ErrorFrequency> = HashMap::new();
        let deltas = counts
            .into_iter()
            .chain(buffered.pending)
            .chain(buffered.inflight);
        for (key, delta) in deltas {
            let entry = table.entry(key.clone()).or_insert_with(|| {
                let (category, subcategory, last_seen) = labels
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| (key.category.clone(), key.subcategory.clone(), None));
                ErrorFrequency {
                    key,
                    category,
                    subcategory,
                    frequency: 0,
                    last_seen,
                }
            });
            entry.frequency += delta;
        }
        if table.is_empty() && !inner.user_exists(user_id).await? {
            return Err(StoreError::UserNotFound);
        }
        Ok(table.into_values().collect())
    }

    async fn recent_errors(
        &self,
        user_id: Uuid,
        limit: usize,
    ) -> Result<Vec<RecentError>, StoreError> {
        let inner = &self.inner;
        let buckets = inner.buckets(user_id).await?;
        let mut recent = Vec::new();
        for month in buckets {
            if recent.len() >= limit {
                break;
            }
            let wanted = i32::try_from(limit - recent.len()).unwrap_or(i32::MAX);
            let rows = inner
                .session
                .execute_unpaged(&inner.statements.select_recent, (user_id, month, wanted))
                .await
                .map_err(cql_error)?
                .into_rows_result()
                .map_err(internal)?;
            type EventRow = (
                CqlTimestamp,
                String,
                String,
                Option<String>,
                Option<String>,
                Option<Uuid>,
                Option<Uuid>,
                Option<String>,
            );
            for row in rows.rows::<EventRow>().map_err(internal)? {
                let (at, ck, sk, category, subcategory, conversation, utterance, snippet) =
                    row.map_err(internal)?;
                recent.push(RecentError {
                    category: category.unwrap_or_else(|| ck.clone()),
                    subcategory: subcategory.unwrap_or_else(|| sk.clone()),
                    key: ErrorKey {
                        category: ck,
                        subcategory: sk,
                    },
                    conversation_id: conversation.unwrap_or_default(),
                    utterance_id: utterance.unwrap_or_default(),
                    utterance: snippet,
                    occurred_at: from_timestamp(at),
                });
            }
        }
        if recent.is_empty() {
            if !inner.user_exists(user_id).await? {
                return Err(StoreError::UserNotFound);
            }
            return Ok(recent);
        }
        // Events show the spelling the learner's table shows (the first).
        let labels = inner.labels(user_id).await?;
        for error in &mut recent {
            if let Some((category, subcategory, _)) = labels.get(&error.key) {
                error.category.clone_from(category);
                error.subcategory.clone_from(subcategory);
            }
        }
        recent.truncate(limit);
        Ok(recent)
    }

    async fn next_exercise_round(&self, user_id: Uuid) -> Result<u64, StoreError> {
        self.inner.buffer.next_round(user_id).await
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let (redis, cql) = tokio::join!(
            inner.buffer.ping(),
            inner.session.execute_unpaged(&inner.statements.ping, ())
        );
        redis?;
        cql.map_err(|e| StoreError::Unavailable(format!("cql: {e}")))?;
        Ok(())
    }

    async fn flush(&self) -> Result<usize, StoreError> {
        self.inner.drain().await
    }

    async fn repair(&self, user_id: Option<Uuid>) -> Result<usize, StoreError> {
        let learners = match user_id {
            Some(user) => vec![user],
            None => self.inner.learners().await?,
        };
        let mut corrected = 0;
        for user in learners {
            corrected += self.inner.repair_learner(user).await?;
        }
        Ok(corrected)
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        self.stop_flusher().await;
        self.inner.drain().await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn events_are_bucketed_by_month() {
        let t = Utc.with_ymd_and_hms(2026, 11, 28, 23, 59, 59).unwrap();
        assert_eq!(bucket(t), 202611);
        let t = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(bucket(t), 202701);
    }

    #[test]
    fn spelling_timestamps_decrease_and_stay_in_the_past() {
        let now = Utc::now().timestamp_micros();
        let later = now + 1_000_000;
        assert!(SPELLING_CLOCK - now > SPELLING_CLOCK - later);
        assert!(SPELLING_CLOCK - now < now);
        assert!(SPELLING_CLOCK - now > 0);
    }

    #[test]
    fn snippets_are_cut_by_characters() {
        let long = "é".repeat(SNIPPET_CHARS + 10);
        assert_eq!(
            snippet(Some(&long)).map(|s| s.chars().count()),
            Some(SNIPPET_CHARS)
        );
        assert_eq!(snippet(None), None);
    }
}
