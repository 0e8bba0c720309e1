//! Recording a report: check its owners, lease the request's fingerprint
//! in Redis, append its events (idempotent writes), then count it in Redis
//! and turn the lease into a "done" marker in one script; only then is it
//! acknowledged. While a repair reads the learner's log the count waits for
//! it (briefly, then 503).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use scylla::client::session::Session;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use uuid::Uuid;

use super::accounts::Accounts;
use super::buffer::{Buffer, Commit, Lease};
use super::rows::{
    bucket, sentence_slot, spelling_write_time, EventRow, ReviewRow, SeenSentenceWrite, SeenWrite,
    SentenceCell, SpellingWrite, INSERT_EVENT, INSERT_REVIEW,
};
use super::session::{cql_error, timestamp};
use super::statements::{self, statements, IDEMPOTENT};
use super::written::Written;
use crate::domain::{ErrorKey, ErrorPoint, Grade, ReviewKind};
use crate::store::policy::{BATCH_BYTES, EVENTS_PER_BATCH, FENCE_WAIT, LEASE_WAIT, POLL};
use crate::store::retry::{retry_until, Poll};
use crate::store::{Backend, ErrorReport, PointTally, RecordOutcome, StoreError, StoredReview};

/// The values of a batch's statements.
type Rows = Vec<Box<dyn SerializeRow + Send + Sync>>;

/// What a statement adds to a batch besides its text values (ids,
/// timestamps, framing), roughly.
const WRITE_OVERHEAD: usize = 96;

statements! {
    /// The statements of recording.
    pub struct RecordStatements {
        insert_event: IDEMPOTENT => INSERT_EVENT,
        insert_bucket: IDEMPOTENT =>
            "INSERT INTO error_buckets (user_id, bucket) VALUES (?, ?)",
        label_spelling: IDEMPOTENT =>
            "UPDATE error_labels \
             USING TIMESTAMP ? \
             SET category = ?, subcategory = ? \
             WHERE user_id = ? AND category_key = ? AND subcategory_key = ?",
        label_seen: IDEMPOTENT =>
            "UPDATE error_labels \
             USING TIMESTAMP ? \
             SET last_seen = ? \
             WHERE user_id = ? AND category_key = ? AND subcategory_key = ?",
        /// Each error of the report is a lapse of the learner's memory of
        /// it, in the review log (the fold keeps one per local day).
        insert_lapse: IDEMPOTENT => INSERT_REVIEW,
        insert_answer_bucket: IDEMPOTENT =>
            "INSERT INTO answer_buckets (user_id, bucket) VALUES (?, ?)",
        /// `label_seen` for a point whose sentence and correction are known:
        /// the sentence goes in its slot, with the same write timestamp.
        label_seen_sentence: IDEMPOTENT =>
            "UPDATE error_labels \
             USING TIMESTAMP ? \
             SET last_seen = ?, sentences[?] = ? \
             WHERE user_id = ? AND category_key = ? AND subcategory_key = ?",
    }
}

/// Records reports: the events, the labels and the buffered counts.
pub struct Recorder {
    session: Arc<Session>,
    statements: RecordStatements,
    buffer: Arc<Buffer>,
    accounts: Arc<Accounts>,
    written: Written,
}

