//! How values are kept in columns: ids as UUID text, times as microseconds
//! since the Unix epoch, weeks as their Monday in YYYY-MM-DD.

use chrono::{DateTime, NaiveDate, Utc};
use r2d2_sqlite::rusqlite::{self, types::Type, Row};
use uuid::Uuid;

/// Times are kept as microseconds since the Unix epoch.
pub(super) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(super) fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// Ids are kept as UUID text.
pub(super) fn uuid_column(row: &Row<'_>, index: usize) -> rusqlite::Result<Uuid> {
    let text: String = row.get(index)?;
    Uuid::parse_str(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, Type::Text, Box::new(e)))
}

/// A week's key in `error_counts_by_week`: its Monday as YYYY-MM-DD.
pub(super) fn week_text(week: NaiveDate) -> String {
    week.format("%Y-%m-%d").to_string()
}

pub(super) fn week_column(row: &Row<'_>, index: usize) -> rusqlite::Result<NaiveDate> {
    let text = str_column(row, index)?;
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, Type::Text, Box::new(e)))
}

/// A text column, borrowed from the row rather than copied.
pub(super) fn str_column<'r>(row: &'r Row<'_>, index: usize) -> rusqlite::Result<&'r str> {
    Ok(row.get_ref(index)?.as_str()?)
}
