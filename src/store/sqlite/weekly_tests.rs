//! Weekly counts in the embedded store: written in the transaction of the
//! events, in the week of the request's time; recency ranking in one read
//! agrees with the generic answer.

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use uuid::Uuid;

use super::SqliteStore;
use crate::domain::weeks::weeks_before;
use crate::domain::{week_start, Correction, Decay, Email, ErrorName, ErrorPoint, Username};
use crate::store::{
    ErrorReport, NewUser, NewUtterance, PracticeInputs, PracticeQuery, Rank, Store,
};

fn point(subcategory: &str, corrected: bool) -> ErrorPoint {
    ErrorPoint {
        category: ErrorName::parse("Grammar").unwrap(),
        subcategory: ErrorName::parse(subcategory).unwrap(),
        correction: Correction {
            text: corrected.then(|| format!("{subcategory}, corrected")),
            explanation: None,
        },
    }
}

#[tokio::test]
async fn weeks_follow_the_request_time_and_recency_in_one_read_matches_the_generic_answer() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let user = store
        .create_user(NewUser {
            username: Username::parse("ada").unwrap(),
            email: Email::parse("ada@example.com").unwrap(),
            timezone: None,
        })
        .await
        .unwrap()
        .user_id;
    let conversation = store
        .create_conversation(user)
        .await
        .unwrap()
        .conversation_id;
    // A Wednesday; reports over the ten weeks before it.
    let now = Utc.with_ymd_and_hms(2027, 1, 6, 12, 0, 0).unwrap();
    let names = ["Articles", "Tense", "Plurals", "Prepositions"];
    for n in 0..60usize {
        let said = store
            .create_utterance(NewUtterance {
                user_id: user,
                conversation_id: conversation,
                content: Some(format!("sentence {n}")),
            })
            .await
            .unwrap()
            .utterance_id;
        let points = (0..1 + n % 3)
            .map(|i| point(names[(n * 7 + i) % names.len()], (n + i) % 3 != 0))
            .collect();
        store
            .record_errors(ErrorReport {
                user_id: user,
                conversation_id: conversation,
                utterance_id: said,
                points,
                fingerprint: Uuid::new_v4(),
                received_at: now - Duration::hours(28 * (60 - n as i64)),
            })
            .await
            .unwrap();
    }
    let current = week_start(now);
    let history = store.weekly_history(user, NaiveDate::MIN).await.unwrap();
    let weekly_total: i64 = history.weeks.iter().map(|w| w.count).sum();
    assert_eq!(
        weekly_total,
        history.table.total(),
        "every point in one week"
    );
    assert!(history.weeks.iter().all(|w| w.week_start <= current));
    assert!(history
        .weeks
        .iter()
        .any(|w| w.week_start == weeks_before(current, 9)));

    for (half_life, top_n, window) in [(14, 3, 200), (1, 4, 200), (365, 2, 10), (7, 1, 48)] {
        let query = PracticeQuery {
            top_n,
            sentences_per_error: 3,
            window,
            rank: Rank::Recent {
                decay: Decay::new(half_life),
                current_week: current,
            },
        };
        let since = query.rank.since().unwrap();
        let (top, scores) = store
            .weekly_history(user, since)
            .await
            .unwrap()
            .top(query.rank, query.top_n);
        let recent = store.recent_errors(user, window).await.unwrap();
        let expected = PracticeInputs {
            scores,
            ..PracticeInputs::from_recent(top, &recent, 3)
        };
        let got = store.practice_inputs(user, query).await.unwrap();
        assert_eq!(*got, expected, "{query:?}");
        assert_eq!(got.scores.len(), got.top.len());
    }
}
