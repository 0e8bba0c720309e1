//! The storage seam. Handlers talk to a [`Store`]; which backend runs behind
//! it (the embedded SQLite file or ScyllaDB/Cassandra with a Redis buffer) is
//! decided once, at start-up, from the configuration.

pub mod closer;
pub mod cql;
mod records;
pub mod retry;
mod sentences;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::NaiveDate;
use uuid::Uuid;

use crate::config::{Config, StoreKind};
use crate::domain::weeks::weeks_before;
use crate::domain::{rank_recent, Decay, ErrorFrequency, FrequencyTable, OwnSentence, WeekCount};

pub use self::records::*;

/// What a practice request is built from: the learner's top errors and,
/// for each, their own latest sentences that carried it and whose
/// correction is known.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PracticeInputs {
    /// In rank order (empty when the learner has no errors yet).
    pub top: Vec<ErrorFrequency>,
    /// For each of `top`, in the same order: the latest distinct sentences
    /// (by utterance) that carried it with a correction, newest first.
    pub sentences: Vec<Vec<OwnSentence>>,
    /// For `Rank::Recent`, each top error's decayed score (else empty).
    pub scores: Vec<f64>,
}

/// The order of the top errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rank {
    /// By all-time count.
    Frequency,
    /// By the weekly counts, decayed by age, as of the week starting
    /// `current_week`.
    Recent {
        decay: Decay,
        current_week: NaiveDate,
    },
}

/// How far back, and for how many sentences, a practice request looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PracticeQuery {
    /// How many top errors.
    pub top_n: usize,
    /// At most this many of the learner's own sentences per top error.
    pub sentences_per_error: usize,
    /// Only the latest `window` error events are searched for sentences.
    pub window: usize,
    pub rank: Rank,
}

/// A learner's all-time counts and their weekly counts from some week on,
/// acknowledged ones not yet durable included.
#[derive(Debug, Clone, Default)]
pub struct WeeklyHistory {
    pub table: FrequencyTable,
    pub weeks: Vec<WeekCount>,
}

impl WeeklyHistory {
    /// The top errors and their scores, as `rank` orders them.
    pub fn top(&self, query: &PracticeQuery) -> (Vec<ErrorFrequency>, Vec<f64>) {
        match query.rank {
            Rank::Frequency => (self.table.top(query.top_n), Vec::new()),
            Rank::Recent {
                decay,
                current_week,
            } => rank_recent(&self.table, &self.weeks, current_week, decay, query.top_n)
                .into_iter()
                .map(|s| (s.error, s.score))
                .unzip(),
        }
    }
}

impl Rank {
    /// The first week a ranking reads weekly counts from (`None`: it reads
    /// none).
    pub fn since(&self) -> Option<NaiveDate> {
        match self {
            Self::Frequency => None,
            Self::Recent {
                decay,
                current_week,
            } => Some(weeks_before(*current_week, decay.lookback_weeks() - 1)),
        }
    }
}

impl PracticeInputs {
    /// Picks the sentences for `top` from the latest events (newest first):
    /// for each error, its first `per_error` distinct utterances with text.
    pub fn from_recent(top: Vec<ErrorFrequency>, recent: &[RecentError], per_error: usize) -> Self {
        let mut picker = sentences::SentencePicker::new(top, per_error);
        for event in recent {
            if let Some(i) = picker.wants(&event.key.category, &event.key.subcategory) {
                picker.offer(
                    i,
                    event.utterance_id,
                    event.utterance.as_deref(),
                    &event.correction,
                );
            }
        }
        picker.finish()
    }

    /// Every top error already has all the sentences it can show.
    fn decided(&self, per_error: usize) -> bool {
        self.sentences.iter().all(|s| s.len() >= per_error)
    }
}

/// The latest events are read in this smaller window first; the full window
/// is read only when the small one cannot already decide every top error's
/// sentences (the result is the same: the small window starts the full one).
const FIRST_PRACTICE_WINDOW: usize = 48;

/// What learners written by `errata seed` said (each utterance gets one, in
/// turn), in both backends.
pub(crate) const SEEDED_SAID: &[&str] = &[
    "She go to school every day.",
    "I am agree with your idea.",
    "Yesterday I have visited my grandmother.",
    "He don't know the answer of the question.",
    "We was waiting since two hours.",
    "If I would know, I would tell you.",
    "Can you explain me this word?",
    "I am living here from five years.",
];

