//! Recording a report: validate against CQL, lease the request's
//! fingerprint in Redis, append its events (idempotent writes), then count
//! it in Redis and turn the lease into a "done" marker in one script; only
//! then is it acknowledged. While a repair reads the learner's log the
//! count waits for it (briefly, then 503).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;
use uuid::Uuid;

use super::buffer::{Commit, Lease, LEASE};
use super::ownership::Known;
use super::session::{cql_error, timestamp};
use super::statements::{self, IDEMPOTENT};
use super::Inner;
use crate::domain::{Correction, ErrorKey, ErrorPoint};
use crate::store::retry::{retry_until, Poll};
use crate::store::{Backend, ErrorReport, PointTally, RecordOutcome, StoreError};

/// The values of a batch's statements.
type Rows = Vec<Box<dyn SerializeRow + Send + Sync>>;

/// Characters of the utterance kept with each event.
const SNIPPET_CHARS: usize = 500;
/// Events per unlogged batch, to stay far below batch limits.
const EVENTS_PER_BATCH: usize = 16;
/// At most this many bytes of values in a batch that spans two partitions
/// (a quarter of the servers' 1 MiB limit on such batches).
const BATCH_BYTES: usize = 256 * 1024;
/// What a statement adds to a batch besides its text values (ids,
/// timestamps, framing), roughly.
const WRITE_OVERHEAD: usize = 96;
/// A sentence whose correction is longer than this many characters is not
/// kept for practice (a correction of a spoken sentence is far shorter; the
/// bound keeps a practice read of the labels small). The event keeps it.
const MAX_PRACTISED_CORRECTION: usize = 1_000;
/// Twice 2026-01-01T00:00:00Z in microseconds. Spelling cells are written
/// with the timestamp `SPELLING_CLOCK - now`: it decreases as time goes on,
/// so the first write wins, and it stays in the past (ScyllaDB refuses
/// timestamps far in the future) until 2082.
const SPELLING_CLOCK: i64 = 2 * 1_767_225_600_000_000;
/// How long a request waits for a repair of its learner before it answers
/// 503 (a repair holds a learner for the time of one log read).
const FENCE_WAIT: Duration = Duration::from_secs(2);
/// How often a waiting request looks again.
const POLL: Duration = Duration::from_millis(10);

/// How many of a learner's sentences each error keeps beside its label
/// (`error_labels.sentences`), for practice to read with the label instead
/// of searching the event log: one more than the three a practice request
/// shows. Two utterances can share a slot (the later one stays), so the
/// slots hold the newest sentence and up to three other recent ones, not
/// always exactly the latest four.
pub(super) const SENTENCE_SLOTS: u128 = 4;

