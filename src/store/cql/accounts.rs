//! Users, conversations and utterances: created once, never changed, so
//! their existence and ownership are facts a request can check.

use scylla::value::{CqlTimestamp, CqlValue, Row};
use uuid::Uuid;

use super::ingest::snippet;
use super::session::{cql_error, first_column_true, from_timestamp, internal, select, timestamp};
use super::Inner;
use crate::store::{Conversation, NewUser, NewUtterance, StoreError, User, Utterance};

impl Inner {
    pub(super) async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        let s = &self.statements;
        let email_key = new.email.key().to_owned();
        let user = User::new(new);
        // The row first, then the e-mail claim: a crash in between leaves an
        // unreachable row, never an e-mail claimed by nobody.
        self.session
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
        let Some(earlier) = self.fetch_user(claimant).await? else {
            return Err(StoreError::EmailTaken);
        };
        if !earlier.retried_by(attempt) {
            return Err(StoreError::EmailTaken);
        }
        tracing::info!(user_id = %earlier.user_id, "a retried sign-up found its earlier attempt's account");
        Ok(earlier)
    }

    pub(super) async fn create_conversation(
        &self,
        user_id: Uuid,
    ) -> Result<Conversation, StoreError> {
        if !self.user_exists(user_id).await? {
            return Err(StoreError::UserNotFound);
        }
        let conversation = Conversation::new(user_id);
        self.session
            .execute_unpaged(
                &self.statements.insert_conversation,
                (
                    user_id,
                    conversation.conversation_id,
                    timestamp(conversation.started_at),
                ),
            )
            .await
            .map_err(cql_error)?;
        self.ownership
            .conversation_created(user_id, conversation.conversation_id);
        Ok(conversation)
    }

    pub(super) async fn create_utterance(
        &self,
        new: NewUtterance,
    ) -> Result<Utterance, StoreError> {
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

    pub(super) async fn user_exists(&self, user_id: Uuid) -> Result<bool, StoreError> {
        Ok(self.fetch_user(user_id).await?.is_some())
    }

    pub(super) async fn fetch_user(&self, user_id: Uuid) -> Result<Option<User>, StoreError> {
        let rows = select(&self.session, &self.statements.select_user, (user_id,)).await?;
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

    pub(super) async fn conversation_exists(
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
    pub(super) async fn utterance_content(
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
