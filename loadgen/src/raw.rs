//! The raw baseline (`--raw`): the CQL work errata does per request, issued
//! straight through the same driver (scylla, prepared statements, token-
//! aware default policy, LOCAL_QUORUM as errata's default profile), with no
//! HTTP, no Redis and no errata process, on the stack's keyspace and
//! learners, so that errata's throughput can be read against what the
//! CQL server gives on its own.
//!
//! The statements are copied from errata's sources (named beside each);
//! a change there must be made here too.
//!
//! - An ingest is the one unlogged batch of `recording.rs`
//!   (`Recorder::write_events`): the learner's event bucket and answer
//!   bucket, per distinct error its spelling and its last-seen time (with
//!   the sentence in its slot when the point has a correction), then per
//!   point an event and per distinct error a lapse; the bucket rows and
//!   spellings already written are left out, as errata's replica leaves
//!   out those it remembers writing (`written.rs`; `--raw-rewrites` also
//!   measures the batch with them, as it was before). Errata checks the
//!   report's owners from its memory (`ownership.rs`) after the first
//!   report of an utterance, so no read is issued for it here.
//! - The counting errata leaves to its flusher is emulated: every flush
//!   interval, one counter batch per learner with the deltas since the
//!   last (`counters.rs`: `add_count` per error, `add_week_count` per error
//!   and week), at most [`FLUSH_CONCURRENCY`] batches in flight, as
//!   `flusher.rs` does for the learners it finds dirty (errata takes at most
//!   64 learners per shard and tick; this takes every one).
//! - A read is what `reads.rs` issues on a cache miss: practice by
//!   frequency reads the counters and the labels with their sentences (two
//!   reads, concurrently); by recency those and the weekly counters of the
//!   lookback (paged); progress the counters, the labels without sentences
//!   and the weekly counters of its weeks.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::response::PagingState;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::{Counter, CqlDate, CqlTimestamp};
use serde::Serialize;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::drive::Picked;
use crate::population::{Learner, SENTENCES};

/// errata's `policy::FLUSH_CONCURRENCY`.
const FLUSH_CONCURRENCY: usize = 16;
/// errata's `policy::CQL_REQUEST_TIMEOUT`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// errata's `rows::SENTENCE_SLOTS`.
const SENTENCE_SLOTS: u128 = 4;
/// errata's `rows::SPELLING_CLOCK`.
const SPELLING_CLOCK: i64 = 2 * 1_767_225_600_000_000;
/// Weeks read by practice by recency at the loadgen's half-life of 14
/// days (errata's `Decay::lookback_weeks`: 20 · 14 / 7 + 1) and by
/// progress at its 8 weeks.
const RECENT_WEEKS: u64 = 41;
const PROGRESS_WEEKS: u64 = 8;

/// `rows.rs`, `event_columns!` and `INSERT_EVENT`.
const INSERT_EVENT: &str = "INSERT INTO error_events (user_id, bucket, occurred_at, event_id, \
     conversation_id, utterance_id, category_key, subcategory_key, category, subcategory, \
     snippet, correction, explanation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
/// `recording.rs`, `insert_bucket`.
const INSERT_BUCKET: &str = "INSERT INTO error_buckets (user_id, bucket) VALUES (?, ?)";
/// `recording.rs`, `insert_answer_bucket`.
const INSERT_ANSWER_BUCKET: &str = "INSERT INTO answer_buckets (user_id, bucket) VALUES (?, ?)";
/// `recording.rs`, `label_spelling`.
const LABEL_SPELLING: &str = "UPDATE error_labels USING TIMESTAMP ? \
     SET category = ?, subcategory = ? \
     WHERE user_id = ? AND category_key = ? AND subcategory_key = ?";
/// `recording.rs`, `label_seen`.
const LABEL_SEEN: &str = "UPDATE error_labels USING TIMESTAMP ? SET last_seen = ? \
     WHERE user_id = ? AND category_key = ? AND subcategory_key = ?";
