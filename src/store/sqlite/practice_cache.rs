//! Learners' practice inputs kept in memory between writes (embedded mode).
//!
//! A practice request needs the learner's top errors and, for each, a few of
//! their own sentences: a walk over up to a few hundred index entries. The
//! answer only changes when the learner's errors do, and in embedded mode
//! every such change goes through this process's single writer, so the
//! writer can drop a learner's entry when it commits their errors.
//!
//! The one race to close is a read that started before a commit filling the
//! cache after the writer dropped the entry. Each shard of learners has a
//! write generation: the writer bumps it, then removes the entry; a reader
//! notes it before its read, inserts after, and takes its entry back out if
//! the generation moved in between. Either the removal comes after the
//! insert, or the bump comes before the check: a stale answer never stays.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use quick_cache::sync::Cache;
use quick_cache::Weighter;
use uuid::Uuid;

use crate::store::{PracticeInputs, PracticeQuery};

/// Generations are kept per shard of learners, so that a write makes only
/// the reads of the learners in its shard skip filling the cache.
const GENERATIONS: usize = 1024;

/// How many differently shaped answers a learner keeps at once (an app
/// asking for practice by frequency and by recency, say).
const ANSWERS_PER_LEARNER: usize = 3;

/// A learner's kept answers, newest first, each with the query it answers.
#[derive(Clone, Default)]
struct Entry {
    answers: Vec<(PracticeQuery, Arc<PracticeInputs>)>,
}

/// Weighs an entry by the bytes it holds, so that a learner with long
/// sentences counts for more than one with short ones.
#[derive(Clone)]
struct Bytes;

impl Weighter<Uuid, Entry> for Bytes {
    fn weight(&self, _: &Uuid, entry: &Entry) -> u64 {
        entry.answers.iter().map(|(_, inputs)| weigh(inputs)).sum()
    }
}

/// The bytes one answer holds, roughly.
fn weigh(inputs: &PracticeInputs) -> u64 {
    let top: usize = inputs
        .top
        .iter()
        .map(|e| {
            e.key.category.len() + e.key.subcategory.len() + e.category.len() + e.subcategory.len()
        })
        .sum();
    let sentences: usize = inputs
        .sentences
        .iter()
        .flatten()
        .map(|s| s.text.len() + s.correction.len() + s.explanation.as_ref().map_or(0, String::len))
        .sum();
    (256 + top + inputs.top.len() * 136 + sentences + inputs.sentences.len() * 64) as u64
}

/// A ticket taken before a read from the store; [`PracticeCache::fill`]
/// only keeps what was read if no write to the learner's shard came since.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    shard: usize,
    generation: u64,
}

pub struct PracticeCache {
    entries: Cache<Uuid, Entry, Bytes>,
    generations: Box<[AtomicU64]>,
}

