//! A learner's erasure in Redis: the marker that stops everything of
//! theirs, what their open requests are, and forgetting every key.

use ::redis::AsyncCommands;
use uuid::Uuid;

use super::keys::{
    counted_key, dirty_key, dirty_shard, erased_key, learner_state_keys, open_key, request_key,
};
use super::scripts::{self, LuaScript};
use super::{bounded, Buffer};
use crate::store::policy::ERASURE;
use crate::store::StoreError;

/// The learner's requests as an erasure finds them.
#[derive(Debug, Default)]
pub struct Requests {
    /// Every request with a marker: leased, abandoned or counted.
    pub fingerprints: Vec<Uuid>,
    /// When the leased and abandoned ones were first tried (ms): their
    /// events, if any are written, carry that time.
    pub open_times_ms: Vec<i64>,
}

impl Buffer {
    /// From now on (for `ERASURE`) no lease, commit or flush of the
    /// learner succeeds (with replicas required, once they have the
    /// marker: a failover must not lift it). The marker holds `token`, the
    /// erasure's own, so that only it may lift it again
    /// ([`Buffer::unmark_erased`]).
    pub async fn mark_erased(&self, user: Uuid, token: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let mut set = ::redis::cmd("SET");
        set.arg(erased_key(user))
            .arg(token)
            .arg("PX")
            .arg(ERASURE.as_millis() as u64);
        if conn.min_replicas() == 0 {
            return bounded(set.query_async::<()>(&mut conn)).await;
        }
        let mut pipe = ::redis::pipe();
        pipe.add_command(set).ignore();
        let ((), acknowledged) = conn.waited(pipe, &[]).await?;
        conn.replicated("erase", acknowledged)
    }

    /// An erasure that failed before it deleted anything lifts its marker:
    /// the learner still exists and is served again at once.
    pub async fn unmark_erased(&self, user: Uuid, token: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        scripts::Unmark { user, token }
            .invoke::<i64>(&mut conn)
            .await?;
        Ok(())
    }

    /// The learner's requests that have markers (read after the marker is
    /// set, so no new one appears).
    pub async fn requests(&self, user: Uuid) -> Result<Requests, StoreError> {
        let mut conn = self.conn();
        let (open, counted): (Vec<String>, Vec<String>) = bounded(
            ::redis::pipe()
                .zrange(open_key(user), 0, -1)
                .zrange(counted_key(user), 0, -1)
                .query_async(&mut conn),
        )
        .await?;
        let open: Vec<Uuid> = open
            .iter()
            .filter_map(|f| Uuid::parse_str(f).ok())
            .collect();
        let mut open_times_ms = Vec::new();
        if !open.is_empty() {
            let keys: Vec<String> = open.iter().map(|f| request_key(user, *f)).collect();
            let markers: Vec<Option<String>> = bounded(conn.mget(keys)).await?;
            // `L|at|deadline|token` or `A|at`.
            open_times_ms = markers
                .iter()
                .flatten()
                .filter_map(|m| m.split('|').nth(1)?.parse().ok())
                .collect();
        }
        let mut fingerprints = open;
        fingerprints.extend(counted.iter().filter_map(|f| Uuid::parse_str(f).ok()));
        Ok(Requests {
            fingerprints,
            open_times_ms,
        })
    }

    /// Deletes every key of the learner but the erasure marker (which
    /// expires by itself), and their place in the dirty set. With replicas
    /// required, the erasure is acknowledged only once they have the
    /// deletes (a failover must not bring back deltas to flush into the
    /// erased learner's counters).
    pub async fn forget(&self, user: Uuid, requests: &Requests) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let mut keys = learner_state_keys(user);
        keys.extend(requests.fingerprints.iter().map(|f| request_key(user, *f)));
        // One slot (the hash tag), in chunks to keep each command short;
        // the wait goes with the last.
        let chunks: Vec<&[String]> = keys.chunks(500).collect();
        let waits = conn.min_replicas() > 0;
        for (i, chunk) in chunks.iter().enumerate() {
            if waits && i + 1 == chunks.len() {
                let mut pipe = ::redis::pipe();
                pipe.del(*chunk).ignore();
                let ((), acknowledged) = conn.waited(pipe, &[]).await?;
                conn.replicated("forget", acknowledged)?;
            } else {
                bounded(conn.del::<_, i64>(*chunk)).await?;
            }
        }
        let shard = dirty_key(dirty_shard(user));
        bounded(conn.srem::<_, _, i64>(shard, user.to_string())).await?;
        Ok(())
    }
}