/// `recording.rs`, `label_seen_sentence`.
const LABEL_SEEN_SENTENCE: &str = "UPDATE error_labels USING TIMESTAMP ? \
     SET last_seen = ?, sentences[?] = ? \
     WHERE user_id = ? AND category_key = ? AND subcategory_key = ?";
/// `rows/memory.rs`, `INSERT_REVIEW` (`recording.rs`, `insert_lapse`).
const INSERT_LAPSE: &str = "INSERT INTO answers (user_id, bucket, answered_at, answer_id, kind, \
     exercise_id, category_key, subcategory_key, category, subcategory, grade, correct) \
     VALUES (:user_id, :bucket, :answered_at, :answer_id, :kind, :exercise_id, \
     :category_key, :subcategory_key, :category, :subcategory, :grade, :correct)";
/// `counters.rs`, `add_count`.
const ADD_COUNT: &str = "UPDATE error_counts SET frequency = frequency + ? \
     WHERE user_id = ? AND category_key = ? AND subcategory_key = ?";
/// `counters.rs`, `add_week_count`.
const ADD_WEEK_COUNT: &str = "UPDATE error_counts_by_week SET frequency = frequency + ? \
     WHERE user_id = ? AND week_start = ? AND category_key = ? AND subcategory_key = ?";
/// `reads.rs`, `select_counts`.
const SELECT_COUNTS: &str =
    "SELECT category_key, subcategory_key, frequency FROM error_counts WHERE user_id = ?";
/// `reads.rs`, `select_labels`.
const SELECT_LABELS: &str = "SELECT category_key, subcategory_key, category, subcategory, \
     last_seen FROM error_labels WHERE user_id = ?";
/// `reads.rs`, `select_labels_sentences`.
const SELECT_LABELS_SENTENCES: &str = "SELECT category_key, subcategory_key, category, \
     subcategory, last_seen, sentences FROM error_labels WHERE user_id = ?";
/// `reads.rs`, `select_week_counts`.
const SELECT_WEEK_COUNTS: &str = "SELECT week_start, category_key, subcategory_key, frequency \
     FROM error_counts_by_week WHERE user_id = ? AND week_start >= ?";

/// The cell of `error_labels.sentences` (`rows/sentence.rs`).
type Sentence = (
    CqlTimestamp,
    Uuid,
    Uuid,
    Option<String>,
    Option<String>,
    Option<String>,
);
type Rows = Vec<Box<dyn SerializeRow + Send + Sync>>;
type Key = (String, String);

struct Statements {
    insert_event: PreparedStatement,
    insert_bucket: PreparedStatement,
    insert_answer_bucket: PreparedStatement,
    label_spelling: PreparedStatement,
    label_seen: PreparedStatement,
    label_seen_sentence: PreparedStatement,
    insert_lapse: PreparedStatement,
    add_count: PreparedStatement,
    add_week_count: PreparedStatement,
    select_counts: PreparedStatement,
    select_labels: PreparedStatement,
    select_labels_sentences: PreparedStatement,
    select_week_counts: PreparedStatement,
}

/// The deltas of one learner since the last emulated flush.
#[derive(Default)]
struct Deltas {
    counts: HashMap<Key, i64>,
    weeks: HashMap<(NaiveDate, Key), i64>,
}

/// What the raw phase sent, for its figures per request.
#[derive(Debug, Default)]
pub struct Sent {
    /// Requests made, the warm-up's included.
    pub requests: AtomicU64,
    pub report_batches: AtomicU64,
    pub reads: AtomicU64,
    pub counter_batches: AtomicU64,
    pub counter_statements: AtomicU64,
}

/// The raw phase's CQL work per request (the warm-up's included on both
/// sides, as errata's own counts are).
#[derive(Debug, Clone, Serialize)]
pub struct RawCosts {
    pub requests: u64,
    pub cql_round_trips_per_request: f64,
    pub report_batches: u64,
    pub reads: u64,
    pub counter_batches: u64,
    pub counter_statements: u64,
}

