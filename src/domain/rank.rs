//! The order of a learner's top errors: by all-time count, or by weekly
//! counts decayed by age.

use chrono::NaiveDate;

use super::weeks::weeks_before;
use super::{rank_recent, Decay, ErrorFrequency, FrequencyTable, WeekCount};

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

/// A learner's all-time counts and their weekly counts from some week on,
/// acknowledged ones not yet durable included.
#[derive(Debug, Clone, Default)]
pub struct WeeklyHistory {
    pub table: FrequencyTable,
    pub weeks: Vec<WeekCount>,
}

impl WeeklyHistory {
    /// The top errors and their scores, as `rank` orders them.
    pub fn top(&self, rank: Rank, top_n: usize) -> (Vec<ErrorFrequency>, Vec<f64>) {
        match rank {
            Rank::Frequency => (self.table.top(top_n), Vec::new()),
            Rank::Recent {
                decay,
                current_week,
            } => rank_recent(&self.table, &self.weeks, current_week, decay, top_n)
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
