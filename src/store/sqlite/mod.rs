//! The embedded store: one SQLite file in WAL mode.
//!
//! Every write goes through a single writer thread that group-commits: it
//! takes whatever requests are queued, applies each in its own savepoint
//! inside one transaction, commits once (one fsync for the whole group) and
//! only then answers the callers. Error events and frequencies change in the
//! same transaction, so the counts are exact and an acknowledged request
//! survives a crash. Reads run on a pool of read-only connections and, thanks
//! to WAL, never wait for the writer.
//!
//! Three threads work beside the requests: the writer, the checkpointer and
//! the fingerprint expirer. The store's [`Workers`] start them, stop them by
//! one [`Closer`] and join them, on `shutdown` or when the store is dropped;
//! then the WAL is folded into the database.
//!
//! | file | its one job |
//! | --- | --- |
//! | `connection` | the data-directory lock, connection set-up, WAL limits |
//! | `columns` | how values are kept in columns (ids, times, weeks) |
//! | `rows` | one row type per table: its columns and its mapping from a row |
//! | `memory_rows` | the same for the memory model's tables |
//! | `memory` | answers, lapses and memory states: writes in the writer's transaction, reads |
//! | `migrate` | bringing an older database's schema up to date |
//! | `queue` | the typed write requests and the writer's queue |
//! | `writer` | the group commit |
//! | `writes` | the write SQL, in the writer's transaction |
//! | `lookups` | the lookups reads and writes both need |
//! | `reads` | the read SQL, on pooled read-only connections |
//! | `erasure` | deleting every row of a learner |
//! | `export` | reading a learner's rows out page by page |
//! | `practice_cache` | learners' practice inputs kept between writes |
//! | `wal` | the checkpointer, the WAL's restart and its last fold |
//! | `expirer` | forgetting old request fingerprints |
//! | `workers` | starting, stopping and joining the threads above |
//! | `seed` | many learners written straight into a fresh data directory |
//! | `*tests` | the store against real SQLite files in temporary directories |

mod columns;
mod connection;
mod erasure;
mod expirer;
mod export;
mod lookups;
mod memory;
mod memory_rows;
mod migrate;
mod practice_cache;
mod queue;
mod reads;
mod rows;
pub mod seed;
mod wal;
mod workers;
mod writer;
mod writes;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use r2d2::Pool;
use r2d2_sqlite::rusqlite::Connection;
use r2d2_sqlite::SqliteConnectionManager;
use uuid::Uuid;

pub use connection::WalLimits;
use connection::DATABASE_FILE;
use expirer::Expirer;
use practice_cache::PracticeCache;
use queue::{WriteQueue, WriteRequest};
use wal::Checkpointer;
use workers::Workers;
use writer::Writer;
use writes::Expiry;

use super::closer::Closer;
use super::{
    AnswerOutcome, Backend, Conversation, ErrorReport, ExportPages, ItemMemory, NewAnswer, NewUser,
    NewUtterance, PracticeInputs, PracticeQuery, RecentError, RecordOutcome, Store, StoreError,
    StoredReview, User, Utterance, WeeklyHistory,
};
use crate::domain::{ErrorKey, FrequencyTable, Timezone};

/// The fewest reader connections the pool may open (it opens them as reads
/// need them, up to at least one per runtime worker).
const MIN_READERS: usize = 8;
/// Memory for learners' practice inputs kept between writes.
const PRACTICE_CACHE_BYTES: u64 = 128 << 20;

pub struct SqliteStore {
    writer: WriteQueue,
    readers: Pool<SqliteConnectionManager>,
    /// Learners' practice inputs, dropped by the writer when it commits
    /// their errors.
    practice: Arc<PracticeCache>,
    /// Exercise rotation is a presentation nicety, not data: it lives in
    /// memory and starts over when the process restarts.
    rounds: Mutex<HashMap<Uuid, u64>>,
    /// The writer, the checkpointer and the expirer; dropped before the
    /// lock below (fields drop in order), so that the data directory is
    /// free only once they have stopped.
    workers: Workers,
    /// Held while the store is open: one process per data directory, since
    /// what this process keeps in memory is only kept right by its own
    /// writer.
    _lock: std::fs::File,
}

