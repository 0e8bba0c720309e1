//! The cql store: ScyllaDB or Apache Cassandra for what is kept, Redis as the
//! write-behind buffer of the counts.
//!
//! | module | job |
//! |---|---|
//! | [`session`] | connecting, error mapping, paging |
//! | [`statements`] | every statement, prepared once |
//! | [`accounts`] | users, conversations, utterances |
//! | [`ingest`] | recording a report: validate, lease, write events, count |
//! | [`ownership`] | the ownership facts a replica remembers |
//! | [`buffer`] | the Redis write-behind buffer and its scripts |
//! | [`reads`] | durable counters merged with buffered deltas |
//! | [`read_cache`] | the durable rows of a learner's reads a replica remembers |
//! | [`lifecycle`] | a learner's erasure and export |
//! | [`flusher`] | moving buffered deltas into the counters |
//! | [`repair`] | recomputing counters from the event log |
//! | [`schema`] | `errata migrate` |
//! | [`seed`] | `errata seed`: learners written in bulk |

mod accounts;
pub mod buffer;
mod flusher;
mod ingest;
mod lifecycle;
mod ownership;
mod read_cache;
mod reads;
mod repair;
pub mod schema;
pub mod seed;
mod session;
mod statements;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use scylla::client::session::Session;
use tokio::task::JoinHandle;
use uuid::Uuid;

use self::buffer::Buffer;
pub use self::ingest::bucket;
use self::statements::Statements;
use super::closer::Closer;
use super::{
    Backend, Background, Conversation, ErrorReport, ExportPages, NewUser, NewUtterance,
    PracticeInputs, PracticeQuery, RecentError, RecordOutcome, Store, StoreError, User, Utterance,
    WeeklyHistory,
};
use crate::config::Config;
use crate::domain::FrequencyTable;

/// What every part of the store shares: the session, its statements and the
/// buffer. The submodules each add the methods of their job.
struct Inner {
    session: Session,
    statements: Statements,
    lifecycle: lifecycle::Statements,
    buffer: Buffer,
    ownership: ownership::Ownership,
    reads: read_cache::ReadCache,
}

pub struct CqlStore {
    inner: Arc<Inner>,
    /// Stops the flusher.
    closer: Closer,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl CqlStore {
    /// Connects to CQL and Redis, prepares every statement and, to serve,
    /// starts the flusher.
    pub async fn open(config: &Config, background: Background) -> Result<Self, StoreError> {
        schema::check_keyspace(&config.cql_keyspace)?;
        let session = session::connect(config, Some(&config.cql_keyspace)).await?;
        let statements = Statements::prepare(&session).await?;
        let lifecycle = lifecycle::Statements::prepare(&session).await?;
        let buffer = Buffer::connect(&config.redis_url).await?;
        let inner = Arc::new(Inner {
            session,
            statements,
            lifecycle,
            buffer,
            ownership: ownership::Ownership::new(),
            reads: read_cache::ReadCache::new(),
        });
        let closer = Closer::new();
        let flusher = (background == Background::Serve).then(|| {
            let interval = config.flush_interval();
            tokio::spawn(flusher::run(inner.clone(), interval, closer.clone()))
        });
        Ok(Self {
            inner,
            closer,
            flusher: Mutex::new(flusher),
        })
    }

    async fn stop_flusher(&self) {
        self.closer.close();
        let running = self.flusher.lock().ok().and_then(|mut f| f.take());
        if let Some(task) = running {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "the flusher panicked");
            }
        }
    }
}

#[async_trait]
impl Store for CqlStore {
    async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        self.inner.create_user(new).await
    }

    async fn user(&self, user_id: Uuid) -> Result<Option<User>, StoreError> {
        self.inner.fetch_user(user_id).await
    }

    async fn create_conversation(&self, user_id: Uuid) -> Result<Conversation, StoreError> {
        self.inner.create_conversation(user_id).await
    }

    async fn create_utterance(&self, new: NewUtterance) -> Result<Utterance, StoreError> {
        self.inner.create_utterance(new).await
    }

    async fn record_errors(&self, report: ErrorReport) -> Result<RecordOutcome, StoreError> {
        self.inner.record(report).await
    }

    async fn frequencies(&self, user_id: Uuid) -> Result<FrequencyTable, StoreError> {
        self.inner.frequencies(user_id).await
    }

    async fn weekly_history(
        &self,
        user_id: Uuid,
        since: chrono::NaiveDate,
    ) -> Result<WeeklyHistory, StoreError> {
        self.inner.weekly_history(user_id, since).await
    }

    async fn recent_errors(
        &self,
        user_id: Uuid,
        limit: usize,
    ) -> Result<Vec<RecentError>, StoreError> {
        self.inner.recent_errors(user_id, limit).await
    }

    async fn practice_inputs(
        &self,
        user_id: Uuid,
        query: PracticeQuery,
    ) -> Result<Arc<PracticeInputs>, StoreError> {
        self.inner
            .practice_inputs(user_id, query)
            .await
            .map(Arc::new)
    }

    async fn erase_user(&self, user_id: Uuid) -> Result<(), StoreError> {
        self.inner.erase_user(user_id).await
    }

    async fn export(&self, user_id: Uuid) -> Result<Option<(User, ExportPages)>, StoreError> {
        let Some(user) = self.inner.fetch_user(user_id).await? else {
            return Ok(None);
        };
        Ok(Some((
            user,
            lifecycle::export_pages(self.inner.clone(), user_id),
        )))
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
        cql.map_err(|e| StoreError::unavailable(Backend::Cql, "no node answers", e))?;
        Ok(())
    }

    async fn flush(&self) -> Result<usize, StoreError> {
        self.inner.drain().await
    }

    async fn repair(&self, user_id: Option<Uuid>) -> Result<usize, StoreError> {
        self.inner.repair(user_id).await
    }

    fn workers(&self) -> Vec<&'static str> {
        let running = self.flusher.lock().is_ok_and(|f| f.is_some());
        if running {
            vec!["flusher"]
        } else {
            Vec::new()
        }
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        self.stop_flusher().await;
        self.inner.drain().await.map(|_| ())
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.stop_flusher().await;
        Ok(())
    }
}
