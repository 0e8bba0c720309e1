//! The embedded store: one SQLite file in WAL mode.
//!
//! Every write goes through a single writer thread that group-commits: it
//! takes whatever requests are queued, applies each in its own savepoint
//! inside one transaction, commits once (one fsync for the whole group) and
//! only then answers the callers. Error events and frequencies change in the
//! same transaction, so the counts are exact and an acknowledged request
//! survives a crash. Reads run on a pool of read-only connections and, thanks
//! to WAL, never wait for the writer.

mod practice_cache;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use r2d2::Pool;
use r2d2_sqlite::rusqlite::{
    self, params, Connection, OpenFlags, OptionalExtension, TransactionBehavior,
};
use r2d2_sqlite::SqliteConnectionManager;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{
    Conversation, ErrorReport, NewUser, NewUtterance, PracticeInputs, PracticeQuery, RecentError,
    RecordOutcome, Store, StoreError, User, Utterance,
};
use crate::domain::{ErrorFrequency, ErrorKey, FrequencyTable, OwnSentence};
use practice_cache::PracticeCache;

const DATABASE_FILE: &str = "errata.db";
const LOCK_FILE: &str = "errata.lock";
const SCHEMA: &str = include_str!("schema.sql");
/// Most write requests committed in one transaction.
const MAX_GROUP: usize = 512;
/// Queued write requests before callers wait (back-pressure, bounded memory).
const QUEUE_DEPTH: usize = 4096;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Fingerprints looked at per write (the writer's other requests wait
/// for it, so it is kept to a few milliseconds).
const FINGERPRINT_CHUNK: usize = 1000;
/// Pause between two chunks of a pass, and between two passes.
const EXPIRE_CHUNK_EVERY: Duration = Duration::from_millis(200);
const EXPIRE_PASS_EVERY: Duration = Duration::from_secs(60);

/// Most reader connections open at once.
const READERS: usize = 8;
/// Memory for learners' practice inputs kept between writes.
const PRACTICE_CACHE_BYTES: u64 = 128 << 20;
/// How often the checkpointer folds the WAL back into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// The checkpointer catches up until at most this many frames are left for
/// the writer to copy when it restarts the WAL.
const WAL_RESTART_LEFT: i64 = 256;

/// How large the write-ahead log may grow.
#[derive(Debug, Clone, Copy)]
pub struct WalLimits {
    /// Once the WAL holds this many frames, the writer makes it start over
    /// from the beginning of the file.
    pub restart_frames: i64,
    /// What a restarted WAL file is cut back to, in bytes (its first frames
    /// are rewritten in place, which is cheaper than growing a new file).
    pub size_limit: i64,
}

impl Default for WalLimits {
    fn default() -> Self {
        // About 64 MiB of 4 KiB pages. The limit is above that, so that a
        // restarted WAL is rewritten in place rather than cut back and grown
        // again (growing a file costs block allocation and zeroing).
        Self {
            restart_frames: 16_384,
            size_limit: 128 << 20,
        }
    }
}

pub struct SqliteStore {
    writer: mpsc::Sender<WriteRequest>,
    readers: Pool<SqliteConnectionManager>,
    /// Learners' practice inputs, dropped by the writer when it commits
    /// their errors.
    practice: Arc<PracticeCache>,
    /// Held while the store is open: one process per data directory, since
    /// what this process keeps in memory is only kept right by its own
    /// writer.
    _lock: std::fs::File,
    /// Exercise rotation is a presentation nicety, not data: it lives in
    /// memory and starts over when the process restarts.
    rounds: Mutex<HashMap<Uuid, u64>>,
    /// Tells the checkpointer thread to finish.
    stopped: Arc<AtomicBool>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
    }
}

enum WriteOp {
    CreateUser(NewUser),
    CreateConversation(Uuid),
    CreateUtterance(NewUtterance),
    RecordErrors(ErrorReport),
    /// One chunk of a pass that forgets old request fingerprints.
    ExpireFingerprints {
        after: Option<FingerprintCursor>,
        before: i64,
    },
}

enum Written {
    User(User),
    Conversation(Conversation),
    Utterance(Utterance),
    Recorded(RecordOutcome),
    Expired(ExpiredChunk),
}

/// Where a pass over `ingest_requests` is: the last key looked at.
type FingerprintCursor = (String, String);

struct ExpiredChunk {
    removed: usize,
    /// `None` when the pass reached the end of the table.
    next: Option<FingerprintCursor>,
}

struct WriteRequest {
    op: WriteOp,
    reply: oneshot::Sender<Result<Written, StoreError>>,
}

