//! Holding a learner still: the flush lock a repair takes, renewed by
//! whoever holds it (a repair, or a flusher finishing its batch), and the
//! fence that stops the learner's commits while a repair reads the log.

use std::collections::HashMap;

use uuid::Uuid;

use super::deltas::{to_map, week_counts};
use super::keys::lock_key;
use super::scripts::{self, LuaScript};
use super::{bounded, Buffer};
use crate::domain::{ErrorKey, WeekCount};
use crate::store::policy::{FENCE, FLUSH_LOCK, MARKER_TTL};
use crate::store::StoreError;

/// The learner's buffer as a repair sees it, read at one instant while no
/// request could be counted and no flusher could move deltas.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Requests leased or abandoned but not counted: their events, if any
    /// are in the log, must not be counted.
    pub open: Vec<Uuid>,
    pub pending: HashMap<ErrorKey, i64>,
    pub inflight: HashMap<ErrorKey, i64>,
    /// Pending and in-flight weekly deltas.
    pub weeks: Vec<WeekCount>,
}

/// What a repair's attempt at the flush lock found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Taken,
    /// Another holder has it.
    Busy,
    /// The learner is being erased: a repair leaves them alone.
    Erased,
}

impl Buffer {
    /// A repair takes the learner's flush lock, unless the learner is
    /// being erased.
    pub async fn claim(&self, user: Uuid, token: &str) -> Result<Claim, StoreError> {
        let mut conn = self.conn();
        let claimed: i64 = scripts::Claim {
            user,
            token,
            lock_ms: FLUSH_LOCK.as_millis() as u64,
        }
        .invoke(&mut conn)
        .await?;
        Ok(match claimed {
            1 => Claim::Taken,
            0 => Claim::Busy,
            _ => Claim::Erased,
        })
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

    /// Extends the flush lock (and the fence, if this holder set one).
    /// Returns false when the lock is not the holder's any more: it expired
    /// or another took it, and it is not taken back.
    pub async fn renew(&self, user: Uuid, token: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let renewed: i64 = scripts::Renew {
            user,
            token,
            lock_ms: FLUSH_LOCK.as_millis() as u64,
            fence_ms: FENCE.as_millis() as u64,
        }
        .invoke(&mut conn)
        .await?;
        Ok(renewed == 1)
    }

    /// Stops the learner's commits (the holder of the flush lock only).
    /// Returns false when the lock is not the holder's.
    pub async fn fence(&self, user: Uuid, token: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let fenced: i64 = scripts::Fence {
            user,
            token,
            fence_ms: FENCE.as_millis() as u64,
        }
        .invoke(&mut conn)
        .await?;
        Ok(fenced == 1)
    }

    /// Reads the open requests and the buffered deltas at one instant and
    /// lifts the fence. `None` when lock or fence were lost meanwhile (then
    /// what was read beside them is not consistent with this).
    pub async fn snapshot(&self, user: Uuid, token: &str) -> Result<Option<Snapshot>, StoreError> {
        let mut conn = self.conn();
        let snapshot = scripts::Snapshot {
            user,
            token,
            marker_ttl_ms: MARKER_TTL.as_millis() as u64,
        };
        type Answer = (
            String,
            Vec<String>,
            HashMap<String, i64>,
            HashMap<String, i64>,
            HashMap<String, i64>,
            HashMap<String, i64>,
        );
        let (state, open, pending, inflight, pending_weeks, inflight_weeks): Answer =
            snapshot.invoke(&mut conn).await?;
        if state != "ok" {
            return Ok(None);
        }
        Ok(Some(Snapshot {
            open: open
                .iter()
                .filter_map(|f| Uuid::parse_str(f).ok())
                .collect(),
            pending: to_map(pending),
            inflight: to_map(inflight),
            weeks: week_counts(pending_weeks)
                .chain(week_counts(inflight_weeks))
                .collect(),
        }))
    }
}
