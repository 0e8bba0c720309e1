//! The records a learner creates, as every backend stores and returns them.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreError;
use crate::domain::{Correction, Email, ErrorKey, ErrorPoint, Timezone, Username};

/// The current time at the precision every backend keeps (milliseconds, as
/// CQL timestamps), so a value reads back exactly as it was answered.
pub fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(3)
}

/// A learner's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub user_id: Uuid,
    pub username: String,
    pub email: String,
    pub created_at: DateTime<Utc>,
    /// The IANA time zone the learner's days are counted in (`None`: UTC).
    pub timezone: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: Username,
    pub email: Email,
    pub timezone: Option<Timezone>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Utterance {
    pub utterance_id: Uuid,
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    pub content: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewUtterance {
    pub user_id: Uuid,
    pub conversation_id: Uuid,
    pub content: Option<String>,
}

/// The error points the AI found in one utterance, as one request.
#[derive(Debug, Clone)]
pub struct ErrorReport {
    pub user_id: Uuid,
    pub conversation_id: Uuid,
    pub utterance_id: Uuid,
    pub points: Vec<ErrorPoint>,
    /// The request's identity: a retry with the same fingerprint counts once.
    pub fingerprint: Uuid,
    /// When the request was received: its events' time, and so the week
    /// its points are counted in.
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordOutcome {
    /// Error points counted by this request (0 for a duplicate).
    pub recorded: usize,
    /// The request had already been recorded.
    pub duplicate: bool,
}

/// One recorded error point, newest first in listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentError {
    pub key: ErrorKey,
    pub category: String,
    pub subcategory: String,
    pub conversation_id: Uuid,
    pub utterance_id: Uuid,
    /// The utterance's text (or the stored snippet of it), when it had any.
    pub utterance: Option<String>,
    /// What the AI proposed for this point, when it said.
    pub correction: Correction,
    pub occurred_at: DateTime<Utc>,
}

/// A sign-up refused because its e-mail is registered is taken for a retry
/// of the sign-up that registered it when that account has the same
/// username and e-mail (as spelled) and was created at most this long
/// before: its answer was lost (a timeout, a broken connection), so the
/// client asked again. The cost: within it, a second sign-up with the very
/// same username and e-mail is answered with the first account, not 400.
pub const SIGN_UP_RETRY_WINDOW: chrono::Duration = chrono::Duration::minutes(10);

impl User {
    /// A new account: a time-ordered id, created now.
    pub fn new(new: NewUser) -> Self {
        Self {
            user_id: Uuid::now_v7(),
            username: new.username.as_str().to_owned(),
            email: new.email.as_str().to_owned(),
            created_at: now(),
            timezone: new.timezone.map(|tz| tz.name().to_owned()),
        }
    }

    /// The time zone the learner's days are counted in.
    pub fn tz(&self) -> Timezone {
        Timezone::from_stored(self.timezone.as_deref())
    }

    /// Whether `attempt`, refused for this account's e-mail, is a retry of
    /// the sign-up that made this account ([`SIGN_UP_RETRY_WINDOW`]).
    pub fn retried_by(&self, attempt: &User) -> bool {
        let age = attempt.created_at - self.created_at;
        self.username == attempt.username
            && self.email == attempt.email
            && age >= -SIGN_UP_RETRY_WINDOW
            && age <= SIGN_UP_RETRY_WINDOW
    }
}

impl Conversation {
    /// A new conversation of the learner, started now.
    pub fn new(user_id: Uuid) -> Self {
        Self {
            conversation_id: Uuid::now_v7(),
            user_id,
            started_at: now(),
        }
    }
}

impl Utterance {
    /// A new utterance, said now.
    pub fn new(new: NewUtterance) -> Self {
        Self {
            utterance_id: Uuid::now_v7(),
            conversation_id: new.conversation_id,
            user_id: new.user_id,
            content: new.content,
            created_at: now(),
        }
    }
}

/// One distinct error of a report: how many of its points carry it, and the
/// first of them (whose spelling a new row shows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointTally<'a> {
    pub key: ErrorKey,
    pub first: &'a ErrorPoint,
    pub count: i64,
}

impl ErrorReport {
    /// The report's distinct errors in the order they first appear, each
    /// with its number of points (every point counts, so a repeated error
    /// adds more than one). A report holds at most 64 points, so a scan
    /// beats a map.
    pub fn tally(&self) -> Vec<PointTally<'_>> {
        let mut tally: Vec<PointTally<'_>> = Vec::new();
        for point in &self.points {
            let key = point.key();
            match tally.iter_mut().find(|t| t.key == key) {
                Some(t) => t.count += 1,
                None => tally.push(PointTally {
                    key,
                    first: point,
                    count: 1,
                }),
            }
        }
        tally
    }

    /// How many points each distinct error has, as count deltas.
    pub fn deltas(&self) -> Vec<(ErrorKey, i64)> {
        self.tally().into_iter().map(|t| (t.key, t.count)).collect()
    }
}

/// One recorded error point as the store keeps it, for the learner's
/// export: every stored field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The event's id in its backend (a number in embedded mode, a UUID in
    /// cql mode).
    pub event_id: String,
    pub conversation_id: Uuid,
    pub utterance_id: Uuid,
    pub category: String,
    pub subcategory: String,
    pub occurred_at: DateTime<Utc>,
    /// The utterance's text as kept with the event (cql mode; the embedded
    /// store keeps it only with the utterance).
    pub snippet: Option<String>,
    /// The AI's correction and its explanation, when it gave them.
    pub correction: Option<String>,
    pub explanation: Option<String>,
}

/// A page of a learner's export. Pages come section by section:
/// conversations, then utterances, then error events, then reviews.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportPage {
    Conversations(Vec<Conversation>),
    Utterances(Vec<Utterance>),
    ErrorEvents(Vec<StoredEvent>),
    /// Answers and lapses, the memory model's reviews.
    Reviews(Vec<crate::store::StoredReview>),
}

/// A learner's records, read page by page as the stream is polled, so an
/// export holds one page in memory however long the history.
pub type ExportPages = futures_util::stream::BoxStream<'static, Result<ExportPage, StoreError>>;

/// How many records an export reads at once.
pub const EXPORT_PAGE: usize = 1000;

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
