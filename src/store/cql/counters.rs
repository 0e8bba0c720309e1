//! The counter batches: the only writes to `error_counts` and
//! `error_counts_by_week`, made by the flusher (buffered deltas) and by
//! repair (corrections). Never retried by the driver: a retry could count
//! twice.

use std::sync::Arc;

use scylla::client::session::Session;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::BatchType;
use scylla::value::Counter;
use uuid::Uuid;

use super::rows::{CountDelta, WeekCountDelta};
use super::session::{cql_error, date};
use super::statements::{self, statements, ONCE};
use crate::domain::{ErrorKey, WeekCount};
use crate::store::StoreError;

statements! {
    /// The statements of the counter batches.
    pub struct CounterStatements {
        /// Counter updates are never idempotent: a retry could count twice.
        add_count: ONCE =>
            "UPDATE error_counts \
             SET frequency = frequency + ? \
             WHERE user_id = ? AND category_key = ? AND subcategory_key = ?",
        /// The same batch as `add_count` carries these.
        add_week_count: ONCE =>
            "UPDATE error_counts_by_week \
             SET frequency = frequency + ? \
             WHERE user_id = ? AND week_start = ? AND category_key = ? AND subcategory_key = ?",
    }
}

/// Adds deltas to a learner's counters.
pub struct Counters {
    session: Arc<Session>,
    statements: CounterStatements,
}

impl Counters {
    pub async fn new(session: Arc<Session>) -> Result<Self, StoreError> {
        Ok(Self {
            statements: CounterStatements::prepare(&session).await?,
            session,
        })
    }

    /// Adds the deltas to the learner's counters, all-time and weekly, in
    /// one counter batch (both tables share the learner's partition key).
    pub async fn apply(
        &self,
        user: Uuid,
        deltas: &[(ErrorKey, i64)],
        weeks: &[WeekCount],
    ) -> Result<(), StoreError> {
        type Values<'a> = Vec<Box<dyn SerializeRow + Send + Sync + 'a>>;
        let mut batch = statements::batch("counter_batch", BatchType::Counter, ONCE);
        let mut values: Values<'_> = Vec::new();
        for (key, delta) in deltas.iter().filter(|(_, delta)| *delta != 0) {
            batch.append_statement(self.statements.add_count.clone());
            values.push(Box::new(CountDelta {
                delta: Counter(*delta),
                user_id: user,
                category_key: key.category.as_str(),
                subcategory_key: key.subcategory.as_str(),
            }));
        }
        for week in weeks.iter().filter(|w| w.count != 0) {
            batch.append_statement(self.statements.add_week_count.clone());
            values.push(Box::new(WeekCountDelta {
                delta: Counter(week.count),
                user_id: user,
                week_start: date(week.week_start),
                category_key: week.key.category.as_str(),
                subcategory_key: week.key.subcategory.as_str(),
            }));
        }
        if values.is_empty() {
            return Ok(());
        }
        self.session
            .batch(&batch, values)
            .await
            .map_err(cql_error)?;
        Ok(())
    }
}
