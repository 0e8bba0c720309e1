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
//! | `errata:{U}:pending_weeks` | hash | the same deltas per ISO week (field: `w`, the week's Monday in days since 1970, `:`, [`ErrorKey::encode`]); `commit.lua` adds each delta here too, in the week of the lease's time (the events' time); moved with `pending` |
//! | `errata:{U}:inflight_weeks` | hash | the weekly deltas of the flusher's batch; applied and deleted with `inflight` |
//! | `errata:{U}:flushlock` | string | the flusher that owns the learner now (token, expires) |
//! | `errata:{U}:batch` | string | the token of the flusher whose take made the in-flight deltas (only its DONE deletes them) |
//! | `errata:{U}:since` | integer | when the oldest pending delta arrived (ms), for the flush lag |
//! | `errata:{U}:epoch` | integer | bumped when a flush starts and ends, for consistent reads |
//! | `errata:{U}:version` | string | the learner's read version: a new, never repeated value at each counted request (`commit.lua`, the request's token) and each repair; with `epoch` it tells a replica whether what it remembers of the learner's durable rows still holds (24 h) |
//! | `errata:{U}:req:F` | string | request F: `L|at|deadline|token` while leased, `A|at` once abandoned (a retry reuses `at`), `D` once counted |
//! | `errata:{U}:open` | sorted set | requests leased or abandoned, not counted (F, scored by the marker's last write): repair leaves their events out |
//! | `errata:{U}:fence` | string | a repair reading the learner's log (token, expires): no commit meanwhile |
//! | `errata:{U}:round` | integer | the exercise rotation |
//! | `errata:{U}:counted` | sorted set | requests counted, F scored by when, for as long as their markers live: how erasure finds the markers |
//! | `errata:{U}:erased` | string | the learner is being (or was just) erased: no lease, commit or flush of theirs succeeds ([`ERASURE`]) |
//!
//! Dirty learners are kept in [`DIRTY_SHARDS`] sets `errata:dirty:{N}` (one
//! per shard, so no single hot key); a learner is added before its deltas.
//!
//! [`keys`] names the keys, [`dedup`] leases and marks requests, [`deltas`]
//! moves count deltas between requests and flushers, [`erasure`] stops and
//! forgets a learner being erased, [`fence`] holds a
//! learner still for a repair; the scripts are the `.lua` files in
//! `scripts/`, each run atomically on one learner's slot, and each called
//! only through its wrapper in [`scripts`], which alone knows the order of
//! its keys and arguments.

mod connection;
mod dedup;
mod deltas;
mod erasure;
mod fence;
pub mod keys;
mod scripts;

pub use self::connection::{Acknowledged, Connection};
pub use self::dedup::{Commit, Lease};
pub use self::deltas::{decode_week_field, week_field, Buffered, Closing, Take};
pub use self::erasure::Requests;
pub use self::fence::{Claim, Snapshot};
pub use self::keys::*;

use uuid::Uuid;

use self::scripts::LuaScript;

use crate::store::policy::REDIS_CALL_TIMEOUT as CALL_TIMEOUT;
use crate::store::{Backend, StoreError};

/// The buffer: one multiplexed connection (to a Redis server or a Redis
/// Cluster). The scripts are loaded once per process, by their wrappers
/// in [`scripts`].
pub struct Buffer {
    conn: Connection,
}

pub(super) fn unavailable(e: ::redis::RedisError) -> StoreError {
    StoreError::unavailable(Backend::Redis, "a call failed", e)
}

/// Runs a Redis call with the call timeout; errors and timeouts are 503s.
pub(super) async fn bounded<T>(
    call: impl std::future::Future<Output = ::redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(StoreError::busy(Backend::Redis, "a call timed out")),
    }
}

impl Buffer {
    /// The buffer on `url`, waiting for no replica.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_requiring(url, 0).await
    }

    /// The buffer on `url`; with `min_replicas` above 0, every write that
    /// acknowledges something waits for that many replicas (see
    /// [`Connection::waited`]).
    pub async fn connect_requiring(url: &str, min_replicas: u32) -> Result<Self, StoreError> {
        let mut conn = Connection::open(url).await?;
        conn.name_scripts(scripts::named_scripts());
        conn.require_replicas(min_replicas);
        Ok(Self { conn })
    }

    pub(super) fn conn(&self) -> Connection {
        self.conn.clone()
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        bounded(::redis::cmd("PING").query_async::<String>(&mut conn)).await?;
        Ok(())
    }

    /// Fails with `UserNotFound` while the learner is being erased.
    pub async fn next_round(&self, user: Uuid) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let round: i64 = scripts::Round { user }.invoke(&mut conn).await?;
        if round < 0 {
            return Err(StoreError::UserNotFound);
        }
        Ok(round.saturating_sub(1).max(0) as u64)
    }
}
