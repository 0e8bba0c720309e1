//! Every CQL statement the store runs, prepared once at start-up (so
//! partition keys are bound with `?` and routing stays token-aware), each
//! declared once with its name and whether the driver may retry it.

use std::net::SocketAddr;
use std::sync::Arc;

use scylla::client::session::Session;
use scylla::errors::{RequestAttemptError, RequestError};
use scylla::observability::history::{AttemptId, HistoryListener, RequestId, SpeculativeId};
use scylla::policies::retry::RetryDecision;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;

use crate::store::StoreError;

/// Safe to retry: running it twice leaves what running it once leaves.
pub(super) const IDEMPOTENT: bool = true;
/// Never retried by the driver (counter updates, lightweight transactions).
pub(super) const ONCE: bool = false;

/// Counts one kind of statement for `/metrics`: every execution in
/// `errata_cql_statements_total` and every attempt (a round trip to a node,
/// retries and speculative executions included) in
/// `errata_cql_round_trips_total`, both labelled `kind`.
#[derive(Debug)]
struct Counted(&'static str);

impl HistoryListener for Counted {
    fn log_request_start(&self) -> RequestId {
        metrics::counter!("errata_cql_statements_total", "kind" => self.0).increment(1);
        RequestId(0)
    }

    fn log_request_success(&self, _: RequestId) {}

    fn log_request_error(&self, _: RequestId, _: &RequestError) {}

    fn log_new_speculative_fiber(&self, _: RequestId) -> SpeculativeId {
        SpeculativeId(0)
    }

    fn log_attempt_start(
        &self,
        _: RequestId,
        _: Option<SpeculativeId>,
        _: SocketAddr,
    ) -> AttemptId {
        metrics::counter!("errata_cql_round_trips_total", "kind" => self.0).increment(1);
        AttemptId(0)
    }

    fn log_attempt_success(&self, _: AttemptId) {}

    fn log_attempt_error(&self, _: AttemptId, _: &RequestAttemptError, _: &RetryDecision) {}
}

/// A batch counted as `kind` (see [`Counted`]).
pub(super) fn batch(kind: &'static str, batch_type: BatchType, idempotent: bool) -> Batch {
    let mut batch = Batch::new(batch_type);
    batch.set_is_idempotent(idempotent);
    batch.set_history_listener(Arc::new(Counted(kind)));
    batch
}

/// Prepares `cql` counted as `kind` (see [`Counted`]).
pub(super) async fn prepare(
    session: &Session,
    kind: &'static str,
    cql: &'static str,
    idempotent: bool,
) -> Result<PreparedStatement, StoreError> {
    let mut statement = session
        .prepare(cql)
        .await
        .map_err(|e| StoreError::internal(format!("preparing {cql}"), e))?;
    statement.set_is_idempotent(idempotent);
    statement.set_history_listener(Arc::new(Counted(kind)));
    Ok(statement)
}

macro_rules! statements {
    ($($(#[$doc:meta])* $name:ident: $idempotent:ident => $cql:literal,)*) => {
        pub(super) struct Statements {
            $($(#[$doc])* pub(super) $name: PreparedStatement,)*
        }

        impl Statements {
            pub(super) async fn prepare(session: &Session) -> Result<Self, StoreError> {
                Ok(Self {
                    $($name: prepare(session, stringify!($name), $cql, $idempotent).await?,)*
                })
            }
        }
    };
}

statements! {
    insert_user: IDEMPOTENT =>
        "INSERT INTO users (user_id, username, email, created_at) VALUES (?, ?, ?, ?)",
    /// A retried LWT could report its own earlier success as a
    /// conflict, so it is not retried by the driver.
    claim_email: ONCE =>
        "INSERT INTO users_by_email (email_key, user_id) VALUES (?, ?) IF NOT EXISTS",
    delete_user: IDEMPOTENT =>
        "DELETE FROM users WHERE user_id = ?",
    select_user: IDEMPOTENT =>
        "SELECT username, email, created_at FROM users WHERE user_id = ?",
    insert_conversation: IDEMPOTENT =>
        "INSERT INTO conversations (user_id, conversation_id, started_at) \
         VALUES (?, ?, ?)",
    select_conversation: IDEMPOTENT =>
        "SELECT started_at FROM conversations WHERE user_id = ? AND conversation_id = ?",
    insert_utterance: IDEMPOTENT =>
        "INSERT INTO utterances (user_id, conversation_id, utterance_id, content, created_at) \
         VALUES (?, ?, ?, ?, ?)",
    select_utterance: IDEMPOTENT =>
        "SELECT content \
         FROM utterances \
         WHERE user_id = ? AND conversation_id = ? AND utterance_id = ?",
    insert_event: IDEMPOTENT =>
        "INSERT INTO error_events (user_id, bucket, occurred_at, event_id, conversation_id, \
         utterance_id, category_key, subcategory_key, category, subcategory, snippet, \
         correction, explanation) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    insert_bucket: IDEMPOTENT =>
        "INSERT INTO error_buckets (user_id, bucket) VALUES (?, ?)",
    label_spelling: IDEMPOTENT =>
        "UPDATE error_labels \
         USING TIMESTAMP ? \
         SET category = ?, subcategory = ? \
         WHERE user_id = ? AND category_key = ? AND subcategory_key = ?",
    label_seen: IDEMPOTENT =>
        "UPDATE error_labels \
         USING TIMESTAMP ? \
         SET last_seen = ? \
         WHERE user_id = ? AND category_key = ? AND subcategory_key = ?",
    /// `label_seen` for a point whose sentence and correction are known:
    /// the sentence goes in its slot, with the same write timestamp.
    label_seen_sentence: IDEMPOTENT =>
        "UPDATE error_labels \
         USING TIMESTAMP ? \
         SET last_seen = ?, sentences[?] = ? \
         WHERE user_id = ? AND category_key = ? AND subcategory_key = ?",
    /// A sentence put back in its slot by repair (with the event's time
    /// as its write timestamp, as the ingest writes it).
    label_sentence: IDEMPOTENT =>
        "UPDATE error_labels \
         USING TIMESTAMP ? \
         SET sentences[?] = ? \
         WHERE user_id = ? AND category_key = ? AND subcategory_key = ?",
    select_counts: IDEMPOTENT =>
        "SELECT category_key, subcategory_key, frequency \
         FROM error_counts \
         WHERE user_id = ?",
    select_labels: IDEMPOTENT =>
        "SELECT category_key, subcategory_key, category, subcategory, last_seen \
         FROM error_labels \
         WHERE user_id = ?",
    /// `select_labels` with each error's sentences, for practice.
    select_labels_sentences: IDEMPOTENT =>
        "SELECT category_key, subcategory_key, category, subcategory, last_seen, sentences \
         FROM error_labels \
         WHERE user_id = ?",
    select_buckets: IDEMPOTENT =>
        "SELECT bucket FROM error_buckets WHERE user_id = ?",
    select_recent: IDEMPOTENT =>
        "SELECT occurred_at, category_key, subcategory_key, category, subcategory, \
         conversation_id, utterance_id, snippet, correction, explanation \
         FROM error_events \
         WHERE user_id = ? AND bucket = ? \
         LIMIT ?",
    select_event_keys: IDEMPOTENT =>
        "SELECT category_key, subcategory_key, event_id, occurred_at \
         FROM error_events \
         WHERE user_id = ? AND bucket = ?",
    /// Counter updates are never idempotent: a retry could count twice.
    add_count: ONCE =>
        "UPDATE error_counts \
         SET frequency = frequency + ? \
         WHERE user_id = ? AND category_key = ? AND subcategory_key = ?",
    /// The same batch as `add_count` carries these.
    add_week_count: ONCE =>
        "UPDATE error_counts_by_week \
         SET frequency = frequency + ? \
         WHERE user_id = ? AND week_start = ? AND category_key = ? AND subcategory_key = ?",
    select_week_counts: IDEMPOTENT =>
        "SELECT week_start, category_key, subcategory_key, frequency \
         FROM error_counts_by_week \
         WHERE user_id = ? AND week_start >= ?",
    select_learners: IDEMPOTENT =>
        "SELECT DISTINCT user_id FROM error_labels",
    ping: IDEMPOTENT =>
        "SELECT release_version FROM system.local",
}
