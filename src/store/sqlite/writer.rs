//! The single writer: it takes whatever requests are queued, applies each in
//! its own savepoint inside one transaction, commits once (one fsync for the
//! whole group) and only then answers the callers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use r2d2_sqlite::rusqlite::{self, Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::maintenance::restart_wal;
use super::practice_cache::PracticeCache;
use super::writes::{self, ExpiredChunk, Expiry};
use crate::store::{
    Conversation, ErrorReport, NewUser, NewUtterance, RecordOutcome, StoreError, User, Utterance,
};

/// Most write requests committed in one transaction.
const MAX_GROUP: usize = 512;
/// Queued write requests before callers wait (back-pressure, bounded memory).
pub(super) const QUEUE_DEPTH: usize = 4096;

pub(super) enum WriteOp {
    CreateUser(NewUser),
    CreateConversation(Uuid),
    CreateUtterance(NewUtterance),
    RecordErrors(ErrorReport),
    /// One chunk of a pass that forgets old request fingerprints.
    ExpireFingerprints(Expiry),
}

pub(super) enum Written {
    User(User),
    Conversation(Conversation),
    Utterance(Utterance),
    Recorded(RecordOutcome),
    Expired(ExpiredChunk),
}

pub(super) struct WriteRequest {
    pub op: WriteOp,
    pub reply: oneshot::Sender<Result<Written, StoreError>>,
}

/// The writer thread: drains the queue in groups, one transaction each.
pub(super) fn run_writer(
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
        let started = Instant::now();
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
        WriteOp::CreateUser(new) => writes::insert_user(tx, new).map(Written::User),
        WriteOp::CreateConversation(user_id) => {
            writes::insert_conversation(tx, user_id).map(Written::Conversation)
        }
        WriteOp::CreateUtterance(new) => writes::insert_utterance(tx, new).map(Written::Utterance),
        WriteOp::RecordErrors(report) => writes::record(tx, report).map(Written::Recorded),
        WriteOp::ExpireFingerprints(expiry) => {
            writes::expire_fingerprints(tx, expiry).map(Written::Expired)
        }
    }
}

/// The writer's answer to an `ExpireFingerprints` op.
pub(super) fn expired(written: Written) -> Result<ExpiredChunk, StoreError> {
    match written {
        Written::Expired(chunk) => Ok(chunk),
        other => Err(unexpected(other)),
    }
}

pub(super) fn unexpected(written: Written) -> StoreError {
    let what = match written {
        Written::User(_) => "a user",
        Written::Conversation(_) => "a conversation",
        Written::Utterance(_) => "an utterance",
        Written::Recorded(_) => "a record outcome",
        Written::Expired(_) => "expired fingerprints",
    };
    StoreError::Internal(format!("the writer answered with {what} unexpectedly"))
}