impl PracticeCache {
    /// A cache holding about `bytes` of practice inputs.
    pub fn new(bytes: u64) -> Self {
        Self {
            entries: Cache::with_weighter((bytes / 2048).max(16) as usize, bytes, Bytes),
            generations: (0..GENERATIONS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn shard(user_id: Uuid) -> usize {
        (user_id.as_u128() as usize) % GENERATIONS
    }

    /// The learner's inputs for `query` if they are cached; otherwise a
    /// ticket to take before reading them from the store.
    pub fn get(&self, user_id: Uuid, query: PracticeQuery) -> Result<Arc<PracticeInputs>, Ticket> {
        if let Some(entry) = self.entries.get(&user_id) {
            if let Some((_, inputs)) = entry.answers.iter().find(|(q, _)| *q == query) {
                return Ok(inputs.clone());
            }
        }
        let shard = Self::shard(user_id);
        Err(Ticket {
            shard,
            generation: self.generations[shard].load(Ordering::SeqCst),
        })
    }

    /// Keeps what a read that took `ticket` found, unless a write to the
    /// learner's shard was committed since the ticket was taken.
    pub fn fill(
        &self,
        user_id: Uuid,
        query: PracticeQuery,
        inputs: Arc<PracticeInputs>,
        ticket: Ticket,
    ) {
        let generation = &self.generations[ticket.shard];
        if generation.load(Ordering::SeqCst) != ticket.generation {
            return;
        }
        let mut entry = self.entries.get(&user_id).unwrap_or_default();
        entry.answers.retain(|(q, _)| *q != query);
        entry.answers.insert(0, (query, inputs));
        entry.answers.truncate(ANSWERS_PER_LEARNER);
        self.entries.insert(user_id, entry);
        if generation.load(Ordering::SeqCst) != ticket.generation {
            self.entries.remove(&user_id);
        }
    }

    /// Called by the writer after it committed a change to the learner's
    /// errors, before it answers the request: the next read goes to the store.
    pub fn invalidate(&self, user_id: Uuid) {
        self.generations[Self::shard(user_id)].fetch_add(1, Ordering::SeqCst);
        self.entries.remove(&user_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ErrorFrequency, ErrorKey, OwnSentence};
    use crate::store::Rank;

    const QUERY: PracticeQuery = PracticeQuery {
        top_n: 5,
        sentences_per_error: 3,
        window: 200,
        rank: Rank::Frequency,
    };

    fn inputs(frequency: i64) -> Arc<PracticeInputs> {
        Arc::new(PracticeInputs {
            top: vec![ErrorFrequency {
                key: ErrorKey {
                    category: "grammar".into(),
                    subcategory: "tense".into(),
                },
                category: "Grammar".into(),
                subcategory: "Tense".into(),
                frequency,
                last_seen: None,
            }],
            sentences: vec![vec![OwnSentence {
                utterance_id: Uuid::nil(),
                text: "I goed home".into(),
                correction: "I went home".into(),
                explanation: None,
            }]],
            scores: Vec::new(),
        })
    }

    /// A read that misses, then fills the cache with what it found.
    fn read_through(cache: &PracticeCache, user: Uuid, frequency: i64) {
        let ticket = cache.get(user, QUERY).unwrap_err();
        cache.fill(user, QUERY, inputs(frequency), ticket);
    }

    #[test]
    fn a_read_fills_and_a_later_get_hits() {
        let cache = PracticeCache::new(1 << 20);
        let user = Uuid::now_v7();
        read_through(&cache, user, 1);
        assert_eq!(cache.get(user, QUERY).unwrap().top[0].frequency, 1);
        // Another query shape is a miss, not the wrong answer; once read,
        // both shapes are kept.
        let other = PracticeQuery { top_n: 3, ..QUERY };
        let ticket = cache.get(user, other).unwrap_err();
        cache.fill(user, other, inputs(7), ticket);
        assert_eq!(cache.get(user, other).unwrap().top[0].frequency, 7);
        assert_eq!(cache.get(user, QUERY).unwrap().top[0].frequency, 1);
        cache.invalidate(user);
        assert!(cache.get(user, other).is_err() && cache.get(user, QUERY).is_err());
    }

    #[test]
    fn a_write_drops_the_entry() {
        let cache = PracticeCache::new(1 << 20);
        let user = Uuid::now_v7();
        read_through(&cache, user, 1);
        cache.invalidate(user);
        assert!(cache.get(user, QUERY).is_err());
    }

    #[test]
    fn a_read_overtaken_by_a_write_is_not_kept() {
        let cache = PracticeCache::new(1 << 20);
        let user = Uuid::now_v7();
        // The read takes its ticket, then a write commits and invalidates
        // while the read is still running: its (older) answer must not stay.
        let ticket = cache.get(user, QUERY).unwrap_err();
        cache.invalidate(user);
        cache.fill(user, QUERY, inputs(1), ticket);
        assert!(cache.get(user, QUERY).is_err());
        // A read that starts after the write fills the cache again.
        read_through(&cache, user, 2);
        assert_eq!(cache.get(user, QUERY).unwrap().top[0].frequency, 2);
    }

    #[test]
    fn memory_stays_within_the_budget() {
        let cache = PracticeCache::new(64 << 10);
        for _ in 0..10_000 {
            read_through(&cache, Uuid::now_v7(), 1);
        }
        assert!(cache.entries.weight() <= 64 << 10);
        assert!(cache.entries.len() < 10_000);
    }
}
