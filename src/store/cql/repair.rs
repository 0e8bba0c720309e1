//! `errata repair`: recomputes a learner's counts from `error_events`, the
//! source of truth, and corrects the counters by the difference, exactly,
//! even while the learner's requests keep coming:
//!
//! 0. leave the learner alone if they are gone or being erased (a repair
//!    must not write anything of theirs again);
//! 1. take the learner's flush lock (renewed while repair works): no
//!    flusher moves deltas from the buffer into the counters;
//! 2. raise the learner's fence: from now on no request of theirs is
//!    counted (each waits, briefly, then answers 503), so every request
//!    counted before is wholly in the log;
//! 3. read the log;
//! 4. read, at one instant, the requests leased or abandoned but not
//!    counted, and the pending and in-flight deltas, and lift the fence.
//!    The open requests' events, if any landed, are left out: they are
//!    counted when their request is. In-flight deltas left by a flusher
//!    that lost its lock become the repair's batch: whether or not that
//!    flusher's counter batch was applied, they are counted as buffered,
//!    the next flusher applies them once, and the late flusher's DONE
//!    deletes nothing;
//! 5. read the counters (still under the lock, so the in-flight deltas
//!    read in 4 are not in them yet), and add to each the difference
//!    between the log and counters + buffer, in one counter batch. A batch
//!    that gets no answer may still land: the repair then keeps the lock
//!    until it expires, so nothing (a repair run again, an erasure) reads
//!    the counters before it could.
//!
//! Afterwards counters + buffer = the counted requests' events, and every
//! later commit adds to both sides alike.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDate;
use scylla::client::session::Session;
use scylla::statement::batch::BatchType;
use uuid::Uuid;

use super::accounts::Accounts;
use super::buffer::{Buffer, Claim, Snapshot};
use super::counters::Counters;
use super::reads::Reader;
use super::rows::{event_id, sentence_slot, EventKeyRow, SentenceCell, SentenceWrite};
use super::session::{cql_error, for_each_row, from_timestamp, StoreResult};
use super::statements::{self, statements, IDEMPOTENT};
use crate::domain::{week_start, ErrorKey, WeekCount, MAX_POINTS};
use crate::store::policy::{
    CORRECTIONS_PER_BATCH, CQL_REQUEST_TIMEOUT, FINISH_MARGIN, FLUSH_LOCK, REFILL_EVENTS,
    REPAIR_LOCK_POLL, REPAIR_LOCK_WAIT, REPAIR_RENEW_EVERY,
};
use crate::store::retry::{retry_until, Poll};
use crate::store::{Backend, StoreError};

statements! {
    /// The statements of repair.
    pub struct RepairStatements {
        /// A sentence put back in its slot by repair (with the event's time
        /// as its write timestamp, as the ingest writes it).
        label_sentence: IDEMPOTENT =>
            "UPDATE error_labels \
             USING TIMESTAMP ? \
             SET sentences[?] = ? \
             WHERE user_id = ? AND category_key = ? AND subcategory_key = ?",
        select_event_keys: IDEMPOTENT =>
            "SELECT category_key, subcategory_key, event_id, occurred_at \
             FROM error_events \
             WHERE user_id = ? AND bucket = ?",
        select_learners: IDEMPOTENT =>
            "SELECT DISTINCT user_id FROM error_labels",
    }
}

/// Recomputes learners' counts from the event log and corrects the
/// counters.
pub struct Repairer {
    session: Arc<Session>,
    statements: RepairStatements,
    buffer: Arc<Buffer>,
    reader: Arc<Reader>,
    counters: Arc<Counters>,
    accounts: Arc<Accounts>,
}

/// An error in one week: what a weekly counter counts.
type WeekKey = (NaiveDate, ErrorKey);

/// A learner's event log: which error each event is and in which week, so
/// the events of requests not counted can be left out.
#[derive(Default)]
struct EventLog {
    keys: Vec<WeekKey>,
    index: HashMap<WeekKey, u32>,
    /// (event id, index into `keys`).
    events: Vec<(Uuid, u32)>,
}

impl EventLog {
    fn add(&mut self, key: WeekKey, id: Uuid) {
        let index = match self.index.get(&key) {
            Some(index) => *index,
            None => {
                let index = self.keys.len() as u32;
                self.keys.push(key.clone());
                self.index.insert(key, index);
                index
            }
        };
        self.events.push((id, index));
    }

