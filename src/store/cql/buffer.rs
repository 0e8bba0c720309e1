//! The Redis write-behind buffer of the cql store.
//!
//! Every key a learner owns carries the `{user_id}` hash tag, so all of them
//! live in one Redis Cluster slot and the Lua scripts below may touch them
//! together:
//!
//! | key | type | what |
//! |---|---|---|
//! | `errata:{U}:pending` | hash | acknowledged count deltas not yet taken by a flusher (field: [`ErrorKey::encode`]) |
//! | `errata:{U}:inflight` | hash | deltas a flusher is applying (or left behind when it crashed) |
//! | `errata:{U}:flushlock` | string | the flusher that owns the learner now (token, expires) |
//! | `errata:{U}:since` | integer | when the oldest pending delta arrived (ms), for the flush lag |
//! | `errata:{U}:epoch` | integer | bumped when a flush starts and ends, for consistent reads |
//! | `errata:{U}:req:F` | string | request F: `L|at|deadline|token` while leased, `D` once counted |
//! | `errata:{U}:round` | integer | the exercise rotation |
//!
//! Dirty learners are kept in [`DIRTY_SHARDS`] sets `errata:dirty:{N}` (one
//! per shard, so no single hot key); a learner is added before its deltas.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use uuid::Uuid;

use crate::domain::ErrorKey;
use crate::store::StoreError;

pub const DIRTY_SHARDS: u32 = 16;
/// How long a request holds its deduplication lease before a retry may take
/// it over.
pub const LEASE: Duration = Duration::from_secs(10);
/// How long a counted request is remembered as a duplicate.
pub const MARKER_TTL: Duration = crate::store::DEDUP_WINDOW;
/// How long a flusher owns a learner (far above a counter batch's timeout).
pub const FLUSH_LOCK: Duration = Duration::from_secs(30);
/// No Redis call may take longer than this; then the request fails with 503.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

pub fn pending_key(user: Uuid) -> String {
    format!("errata:{{{user}}}:pending")
}
pub fn inflight_key(user: Uuid) -> String {
    format!("errata:{{{user}}}:inflight")
}
pub fn lock_key(user: Uuid) -> String {
    format!("errata:{{{user}}}:flushlock")
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
pub fn round_key(user: Uuid) -> String {
    format!("errata:{{{user}}}:round")
}
/// Every key of one learner, for tests and tooling.
pub fn learner_keys(user: Uuid, fingerprint: Uuid) -> Vec<String> {
    vec![
        pending_key(user),
        inflight_key(user),
        lock_key(user),
        since_key(user),
        epoch_key(user),
        request_key(user, fingerprint),
        round_key(user),
    ]
}
pub fn dirty_shard(user: Uuid) -> u32 {
    (user.as_u128() % u128::from(DIRTY_SHARDS)) as u32
}
pub fn dirty_key(shard: u32) -> String {
    format!("errata:dirty:{{{shard}}}")
}

/// Takes (or keeps) the deduplication lease of a request.
/// KEYS: marker. ARGV: proposed time (ms), lease ms, marker ttl ms, token.
/// Returns {'acquired', time_ms} (time of the first attempt, reused by a
/// takeover so rewritten events are identical), {'done'} or {'busy'}.
const LEASE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], 'L|' .. ARGV[1] .. '|' .. (now + tonumber(ARGV[2])) .. '|' .. ARGV[4], 'PX', ARGV[3])
  return {'acquired', ARGV[1]}
end
if v == 'D' then return {'done'} end
local at, deadline = string.match(v, '^L|(%d+)|(%d+)|')
if at and tonumber(deadline) < now then
  redis.call('SET', KEYS[1], 'L|' .. at .. '|' .. (now + tonumber(ARGV[2])) .. '|' .. ARGV[4], 'PX', ARGV[3])
  return {'acquired', at}
end
return {'busy'}
";

/// Counts a leased request: adds its deltas and turns the lease into the
/// long marker, atomically. KEYS: marker, pending, since. ARGV: token,
/// marker ttl ms, then field, delta pairs. Returns 1, or 0 when the lease
/// was lost.
const COMMIT_SCRIPT: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local token = string.match(v, '^L|%d+|%d+|(.*)$')
if token ~= ARGV[1] then return 0 end
for i = 3, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
end
local t = redis.call('TIME')
redis.call('SET', KEYS[3], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), 'NX')
redis.call('SET', KEYS[1], 'D', 'PX', ARGV[2])
return 1
";

