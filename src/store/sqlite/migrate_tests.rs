//! A database made before corrections and weekly counts existed is brought
//! up to date at start-up, once.

use chrono::{NaiveDate, TimeZone, Utc};
use r2d2_sqlite::rusqlite::{params, Connection};
use uuid::Uuid;

use crate::domain::WeekCount;
use crate::store::sqlite::connection::DATABASE_FILE;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;

/// The event log and counts as the first release created them.
const FIRST_RELEASE: &str = "
CREATE TABLE users (user_id TEXT PRIMARY KEY, username TEXT NOT NULL, email TEXT NOT NULL,
    email_key TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE error_events (
    event_id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, conversation_id TEXT NOT NULL,
    utterance_id TEXT NOT NULL, category_key TEXT NOT NULL, subcategory_key TEXT NOT NULL,
    category TEXT NOT NULL, subcategory TEXT NOT NULL, occurred_at INTEGER NOT NULL);
CREATE TABLE error_counts (
    user_id TEXT NOT NULL, category_key TEXT NOT NULL, subcategory_key TEXT NOT NULL,
    category TEXT NOT NULL, subcategory TEXT NOT NULL, frequency INTEGER NOT NULL,
    last_seen INTEGER NOT NULL, PRIMARY KEY (user_id, category_key, subcategory_key))
    WITHOUT ROWID;";

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

#[tokio::test]
async fn an_old_database_gains_the_columns_and_its_weekly_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let user = Uuid::now_v7();
    {
        let conn = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        conn.execute_batch(FIRST_RELEASE).unwrap();
        conn.execute(
            "INSERT INTO users VALUES (?1, 'ada', 'ada@example.com', 'ada@example.com', 0)",
            [user.to_string()],
        )
        .unwrap();
        // Sunday night and Monday morning (UTC) of the turn of ISO week 53.
        let sunday = Utc.with_ymd_and_hms(2026, 12, 27, 23, 30, 0).unwrap();
        let monday = Utc.with_ymd_and_hms(2026, 12, 28, 0, 30, 0).unwrap();
        for at in [sunday, monday, monday] {
            conn.execute(
                "INSERT INTO error_events (user_id, conversation_id, utterance_id, category_key,
                   subcategory_key, category, subcategory, occurred_at)
                 VALUES (?1, ?2, ?2, 'grammar', 'articles', 'Grammar', 'Articles', ?3)",
                params![
                    user.to_string(),
                    Uuid::nil().to_string(),
                    at.timestamp_micros()
                ],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO error_counts VALUES (?1, 'grammar', 'articles', 'Grammar', 'Articles', 3, ?2)",
            params![user.to_string(), monday.timestamp_micros()],
        )
        .unwrap();
    }
    let expected = |week: NaiveDate, count: i64| WeekCount {
        week_start: week,
        key: crate::domain::ErrorKey {
            category: "grammar".into(),
            subcategory: "articles".into(),
        },
        count,
    };
    for _ in 0..2 {
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let mut history = store.weekly_history(user, day(2026, 12, 1)).await.unwrap();
        history.weeks.sort_by_key(|w| w.week_start);
        assert_eq!(
            history.weeks,
            [
                expected(day(2026, 12, 21), 1),
                expected(day(2026, 12, 28), 2)
            ]
        );
        assert_eq!(history.table.total(), 3);
        let recent = store.recent_errors(user, 10).await.unwrap();
        assert_eq!(recent.len(), 3);
        assert!(recent.iter().all(|e| e.correction.text.is_none()));
        store.shutdown().await.unwrap();
    }
}
