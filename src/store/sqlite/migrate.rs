//! Bringing a database of an earlier errata up to date, at start-up, in
//! one transaction: a step already done is skipped, so it is idempotent.
//!
//! schema.sql creates what is missing (with every column, on a new
//! database); columns added since go into older tables here, then the
//! indexes that need them; a weekly-counts table new to this database is
//! filled from the event log, so old history shows in progress and ranks.

use r2d2_sqlite::rusqlite::{self, Connection};

const SCHEMA: &str = include_str!("schema.sql");
const UPGRADE: &str = include_str!("upgrade.sql");

/// Columns added after the first release: (table, column, type).
const ADDED_COLUMNS: [(&str, &str, &str); 3] = [
    ("error_events", "correction", "TEXT"),
    ("error_events", "explanation", "TEXT"),
    ("users", "timezone", "TEXT"),
];

/// The weekly counts of every event already logged. The week starts on
/// the Monday (UTC) on or before the event's day: 'weekday 0' moves on to
/// the Sunday ending its week, six days back is that week's Monday.
const BACKFILL_WEEKS: &str = "
    INSERT INTO error_counts_by_week
        (user_id, week_start, category_key, subcategory_key, frequency)
    SELECT user_id,
           date(occurred_at / 1000000, 'unixepoch', 'weekday 0', '-6 days'),
           category_key, subcategory_key, count(*)
    FROM error_events
    GROUP BY 1, 2, 3, 4";

pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let had_weeks = table_exists(&tx, "error_counts_by_week")?;
    tx.execute_batch(SCHEMA)?;
    for (table, column, kind) in ADDED_COLUMNS {
        if !column_exists(&tx, table, column)? {
            tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
        }
    }
    tx.execute_batch(UPGRADE)?;
    if !had_weeks {
        tx.execute_batch(BACKFILL_WEEKS)?;
    }
    tx.commit()
}

fn table_exists(conn: &Connection, table: &str) -> rusqlite::Result<bool> {
    conn.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?
        .exists([table])
}

fn column_exists(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?
        .exists([table, column])
}

#[cfg(test)]
#[path = "migrate_tests.rs"]
mod tests;
