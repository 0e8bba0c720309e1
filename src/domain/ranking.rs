//! A learner's error frequencies and the order "what do they get wrong most".

use std::cmp::Ordering;
use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::ErrorKey;

/// How often a learner made one kind of error, and when last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrequency {
    pub key: ErrorKey,
    /// The first spelling seen of the category and subcategory.
    pub category: String,
    pub subcategory: String,
    pub frequency: i64,
    pub last_seen: Option<DateTime<Utc>>,
}

impl ErrorFrequency {
    /// Most frequent first; ties go to the most recent, then to the name, so
    /// the order is total and stable across calls and replicas.
    fn rank_order(&self, other: &Self) -> Ordering {
        other
            .frequency
            .cmp(&self.frequency)
            .then_with(|| other.last_seen.cmp(&self.last_seen))
            .then_with(|| self.key.cmp(&other.key))
    }
}

/// A learner's frequencies, keyed by error identity. Several sources
/// (durable counts, buffered deltas) merge into one table before ranking.
#[derive(Debug, Clone, Default)]
pub struct FrequencyTable {
    entries: HashMap<ErrorKey, ErrorFrequency>,
}

impl FrequencyTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds `entry` to the table: frequencies add up, the latest `last_seen`
    /// wins, and the spelling already in the table is kept.
    pub fn add(&mut self, entry: ErrorFrequency) {
        match self.entries.get_mut(&entry.key) {
            Some(existing) => {
                existing.frequency += entry.frequency;
                existing.last_seen = existing.last_seen.max(entry.last_seen);
            }
            None => {
                self.entries.insert(entry.key.clone(), entry);
            }
        }
    }

    pub fn get(&self, key: &ErrorKey) -> Option<&ErrorFrequency> {
        self.entries.get(key)
    }

    /// Every error with a positive frequency, most frequent first.
    pub fn ranked(&self) -> Vec<ErrorFrequency> {
        let mut ranked: Vec<ErrorFrequency> = self
            .entries
            .values()
            .filter(|e| e.frequency > 0)
            .cloned()
            .collect();
        ranked.sort_unstable_by(ErrorFrequency::rank_order);
        ranked
    }

    /// The `n` most frequent errors, in rank order.
    pub fn top(&self, n: usize) -> Vec<ErrorFrequency> {
        let mut positive: Vec<&ErrorFrequency> =
            self.entries.values().filter(|e| e.frequency > 0).collect();
        if positive.len() > n {
            positive.select_nth_unstable_by(n, |a, b| a.rank_order(b));
            positive.truncate(n);
        }
        positive.sort_unstable_by(|a, b| a.rank_order(b));
        positive.into_iter().cloned().collect()
    }

    pub fn total(&self) -> i64 {
        self.entries.values().map(|e| e.frequency).sum()
    }
}

impl FromIterator<ErrorFrequency> for FrequencyTable {
    fn from_iter<I: IntoIterator<Item = ErrorFrequency>>(iter: I) -> Self {
        let mut table = Self::new();
        for entry in iter {
            table.add(entry);
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn entry(c: &str, s: &str, frequency: i64, secs: i64) -> ErrorFrequency {
        ErrorFrequency {
            key: ErrorKey {
                category: c.to_lowercase(),
                subcategory: s.to_lowercase(),
            },
            category: c.into(),
            subcategory: s.into(),
            frequency,
            last_seen: Some(Utc.timestamp_opt(secs, 0).unwrap()),
        }
    }

    fn names(v: &[ErrorFrequency]) -> Vec<&str> {
        v.iter().map(|e| e.subcategory.as_str()).collect()
    }

    #[test]
    fn most_frequent_comes_first() {
        let table: FrequencyTable = [
            entry("Grammar", "Articles", 2, 10),
            entry("Grammar", "Tense", 5, 1),
            entry("Vocabulary", "Word Choice", 3, 5),
        ]
        .into_iter()
        .collect();
        assert_eq!(names(&table.ranked()), ["Tense", "Word Choice", "Articles"]);
    }

    #[test]
    fn ties_go_to_the_most_recent_then_to_the_name() {
        let table: FrequencyTable = [
            entry("Grammar", "B", 3, 10),
            entry("Grammar", "A", 3, 10),
            entry("Grammar", "Recent", 3, 20),
            entry("Fluency", "Z", 3, 10),
        ]
        .into_iter()
        .collect();
        assert_eq!(names(&table.ranked()), ["Recent", "Z", "A", "B"]);
    }

    #[test]
    fn top_cuts_the_ranking_and_agrees_with_it() {
        let table: FrequencyTable = (0..40)
            .map(|i| entry("Grammar", &format!("S{i:02}"), i % 7, i))
            .collect();
        for n in [0, 1, 5, 33, 40, 100] {
            let ranked = table.ranked();
            let expected = &ranked[..n.min(ranked.len())];
            assert_eq!(table.top(n), expected, "n = {n}");
        }
    }

    #[test]
    fn merging_adds_frequencies_and_keeps_the_first_spelling() {
        let mut table = FrequencyTable::new();
        table.add(entry("Grammar", "Articles", 2, 10));
        table.add(entry("GRAMMAR", "ARTICLES", 3, 30));
        let ranked = table.ranked();
        assert_eq!(ranked.len(), 1);
        assert_eq!(ranked[0].frequency, 5);
        assert_eq!(ranked[0].category, "Grammar");
        assert_eq!(ranked[0].last_seen, Some(Utc.timestamp_opt(30, 0).unwrap()));
        assert_eq!(table.total(), 5);
    }

    #[test]
    fn errors_without_a_positive_frequency_are_not_ranked() {
        let table: FrequencyTable = [entry("Grammar", "A", 0, 1), entry("Grammar", "B", 1, 1)]
            .into_iter()
            .collect();
        assert_eq!(names(&table.ranked()), ["B"]);
        assert_eq!(names(&table.top(5)), ["B"]);
    }
}
