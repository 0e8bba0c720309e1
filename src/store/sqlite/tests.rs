//! The embedded store against real SQLite files in temporary directories.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::connection::DATABASE_FILE;
use super::reads;
use super::writes::FINGERPRINT_CHUNK;
use super::{SqliteStore, WalLimits};
use crate::domain::{Correction, Email, ErrorName, ErrorPoint, Username};
use crate::store::{
    ErrorReport, NewUser, NewUtterance, PracticeInputs, PracticeQuery, Rank, Store, StoreError,
    DEDUP_WINDOW,
};

const NAMES: [(&str, &str); 5] = [
    ("Grammar", "Articles"),
    ("Grammar", "Verb Tense"),
    ("Vocabulary", "Word Choice"),
    ("Fluency", "Filler Words"),
    ("Pronunciation", "Vowels"),
];

/// Error point `i`: most carry the AI's correction, every fourth none.
pub(super) fn point(i: usize) -> ErrorPoint {
    let (category, subcategory) = NAMES[i % NAMES.len()];
    ErrorPoint {
        category: ErrorName::parse(category).unwrap(),
        subcategory: ErrorName::parse(subcategory).unwrap(),
        correction: Correction {
            text: (i % 4 != 3).then(|| format!("corrected {i}")),
            explanation: i.is_multiple_of(2).then(|| format!("because {i}")),
        },
    }
}

/// A new learner with one conversation: (user, conversation).
async fn learner(store: &SqliteStore, name: &str) -> (Uuid, Uuid) {
    let user = store
        .create_user(NewUser {
            username: Username::parse(name).unwrap(),
            email: Email::parse(&format!("{name}@example.com")).unwrap(),
            timezone: None,
        })
        .await
        .unwrap();
    let conversation = store.create_conversation(user.user_id).await.unwrap();
    (user.user_id, conversation.conversation_id)
}

/// A fresh store with one learner who said one sentence.
pub(super) struct OneLearner {
    /// Keeps the temporary data directory alive.
    pub dir: tempfile::TempDir,
    pub store: SqliteStore,
    /// (user, conversation)
    pub al: (Uuid, Uuid),
    pub said: Uuid,
}

pub(super) async fn one_learner_with_a_sentence() -> OneLearner {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let al = learner(&store, "al").await;
    let said = utterance(&store, al, Some("She go to school")).await;
    OneLearner {
        dir,
        store,
        al,
        said,
    }
}

async fn utterance(
    store: &SqliteStore,
    (user_id, conversation_id): (Uuid, Uuid),
    content: Option<&str>,
) -> Uuid {
    store
        .create_utterance(NewUtterance {
            user_id,
            conversation_id,
            content: content.map(str::to_owned),
        })
        .await
        .unwrap()
        .utterance_id
}

/// Under steady writes the WAL starts over instead of growing: with a
/// restart every 200 frames and a 256 KiB limit, the file is cut back
/// again and again (a WAL that is never restarted only ever grows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_under_steady_writes() {
    let dir = tempfile::tempdir().unwrap();
    let limits = WalLimits {
        restart_frames: 200,
        size_limit: 256 << 10,
    };
    let store = Arc::new(SqliteStore::open_with(dir.path(), limits).await.unwrap());
    let (user_id, conversation_id) = learner(&store, "ada").await;
    let utterance_id = utterance(&store, (user_id, conversation_id), Some("I has a cat")).await;
    let wal = dir.path().join(format!("{DATABASE_FILE}-wal"));
    let (mut last, mut shrunk, mut written) = (0u64, 0usize, 0usize);
    let started = std::time::Instant::now();
    // Keep writing until the checkpointer has had its turn many times.
    while started.elapsed() < Duration::from_secs(3) {
        let mut batch = tokio::task::JoinSet::new();
        for n in 0..16 {
            let store = store.clone();
            batch.spawn(async move {
                store
                    .record_errors(ErrorReport {
                        user_id,
                        conversation_id,
                        utterance_id,
                        points: vec![point(n), point(n + 1)],
                        fingerprint: Uuid::new_v4(),
                        received_at: crate::store::now(),
                    })
                    .await
                    .unwrap()
            });
        }
        written += batch.join_all().await.len();
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        if size < last {
            shrunk += 1;
        }
        last = size;
    }
    let table = store.frequencies(user_id).await.unwrap();
    assert_eq!(table.total(), 2 * written as i64, "every write counted");
    assert!(
        written > 2_000,
        "only {written} writes: the test proves nothing"
    );
    assert!(
        shrunk >= 2,
        "the WAL was cut back {shrunk} times over {written} writes; it is {last} bytes"
    );
}