impl Recorder {
    pub async fn new(
        session: Arc<Session>,
        buffer: Arc<Buffer>,
        accounts: Arc<Accounts>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            statements: RecordStatements::prepare(&session).await?,
            session,
            buffer,
            accounts,
            written: Written::new(),
        })
    }

    pub async fn record(&self, report: ErrorReport) -> Result<RecordOutcome, StoreError> {
        let inner = self;
        let snippet = inner.accounts.owned(&report).await?;

        let token = Uuid::new_v4().to_string();
        // Another attempt of the same request may hold the lease: wait for
        // it to count (then this is a duplicate) or to let go.
        let (proposed, token_ref) = (report.received_at.timestamp_millis(), token.as_str());
        let leased = retry_until(LEASE_WAIT, POLL, || async move {
            let lease = inner
                .buffer
                .lease(report.user_id, report.fingerprint, proposed, token_ref)
                .await?;
            Ok(match lease {
                Lease::Acquired { at_ms } => Poll::Ready(Some(at_ms)),
                Lease::Done => Poll::Ready(None),
                Lease::Erased => return Err(inner.accounts.being_erased(report.user_id)),
                Lease::Busy => Poll::Pending,
            })
        })
        .await?;
        let at_ms = match leased {
            Some(Some(at_ms)) => at_ms,
            Some(None) => {
                return Ok(RecordOutcome {
                    recorded: 0,
                    duplicate: true,
                })
            }
            None => {
                return Err(StoreError::busy(
                    Backend::Redis,
                    "the same request is still being recorded",
                ))
            }
        };
        let at = DateTime::from_timestamp_millis(at_ms).unwrap_or(report.received_at);
        if let Err(e) = inner.write_events(&report, at, snippet.as_deref()).await {
            inner
                .buffer
                .abandon(report.user_id, report.fingerprint, &token)
                .await;
            return Err(e);
        }
        inner.count(&report, &token).await?;
        Ok(RecordOutcome {
            recorded: report.points.len(),
            duplicate: false,
        })
    }

    /// Counts a leased report whose events are written, waiting (briefly)
    /// for a repair of the learner to finish reading its log. Not counted,
    /// the lease is abandoned, keeping its time, so the retry goes ahead at
    /// once (after a commit that did count but whose answer was lost, the
    /// abandon finds the "done" marker and changes nothing). The commit
    /// counts the deltas in the week of the lease's time too: the events'
    /// time, the first attempt's, whenever this attempt runs and whenever
    /// it is flushed.
    async fn count(&self, report: &ErrorReport, token: &str) -> Result<(), StoreError> {
        let deltas = report.deltas();
        let deltas = &deltas;
        let committed = retry_until(FENCE_WAIT, POLL, || async move {
            let commit = self
                .buffer
                .commit(report.user_id, report.fingerprint, token, deltas)
                .await?;
            Ok(match commit {
                Commit::Fenced => Poll::Pending,
                done => Poll::Ready(done),
            })
        })
        .await;
        let failure = match committed {
            Ok(Some(Commit::Counted)) => return Ok(()),
            // The events just written are hidden by the erasure's
            // tombstones.
            Ok(Some(Commit::Erased)) => {
                return Err(self.accounts.being_erased(report.user_id));
            }
            Ok(Some(Commit::Lost)) => {
                return Err(StoreError::busy(
                    Backend::Redis,
                    "the request's lease expired before it was counted; retry it",
                ))
            }
            Ok(Some(Commit::Fenced) | None) => StoreError::busy(
                Backend::Redis,
                "the learner's counts are being repaired; retry",
            ),
            Err(e) => e,
        };
        self.buffer
            .abandon(report.user_id, report.fingerprint, token)
            .await;
        Err(failure)
    }

    /// Writes the events, labels and bucket of a leased report (idempotent:
    /// a takeover rewrites the same rows). Usually one unlogged batch; see
    /// [`packed`].
    async fn write_events(
        &self,
        report: &ErrorReport,
        at: DateTime<Utc>,
        snippet: Option<&str>,
    ) -> Result<(), StoreError> {
        // Each point's key, worked out once for all the writes.
        let keys: Vec<ErrorKey> = report.points.iter().map(ErrorPoint::key).collect();
        let mut writes = self.label_writes(report, &keys, at, snippet);
        let spelled = keys.clone();
        let events = self.event_writes(report, keys, at, snippet);
        writes.extend(events);
        for (batch, values) in packed(writes) {
            self.session
                .batch(&batch, values)
                .await
                .map_err(cql_error)?;
        }
        self.written
            .wrote(report.user_id, bucket(at), at.timestamp_micros(), &spelled);
        Ok(())
    }

    /// The report's writes to the learner's partition: the event bucket,
    /// the errors' spellings (the earliest write wins) and last-seen times,
    /// and for each error the sentence it was found in when its correction
    /// is known and short enough to practise (see [`sentence_slot`]). The
    /// bucket rows and spellings this replica knows it wrote already are
    /// left out ([`Written`]).
    fn label_writes(
        &self,
        report: &ErrorReport,
        keys: &[ErrorKey],
        at: DateTime<Utc>,
        snippet: Option<&str>,
    ) -> Vec<Write> {
        let s = &self.statements;
        let (user, at_micros) = (report.user_id, at.timestamp_micros());
        let mut writes = Vec::new();
        if !self.written.has_bucket(user, bucket(at)) {
            writes.push(Write::new(
                Partition::Learner,
                &s.insert_bucket,
                (user, bucket(at)),
                0,
            ));
            writes.push(Write::new(
                Partition::Learner,
                &s.insert_answer_bucket,
                (user, bucket(at)),
                0,
            ));
        }
        let mut seen = Vec::new();
        let slot = sentence_slot(report.utterance_id);
        for PointTally {
            key, first: point, ..
        } in report.tally()
        {
            let key_bytes = key.category.len() + key.subcategory.len();
            if !self.written.spelling_loses(user, &key, at_micros) {
                let spelling = SpellingWrite {
                    write_time: spelling_write_time(at),
                    category: point.category.as_str().to_owned(),
                    subcategory: point.subcategory.as_str().to_owned(),
                    user_id: user,
                    category_key: key.category.clone(),
                    subcategory_key: key.subcategory.clone(),
                };
                let bytes = spelling.category.len() + spelling.subcategory.len() + key_bytes;
                writes.push(Write::new(
                    Partition::Learner,
                    &s.label_spelling,
                    spelling,
                    bytes,
                ));
            }
            // The first of the error's points whose sentence can be
            // practised.
            let sentence = report
                .points
                .iter()
                .zip(keys)
                .filter(|(_, k)| **k == key)
                .find_map(|(p, _)| {
                    SentenceCell::practised(
                        at,
                        report.conversation_id,
                        report.utterance_id,
                        snippet,
                        &p.correction,
                    )
                });
            match sentence {
                Some(sentence) => {
                    let bytes = key_bytes + sentence.text_bytes();
                    let write = SeenSentenceWrite {
                        write_time: at_micros,
                        last_seen: timestamp(at),
                        slot,
                        sentence,
                        user_id: user,
                        category_key: key.category,
                        subcategory_key: key.subcategory,
                    };
                    seen.push(Write::new(
                        Partition::Learner,
                        &s.label_seen_sentence,
                        write,
                        bytes,
                    ));
                }
                None => {
                    let write = SeenWrite {
                        write_time: at_micros,
                        last_seen: timestamp(at),
                        user_id: user,
                        category_key: key.category,
                        subcategory_key: key.subcategory,
                    };
                    seen.push(Write::new(
                        Partition::Learner,
                        &s.label_seen,
                        write,
                        key_bytes,
                    ));
                }
            }
        }
        writes.extend(seen);
        writes
    }

    /// The report's points as events: each one's id follows from the
    /// request's fingerprint and its position, so a retry rewrites them.
    fn event_writes(
        &self,
        report: &ErrorReport,
        keys: Vec<ErrorKey>,
        at: DateTime<Utc>,
        snippet: Option<&str>,
    ) -> Vec<Write> {
        let snippet = snippet.map(str::to_owned);
        // The lapses share the month's partition key with the events (one
        // mutation); their id follows from the request, so a retry
        // rewrites them, at the same time.
        let lapses = report.tally().into_iter().map(|tally| {
            let lapse = StoredReview {
                review_id: Uuid::new_v5(
                    &report.fingerprint,
                    format!("lapse/{}", tally.key.encode()).as_bytes(),
                ),
                kind: ReviewKind::Lapse,
                exercise_id: None,
                category: tally.first.category.as_str().to_owned(),
                subcategory: tally.first.subcategory.as_str().to_owned(),
                key: tally.key,
                grade: Grade::Again,
                correct: None,
                at,
            };
            let row = ReviewRow::new(report.user_id, &lapse);
            let bytes = 2 * (row.category_key.len() + row.subcategory_key.len());
            Write::new(Partition::Events, &self.statements.insert_lapse, row, bytes)
        });
        let events: Vec<Write> = report
            .points
            .iter()
            .zip(keys)
            .enumerate()
            .map(|(index, (point, key))| {
                let row = EventRow::new(report, index, point, key, at, snippet.clone());
                let bytes = row.text_bytes();
                Write::new(Partition::Events, &self.statements.insert_event, row, bytes)
            })
            .collect();
        events.into_iter().chain(lapses).collect()
    }
}

