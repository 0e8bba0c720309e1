//! The flusher: a task in every process that moves a dirty learner's
//! pending deltas aside, applies them as one counter batch and forgets them
//! only after the batch succeeded. Replicas cooperate through the flush
//! locks in Redis; there is no leader.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::BatchType;
use scylla::value::Counter;
use uuid::Uuid;

use super::buffer::{self, Take, DIRTY_SHARDS};
use super::session::{cql_error, date};
use super::statements::{self, ONCE};
use super::Inner;
use crate::domain::{ErrorKey, WeekCount};
use crate::store::closer::Closer;
use crate::store::{Backend, StoreError};

/// Learners one flusher tick takes from each dirty shard.
const LEARNERS_PER_TICK: usize = 64;
/// Learners a flusher flushes at once (each is a few Redis and CQL round
/// trips; one at a time, a replica flushed only ~100 learners a second).
const FLUSH_CONCURRENCY: usize = 16;
/// A flusher stops retrying to finish a flush this long before its lock
/// would expire if no renewal had reached Redis (for the latency of the
/// last call and the clocks' drift).
const FINISH_MARGIN: Duration = Duration::from_secs(2);
/// How often a flusher looks for deltas whose learner lost its dirty mark.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How long `flush` keeps draining before it gives up.
const FLUSH_DEADLINE: Duration = Duration::from_secs(60);

pub(super) enum Flushed {
    /// Deltas were applied.
    Yes,
    /// Nothing was buffered.
    Nothing,
    /// Another flusher owns the learner now.
    Busy,
}

/// The background flusher: every interval, takes some learners of every
/// dirty shard and flushes them. Replicas cooperate through the flush locks.
pub(super) async fn run(inner: Arc<Inner>, interval: Duration, closer: Closer) {
    let mut last_sweep = Instant::now();
    loop {
        tokio::select! {
            () = closer.closed() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = Instant::now();
            match inner.buffer.sweep().await {
                Ok(n) => tracing::debug!(learners = n, "flusher: swept for unmarked deltas"),
                Err(e) => tracing::warn!(error = %e, "flusher: cannot sweep for unmarked deltas"),
            }
        }
        match inner.buffer.dirty_learners().await {
            Ok(n) => metrics::gauge!("errata_buffer_pending_learners").set(n as f64),
            Err(e) => tracing::warn!(error = %e, "flusher: cannot count dirty learners"),
        }
        for shard in 0..DIRTY_SHARDS {
            let learners = match inner.buffer.dirty(shard, Some(LEARNERS_PER_TICK)).await {
                Ok(learners) => learners,
                Err(e) => {
                    tracing::warn!(error = %e, "flusher: cannot read dirty learners");
                    break;
                }
            };
            futures_util::stream::iter(learners)
                .for_each_concurrent(FLUSH_CONCURRENCY, |user| {
                    let inner = &inner;
                    async move {
                        if let Err(e) = inner.flush_learner(user).await {
                            tracing::warn!(error = %e, %user, "flusher: flush failed, will retry");
                        }
                    }
                })
                .await;
        }
    }
}

impl Inner {
    /// Adds the deltas to the learner's counters, all-time and weekly, in
    /// one counter batch (both tables share the learner's partition key).
    pub(super) async fn apply_counts(
        &self,
        user: Uuid,
        deltas: &[(ErrorKey, i64)],
        weeks: &[WeekCount],
    ) -> Result<(), StoreError> {
        type Values<'a> = Vec<Box<dyn SerializeRow + Send + Sync + 'a>>;
        let mut batch = statements::batch("counter_batch", BatchType::Counter, ONCE);
        let mut values: Values<'_> = Vec::new();
        for (key, delta) in deltas.iter().filter(|(_, delta)| *delta != 0) {
            batch.append_statement(self.statements.add_count.clone());
            values.push(Box::new((
                Counter(*delta),
                user,
                key.category.as_str(),
                key.subcategory.as_str(),
            )));
        }
        for week in weeks.iter().filter(|w| w.count != 0) {
            batch.append_statement(self.statements.add_week_count.clone());
            values.push(Box::new((
                Counter(week.count),
                user,
                date(week.week_start),
                week.key.category.as_str(),
                week.key.subcategory.as_str(),
            )));
        }
        if values.is_empty() {
            return Ok(());
        }
        self.session
            .batch(&batch, values)
            .await
            .map_err(cql_error)?;
        Ok(())
    }

    /// Applies every buffered delta of one learner.
    pub(super) async fn flush_learner(&self, user: Uuid) -> Result<Flushed, StoreError> {
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
                    if let Err(e) = self.apply_counts(user, &deltas, &weeks).await {
                        metrics::counter!("errata_flush_failures_total").increment(1);
                        if let Err(release) = self.buffer.release(user, &token).await {
                            tracing::warn!(error = %release, "could not release a flush lock");
                        }
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
    pub(super) async fn finish_flush(
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
            if held_since.elapsed() + FINISH_MARGIN >= buffer::FLUSH_LOCK {
                return Err(error);
            }
            tracing::warn!(error = %error, %user, "flusher: cannot finish a flush yet, retrying");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(super) async fn drain(&self) -> Result<usize, StoreError> {
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
            if started.elapsed() > FLUSH_DEADLINE {
                return Err(StoreError::busy(
                    Backend::Redis,
                    "flush: learners kept arriving or stayed locked",
                ));
            }
            if busy {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
