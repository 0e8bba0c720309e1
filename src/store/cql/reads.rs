//! Reads: the durable counters and labels, merged with the deltas still
//! buffered in Redis (read-your-writes), and the latest events.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use scylla::value::{Counter, CqlDate, CqlTimestamp};
use uuid::Uuid;

use super::buffer::Buffered;
use super::ingest::SentenceCell;
use super::read_cache::{Durable, Shape};
use super::session::{date, for_each_row, from_date, from_timestamp, internal, select};
use super::Inner;
use crate::domain::{Correction, ErrorFrequency, ErrorKey, FrequencyTable, WeekCount};
use crate::store::retry::{retry_until, Poll};
use crate::store::{
    Backend, PracticeInputs, PracticeQuery, RecentError, StoreError, WeeklyHistory,
};

/// What `error_labels` says about one of a learner's errors.
#[derive(Debug, Clone)]
pub(super) struct Label {
    pub category: String,
    pub subcategory: String,
    pub last_seen: Option<DateTime<Utc>>,
    /// Its sentences kept for practice, when they were read.
    pub sentences: Vec<RecentError>,
}

pub(super) type Labels = HashMap<ErrorKey, Label>;

/// What one settled read found: the buffer, the durable counters and
/// labels and, when asked for, the durable weekly counts.
struct Settled {
    buffered: Buffered,
    durable: Durable,
}

type SpellingRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<CqlTimestamp>,
);

type LabelRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<CqlTimestamp>,
    Option<HashMap<i32, SentenceCell>>,
);

/// A row of `error_labels` as its key, its label (no sentences yet) and
/// its sentence cells.
fn label(row: LabelRow) -> (ErrorKey, Label, Option<HashMap<i32, SentenceCell>>) {
    let (category_key, subcategory_key, category, subcategory, last_seen, sentences) = row;
    let label = Label {
        category: category.unwrap_or_else(|| category_key.clone()),
        subcategory: subcategory.unwrap_or_else(|| subcategory_key.clone()),
        last_seen: last_seen.map(from_timestamp),
        sentences: Vec::new(),
    };
    let key = ErrorKey {
        category: category_key,
        subcategory: subcategory_key,
    };
    (key, label, sentences)
}

/// A kept sentence as the event it came from.
fn sentence(key: &ErrorKey, label: &Label, cell: SentenceCell) -> RecentError {
    let (at, conversation_id, utterance_id, snippet, fix, why) = cell;
    RecentError {
        key: key.clone(),
        category: label.category.clone(),
        subcategory: label.subcategory.clone(),
        conversation_id,
        utterance_id,
        utterance: snippet,
        correction: Correction {
            text: fix,
            explanation: why,
        },
        occurred_at: from_timestamp(at),
    }
}

/// How long a read waits for a flush of the learner to finish before it
/// answers 503 (a counter batch normally takes milliseconds).
const READ_WAIT: Duration = Duration::from_secs(2);

impl Inner {
    /// The buffer and the durable counts read so that they add up: never
    /// while a counter batch is half way, never across a flush's start or
    /// end. With `since`, the weekly counts from that week on too; with
    /// `sentences`, the labels' sentences.
    async fn settled(
        &self,
        user_id: Uuid,
        since: Option<NaiveDate>,
        sentences: bool,
    ) -> Result<Settled, StoreError> {
        let inner = self;
        let shape = Shape {
            user: user_id,
            since,
            sentences,
        };
        let shape = &shape;
        let read = retry_until(READ_WAIT, Duration::from_millis(10), || async move {
            let buffered = inner.buffer.buffered(user_id).await?;
            // With a counter batch half way, the counters may or may not
            // hold the in-flight deltas yet; and a flush that started or
            // ended between the reads moved deltas under them. Either way
            // the merge would be a guess: read again once it is over.
            // (Weekly in-flight deltas are moved and deleted with the
            // all-time ones.)
            let settled = !buffered.locked || buffered.inflight.is_empty();
            if !settled {
                return Ok(Poll::Pending);
            }
            let version = buffered.version.as_deref();
            if let Some(durable) = inner.reads.get(shape, buffered.epoch, version) {
                return Ok(Poll::Ready(Settled { buffered, durable }));
            }
            let asked = std::time::Instant::now();
            let (counts, labels, weeks) = tokio::try_join!(
                inner.counts(user_id),
                inner.labels(user_id, sentences),
                inner.week_counts(user_id, since)
            )?;
            let closing = inner.buffer.closing(user_id).await?;
            if closing.epoch != buffered.epoch {
                return Ok(Poll::Pending);
            }
            let durable = Durable {
                counts,
                labels,
                weeks,
            };
            let epoch = buffered.epoch;
            inner
                .reads
                .put(shape.clone(), epoch, version, &closing, &durable, asked);
            Ok(Poll::Ready(Settled { buffered, durable }))
        })
        .await?;
        read.ok_or_else(|| {
            StoreError::busy(
                Backend::Cql,
                "the learner's counts are being flushed; retry",
            )
        })
    }