/// Which partition of the learner a write goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Partition {
    /// `error_buckets` and `error_labels` (one partition key: one mutation).
    Learner,
    /// The month's `error_events`.
    Events,
}

/// One statement of a report's writes, with about how many bytes of
/// values it carries.
struct Write {
    partition: Partition,
    statement: PreparedStatement,
    values: Box<dyn SerializeRow + Send + Sync>,
    bytes: usize,
}

impl Write {
    fn new(
        partition: Partition,
        statement: &PreparedStatement,
        values: impl SerializeRow + Send + Sync + 'static,
        bytes: usize,
    ) -> Self {
        Self {
            partition,
            statement: statement.clone(),
            values: Box::new(values),
            bytes: bytes + WRITE_OVERHEAD,
        }
    }
}

/// The report's writes as unlogged batches, in order (see [`groups`]).
fn packed(writes: Vec<Write>) -> Vec<(Batch, Rows)> {
    let shape: Vec<(Partition, usize)> = writes.iter().map(|w| (w.partition, w.bytes)).collect();
    let mut writes = writes.into_iter();
    groups(&shape)
        .into_iter()
        .map(|group| {
            let mut batch = statements::batch("report_batch", BatchType::Unlogged, IDEMPOTENT);
            let mut values: Rows = Vec::with_capacity(group.len());
            for write in writes.by_ref().take(group.len()) {
                batch.append_statement(write.statement);
                values.push(write.values);
            }
            (batch, values)
        })
        .collect()
}

