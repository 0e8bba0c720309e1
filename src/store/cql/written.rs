//! What a replica has written of its learners' rows that a later report
//! would only write again unchanged: the month's two bucket rows
//! (`error_buckets`, `answer_buckets`), and each error's first spelling in
//! `error_labels` with the time it was written for (the earliest write
//! wins, so a later report's spelling loses to it anyway). A report leaves
//! those writes out of its batch; only a report whose batches were all
//! applied is remembered. Bounded: a forgotten entry costs the write again,
//! nothing else. Rows are never deleted but by an erasure, after which the
//! learner writes nothing again.

use quick_cache::sync::Cache;
use uuid::Uuid;

use crate::domain::ErrorKey;
use crate::store::policy::WRITTEN_CACHE_ENTRIES;

pub(super) struct Written {
    /// (learner, month bucket) whose bucket rows are written.
    buckets: Cache<(Uuid, i32), ()>,
    /// (learner, error) → the earliest report time (µs) whose spelling this
    /// replica wrote.
    spellings: Cache<(Uuid, ErrorKey), i64>,
}

impl Written {
    pub fn new() -> Self {
        Self {
            buckets: Cache::new(WRITTEN_CACHE_ENTRIES),
            spellings: Cache::new(WRITTEN_CACHE_ENTRIES),
        }
    }

    /// Whether the learner's bucket rows for `bucket` are written.
    pub fn has_bucket(&self, user: Uuid, bucket: i32) -> bool {
        self.buckets.get(&(user, bucket)).is_some()
    }

    /// Whether a spelling of `key` written for a report at `at_micros`
    /// would lose to one already written (for a report as early or
    /// earlier).
    pub fn spelling_loses(&self, user: Uuid, key: &ErrorKey, at_micros: i64) -> bool {
        self.spellings
            .get(&(user, key.clone()))
            .is_some_and(|written| written <= at_micros)
    }

    /// A report at `at_micros` wrote the bucket rows of `bucket` and the
    /// spellings of `keys`.
    pub fn wrote<'k>(
        &self,
        user: Uuid,
        bucket: i32,
        at_micros: i64,
        keys: impl IntoIterator<Item = &'k ErrorKey>,
    ) {
        self.buckets.insert((user, bucket), ());
        for key in keys {
            let slot = (user, key.clone());
            let earliest = self
                .spellings
                .get(&slot)
                .map_or(at_micros, |written| written.min(at_micros));
            self.spellings.insert(slot, earliest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: &str) -> ErrorKey {
        ErrorKey {
            category: c.into(),
            subcategory: "x".into(),
        }
    }

    #[test]
    fn only_what_was_written_and_would_win_is_left_out() {
        let written = Written::new();
        let user = Uuid::new_v4();
        assert!(!written.has_bucket(user, 202612));
        assert!(!written.spelling_loses(user, &key("grammar"), 100));

        written.wrote(user, 202612, 100, [&key("grammar")]);
        assert!(written.has_bucket(user, 202612));
        assert!(!written.has_bucket(user, 202611), "another month");
        assert!(
            !written.has_bucket(Uuid::new_v4(), 202612),
            "another learner"
        );
        // A later report's spelling loses to the one written; an earlier
        // one (a retried request keeps its first time) would win.
        assert!(written.spelling_loses(user, &key("grammar"), 100));
        assert!(written.spelling_loses(user, &key("grammar"), 101));
        assert!(!written.spelling_loses(user, &key("grammar"), 99));
        assert!(!written.spelling_loses(user, &key("vocabulary"), 101));

        // Writing an earlier one keeps the earliest; a later one does not
        // move it.
        written.wrote(user, 202612, 50, [&key("grammar")]);
        written.wrote(user, 202612, 200, [&key("grammar")]);
        assert!(written.spelling_loses(user, &key("grammar"), 50));
        assert!(!written.spelling_loses(user, &key("grammar"), 49));
    }
}
