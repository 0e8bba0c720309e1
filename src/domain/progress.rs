//! What the weekly counts say: a learner's progress week by week, and the
//! recency ranking of their errors (recent weeks weigh more).

use std::cmp::Ordering;
use std::collections::HashMap;

use chrono::NaiveDate;

use super::weeks::{weeks_back, weeks_before, Decay};
use super::{ErrorFrequency, ErrorKey, FrequencyTable};

/// How often a learner made one error in one ISO week.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeekCount {
    /// The Monday (UTC) that starts the week.
    pub week_start: NaiveDate,
    pub key: ErrorKey,
    pub count: i64,
}

/// One week of a learner's progress: its errors ranked like the top errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeekProgress {
    pub week_start: NaiveDate,
    pub total: i64,
    /// `frequency` is the week's count; most frequent first.
    pub errors: Vec<ErrorFrequency>,
}

/// A top error by recency: the all-time entry and its decayed score.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredError {
    pub error: ErrorFrequency,
    pub score: f64,
}

/// The last `weeks` weeks up to `current`, oldest first, every week present
/// (a week without errors has total 0 and no entries). `table` gives the
/// spellings and the tie-break; weekly counts outside the range are ignored.
pub fn weekly_progress(
    table: &FrequencyTable,
    counts: &[WeekCount],
    current: NaiveDate,
    weeks: u32,
) -> Vec<WeekProgress> {
    let first = weeks_before(current, weeks.saturating_sub(1));
    let mut by_week: HashMap<NaiveDate, FrequencyTable> = HashMap::new();
    for c in counts {
        if c.week_start < first || c.week_start > current || c.count == 0 {
            continue;
        }
        by_week
            .entry(c.week_start)
            .or_default()
            .add(entry_for(table, &c.key, c.count));
    }
    (0..weeks)
        .rev()
        .map(|back| {
            let week_start = weeks_before(current, back);
            let errors = by_week
                .get(&week_start)
                .map(FrequencyTable::ranked)
                .unwrap_or_default();
            WeekProgress {
                week_start,
                total: errors.iter().map(|e| e.frequency).sum(),
                errors,
            }
        })
        .collect()
}

/// The `n` errors with the highest decayed score Σ count × weight(age), of
/// every error with a positive all-time count (one without counts in the
/// weeks read scores 0). Ties go, as in the frequency ranking, to the most
/// recent, then to the name. `frequency` stays the all-time count.
pub fn rank_recent(
    table: &FrequencyTable,
    counts: &[WeekCount],
    current: NaiveDate,
    decay: Decay,
    n: usize,
) -> Vec<ScoredError> {
    let mut scores: HashMap<&ErrorKey, f64> = HashMap::new();
    for c in counts {
        let back = weeks_back(current, c.week_start);
        if back >= i64::from(decay.lookback_weeks()) {
            continue;
        }
        *scores.entry(&c.key).or_default() += c.count as f64 * decay.weight(back);
    }
    let mut ranked: Vec<ScoredError> = table
        .ranked()
        .into_iter()
        .map(|error| ScoredError {
            score: scores.get(&error.key).copied().unwrap_or(0.0),
            error,
        })
        .collect();
    ranked.sort_by(score_order);
    ranked.truncate(n);
    ranked
}

fn score_order(a: &ScoredError, b: &ScoredError) -> Ordering {
    b.score
        .total_cmp(&a.score)
        .then_with(|| b.error.last_seen.cmp(&a.error.last_seen))
        .then_with(|| a.error.key.cmp(&b.error.key))
}