/// The one-read practice query answers exactly what the generic one,
/// built from `frequencies` and `recent_errors`, answers.
#[tokio::test]
async fn practice_inputs_in_one_read_match_the_generic_answer() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let ada = learner(&store, "ada").await;
    // Utterances with text, blank text and none; each reported several
    // times with overlapping errors, so sentences repeat across events.
    let mut utterances = Vec::new();
    for n in 0..40 {
        let content = match n % 7 {
            0 => None,
            1 => Some("   ".to_owned()),
            _ => Some(format!("sentence number {n}")),
        };
        utterances.push(utterance(&store, ada, content.as_deref()).await);
    }
    for n in 0..150usize {
        let points = (0..1 + n % 3).map(|i| point(n * 7 % 11 + i)).collect();
        record(&store, ada, utterances[n * 13 % utterances.len()], points).await;
    }
    for (top_n, sentences_per_error, window) in [
        (5, 3, 200),
        (1, 3, 10),
        (3, 1, 48),
        (50, 10, 200),
        (2, 3, 1),
        (5, 0, 200),
    ] {
        let query = PracticeQuery {
            top_n,
            sentences_per_error,
            window,
            rank: Rank::Frequency,
        };
        assert_same_practice(&store, ada.0, query).await;
    }
    let full = PracticeQuery {
        top_n: 5,
        sentences_per_error: 3,
        window: 200,
        rank: Rank::Frequency,
    };
    let some = store.practice_inputs(ada.0, full).await.unwrap();
    assert!(some.sentences.iter().any(|s| s.len() == 3));

    // Ties: one report of five errors, each counted once at one time,
    // ranks by key alone; both paths must agree on the cut.
    let bo = learner(&store, "bo").await;
    let said = utterance(&store, bo, Some("She go home")).await;
    record(
        &store,
        bo,
        said,
        (0..NAMES.len()).rev().map(point).collect(),
    )
    .await;
    for top_n in 1..=NAMES.len() {
        assert_same_practice(&store, bo.0, PracticeQuery { top_n, ..full }).await;
    }

    let stranger = store.practice_inputs(Uuid::new_v4(), full).await;
    assert!(matches!(stranger, Err(StoreError::UserNotFound)));
}

/// Practice answers are kept in memory between writes; a write the
/// writer has acknowledged is in the very next answer.
#[tokio::test]
async fn kept_practice_inputs_follow_every_write() {
    let OneLearner {
        dir: _dir,
        store,
        al,
        said,
    } = one_learner_with_a_sentence().await;
    let query = PracticeQuery {
        top_n: 3,
        sentences_per_error: 3,
        window: 200,
        rank: Rank::Frequency,
    };
    let mut expected = 0;
    for round in 0..20 {
        let points: Vec<ErrorPoint> = (0..=round % 3).map(|_| point(0)).collect();
        expected += points.len() as i64;
        record(&store, al, said, points).await;
        // Twice: once filling the cache, once from it.
        for _ in 0..2 {
            let inputs = store.practice_inputs(al.0, query).await.unwrap();
            assert_eq!(inputs.top[0].frequency, expected, "round {round}");
            assert_eq!(inputs.sentences[0].len(), 1);
        }
    }
    // Reads racing writes: every answer a reader gets after a write was
    // acknowledged counts that write.
    let store = Arc::new(store);
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                record(&store, al, said, vec![point(0)]).await;
            }
        })
    };
    let mut last = expected;
    while !writer.is_finished() {
        let seen = store.practice_inputs(al.0, query).await.unwrap().top[0].frequency;
        assert!(seen >= last, "went back from {last} to {seen}");
        last = seen;
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    let seen = store.practice_inputs(al.0, query).await.unwrap().top[0].frequency;
    assert_eq!(seen, expected + 200);
}

