//! The durable half of a learner's reads, remembered.
//!
//! A read merges the buffered deltas (always read from Redis) with the
//! durable counters, labels and weekly counts (two or three CQL reads).
//! The durable rows change only when a flusher applies a batch, which
//! bumps the learner's flush `epoch` when it starts and when it ends, or
//! when a counted request or a repair has written them, which gives the
//! learner's reads a new `version` (a value never used before). Both live
//! in Redis and come back with the buffered deltas, in the same round
//! trip. So a replica may keep what it read from CQL under the epoch and
//! version it read them at, and serve the next read of the same learner
//! from memory while both are unchanged: no CQL read for a learner who
//! practises between sessions.
//!
//! A read is kept only when the version was the same before and after its
//! CQL reads and the epoch too (nothing changed under it), and only under
//! a version that exists: a learner without one (no request counted in
//! the version's 24 hours, or erased: erasure deletes it) is always read
//! from CQL. A change the version cannot see (a replica of an older
//! release counting a request, a label write of an attempt that was never
//! counted) is shown at the latest after [`READ_TTL`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDate;
use quick_cache::sync::Cache;
use quick_cache::Weighter;
use uuid::Uuid;

use chrono::{DateTime, Utc};

use super::buffer::Closing;
use crate::domain::{ErrorKey, WeekCount};
use crate::store::policy::{READ_CACHE_BYTES, READ_CACHE_EXPECTED, READ_TTL};
use crate::store::RecentError;

/// What `error_labels` says about one of a learner's errors.
#[derive(Debug, Clone)]
pub struct Label {
    pub category: String,
    pub subcategory: String,
    pub last_seen: Option<DateTime<Utc>>,
    /// Its sentences kept for practice, when they were read.
    pub sentences: Vec<RecentError>,
}

pub type Labels = HashMap<ErrorKey, Label>;

/// Which read: the learner's, with the weekly counts from `since` on, with
/// or without the labels' sentences.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Shape {
    pub user: Uuid,
    pub since: Option<NaiveDate>,
    pub sentences: bool,
}

/// What a read found in CQL.
#[derive(Debug, Clone, Default)]
pub(super) struct Durable {
    pub counts: HashMap<ErrorKey, i64>,
    pub labels: Labels,
    pub weeks: Vec<WeekCount>,
}

/// One read of the learner's, and what it found.
struct Entry {
    shape: Shape,
    epoch: i64,
    version: String,
    read_at: Instant,
    durable: Durable,
}

impl Entry {
    /// Read under this epoch and version.
    fn under(&self, epoch: i64, version: &str) -> bool {
        self.epoch == epoch && self.version == version
    }
}

/// The reads remembered of one learner (a few: one per kind of read).
#[derive(Default)]
struct Learner {
    reads: Vec<Arc<Entry>>,
}

#[derive(Clone)]
struct Bytes;

fn weight(entry: &Entry) -> u64 {
    let durable = &entry.durable;
    let key = |k: &ErrorKey| (k.category.len() + k.subcategory.len()) as u64;
    let counts: u64 = durable.counts.keys().map(|k| 48 + key(k)).sum();
    let labels: u64 = durable
        .labels
        .iter()
        .map(|(k, label)| {
            let sentences: u64 = label
                .sentences
                .iter()
                .map(|s| {
                    let text = |t: &Option<String>| t.as_ref().map_or(0, String::len);
                    160 + (text(&s.utterance)
                        + text(&s.correction.text)
                        + text(&s.correction.explanation)) as u64
                        + 2 * key(&s.key)
                })
                .sum();
            96 + 2 * key(k) + sentences
        })
        .sum();
    let weeks: u64 = durable.weeks.iter().map(|w| 56 + key(&w.key)).sum();
    128 + entry.version.len() as u64 + counts + labels + weeks
}

impl Weighter<Uuid, Arc<Learner>> for Bytes {
    fn weight(&self, _: &Uuid, learner: &Arc<Learner>) -> u64 {
        64 + learner.reads.iter().map(|e| weight(e)).sum::<u64>()
    }
}

pub(super) struct ReadCache {
    learners: Cache<Uuid, Arc<Learner>, Bytes>,
}

impl ReadCache {
    pub fn new() -> Self {
        Self {
            learners: Cache::with_weighter(READ_CACHE_EXPECTED, READ_CACHE_BYTES, Bytes),
        }
    }

    /// The durable rows of `shape` read at this epoch and version, if they
    /// are remembered and still trusted. Without a version (the learner
    /// counted nothing for a day, or was erased), nothing of theirs is
    /// kept any longer.
    pub fn get(&self, shape: &Shape, epoch: i64, version: Option<&str>) -> Option<Durable> {
        let hit = match version {
            None => {
                self.forget(shape.user);
                None
            }
            Some(version) => self.learners.get(&shape.user).and_then(|learner| {
                learner
                    .reads
                    .iter()
                    .find(|e| {
                        e.shape == *shape
                            && e.under(epoch, version)
                            && e.read_at.elapsed() < READ_TTL
                    })
                    .map(|e| e.durable.clone())
            }),
        };
        let result = if hit.is_some() { "hit" } else { "miss" };
        metrics::counter!("errata_read_cache_total", "result" => result).increment(1);
        hit
    }

