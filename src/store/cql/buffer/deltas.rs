//! Count deltas: pending ones added by requests, in-flight ones a flusher
//! is applying, the flush lock, and the dirty sets that say whom to flush.

use std::collections::HashMap;
use std::time::Duration;

use ::redis::AsyncCommands;
use chrono::NaiveDate;
use uuid::Uuid;

use super::keys::{
    dirty_key, dirty_shard, epoch_key, erased_key, inflight_key, inflight_weeks_key, learner_of,
    lock_key, pending_key, pending_weeks_key, version_key, DIRTY_SHARDS,
};
use super::scripts::{self, LuaScript};
use super::{bounded, Buffer};
use crate::domain::{ErrorKey, WeekCount};
use crate::store::policy::{FLUSH_LOCK, READ_VERSION_TTL};
use crate::store::StoreError;

pub enum Take {
    Busy,
    Empty,
    /// Deltas to apply; `replay` when a crashed flusher left them.
    Deltas {
        deltas: Vec<(ErrorKey, i64)>,
        /// The same deltas per week, applied in the same batch.
        weeks: Vec<WeekCount>,
        replay: bool,
        /// How long the oldest delta waited in Redis.
        age: Duration,
    },
}

/// A consistent view of a learner's buffered deltas.
pub struct Buffered {
    pub pending: HashMap<ErrorKey, i64>,
    pub inflight: HashMap<ErrorKey, i64>,
    /// Pending and in-flight weekly deltas.
    pub weeks: Vec<WeekCount>,
    pub epoch: i64,
    /// The learner's read version (see [`version_key`]), if one lives.
    pub version: Option<String>,
    /// A flusher owns the learner now (its batch may be half way).
    pub locked: bool,
    /// The learner is being (or was just) erased.
    pub erased: bool,
}

/// What a read finds once it has read CQL: the flush epoch and the read
/// version then.
pub struct Closing {
    pub epoch: i64,
    pub version: Option<String>,
}

/// The field of a weekly delta: `w`, the week's Monday in days since
/// 1970-01-01, `:`, then the error (as `commit.lua` writes it).
pub fn week_field(week: NaiveDate, key: &ErrorKey) -> String {
    let days = (week - NaiveDate::default()).num_days();
    format!("w{days}:{}", key.encode())
}

/// Inverse of [`week_field`]; `None` for anything it did not produce.
pub fn decode_week_field(field: &str) -> Option<(NaiveDate, ErrorKey)> {
    let (days, key) = field.strip_prefix('w')?.split_once(':')?;
    let week = NaiveDate::default()
        .checked_add_signed(chrono::TimeDelta::try_days(days.parse().ok()?)?)?;
    Some((week, ErrorKey::decode(key)?))
}

pub(super) fn decode_week_pairs(pairs: &[String]) -> Vec<WeekCount> {
    pairs
        .chunks_exact(2)
        .filter_map(|pair| {
            let field = decode_week_field(&pair[0]);
            let delta = pair[1].parse::<i64>().ok();
            if field.is_none() || delta.is_none() {
                tracing::warn!("ignoring a malformed buffered weekly delta");
            }
            let (week_start, key) = field?;
            Some(WeekCount {
                week_start,
                key,
                count: delta?,
            })
        })
        .collect()
}

pub(super) fn week_counts(raw: HashMap<String, i64>) -> impl Iterator<Item = WeekCount> {
    raw.into_iter().filter_map(|(field, count)| {
        let (week_start, key) = decode_week_field(&field)?;
        Some(WeekCount {
            week_start,
            key,
            count,
        })
    })
}