impl RawCosts {
    pub fn print(&self) {
        println!(
            "  per request: CQL round trips {:.2} ({} report batches, {} reads, {} counter batches of {} statements, for {} requests)",
            self.cql_round_trips_per_request,
            self.report_batches,
            self.reads,
            self.counter_batches,
            self.counter_statements,
            self.requests
        );
    }
}

pub struct Raw {
    session: Session,
    s: Statements,
    pending: Mutex<HashMap<Uuid, Deltas>>,
    /// What errata's replica would remember having written
    /// (`written.rs`), so that the same rewrites are left out.
    written: Mutex<Written>,
    /// Write every bucket row and spelling again, remembered or not (what
    /// errata did before `written.rs`): the lever's A/B in one run.
    rewrites: AtomicBool,
    pub sent: Sent,
}

/// errata's `written.rs`: the (learner, month) bucket rows written, and
/// the earliest report time (µs) whose spelling of an error was written.
#[derive(Default)]
struct Written {
    buckets: HashSet<(Uuid, i32)>,
    spellings: HashMap<(Uuid, Key), i64>,
}

async fn prepare(
    session: &Session,
    cql: &str,
    idempotent: bool,
) -> anyhow::Result<PreparedStatement> {
    let mut statement = session
        .prepare(cql)
        .await
        .with_context(|| format!("preparing {cql}"))?;
    statement.set_is_idempotent(idempotent);
    Ok(statement)
}

impl Raw {
    /// Connects as errata does (`session.rs`, `connect`) to the keyspace.
    pub async fn connect(nodes: &str, keyspace: &str) -> anyhow::Result<Self> {
        let profile = ExecutionProfile::builder()
            .request_timeout(Some(REQUEST_TIMEOUT))
            .consistency(Consistency::LocalQuorum)
            .serial_consistency(Some(SerialConsistency::LocalSerial))
            .load_balancing_policy(DefaultPolicy::builder().token_aware(true).build())
            .build();
        let nodes: Vec<&str> = nodes
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        let session = SessionBuilder::new()
            .known_nodes(&nodes)
            .default_execution_profile_handle(profile.into_handle())
            .use_keyspace(keyspace, false)
            .build()
            .await
            .context("raw: connecting to the CQL nodes")?;
        let p = |cql, idempotent| prepare(&session, cql, idempotent);
        let s = Statements {
            insert_event: p(INSERT_EVENT, true).await?,
            insert_bucket: p(INSERT_BUCKET, true).await?,
            insert_answer_bucket: p(INSERT_ANSWER_BUCKET, true).await?,
            label_spelling: p(LABEL_SPELLING, true).await?,
            label_seen: p(LABEL_SEEN, true).await?,
            label_seen_sentence: p(LABEL_SEEN_SENTENCE, true).await?,
            insert_lapse: p(INSERT_LAPSE, true).await?,
            add_count: p(ADD_COUNT, false).await?,
            add_week_count: p(ADD_WEEK_COUNT, false).await?,
            select_counts: p(SELECT_COUNTS, true).await?,
            select_labels: p(SELECT_LABELS, true).await?,
            select_labels_sentences: p(SELECT_LABELS_SENTENCES, true).await?,
            select_week_counts: p(SELECT_WEEK_COUNTS, true).await?,
        };
        Ok(Self {
            session,
            s,
            pending: Mutex::new(HashMap::new()),
            written: Mutex::new(Written::default()),
            rewrites: AtomicBool::new(false),
            sent: Sent::default(),
        })
    }

    /// Whether the phases from now on write every bucket row and spelling
    /// again (see [`Raw::rewrites`]).
    pub fn set_rewrites(&self, on: bool) {
        self.rewrites.store(on, Ordering::Relaxed);
    }

    pub fn rewrites(&self) -> bool {
        self.rewrites.load(Ordering::Relaxed)
    }