    /// The events of each error in each week, without those of these
    /// requests.
    fn counted(mut self, open: &[Uuid]) -> HashMap<WeekKey, i64> {
        let mut counts = vec![0i64; self.keys.len()];
        for (_, index) in &self.events {
            counts[*index as usize] += 1;
        }
        if !open.is_empty() {
            self.events.sort_unstable();
            let ids: HashSet<Uuid> = open
                .iter()
                .flat_map(|f| (0..MAX_POINTS).map(move |i| event_id(*f, i)))
                .collect();
            for id in ids {
                // The same id at two times, should a request's time ever
                // have been lost: every one of its rows is left out.
                let from = self.events.partition_point(|(e, _)| *e < id);
                for (_, index) in self.events[from..].iter().take_while(|(e, _)| *e == id) {
                    counts[*index as usize] -= 1;
                }
            }
        }
        self.keys.into_iter().zip(counts).collect()
    }
}

/// How a repair under the learner's lock ended.
enum Corrected {
    /// This many counts were corrected (none: they were right).
    Counts(usize),
    /// The correction batch got no answer: it may still be applied.
    InDoubt(StoreError),
}

fn lost(user: Uuid) -> StoreError {
    StoreError::busy(
        Backend::Redis,
        format!("repair lost the lock of learner {user} (Redis unreachable?); run it again"),
    )
}

