//! The cql store: ScyllaDB or Apache Cassandra for what is kept, Redis as the
//! write-behind buffer of the counts.
//!
//! `CqlStore` composes components, each a struct that owns its prepared
//! statements and holds the handles it uses (the session, the buffer, the
//! components it asks); it implements [`Store`] by handing each call to
//! the component whose job it is.
//!
//! | module | job |
//! |---|---|
//! | [`accounts`] | `Accounts`: users, conversations, utterances; whether a report's owners exist |
//! | [`recording`] | `Recorder`: a report: lease, write events and labels, count in Redis |
//! | [`reads`] | `Reader`: durable counters merged with buffered deltas; latest events |
//! | [`counters`] | `Counters`: the counter batches (flusher and repair) |
//! | [`flusher`] | `Flusher`: buffered deltas into the counters, in a background task when serving |
//! | [`repair`] | `Repairer`: counters recomputed from the event log |
//! | [`erasure`] | `Erasure`: a learner erased everywhere |
//! | [`memory`] | `Memory`: answers and lapses (the review log), memory states folded from it |
//! | [`export`] | `Exporter`: a learner's records, page by page |
//! | [`rows`] | one named type per table row; the layout rules (bucket, event id, sentence slot) |
//! | [`ownership`] | the ownership facts a replica remembers (held by `Accounts`) |
//! | [`read_cache`] | the durable rows of a learner's reads a replica remembers (held by `Reader`) |
//! | [`buffer`] | the Redis write-behind buffer and its scripts |
//! | [`session`] | connecting, error mapping, paging |
//! | [`statements`] | how statements are declared, prepared and counted |
//! | [`schema`] | `errata migrate` |
//! | [`seed`] | `errata seed`: learners written in bulk |
//!
//! Timings and sizes are in [`crate::store::policy`].

mod accounts;
pub mod buffer;
mod counters;
mod erasure;
mod export;
mod flusher;
mod memory;
mod ownership;
mod read_cache;
mod reads;
mod recording;
mod repair;
mod rows;
pub mod schema;
pub mod seed;
mod session;
mod statements;
mod written;

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::StreamExt;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use uuid::Uuid;

use self::accounts::Accounts;
use self::buffer::Buffer;
use self::counters::Counters;
use self::erasure::Erasure;
use self::export::Exporter;
use self::flusher::Flusher;
use self::memory::Memory;
use self::reads::Reader;
use self::recording::Recorder;
use self::repair::Repairer;
pub use self::rows::bucket;
use super::task::OwnedTask;
use super::{
    AnswerOutcome, Backend, Background, Conversation, ErrorReport, ExportPages, ItemMemory,
    NewAnswer, NewUser, NewUtterance, PracticeInputs, PracticeQuery, RecentError, RecordOutcome,
    Store, StoreError, StoredReview, User, Utterance, WeeklyHistory,
};
use crate::config::Config;
use crate::domain::{ErrorKey, FrequencyTable, Timezone};

/// How many of a learner's latest error events are searched for the
/// sentence an own-sentence exercise was built from.
const OWN_SENTENCE_SEARCH: usize = 1000;

/// The cql store: its components, and the flusher's task when it serves.
pub struct CqlStore {
    session: Arc<Session>,
    /// `check_ready`'s statement.
    ping: PreparedStatement,
    buffer: Arc<Buffer>,
    accounts: Arc<Accounts>,
    recorder: Recorder,
    reader: Arc<Reader>,
    flusher: Arc<Flusher>,
    repairer: Repairer,
    erasure: Erasure,
    exporter: Arc<Exporter>,
    memory: Arc<Memory>,
    /// The flusher's task while the store serves; stopped by `shutdown`,
    /// `close` or drop.
    flusher_task: Option<OwnedTask>,
}

impl CqlStore {
    /// Connects to CQL and Redis, prepares every component's statements
    /// and, to serve, starts the flusher.
    pub async fn open(config: &Config, background: Background) -> Result<Self, StoreError> {
        schema::check_keyspace(&config.cql_keyspace)?;
        let session = Arc::new(session::connect(config, Some(&config.cql_keyspace)).await?);
        let ping = statements::prepare(
            &session,
            "ping",
            "SELECT release_version FROM system.local",
            statements::IDEMPOTENT,
        )
        .await?;
        let buffer = Arc::new(
            Buffer::connect_requiring(&config.redis_url, config.redis_min_replicas).await?,
        );
        let accounts = Arc::new(Accounts::new(session.clone()).await?);
        let reader =
            Arc::new(Reader::new(session.clone(), buffer.clone(), accounts.clone()).await?);
        let counters = Arc::new(Counters::new(session.clone()).await?);
        let flusher = Arc::new(Flusher::new(buffer.clone(), counters.clone()));
        let memory = Arc::new(Memory::new(session.clone(), accounts.clone()).await?);
        let store = Self {
            recorder: Recorder::new(session.clone(), buffer.clone(), accounts.clone()).await?,
            repairer: Repairer::new(
                session.clone(),
                buffer.clone(),
                reader.clone(),
                counters,
                accounts.clone(),
            )
            .await?,
            erasure: Erasure::new(
                session.clone(),
                buffer.clone(),
                accounts.clone(),
                reader.clone(),
                memory.clone(),
            )
            .await?,
            exporter: Arc::new(Exporter::new(session.clone(), reader.clone()).await?),
            memory,
            flusher_task: (background == Background::Serve)
                .then(|| flusher.clone().start(config.flush_interval())),
            session,
            ping,
            buffer,
            accounts,
            reader,
            flusher,
        };
        Ok(store)
    }