    pub(super) async fn frequencies(&self, user_id: Uuid) -> Result<FrequencyTable, StoreError> {
        let read = self.settled(user_id, None, false).await?;
        self.history(user_id, read, None).await.map(|h| h.table)
    }

    /// The top errors and the learner's own sentences for them, from two
    /// CQL reads (three with a recency ranking): the counters and the
    /// labels, which keep each error's latest corrected sentences, so the
    /// event log is not searched.
    pub(super) async fn practice_inputs(
        &self,
        user_id: Uuid,
        query: PracticeQuery,
    ) -> Result<PracticeInputs, StoreError> {
        let since = query.rank.since();
        let mut read = self.settled(user_id, since, true).await?;
        let mut sentences: Vec<RecentError> = read
            .durable
            .labels
            .values_mut()
            .flat_map(|label| std::mem::take(&mut label.sentences))
            .collect();
        let (top, scores) = self.history(user_id, read, since).await?.top(&query);
        if top.is_empty() {
            return Ok(PracticeInputs::default());
        }
        // Newest first, as the picking rule takes them (ties by utterance,
        // so the answer does not depend on the map's order).
        sentences.sort_unstable_by_key(|s| (std::cmp::Reverse(s.occurred_at), s.utterance_id));
        let inputs = PracticeInputs::from_recent(top, &sentences, query.sentences_per_error);
        Ok(PracticeInputs { scores, ..inputs })
    }

    /// All-time counts and weekly counts from `since` on, durable and
    /// buffered merged.
    pub(super) async fn weekly_history(
        &self,
        user_id: Uuid,
        since: NaiveDate,
    ) -> Result<WeeklyHistory, StoreError> {
        let read = self.settled(user_id, Some(since), false).await?;
        self.history(user_id, read, Some(since)).await
    }

    /// The learner's table from a settled read, and its weekly counts from
    /// `since` on with the buffered weekly deltas added; `UserNotFound` for
    /// an unknown one.
    async fn history(
        &self,
        user_id: Uuid,
        read: Settled,
        since: Option<NaiveDate>,
    ) -> Result<WeeklyHistory, StoreError> {
        let Settled {
            buffered,
            durable:
                Durable {
                    counts,
                    labels,
                    mut weeks,
                },
        } = read;
        let mut table: HashMap<ErrorKey, ErrorFrequency> = HashMap::new();
        let deltas = counts
            .into_iter()
            .chain(buffered.pending)
            .chain(buffered.inflight);
        for (key, delta) in deltas {
            let entry = table.entry(key.clone()).or_insert_with(|| {
                let (category, subcategory, last_seen) = match labels.get(&key) {
                    Some(label) => (
                        label.category.clone(),
                        label.subcategory.clone(),
                        label.last_seen,
                    ),
                    None => (key.category.clone(), key.subcategory.clone(), None),
                };
                ErrorFrequency {
                    key,
                    category,
                    subcategory,
                    frequency: 0,
                    last_seen,
                }
            });
            entry.frequency += delta;
        }
        if table.is_empty() && !self.user_exists(user_id).await? {
            return Err(StoreError::UserNotFound);
        }
        weeks.extend(buffered.weeks);
        if let Some(since) = since {
            weeks.retain(|w| w.week_start >= since);
        }
        Ok(WeeklyHistory {
            table: table.into_values().collect(),
            weeks,
        })
    }

    /// Durable weekly counters of a learner from `since` on (none without).
    async fn week_counts(
        &self,
        user_id: Uuid,
        since: Option<NaiveDate>,
    ) -> Result<Vec<WeekCount>, StoreError> {
        match since {
            Some(since) => self.week_counts_since(user_id, since).await,
            None => Ok(Vec::new()),
        }
    }

    /// Durable weekly counters of a learner from `since` on (paged).
    pub(super) async fn week_counts_since(
        &self,
        user_id: Uuid,
        since: NaiveDate,
    ) -> Result<Vec<WeekCount>, StoreError> {
        let mut weeks = Vec::new();
        for_each_row(
            &self.session,
            &self.statements.select_week_counts,
            (user_id, date(since)),
            |(week, category, subcategory, frequency): (
                CqlDate,
                String,
                String,
                Option<Counter>,
            )| {
                weeks.push(WeekCount {
                    week_start: from_date(week),
                    key: ErrorKey {
                        category,
                        subcategory,
                    },
                    count: frequency.map_or(0, |c| c.0),
                });
            },
        )
        .await?;
        Ok(weeks)
    }