/// Lets a request go without counting it (it failed before committing).
/// KEYS: marker. ARGV: token.
const ABANDON_SCRIPT: &str = r"
local v = redis.call('GET', KEYS[1])
if v and string.match(v, '^L|%d+|%d+|(.*)$') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// A flusher takes a learner. KEYS: pending, inflight, lock, epoch, since.
/// ARGV: token, lock ms. Returns {'busy'} (another flusher owns it),
/// {'empty'}, or {'moved'|'replay', age ms, field, delta, ...}: the
/// in-flight deltas to apply ('replay' when a crashed flush left them) and
/// the age of the oldest of them.
const TAKE_SCRIPT: &str = r"
if not redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {'busy'}
end
local state = 'replay'
if redis.call('EXISTS', KEYS[2]) == 0 then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('DEL', KEYS[3])
    return {'empty'}
  end
  redis.call('RENAME', KEYS[1], KEYS[2])
  state = 'moved'
end
local age = 0
local since = redis.call('GET', KEYS[5])
if since and state == 'moved' then
  local t = redis.call('TIME')
  age = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(since)
  redis.call('DEL', KEYS[5])
end
redis.call('INCR', KEYS[4])
local r = redis.call('HGETALL', KEYS[2])
table.insert(r, 1, tostring(age))
table.insert(r, 1, state)
return r
";

/// The counter batch succeeded: forget the in-flight deltas. KEYS: inflight,
/// lock, epoch. ARGV: token. Returns 1, or 0 when another flusher owns the
/// learner now (the lock expired and was taken).
const DONE_SCRIPT: &str = r"
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if owner then redis.call('DEL', KEYS[2]) end
redis.call('INCR', KEYS[3])
return 1
";

/// The counter batch failed: keep the in-flight deltas for a retry, let the
/// learner go. KEYS: lock, epoch. ARGV: token.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
redis.call('INCR', KEYS[2])
return 1
";

pub enum Lease {
    /// This request counts; events carry this time (milliseconds).
    Acquired { at_ms: i64 },
    /// Already counted.
    Done,
    /// Another attempt of the same request is being recorded right now.
    Busy,
}

pub enum Take {
    Busy,
    Empty,
    /// Deltas to apply; `replay` when a crashed flusher left them.
    Deltas {
        deltas: Vec<(ErrorKey, i64)>,
        replay: bool,
        /// How long the oldest delta waited in Redis.
        age: Duration,
    },
}

/// A consistent view of a learner's buffered deltas.
pub struct Buffered {
    pub pending: HashMap<ErrorKey, i64>,
    pub inflight: HashMap<ErrorKey, i64>,
    pub epoch: i64,
    /// A flusher owns the learner now (its batch may be half way).
    pub locked: bool,
}

pub struct Buffer {
    conn: ConnectionManager,
    lease: Script,
    commit: Script,
    abandon: Script,
    take: Script,
    done: Script,
    release: Script,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// Runs a Redis call with the call timeout; errors and timeouts are 503s.
async fn bounded<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(StoreError::Unavailable("redis: timed out".into())),
    }
}

fn decode_deltas(pairs: &[String]) -> Vec<(ErrorKey, i64)> {
    pairs
        .chunks_exact(2)
        .filter_map(|pair| {
            let key = ErrorKey::decode(&pair[0]);
            let delta = pair[1].parse::<i64>().ok();
            if key.is_none() || delta.is_none() {
                tracing::warn!("ignoring a malformed buffered delta");
            }
            Some((key?, delta?))
        })
        .collect()
}

fn to_map(raw: HashMap<String, i64>) -> HashMap<ErrorKey, i64> {
    raw.into_iter()
        .filter_map(|(k, v)| Some((ErrorKey::decode(&k)?, v)))
        .collect()
}