    async fn stop_flusher(&self) {
        if let Some(task) = &self.flusher_task {
            task.stop().await;
        }
    }
}

#[async_trait]
impl Store for CqlStore {
    async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        self.accounts.create_user(new).await
    }

    async fn user(&self, user_id: Uuid) -> Result<Option<User>, StoreError> {
        self.accounts.user(user_id).await
    }

    async fn create_conversation(&self, user_id: Uuid) -> Result<Conversation, StoreError> {
        self.accounts.create_conversation(user_id).await
    }

    async fn create_utterance(&self, new: NewUtterance) -> Result<Utterance, StoreError> {
        self.accounts.create_utterance(new).await
    }

    async fn record_errors(&self, report: ErrorReport) -> Result<RecordOutcome, StoreError> {
        self.recorder.record(report).await
    }

    async fn frequencies(&self, user_id: Uuid) -> Result<FrequencyTable, StoreError> {
        self.reader.frequencies(user_id).await
    }

    async fn weekly_history(
        &self,
        user_id: Uuid,
        since: chrono::NaiveDate,
    ) -> Result<WeeklyHistory, StoreError> {
        self.reader.weekly_history(user_id, since).await
    }

    async fn recent_errors(
        &self,
        user_id: Uuid,
        limit: usize,
    ) -> Result<Vec<RecentError>, StoreError> {
        self.reader.recent_errors(user_id, limit).await
    }

    async fn practice_inputs(
        &self,
        user_id: Uuid,
        query: PracticeQuery,
    ) -> Result<Arc<PracticeInputs>, StoreError> {
        self.reader
            .practice_inputs(user_id, query)
            .await
            .map(Arc::new)
    }

    async fn erase_user(&self, user_id: Uuid) -> Result<(), StoreError> {
        self.erasure.erase_user(user_id).await
    }

    async fn export(&self, user_id: Uuid) -> Result<Option<(User, ExportPages)>, StoreError> {
        let Some(user) = self.accounts.user(user_id).await? else {
            return Ok(None);
        };
        let pages = export::export_pages(self.exporter.clone(), user_id)
            .chain(self.memory.clone().export_pages(user_id));
        Ok(Some((user, pages.boxed())))
    }

    async fn set_timezone(&self, user_id: Uuid, tz: Timezone) -> Result<User, StoreError> {
        self.memory.set_timezone(user_id, tz).await
    }

    async fn own_correction(
        &self,
        user_id: Uuid,
        utterance_id: Uuid,
        key: &ErrorKey,
    ) -> Result<Option<String>, StoreError> {
        let recent = self
            .reader
            .recent_errors(user_id, OWN_SENTENCE_SEARCH)
            .await?;
        Ok(recent
            .into_iter()
            .filter(|e| e.utterance_id == utterance_id && &e.key == key)
            .find_map(|e| e.correction.text))
    }

    async fn record_answer(&self, answer: NewAnswer) -> Result<AnswerOutcome, StoreError> {
        self.memory.record_answer(answer).await
    }

    async fn undo_answer(&self, user_id: Uuid, answer_id: Uuid) -> Result<bool, StoreError> {
        self.memory.undo_answer(user_id, answer_id).await
    }

    async fn answers(&self, user_id: Uuid, limit: usize) -> Result<Vec<StoredReview>, StoreError> {
        self.memory.answers(user_id, limit).await
    }

    async fn memory(&self, user_id: Uuid) -> Result<Vec<ItemMemory>, StoreError> {
        self.memory.memory(user_id).await
    }

    async fn next_exercise_round(&self, user_id: Uuid) -> Result<u64, StoreError> {
        self.buffer.next_round(user_id).await
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        let (redis, cql) = tokio::join!(
            self.buffer.ping(),
            self.session.execute_unpaged(&self.ping, ())
        );
        redis?;
        cql.map_err(|e| StoreError::unavailable(Backend::Cql, "no node answers", e))?;
        Ok(())
    }

    async fn flush(&self) -> Result<usize, StoreError> {
        self.flusher.drain().await
    }

    async fn repair(&self, user_id: Option<Uuid>) -> Result<usize, StoreError> {
        self.repairer.repair(user_id).await
    }

    async fn repair_memory(&self, user_id: Option<Uuid>) -> Result<usize, StoreError> {
        self.memory.repair(user_id).await
    }

    fn workers(&self) -> Vec<&'static str> {
        self.flusher_task
            .iter()
            .filter(|task| task.is_running())
            .map(OwnedTask::name)
            .collect()
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        self.stop_flusher().await;
        self.flusher.drain().await.map(|_| ())
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.stop_flusher().await;
        Ok(())
    }
}