/// How long a counted request is remembered, in every backend: a retry
/// within this time counts once. (The clients' retry horizon; in cql mode it
/// dominates Redis memory, see docs/operations.md.)
pub const DEDUP_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// What a backend can fail with. The HTTP layer maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Email already registered")]
    EmailTaken,
    #[error("User not found")]
    UserNotFound,
    #[error("Conversation not found")]
    ConversationNotFound,
    #[error("Utterance not found")]
    UtteranceNotFound,
    /// A backend is unreachable or overloaded; the request may be retried.
    /// The message is errata's own; the driver's error is the source.
    #[error("{backend}: {context}")]
    Unavailable {
        backend: Backend,
        context: String,
        #[source]
        source: Option<BoxError>,
    },
    /// A bug or a broken invariant (500).
    #[error("{context}")]
    Internal {
        context: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The configuration cannot work (a bad keyspace name, a consistency
    /// level that does not exist, …).
    #[error("{0}")]
    Config(String),
}

/// Any error a backend's driver returns, kept as the source of ours.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which backend did not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Cql,
    Redis,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "sqlite",
            Self::Cql => "cql",
            Self::Redis => "redis",
        })
    }
}

impl Backend {
    /// The short, stable reason a response gives (never a driver's text).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite store unavailable",
            Self::Cql => "CQL store unavailable",
            Self::Redis => "Redis unavailable",
        }
    }
}