    /// The latest events, newest first, in the spelling each was recorded
    /// with (enough to pick a learner's own sentences by error).
    pub(super) async fn latest_events(
        &self,
        user_id: Uuid,
        limit: usize,
    ) -> Result<Vec<RecentError>, StoreError> {
        let inner = self;
        let buckets = inner.buckets(user_id).await?;
        let mut recent = Vec::new();
        for month in buckets {
            if recent.len() >= limit {
                break;
            }
            let wanted = i32::try_from(limit - recent.len()).unwrap_or(i32::MAX);
            let rows = select(
                &inner.session,
                &inner.statements.select_recent,
                (user_id, month, wanted),
            )
            .await?;
            type EventRow = (
                CqlTimestamp,
                String,
                String,
                Option<String>,
                Option<String>,
                Option<Uuid>,
                Option<Uuid>,
                Option<String>,
                Option<String>,
                Option<String>,
            );
            for row in rows.rows::<EventRow>().map_err(internal)? {
                let (at, ck, sk, category, subcategory, conversation, utterance, snippet, fix, why) =
                    row.map_err(internal)?;
                recent.push(RecentError {
                    category: category.unwrap_or_else(|| ck.clone()),
                    subcategory: subcategory.unwrap_or_else(|| sk.clone()),
                    key: ErrorKey {
                        category: ck,
                        subcategory: sk,
                    },
                    conversation_id: conversation.unwrap_or_default(),
                    utterance_id: utterance.unwrap_or_default(),
                    utterance: snippet,
                    correction: Correction {
                        text: fix,
                        explanation: why,
                    },
                    occurred_at: from_timestamp(at),
                });
            }
        }
        if recent.is_empty() && !inner.user_exists(user_id).await? {
            return Err(StoreError::UserNotFound);
        }
        recent.truncate(limit);
        Ok(recent)
    }

    /// The latest events, newest first, each in the spelling the learner's
    /// table shows (the first seen).
    pub(super) async fn recent_errors(
        &self,
        user_id: Uuid,
        limit: usize,
    ) -> Result<Vec<RecentError>, StoreError> {
        let mut recent = self.latest_events(user_id, limit).await?;
        if recent.is_empty() {
            return Ok(recent);
        }
        let labels = self.labels(user_id, false).await?;
        for error in &mut recent {
            if let Some(label) = labels.get(&error.key) {
                error.category.clone_from(&label.category);
                error.subcategory.clone_from(&label.subcategory);
            }
        }
        recent.truncate(limit);
        Ok(recent)
    }

    /// Durable counters of a learner.
    pub(super) async fn counts(&self, user_id: Uuid) -> Result<HashMap<ErrorKey, i64>, StoreError> {
        let rows = select(&self.session, &self.statements.select_counts, (user_id,)).await?;
        let mut counts = HashMap::new();
        for row in rows
            .rows::<(String, String, Option<Counter>)>()
            .map_err(internal)?
        {
            let (category, subcategory, frequency) = row.map_err(internal)?;
            counts.insert(
                ErrorKey {
                    category,
                    subcategory,
                },
                frequency.map_or(0, |c| c.0),
            );
        }
        Ok(counts)
    }

    /// Spellings and last-seen times of a learner's errors, and with
    /// `sentences` the sentences each keeps for practice.
    pub(super) async fn labels(
        &self,
        user_id: Uuid,
        sentences: bool,
    ) -> Result<Labels, StoreError> {
        let statements = &self.statements;
        let statement = if sentences {
            &statements.select_labels_sentences
        } else {
            &statements.select_labels
        };
        let rows = select(&self.session, statement, (user_id,)).await?;
        let mut labels = HashMap::new();
        if sentences {
            for row in rows.rows::<LabelRow>().map_err(internal)? {
                let (key, label, kept) = label(row.map_err(internal)?);
                let sentences = kept
                    .into_iter()
                    .flatten()
                    .map(|(_, cell)| sentence(&key, &label, cell))
                    .collect();
                labels.insert(key, Label { sentences, ..label });
            }
        } else {
            for row in rows.rows::<SpellingRow>().map_err(internal)? {
                let (ck, sk, category, subcategory, last_seen) = row.map_err(internal)?;
                let (key, label, _) = label((ck, sk, category, subcategory, last_seen, None));
                labels.insert(key, label);
            }
        }
        Ok(labels)
    }

    pub(super) async fn buckets(&self, user_id: Uuid) -> Result<Vec<i32>, StoreError> {
        let rows = select(&self.session, &self.statements.select_buckets, (user_id,)).await?;
        rows.rows::<(i32,)>()
            .map_err(internal)?
            .map(|row| row.map(|(b,)| b).map_err(internal))
            .collect()
    }
}