    /// Remembers what a read that began at `asked` found, when the epoch
    /// and the version it saw before its CQL reads (`epoch`, `before`)
    /// were still there after them (`after`). It replaces the learner's
    /// read of the same kind, and drops their reads made under another
    /// epoch or version (they cannot be served again).
    pub fn put(
        &self,
        shape: Shape,
        epoch: i64,
        before: Option<&str>,
        after: &Closing,
        durable: &Durable,
        asked: Instant,
    ) {
        let (Some(before), Some(now)) = (before, after.version.as_deref()) else {
            return;
        };
        if before != now || after.epoch != epoch {
            return;
        }
        let user = shape.user;
        let entry = Arc::new(Entry {
            shape,
            epoch,
            version: before.to_owned(),
            read_at: asked,
            durable: durable.clone(),
        });
        let mut reads: Vec<Arc<Entry>> = self
            .learners
            .get(&user)
            .map(|learner| {
                learner
                    .reads
                    .iter()
                    .filter(|e| e.under(epoch, before) && e.shape != entry.shape)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        reads.push(entry);
        self.learners.insert(user, Arc::new(Learner { reads }));
    }

    /// Nothing of the learner's is kept any more (they are being erased).
    pub fn forget(&self, user: Uuid) {
        self.learners.remove(&user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            user: Uuid::new_v4(),
            since: None,
            sentences: true,
        }
    }

    fn durable(n: i64) -> Durable {
        let key = ErrorKey {
            category: "grammar".into(),
            subcategory: "articles".into(),
        };
        Durable {
            counts: HashMap::from([(key, n)]),
            ..Durable::default()
        }
    }

    /// Another kind of read of the same learner: with weekly counts.
    fn weekly(shape: &Shape) -> Shape {
        Shape {
            since: NaiveDate::from_ymd_opt(2026, 11, 30),
            ..shape.clone()
        }
    }

    fn closing(epoch: i64, version: Option<&str>) -> Closing {
        Closing {
            epoch,
            version: version.map(str::to_owned),
        }
    }

    /// Puts a read of `shape` worth `n` points, seen at `before` (epoch,
    /// version) before its CQL reads and at `after` after them.
    fn keep(
        cache: &ReadCache,
        shape: &Shape,
        before: (i64, Option<&str>),
        after: (i64, Option<&str>),
        n: i64,
        asked: Instant,
    ) {
        let after = closing(after.0, after.1);
        cache.put(
            shape.clone(),
            before.0,
            before.1,
            &after,
            &durable(n),
            asked,
        );
    }

    #[test]
    fn a_read_is_served_while_its_epoch_and_version_hold() {
        let cache = ReadCache::new();
        let s = shape();
        let now = Instant::now();
        keep(&cache, &s, (3, Some("v1")), (3, Some("v1")), 7, now);
        let hit = cache.get(&s, 3, Some("v1")).expect("remembered");
        assert_eq!(hit.counts.values().sum::<i64>(), 7);
        // A flush started or ended, or a request was counted: read again.
        assert!(cache.get(&s, 4, Some("v1")).is_none());
        assert!(cache.get(&s, 3, Some("v2")).is_none());
        // No version (none lives, or the learner was erased): read again.
        assert!(cache.get(&s, 3, None).is_none());
        // Another shape of read of the same learner is not this one.
        assert!(cache.get(&weekly(&s), 3, Some("v1")).is_none());
    }

    #[test]
    fn a_learner_without_a_version_is_forgotten_whole() {
        let cache = ReadCache::new();
        let s = shape();
        let weekly = weekly(&s);
        let now = Instant::now();
        keep(&cache, &s, (3, Some("v1")), (3, Some("v1")), 1, now);
        keep(&cache, &weekly, (3, Some("v1")), (3, Some("v1")), 2, now);
        // Both kinds of read are kept side by side.
        assert!(cache.get(&s, 3, Some("v1")).is_some());
        assert_eq!(
            cache
                .get(&weekly, 3, Some("v1"))
                .map(|d| d.counts.values().sum::<i64>()),
            Some(2)
        );
        // A read that finds no version (the learner erased) drops them all.
        assert!(cache.get(&s, 0, None).is_none());
        assert!(cache.get(&weekly, 3, Some("v1")).is_none());
        assert!(cache.learners.get(&s.user).is_none());
    }

    #[test]
    fn a_read_that_something_changed_under_is_not_kept() {
        let cache = ReadCache::new();
        let s = shape();
        let now = Instant::now();
        // The version moved during the CQL reads.
        keep(&cache, &s, (3, Some("v1")), (3, Some("v2")), 1, now);
        assert!(cache.get(&s, 3, Some("v1")).is_none());
        assert!(cache.get(&s, 3, Some("v2")).is_none());
        // A flush started during them.
        keep(&cache, &s, (3, Some("v1")), (4, Some("v1")), 1, now);
        assert!(cache.get(&s, 3, Some("v1")).is_none());
        assert!(cache.get(&s, 4, Some("v1")).is_none());
        // No version before, or none after.
        keep(&cache, &s, (3, None), (3, Some("v1")), 1, now);
        keep(&cache, &s, (3, Some("v1")), (3, None), 1, now);
        assert!(cache.get(&s, 3, Some("v1")).is_none());
    }

    #[test]
    fn a_read_is_not_served_past_its_time() {
        let cache = ReadCache::new();
        let s = shape();
        let long_ago = Instant::now()
            .checked_sub(READ_TTL)
            .expect("the machine has been up longer than READ_TTL");
        keep(&cache, &s, (1, Some("v")), (1, Some("v")), 1, long_ago);
        assert!(cache.get(&s, 1, Some("v")).is_none());
    }
}