impl StoreError {
    /// `backend` did not answer while doing `context`, because of `source`.
    pub fn unavailable(
        backend: Backend,
        context: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::Unavailable {
            backend,
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// `backend` cannot serve this now, for a reason of errata's own.
    pub fn busy(backend: Backend, context: impl Into<String>) -> Self {
        Self::Unavailable {
            backend,
            context: context.into(),
            source: None,
        }
    }

    /// Doing `context` failed because of `source`, which should not happen.
    pub fn internal(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Internal {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// A broken invariant with no underlying error.
    pub fn bug(context: impl Into<String>) -> Self {
        Self::Internal {
            context: context.into(),
            source: None,
        }
    }

    /// What a response may say about this error: a short, stable reason,
    /// never a driver's message or a backend's address (those are logged).
    pub fn public_reason(&self) -> String {
        match self {
            Self::Unavailable {
                backend,
                source: Some(_),
                ..
            } => backend.reason().to_owned(),
            // errata's own words, about the request (retry it, …).
            Self::Unavailable {
                backend, context, ..
            } => format!("{}: {context}", backend.reason()),
            Self::Internal { .. } | Self::Config(_) => "Internal Server Error".to_owned(),
            other => other.to_string(),
        }
    }

    /// The whole chain, for logs: this error and every source below it.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            text.push_str(": ");
            text.push_str(&e.to_string());
            source = e.source();
        }
        text
    }
}

/// Everything errata keeps, behind one interface.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn create_user(&self, new: NewUser) -> Result<User, StoreError>;

    async fn user(&self, user_id: Uuid) -> Result<Option<User>, StoreError>;

    /// Fails with `UserNotFound` when the learner does not exist.
    async fn create_conversation(&self, user_id: Uuid) -> Result<Conversation, StoreError>;

    /// Fails with `ConversationNotFound` when the conversation does not exist
    /// or belongs to another learner.
    async fn create_utterance(&self, new: NewUtterance) -> Result<Utterance, StoreError>;

    /// Counts the report's error points once, however often it is retried.
    /// Fails, counting nothing, when the learner, the conversation or the
    /// utterance is missing or they do not belong together.
    async fn record_errors(&self, report: ErrorReport) -> Result<RecordOutcome, StoreError>;

    /// Every error frequency of the learner, including acknowledged ones not
    /// yet made durable. Fails with `UserNotFound` for an unknown learner.
    async fn frequencies(&self, user_id: Uuid) -> Result<FrequencyTable, StoreError>;

    /// The learner's latest error points, newest first. Fails with
    /// `UserNotFound` for an unknown learner.
    async fn recent_errors(
        &self,
        user_id: Uuid,
        limit: usize,
    ) -> Result<Vec<RecentError>, StoreError>;

    /// The latest error points to pick the learner's own sentences from:
    /// as [`Store::recent_errors`], except that a point's names may be
    /// spelled as it was recorded (practice matches points by their
    /// normalised key and shows the names of the top errors), which spares
    /// a backend the read of the learner's spellings.
    async fn recent_sentences(
        &self,
        user_id: Uuid,
        limit: usize,
    ) -> Result<Vec<RecentError>, StoreError> {
        self.recent_errors(user_id, limit).await
    }

    /// The learner's all-time counts and weekly counts of the weeks from
    /// `since` on, read together. Fails with `UserNotFound` for an unknown
    /// learner.
    async fn weekly_history(
        &self,
        user_id: Uuid,
        since: NaiveDate,
    ) -> Result<WeeklyHistory, StoreError>;

    /// The learner's top errors and their own sentences for them, read
    /// together. Fails with `UserNotFound` for an unknown learner. Backends
    /// that can answer it in one read override this. Shared, because a
    /// backend may keep the answer and hand the same one out again.
    async fn practice_inputs(
        &self,
        user_id: Uuid,
        query: PracticeQuery,
    ) -> Result<Arc<PracticeInputs>, StoreError> {
        let (top, scores) = match query.rank.since() {
            None => (
                self.frequencies(user_id).await?.top(query.top_n),
                Vec::new(),
            ),
            Some(since) => self.weekly_history(user_id, since).await?.top(&query),
        };
        if top.is_empty() {
            return Ok(Arc::default());
        }
        let first = query.window.min(FIRST_PRACTICE_WINDOW);
        let recent = self.recent_sentences(user_id, first).await?;
        let inputs = PracticeInputs::from_recent(top.clone(), &recent, query.sentences_per_error);
        if recent.len() < first
            || first == query.window
            || inputs.decided(query.sentences_per_error)
        {
            return Ok(Arc::new(PracticeInputs { scores, ..inputs }));
        }
        let recent = self.recent_sentences(user_id, query.window).await?;
        let inputs = PracticeInputs::from_recent(top, &recent, query.sentences_per_error);
        Ok(Arc::new(PracticeInputs { scores, ..inputs }))
    }

    /// Erases the learner and everything stored about them, in every
    /// table and buffer; afterwards the learner is unknown everywhere and
    /// the e-mail free. Fails with `UserNotFound` for an unknown learner.
    async fn erase_user(&self, user_id: Uuid) -> Result<(), StoreError>;

    /// The learner and their records, page by page (`None` for an unknown
    /// learner). Their frequencies are read with [`Store::frequencies`].
    async fn export(&self, user_id: Uuid) -> Result<Option<(User, ExportPages)>, StoreError>;

    /// A number that grows with each call for the learner: it moves the
    /// exercise rotation along.
    async fn next_exercise_round(&self, user_id: Uuid) -> Result<u64, StoreError>;

    /// `Ok` when every backend answers.
    async fn check_ready(&self) -> Result<(), StoreError>;

    /// Makes every acknowledged write durable in the primary store now.
    /// Returns how many learners it flushed.
    async fn flush(&self) -> Result<usize, StoreError> {
        Ok(0)
    }

    /// Recomputes frequencies from the event log and corrects the counts;
    /// `None` repairs every learner. Returns how many counts it corrected.
    async fn repair(&self, _user_id: Option<Uuid>) -> Result<usize, StoreError> {
        Ok(0)
    }

    /// The background workers this store runs beside the requests, by name
    /// (all stopped by one signal and joined by `shutdown` or `close`).
    fn workers(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// Stops background work after draining what is buffered.
    async fn shutdown(&self) -> Result<(), StoreError> {
        self.flush().await.map(|_| ())
    }

    /// Stops background work, leaving what is buffered for the next
    /// flusher (for commands that only read or correct, such as repair).
    async fn close(&self) -> Result<(), StoreError> {
        self.shutdown().await
    }
}

/// What a store runs beside the requests it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Background {
    /// Everything serving needs (in cql mode, the flusher).
    Serve,
    /// Only what the store cannot work without: a one-shot command.
    Command,
}

/// Opens the backend the configuration names, for serving.
pub async fn open(config: &Config) -> Result<Arc<dyn Store>, StoreError> {
    open_for(config, Background::Serve).await
}

/// Opens the backend the configuration names, with that background work.
pub async fn open_for(
    config: &Config,
    background: Background,
) -> Result<Arc<dyn Store>, StoreError> {
    match config.store {
        StoreKind::Embedded => Ok(Arc::new(sqlite::SqliteStore::open(&config.data_dir).await?)),
        StoreKind::Cql => Ok(Arc::new(cql::CqlStore::open(config, background).await?)),
    }
}

/// Creates what the configured backend needs before serving; returns a line
/// saying what was done.
pub async fn migrate(config: &Config) -> Result<String, StoreError> {
    match config.store {
        StoreKind::Embedded => {
            sqlite::SqliteStore::open(&config.data_dir).await?;
            Ok(format!(
                "embedded store: the schema in {} is up to date (it is also created at start-up)",
                config.data_dir.display()
            ))
        }
        StoreKind::Cql => cql::schema::migrate(config).await,
    }
}
