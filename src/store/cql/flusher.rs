//! The flusher: a task in every process that moves a dirty learner's
//! pending deltas aside, applies them as one counter batch and forgets them
//! only after the batch succeeded. Replicas cooperate through the flush
//! locks in Redis; there is no leader.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use uuid::Uuid;

use super::buffer::{Buffer, Take, DIRTY_SHARDS};
use super::counters::Counters;
use crate::store::closer::Closer;
use crate::store::policy::{
    CQL_REQUEST_TIMEOUT, DRAIN_DEADLINE, DRAIN_POLL, FINISH_MARGIN, FINISH_RETRY,
    FLUSH_CONCURRENCY, FLUSH_LOCK, LEARNERS_PER_TICK, SWEEP_EVERY,
};
use crate::store::task::OwnedTask;
use crate::store::{Backend, StoreError};

pub enum Flushed {
    /// Deltas were applied.
    Yes,
    /// Nothing was buffered.
    Nothing,
    /// Another flusher owns the learner now.
    Busy,
}

/// Moves buffered deltas into the counters, learner by learner.
pub struct Flusher {
    buffer: Arc<Buffer>,
    counters: Arc<Counters>,
}

impl Flusher {
    pub fn new(buffer: Arc<Buffer>, counters: Arc<Counters>) -> Self {
        Self { buffer, counters }
    }

    /// The flusher in the background of a serving process: every
    /// `interval`, some learners of every dirty shard. Replicas cooperate
    /// through the flush locks.
    pub fn start(self: Arc<Self>, interval: Duration) -> OwnedTask {
        OwnedTask::spawn("flusher", move |closer| self.run(interval, closer))
    }

    async fn run(self: Arc<Self>, interval: Duration, closer: Closer) {
        let mut last_sweep = Instant::now();
        loop {
            tokio::select! {
                () = closer.closed() => return,
                () = tokio::time::sleep(interval) => {}
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = Instant::now();
                match self.buffer.sweep().await {
                    Ok(n) => tracing::debug!(learners = n, "flusher: swept for unmarked deltas"),
                    Err(e) => {
                        tracing::warn!(error = %e, "flusher: cannot sweep for unmarked deltas")
                    }
                }
            }
            self.tick().await;
        }
    }

    /// One round: some learners of every dirty shard.
    async fn tick(&self) {
        match self.buffer.dirty_learners().await {
            Ok(n) => metrics::gauge!("errata_buffer_pending_learners").set(n as f64),
            Err(e) => tracing::warn!(error = %e, "flusher: cannot count dirty learners"),
        }
        for shard in 0..DIRTY_SHARDS {
            let learners = match self.buffer.dirty(shard, Some(LEARNERS_PER_TICK)).await {
                Ok(learners) => learners,
                Err(e) => {
                    tracing::warn!(error = %e, "flusher: cannot read dirty learners");
                    break;
                }
            };
            futures_util::stream::iter(learners)
                .for_each_concurrent(FLUSH_CONCURRENCY, |user| async move {
                    if let Err(e) = self.flush_learner(user).await {
                        tracing::warn!(error = %e, %user, "flusher: flush failed, will retry");
                    }
                })
                .await;
        }
    }

    /// Applies every buffered delta of one learner.
    pub async fn flush_learner(&self, user: Uuid) -> Result<Flushed, StoreError> {
        let token = Uuid::new_v4().to_string();
        let mut flushed = Flushed::Nothing;
        loop {
            // The lock the take sets lives FLUSH_LOCK from some instant
            // after this one.
            let locked_at = Instant::now();
            match self.buffer.take(user, &token).await? {
                Take::Busy => return Ok(Flushed::Busy),
                Take::Empty => {
                    self.buffer.clean(user).await?;
                    return Ok(flushed);
                }
                Take::Deltas {
                    deltas,
                    weeks,
                    replay,
                    age,
                } => {
                    if replay {
                        tracing::warn!(%user, "re-applying in-flight deltas of an interrupted flush");
                    } else {
                        metrics::gauge!("errata_flush_lag_seconds").set(age.as_secs_f64());
                        metrics::histogram!("errata_flush_lag_distribution_seconds")
                            .record(age.as_secs_f64());
                    }
                    // A flusher that stalled since its take (a pause of the
                    // process) may have lost the lock to a repair or an
                    // erasure: it sends no batch that could land after the
                    // lock is gone, and leaves the deltas to the next holder.
                    if !lock_outlives_batch(locked_at) {
                        tracing::warn!(%user, "flusher: stalled past its lock; not applying");
                        return Ok(Flushed::Busy);
                    }
                    if let Err(e) = self.counters.apply(user, &deltas, &weeks).await {
                        metrics::counter!("errata_flush_failures_total").increment(1);
                        self.after_failed_batch(user, &token, &e).await;
                        return Err(e);
                    }
                    metrics::counter!("errata_flush_batches_total").increment(1);
                    metrics::histogram!("errata_flush_batch_size")
                        .record((deltas.len() + weeks.len()) as f64);
                    if !self.finish_flush(user, &token, locked_at).await? {
                        tracing::warn!(
                            %user,
                            "flush lock lost after a counter batch: its deltas may be applied again"
                        );
                    }
                    flushed = Flushed::Yes;
                }
            }
        }
    }

