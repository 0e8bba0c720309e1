//! Reads: the durable counters and labels, merged with the deltas still
//! buffered in Redis (read-your-writes), and the latest events.

//! Reads: the durable counters and labels, merged with the deltas still
//! buffered in Redis (read-your-writes), and the latest events.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::NaiveDate;
use scylla::client::session::Session;
use uuid::Uuid;

use super::accounts::Accounts;
use super::buffer::{Buffer, Buffered};
use super::read_cache::{Durable, Label, Labels, ReadCache, Shape};
use super::rows::{
    CountRow, EventRow, LabelRow, LabelSentencesRow, WeekCountRow, SELECT_RECENT_EVENTS,
};
use super::session::{date, for_each_row, from_timestamp, internal, select};
use super::statements::statements;
use crate::domain::{ErrorFrequency, ErrorKey, FrequencyTable, WeekCount};
use crate::store::policy::{READ_POLL, READ_WAIT};
use crate::store::retry::{retry_until, Poll};
use crate::store::{
    Backend, PracticeInputs, PracticeQuery, RecentError, StoreError, WeeklyHistory,
};

statements! {
    /// The statements of reads.
    pub struct ReadStatements {
        select_counts: IDEMPOTENT =>
            "SELECT category_key, subcategory_key, frequency \
             FROM error_counts \
             WHERE user_id = ?",
        select_labels: IDEMPOTENT =>
            "SELECT category_key, subcategory_key, category, subcategory, last_seen \
             FROM error_labels \
             WHERE user_id = ?",
        /// `select_labels` with each error's sentences, for practice.
        select_labels_sentences: IDEMPOTENT =>
            "SELECT category_key, subcategory_key, category, subcategory, last_seen, sentences \
             FROM error_labels \
             WHERE user_id = ?",
        select_buckets: IDEMPOTENT =>
            "SELECT bucket FROM error_buckets WHERE user_id = ?",
        select_recent: IDEMPOTENT => SELECT_RECENT_EVENTS,
        select_week_counts: IDEMPOTENT =>
            "SELECT week_start, category_key, subcategory_key, frequency \
             FROM error_counts_by_week \
             WHERE user_id = ? AND week_start >= ?",
    }
}

/// What one settled read found: the buffer, the durable counters and
/// labels and, when asked for, the durable weekly counts.
struct Settled {
    buffered: Buffered,
    durable: Durable,
}

/// Reads a learner's counts, labels, weeks and events, durable and
/// buffered together; remembers durable rows while they hold.
pub struct Reader {
    session: Arc<Session>,
    statements: ReadStatements,
    buffer: Arc<Buffer>,
    accounts: Arc<Accounts>,
    /// What this replica remembers of learners' durable rows.
    cache: ReadCache,
}