impl SqliteStore {
    /// Opens (creating if needed) `data_dir/errata.db` and starts the writer.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(data_dir, WalLimits::default()).await
    }

    pub async fn open_with(data_dir: &Path, wal: WalLimits) -> Result<Self, StoreError> {
        let data_dir = data_dir.to_owned();
        tokio::task::spawn_blocking(move || Self::open_blocking(&data_dir, wal))
            .await
            .map_err(|e| StoreError::Internal(format!("opening the database: {e}")))?
    }

    fn open_blocking(data_dir: &Path, wal: WalLimits) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Internal(format!("creating {}: {e}", data_dir.display())))?;
        let lock = lock_data_dir(data_dir)?;
        let path: PathBuf = data_dir.join(DATABASE_FILE);
        let conn = Connection::open(&path).map_err(internal)?;
        configure(&conn).map_err(internal)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(internal)?;
        // FULL: the WAL is synced at every commit, so an acknowledged write
        // survives power loss too, not only a process crash.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(internal)?;
        conn.execute_batch(SCHEMA).map_err(internal)?;
        // The writer no longer checkpoints inside its commits (a checkpoint
        // copies and syncs up to 1,000 pages while callers wait): the
        // checkpointer thread does that beside it.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(internal)?;
        conn.pragma_update(None, "journal_size_limit", wal.size_limit)
            .map_err(internal)?;
        let checkpointer = Connection::open(&path).map_err(internal)?;
        configure(&checkpointer).map_err(internal)?;
        checkpointer
            .pragma_update(None, "synchronous", "FULL")
            .map_err(internal)?;

        let manager = SqliteConnectionManager::file(&path)
            .with_flags(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_init(|c| configure(c));
        let readers = Pool::builder()
            .max_size(READERS as u32)
            .min_idle(Some(1))
            .test_on_check_out(false)
            .build(manager)
            .map_err(internal)?;

        let (writer, queue) = mpsc::channel(QUEUE_DEPTH);
        let wal_full = Arc::new(AtomicBool::new(false));
        let practice = Arc::new(PracticeCache::new(PRACTICE_CACHE_BYTES));
        thread::Builder::new()
            .name("errata-sqlite-writer".into())
            .spawn({
                let wal_full = wal_full.clone();
                let practice = practice.clone();
                move || run_writer(conn, queue, &wal_full, &practice)
            })
            .map_err(internal)?;
        let stopped = Arc::new(AtomicBool::new(false));
        {
            let stopped = stopped.clone();
            let writer = writer.downgrade();
            thread::Builder::new()
                .name("errata-sqlite-expirer".into())
                .spawn(move || run_expirer(&writer, &stopped))
                .map_err(internal)?;
        }
        {
            let stopped = stopped.clone();
            thread::Builder::new()
                .name("errata-sqlite-checkpointer".into())
                .spawn(move || {
                    run_checkpointer(checkpointer, &stopped, &wal_full, wal.restart_frames)
                })
                .map_err(internal)?;
        }
        Ok(Self {
            writer,
            readers,
            practice,
            _lock: lock,
            rounds: Mutex::new(HashMap::new()),
            stopped,
        })
    }

    /// Forgets the fingerprints of requests recorded before `before`, in
    /// one whole pass (the expirer thread does the same in the background,
    /// a chunk at a time). Returns how many it removed.
    pub async fn expire_fingerprints(&self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut after = None;
        let mut removed = 0;
        loop {
            let op = WriteOp::ExpireFingerprints {
                after,
                before: micros(before),
            };
            let chunk = expired(self.write(op).await?)?;
            removed += chunk.removed;
            match chunk.next {
                Some(next) => after = Some(next),
                None => return Ok(removed),
            }
        }
    }

    async fn write(&self, op: WriteOp) -> Result<Written, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(WriteRequest { op, reply })
            .await
            .map_err(|_| StoreError::Internal("the database writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Internal("the database writer has stopped".into()))?
    }

    /// Runs a read on the calling task's thread. Reads never wait for the
    /// writer (WAL) and take tens of microseconds from pages that are
    /// cached, so handing each one to the blocking pool and back cost more
    /// (two thread switches, most of a read's time under load) than it
    /// spared the runtime.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError>,
    {
        let conn = self
            .readers
            .get()
            .map_err(|e| StoreError::Unavailable(format!("no database connection: {e}")))?;
        f(&conn)
    }
}

/// Takes the data directory for this process, or says which one holds it.
fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, StoreError> {
    let path = data_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Internal(format!("opening {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Unavailable(format!(
            "{} is in use by another errata process (one process per data directory)",
            data_dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Internal(format!(
            "locking {}: {e}",
            path.display()
        ))),
    }
}

/// What every connection is opened with.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Plans stay as prepared. Without this, a statement whose LIMIT is a
    // bound parameter (or whose plan could depend on a bound value) is
    // compiled again every time it is bound to a new value, which made
    // SQL parsing a tenth of a practice request's CPU.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