/// Fingerprints are kept for a day: a retry within it counts once, and
/// the ones older than that are removed, over as many chunks as it takes.
#[tokio::test]
async fn old_fingerprints_expire_and_recent_ones_still_deduplicate() {
    let OneLearner {
        dir: _dir,
        store,
        al,
        said,
    } = one_learner_with_a_sentence().await;
    let report = |fingerprint: Uuid, received_at: DateTime<Utc>| ErrorReport {
        user_id: al.0,
        conversation_id: al.1,
        utterance_id: said,
        points: vec![point(0)],
        fingerprint,
        received_at,
    };
    let now = crate::store::now();
    let day_and_a_bit = chrono::Duration::hours(25);
    // More old ones than one chunk looks at.
    let old: Vec<Uuid> = (0..FINGERPRINT_CHUNK + 150)
        .map(|_| Uuid::new_v4())
        .collect();
    let recorded = futures_util::future::join_all(
        old.iter()
            .map(|f| store.record_errors(report(*f, now - day_and_a_bit))),
    )
    .await;
    assert!(recorded.iter().all(|r| r.as_ref().unwrap().recorded == 1));
    let recent = Uuid::new_v4();
    store.record_errors(report(recent, now)).await.unwrap();

    let removed = store
        .expire_fingerprints(now - chrono::Duration::from_std(DEDUP_WINDOW).unwrap())
        .await
        .unwrap();
    assert_eq!(removed, old.len());

    // The recent request is still known; an old one counts again.
    let retry = store.record_errors(report(recent, now)).await.unwrap();
    assert!(retry.duplicate);
    let again = store.record_errors(report(old[7], now)).await.unwrap();
    assert_eq!((again.recorded, again.duplicate), (1, false));
    let total = store.frequencies(al.0).await.unwrap().top(1)[0].frequency;
    assert_eq!(total, old.len() as i64 + 2);
}

/// A read holds its connection on its task's own thread, so a runtime
/// worker that found every connection taken would block until another
/// read ended. Sixteen reads on sixteen workers (more than the pool once
/// had connections) each hold a connection until all sixteen hold one.
#[tokio::test(flavor = "multi_thread", worker_threads = 16)]
async fn every_runtime_worker_can_hold_a_reader_at_once() {
    const READS: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let all_in = Arc::new(Rendezvous::new(READS));
    let reads: Vec<_> = (0..READS)
        .map(|_| {
            let (store, all_in) = (store.clone(), all_in.clone());
            tokio::spawn(async move {
                store.read(|conn| {
                    reads::check(conn)?;
                    Ok(all_in.arrive_and_wait(Duration::from_secs(10)))
                })
            })
        })
        .collect();
    for read in reads {
        let met = read.await.unwrap().unwrap();
        assert!(met, "a read waited for a connection another read held");
    }
}

/// Threads wait here until `count` of them have arrived, or time runs out.
struct Rendezvous {
    count: usize,
    arrived: Mutex<usize>,
    changed: Condvar,
}

impl Rendezvous {
    fn new(count: usize) -> Self {
        Self {
            count,
            arrived: Mutex::new(0),
            changed: Condvar::new(),
        }
    }

    /// True when all arrived within `timeout`.
    fn arrive_and_wait(&self, timeout: Duration) -> bool {
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.changed.notify_all();
        let (arrived, _) = self
            .changed
            .wait_timeout_while(arrived, timeout, |n| *n < self.count)
            .unwrap();
        *arrived >= self.count
    }
}

pub(super) async fn record(
    store: &SqliteStore,
    (user_id, conversation_id): (Uuid, Uuid),
    utterance_id: Uuid,
    points: Vec<ErrorPoint>,
) {
    store
        .record_errors(ErrorReport {
            user_id,
            conversation_id,
            utterance_id,
            points,
            fingerprint: Uuid::new_v4(),
            received_at: crate::store::now(),
        })
        .await
        .unwrap();
}

/// The one read answers what the generic two-step read answers.
async fn assert_same_practice(store: &SqliteStore, user_id: Uuid, query: PracticeQuery) {
    let top = store.frequencies(user_id).await.unwrap().top(query.top_n);
    let recent = store.recent_errors(user_id, query.window).await.unwrap();
    let expected = PracticeInputs::from_recent(top, &recent, query.sentences_per_error);
    let got = store.practice_inputs(user_id, query).await.unwrap();
    assert_eq!(*got, expected, "{query:?}");
}

#[tokio::test]
async fn seeded_learners_are_there_for_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    super::seed::seed(dir.path(), 3, 2, &mut out).unwrap();
    let lines: Vec<Vec<Uuid>> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').map(|id| id.parse().unwrap()).collect())
        .collect();
    assert_eq!(lines.len(), 3);
    let store = SqliteStore::open(dir.path()).await.unwrap();
    for ids in &lines {
        assert_eq!(ids.len(), 4, "user, conversation and two utterances");
        assert!(store.user(ids[0]).await.unwrap().is_some());
        // The seeded ids belong together: errors about them are recorded.
        let report = ErrorReport {
            user_id: ids[0],
            conversation_id: ids[1],
            utterance_id: ids[3],
            points: vec![point(0)],
            fingerprint: Uuid::new_v4(),
            received_at: crate::store::now(),
        };
        assert_eq!(store.record_errors(report).await.unwrap().recorded, 1);
    }
    // A data directory in use is refused.
    let mut out = Vec::new();
    assert!(super::seed::seed(dir.path(), 1, 1, &mut out).is_err());
    store.shutdown().await.unwrap();
}