    /// What the phase sent per request (and forgets it for the next).
    pub fn take_costs(&self) -> RawCosts {
        let take = |a: &AtomicU64| a.swap(0, Ordering::Relaxed);
        let requests = take(&self.sent.requests);
        let report_batches = take(&self.sent.report_batches);
        let reads = take(&self.sent.reads);
        let counter_batches = take(&self.sent.counter_batches);
        let counter_statements = take(&self.sent.counter_statements);
        let trips = (report_batches + reads + counter_batches) as f64;
        RawCosts {
            requests,
            cql_round_trips_per_request: if requests > 0 {
                trips / requests as f64
            } else {
                0.0
            },
            report_batches,
            reads,
            counter_batches,
            counter_statements,
        }
    }

    /// One report of `points` about `utterance`: errata's batch, and its
    /// deltas kept for the emulated flusher. True when the batch was
    /// applied.
    pub async fn ingest(&self, learner: &Learner, utterance: Uuid, points: &[Picked]) -> bool {
        self.sent.requests.fetch_add(1, Ordering::Relaxed);
        let at = Utc::now();
        let fingerprint = Uuid::new_v4();
        let user = learner.user_id;
        let month = at.year() * 100 + at.month() as i32;
        let ts = CqlTimestamp(at.timestamp_millis());
        let micros = at.timestamp_micros();
        let s = &self.s;
        let snippet = SENTENCES[(utterance.as_u128() % SENTENCES.len() as u128) as usize];
        // The report's distinct errors in order, each with its points.
        let mut tally: Vec<(Key, &Picked, Vec<&Picked>)> = Vec::new();
        for point in points {
            let key = point.key();
            match tally.iter_mut().find(|t| t.0 == key) {
                Some(t) => t.2.push(point),
                None => tally.push((key, point, vec![point])),
            }
        }
        let mut batch = Batch::new(BatchType::Unlogged);
        batch.set_is_idempotent(true);
        let mut values: Rows = Vec::new();
        let mut add = |statement: &PreparedStatement, row: Box<dyn SerializeRow + Send + Sync>| {
            batch.append_statement(statement.clone());
            values.push(row);
        };
        // errata leaves out the rewrites its replica knows it made.
        let (bucket_written, spelled): (bool, Vec<bool>) = if self.rewrites() {
            (false, vec![false; tally.len()])
        } else {
            let written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
            (
                written.buckets.contains(&(user, month)),
                tally
                    .iter()
                    .map(|(key, _, _)| {
                        written
                            .spellings
                            .get(&(user, key.clone()))
                            .is_some_and(|t| *t <= micros)
                    })
                    .collect(),
            )
        };
        if !bucket_written {
            add(&s.insert_bucket, Box::new((user, month)));
            add(&s.insert_answer_bucket, Box::new((user, month)));
        }
        for (((ck, sk), first, _), _) in tally.iter().zip(&spelled).filter(|(_, s)| !**s) {
            add(
                &s.label_spelling,
                Box::new((
                    SPELLING_CLOCK - micros,
                    clean(first.category),
                    clean(first.subcategory),
                    user,
                    ck.clone(),
                    sk.clone(),
                )),
            );
        }
        let slot = (utterance.as_u128() % SENTENCE_SLOTS) as i32;
        for ((ck, sk), _, all) in &tally {
            match all.iter().find_map(|p| p.correction) {
                Some(correction) => {
                    let sentence: Sentence = (
                        ts,
                        learner.conversation_id,
                        utterance,
                        Some(snippet.to_owned()),
                        Some(correction.to_owned()),
                        None,
                    );
                    add(
                        &s.label_seen_sentence,
                        Box::new((micros, ts, slot, sentence, user, ck.clone(), sk.clone())),
                    );
                }
                None => add(
                    &s.label_seen,
                    Box::new((micros, ts, user, ck.clone(), sk.clone())),
                ),
            }
        }
        for (index, point) in points.iter().enumerate() {
            let (ck, sk) = point.key();
            add(
                &s.insert_event,
                Box::new((
                    user,
                    month,
                    ts,
                    Uuid::new_v5(&fingerprint, index.to_string().as_bytes()),
                    Some(learner.conversation_id),
                    Some(utterance),
                    ck,
                    sk,
                    Some(clean(point.category)),
                    Some(clean(point.subcategory)),
                    Some(snippet.to_owned()),
                    point.correction.map(str::to_owned),
                    None::<String>,
                )),
            );
        }
        for ((ck, sk), first, _) in &tally {
            let encoded = format!("{}:{ck}{sk}", ck.len());
            add(
                &s.insert_lapse,
                Box::new((
                    user,
                    month,
                    ts,
                    Uuid::new_v5(&fingerprint, format!("lapse/{encoded}").as_bytes()),
                    Some("lapse".to_owned()),
                    None::<String>,
                    ck.clone(),
                    sk.clone(),
                    clean(first.category),
                    clean(first.subcategory),
                    1i8,
                    None::<bool>,
                )),
            );
        }
        self.sent.report_batches.fetch_add(1, Ordering::Relaxed);
        if self.session.batch(&batch, values).await.is_err() {
            return false;
        }
        {
            let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
            written.buckets.insert((user, month));
            for (key, _, _) in &tally {
                let t = written
                    .spellings
                    .entry((user, key.clone()))
                    .or_insert(micros);
                *t = (*t).min(micros);
            }
        }
        let week = week_start(at);
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let deltas = pending.entry(user).or_default();
        for (key, _, all) in tally {
            let n = all.len() as i64;
            *deltas.weeks.entry((week, key.clone())).or_insert(0) += n;
            *deltas.counts.entry(key).or_insert(0) += n;
        }
        true
    }

