//! Accounts: users, conversations and utterances. Created once, never
//! changed, so their existence and ownership are facts a replica may
//! remember ([`Ownership`]) and a request can check.

use std::sync::Arc;

use scylla::client::session::Session;
use scylla::value::{CqlValue, Row};
use uuid::Uuid;

use super::ownership::{Known, Ownership};
use super::rows::{snippet, ConversationRow, UserRow, UtteranceRow};
use super::session::{cql_error, first_column_true, internal, select};
use super::statements::statements;
use crate::store::{Conversation, ErrorReport, NewUser, NewUtterance, StoreError, User, Utterance};

statements! {
    /// The statements of accounts.
    pub struct AccountStatements {
        insert_user: IDEMPOTENT =>
            "INSERT INTO users (user_id, username, email, created_at, timezone) \
             VALUES (?, ?, ?, ?, ?)",
        /// A retried LWT could report its own earlier success as a
        /// conflict, so it is not retried by the driver.
        claim_email: ONCE =>
            "INSERT INTO users_by_email (email_key, user_id) VALUES (?, ?) IF NOT EXISTS",
        delete_user: IDEMPOTENT =>
            "DELETE FROM users WHERE user_id = ?",
        select_user: IDEMPOTENT =>
            "SELECT user_id, username, email, created_at, timezone FROM users WHERE user_id = ?",
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
    }
}

/// Signs learners up, opens their conversations and keeps their
/// utterances; answers whether they exist.
pub struct Accounts {
    session: Arc<Session>,
    statements: AccountStatements,
    /// What this replica knows exists.
    ownership: Ownership,
}

impl Accounts {
    pub async fn new(session: Arc<Session>) -> Result<Self, StoreError> {
        Ok(Self {
            statements: AccountStatements::prepare(&session).await?,
            session,
            ownership: Ownership::new(),
        })
    }

    /// Forgets what this replica knows of the learner (they are being
    /// erased).
    pub fn forget(&self, user_id: Uuid) {
        self.ownership.forget(user_id);
    }

    /// What a request of a learner whose erasure marker it met answers:
    /// the learner is gone (an erasure that fails lifts its marker at
    /// once), and this replica forgets what it knew of them.
    pub fn being_erased(&self, user_id: Uuid) -> StoreError {
        self.forget(user_id);
        StoreError::UserNotFound
    }

    /// Confirms that the report's learner, conversation and utterance exist
    /// and belong together, from what this replica already knows or else
    /// from CQL; returns the utterance's snippet.
    ///
    /// One read in the common case: the utterance's row, keyed by its
    /// learner and conversation, proves both when it is found. Each was
    /// checked when the row was written; an erasure deletes `utterances`
    /// before `conversations` and `users`, so one cut off half way never
    /// leaves an utterance row without them; and its tombstones lie ahead
    /// of any write racing it. Only when the row is missing are the learner
    /// and the conversation read as well, to say which the 404 is about.
    pub async fn owned(&self, report: &ErrorReport) -> Result<Option<Arc<str>>, StoreError> {
        let ids = (report.user_id, report.conversation_id, report.utterance_id);
        let (user, conversation, utterance) = ids;
        let mut known = self.ownership.lookup(user, conversation, utterance);
        if !known.complete() {
            let asked = std::time::Instant::now();
            if known.utterance.is_none() {
                if let Some(content) = self
                    .utterance_content(user, conversation, utterance)
                    .await?
                {
                    known = Known {
                        user: true,
                        conversation: true,
                        utterance: Some(snippet(content.as_deref())),
                    };
                }
            }
            if !known.complete() {
                let (user_read, conversation_read) = tokio::join!(
                    async { Ok::<_, StoreError>(known.user || self.user_exists(user).await?) },
                    async {
                        Ok::<_, StoreError>(
                            known.conversation
                                || self.conversation_exists(user, conversation).await?,
                        )
                    },
                );
                known.user = user_read?;
                known.conversation = conversation_read?;
            }
            self.ownership.remember(ids, &known, asked);
        }
        if !known.user {
            return Err(StoreError::UserNotFound);
        }
        if !known.conversation {
            return Err(StoreError::ConversationNotFound);
        }
        known.utterance.ok_or(StoreError::UtteranceNotFound)
    }

