//! Deduplication: a request's lease while it is being recorded, and its
//! "done" marker once it is counted.

use ::redis::{AsyncCommands, ErrorKind, ScriptInvocation, ServerErrorKind};
use uuid::Uuid;

use super::keys::{dirty_key, dirty_shard, request_key};
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
    /// Takes (or keeps) the request's lease. With replicas required, an
    /// acquired lease is on them before the request writes its events
    /// (their time is the lease's: a failover must not hand a retry a new
    /// one, which would write the events again beside the first), and a
    /// "done" marker before the request is answered as a duplicate (the
    /// commit that wrote it may have failed its own wait).
    pub async fn lease(
        &self,
        user: Uuid,
        fingerprint: Uuid,
        proposed_ms: i64,
        token: &str,
    ) -> Result<Lease, StoreError> {
        let mut conn = self.conn();
        let call = scripts::Lease {
            user,
            fingerprint,
            proposed_ms,
            lease_ms: LEASE.as_millis() as u64,
            marker_ttl_ms: MARKER_TTL.as_millis() as u64,
            token,
        };
        let (answer, acknowledged) = call.invoke_waited::<Vec<String>>(&mut conn).await?;
        match answer.first().map(String::as_str) {
            Some("acquired") => {
                let at_ms = answer
                    .get(1)
                    .and_then(|at| at.parse().ok())
                    .ok_or_else(|| StoreError::bug("redis: malformed lease"))?;
                if let Some(acknowledged) = acknowledged {
                    if let Err(e) = conn.replicated(scripts::Lease::NAME, acknowledged) {
                        // Let the retry go ahead at once, with this time.
                        self.abandon(user, fingerprint, token).await;
                        return Err(e);
                    }
                }
                Ok(Lease::Acquired { at_ms })
            }
            Some("done") => {
                if acknowledged.is_some() {
                    done_on_replicas(&mut conn, user, fingerprint).await?;
                }
                Ok(Lease::Done)
            }
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
    ///
    /// With replicas required, `WAIT` follows the script in its call, and
    /// a counted request is acknowledged only once enough replicas have
    /// it; otherwise 503, and the retry finds the "done" marker (see
    /// [`Buffer::lease`]): nothing is counted twice. The dirty marks are
    /// not waited for: a lost one is found again by the flusher's sweep.
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
        if conn.min_replicas() > 0 {
            return self
                .commit_waited(&mut conn, &shard, user, &invocation, marks)
                .await;
        }
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

    /// The commit when replicas are required: as above, with `WAIT` in the
    /// script's call.
    async fn commit_waited(
        &self,
        conn: &mut Connection,
        shard: &str,
        user: Uuid,
        invocation: &ScriptInvocation<'_>,
        marks: bool,
    ) -> Result<Commit, StoreError> {
        let mark = |pipe: &mut ::redis::Pipeline| {
            if marks {
                pipe.sadd(shard, user.to_string()).ignore();
            }
        };
        let mut pipe = ::redis::pipe();
        let cluster = conn.is_cluster();
        if cluster {
            if marks {
                bounded(conn.sadd::<_, _, i64>(shard, user.to_string())).await?;
            }
        } else {
            mark(&mut pipe);
        }
        pipe.invoke_script(invocation);
        if !cluster {
            mark(&mut pipe);
        }
        let ((committed,), acknowledged): ((i64,), _) = conn.waited(pipe, &[invocation]).await?;
        let outcome = commit_outcome(committed);
        if outcome != Commit::Counted {
            return forget_if_erased(conn, shard, user, outcome, marks).await;
        }
        conn.replicated(scripts::Commit::NAME, acknowledged)?;
        if cluster && marks {
            // As in `commit`: the second mark, after the deltas.
            if let Err(e) = bounded(conn.sadd::<_, _, i64>(shard, user.to_string())).await {
                tracing::warn!(error = %e, %user, "could not mark a learner dirty after counting");
            }
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

/// A request found counted is answered as a duplicate only once enough
/// replicas have its "done" marker (and so its deltas, written by the same
/// script): the marker is written again as it is (`XX`: not if it has
/// gone; `KEEPTTL`: its life unchanged), which puts a write of this
/// connection after the commit's for `WAIT` to wait for, wherever that
/// commit was sent from.
async fn done_on_replicas(
    conn: &mut Connection,
    user: Uuid,
    fingerprint: Uuid,
) -> Result<(), StoreError> {
    let mut pipe = ::redis::pipe();
    pipe.cmd("SET")
        .arg(request_key(user, fingerprint))
        .arg("D")
        .arg("XX")
        .arg("KEEPTTL")
        .ignore();
    let ((), acknowledged) = conn.waited(pipe, &[]).await?;
    conn.replicated("duplicate", acknowledged)
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
