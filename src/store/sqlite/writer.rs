//! The single writer: it takes whatever requests are queued, applies each in
//! its own savepoint inside one transaction, commits once (one fsync for the
//! whole group) and only then answers the callers. When the store closes,
//! the writer answers what is already queued and gives its connection back
//! to the store's workers, which fold the WAL in with it once every worker
//! has stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use r2d2_sqlite::rusqlite::{self, Connection, Transaction, TransactionBehavior};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::erasure;
use super::memory;
use super::practice_cache::PracticeCache;
use super::queue::{Reply, WriteRequest};
use super::wal::restart_wal;
use super::writes;
use crate::store::closer::Closer;
use crate::store::StoreError;

/// Most write requests committed in one transaction.
const MAX_GROUP: usize = 512;

/// The writer thread and what it owns.
pub(super) struct Writer {
    pub conn: Connection,
    pub queue: mpsc::Receiver<WriteRequest>,
    /// Learners' practice inputs, dropped as their errors are committed.
    pub practice: Arc<PracticeCache>,
    /// Raised by the checkpointer when the WAL should start over.
    pub wal_full: Arc<AtomicBool>,
    /// The writer stops when this closes, after answering what is queued.
    pub closer: Closer,
}

impl Writer {
    /// Drains the queue in groups, one transaction each, until the store
    /// closes; returns its connection, for the WAL's last fold.
    pub fn run(mut self) -> Connection {
        let mut requests = Vec::with_capacity(MAX_GROUP);
        while let Some(first) = next_request(&mut self.queue, &self.closer) {
            requests.push(first);
            while requests.len() < MAX_GROUP {
                match self.queue.try_recv() {
                    Ok(next) => requests.push(next),
                    Err(_) => break,
                }
            }
            commit_and_answer(&mut self.conn, &mut requests, &self.practice);
            if self.wal_full.swap(false, Ordering::Relaxed) {
                restart_wal(&self.conn);
            }
        }
        self.conn
    }
}

/// The next request, waiting for one; `None` once the store closes and what
/// was queued before has been taken.
fn next_request(queue: &mut mpsc::Receiver<WriteRequest>, closer: &Closer) -> Option<WriteRequest> {
    match closer.block_until(queue.recv()) {
        Some(request) => request,
        None => {
            // Callers who come now hear that the writer has stopped.
            queue.close();
            queue.blocking_recv()
        }
    }
}

/// Commits the requests in one transaction, then answers each.
fn commit_and_answer(
    conn: &mut Connection,
    requests: &mut Vec<WriteRequest>,
    practice: &PracticeCache,
) {
    let learners: Vec<Uuid> = requests.iter().filter_map(WriteRequest::learner).collect();
    let count = requests.len();
    let started = Instant::now();
    let mut group = Group::begin(conn);
    let answers: Vec<Box<dyn Answer>> = requests.drain(..).map(|r| apply(r, &mut group)).collect();
    let committed = group.commit();
    metrics::histogram!("errata_sqlite_commit_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("errata_sqlite_commit_requests").record(count as f64);
    if let Err(e) = &committed {
        tracing::error!(error = %e, requests = count, "database commit failed");
    }
    // Before anyone hears back: the next practice read of these learners
    // must see this commit.
    for user_id in learners {
        practice.invalidate(user_id);
    }
    for answer in answers {
        answer.send(committed.as_ref().map(|_| ()));
    }
}

/// Applies the request in the group's transaction; what it returns
/// answers the caller once the group is committed.
fn apply(request: WriteRequest, group: &mut Group<'_>) -> Box<dyn Answer> {
    match request {
        WriteRequest::CreateUser(new, reply) => {
            pending(reply, group.apply(|tx| writes::insert_user(tx, new)))
        }
        WriteRequest::CreateConversation(user_id, reply) => pending(
            reply,
            group.apply(|tx| writes::insert_conversation(tx, user_id)),
        ),
        WriteRequest::CreateUtterance(new, reply) => {
            pending(reply, group.apply(|tx| writes::insert_utterance(tx, new)))
        }
        WriteRequest::Record(report, reply) => {
            pending(reply, group.apply(|tx| writes::record(tx, report)))
        }
        WriteRequest::RecordAnswer(answer, reply) => {
            pending(reply, group.apply(|tx| memory::record_answer(tx, answer)))
        }
        WriteRequest::UndoAnswer(user_id, answer_id, reply) => pending(
            reply,
            group.apply(|tx| memory::undo_answer(tx, user_id, answer_id)),
        ),
        WriteRequest::SetTimezone(user_id, tz, reply) => pending(
            reply,
            group.apply(|tx| memory::set_timezone(tx, user_id, tz)),
        ),
        WriteRequest::Erase(user_id, reply) => {
            pending(reply, group.apply(|tx| erasure::erase(tx, user_id)))
        }
        WriteRequest::ExpireFingerprints(expiry, reply) => pending(
            reply,
            group.apply(|tx| writes::expire_fingerprints(tx, expiry)),
        ),
    }
}

/// One group's transaction. A statement of the transaction itself failing
/// (not one of a request's, which only undoes that request) loses the
/// group: the requests after it are not applied, and every one is told the
/// commit failed.
struct Group<'c> {
    tx: rusqlite::Result<Transaction<'c>>,
}

impl<'c> Group<'c> {
    fn begin(conn: &'c mut Connection) -> Self {
        Self {
            tx: conn.transaction_with_behavior(TransactionBehavior::Immediate),
        }
    }

    /// Runs one request's writes in its own savepoint, so that a request
    /// that fails leaves no trace.
    fn apply<T>(
        &mut self,
        write: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = match &self.tx {
            Ok(tx) => tx,
            Err(e) => return Err(commit_failed(e)),
        };
        match in_savepoint(tx, write) {
            Ok(result) => result,
            Err(e) => {
                let failed = commit_failed(&e);
                // Dropping the transaction rolls it back.
                self.tx = Err(e);
                Err(failed)
            }
        }
    }

    fn commit(self) -> rusqlite::Result<()> {
        let mut tx = self.tx?;
        tx.set_drop_behavior(rusqlite::DropBehavior::Rollback);
        tx.commit()
    }
}

/// The savepoint statements are prepared once, not parsed per request.
fn in_savepoint<T>(
    tx: &Connection,
    write: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> rusqlite::Result<Result<T, StoreError>> {
    tx.prepare_cached("SAVEPOINT request")?.execute([])?;
    let result = write(tx);
    if result.is_err() {
        tx.prepare_cached("ROLLBACK TO request")?.execute([])?;
    }
    tx.prepare_cached("RELEASE request")?.execute([])?;
    Ok(result)
}

fn commit_failed(e: &rusqlite::Error) -> StoreError {
    StoreError::internal("database commit failed", e.to_string())
}

/// A request applied, waiting for its group's commit to be answered.
trait Answer: Send {
    /// Sends the request's own result, or that the commit failed.
    fn send(self: Box<Self>, committed: Result<(), &rusqlite::Error>);
}

struct Pending<T> {
    reply: Reply<T>,
    result: Result<T, StoreError>,
}

fn pending<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> Box<dyn Answer> {
    Box::new(Pending { reply, result })
}

impl<T: Send> Answer for Pending<T> {
    fn send(self: Box<Self>, committed: Result<(), &rusqlite::Error>) {
        let result = committed.map_err(commit_failed).and(self.result);
        // The caller may have gone away (client disconnected); the write
        // stands either way.
        let _ = self.reply.send(result);
    }
}