fn uuid_column(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Uuid> {
    let text: String = row.get(index)?;
    Uuid::parse_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Copies committed WAL frames back into the database file, beside the
/// writer (a passive checkpoint never blocks it), so the WAL stays short and
/// commits never pay for a checkpoint.
fn run_checkpointer(
    conn: Connection,
    stopped: &AtomicBool,
    wal_full: &AtomicBool,
    restart_frames: i64,
) {
    let checkpoint = || {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })
    };
    lower_this_threads_priority();
    while !stopped.load(Ordering::Relaxed) {
        thread::sleep(CHECKPOINT_EVERY);
        match checkpoint() {
            Ok((frames, _)) if frames >= restart_frames => {
                // Catch up with the writer first, so that what is left for
                // it to copy when it restarts the WAL is a few frames.
                for _ in 0..4 {
                    match checkpoint() {
                        Ok((frames, copied)) if frames - copied > WAL_RESTART_LEFT => continue,
                        _ => break,
                    }
                }
                wal_full.store(true, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
        }
    }
    // A last one, so a clean shutdown leaves the WAL folded in.
    let _ = checkpoint();
}

/// Forgets old request fingerprints in the background, so that
/// `ingest_requests` holds about a day of requests rather than every request
/// ever made: passes over the table in key order, a chunk at a time through
/// the writer, one pass a minute. It holds the writer's queue weakly, so it
/// never keeps the writer alive.
fn run_expirer(writer: &mpsc::WeakSender<WriteRequest>, stopped: &AtomicBool) {
    lower_this_threads_priority();
    let mut after: Option<FingerprintCursor> = None;
    while !stopped.load(Ordering::Relaxed) {
        let pause = if after.is_some() {
            EXPIRE_CHUNK_EVERY
        } else {
            EXPIRE_PASS_EVERY
        };
        // Wakes often enough to notice the store closing.
        let wake = std::time::Instant::now() + pause;
        while std::time::Instant::now() < wake {
            if stopped.load(Ordering::Relaxed) {
                return;
            }
            let left = wake.saturating_duration_since(std::time::Instant::now());
            thread::sleep(EXPIRE_CHUNK_EVERY.min(left));
        }
        let Some(writer) = writer.upgrade() else {
            return;
        };
        let before =
            super::now() - chrono::Duration::from_std(super::DEDUP_WINDOW).unwrap_or_default();
        let (reply, answer) = oneshot::channel();
        let op = WriteOp::ExpireFingerprints {
            after: after.take(),
            before: micros(before),
        };
        if writer.blocking_send(WriteRequest { op, reply }).is_err() {
            return;
        }
        drop(writer);
        let Ok(written) = answer.blocking_recv() else {
            return;
        };
        match written.and_then(expired) {
            Ok(chunk) => {
                if chunk.removed > 0 {
                    tracing::debug!(removed = chunk.removed, "expired request fingerprints");
                }
                after = chunk.next;
            }
            Err(e) => tracing::warn!(error = %e, "expiring request fingerprints failed"),
        }
    }
}

/// For the background threads (checkpointer, expirer). Checkpoints copy
/// pages (and sync the file); at the same priority as the writer and the
/// request handlers that took CPU slices from them on a busy machine, and
/// showed as their latency. With a lower priority, background work runs on
/// what they leave; it still catches up, since requests wait on I/O part of
/// the time. (Ingest at 32 connections on 2 cores, five runs each: p99
/// 8.2-12.0 ms, median 9.2, against 10.1-16.6 ms, median 12.3.)
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread's own id; on
        // Linux, PRIO_PROCESS with a thread id sets that thread's nice value
        // only.
        let failed = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10) != 0
        };
        if failed {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "could not lower a background thread's priority"
            );
        }
    }
}

/// The writer thread: drains the queue in groups, one transaction each.
fn run_writer(
    mut conn: Connection,
    mut queue: mpsc::Receiver<WriteRequest>,
    wal_full: &AtomicBool,
    practice: &PracticeCache,
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = queue.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        // Whose errors this group may change (read before the ops are
        // taken out of the requests).
        let learners: Vec<Uuid> = group
            .iter()
            .filter_map(|r| match &r.op {
                WriteOp::RecordErrors(report) => Some(report.user_id),
                _ => None,
            })
            .collect();
        let started = std::time::Instant::now();
        let results = commit_group(&mut conn, &mut group);
        metrics::histogram!("errata_sqlite_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("errata_sqlite_commit_requests").record(group.len() as f64);
        // Before anyone hears back: the next practice read of these
        // learners must see this commit.
        for user_id in learners {
            practice.invalidate(user_id);
        }
        for (request, result) in group.drain(..).zip(results) {
            // The caller may have gone away (client disconnected); the write
            // stands either way.
            let _ = request.reply.send(result);
        }
        if wal_full.swap(false, Ordering::Relaxed) {
            restart_wal(&conn);
        }
    }
}

/// The WAL only starts over from the beginning of its file when a
/// checkpoint has copied every frame and no commit has appended since.
/// Under steady writes the checkpointer's passive checkpoints never get
/// there, and the file grows without bound (gigabytes a minute). So when
/// it has grown, the writer itself, between two groups, copies what the
/// checkpointer left (a few frames); its next commit then starts the WAL
/// over, unless a reader still reads old frames (then a later round does).
/// A passive checkpoint never sleeps waiting for locks, so a commit waits
/// for the copy and nothing else.
fn restart_wal(conn: &Connection) {
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "WAL checkpoint failed");
    }
}

fn commit_group(
    conn: &mut Connection,
    group: &mut [WriteRequest],
) -> Vec<Result<Written, StoreError>> {
    let attempt = (|| {
        let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut results = Vec::with_capacity(group.len());
        for request in group.iter_mut() {
            let op = std::mem::replace(&mut request.op, WriteOp::CreateConversation(Uuid::nil()));
            // Each request in its own savepoint, so a failed one leaves no
            // trace; the statements are prepared once, not parsed per request.
            tx.prepare_cached("SAVEPOINT request")?.execute([])?;
            let result = apply(&tx, op);
            if result.is_err() {
                tx.prepare_cached("ROLLBACK TO request")?.execute([])?;
            }
            tx.prepare_cached("RELEASE request")?.execute([])?;
            results.push(result);
        }
        tx.set_drop_behavior(rusqlite::DropBehavior::Rollback);
        tx.commit()?;
        Ok::<_, rusqlite::Error>(results)
    })();
    match attempt {
        Ok(results) => results,
        Err(e) => {
            tracing::error!(error = %e, requests = group.len(), "database commit failed");
            group
                .iter()
                .map(|_| Err(StoreError::Internal(format!("database commit failed: {e}"))))
                .collect()
        }
    }
}

fn apply(tx: &Connection, op: WriteOp) -> Result<Written, StoreError> {
    match op {
        WriteOp::CreateUser(new) => insert_user(tx, new).map(Written::User),
        WriteOp::CreateConversation(user_id) => {
            insert_conversation(tx, user_id).map(Written::Conversation)
        }
        WriteOp::CreateUtterance(new) => insert_utterance(tx, new).map(Written::Utterance),
        WriteOp::RecordErrors(report) => record(tx, report).map(Written::Recorded),
        WriteOp::ExpireFingerprints { after, before } => {
            expire_fingerprints(tx, after, before).map(Written::Expired)
        }
    }
}