impl Reader {
    pub async fn new(
        session: Arc<Session>,
        buffer: Arc<Buffer>,
        accounts: Arc<Accounts>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            statements: ReadStatements::prepare(&session).await?,
            session,
            buffer,
            accounts,
            cache: ReadCache::new(),
        })
    }

    /// Forgets what this replica remembers of the learner's rows.
    pub fn forget(&self, user_id: Uuid) {
        self.cache.forget(user_id);
    }

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
        let read = retry_until(READ_WAIT, READ_POLL, || async move {
            let buffered = inner.buffer.buffered(user_id).await?;
            // With a counter batch half way, the counters may or may not
            // hold the in-flight deltas yet; and a flush that started or
            // ended between the reads moved deltas under them. Either way
            // the merge would be a guess: read again once it is over.
            // (Weekly in-flight deltas are moved and deleted with the
            // all-time ones.)
            if buffered.erased {
                return Err(inner.accounts.being_erased(user_id));
            }
            let settled = !buffered.locked || buffered.inflight.is_empty();
            if !settled {
                return Ok(Poll::Pending);
            }
            let version = buffered.version.as_deref();
            if let Some(durable) = inner.cache.get(shape, buffered.epoch, version) {
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
                .cache
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

    pub async fn frequencies(&self, user_id: Uuid) -> Result<FrequencyTable, StoreError> {
        let read = self.settled(user_id, None, false).await?;
        self.history(user_id, read, None).await.map(|h| h.table)
    }

    /// The top errors and the learner's own sentences for them, from two
    /// CQL reads (three with a recency ranking): the counters and the
    /// labels, which keep each error's latest corrected sentences, so the
    /// event log is not searched.
    pub async fn practice_inputs(
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
        let (top, scores) = self
            .history(user_id, read, since)
            .await?
            .top(query.rank, query.top_n);
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
    pub async fn weekly_history(
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
        if table.is_empty() && !self.accounts.user_exists(user_id).await? {
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
    pub async fn week_counts_since(
        &self,
        user_id: Uuid,
        since: NaiveDate,
    ) -> Result<Vec<WeekCount>, StoreError> {
        let mut weeks = Vec::new();
        for_each_row(
            &self.session,
            &self.statements.select_week_counts,
            (user_id, date(since)),
            |row: WeekCountRow| weeks.push(row.into()),
        )
        .await?;
        Ok(weeks)
    }

    /// The latest events, newest first, in the spelling each was recorded
    /// with (enough to pick a learner's own sentences by error).
    pub async fn latest_events(
        &self,
        user_id: Uuid,
        limit: usize,
    ) -> Result<Vec<RecentError>, StoreError> {
        let buckets = self.buckets(user_id).await?;
        let mut recent = Vec::new();
        for month in buckets {
            if recent.len() >= limit {
                break;
            }
            let wanted = i32::try_from(limit - recent.len()).unwrap_or(i32::MAX);
            let rows = select(
                &self.session,
                &self.statements.select_recent,
                (user_id, month, wanted),
            )
            .await?;
            for row in rows.rows::<EventRow>().map_err(internal)? {
                recent.push(row.map_err(internal)?.into_recent());
            }
        }
        if recent.is_empty() && !self.accounts.user_exists(user_id).await? {
            return Err(StoreError::UserNotFound);
        }
        recent.truncate(limit);
        Ok(recent)
    }

    /// The latest events, newest first, each in the spelling the learner's
    /// table shows (the first seen).
    pub async fn recent_errors(
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
    pub async fn counts(&self, user_id: Uuid) -> Result<HashMap<ErrorKey, i64>, StoreError> {
        let rows = select(&self.session, &self.statements.select_counts, (user_id,)).await?;
        rows.rows::<CountRow>()
            .map_err(internal)?
            .map(|row| row.map(CountRow::into_count).map_err(internal))
            .collect()
    }

    /// Spellings and last-seen times of a learner's errors, and with
    /// `sentences` the sentences each keeps for practice.
    async fn labels(&self, user_id: Uuid, sentences: bool) -> Result<Labels, StoreError> {
        let statements = &self.statements;
        let mut labels = HashMap::new();
        if sentences {
            let statement = &statements.select_labels_sentences;
            let rows = select(&self.session, statement, (user_id,)).await?;
            for row in rows.rows::<LabelSentencesRow>().map_err(internal)? {
                let row = row.map_err(internal)?;
                let (key, mut label) = label(LabelRow {
                    category_key: row.category_key,
                    subcategory_key: row.subcategory_key,
                    category: row.category,
                    subcategory: row.subcategory,
                    last_seen: row.last_seen,
                });
                label.sentences = row
                    .sentences
                    .into_iter()
                    .flatten()
                    .map(|(_, cell)| cell.into_recent(&key, &label.category, &label.subcategory))
                    .collect();
                labels.insert(key, label);
            }
        } else {
            let rows = select(&self.session, &statements.select_labels, (user_id,)).await?;
            for row in rows.rows::<LabelRow>().map_err(internal)? {
                let (key, label) = label(row.map_err(internal)?);
                labels.insert(key, label);
            }
        }
        Ok(labels)
    }

    /// The month buckets of the learner's events, newest first.
    pub async fn buckets(&self, user_id: Uuid) -> Result<Vec<i32>, StoreError> {
        let rows = select(&self.session, &self.statements.select_buckets, (user_id,)).await?;
        rows.rows::<(i32,)>()
            .map_err(internal)?
            .map(|row| row.map(|(b,)| b).map_err(internal))
            .collect()
    }
}

/// A row of `error_labels` as its key and its label (no sentences yet).
fn label(row: LabelRow) -> (ErrorKey, Label) {
    let label = Label {
        category: row.category.unwrap_or_else(|| row.category_key.clone()),
        subcategory: row
            .subcategory
            .unwrap_or_else(|| row.subcategory_key.clone()),
        last_seen: row.last_seen.map(from_timestamp),
        sentences: Vec::new(),
    };
    let key = ErrorKey {
        category: row.category_key,
        subcategory: row.subcategory_key,
    };
    (key, label)
}