    /// The emulated flusher: every `interval`, the deltas of every learner
    /// as one counter batch each, until `stop` is set; then the rest.
    pub async fn flusher(self: Arc<Self>, interval: Duration, stop: Arc<tokio::sync::Notify>) {
        loop {
            let stopped = tokio::select! {
                () = stop.notified() => true,
                () = tokio::time::sleep(interval) => false,
            };
            self.clone().flush().await;
            if stopped {
                return;
            }
        }
    }

    async fn flush(self: Arc<Self>) {
        let dirty =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        let mut running = JoinSet::new();
        for (user, deltas) in dirty {
            if running.len() >= FLUSH_CONCURRENCY {
                running.join_next().await;
            }
            let raw = self.clone();
            running.spawn(async move { raw.counter_batch(user, deltas).await });
        }
        while running.join_next().await.is_some() {}
    }

    /// `counters.rs`, `Counters::apply`.
    async fn counter_batch(&self, user: Uuid, deltas: Deltas) {
        let mut batch = Batch::new(BatchType::Counter);
        batch.set_is_idempotent(false);
        let mut values: Rows = Vec::new();
        for ((ck, sk), delta) in deltas.counts.into_iter().filter(|(_, d)| *d != 0) {
            batch.append_statement(self.s.add_count.clone());
            values.push(Box::new((Counter(delta), user, ck, sk)));
        }
        for ((week, (ck, sk)), delta) in deltas.weeks.into_iter().filter(|(_, d)| *d != 0) {
            batch.append_statement(self.s.add_week_count.clone());
            values.push(Box::new((Counter(delta), user, date(week), ck, sk)));
        }
        if values.is_empty() {
            return;
        }
        self.sent
            .counter_statements
            .fetch_add(values.len() as u64, Ordering::Relaxed);
        self.sent.counter_batches.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.session.batch(&batch, values).await {
            eprintln!("\n  raw: a counter batch failed: {e}");
        }
    }