pub(super) fn decode_deltas(pairs: &[String]) -> Vec<(ErrorKey, i64)> {
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

pub(super) fn to_map(raw: HashMap<String, i64>) -> HashMap<ErrorKey, i64> {
    raw.into_iter()
        .filter_map(|(k, v)| Some((ErrorKey::decode(&k)?, v)))
        .collect()
}

impl Buffer {
    /// Pending and in-flight deltas, the epoch, the lock and the erasure
    /// marker, atomically.
    pub async fn buffered(&self, user: Uuid) -> Result<Buffered, StoreError> {
        let mut conn = self.conn();
        type Answer = (
            HashMap<String, i64>,
            HashMap<String, i64>,
            HashMap<String, i64>,
            HashMap<String, i64>,
            Option<i64>,
            Option<String>,
            i64,
            i64,
        );
        let (pending, inflight, pending_weeks, inflight_weeks, epoch, version, locked, erased): Answer =
            bounded(
                redis::pipe()
                    .atomic()
                    .hgetall(pending_key(user))
                    .hgetall(inflight_key(user))
                    .hgetall(pending_weeks_key(user))
                    .hgetall(inflight_weeks_key(user))
                    .get(epoch_key(user))
                    .get(version_key(user))
                    .exists(lock_key(user))
                    .exists(erased_key(user))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(Buffered {
            pending: to_map(pending),
            inflight: to_map(inflight),
            weeks: week_counts(pending_weeks)
                .chain(week_counts(inflight_weeks))
                .collect(),
            epoch: epoch.unwrap_or(0),
            version,
            locked: locked == 1,
            erased: erased == 1,
        })
    }

    /// The flush epoch and the read version, read together after a read
    /// of CQL.
    pub async fn closing(&self, user: Uuid) -> Result<Closing, StoreError> {
        let mut conn = self.conn();
        let (epoch, version): (Option<i64>, Option<String>) = bounded(
            redis::pipe()
                .atomic()
                .get(epoch_key(user))
                .get(version_key(user))
                .query_async(&mut conn),
        )
        .await?;
        Ok(Closing {
            epoch: epoch.unwrap_or(0),
            version,
        })
    }

    /// Gives the learner's reads a new version, if they have one (a
    /// learner without one has nothing remembered, and one being erased
    /// must get no key back): after a repair changed their counters or
    /// labels.
    pub async fn new_read_version(&self, user: Uuid) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let options = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::XX)
            .with_expiration(redis::SetExpiry::PX(READ_VERSION_TTL.as_millis() as u64));
        let _: Option<String> =
            bounded(conn.set_options(version_key(user), Uuid::new_v4().to_string(), options))
                .await?;
        Ok(())
    }

    /// Takes the learner's deltas as this flusher's batch. With replicas
    /// required, a batch is applied only once they have the take: a
    /// failover that lost it would hand the same deltas, still pending, to
    /// the next flusher (counted twice). Fewer replicas in time: an error,
    /// and the batch waits under its lock for the next flusher's replay.
    pub async fn take(&self, user: Uuid, token: &str) -> Result<Take, StoreError> {
        let mut conn = self.conn();
        let call = scripts::Take {
            user,
            token,
            lock_ms: FLUSH_LOCK.as_millis() as u64,
        };
        let (answer, acknowledged) = call.invoke_waited::<Vec<String>>(&mut conn).await?;
        match answer.first().map(String::as_str) {
            Some("busy") => Ok(Take::Busy),
            Some("empty") => Ok(Take::Empty),
            Some(state) => {
                if let Some(acknowledged) = acknowledged {
                    conn.replicated(scripts::Take::NAME, acknowledged)?;
                }
                let number = |i: usize| answer.get(i).and_then(|a| a.parse::<u64>().ok());
                let rest = answer.get(3..).unwrap_or_default();
                let fields = 2 * number(2).unwrap_or(0) as usize;
                let (totals, weeks) = rest.split_at(fields.min(rest.len()));
                Ok(Take::Deltas {
                    replay: state == "replay",
                    age: Duration::from_millis(number(1).unwrap_or(0)),
                    deltas: decode_deltas(totals),
                    weeks: decode_week_pairs(weeks),
                })
            }
            None => Err(StoreError::bug("redis: empty take answer")),
        }
    }

    /// Deletes the batch's in-flight deltas once applied. With replicas
    /// required, a DONE that deleted them counts only once they have it
    /// (a failover that lost it would bring the batch back, to be applied
    /// again); otherwise an error, and the flusher's retry finds the batch
    /// gone (false) or, on a new master that lost it, deletes it again.
    pub async fn done(&self, user: Uuid, token: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let (done, acknowledged) = scripts::Done { user, token }
            .invoke_waited::<i64>(&mut conn)
            .await?;
        if let (1, Some(acknowledged)) = (done, acknowledged) {
            conn.replicated(scripts::Done::NAME, acknowledged)?;
        }
        Ok(done == 1)
    }

    pub async fn release(&self, user: Uuid, token: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        scripts::Release { user, token }
            .invoke::<i64>(&mut conn)
            .await?;
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

    /// How many learners are dirty, over every shard. (One call per shard:
    /// in a Redis Cluster the shards live in different slots.)
    pub async fn dirty_learners(&self) -> Result<u64, StoreError> {
        let sizes = futures_util::future::try_join_all((0..DIRTY_SHARDS).map(|shard| async move {
            let mut conn = self.conn();
            bounded(conn.scard::<_, u64>(dirty_key(shard))).await
        }))
        .await?;
        Ok(sizes.iter().sum())
    }

    /// Drops a learner from its dirty shard, unless deltas arrived meanwhile.
    /// Deltas committed after the check are marked again by `commit`.
    pub async fn clean(&self, user: Uuid) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let shard = dirty_key(dirty_shard(user));
        bounded(conn.srem::<_, _, i64>(&shard, user.to_string())).await?;
        let (pending, inflight, weeks): (i64, i64, i64) = bounded(
            redis::pipe()
                .exists(pending_key(user))
                .exists(inflight_key(user))
                .exists(&[pending_weeks_key(user), inflight_weeks_key(user)])
                .query_async(&mut conn),
        )
        .await?;
        if pending + inflight + weeks > 0 {
            bounded(conn.sadd::<_, _, i64>(&shard, user.to_string())).await?;
        }
        Ok(())
    }

    /// Marks dirty every learner that has pending or in-flight deltas, in
    /// case a mark was lost (a handler cancelled between its commit and its
    /// mark, a failed second mark, a `clean` cut off after its SREM).
    /// Returns how many learners it found. A full SCAN: run it rarely.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let mut found = 0;
        for primary in conn.primaries().await? {
            for pattern in ["errata:{*}:pending", "errata:{*}:inflight"] {
                let mut cursor: u64 = 0;
                loop {
                    let mut scan = ::redis::cmd("SCAN");
                    scan.arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000);
                    let (next, keys): (u64, Vec<String>) = conn.query_on(&primary, &scan).await?;
                    for user in keys.iter().filter_map(|k| learner_of(k)) {
                        let shard = dirty_key(dirty_shard(user));
                        bounded(conn.sadd::<_, _, i64>(shard, user.to_string())).await?;
                        found += 1;
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekly_fields_round_trip_and_never_read_as_all_time_ones() {
        let key = ErrorKey {
            category: "2026-11-30:x".into(),
            subcategory: "}:{".into(),
        };
        let week = NaiveDate::from_ymd_opt(2026, 12, 28).unwrap();
        let field = week_field(week, &key);
        assert!(field.starts_with("w20815:"), "{field}");
        assert_eq!(decode_week_field(&field), Some((week, key.clone())));
        assert_eq!(ErrorKey::decode(&field), None);
        assert_eq!(decode_week_field(&key.encode()), None);
        let raw = vec![field, "2".into(), "garbage".into(), "1".into()];
        assert_eq!(
            decode_week_pairs(&raw),
            vec![WeekCount {
                week_start: week,
                key,
                count: 2
            }]
        );
    }

    /// `commit.lua` finds the Monday as day − (day + 3) mod 7.
    #[test]
    fn the_scripts_week_arithmetic_is_the_iso_week() {
        use chrono::{TimeZone, Utc};
        for (y, m, d, h) in [
            (2026, 12, 27, 23),
            (2026, 12, 28, 0),
            (2027, 1, 3, 12),
            (1969, 12, 31, 0),
        ] {
            let t = Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap();
            let day = t.timestamp_millis().div_euclid(86_400_000);
            let monday = day - (day + 3).rem_euclid(7);
            let expected = crate::domain::week_start(t);
            assert_eq!(
                NaiveDate::default() + chrono::TimeDelta::days(monday),
                expected
            );
        }
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