/// How a report's writes (their partitions and sizes, in order) split into
/// batches: all in one for a usual report (one round trip; the
/// coordinator writes its two partitions), a new one where a batch would
/// pass [`EVENTS_PER_BATCH`] events, or span both partitions with more
/// than [`BATCH_BYTES`] (servers refuse a multi-partition batch past their
/// size limit, 1 MiB here and on ScyllaDB; they do not size-check a
/// single-partition one).
fn groups(writes: &[(Partition, usize)]) -> Vec<std::ops::Range<usize>> {
    let mut groups = Vec::new();
    let (mut start, mut bytes, mut events) = (0, 0, 0);
    let mut partitions: Vec<Partition> = Vec::new();
    for (i, &(partition, size)) in writes.iter().enumerate() {
        // With this write, the batch would span both partitions.
        let spans = partitions.iter().any(|&p| p != partition);
        let full = (partition == Partition::Events && events == EVENTS_PER_BATCH)
            || (spans && bytes + size > BATCH_BYTES);
        if full {
            groups.push(start..i);
            (start, bytes, events) = (i, 0, 0);
            partitions.clear();
        }
        if !partitions.contains(&partition) {
            partitions.push(partition);
        }
        events += usize::from(partition == Partition::Events);
        bytes += size;
    }
    if start < writes.len() {
        groups.push(start..writes.len());
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usual_report_is_one_batch_and_a_large_one_splits_within_the_limits() {
        use Partition::{Events, Learner};
        let small = [(Learner, 200), (Learner, 300), (Events, 400), (Events, 400)];
        assert_eq!(groups(&small), vec![std::ops::Range { start: 0, end: 4 }]);
        // 20 events: 16 in the first batch, beside the labels.
        let mut many = vec![(Learner, 200)];
        many.extend([(Events, 400); 20]);
        assert_eq!(groups(&many), [0..17, 17..21]);
        // Long corrections: the labels alone may pass the budget (one
        // partition), and no batch spanning both does.
        let mut long = vec![(Learner, 100)];
        long.extend([(Learner, 20_000); 64]);
        long.extend([(Events, 21_000); 16]);
        let split = groups(&long);
        assert_eq!(split, [0..65, 65..81]);
        for range in &split {
            let both = long[range.clone()].iter().any(|w| w.0 == Learner)
                && long[range.clone()].iter().any(|w| w.0 == Events);
            let bytes: usize = long[range.clone()].iter().map(|w| w.1).sum();
            assert!(!both || bytes <= BATCH_BYTES, "{range:?}: {bytes} bytes");
        }
        let mid = [(Learner, 200_000), (Events, 50_000), (Events, 50_000)];
        assert_eq!(groups(&mid), [0..2, 2..3]);
        assert!(groups(&[]).is_empty());
    }
}
