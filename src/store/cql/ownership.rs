//! The ownership facts of the ingest path, remembered.
//!
//! Before a report counts, its learner, conversation and utterance must
//! exist and belong together: three reads. Once created, none of these facts
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
//! learner alone makes every later request of theirs read CQL again; and no
//! fact is trusted for longer than [`FACT_TTL`], so a replica that never
//! hears of an erasure stops trusting what it knew of that learner within
//! that time (an erasure must turn the learner's requests away for longer).

use std::sync::Arc;
use std::time::{Duration, Instant};

use quick_cache::sync::Cache;
use quick_cache::Weighter;
use uuid::Uuid;

/// What the cache may hold: about 32 MiB of facts (utterances weigh their
/// snippet).
const CAPACITY_BYTES: u64 = 32 << 20;
/// Facts expected at that weight, for the cache's sizing.
const EXPECTED_FACTS: usize = 200_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Fact {
    User(Uuid),
    Conversation(Uuid, Uuid),
    Utterance(Uuid, Uuid, Uuid),
}

/// How long a fact is trusted after it was read from CQL.
pub const FACT_TTL: Duration = Duration::from_secs(10 * 60);

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
            facts: Cache::with_weighter(EXPECTED_FACTS, CAPACITY_BYTES, Bytes),
        }
    }

    /// A fact still trusted.
    fn get(&self, fact: &Fact) -> Option<Value> {
        self.facts
            .get(fact)
            .filter(|value| value.read_at.elapsed() < FACT_TTL)
    }

    fn put(&self, fact: Fact, snippet: Option<Arc<str>>) {
        let read_at = Instant::now();
        self.facts.insert(fact, Value { read_at, snippet });
    }

    /// What is known of (user, conversation, utterance). A hit is the
    /// whole chain known.
    pub fn lookup(&self, user: Uuid, conversation: Uuid, utterance: Uuid) -> Known {
        let known = match self.get(&Fact::User(user)) {
            // Without the learner's fact the rest is not trusted: it may
            // have been forgotten by an erasure.
            None => Known::default(),
            Some(_) => Known {
                user: true,
                conversation: self.get(&Fact::Conversation(user, conversation)).is_some(),
                utterance: self
                    .get(&Fact::Utterance(user, conversation, utterance))
                    .map(|value| value.snippet),
            },
        };
        let result = if known.complete() { "hit" } else { "miss" };
        metrics::counter!("errata_ownership_cache_total", "result" => result).increment(1);
        known
    }

    /// Remembers facts just read from CQL (the ones that hold).
    pub fn remember(&self, user: Uuid, conversation: Uuid, utterance: Uuid, known: &Known) {
        match (known.user, known.conversation, &known.utterance) {
            (true, true, Some(snippet)) => {
                self.utterance_exists(user, conversation, utterance, snippet.clone())
            }
            (true, true, None) => self.conversation_exists(user, conversation),
            (true, false, _) => self.learner_exists(user),
            (false, _, _) => {}
        }
    }

    /// The learner exists (just created, or read).
    pub fn learner_exists(&self, user: Uuid) {
        self.put(Fact::User(user), None);
    }

    /// The learner's conversation exists, and so does the learner.
    pub fn conversation_exists(&self, user: Uuid, conversation: Uuid) {
        self.put(Fact::Conversation(user, conversation), None);
        // The learner's fact last: it is what makes the others trusted.
        self.learner_exists(user);
    }

    /// The utterance of the learner's conversation exists, and so do they.
    pub fn utterance_exists(
        &self,
        user: Uuid,
        conversation: Uuid,
        utterance: Uuid,
        snippet: Option<Arc<str>>,
    ) {
        self.put(Fact::Utterance(user, conversation, utterance), snippet);
        self.conversation_exists(user, conversation);
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
        cache.remember(u, c, t, &read);
        let known = cache.lookup(u, c, t);
        assert!(known.complete());
        assert_eq!(known.utterance, Some(Some("She go to school.".into())));
        // Another utterance of the same conversation: only it is missing.
        let other = cache.lookup(u, c, Uuid::new_v4());
        assert!(other.user && other.conversation && other.utterance.is_none());
        // Without the learner's fact, none of theirs is trusted.
        cache.facts.remove(&Fact::User(u));
        let gone = cache.lookup(u, c, t);
        assert!(!gone.user && !gone.conversation && gone.utterance.is_none());
    }

    #[test]
    fn what_does_not_exist_is_not_remembered() {
        let cache = Ownership::new();
        let (u, c, t) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        cache.remember(u, c, t, &Known::default());
        assert!(!cache.lookup(u, c, t).user);
        let no_conversation = Known {
            user: true,
            conversation: false,
            utterance: None,
        };
        cache.remember(u, c, t, &no_conversation);
        let known = cache.lookup(u, c, t);
        assert!(known.user && !known.conversation);
    }
}
