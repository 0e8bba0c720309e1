//! Deduplication: a request's lease while it is being recorded, and its
//! "done" marker once it is counted.

use ::redis::{AsyncCommands, ErrorKind, ScriptInvocation, ServerErrorKind};
use uuid::Uuid;

use super::keys::{dirty_key, dirty_shard};
use super::scripts::{self, LuaScript};
use super::{bounded, unavailable, Buffer, Connection};
use crate::domain::ErrorKey;
use crate::store::policy::{
    LEASE, MARKER_TTL, READ_VERSION_TTL, REDIS_CALL_TIMEOUT as CALL_TIMEOUT,
};
use crate::store::{Backend, StoreError};

pub enum Lease {
    /// This request counts; events carry this time (milliseconds).
    Acquired { at_ms: i64 },
    /// Already counted.
    Done,
    /// Another attempt of the same request is being recorded right now.
    Busy,
    /// The learner is being erased.
    Erased,
}

/// What became of a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Counted: the request is done.
    Counted,
    /// The lease was lost (it expired and another attempt took it over):
    /// nothing was counted.
    Lost,
    /// A repair is reading the learner's log: nothing was counted, and the
    /// lease is still ours; try again shortly.
    Fenced,
    /// The learner is being erased: nothing was counted.
    Erased,
}

impl Buffer {
    pub async fn lease(
        &self,
        user: Uuid,
        fingerprint: Uuid,
        proposed_ms: i64,
        token: &str,
    ) -> Result<Lease, StoreError> {
        let mut conn = self.conn();
        let answer: Vec<String> = scripts::Lease {
            user,
            fingerprint,
            proposed_ms,
            lease_ms: LEASE.as_millis() as u64,
            marker_ttl_ms: MARKER_TTL.as_millis() as u64,
            token,
        }
        .invoke(&mut conn)
        .await?;
        match answer.first().map(String::as_str) {
            Some("acquired") => {
                let at_ms = answer
                    .get(1)
                    .and_then(|at| at.parse().ok())
                    .ok_or_else(|| StoreError::bug("redis: malformed lease"))?;
                Ok(Lease::Acquired { at_ms })
            }
            Some("done") => Ok(Lease::Done),
            Some("erased") => Ok(Lease::Erased),
            _ => Ok(Lease::Busy),
        }
    }

    /// Marks the learner dirty, adds the deltas and closes the lease, then
    /// marks the learner dirty again. The script adds the deltas to the
    /// week of the lease's time too: the week of the request's events.
    ///
    /// On one Redis server the three go in one pipeline, one round trip
    /// (the server runs them in order). In a Redis Cluster the dirty set
    /// lives in another slot than the learner's keys, so they are three
    /// calls, one after the other.
    pub async fn commit(
        &self,
        user: Uuid,
        fingerprint: Uuid,
        token: &str,
        deltas: &[(ErrorKey, i64)],
    ) -> Result<Commit, StoreError> {
        let mut conn = self.conn();
        let shard = dirty_key(dirty_shard(user));
        // A report without points leaves nothing to flush.
        let marks = !deltas.is_empty();
        let invocation = scripts::Commit {
            user,
            fingerprint,
            token,
            marker_ttl_ms: MARKER_TTL.as_millis() as u64,
            version_ttl_ms: READ_VERSION_TTL.as_millis() as u64,
            deltas,
        }
        .invocation();
        if !conn.is_cluster() {
            let committed = pipelined(&mut conn, &shard, user, &invocation, marks).await?;
            return forget_if_erased(&mut conn, &shard, user, commit_outcome(committed), marks)
                .await;
        }
        // Dirty first: a crash after this leaves at most a spurious entry,
        // which the flusher drops; never deltas nobody will flush.
        if marks {
            bounded(conn.sadd::<_, _, i64>(&shard, user.to_string())).await?;
        }
        let committed: i64 = bounded(invocation.invoke_async(&mut conn)).await?;
        let outcome = commit_outcome(committed);
        if outcome != Commit::Counted || !marks {
            return forget_if_erased(&mut conn, &shard, user, outcome, marks).await;
        }
        // And dirty again: a flusher that found the learner empty between
        // the first mark and the script may have removed the mark in
        // `clean` after checking for deltas that did not exist yet (the
        // shard set lives in another cluster slot, so no script can do
        // both). This mark comes after the deltas, so that flusher either
        // saw them or loses the mark to this one.
        if let Err(e) = bounded(conn.sadd::<_, _, i64>(&shard, user.to_string())).await {
            // Counted all the same; only that rare race could now leave
            // the deltas unflushed until the learner's next report.
            tracing::warn!(error = %e, %user, "could not mark a learner dirty after counting");
        }
        Ok(Commit::Counted)
    }

    pub async fn abandon(&self, user: Uuid, fingerprint: Uuid, token: &str) {
        let mut conn = self.conn();
        let abandon = scripts::Abandon {
            user,
            fingerprint,
            token,
            marker_ttl_ms: MARKER_TTL.as_millis() as u64,
        };
        if let Err(e) = abandon.invoke::<i64>(&mut conn).await {
            // The lease expires by itself and keeps the time for a takeover.
            tracing::warn!(error = %e, "could not release a request lease");
        }
    }
}

fn commit_outcome(committed: i64) -> Commit {
    match committed {
        1 => Commit::Counted,
        2 => Commit::Fenced,
        3 => Commit::Erased,
        _ => Commit::Lost,
    }
}

/// The learner is gone: nothing of theirs is left to flush, so their dirty
/// mark (this commit's own) goes too.
async fn forget_if_erased(
    conn: &mut Connection,
    shard: &str,
    user: Uuid,
    outcome: Commit,
    marks: bool,
) -> Result<Commit, StoreError> {
    if outcome == Commit::Erased && marks {
        bounded(conn.srem::<_, _, i64>(shard, user.to_string())).await?;
    }
    Ok(outcome)
}

/// The commit on one Redis server: dirty mark, script, dirty mark again,
/// in one pipeline (the marks' order and reasons as in the cluster case).
/// A server that does not know the script yet refuses it without running
/// anything: it is loaded and the pipeline sent again.
async fn pipelined(
    conn: &mut Connection,
    shard: &str,
    user: Uuid,
    invocation: &ScriptInvocation<'_>,
    marks: bool,
) -> Result<i64, StoreError> {
    let mut pipe = ::redis::pipe();
    if marks {
        pipe.sadd(shard, user.to_string()).ignore();
    }
    pipe.invoke_script(invocation);
    if marks {
        pipe.sadd(shard, user.to_string()).ignore();
    }
    for first in [true, false] {
        match tokio::time::timeout(CALL_TIMEOUT, pipe.query_async::<(i64,)>(conn)).await {
            Ok(Ok((committed,))) => return Ok(committed),
            Ok(Err(e)) if first && e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                bounded(invocation.load_async(conn)).await?;
            }
            Ok(Err(e)) => return Err(unavailable(e)),
            Err(_) => return Err(StoreError::busy(Backend::Redis, "a call timed out")),
        }
    }
    Err(StoreError::bug("redis: the commit script was not loaded"))
}