/// Looks at the next `FINGERPRINT_CHUNK` fingerprints after `after` (in key
/// order) and deletes those recorded before `before` (microseconds).
fn expire_fingerprints(
    tx: &Connection,
    after: Option<FingerprintCursor>,
    before: i64,
) -> Result<ExpiredChunk, StoreError> {
    let (user_id, fingerprint) = after.unwrap_or_default();
    let keys: Vec<(String, String, i64)> = tx
        .prepare_cached(
            "SELECT user_id, fingerprint, received_at FROM ingest_requests
             WHERE (user_id, fingerprint) > (?1, ?2)
             ORDER BY user_id, fingerprint LIMIT ?3",
        )
        .and_then(|mut s| {
            s.query_map(
                params![user_id, fingerprint, FINGERPRINT_CHUNK as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?
            .collect()
        })
        .map_err(internal)?;
    let mut delete = tx
        .prepare_cached("DELETE FROM ingest_requests WHERE user_id = ?1 AND fingerprint = ?2")
        .map_err(internal)?;
    let mut removed = 0;
    for (user_id, fingerprint, received_at) in &keys {
        if *received_at < before {
            removed += delete
                .execute(params![user_id, fingerprint])
                .map_err(internal)?;
        }
    }
    let next = if keys.len() < FINGERPRINT_CHUNK {
        None
    } else {
        keys.last().map(|(u, f, _)| (u.clone(), f.clone()))
    };
    Ok(ExpiredChunk { removed, next })
}

fn user_exists(conn: &Connection, user_id: Uuid) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT 1 FROM users WHERE user_id = ?1")
        .and_then(|mut s| s.exists([user_id.to_string()]))
        .map_err(internal)
}

/// Every error count of the learner (empty for an unknown learner too).
fn read_frequencies(conn: &Connection, user_id: Uuid) -> Result<FrequencyTable, StoreError> {
    conn.prepare_cached(
        "SELECT category_key, subcategory_key, category, subcategory, frequency, last_seen
         FROM error_counts WHERE user_id = ?1",
    )
    .and_then(|mut s| s.query_map([user_id.to_string()], frequency_row)?.collect())
    .map_err(internal)
}

/// The learner's `n` most frequent errors, in the order of
/// `FrequencyTable::top` (frequency, then the latest, then the key; keys
/// compare as bytes in both), ranked by SQLite so that only those are decoded.
fn read_top(conn: &Connection, user_id: Uuid, n: usize) -> Result<Vec<ErrorFrequency>, StoreError> {
    conn.prepare_cached(
        "SELECT category_key, subcategory_key, category, subcategory, frequency, last_seen
         FROM error_counts WHERE user_id = ?1 AND frequency > 0
         ORDER BY frequency DESC, last_seen DESC, category_key, subcategory_key
         LIMIT ?2",
    )
    .and_then(|mut s| {
        s.query_map(params![user_id.to_string(), n as i64], frequency_row)?
            .collect()
    })
    .map_err(internal)
}

/// An `error_counts` row selected as (category_key, subcategory_key,
/// category, subcategory, frequency, last_seen).
fn frequency_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ErrorFrequency> {
    Ok(ErrorFrequency {
        key: ErrorKey {
            category: r.get(0)?,
            subcategory: r.get(1)?,
        },
        category: r.get(2)?,
        subcategory: r.get(3)?,
        frequency: r.get(4)?,
        last_seen: Some(from_micros(r.get(5)?)),
    })
}

fn conversation_owner(
    conn: &Connection,
    conversation_id: Uuid,
) -> Result<Option<Uuid>, StoreError> {
    conn.prepare_cached("SELECT user_id FROM conversations WHERE conversation_id = ?1")
        .and_then(|mut s| {
            s.query_row([conversation_id.to_string()], |r| uuid_column(r, 0))
                .optional()
        })
        .map_err(internal)
}

fn insert_user(tx: &Connection, new: NewUser) -> Result<User, StoreError> {
    let user = User {
        user_id: Uuid::now_v7(),
        username: new.username.as_str().to_owned(),
        email: new.email.as_str().to_owned(),
        created_at: super::now(),
    };
    let inserted = tx
        .prepare_cached(
            "INSERT INTO users (user_id, username, email, email_key, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (email_key) DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                user.user_id.to_string(),
                user.username,
                user.email,
                new.email.key(),
                micros(user.created_at)
            ])
        })
        .map_err(internal)?;
    if inserted == 0 {
        return Err(StoreError::EmailTaken);
    }
    Ok(user)
}

fn insert_conversation(tx: &Connection, user_id: Uuid) -> Result<Conversation, StoreError> {
    if !user_exists(tx, user_id)? {
        return Err(StoreError::UserNotFound);
    }
    let conversation = Conversation {
        conversation_id: Uuid::now_v7(),
        user_id,
        started_at: super::now(),
    };
    tx.prepare_cached(
        "INSERT INTO conversations (conversation_id, user_id, started_at) VALUES (?1, ?2, ?3)",
    )
    .and_then(|mut s| {
        s.execute(params![
            conversation.conversation_id.to_string(),
            user_id.to_string(),
            micros(conversation.started_at)
        ])
    })
    .map_err(internal)?;
    Ok(conversation)
}

fn insert_utterance(tx: &Connection, new: NewUtterance) -> Result<Utterance, StoreError> {
    if conversation_owner(tx, new.conversation_id)? != Some(new.user_id) {
        return Err(StoreError::ConversationNotFound);
    }
    let utterance = Utterance {
        utterance_id: Uuid::now_v7(),
        conversation_id: new.conversation_id,
        user_id: new.user_id,
        content: new.content,
        created_at: super::now(),
    };
    tx.prepare_cached(
        "INSERT INTO utterances (utterance_id, conversation_id, user_id, content, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| {
        s.execute(params![
            utterance.utterance_id.to_string(),
            utterance.conversation_id.to_string(),
            utterance.user_id.to_string(),
            utterance.content,
            micros(utterance.created_at)
        ])
    })
    .map_err(internal)?;
    Ok(utterance)
}

