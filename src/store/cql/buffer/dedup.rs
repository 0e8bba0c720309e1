//! Deduplication: a request's lease while it is being recorded, and its
//! "done" marker once it is counted.

use ::redis::AsyncCommands;
use uuid::Uuid;

use super::keys::{dirty_key, dirty_shard, pending_key, request_key, since_key, LEASE, MARKER_TTL};
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
            .arg(proposed_ms)
            .arg(LEASE.as_millis() as u64)
            .arg(MARKER_TTL.as_millis() as u64)
            .arg(token);
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
    /// marks the learner dirty again. Returns false when the lease was lost
    /// (nothing was counted).
    pub async fn commit(
        &self,
        user: Uuid,
        fingerprint: Uuid,
        token: &str,
        deltas: &[(ErrorKey, i64)],
    ) -> Result<bool, StoreError> {
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
            .arg(token)
            .arg(MARKER_TTL.as_millis() as u64);
        for (key, delta) in deltas {
            invocation.arg(key.encode()).arg(*delta);
        }
        let committed: i64 = bounded(invocation.invoke_async(&mut conn)).await?;
        if committed != 1 {
            return Ok(false);
        }
        if !marks {
            return Ok(true);
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
        Ok(true)
    }

    pub async fn abandon(&self, user: Uuid, fingerprint: Uuid, token: &str) {
        let mut conn = self.conn();
        let mut invocation = self.abandon.key(request_key(user, fingerprint));
        invocation.arg(token).arg(MARKER_TTL.as_millis() as u64);
        if let Err(e) = bounded(invocation.invoke_async::<i64>(&mut conn)).await {
            // The lease expires by itself and keeps the time for a takeover.
            tracing::warn!(error = %e, "could not release a request lease");
        }
    }
}