/// A read holds its connection on the thread of the task that asks (see
/// `SqliteStore::read`), so at most one read per runtime worker, and one on
/// the thread that blocks on the runtime's main future, hold one at once.
/// With that many, a worker never blocks waiting for another's read to end.
fn reader_pool_size() -> usize {
    let workers = tokio::runtime::Handle::try_current()
        .map(|runtime| runtime.metrics().num_workers())
        .unwrap_or(0);
    MIN_READERS.max(workers + 1)
}

impl SqliteStore {
    /// Opens (creating if needed) `data_dir/errata.db` and starts the writer.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(data_dir, WalLimits::default()).await
    }

    pub async fn open_with(data_dir: &Path, wal: WalLimits) -> Result<Self, StoreError> {
        let data_dir = data_dir.to_owned();
        let readers = reader_pool_size();
        tokio::task::spawn_blocking(move || Self::open_blocking(&data_dir, wal, readers))
            .await
            .map_err(|e| StoreError::internal("opening the database", e))?
    }

    fn open_blocking(data_dir: &Path, wal: WalLimits, readers: usize) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::internal(format!("creating {}", data_dir.display()), e))?;
        let lock = connection::lock_data_dir(data_dir)?;
        let path = data_dir.join(DATABASE_FILE);
        let conn = connection::open_writer(&path, wal)?;
        let checkpointer = connection::open_checkpointer(&path)?;
        let readers = connection::open_readers(&path, readers)?;

        let closer = Closer::new();
        let wal_full = Arc::new(AtomicBool::new(false));
        let practice = Arc::new(PracticeCache::new(PRACTICE_CACHE_BYTES));
        let (queue, requests) = WriteQueue::new();
        let workers = Workers::start(
            closer.clone(),
            Writer {
                conn,
                queue: requests,
                practice: practice.clone(),
                wal_full: wal_full.clone(),
                closer: closer.clone(),
            },
            Checkpointer {
                conn: checkpointer,
                wal_full,
                restart_frames: wal.restart_frames,
                closer: closer.clone(),
            },
            Expirer {
                queue: queue.downgrade(),
                closer,
            },
        )?;
        Ok(Self {
            writer: queue,
            readers,
            practice,
            rounds: Mutex::new(HashMap::new()),
            workers,
            _lock: lock,
        })
    }

    /// Forgets the fingerprints of requests recorded before `before`, in
    /// one whole pass (the expirer thread does the same in the background,
    /// a chunk at a time). Returns how many it removed.
    pub async fn expire_fingerprints(&self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut after = None;
        let mut removed = 0;
        loop {
            let expiry = Expiry { after, before };
            let chunk = self
                .writer
                .send(|reply| WriteRequest::ExpireFingerprints(expiry, reply))
                .await?;
            removed += chunk.removed;
            match chunk.next {
                Some(next) => after = Some(next),
                None => return Ok(removed),
            }
        }
    }

    /// Runs a read on the calling task's thread. Reads never wait for the
    /// writer (WAL) and take tens of microseconds from pages that are
    /// cached, so handing each one to the blocking pool and back cost more
    /// (two thread switches, most of a read's time under load) than it
    /// spared the runtime.
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self
            .readers
            .get()
            .map_err(|e| StoreError::unavailable(Backend::Sqlite, "no database connection", e))?;
        f(&conn)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        self.writer
            .send(|reply| WriteRequest::CreateUser(new, reply))
            .await
    }

    async fn user(&self, user_id: Uuid) -> Result<Option<User>, StoreError> {
        self.read(|conn| lookups::user(conn, user_id))
    }

    async fn create_conversation(&self, user_id: Uuid) -> Result<Conversation, StoreError> {
        self.writer
            .send(|reply| WriteRequest::CreateConversation(user_id, reply))
            .await
    }

    async fn create_utterance(&self, new: NewUtterance) -> Result<Utterance, StoreError> {
        self.writer
            .send(|reply| WriteRequest::CreateUtterance(new, reply))
            .await
    }

    async fn record_errors(&self, report: ErrorReport) -> Result<RecordOutcome, StoreError> {
        self.writer
            .send(|reply| WriteRequest::Record(report, reply))
            .await
    }

    async fn frequencies(&self, user_id: Uuid) -> Result<FrequencyTable, StoreError> {
        self.read(|conn| reads::frequencies(conn, user_id))
    }

    async fn weekly_history(
        &self,
        user_id: Uuid,
        since: chrono::NaiveDate,
    ) -> Result<WeeklyHistory, StoreError> {
        self.read(|conn| reads::weekly_history(conn, user_id, since))
    }

    async fn practice_inputs(
        &self,
        user_id: Uuid,
        query: PracticeQuery,
    ) -> Result<Arc<PracticeInputs>, StoreError> {
        let ticket = match self.practice.get(user_id, query) {
            Ok(cached) => return Ok(cached),
            Err(ticket) => ticket,
        };
        let inputs = Arc::new(self.read(|conn| reads::practice_inputs(conn, user_id, query))?);
        if !inputs.top.is_empty() {
            self.practice.fill(user_id, query, inputs.clone(), ticket);
        }
        Ok(inputs)
    }

    async fn recent_errors(
        &self,
        user_id: Uuid,
        limit: usize,
    ) -> Result<Vec<RecentError>, StoreError> {
        self.read(|conn| reads::recent_errors(conn, user_id, limit))
    }

    async fn erase_user(&self, user_id: Uuid) -> Result<(), StoreError> {
        self.writer
            .send(|reply| WriteRequest::Erase(user_id, reply))
            .await?;
        self.rounds
            .lock()
            .map_err(|_| StoreError::bug("exercise rotation state is poisoned"))?
            .remove(&user_id);
        Ok(())
    }

    async fn export(&self, user_id: Uuid) -> Result<Option<(User, ExportPages)>, StoreError> {
        let Some(user) = self.read(|conn| lookups::user(conn, user_id))? else {
            return Ok(None);
        };
        Ok(Some((
            user,
            export::export_pages(self.readers.clone(), user_id),
        )))
    }

    async fn set_timezone(&self, user_id: Uuid, tz: Timezone) -> Result<User, StoreError> {
        self.writer
            .send(|reply| WriteRequest::SetTimezone(user_id, tz, reply))
            .await
    }

    async fn own_correction(
        &self,
        user_id: Uuid,
        utterance_id: Uuid,
        key: &ErrorKey,
    ) -> Result<Option<String>, StoreError> {
        self.read(|conn| memory::own_correction(conn, user_id, utterance_id, key))
    }

    async fn record_answer(&self, answer: NewAnswer) -> Result<AnswerOutcome, StoreError> {
        self.writer
            .send(|reply| WriteRequest::RecordAnswer(answer, reply))
            .await
    }

    async fn undo_answer(&self, user_id: Uuid, answer_id: Uuid) -> Result<bool, StoreError> {
        self.writer
            .send(|reply| WriteRequest::UndoAnswer(user_id, answer_id, reply))
            .await
    }

    async fn answers(&self, user_id: Uuid, limit: usize) -> Result<Vec<StoredReview>, StoreError> {
        self.read(|conn| memory::answers(conn, user_id, limit))
    }

    async fn memory(&self, user_id: Uuid) -> Result<Vec<ItemMemory>, StoreError> {
        self.read(|conn| memory::memory(conn, user_id))
    }

    async fn next_exercise_round(&self, user_id: Uuid) -> Result<u64, StoreError> {
        let mut rounds = self
            .rounds
            .lock()
            .map_err(|_| StoreError::bug("exercise rotation state is poisoned"))?;
        let round = rounds.entry(user_id).or_insert(0);
        let current = *round;
        *round += 1;
        Ok(current)
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        if self.writer.is_closed() {
            return Err(StoreError::busy(
                Backend::Sqlite,
                "the database writer has stopped",
            ));
        }
        self.read(reads::check)
    }

    /// The workers whose threads are running now.
    fn workers(&self) -> Vec<&'static str> {
        self.workers.alive()
    }

    /// Stops the writer (after it has answered what is queued), the
    /// checkpointer and the expirer, waits for them, and folds the WAL into
    /// the database. Reads still work afterwards; writes are refused.
    async fn shutdown(&self) -> Result<(), StoreError> {
        self.workers.shutdown().await
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod weekly_tests;
#[cfg(test)]
mod workers_tests;
