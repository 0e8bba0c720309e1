//! The Redis keys of the buffer. Every key a learner owns carries the
//! `{user_id}` hash tag, so all of them live in one Redis Cluster slot and
//! one script may touch them together.

use uuid::Uuid;

pub const DIRTY_SHARDS: u32 = 16;
pub fn pending_key(user: Uuid) -> String {
    format!("errata:{{{user}}}:pending")
}
pub fn inflight_key(user: Uuid) -> String {
    format!("errata:{{{user}}}:inflight")
}
/// The weekly twin of `pending`: deltas per (ISO week, error), moved and
/// deleted together with it.
pub fn pending_weeks_key(user: Uuid) -> String {
    format!("errata:{{{user}}}:pending_weeks")
}
/// The weekly twin of `inflight`.
pub fn inflight_weeks_key(user: Uuid) -> String {
    format!("errata:{{{user}}}:inflight_weeks")
}
/// Which flusher's take the in-flight deltas belong to (its token).
pub fn batch_key(user: Uuid) -> String {
    format!("errata:{{{user}}}:batch")
}
pub fn lock_key(user: Uuid) -> String {
    format!("errata:{{{user}}}:flushlock")
}
/// Changed by every change to what a learner's reads show besides the
/// buffered deltas and the flushes (which `epoch` marks): a counted
/// request (its labels), a repair. Never the same value twice.
pub fn version_key(user: Uuid) -> String {
    format!("errata:{{{user}}}:version")
}
pub fn since_key(user: Uuid) -> String {
    format!("errata:{{{user}}}:since")
}
pub fn epoch_key(user: Uuid) -> String {
    format!("errata:{{{user}}}:epoch")
}
pub fn request_key(user: Uuid, fingerprint: Uuid) -> String {
    format!("errata:{{{user}}}:req:{fingerprint}")
}
/// The learner's requests that are leased or abandoned but not counted:
/// their events may be in the log already (fingerprint → when the marker
/// was last written, ms).
pub fn open_key(user: Uuid) -> String {
    format!("errata:{{{user}}}:open")
}
/// Set (with the repairer's token) while `errata repair` reads the learner's
/// log: no request of the learner is counted meanwhile.
pub fn fence_key(user: Uuid) -> String {
    format!("errata:{{{user}}}:fence")
}
pub fn round_key(user: Uuid) -> String {
    format!("errata:{{{user}}}:round")
}
/// The learner's counted requests (fingerprint → when counted, ms), for as
/// long as their markers live: what erasure finds the markers by.
pub fn counted_key(user: Uuid) -> String {
    format!("errata:{{{user}}}:counted")
}
/// Set while the learner is being erased, and for `ERASURE` after.
pub fn erased_key(user: Uuid) -> String {
    format!("errata:{{{user}}}:erased")
}
/// Every key of one learner but its request markers and the erasure
/// marker: what erasure deletes besides the markers it finds. A new key of
/// the learner's is one more line here.
pub fn learner_state_keys(user: Uuid) -> Vec<String> {
    vec![
        pending_key(user),
        inflight_key(user),
        pending_weeks_key(user),
        inflight_weeks_key(user),
        lock_key(user),
        batch_key(user),
        since_key(user),
        epoch_key(user),
        version_key(user),
        open_key(user),
        fence_key(user),
        round_key(user),
        counted_key(user),
    ]
}
/// Every key of one learner, with the marker of request `fingerprint`.
pub fn learner_keys(user: Uuid, fingerprint: Uuid) -> Vec<String> {
    let mut keys = learner_state_keys(user);
    keys.push(request_key(user, fingerprint));
    keys.push(erased_key(user));
    keys
}
/// The learner whose key this is (`errata:{U}:…`).
pub fn learner_of(key: &str) -> Option<Uuid> {
    let tagged = key.strip_prefix("errata:{")?;
    Uuid::parse_str(tagged.split_once('}')?.0).ok()
}
pub fn dirty_shard(user: Uuid) -> u32 {
    (user.as_u128() % u128::from(DIRTY_SHARDS)) as u32
}
pub fn dirty_key(shard: u32) -> String {
    format!("errata:dirty:{{{shard}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_learner_key_carries_the_user_hash_tag() {
        let user = Uuid::new_v4();
        let tag = format!("{{{user}}}");
        for key in learner_keys(user, Uuid::new_v4()) {
            // The tag is the first {...} of the key, so it decides the slot.
            assert_eq!(key.find('{'), key.find(&tag), "{key}");
        }
    }

    #[test]
    fn a_key_names_its_learner() {
        let user = Uuid::new_v4();
        for key in learner_keys(user, Uuid::new_v4()) {
            assert_eq!(learner_of(&key), Some(user), "{key}");
        }
        assert_eq!(learner_of("errata:dirty:{3}"), None);
        assert_eq!(learner_of("other:{x}:pending"), None);
    }

    #[test]
    fn dirty_shards_cover_every_shard_and_only_those() {
        let shards: std::collections::HashSet<u32> =
            (0..2000).map(|_| dirty_shard(Uuid::new_v4())).collect();
        assert_eq!(shards.len(), DIRTY_SHARDS as usize);
        assert!(shards.iter().all(|s| *s < DIRTY_SHARDS));
    }
}
