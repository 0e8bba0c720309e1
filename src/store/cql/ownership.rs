//! The ownership facts of the ingest path, remembered.
//!
//! Before a report counts, its learner, conversation and utterance must
//! exist and belong together: one read of the utterance's row, keyed by
//! all three, when it is there (and two more to tell a 404's reason when
//! it is not). Once created, none of these facts
//! ever changes (a conversation never changes owner, an utterance never
//! changes conversation), so a replica may keep what it has read: the facts
//! that hold, never the ones that did not (an id unknown now may be created
//! by another replica a moment later), and the ones it has just created
//! itself (a learner's next request usually comes to the replica that
//! created what it names, or to one that read it once). The cache is bounded by the bytes it
//! holds, and counts its hits and misses in
//! `errata_ownership_cache_total{result}`.
//!
//! The one exception is erasure: the learner stops existing. The facts of a
//! learner are trusted only under the learner's own fact, so forgetting the
//! learner alone makes every later request of theirs read CQL again (the
//! erasing replica forgets at once, any replica whose lease or commit the
//! erasure's marker refuses forgets then); and no fact is trusted for
//! longer than [`FACT_TTL`], half the marker's life, so a replica that
//! never hears of an erasure stops trusting what it knew of that learner
//! while the marker still turns every request of theirs away.

use std::sync::Arc;
use std::time::Instant;

use quick_cache::sync::Cache;
use quick_cache::Weighter;
use uuid::Uuid;

use crate::store::policy::{FACT_CACHE_BYTES, FACT_CACHE_EXPECTED, FACT_TTL};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Fact {
    User(Uuid),
    Conversation(Uuid, Uuid),
    Utterance(Uuid, Uuid, Uuid),
}

/// When the fact was read and, for an utterance, its snippet (what the
/// events keep of it).
#[derive(Clone)]
struct Value {
    read_at: Instant,
    snippet: Option<Arc<str>>,
}

#[derive(Clone)]
struct Bytes;

impl Weighter<Fact, Value> for Bytes {
    fn weight(&self, _: &Fact, value: &Value) -> u64 {
        112 + value.snippet.as_ref().map_or(0, |s| s.len() as u64)
    }
}

pub(super) struct Ownership {
    facts: Cache<Fact, Value, Bytes>,
}

/// What the cache knows of one report's ownership.
#[derive(Debug, Default)]
pub(super) struct Known {
    pub user: bool,
    pub conversation: bool,
    /// The utterance's snippet (`Some(None)`: it exists, without text).
    pub utterance: Option<Option<Arc<str>>>,
}

impl Known {
    pub fn complete(&self) -> bool {
        self.user && self.conversation && self.utterance.is_some()
    }
}

impl Ownership {
    pub fn new() -> Self {
        Self {
            facts: Cache::with_weighter(FACT_CACHE_EXPECTED, FACT_CACHE_BYTES, Bytes),
        }
    }

    /// A fact still trusted.
    fn get(&self, fact: &Fact) -> Option<Value> {
        self.facts
            .get(fact)
            .filter(|value| value.read_at.elapsed() < FACT_TTL)
    }

    fn put(&self, fact: Fact, snippet: Option<Arc<str>>, read_at: Instant) {
        self.facts.insert(fact, Value { read_at, snippet });
    }

    /// What is known of (user, conversation, utterance). A hit is the
    /// whole chain known.
    pub fn lookup(&self, user: Uuid, conversation: Uuid, utterance: Uuid) -> Known {
        let known = match self.get(&Fact::User(user)) {
            // Without the learner's fact the rest is not trusted: it may
            // have been forgotten by an erasure.
            None => Known::default(),
            Some(_) => {
                let utterance = self
                    .get(&Fact::Utterance(user, conversation, utterance))
                    .map(|value| value.snippet);
                Known {
                    user: true,
                    // An utterance of the conversation proves it (should
                    // the conversation's own fact have been evicted).
                    conversation: utterance.is_some()
                        || self.get(&Fact::Conversation(user, conversation)).is_some(),
                    utterance,
                }
            }
        };
        let result = if known.complete() { "hit" } else { "miss" };
        metrics::counter!("errata_ownership_cache_total", "result" => result).increment(1);
        known
    }

    /// Remembers facts read from CQL by a read that began at `asked` (the
    /// ones that hold).
    pub fn remember(
        &self,
        (user, conversation, utterance): (Uuid, Uuid, Uuid),
        known: &Known,
        asked: Instant,
    ) {
        if !known.user {
            return;
        }
        if known.conversation {
            if let Some(snippet) = &known.utterance {
                let fact = Fact::Utterance(user, conversation, utterance);
                self.put(fact, snippet.clone(), asked);
            }
            self.put(Fact::Conversation(user, conversation), None, asked);
        }
        // The learner's fact last: it is what makes the others trusted.
        self.put(Fact::User(user), None, asked);
    }

    /// The learner exists: this replica has just created them.
    pub fn learner_created(&self, user: Uuid) {
        self.put(Fact::User(user), None, Instant::now());
    }

    /// The learner's conversation exists: this replica has just created it.
    pub fn conversation_created(&self, user: Uuid, conversation: Uuid) {
        let known = Known {
            user: true,
            conversation: true,
            utterance: None,
        };
        self.remember((user, conversation, Uuid::nil()), &known, Instant::now());
    }

    /// The utterance exists: this replica has just created it.
    pub fn utterance_created(
        &self,
        (user, conversation, utterance): (Uuid, Uuid, Uuid),
        snippet: Option<Arc<str>>,
    ) {
        let known = Known {
            user: true,
            conversation: true,
            utterance: Some(snippet),
        };
        self.remember((user, conversation, utterance), &known, Instant::now());
    }

    /// The learner is erased (or being erased): none of their facts is
    /// trusted any more on this replica.
    pub fn forget(&self, user: Uuid) {
        self.facts.remove(&Fact::User(user));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_is_known_only_under_its_learner() {
        let cache = Ownership::new();
        let (u, c, t) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert!(!cache.lookup(u, c, t).complete());
        let read = Known {
            user: true,
            conversation: true,
            utterance: Some(Some("She go to school.".into())),
        };
        cache.remember((u, c, t), &read, Instant::now());
        let known = cache.lookup(u, c, t);
        assert!(known.complete());
        assert_eq!(known.utterance, Some(Some("She go to school.".into())));
        // Another utterance of the same conversation: only it is missing.
        let other = cache.lookup(u, c, Uuid::new_v4());
        assert!(other.user && other.conversation && other.utterance.is_none());
        // Without the learner's fact, none of theirs is trusted.
        cache.forget(u);
        let gone = cache.lookup(u, c, t);
        assert!(!gone.user && !gone.conversation && gone.utterance.is_none());
    }

    #[test]
    fn what_does_not_exist_is_not_remembered() {
        let cache = Ownership::new();
        let (u, c, t) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        cache.remember((u, c, t), &Known::default(), Instant::now());
        assert!(!cache.lookup(u, c, t).user);
        let no_conversation = Known {
            user: true,
            conversation: false,
            utterance: None,
        };
        cache.remember((u, c, t), &no_conversation, Instant::now());
        let known = cache.lookup(u, c, t);
        assert!(known.user && !known.conversation);
    }
}