impl Repairer {
    pub async fn new(
        session: Arc<Session>,
        buffer: Arc<Buffer>,
        reader: Arc<Reader>,
        counters: Arc<Counters>,
        accounts: Arc<Accounts>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            statements: RepairStatements::prepare(&session).await?,
            session,
            buffer,
            reader,
            counters,
            accounts,
        })
    }

    /// Repairs one learner, or every learner with errors. A learner that
    /// cannot be repaired now (its flush lock held too long, a backend
    /// away) does not stop the others; the answer then says how many.
    pub async fn repair(&self, user_id: Option<Uuid>) -> Result<usize, StoreError> {
        let learners = match user_id {
            Some(user) => vec![user],
            None => self.learners().await?,
        };
        let mut corrected = 0;
        let mut failed = 0;
        let mut last_error = None;
        for user in learners {
            match self.repair_learner(user).await {
                Ok(n) => corrected += n,
                Err(e) => {
                    tracing::warn!(error = %e, %user, "repair: learner not repaired");
                    failed += 1;
                    last_error = Some(e);
                }
            }
        }
        match last_error {
            Some(StoreError::Unavailable {
                backend,
                context,
                source,
            }) if failed > 1 => Err(StoreError::Unavailable {
                backend,
                context: format!(
                    "{failed} learners not repaired (the last: {context}); run it again"
                ),
                source,
            }),
            Some(e) => Err(e),
            None => Ok(corrected),
        }
    }

    /// Recomputes one learner's counts from the event log and corrects the
    /// counters by the difference. Returns how many counts changed.
    pub async fn repair_learner(&self, user: Uuid) -> Result<usize, StoreError> {
        // A learner erased since the list was made is left alone: a
        // repair must not write anything of theirs again.
        if !self.accounts.user_exists(user).await? {
            return Ok(0);
        }
        let token = Uuid::new_v4().to_string();
        let token_ref = token.as_str();
        let locked = retry_until(REPAIR_LOCK_WAIT, REPAIR_LOCK_POLL, || async move {
            Ok(match self.buffer.claim(user, token_ref).await? {
                Claim::Taken => Poll::Ready(true),
                Claim::Erased => Poll::Ready(false),
                Claim::Busy => Poll::Pending,
            })
        })
        .await?;
        match locked {
            Some(true) => {}
            Some(false) => {
                tracing::info!(%user, "repair: the learner is being erased; left alone");
                return Ok(0);
            }
            None => {
                return Err(StoreError::busy(
                    Backend::Redis,
                    format!("learner {user} stayed locked by a flusher"),
                ))
            }
        }
        let result = self
            .renewing(user, &token, self.repair_locked(user, &token))
            .await;
        let corrected = match result {
            Ok(Corrected::InDoubt(e)) => {
                // The correction may still land: the lock is kept until
                // it expires, so a repair run again meanwhile cannot read
                // the counters without it and correct them twice.
                if let Err(renew) = self.buffer.renew(user, &token).await {
                    tracing::warn!(error = %renew, %user, "repair: could not keep its lock");
                }
                return Err(e);
            }
            result => {
                // Lifts the fence too, should the repair have failed
                // before its snapshot.
                if let Err(e) = self.buffer.release(user, &token).await {
                    tracing::warn!(error = %e, "could not release a repair lock");
                }
                match result? {
                    Corrected::Counts(n) => n,
                    Corrected::InDoubt(e) => return Err(e),
                }
            }
        };
        // The counts are right by now; a refill that fails is reported,
        // not taken for a failed repair (the next repair refills again).
        match self.refill_sentences(user).await {
            Ok(()) | Err(StoreError::UserNotFound) => {}
            Err(e) => tracing::warn!(error = %e, %user, "repair: sentences not refilled"),
        }
        // What replicas remember of the learner's rows may be out of date
        // now; a failure here is the refill's: served for at most a
        // minute more.
        if let Err(e) = self.buffer.new_read_version(user).await {
            tracing::warn!(error = %e, %user, "repair: the learner's reads keep their version");
        }
        Ok(corrected)
    }

    /// Puts the learner's latest corrected sentences back in their labels'
    /// slots from the event log (for events recorded before the labels kept
    /// them). Each is written with its event's time, as the ingest writes
    /// it, so a slot that holds a later sentence keeps it: idempotent, and
    /// safe beside requests of the learner.
    async fn refill_sentences(&self, user: Uuid) -> StoreResult<()> {
        let recent = self.reader.latest_events(user, REFILL_EVENTS).await?;
        // The newest practised sentence of each error in each slot.
        let mut newest = HashMap::new();
        for event in &recent {
            let slot = (event.key.clone(), sentence_slot(event.utterance_id));
            if newest.contains_key(&slot) {
                continue;
            }
            let cell = SentenceCell::practised(
                event.occurred_at,
                event.conversation_id,
                event.utterance_id,
                event.utterance.as_deref(),
                &event.correction,
            );
            if let Some(cell) = cell {
                newest.insert(slot, (event.occurred_at, cell));
            }
        }
        let cells: Vec<_> = newest
            .into_iter()
            .map(|((key, slot), (at, sentence))| SentenceWrite {
                // The ingest's write timestamp: the event's time.
                write_time: at.timestamp_micros(),
                slot,
                sentence,
                user_id: user,
                category_key: key.category,
                subcategory_key: key.subcategory,
            })
            .collect();
        for chunk in cells.chunks(CORRECTIONS_PER_BATCH) {
            let mut batch = statements::batch("sentences_batch", BatchType::Unlogged, IDEMPOTENT);
            for _ in chunk {
                batch.append_statement(self.statements.label_sentence.clone());
            }
            self.session.batch(&batch, chunk).await.map_err(cql_error)?;
        }
        Ok(())
    }

    /// Runs `work` while renewing the learner's lock (and fence) beside it;
    /// fails as soon as a renewal finds the lock gone.
    async fn renewing<T>(
        &self,
        user: Uuid,
        token: &str,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let renew = async {
            loop {
                tokio::time::sleep(REPAIR_RENEW_EVERY).await;
                match self.buffer.renew(user, token).await {
                    Ok(true) => {}
                    Ok(false) => return lost(user),
                    // The checks in the snapshot and before the correction
                    // decide; a renewal may well work next time.
                    Err(e) => tracing::warn!(error = %e, %user, "repair: cannot renew its lock"),
                }
            }
        };
        tokio::select! {
            result = work => result,
            e = renew => Err(e),
        }
    }

    async fn repair_locked(&self, user: Uuid, token: &str) -> Result<Corrected, StoreError> {
        if !self.buffer.fence(user, token).await? {
            return Err(lost(user));
        }
        let log = self.event_log(user).await?;
        let Some(Snapshot {
            open,
            pending,
            inflight,
            weeks: buffered_weeks,
        }) = self.buffer.snapshot(user, token).await?
        else {
            return Err(lost(user));
        };
        let (counts, durable_weeks) =
            tokio::try_join!(self.reader.counts(user), self.all_week_counts(user))?;
        let weekly_events = log.counted(&open);
        let mut events: HashMap<ErrorKey, i64> = HashMap::new();
        for ((_, key), n) in &weekly_events {
            *events.entry(key.clone()).or_default() += n;
        }
        let mut buffered = pending;
        for (key, n) in inflight {
            *buffered.entry(key).or_default() += n;
        }
        let corrections = differences(&events, &buffered, &counts);
        let weekly = differences(
            &weekly_events,
            &by_week(buffered_weeks),
            &by_week(durable_weeks),
        );
        if corrections.is_empty() && weekly.is_empty() {
            return Ok(Corrected::Counts(0));
        }
        // Still ours, so no flusher moved the in-flight deltas into the
        // counters between the snapshot and the read of the counters.
        let renewed = Instant::now();
        if !self.buffer.renew(user, token).await? {
            return Err(lost(user));
        }
        tracing::info!(%user, corrections = corrections.len(), weekly = weekly.len(),
            "repair: correcting counters");
        let weekly: Vec<WeekCount> = weekly
            .into_iter()
            .map(|((week_start, key), count)| WeekCount {
                week_start,
                key,
                count,
            })
            .collect();
        // One counter batch, whatever its size: it touches the learner's
        // partition alone, so it is applied whole or not at all, and a
        // repair run again after a failure never finds half a correction.
        // Not sent by a repair that stalled past its lock.
        if renewed.elapsed() + CQL_REQUEST_TIMEOUT + FINISH_MARGIN >= FLUSH_LOCK {
            return Err(lost(user));
        }
        match self.counters.apply(user, &corrections, &weekly).await {
            Ok(()) => Ok(Corrected::Counts(corrections.len() + weekly.len())),
            // No answer (a timeout, a broken connection): it may be
            // applied yet.
            Err(e @ StoreError::Unavailable { .. }) => Ok(Corrected::InDoubt(e)),
            Err(e) => Err(e),
        }
    }

    /// Every weekly counter of a learner (paged).
    async fn all_week_counts(&self, user: Uuid) -> StoreResult<Vec<WeekCount>> {
        self.reader.week_counts_since(user, NaiveDate::MIN).await
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

    /// Every event of a learner (paged: the log may be long).
    async fn event_log(&self, user_id: Uuid) -> StoreResult<EventLog> {
        let mut log = EventLog::default();
        for month in self.reader.buckets(user_id).await? {
            for_each_row(
                &self.session,
                &self.statements.select_event_keys,
                (user_id, month),
                |row: EventKeyRow| {
                    let week = week_start(from_timestamp(row.occurred_at));
                    let key = ErrorKey {
                        category: row.category_key,
                        subcategory: row.subcategory_key,
                    };
                    log.add((week, key), row.event_id);
                },
            )
            .await?;
        }
        Ok(log)
    }
}