    /// The reads of one practice (`recent`: ranked by recency) or, with
    /// `progress`, of the progress page. True when every read answered.
    pub async fn read(&self, user: Uuid, recent: bool, progress: bool) -> bool {
        self.sent.requests.fetch_add(1, Ordering::Relaxed);
        let s = &self.s;
        let today = Utc::now();
        let weeks = if progress {
            Some(PROGRESS_WEEKS)
        } else if recent {
            Some(RECENT_WEEKS)
        } else {
            None
        };
        let labels = if progress {
            &s.select_labels
        } else {
            &s.select_labels_sentences
        };
        let counts = async {
            self.sent.reads.fetch_add(1, Ordering::Relaxed);
            let rows = self
                .session
                .execute_unpaged(&s.select_counts, (user,))
                .await?
                .into_rows_result()?;
            let n = rows
                .rows::<(String, String, Option<Counter>)>()?
                .collect::<Result<Vec<_>, _>>()?
                .len();
            Ok::<_, anyhow::Error>(n)
        };
        let labels = async {
            self.sent.reads.fetch_add(1, Ordering::Relaxed);
            let rows = self
                .session
                .execute_unpaged(labels, (user,))
                .await?
                .into_rows_result()?;
            let n = if progress {
                rows.rows::<(
                    String,
                    String,
                    Option<String>,
                    Option<String>,
                    Option<CqlTimestamp>,
                )>()?
                .collect::<Result<Vec<_>, _>>()?
                .len()
            } else {
                type WithSentences = (
                    String,
                    String,
                    Option<String>,
                    Option<String>,
                    Option<CqlTimestamp>,
                    Option<HashMap<i32, Sentence>>,
                );
                rows.rows::<WithSentences>()?
                    .collect::<Result<Vec<_>, _>>()?
                    .len()
            };
            Ok::<_, anyhow::Error>(n)
        };
        let weekly = async {
            let Some(weeks) = weeks else {
                return Ok::<_, anyhow::Error>(0);
            };
            let since = week_start(today) - Days::new(7 * (weeks - 1));
            let mut paging = PagingState::start();
            let mut n = 0;
            loop {
                self.sent.reads.fetch_add(1, Ordering::Relaxed);
                let (result, next) = self
                    .session
                    .execute_single_page(&s.select_week_counts, (user, date(since)), paging)
                    .await?;
                let rows = result.into_rows_result()?;
                n += rows
                    .rows::<(CqlDate, String, String, Option<Counter>)>()?
                    .collect::<Result<Vec<_>, _>>()?
                    .len();
                match next.into_paging_control_flow() {
                    std::ops::ControlFlow::Break(()) => return Ok(n),
                    std::ops::ControlFlow::Continue(state) => paging = state,
                }
            }
        };
        tokio::try_join!(counts, labels, weekly).is_ok()
    }
}

/// errata's `ErrorName`: trimmed, inner whitespace collapsed.
fn clean(name: &str) -> String {
    name.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Picked {
    /// errata's `ErrorPoint::key`: the cleaned names, lowercased.
    fn key(&self) -> Key {
        (
            clean(self.category).to_lowercase(),
            clean(self.subcategory).to_lowercase(),
        )
    }
}

/// errata's `weeks::week_start`: the Monday (UTC) of the week.
fn week_start(t: DateTime<Utc>) -> NaiveDate {
    let day = t.date_naive();
    day - Days::new(u64::from(day.weekday().num_days_from_monday()))
}

/// errata's `session::date`: days from 2^31 = 1970-01-01.
fn date(day: NaiveDate) -> CqlDate {
    let days = (day - NaiveDate::default()).num_days();
    CqlDate(((1i64 << 31) + days) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_weeks_follow_errata() {
        let p = Picked {
            category: "grammar",
            subcategory: " subject-verb  agreement ",
            correction: None,
        };
        assert_eq!(
            p.key(),
            ("grammar".to_owned(), "subject-verb agreement".to_owned())
        );
        let t = DateTime::parse_from_rfc3339("2026-12-06T23:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            week_start(t),
            NaiveDate::from_ymd_opt(2026, 11, 30).unwrap()
        );
        assert_eq!(date(NaiveDate::default()), CqlDate(1 << 31));
    }
}