impl Buffer {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = bounded(ConnectionManager::new_with_config(client, config)).await?;
        Ok(Self {
            conn,
            lease: Script::new(LEASE_SCRIPT),
            commit: Script::new(COMMIT_SCRIPT),
            abandon: Script::new(ABANDON_SCRIPT),
            take: Script::new(TAKE_SCRIPT),
            done: Script::new(DONE_SCRIPT),
            release: Script::new(RELEASE_SCRIPT),
        })
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        bounded(redis::cmd("PING").query_async::<String>(&mut conn)).await?;
        Ok(())
    }

    pub async fn lease(
        &self,
        user: Uuid,
        fingerprint: Uuid,
        proposed_ms: i64,
        token: &str,
    ) -> Result<Lease, StoreError> {
        let mut conn = self.conn();
        let mut invocation = self.lease.key(request_key(user, fingerprint));
        invocation
            .arg(proposed_ms)
            .arg(LEASE.as_millis() as u64)
            .arg(MARKER_TTL.as_millis() as u64)
            .arg(token);
        let answer: Vec<String> = bounded(invocation.invoke_async(&mut conn)).await?;
        match answer.first().map(String::as_str) {
            Some("acquired") => {
                let at_ms = answer
                    .get(1)
                    .and_then(|at| at.parse().ok())
                    .ok_or_else(|| StoreError::Internal("redis: malformed lease".into()))?;
                Ok(Lease::Acquired { at_ms })
            }
            Some("done") => Ok(Lease::Done),
            _ => Ok(Lease::Busy),
        }
    }

    /// Marks the learner dirty, adds the deltas and closes the lease, then
    /// marks the learner dirty again. Returns false when the lease was lost
    /// (nothing was counted).
    pub async fn commit(
        &self,
        user: Uuid,
        fingerprint: Uuid,
        token: &str,
        deltas: &[(ErrorKey, i64)],
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let shard = dirty_key(dirty_shard(user));
        // Dirty first: a crash after this leaves at most a spurious entry,
        // which the flusher drops; never deltas nobody will flush.
        bounded(conn.sadd::<_, _, i64>(&shard, user.to_string())).await?;
        let mut invocation = self.commit.key(request_key(user, fingerprint));
        invocation
            .key(pending_key(user))
            .key(since_key(user))
            .arg(token)
            .arg(MARKER_TTL.as_millis() as u64);
        for (key, delta) in deltas {
            invocation.arg(key.encode()).arg(*delta);
        }
        let committed: i64 = bounded(invocation.invoke_async(&mut conn)).await?;
        if committed != 1 {
            return Ok(false);
        }
        // And dirty again: a flusher that found the learner empty between
        // the first mark and the script may have removed the mark in
        // `clean` after checking for deltas that did not exist yet (the
        // shard set lives in another cluster slot, so no script can do
        // both). This mark comes after the deltas, so that flusher either
        // saw them or loses the mark to this one.
        if let Err(e) = bounded(conn.sadd::<_, _, i64>(&shard, user.to_string())).await {
            // Counted all the same; only that rare race could now leave
            // the deltas unflushed until the learner's next report.
            tracing::warn!(error = %e, %user, "could not mark a learner dirty after counting");
        }
        Ok(true)
    }

    pub async fn abandon(&self, user: Uuid, fingerprint: Uuid, token: &str) {
        let mut conn = self.conn();
        let mut invocation = self.abandon.key(request_key(user, fingerprint));
        invocation.arg(token);
        if let Err(e) = bounded(invocation.invoke_async::<i64>(&mut conn)).await {
            tracing::warn!(error = %e, "could not release a request lease; it expires by itself");
        }
    }

    /// Pending and in-flight deltas, the epoch and the lock, atomically.
    pub async fn buffered(&self, user: Uuid) -> Result<Buffered, StoreError> {
        let mut conn = self.conn();
        let (pending, inflight, epoch, locked): (
            HashMap<String, i64>,
            HashMap<String, i64>,
            Option<i64>,
            i64,
        ) = bounded(
            redis::pipe()
                .atomic()
                .hgetall(pending_key(user))
                .hgetall(inflight_key(user))
                .get(epoch_key(user))
                .exists(lock_key(user))
                .query_async(&mut conn),
        )
        .await?;
        Ok(Buffered {
            pending: to_map(pending),
            inflight: to_map(inflight),
            epoch: epoch.unwrap_or(0),
            locked: locked == 1,
        })
    }

    pub async fn epoch(&self, user: Uuid) -> Result<i64, StoreError> {
        let mut conn = self.conn();
        let epoch: Option<i64> = bounded(conn.get(epoch_key(user))).await?;
        Ok(epoch.unwrap_or(0))
    }

    pub async fn next_round(&self, user: Uuid) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let round: i64 = bounded(conn.incr(round_key(user), 1)).await?;
        Ok(round.saturating_sub(1).max(0) as u64)
    }

    pub async fn take(&self, user: Uuid, token: &str) -> Result<Take, StoreError> {
        let mut conn = self.conn();
        let mut invocation = self.take.key(pending_key(user));
        invocation
            .key(inflight_key(user))
            .key(lock_key(user))
            .key(epoch_key(user))
            .key(since_key(user))
            .arg(token)
            .arg(FLUSH_LOCK.as_millis() as u64);
        let answer: Vec<String> = bounded(invocation.invoke_async(&mut conn)).await?;
        match answer.first().map(String::as_str) {
            Some("busy") => Ok(Take::Busy),
            Some("empty") => Ok(Take::Empty),
            Some(state) => Ok(Take::Deltas {
                replay: state == "replay",
                age: Duration::from_millis(
                    answer
                        .get(1)
                        .and_then(|a| a.parse::<u64>().ok())
                        .unwrap_or(0),
                ),
                deltas: decode_deltas(answer.get(2..).unwrap_or_default()),
            }),
            None => Err(StoreError::Internal("redis: empty take answer".into())),
        }
    }

    pub async fn done(&self, user: Uuid, token: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let mut invocation = self.done.key(inflight_key(user));
        invocation
            .key(lock_key(user))
            .key(epoch_key(user))
            .arg(token);
        let done: i64 = bounded(invocation.invoke_async(&mut conn)).await?;
        Ok(done == 1)
    }

    pub async fn release(&self, user: Uuid, token: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let mut invocation = self.release.key(lock_key(user));
        invocation.key(epoch_key(user)).arg(token);
        bounded(invocation.invoke_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    /// Some learners of one dirty shard (all of them when `count` is None).
    pub async fn dirty(&self, shard: u32, count: Option<usize>) -> Result<Vec<Uuid>, StoreError> {
        let mut conn = self.conn();
        let members: Vec<String> = match count {
            Some(n) => {
                bounded(
                    redis::cmd("SRANDMEMBER")
                        .arg(dirty_key(shard))
                        .arg(n)
                        .query_async(&mut conn),
                )
                .await?
            }
            None => bounded(conn.smembers(dirty_key(shard))).await?,
        };
        Ok(members
            .iter()
            .filter_map(|m| Uuid::parse_str(m).ok())
            .collect())
    }

    /// How many learners are dirty, over every shard.
    pub async fn dirty_learners(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let mut pipe = redis::pipe();
        for shard in 0..DIRTY_SHARDS {
            pipe.scard(dirty_key(shard));
        }
        let sizes: Vec<u64> = bounded(pipe.query_async(&mut conn)).await?;
        Ok(sizes.iter().sum())
    }

    /// Drops a learner from its dirty shard, unless deltas arrived meanwhile.
    /// Deltas committed after the check are marked again by `commit`.
    pub async fn clean(&self, user: Uuid) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let shard = dirty_key(dirty_shard(user));
        bounded(conn.srem::<_, _, i64>(&shard, user.to_string())).await?;
        let (pending, inflight): (i64, i64) = bounded(
            redis::pipe()
                .exists(pending_key(user))
                .exists(inflight_key(user))
                .query_async(&mut conn),
        )
        .await?;
        if pending + inflight > 0 {
            bounded(conn.sadd::<_, _, i64>(&shard, user.to_string())).await?;
        }
        Ok(())
    }

    /// Takes the flush lock for work that must not run beside a flush
    /// (repair). Returns false when a flusher owns the learner.
    pub async fn lock(&self, user: Uuid, token: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let set: Option<String> = bounded(
            redis::cmd("SET")
                .arg(lock_key(user))
                .arg(token)
                .arg("NX")
                .arg("PX")
                .arg(FLUSH_LOCK.as_millis() as u64)
                .query_async(&mut conn),
        )
        .await?;
        Ok(set.is_some())
    }
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
    fn dirty_shards_cover_every_shard_and_only_those() {
        let shards: std::collections::HashSet<u32> =
            (0..2000).map(|_| dirty_shard(Uuid::new_v4())).collect();
        assert_eq!(shards.len(), DIRTY_SHARDS as usize);
        assert!(shards.iter().all(|s| *s < DIRTY_SHARDS));
    }

    #[test]
    fn buffered_deltas_decode_with_separators_in_names() {
        let key = ErrorKey {
            category: "a:{b}".into(),
            subcategory: "c}:{".into(),
        };
        let raw = vec![key.encode(), "3".into(), "garbage".into(), "x".into()];
        assert_eq!(decode_deltas(&raw), vec![(key, 3)]);
    }
}
