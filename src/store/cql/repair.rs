//! `errata repair`: recomputes a learner's counts from `error_events`, the
//! source of truth, and corrects the counters by the difference.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::buffer;
use super::session::{for_each_row, StoreResult};
use super::Inner;
use crate::domain::ErrorKey;
use crate::store::{Backend, StoreError};

impl Inner {
    pub(super) async fn repair(&self, user_id: Option<Uuid>) -> Result<usize, StoreError> {
        let learners = match user_id {
            Some(user) => vec![user],
            None => self.learners().await?,
        };
        let mut corrected = 0;
        for user in learners {
            corrected += self.repair_learner(user).await?;
        }
        Ok(corrected)
    }

    /// Recomputes one learner's counts from the event log and corrects the
    /// counters by the difference. Returns how many counts changed.
    pub(super) async fn repair_learner(&self, user: Uuid) -> Result<usize, StoreError> {
        let token = Uuid::new_v4().to_string();
        let started = Instant::now();
        while !self.buffer.lock(user, &token).await? {
            if started.elapsed() > buffer::FLUSH_LOCK {
                return Err(StoreError::busy(
                    Backend::Redis,
                    format!("learner {user} stayed locked by a flusher"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let result = self.repair_locked(user).await;
        if let Err(e) = self.buffer.release(user, &token).await {
            tracing::warn!(error = %e, "could not release a repair lock");
        }
        result
    }

    async fn repair_locked(&self, user: Uuid) -> Result<usize, StoreError> {
        // With the lock held no flush runs, so counters and in-flight deltas
        // stand still; pending deltas may grow, so read them around the log.
        let mut attempt = 0;
        let (events, buffered) = loop {
            let before = self.buffer.buffered(user).await?;
            let events = self.event_counts(user).await?;
            let after = self.buffer.buffered(user).await?;
            attempt += 1;
            if before.pending == after.pending || attempt >= 5 {
                break (events, after);
            }
        };
        let counts = self.counts(user).await?;
        let mut keys: Vec<&ErrorKey> = events.keys().chain(counts.keys()).collect();
        keys.sort();
        keys.dedup();
        let corrections: Vec<(ErrorKey, i64)> = keys
            .into_iter()
            .filter_map(|key| {
                let buffered_delta = buffered.pending.get(key).copied().unwrap_or(0)
                    + buffered.inflight.get(key).copied().unwrap_or(0);
                let target = events.get(key).copied().unwrap_or(0) - buffered_delta;
                let diff = target - counts.get(key).copied().unwrap_or(0);
                (diff != 0).then(|| (key.clone(), diff))
            })
            .collect();
        if !corrections.is_empty() {
            tracing::info!(%user, corrections = corrections.len(), "repair: correcting counters");
            self.apply_counts(user, &corrections).await?;
        }
        Ok(corrections.len())
    }

    /// Every learner that has errors (a full scan: for `errata repair`).
    async fn learners(&self) -> StoreResult<Vec<Uuid>> {
        let mut learners = Vec::new();
        for_each_row(
            &self.session,
            &self.statements.select_learners,
            (),
            |(user,): (Uuid,)| learners.push(user),
        )
        .await?;
        Ok(learners)
    }

    /// Every event of a learner, counted by error (paged: the log may be long).
    async fn event_counts(&self, user_id: Uuid) -> StoreResult<HashMap<ErrorKey, i64>> {
        let mut counts: HashMap<ErrorKey, i64> = HashMap::new();
        for month in self.buckets(user_id).await? {
            let statement = &self.statements.select_event_keys;
            for_each_row(
                &self.session,
                statement,
                (user_id, month),
                |(category, subcategory): (String, String)| {
                    *counts
                        .entry(ErrorKey {
                            category,
                            subcategory,
                        })
                        .or_default() += 1;
                },
            )
            .await?;
        }
        Ok(counts)
    }
}
