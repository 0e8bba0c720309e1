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
//! | `errata:{U}:req:F` | string | request F: `L|at|deadline|token` while leased, `A|at` once abandoned (a retry reuses `at`), `D` once counted |
//! | `errata:{U}:open` | sorted set | requests leased or abandoned, not counted (F, scored by the marker's last write): repair leaves their events out |
//! | `errata:{U}:fence` | string | a repair reading the learner's log (token, expires): no commit meanwhile |
//! | `errata:{U}:round` | integer | the exercise rotation |
//!
//! Dirty learners are kept in [`DIRTY_SHARDS`] sets `errata:dirty:{N}` (one
//! per shard, so no single hot key); a learner is added before its deltas.
//!
//! [`keys`] names the keys, [`dedup`] leases and marks requests, [`deltas`]
//! moves count deltas between requests and flushers, [`fence`] holds a
//! learner still for a repair; the scripts are the `.lua` files in
//! `scripts/`, each run atomically on one learner's slot.

mod dedup;
mod deltas;
mod fence;
pub mod keys;

pub use self::dedup::{Commit, Lease};
pub use self::deltas::{decode_week_field, week_field, Buffered, Take};
pub use self::fence::Snapshot;
pub use self::keys::*;

use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::{AsyncCommands, Script};
use uuid::Uuid;

use crate::store::{Backend, StoreError};

/// A script that reads the server's clock starts with `now_ms()`.
macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("scripts/clock.lua"),
            include_str!(concat!("scripts/", $file))
        ))
    };
}

/// The buffer: one multiplexed Redis connection and the loaded scripts.
pub struct Buffer {
    conn: ConnectionManager,
    pub(super) lease: Script,
    pub(super) commit: Script,
    pub(super) abandon: Script,
    pub(super) take: Script,
    pub(super) done: Script,
    pub(super) release: Script,
    pub(super) renew: Script,
    pub(super) fence: Script,
    pub(super) snapshot: Script,
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
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = ::redis::Client::open(url).map_err(unavailable)?;
        let config = ::redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = bounded(ConnectionManager::new_with_config(client, config)).await?;
        Ok(Self {
            conn,
            lease: script!("lease.lua"),
            commit: script!("commit.lua"),
            abandon: script!("abandon.lua"),
            take: script!("take.lua"),
            done: script!("done.lua"),
            release: script!("release.lua"),
            renew: script!("renew.lua"),
            fence: script!("fence.lua"),
            snapshot: script!("snapshot.lua"),
        })
    }

    pub(super) fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        bounded(::redis::cmd("PING").query_async::<String>(&mut conn)).await?;
        Ok(())
    }

    pub async fn next_round(&self, user: Uuid) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let round: i64 = bounded(conn.incr(round_key(user), 1)).await?;
        Ok(round.saturating_sub(1).max(0) as u64)
    }
}