fn record(tx: &Connection, report: ErrorReport) -> Result<RecordOutcome, StoreError> {
    let utterance_owner = tx
        .prepare_cached("SELECT conversation_id, user_id FROM utterances WHERE utterance_id = ?1")
        .and_then(|mut s| {
            s.query_row([report.utterance_id.to_string()], |r| {
                Ok((uuid_column(r, 0)?, uuid_column(r, 1)?))
            })
            .optional()
        })
        .map_err(internal)?;
    // An utterance is only ever stored in its user's own conversation, and
    // nothing is deleted: when it matches, the user and the conversation
    // exist and belong together. Otherwise name what is missing, user first.
    if utterance_owner != Some((report.conversation_id, report.user_id)) {
        if !user_exists(tx, report.user_id)? {
            return Err(StoreError::UserNotFound);
        }
        if conversation_owner(tx, report.conversation_id)? != Some(report.user_id) {
            return Err(StoreError::ConversationNotFound);
        }
        return Err(StoreError::UtteranceNotFound);
    }

    let user_id = report.user_id.to_string();
    let at = micros(report.received_at);
    let first_time = tx
        .prepare_cached(
            "INSERT INTO ingest_requests (user_id, fingerprint, received_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (user_id, fingerprint) DO NOTHING",
        )
        .and_then(|mut s| s.execute(params![user_id, report.fingerprint.to_string(), at]))
        .map_err(internal)?
        == 1;
    if !first_time {
        return Ok(RecordOutcome {
            recorded: 0,
            duplicate: true,
        });
    }

    // One upsert per distinct error; it returns the spelling the learner's
    // table shows (the first one seen), which the events then carry too.
    let mut deltas: HashMap<ErrorKey, (usize, &str, &str)> = HashMap::new();
    for point in &report.points {
        deltas
            .entry(point.key())
            .or_insert((0, point.category.as_str(), point.subcategory.as_str()))
            .0 += 1;
    }
    let mut shown: HashMap<ErrorKey, (String, String)> = HashMap::with_capacity(deltas.len());
    {
        let mut upsert = tx
            .prepare_cached(
                "INSERT INTO error_counts
                   (user_id, category_key, subcategory_key, category, subcategory, frequency, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (user_id, category_key, subcategory_key) DO UPDATE SET
                   frequency = frequency + excluded.frequency,
                   last_seen = max(last_seen, excluded.last_seen)
                 RETURNING category, subcategory",
            )
            .map_err(internal)?;
        for (key, (count, category, subcategory)) in deltas {
            let spelling = upsert
                .query_row(
                    params![
                        user_id,
                        key.category,
                        key.subcategory,
                        category,
                        subcategory,
                        count as i64,
                        at
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(internal)?;
            shown.insert(key, spelling);
        }
    }
    let mut insert_event = tx
        .prepare_cached(
            "INSERT INTO error_events
               (user_id, conversation_id, utterance_id, category_key, subcategory_key,
                category, subcategory, occurred_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(internal)?;
    let (conversation_id, utterance_id) = (
        report.conversation_id.to_string(),
        report.utterance_id.to_string(),
    );
    for point in &report.points {
        let key = point.key();
        let (category, subcategory) = &shown[&key];
        insert_event
            .execute(params![
                user_id,
                conversation_id,
                utterance_id,
                key.category,
                key.subcategory,
                category,
                subcategory,
                at
            ])
            .map_err(internal)?;
    }
    Ok(RecordOutcome {
        recorded: report.points.len(),
        duplicate: false,
    })
}

/// The writer's answer to an `ExpireFingerprints` op.
fn expired(written: Written) -> Result<ExpiredChunk, StoreError> {
    match written {
        Written::Expired(chunk) => Ok(chunk),
        other => Err(unexpected(other)),
    }
}

fn unexpected(written: Written) -> StoreError {
    let what = match written {
        Written::User(_) => "a user",
        Written::Conversation(_) => "a conversation",
        Written::Utterance(_) => "an utterance",
        Written::Recorded(_) => "a record outcome",
        Written::Expired(_) => "expired fingerprints",
    };
    StoreError::Internal(format!("the writer answered with {what} unexpectedly"))
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        match self.write(WriteOp::CreateUser(new)).await? {
            Written::User(user) => Ok(user),
            other => Err(unexpected(other)),
        }
    }

    async fn user(&self, user_id: Uuid) -> Result<Option<User>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached("SELECT username, email, created_at FROM users WHERE user_id = ?1")
                .and_then(|mut s| {
                    s.query_row([user_id.to_string()], |r| {
                        Ok(User {
                            user_id,
                            username: r.get(0)?,
                            email: r.get(1)?,
                            created_at: from_micros(r.get(2)?),
                        })
                    })
                    .optional()
                })
                .map_err(internal)
        })
        .await
    }

    async fn create_conversation(&self, user_id: Uuid) -> Result<Conversation, StoreError> {
        match self.write(WriteOp::CreateConversation(user_id)).await? {
            Written::Conversation(c) => Ok(c),
            other => Err(unexpected(other)),
        }
    }

    async fn create_utterance(&self, new: NewUtterance) -> Result<Utterance, StoreError> {
        match self.write(WriteOp::CreateUtterance(new)).await? {
            Written::Utterance(u) => Ok(u),
            other => Err(unexpected(other)),
        }
    }

    async fn record_errors(&self, report: ErrorReport) -> Result<RecordOutcome, StoreError> {
        match self.write(WriteOp::RecordErrors(report)).await? {
            Written::Recorded(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }

    async fn frequencies(&self, user_id: Uuid) -> Result<FrequencyTable, StoreError> {
        self.read(move |conn| {
            let table = read_frequencies(conn, user_id)?;
            if table.is_empty() && !user_exists(conn, user_id)? {
                return Err(StoreError::UserNotFound);
            }
            Ok(table)
        })
        .await
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
        // One read: the counts, then the learner's latest events from the
        // covering index, newest first, stopping as soon as every top error
        // has its sentences. Only the events that add a sentence are decoded.
        let inputs = self
            .read(move |conn| {
                let top = read_top(conn, user_id, query.top_n)?;
                if top.is_empty() {
                    if !user_exists(conn, user_id)? {
                        return Err(StoreError::UserNotFound);
                    }
                    return Ok(PracticeInputs::default());
                }
                let per_error = query.sentences_per_error;
                let mut sentences: Vec<Vec<OwnSentence>> = vec![Vec::new(); top.len()];
                let mut missing = if per_error == 0 { 0 } else { top.len() };
                let mut texts = conn
                    .prepare_cached("SELECT content FROM utterances WHERE utterance_id = ?1")
                    .map_err(internal)?;
                let mut events = conn
                    .prepare_cached(
                        "SELECT category_key, subcategory_key, utterance_id
                     FROM error_events INDEXED BY error_events_recent
                     WHERE user_id = ?1 ORDER BY event_id DESC LIMIT ?2",
                    )
                    .map_err(internal)?;
                let mut rows = events
                    .query(params![user_id.to_string(), query.window as i64])
                    .map_err(internal)?;
                // Utterances already looked up that had no text to show.
                let mut textless: Vec<Uuid> = Vec::new();
                while missing > 0 {
                    let Some(r) = rows.next().map_err(internal)? else {
                        break;
                    };
                    let (category, subcategory) = (
                        r.get_ref(0)
                            .and_then(|v| Ok(v.as_str()?))
                            .map_err(internal)?,
                        r.get_ref(1)
                            .and_then(|v| Ok(v.as_str()?))
                            .map_err(internal)?,
                    );
                    let Some(i) = top.iter().position(|e| {
                        e.key.category == category && e.key.subcategory == subcategory
                    }) else {
                        continue;
                    };
                    let own = &mut sentences[i];
                    if own.len() >= per_error {
                        continue;
                    }
                    let utterance_id = uuid_column(r, 2).map_err(internal)?;
                    if textless.contains(&utterance_id)
                        || own.iter().any(|s| s.utterance_id == utterance_id)
                    {
                        continue;
                    }
                    let known = sentences
                        .iter()
                        .flatten()
                        .find(|s| s.utterance_id == utterance_id)
                        .map(|s| s.text.clone());
                    let text = match known {
                        Some(text) => Some(text),
                        None => texts
                            .query_row([utterance_id.to_string()], |u| {
                                u.get::<_, Option<String>>(0)
                            })
                            .optional()
                            .map_err(internal)?
                            .flatten()
                            .filter(|t| !t.trim().is_empty()),
                    };
                    let Some(text) = text else {
                        textless.push(utterance_id);
                        continue;
                    };
                    let own = &mut sentences[i];
                    own.push(OwnSentence { utterance_id, text });
                    if own.len() == per_error {
                        missing -= 1;
                    }
                }
                Ok(PracticeInputs { top, sentences })
            })
            .await?;
        let inputs = Arc::new(inputs);
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
        self.read(move |conn| {
            // The events come from one covering index (no table lookups);
            // the text of each distinct utterance is read once, not once
            // per event.
            let mut texts: HashMap<String, Option<String>> = HashMap::new();
            let mut utterance = conn
                .prepare_cached("SELECT content FROM utterances WHERE utterance_id = ?1")
                .map_err(internal)?;
            let recent: Vec<RecentError> = conn
                .prepare_cached(
                    "SELECT category, subcategory, conversation_id, utterance_id,
                            occurred_at, category_key, subcategory_key
                     FROM error_events INDEXED BY error_events_recent
                     WHERE user_id = ?1 ORDER BY event_id DESC LIMIT ?2",
                )
                .and_then(|mut s| {
                    let mut rows = s.query(params![user_id.to_string(), limit as i64])?;
                    let mut recent = Vec::new();
                    while let Some(r) = rows.next()? {
                        let utterance_text: &str = r.get_ref(3)?.as_str()?;
                        let text = match texts.get(utterance_text) {
                            Some(text) => text.clone(),
                            None => {
                                let text: Option<String> = utterance
                                    .query_row([utterance_text], |u| u.get(0))
                                    .optional()?
                                    .flatten();
                                texts.insert(utterance_text.to_owned(), text.clone());
                                text
                            }
                        };
                        recent.push(RecentError {
                            key: ErrorKey {
                                category: r.get(5)?,
                                subcategory: r.get(6)?,
                            },
                            category: r.get(0)?,
                            subcategory: r.get(1)?,
                            conversation_id: uuid_column(r, 2)?,
                            utterance_id: uuid_column(r, 3)?,
                            utterance: text,
                            occurred_at: from_micros(r.get(4)?),
                        });
                    }
                    Ok(recent)
                })
                .map_err(internal)?;
            if recent.is_empty() && !user_exists(conn, user_id)? {
                return Err(StoreError::UserNotFound);
            }
            Ok(recent)
        })
        .await
    }

    async fn next_exercise_round(&self, user_id: Uuid) -> Result<u64, StoreError> {
        let mut rounds = self
            .rounds
            .lock()
            .map_err(|_| StoreError::Internal("exercise rotation state is poisoned".into()))?;
        let round = rounds.entry(user_id).or_insert(0);
        let current = *round;
        *round += 1;
        Ok(current)
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        if self.writer.is_closed() {
            return Err(StoreError::Unavailable(
                "the database writer has stopped".into(),
            ));
        }
        self.read(|conn| {
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
                .map_err(|e| StoreError::Unavailable(format!("database: {e}")))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Email, ErrorName, ErrorPoint, Username};
    use crate::store::{NewUtterance, DEDUP_WINDOW};

    const NAMES: [(&str, &str); 5] = [
        ("Grammar", "Articles"),
        ("Grammar", "Verb Tense"),
        ("Vocabulary", "Word Choice"),
        ("Fluency", "Filler Words"),
        ("Pronunciation", "Vowels"),
    ];

    fn point(i: usize) -> ErrorPoint {
        let (category, subcategory) = NAMES[i % NAMES.len()];
        ErrorPoint {
            category: ErrorName::parse(category).unwrap(),
            subcategory: ErrorName::parse(subcategory).unwrap(),
        }
    }

    /// A new learner with one conversation: (user, conversation).
    async fn learner(store: &SqliteStore, name: &str) -> (Uuid, Uuid) {
        let user = store
            .create_user(NewUser {
                username: Username::parse(name).unwrap(),
                email: Email::parse(&format!("{name}@example.com")).unwrap(),
            })
            .await
            .unwrap();
        let conversation = store.create_conversation(user.user_id).await.unwrap();
        (user.user_id, conversation.conversation_id)
    }

    /// A fresh store (in a temporary directory, kept alive by the first
    /// value) with one learner who said one sentence.
    async fn one_learner_with_a_sentence() -> (tempfile::TempDir, SqliteStore, (Uuid, Uuid), Uuid) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let al = learner(&store, "al").await;
        let said = utterance(&store, al, Some("She go to school")).await;
        (dir, store, al, said)
    }

    async fn utterance(
        store: &SqliteStore,
        (user_id, conversation_id): (Uuid, Uuid),
        content: Option<&str>,
    ) -> Uuid {
        store
            .create_utterance(NewUtterance {
                user_id,
                conversation_id,
                content: content.map(str::to_owned),
            })
            .await
            .unwrap()
            .utterance_id
    }

    /// Under steady writes the WAL starts over instead of growing: with a
    /// restart every 200 frames and a 256 KiB limit, the file is cut back
    /// again and again (a WAL that is never restarted only ever grows).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_bounded_under_steady_writes() {
        let dir = tempfile::tempdir().unwrap();
        let limits = WalLimits {
            restart_frames: 200,
            size_limit: 256 << 10,
        };
        let store = Arc::new(SqliteStore::open_with(dir.path(), limits).await.unwrap());
        let (user_id, conversation_id) = learner(&store, "ada").await;
        let utterance_id = utterance(&store, (user_id, conversation_id), Some("I has a cat")).await;
        let wal = dir.path().join(format!("{DATABASE_FILE}-wal"));
        let (mut last, mut shrunk, mut written) = (0u64, 0usize, 0usize);
        let started = std::time::Instant::now();
        // Keep writing until the checkpointer has had its turn many times.
        while started.elapsed() < Duration::from_secs(3) {
            let mut batch = tokio::task::JoinSet::new();
            for n in 0..16 {
                let store = store.clone();
                batch.spawn(async move {
                    store
                        .record_errors(ErrorReport {
                            user_id,
                            conversation_id,
                            utterance_id,
                            points: vec![point(n), point(n + 1)],
                            fingerprint: Uuid::new_v4(),
                            received_at: crate::store::now(),
                        })
                        .await
                        .unwrap()
                });
            }
            written += batch.join_all().await.len();
            let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
            if size < last {
                shrunk += 1;
            }
            last = size;
        }
        let table = store.frequencies(user_id).await.unwrap();
        assert_eq!(table.total(), 2 * written as i64, "every write counted");
        assert!(
            written > 2_000,
            "only {written} writes: the test proves nothing"
        );
        assert!(
            shrunk >= 2,
            "the WAL was cut back {shrunk} times over {written} writes; it is {last} bytes"
        );
    }

    /// The one-read practice query answers exactly what the generic one,
    /// built from `frequencies` and `recent_errors`, answers.
    #[tokio::test]
    async fn practice_inputs_in_one_read_match_the_generic_answer() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let ada = learner(&store, "ada").await;
        // Utterances with text, blank text and none; each reported several
        // times with overlapping errors, so sentences repeat across events.
        let mut utterances = Vec::new();
        for n in 0..40 {
            let content = match n % 7 {
                0 => None,
                1 => Some("   ".to_owned()),
                _ => Some(format!("sentence number {n}")),
            };
            utterances.push(utterance(&store, ada, content.as_deref()).await);
        }
        for n in 0..150usize {
            let points = (0..1 + n % 3).map(|i| point(n * 7 % 11 + i)).collect();
            record(&store, ada, utterances[n * 13 % utterances.len()], points).await;
        }
        for (top_n, sentences_per_error, window) in [
            (5, 3, 200),
            (1, 3, 10),
            (3, 1, 48),
            (50, 10, 200),
            (2, 3, 1),
            (5, 0, 200),
        ] {
            let query = PracticeQuery {
                top_n,
                sentences_per_error,
                window,
            };
            assert_same_practice(&store, ada.0, query).await;
        }
        let full = PracticeQuery {
            top_n: 5,
            sentences_per_error: 3,
            window: 200,
        };
        let some = store.practice_inputs(ada.0, full).await.unwrap();
        assert!(some.sentences.iter().any(|s| s.len() == 3));

        // Ties: one report of five errors, each counted once at one time,
        // ranks by key alone; both paths must agree on the cut.
        let bo = learner(&store, "bo").await;
        let said = utterance(&store, bo, Some("She go home")).await;
        record(
            &store,
            bo,
            said,
            (0..NAMES.len()).rev().map(point).collect(),
        )
        .await;
        for top_n in 1..=NAMES.len() {
            assert_same_practice(&store, bo.0, PracticeQuery { top_n, ..full }).await;
        }

        let stranger = store.practice_inputs(Uuid::new_v4(), full).await;
        assert!(matches!(stranger, Err(StoreError::UserNotFound)));
    }

    /// Practice answers are kept in memory between writes; a write the
    /// writer has acknowledged is in the very next answer.
    #[tokio::test]
    async fn kept_practice_inputs_follow_every_write() {
        let (_dir, store, al, said) = one_learner_with_a_sentence().await;
        let query = PracticeQuery {
            top_n: 3,
            sentences_per_error: 3,
            window: 200,
        };
        let mut expected = 0;
        for round in 0..20 {
            let points: Vec<ErrorPoint> = (0..=round % 3).map(|_| point(0)).collect();
            expected += points.len() as i64;
            record(&store, al, said, points).await;
            // Twice: once filling the cache, once from it.
            for _ in 0..2 {
                let inputs = store.practice_inputs(al.0, query).await.unwrap();
                assert_eq!(inputs.top[0].frequency, expected, "round {round}");
                assert_eq!(inputs.sentences[0].len(), 1);
            }
        }
        // Reads racing writes: every answer a reader gets after a write was
        // acknowledged counts that write.
        let store = Arc::new(store);
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..200 {
                    record(&store, al, said, vec![point(0)]).await;
                }
            })
        };
        let mut last = expected;
        while !writer.is_finished() {
            let seen = store.practice_inputs(al.0, query).await.unwrap().top[0].frequency;
            assert!(seen >= last, "went back from {last} to {seen}");
            last = seen;
            tokio::task::yield_now().await;
        }
        writer.await.unwrap();
        let seen = store.practice_inputs(al.0, query).await.unwrap().top[0].frequency;
        assert_eq!(seen, expected + 200);
    }

    /// Fingerprints are kept for a day: a retry within it counts once, and
    /// the ones older than that are removed, over as many chunks as it takes.
    #[tokio::test]
    async fn old_fingerprints_expire_and_recent_ones_still_deduplicate() {
        let (_dir, store, al, said) = one_learner_with_a_sentence().await;
        let report = |fingerprint: Uuid, received_at: DateTime<Utc>| ErrorReport {
            user_id: al.0,
            conversation_id: al.1,
            utterance_id: said,
            points: vec![point(0)],
            fingerprint,
            received_at,
        };
        let now = crate::store::now();
        let day_and_a_bit = chrono::Duration::hours(25);
        // More old ones than one chunk looks at.
        let old: Vec<Uuid> = (0..FINGERPRINT_CHUNK + 150)
            .map(|_| Uuid::new_v4())
            .collect();
        let recorded = futures_util::future::join_all(
            old.iter()
                .map(|f| store.record_errors(report(*f, now - day_and_a_bit))),
        )
        .await;
        assert!(recorded.iter().all(|r| r.as_ref().unwrap().recorded == 1));
        let recent = Uuid::new_v4();
        store.record_errors(report(recent, now)).await.unwrap();

        let removed = store
            .expire_fingerprints(now - chrono::Duration::from_std(DEDUP_WINDOW).unwrap())
            .await
            .unwrap();
        assert_eq!(removed, old.len());

        // The recent request is still known; an old one counts again.
        let retry = store.record_errors(report(recent, now)).await.unwrap();
        assert!(retry.duplicate);
        let again = store.record_errors(report(old[7], now)).await.unwrap();
        assert_eq!((again.recorded, again.duplicate), (1, false));
        let total = store.frequencies(al.0).await.unwrap().top(1)[0].frequency;
        assert_eq!(total, old.len() as i64 + 2);
    }

    /// Two processes on one data directory would each keep answers the
    /// other's writes made stale: the second is refused, with the reason.
    #[tokio::test]
    async fn one_store_per_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = SqliteStore::open(dir.path()).await.unwrap();
        let second = SqliteStore::open(dir.path()).await;
        match second {
            Err(StoreError::Unavailable(reason)) => {
                assert!(reason.contains("another errata process"), "{reason}")
            }
            other => panic!("a second store opened: {:?}", other.err()),
        }
        drop(first);
        SqliteStore::open(dir.path()).await.unwrap();
    }

    async fn record(
        store: &SqliteStore,
        (user_id, conversation_id): (Uuid, Uuid),
        utterance_id: Uuid,
        points: Vec<ErrorPoint>,
    ) {
        store
            .record_errors(ErrorReport {
                user_id,
                conversation_id,
                utterance_id,
                points,
                fingerprint: Uuid::new_v4(),
                received_at: crate::store::now(),
            })
            .await
            .unwrap();
    }

    /// The one read answers what the generic two-step read answers.
    async fn assert_same_practice(store: &SqliteStore, user_id: Uuid, query: PracticeQuery) {
        let top = store.frequencies(user_id).await.unwrap().top(query.top_n);
        let recent = store.recent_errors(user_id, query.window).await.unwrap();
        let expected = PracticeInputs::from_recent(top, &recent, query.sentences_per_error);
        let got = store.practice_inputs(user_id, query).await.unwrap();
        assert_eq!(*got, expected, "{query:?}");
    }
}
