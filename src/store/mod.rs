//! The storage seam. Handlers talk to a [`Store`]; which backend runs behind
//! it (the embedded SQLite file or ScyllaDB/Cassandra with a Redis buffer) is
//! decided once, at start-up, from the configuration.
//!
//! | module | job |
//! |---|---|
//! | [`records`] | what the store keeps and returns (users, reports, events, export pages) |
//! | [`practice`] | what a practice request asks for and gets back |
//! | [`error`] | what a backend can fail with |
//! | [`policy`] | every timing and size, with the rules between them |
//! | [`closer`] | the one stop signal of a store's background work |
//! | [`task`] | a background task its store owns, stopped on drop |
//! | [`retry`] | polling for what another process brings about |
//! | [`sqlite`] | the embedded backend |
//! | [`cql`] | the Cassandra/ScyllaDB backend with its Redis buffer |

mod answers;
pub mod closer;
pub mod cql;
mod error;
pub mod policy;
mod practice;
mod records;
pub mod retry;
mod sentences;
pub mod sqlite;
pub mod task;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::NaiveDate;
use uuid::Uuid;

use crate::config::{Config, StoreKind};
use crate::domain::{ErrorKey, FrequencyTable, Timezone};

pub use self::answers::{fold_items, AnswerOutcome, ItemMemory, NewAnswer, StoredReview};
pub use self::error::{Backend, BoxError, StoreError};
pub use self::policy::DEDUP_WINDOW;
pub use self::practice::{PracticeInputs, PracticeQuery};
pub use self::records::*;
pub use crate::domain::{Rank, WeeklyHistory};