    /// After a counter batch failed: a batch refused by the server is
    /// not applied, so the learner is let go for a retry; one whose
    /// answer did not come (a timeout, a broken connection) may still be
    /// applied later, so the lock is kept (renewed) until it expires, and
    /// no repair or erasure acts on the learner before the batch could
    /// land.
    async fn after_failed_batch(&self, user: Uuid, token: &str, error: &StoreError) {
        let outcome = if matches!(error, StoreError::Unavailable { .. }) {
            self.buffer.renew(user, token).await.map(|_| ())
        } else {
            self.buffer.release(user, token).await
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, %user, "flusher: could not keep or release a flush lock");
        }
    }

    /// Deletes the in-flight deltas after their batch was applied (DONE).
    ///
    /// Until DONE, the next flusher to take the learner applies the batch
    /// again, so DONE is retried while Redis is away, and the lock renewed
    /// whenever Redis answers, so no other flusher can take the learner
    /// meanwhile. DONE itself is safe however late (it deletes only this
    /// flusher's batch). The bound: a batch already applied is applied
    /// again only if this flusher reaches Redis neither for DONE nor for a
    /// renewal during a whole `FLUSH_LOCK` (30 s) since its lock was last
    /// confirmed (the take or a renewal), or if it dies or stalls that long
    /// between its batch and DONE. Returns false when the lock or the
    /// batch had gone to another flusher (or a DONE that timed out had in
    /// fact been applied).
    async fn finish_flush(
        &self,
        user: Uuid,
        token: &str,
        locked_at: Instant,
    ) -> Result<bool, StoreError> {
        let mut held_since = locked_at;
        loop {
            let error = match self.buffer.done(user, token).await {
                Ok(done) => return Ok(done),
                Err(e) => e,
            };
            // When the lock is not ours any more (another flusher has it, or
            // it expired and nobody took it yet) the next DONE says which.
            let renewing = Instant::now();
            if let Ok(true) = self.buffer.renew(user, token).await {
                held_since = renewing;
            }
            if held_since.elapsed() + FINISH_MARGIN >= FLUSH_LOCK {
                return Err(error);
            }
            tracing::warn!(error = %error, %user, "flusher: cannot finish a flush yet, retrying");
            tokio::time::sleep(FINISH_RETRY).await;
        }
    }

    pub async fn drain(&self) -> Result<usize, StoreError> {
        let started = Instant::now();
        // A drain must leave nothing behind, marked or not.
        self.buffer.sweep().await?;
        let mut flushed = 0;
        loop {
            let mut any = false;
            let mut busy = false;
            for shard in 0..DIRTY_SHARDS {
                for user in self.buffer.dirty(shard, None).await? {
                    any = true;
                    match self.flush_learner(user).await? {
                        Flushed::Yes => flushed += 1,
                        Flushed::Busy => busy = true,
                        Flushed::Nothing => {}
                    }
                }
            }
            if !any {
                return Ok(flushed);
            }
            if started.elapsed() > DRAIN_DEADLINE {
                return Err(StoreError::busy(
                    Backend::Redis,
                    "flush: learners kept arriving or stayed locked",
                ));
            }
            if busy {
                tokio::time::sleep(DRAIN_POLL).await;
            }
        }
    }
}

/// Whether a counter batch sent now, under a lock taken at `locked_at`,
/// ends (or is given up by the driver) before the lock could lapse, with
/// the margin a flusher keeps to finish.
fn lock_outlives_batch(locked_at: Instant) -> bool {
    locked_at.elapsed() + CQL_REQUEST_TIMEOUT + FINISH_MARGIN < FLUSH_LOCK
}