/// What each count must change by so that counter + buffered = events:
/// the keys whose difference is not zero, in key order.
fn differences<K: Clone + Ord + std::hash::Hash>(
    events: &HashMap<K, i64>,
    buffered: &HashMap<K, i64>,
    counts: &HashMap<K, i64>,
) -> Vec<(K, i64)> {
    let mut keys: Vec<&K> = events.keys().chain(counts.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| {
            let target =
                events.get(key).copied().unwrap_or(0) - buffered.get(key).copied().unwrap_or(0);
            let diff = target - counts.get(key).copied().unwrap_or(0);
            (diff != 0).then(|| (key.clone(), diff))
        })
        .collect()
}

fn by_week(counts: Vec<WeekCount>) -> HashMap<WeekKey, i64> {
    let mut map = HashMap::new();
    for c in counts {
        *map.entry((c.week_start, c.key)).or_default() += c.count;
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> WeekKey {
        (
            NaiveDate::from_ymd_opt(2026, 11, 30).unwrap(),
            ErrorKey {
                category: "grammar".into(),
                subcategory: s.into(),
            },
        )
    }

    #[test]
    fn the_events_of_open_requests_are_left_out() {
        let (counted, open, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut log = EventLog::default();
        log.add(key("articles"), event_id(counted, 0));
        log.add(key("tenses"), event_id(counted, 1));
        // Only part of the open request's events landed.
        log.add(key("articles"), event_id(open, 0));
        log.add(key("articles"), event_id(open, MAX_POINTS - 1));
        let counts = log.counted(&[open, other]);
        assert_eq!(counts.get(&key("articles")), Some(&1));
        assert_eq!(counts.get(&key("tenses")), Some(&1));
    }

    #[test]
    fn differences_bring_counter_plus_buffer_to_the_log() {
        let events: HashMap<&str, i64> = [("a", 5), ("b", 2)].into();
        let buffered: HashMap<&str, i64> = [("a", 1)].into();
        let counts: HashMap<&str, i64> = [("a", 6), ("c", 3)].into();
        assert_eq!(
            differences(&events, &buffered, &counts),
            [("a", -2), ("b", 2), ("c", -3)]
        );
    }
}
