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
//! Three threads work here: the writer, the checkpointer and the
//! fingerprint expirer. One [`Closer`] stops them all; `shutdown` waits for
//! them, and the writer's last act is to fold the WAL into the database.
//!
//! - `connection`: the data-directory lock, connection set-up, WAL limits,
//!   how values are kept in columns;
//! - `writer`: the typed write requests and the group commit;
//! - `writes` and `reads`: the SQL;
//! - `lifecycle`: a learner's erasure and export;
//! - `maintenance`: the checkpointer, the expirer, the WAL's restart and
//!   its last checkpoint;
//! - `practice_cache`: learners' practice inputs kept between writes.

mod connection;
mod lifecycle;
mod maintenance;
mod migrate;
mod practice_cache;
mod reads;
pub mod seed;
mod writer;
mod writes;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use r2d2::Pool;
use r2d2_sqlite::rusqlite::Connection;
use r2d2_sqlite::SqliteConnectionManager;
use uuid::Uuid;

pub use connection::WalLimits;
use connection::{internal, DATABASE_FILE};
use practice_cache::PracticeCache;
use writer::{WeakWriteQueue, WriteQueue, WriteRequest, Writer};
use writes::Expiry;

use super::closer::Closer;
use super::{
    Backend, Conversation, ErrorReport, ExportPages, NewUser, NewUtterance, PracticeInputs,
    PracticeQuery, RecentError, RecordOutcome, Store, StoreError, User, Utterance, WeeklyHistory,
};
use crate::domain::FrequencyTable;

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
    /// Stops the writer, the checkpointer and the expirer.
    closer: Closer,
    /// Taken by the first `shutdown`, which waits for them.
    threads: Mutex<Option<Threads>>,
    /// Held while the store is open: one process per data directory, since
    /// what this process keeps in memory is only kept right by its own
    /// writer.
    _lock: std::fs::File,
}

/// The store's threads. The writer joins the checkpointer itself, before
/// its last checkpoint.
struct Threads {
    writer: JoinHandle<()>,
    expirer: JoinHandle<()>,
}

impl Threads {
    /// Starts the threads; they run until `closer` closes.
    fn start(writer: Writer, queue: WeakWriteQueue, closer: &Closer) -> Result<Self, StoreError> {
        let closer = closer.clone();
        Ok(Self {
            writer: spawn("writer", move || writer.run())?,
            expirer: spawn("expirer", move || maintenance::run_expirer(&queue, &closer))?,
        })
    }

    /// Waits for every thread to finish (they must have been told to).
    fn join(self) -> Result<(), StoreError> {
        let expirer = self.expirer.join();
        let writer = self.writer.join();
        for (name, joined) in [("writer", writer), ("expirer", expirer)] {
            if joined.is_err() {
                return Err(StoreError::bug(format!(
                    "the database {name} thread panicked"
                )));
            }
        }
        Ok(())
    }
}

fn spawn(name: &str, work: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, StoreError> {
    thread::Builder::new()
        .name(format!("errata-sqlite-{name}"))
        .spawn(work)
        .map_err(internal)
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

impl Drop for SqliteStore {
    /// Stops the threads without waiting for them, since this may run on a
    /// runtime worker: the writer still answers what is queued and folds the
    /// WAL in as it exits.
    fn drop(&mut self) {
        self.closer.close();
    }
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
        let checkpointer = {
            let (closer, wal_full) = (closer.clone(), wal_full.clone());
            spawn("checkpointer", move || {
                maintenance::run_checkpointer(checkpointer, &closer, &wal_full, wal.restart_frames)
            })?
        };
        let writer = Writer {
            conn,
            queue: requests,
            practice: practice.clone(),
            wal_full,
            closer: closer.clone(),
            checkpointer,
        };
        // If the writer or the expirer cannot start, what did start stops.
        let threads =
            Threads::start(writer, queue.downgrade(), &closer).inspect_err(|_| closer.close())?;
        Ok(Self {
            writer: queue,
            readers,
            practice,
            rounds: Mutex::new(HashMap::new()),
            closer,
            threads: Mutex::new(Some(threads)),
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
        self.read(|conn| reads::user(conn, user_id))
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
        let Some(user) = self.read(|conn| reads::user(conn, user_id))? else {
            return Ok(None);
        };
        Ok(Some((
            user,
            lifecycle::export_pages(self.readers.clone(), user_id),
        )))
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

    /// Stops the writer (after it has answered what is queued and folded
    /// the WAL into the database), the checkpointer and the expirer, and
    /// waits for them. Reads still work afterwards; writes are refused.
    fn workers(&self) -> Vec<&'static str> {
        vec!["writer", "checkpointer", "expirer"]
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        self.closer.close();
        let threads = self
            .threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match threads {
            Some(threads) => tokio::task::spawn_blocking(move || threads.join())
                .await
                .map_err(internal)?,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod weekly_tests;
