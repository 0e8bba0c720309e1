//! Deduplication: a request's lease while it is being recorded, and its
//! "done" marker once it is counted.

use ::redis::AsyncCommands;
use uuid::Uuid;

use super::keys::{
    dirty_key, dirty_shard, fence_key, open_key, pending_key, pending_weeks_key, request_key,
    since_key, LEASE, MARKER_TTL,
};
use super::{bounded, Buffer};
use crate::domain::ErrorKey;
use crate::store::StoreError;

pub enum Lease {
    /// This request counts; events carry this time (milliseconds).
    Acquired { at_ms: i64 },
    /// Already counted.
    Done,
    /// Another attempt of the same request is being recorded right now.
    Busy,
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
        let mut invocation = self.lease.key(request_key(user, fingerprint));
        invocation
            .key(open_key(user))
            .arg(proposed_ms)
            .arg(LEASE.as_millis() as u64)
            .arg(MARKER_TTL.as_millis() as u64)
            .arg(token)
            .arg(fingerprint.to_string());
        let answer: Vec<String> = bounded(invocation.invoke_async(&mut conn)).await?;
        match answer.first().map(String::as_str) {
            Some("acquired") => {
                let at_ms = answer
                    .get(1)
                    .and_then(|at| at.parse().ok())
                    .ok_or_else(|| StoreError::bug("redis: malformed lease"))?;
                Ok(Lease::Acquired { at_ms })
            }
            Some("done") => Ok(Lease::Done),
            _ => Ok(Lease::Busy),
        }
    }

    /// Marks the learner dirty, adds the deltas and closes the lease, then
    /// marks the learner dirty again. The script adds the deltas to the
    /// week of the lease's time too: the week of the request's events.
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
        // Dirty first: a crash after this leaves at most a spurious entry,
        // which the flusher drops; never deltas nobody will flush.
        if marks {
            bounded(conn.sadd::<_, _, i64>(&shard, user.to_string())).await?;
        }
        let mut invocation = self.commit.key(request_key(user, fingerprint));
        invocation
            .key(pending_key(user))
            .key(since_key(user))
            .key(open_key(user))
            .key(fence_key(user))
            .key(pending_weeks_key(user))
            .arg(token)
            .arg(MARKER_TTL.as_millis() as u64)
            .arg(fingerprint.to_string());
        for (key, delta) in deltas {
            invocation.arg(key.encode()).arg(*delta);
        }
        let committed: i64 = bounded(invocation.invoke_async(&mut conn)).await?;
        match committed {
            1 => {}
            2 => return Ok(Commit::Fenced),
            _ => return Ok(Commit::Lost),
        }
        if !marks {
            return Ok(Commit::Counted);
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
        let mut invocation = self.abandon.key(request_key(user, fingerprint));
        invocation
            .key(open_key(user))
            .arg(token)
            .arg(MARKER_TTL.as_millis() as u64)
            .arg(fingerprint.to_string());
        if let Err(e) = bounded(invocation.invoke_async::<i64>(&mut conn)).await {
            // The lease expires by itself and keeps the time for a takeover.
            tracing::warn!(error = %e, "could not release a request lease");
        }
    }
}