/// Everything errata keeps, behind one interface.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn create_user(&self, new: NewUser) -> Result<User, StoreError>;

    async fn user(&self, user_id: Uuid) -> Result<Option<User>, StoreError>;

    /// Fails with `UserNotFound` when the learner does not exist.
    async fn create_conversation(&self, user_id: Uuid) -> Result<Conversation, StoreError>;

    /// Fails with `ConversationNotFound` when the conversation does not exist
    /// or belongs to another learner.
    async fn create_utterance(&self, new: NewUtterance) -> Result<Utterance, StoreError>;

    /// Counts the report's error points once, however often it is retried.
    /// Fails, counting nothing, when the learner, the conversation or the
    /// utterance is missing or they do not belong together.
    async fn record_errors(&self, report: ErrorReport) -> Result<RecordOutcome, StoreError>;

    /// Every error frequency of the learner, including acknowledged ones not
    /// yet made durable. Fails with `UserNotFound` for an unknown learner.
    async fn frequencies(&self, user_id: Uuid) -> Result<FrequencyTable, StoreError>;

    /// The learner's latest error points, newest first. Fails with
    /// `UserNotFound` for an unknown learner.
    async fn recent_errors(
        &self,
        user_id: Uuid,
        limit: usize,
    ) -> Result<Vec<RecentError>, StoreError>;

    /// The learner's all-time counts and weekly counts of the weeks from
    /// `since` on, read together. Fails with `UserNotFound` for an unknown
    /// learner.
    async fn weekly_history(
        &self,
        user_id: Uuid,
        since: NaiveDate,
    ) -> Result<WeeklyHistory, StoreError>;

    /// The learner's top errors and their own sentences for them, read
    /// together. Fails with `UserNotFound` for an unknown learner. Shared,
    /// because a backend may keep the answer and hand the same one out
    /// again.
    async fn practice_inputs(
        &self,
        user_id: Uuid,
        query: PracticeQuery,
    ) -> Result<Arc<PracticeInputs>, StoreError>;

    /// Erases the learner and everything stored about them, in every
    /// table and buffer; afterwards the learner is unknown everywhere and
    /// the e-mail free. Fails with `UserNotFound` for an unknown learner.
    async fn erase_user(&self, user_id: Uuid) -> Result<(), StoreError>;

    /// The learner and their records, page by page (`None` for an unknown
    /// learner). Their frequencies are read with [`Store::frequencies`].
    async fn export(&self, user_id: Uuid) -> Result<Option<(User, ExportPages)>, StoreError>;

    /// Sets the learner's time zone and refolds their memory states in
    /// it. Fails with `UserNotFound` for an unknown learner.
    async fn set_timezone(&self, user_id: Uuid, tz: Timezone) -> Result<User, StoreError>;

    /// The AI's correction of the learner's sentence `utterance_id` for
    /// the error `key` (what an exercise built from it is graded by).
    async fn own_correction(
        &self,
        user_id: Uuid,
        utterance_id: Uuid,
        key: &ErrorKey,
    ) -> Result<Option<String>, StoreError>;

    /// Stores a graded answer (once, however often it is retried) and
    /// refolds its error's memory. Fails with `UserNotFound` for an
    /// unknown learner.
    async fn record_answer(&self, answer: NewAnswer) -> Result<AnswerOutcome, StoreError>;

    /// Removes an answer: the memory is as if it had never been given.
    /// `false` when the learner has no such answer; `UserNotFound` for an
    /// unknown learner.
    async fn undo_answer(&self, user_id: Uuid, answer_id: Uuid) -> Result<bool, StoreError>;

    /// The learner's answers (not their lapses), newest first.
    async fn answers(&self, user_id: Uuid, limit: usize) -> Result<Vec<StoredReview>, StoreError>;

    /// Every error's memory state, folded from the review log. Fails with
    /// `UserNotFound` for an unknown learner.
    async fn memory(&self, user_id: Uuid) -> Result<Vec<ItemMemory>, StoreError>;

    /// A number that grows with each call for the learner: it moves the
    /// exercise rotation along.
    async fn next_exercise_round(&self, user_id: Uuid) -> Result<u64, StoreError>;

    /// `Ok` when every backend answers.
    async fn check_ready(&self) -> Result<(), StoreError>;

    /// Makes every acknowledged write durable in the primary store now.
    /// Returns how many learners it flushed.
    async fn flush(&self) -> Result<usize, StoreError> {
        Ok(0)
    }

    /// Recomputes frequencies from the event log and corrects the counts;
    /// `None` repairs every learner. Returns how many counts it corrected.
    async fn repair(&self, _user_id: Option<Uuid>) -> Result<usize, StoreError> {
        Ok(0)
    }

    /// Rewrites memory states from the review log; `None` repairs every
    /// learner. Returns how many states it rewrote. (The embedded store
    /// rewrites them in the transaction of every change: nothing to do.)
    async fn repair_memory(&self, _user_id: Option<Uuid>) -> Result<usize, StoreError> {
        Ok(0)
    }

    /// The background workers this store runs beside the requests, by name
    /// (all stopped by one signal and joined by `shutdown` or `close`).
    fn workers(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// Stops background work after draining what is buffered.
    async fn shutdown(&self) -> Result<(), StoreError> {
        self.flush().await.map(|_| ())
    }

    /// Stops background work, leaving what is buffered for the next
    /// flusher (for commands that only read or correct, such as repair).
    async fn close(&self) -> Result<(), StoreError> {
        self.shutdown().await
    }
}

/// What a store runs beside the requests it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Background {
    /// Everything serving needs (in cql mode, the flusher).
    Serve,
    /// Only what the store cannot work without: a one-shot command.
    Command,
}

/// Opens the backend the configuration names, for serving.
pub async fn open(config: &Config) -> Result<Arc<dyn Store>, StoreError> {
    open_for(config, Background::Serve).await
}

/// Opens the backend the configuration names, with that background work.
pub async fn open_for(
    config: &Config,
    background: Background,
) -> Result<Arc<dyn Store>, StoreError> {
    match config.store {
        StoreKind::Embedded => Ok(Arc::new(sqlite::SqliteStore::open(&config.data_dir).await?)),
        StoreKind::Cql => Ok(Arc::new(cql::CqlStore::open(config, background).await?)),
    }
}

/// Creates what the configured backend needs before serving; returns a line
/// saying what was done.
pub async fn migrate(config: &Config) -> Result<String, StoreError> {
    match config.store {
        StoreKind::Embedded => {
            sqlite::SqliteStore::open(&config.data_dir).await?;
            Ok(format!(
                "embedded store: the schema in {} is up to date (it is also created at start-up)",
                config.data_dir.display()
            ))
        }
        StoreKind::Cql => cql::schema::migrate(config).await,
    }
}
