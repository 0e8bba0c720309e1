//! Forgetting old request fingerprints in the background, through the
//! writer, a chunk at a time.

use std::time::Duration;

use super::queue::{WeakWriteQueue, WriteRequest};
use super::writes::{Expiry, FingerprintCursor};
use crate::store::closer::Closer;
use crate::store::{now, DEDUP_WINDOW};

/// Pause between two chunks of a fingerprint pass, and between two passes.
const EXPIRE_CHUNK_EVERY: Duration = Duration::from_millis(200);
const EXPIRE_PASS_EVERY: Duration = Duration::from_secs(60);

/// Forgets old request fingerprints in the background, so that
/// `ingest_requests` holds about a day of requests rather than every request
/// ever made: passes over the table in key order, a chunk at a time through
/// the writer, one pass a minute. It holds the writer's queue weakly, so it
/// never keeps the writer alive.
pub(super) struct Expirer {
    pub queue: WeakWriteQueue,
    /// The expirer stops when this closes.
    pub closer: Closer,
}

impl Expirer {
    pub fn run(self) {
        let Self { queue, closer } = self;
        let mut after: Option<FingerprintCursor> = None;
        loop {
            let pause = if after.is_some() {
                EXPIRE_CHUNK_EVERY
            } else {
                EXPIRE_PASS_EVERY
            };
            if closer.wait_timeout(pause) {
                return;
            }
            let expiry = Expiry {
                after: after.take(),
                before: now() - chrono::Duration::from_std(DEDUP_WINDOW).unwrap_or_default(),
            };
            let Some(answer) =
                queue.blocking_send(|reply| WriteRequest::ExpireFingerprints(expiry, reply))
            else {
                return;
            };
            match answer {
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
}
