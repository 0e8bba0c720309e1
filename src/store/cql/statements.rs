//! Every CQL statement the store runs, prepared once at start-up (so
//! partition keys are bound with `?` and routing stays token-aware).

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use crate::store::StoreError;

pub(super) struct Statements {
    pub(super) insert_user: PreparedStatement,
    pub(super) claim_email: PreparedStatement,
    pub(super) delete_user: PreparedStatement,
    pub(super) select_user: PreparedStatement,
    pub(super) insert_conversation: PreparedStatement,
    pub(super) select_conversation: PreparedStatement,
    pub(super) insert_utterance: PreparedStatement,
    pub(super) select_utterance: PreparedStatement,
    pub(super) insert_event: PreparedStatement,
    pub(super) insert_bucket: PreparedStatement,
    pub(super) label_spelling: PreparedStatement,
    pub(super) label_seen: PreparedStatement,
    pub(super) select_counts: PreparedStatement,
    pub(super) select_labels: PreparedStatement,
    pub(super) select_buckets: PreparedStatement,
    pub(super) select_recent: PreparedStatement,
    pub(super) select_event_keys: PreparedStatement,
    pub(super) add_count: PreparedStatement,
    pub(super) select_learners: PreparedStatement,
    pub(super) ping: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(session: &Session) -> Result<Self, StoreError> {
        let prepare = |cql: &'static str, idempotent: bool| async move {
            let mut statement = session
                .prepare(cql)
                .await
                .map_err(|e| StoreError::internal(format!("preparing {cql}"), e))?;
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