    pub async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        let s = &self.statements;
        let email_key = new.email.key().to_owned();
        let user = User::new(new);
        // The row first, then the e-mail claim: a crash in between leaves an
        // unreachable row, never an e-mail claimed by nobody.
        self.session
            .execute_unpaged(&s.insert_user, UserRow::from(&user))
            .await
            .map_err(cql_error)?;
        let claim = select(&self.session, &s.claim_email, (email_key, user.user_id)).await?;
        // Not applied, the answer carries the row that is there: who
        // claimed the address.
        let claimant_column = claim.column_specs().get_by_name("user_id").map(|(i, _)| i);
        let row = claim.maybe_first_row::<Row>().map_err(internal)?;
        let claimant = match (&row, claimant_column) {
            (Some(row), Some(i)) => match row.columns.get(i) {
                Some(Some(CqlValue::Uuid(id))) => Some(*id),
                _ => None,
            },
            _ => None,
        };
        // (A claim of this very attempt could only be found if the claim
        // had been retried; it is the user's all the same.)
        if first_column_true(row) || claimant == Some(user.user_id) {
            self.ownership.learner_created(user.user_id);
            return Ok(user);
        }
        if let Err(e) = self
            .session
            .execute_unpaged(&s.delete_user, (user.user_id,))
            .await
        {
            tracing::warn!(error = %e, "could not remove the row of a refused sign-up");
        }
        match claimant {
            Some(claimant) => self.earlier_attempt(&user, claimant).await,
            None => Err(StoreError::EmailTaken),
        }
    }

    /// The account of an earlier attempt of this sign-up, if `claimant`'s
    /// is one: its claim applied but the answer was lost (a timeout, a
    /// broken connection), so the client retried. Otherwise the e-mail is
    /// another's.
    async fn earlier_attempt(&self, attempt: &User, claimant: Uuid) -> Result<User, StoreError> {
        let Some(earlier) = self.user(claimant).await? else {
            return Err(StoreError::EmailTaken);
        };
        if !earlier.retried_by(attempt) {
            return Err(StoreError::EmailTaken);
        }
        tracing::info!(user_id = %earlier.user_id, "a retried sign-up found its earlier attempt's account");
        Ok(earlier)
    }

    pub async fn create_conversation(&self, user_id: Uuid) -> Result<Conversation, StoreError> {
        if !self.user_exists(user_id).await? {
            return Err(StoreError::UserNotFound);
        }
        let conversation = Conversation::new(user_id);
        self.session
            .execute_unpaged(
                &self.statements.insert_conversation,
                ConversationRow::from(&conversation),
            )
            .await
            .map_err(cql_error)?;
        self.ownership
            .conversation_created(user_id, conversation.conversation_id);
        Ok(conversation)
    }

    pub async fn create_utterance(&self, new: NewUtterance) -> Result<Utterance, StoreError> {
        if !self
            .conversation_exists(new.user_id, new.conversation_id)
            .await?
        {
            return Err(StoreError::ConversationNotFound);
        }
        let utterance = Utterance::new(new);
        self.session
            .execute_unpaged(
                &self.statements.insert_utterance,
                UtteranceRow::from(&utterance),
            )
            .await
            .map_err(cql_error)?;
        self.ownership.utterance_created(
            (
                utterance.user_id,
                utterance.conversation_id,
                utterance.utterance_id,
            ),
            snippet(utterance.content.as_deref()),
        );
        Ok(utterance)
    }

    pub async fn user_exists(&self, user_id: Uuid) -> Result<bool, StoreError> {
        Ok(self.user(user_id).await?.is_some())
    }

    pub async fn user(&self, user_id: Uuid) -> Result<Option<User>, StoreError> {
        let rows = select(&self.session, &self.statements.select_user, (user_id,)).await?;
        let row = rows.maybe_first_row::<UserRow>().map_err(internal)?;
        Ok(row.map(User::from))
    }

    async fn conversation_exists(
        &self,
        user_id: Uuid,
        conversation_id: Uuid,
    ) -> Result<bool, StoreError> {
        let rows = select(
            &self.session,
            &self.statements.select_conversation,
            (user_id, conversation_id),
        )
        .await?;
        Ok(rows.rows_num() > 0)
    }

    /// `None` when the utterance is not in this learner's conversation.
    async fn utterance_content(
        &self,
        user_id: Uuid,
        conversation_id: Uuid,
        utterance_id: Uuid,
    ) -> Result<Option<Option<String>>, StoreError> {
        let rows = select(
            &self.session,
            &self.statements.select_utterance,
            (user_id, conversation_id, utterance_id),
        )
        .await?;
        let row = rows
            .maybe_first_row::<(Option<String>,)>()
            .map_err(internal)?;
        Ok(row.map(|(content,)| content))
    }
}