/// An entry of `count` for `key`, spelled and dated as the learner's table.
fn entry_for(table: &FrequencyTable, key: &ErrorKey, count: i64) -> ErrorFrequency {
    match table.get(key) {
        Some(known) => ErrorFrequency {
            frequency: count,
            ..known.clone()
        },
        None => ErrorFrequency {
            key: key.clone(),
            category: key.category.clone(),
            subcategory: key.subcategory.clone(),
            frequency: count,
            last_seen: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn key(s: &str) -> ErrorKey {
        ErrorKey {
            category: "grammar".into(),
            subcategory: s.to_lowercase(),
        }
    }

    fn table(entries: &[(&str, i64, i64)]) -> FrequencyTable {
        entries
            .iter()
            .map(|(s, frequency, secs)| ErrorFrequency {
                key: key(s),
                category: "Grammar".into(),
                subcategory: (*s).into(),
                frequency: *frequency,
                last_seen: Some(Utc.timestamp_opt(*secs, 0).unwrap()),
            })
            .collect()
    }

    fn monday(back: u32) -> NaiveDate {
        weeks_before(NaiveDate::from_ymd_opt(2026, 11, 30).unwrap(), back)
    }

    fn count(s: &str, back: u32, count: i64) -> WeekCount {
        WeekCount {
            week_start: monday(back),
            key: key(s),
            count,
        }
    }

    #[test]
    fn progress_lists_every_week_oldest_first() {
        let table = table(&[("Articles", 5, 10), ("Tense", 2, 20)]);
        let counts = [
            count("Articles", 0, 2),
            count("Tense", 0, 2),
            count("Articles", 2, 3),
            // Outside the four weeks asked for.
            count("Articles", 9, 7),
        ];
        let weeks = weekly_progress(&table, &counts, monday(0), 4);
        let starts: Vec<_> = weeks.iter().map(|w| w.week_start).collect();
        assert_eq!(starts, [monday(3), monday(2), monday(1), monday(0)]);
        let totals: Vec<_> = weeks.iter().map(|w| w.total).collect();
        assert_eq!(totals, [0, 3, 0, 4]);
        assert!(weeks[0].errors.is_empty() && weeks[2].errors.is_empty());
        // Ties go to the most recent: Tense was seen last.
        let current: Vec<_> = weeks[3]
            .errors
            .iter()
            .map(|e| (e.subcategory.as_str(), e.frequency))
            .collect();
        assert_eq!(current, [("Tense", 2), ("Articles", 2)]);
    }

    #[test]
    fn recent_errors_outrank_frequent_old_ones() {
        // Articles: 8 errors six weeks ago; Tense: 3 this week.
        let table = table(&[("Articles", 8, 10), ("Tense", 3, 20)]);
        let counts = [count("Articles", 6, 8), count("Tense", 0, 3)];
        let ranked = rank_recent(&table, &counts, monday(0), Decay::new(14), 5);
        let names: Vec<_> = ranked
            .iter()
            .map(|r| r.error.subcategory.as_str())
            .collect();
        assert_eq!(names, ["Tense", "Articles"]);
        assert_eq!(ranked[0].score, 3.0);
        // Six weeks = 42 days = three half-lives: 8 / 8.
        assert!((ranked[1].score - 1.0).abs() < 1e-12);
        assert_eq!(ranked[1].error.frequency, 8, "frequency stays all-time");
        // With a long half-life the old pile wins again.
        let ranked = rank_recent(&table, &counts, monday(0), Decay::new(365), 5);
        assert_eq!(ranked[0].error.subcategory, "Articles");
    }

    #[test]
    fn scores_sum_weeks_and_ties_go_to_the_most_recent() {
        let table = table(&[("A", 2, 10), ("B", 2, 30), ("C", 1, 20)]);
        let counts = [
            count("A", 0, 1),
            count("A", 2, 2),
            count("B", 0, 2),
            // Beyond the cut-off for a 1-day half-life (3 weeks read).
            count("C", 3, 1),
        ];
        let ranked = rank_recent(&table, &counts, monday(0), Decay::new(7), 5);
        let got: Vec<_> = ranked
            .iter()
            .map(|r| (r.error.subcategory.as_str(), r.score))
            .collect();
        assert_eq!(got, [("B", 2.0), ("A", 1.5), ("C", 0.125)]);
        let ranked = rank_recent(&table, &counts, monday(0), Decay::new(1), 5);
        let got: Vec<_> = ranked
            .iter()
            .map(|r| r.error.subcategory.as_str())
            .collect();
        // C's only week is not read: it scores 0 and comes last.
        assert_eq!(got, ["B", "A", "C"]);
        assert_eq!(ranked[2].score, 0.0);
        assert_eq!(
            rank_recent(&table, &counts, monday(0), Decay::new(7), 1).len(),
            1
        );
    }
}