/// An error's sentence in `error_labels.sentences`: when it was said, the
/// conversation and utterance, the utterance's snippet, the correction and
/// the explanation.
pub(super) type SentenceCell = (
    CqlTimestamp,
    Uuid,
    Uuid,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The slot of `error_labels.sentences` an utterance's sentence goes in:
/// fixed by the utterance, so that every point and every retry of it
/// rewrites one slot, and spread by its random bits, so that an error keeps
/// up to [`SENTENCE_SLOTS`] of its latest sentences without reading
/// anything first. A slot's cell is written with the event's time as its
/// write timestamp, so it always holds the latest of its utterances.
pub(super) fn sentence_slot(utterance_id: Uuid) -> i32 {
    (utterance_id.as_u128() % SENTENCE_SLOTS) as i32
}

/// The id of a report's point in `error_events`: it follows from the
/// request's identity, so every attempt of the request writes the same row.
pub(super) fn event_id(fingerprint: Uuid, index: usize) -> Uuid {
    Uuid::new_v5(&fingerprint, index.to_string().as_bytes())
}

/// The month bucket of `error_events`, as yyyymm.
pub fn bucket(t: DateTime<Utc>) -> i32 {
    t.year() * 100 + t.month() as i32
}

pub(super) fn snippet(content: Option<&str>) -> Option<Arc<str>> {
    content.map(|c| c.chars().take(SNIPPET_CHARS).collect::<String>().into())
}

impl Inner {
    /// Confirms that the report's learner, conversation and utterance exist
    /// and belong together, from what this replica already knows or else
    /// from CQL; returns the utterance's snippet.
    ///
    /// One read in the common case: the utterance's row, keyed by its
    /// learner and conversation, proves both when it is found. Each was
    /// checked when the row was written; an erasure deletes `utterances`
    /// before `conversations` and `users`, so one cut off half way never
    /// leaves an utterance row without them; and its tombstones lie ahead
    /// of any write racing it. Only when the row is missing are the learner
    /// and the conversation read as well, to say which the 404 is about.
    async fn owned(&self, report: &ErrorReport) -> Result<Option<Arc<str>>, StoreError> {
        let ids = (report.user_id, report.conversation_id, report.utterance_id);
        let (user, conversation, utterance) = ids;
        let mut known = self.ownership.lookup(user, conversation, utterance);
        if !known.complete() {
            let asked = std::time::Instant::now();
            if known.utterance.is_none() {
                if let Some(content) = self
                    .utterance_content(user, conversation, utterance)
                    .await?
                {
                    known = Known {
                        user: true,
                        conversation: true,
                        utterance: Some(snippet(content.as_deref())),
                    };
                }
            }
            if !known.complete() {
                let (user_read, conversation_read) = tokio::join!(
                    async { Ok::<_, StoreError>(known.user || self.user_exists(user).await?) },
                    async {
                        Ok::<_, StoreError>(
                            known.conversation
                                || self.conversation_exists(user, conversation).await?,
                        )
                    },
                );
                known.user = user_read?;
                known.conversation = conversation_read?;
            }
            self.ownership.remember(ids, &known, asked);
        }
        if !known.user {
            return Err(StoreError::UserNotFound);
        }
        if !known.conversation {
            return Err(StoreError::ConversationNotFound);
        }
        known.utterance.ok_or(StoreError::UtteranceNotFound)
    }

    pub(super) async fn record(&self, report: ErrorReport) -> Result<RecordOutcome, StoreError> {
        let inner = self;
        let snippet = inner.owned(&report).await?;

        let token = Uuid::new_v4().to_string();
        // Another attempt of the same request may hold the lease: wait for
        // it to count (then this is a duplicate) or to let go.
        let (proposed, token_ref) = (report.received_at.timestamp_millis(), token.as_str());
        let leased = retry_until(LEASE + Duration::from_secs(2), POLL, || async move {
            let lease = inner
                .buffer
                .lease(report.user_id, report.fingerprint, proposed, token_ref)
                .await?;
            Ok(match lease {
                Lease::Acquired { at_ms } => Poll::Ready(Some(at_ms)),
                Lease::Done => Poll::Ready(None),
                Lease::Erased => {
                    inner.ownership.forget(report.user_id);
                    return Err(StoreError::UserNotFound);
                }
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
                self.ownership.forget(report.user_id);
                return Err(StoreError::UserNotFound);
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
    pub(super) async fn write_events(
        &self,
        report: &ErrorReport,
        at: DateTime<Utc>,
        snippet: Option<&str>,
    ) -> Result<(), StoreError> {
        // Each point's key, worked out once for all the writes.
        let keys: Vec<ErrorKey> = report.points.iter().map(ErrorPoint::key).collect();
        let mut writes = self.label_writes(report, &keys, at, snippet);
        let events = self.event_writes(report, keys, at, snippet);
        writes.extend(events);
        for (batch, values) in packed(writes) {
            self.session
                .batch(&batch, values)
                .await
                .map_err(cql_error)?;
        }
        Ok(())
    }

    /// The report's writes to the learner's partition: the event bucket,
    /// the errors' spellings (the earliest write wins) and last-seen times,
    /// and for each error the sentence it was found in when its correction
    /// is known and short enough to practise (see [`sentence_slot`]).
    fn label_writes(
        &self,
        report: &ErrorReport,
        keys: &[ErrorKey],
        at: DateTime<Utc>,
        snippet: Option<&str>,
    ) -> Vec<Write> {
        let s = &self.statements;
        let (user, at_micros) = (report.user_id, at.timestamp_micros());
        let mut writes = vec![Write::new(
            Partition::Learner,
            &s.insert_bucket,
            (user, bucket(at)),
            0,
        )];
        let mut seen = Vec::new();
        let slot = sentence_slot(report.utterance_id);
        for PointTally {
            key, first: point, ..
        } in report.tally()
        {
            let spelling = (point.category.as_str(), point.subcategory.as_str());
            let key_bytes = key.category.len() + key.subcategory.len();
            writes.push(Write::new(
                Partition::Learner,
                &s.label_spelling,
                (
                    SPELLING_CLOCK - at_micros,
                    spelling.0.to_owned(),
                    spelling.1.to_owned(),
                    user,
                    key.category.clone(),
                    key.subcategory.clone(),
                ),
                spelling.0.len() + spelling.1.len() + key_bytes,
            ));
            // The first of the error's points whose sentence can be
            // practised.
            let sentence = report
                .points
                .iter()
                .zip(keys)
                .filter(|(_, k)| **k == key)
                .find_map(|(p, _)| {
                    sentence_cell(
                        at,
                        report.conversation_id,
                        report.utterance_id,
                        snippet,
                        &p.correction,
                    )
                });
            match sentence {
                Some(sentence) => {
                    let bytes = key_bytes + sentence_bytes(&sentence);
                    seen.push(Write::new(
                        Partition::Learner,
                        &s.label_seen_sentence,
                        (
                            at_micros,
                            timestamp(at),
                            slot,
                            sentence,
                            user,
                            key.category,
                            key.subcategory,
                        ),
                        bytes,
                    ));
                }
                None => seen.push(Write::new(
                    Partition::Learner,
                    &s.label_seen,
                    (
                        at_micros,
                        timestamp(at),
                        user,
                        key.category,
                        key.subcategory,
                    ),
                    key_bytes,
                )),
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
        report
            .points
            .iter()
            .zip(keys)
            .enumerate()
            .map(|(index, (point, key))| {
                let correction = &point.correction;
                let bytes = 2 * (key.category.len() + key.subcategory.len())
                    + snippet.as_ref().map_or(0, String::len)
                    + correction.text.as_ref().map_or(0, String::len)
                    + correction.explanation.as_ref().map_or(0, String::len);
                Write::new(
                    Partition::Events,
                    &self.statements.insert_event,
                    (
                        report.user_id,
                        bucket(at),
                        timestamp(at),
                        event_id(report.fingerprint, index),
                        report.conversation_id,
                        report.utterance_id,
                        key.category,
                        key.subcategory,
                        point.category.as_str().to_owned(),
                        point.subcategory.as_str().to_owned(),
                        snippet.clone(),
                        correction.text.clone(),
                        correction.explanation.clone(),
                    ),
                    bytes,
                )
            })
            .collect()
    }
}

/// The cell that keeps a sentence for practice, said at `at` in this
/// utterance (whose snippet is `snippet`) and corrected as `correction`;
/// `None` when it cannot be practised: no text to show, or no correction,
/// or one longer than [`MAX_PRACTISED_CORRECTION`] characters. The one
/// rule for the ingest and for repair's refill.
pub(super) fn sentence_cell(
    at: DateTime<Utc>,
    conversation_id: Uuid,
    utterance_id: Uuid,
    snippet: Option<&str>,
    correction: &Correction,
) -> Option<SentenceCell> {
    let text = snippet.filter(|t| !t.trim().is_empty())?;
    let fix = correction.text.as_deref()?;
    if fix.chars().count() > MAX_PRACTISED_CORRECTION {
        return None;
    }
    Some((
        timestamp(at),
        conversation_id,
        utterance_id,
        Some(text.to_owned()),
        Some(fix.to_owned()),
        correction.explanation.clone(),
    ))
}

/// The text bytes a sentence cell carries.
fn sentence_bytes((_, _, _, text, fix, why): &SentenceCell) -> usize {
    [text, fix, why]
        .into_iter()
        .map(|s| s.as_ref().map_or(0, String::len))
        .sum()
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
    use chrono::TimeZone;

    #[test]
    fn events_are_bucketed_by_month() {
        let t = Utc.with_ymd_and_hms(2026, 11, 28, 23, 59, 59).unwrap();
        assert_eq!(bucket(t), 202611);
        let t = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(bucket(t), 202701);
    }

    #[test]
    fn spelling_timestamps_decrease_and_stay_in_the_past() {
        let now = Utc::now().timestamp_micros();
        let later = now + 1_000_000;
        assert!(SPELLING_CLOCK - now > SPELLING_CLOCK - later);
        assert!(SPELLING_CLOCK - now < now);
        assert!(SPELLING_CLOCK - now > 0);
    }

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

    #[test]
    fn snippets_are_cut_by_characters() {
        let long = "é".repeat(SNIPPET_CHARS + 10);
        assert_eq!(
            snippet(Some(&long)).map(|s| s.chars().count()),
            Some(SNIPPET_CHARS)
        );
        assert_eq!(snippet(None), None);
    }
}
