//! ISO weeks (Monday to Sunday, UTC) and the decay that weighs them for
//! recency ranking.

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};

/// Longest accepted half-life for recency ranking, in days.
pub const MAX_HALF_LIFE_DAYS: u32 = 365;
/// A week whose weight is below 2^-`CUTOFF_DOUBLINGS` is not read: it
/// would change a score by less than a millionth of that week's count.
pub const CUTOFF_DOUBLINGS: u32 = 20;
/// At most this many weeks are read for a recency score (ten years),
/// whatever the half-life: it bounds the read for the longest half-lives.
pub const MAX_LOOKBACK_WEEKS: u32 = 520;

/// The Monday (UTC) that starts the ISO week holding `t`.
pub fn week_start(t: DateTime<Utc>) -> NaiveDate {
    let day = t.date_naive();
    day - Days::new(u64::from(day.weekday().num_days_from_monday()))
}

/// The Monday `weeks` weeks before the week starting `week`.
pub fn weeks_before(week: NaiveDate, weeks: u32) -> NaiveDate {
    week - Days::new(7 * u64::from(weeks))
}

/// How many whole weeks `week` lies before `current` (0 for the current
/// week; negative for a later week).
pub fn weeks_back(current: NaiveDate, week: NaiveDate) -> i64 {
    (current - week).num_days().div_euclid(7)
}

/// Exponential decay by the age of a week: a week `k` weeks back weighs
/// 2^(−7k / half_life_days), so the current week weighs 1 and a week one
/// half-life old weighs ½.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decay {
    half_life_days: u32,
}

impl Decay {
    /// `half_life_days` must be 1 to [`MAX_HALF_LIFE_DAYS`] (checked at the
    /// edge); it is clamped into that range here.
    pub fn new(half_life_days: u32) -> Self {
        Self {
            half_life_days: half_life_days.clamp(1, MAX_HALF_LIFE_DAYS),
        }
    }

    pub fn half_life_days(self) -> u32 {
        self.half_life_days
    }

    /// The weight of a week `weeks_back` weeks before the current one
    /// (a week in the future counts as the current one).
    pub fn weight(self, weeks_back: i64) -> f64 {
        let age_days = 7.0 * weeks_back.max(0) as f64;
        (-age_days / f64::from(self.half_life_days)).exp2()
    }

    /// How many weeks, the current one included, a score reads: those
    /// whose weight is at least 2^-`CUTOFF_DOUBLINGS`, i.e. k ≤ 20·h/7,
    /// at most [`MAX_LOOKBACK_WEEKS`].
    pub fn lookback_weeks(self) -> u32 {
        (CUTOFF_DOUBLINGS * self.half_life_days / 7 + 1).min(MAX_LOOKBACK_WEEKS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, TimeZone};

    fn utc(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn a_week_starts_on_monday() {
        // 2026-11-30 is a Monday.
        assert_eq!(week_start(utc(2026, 11, 30, 0)), day(2026, 11, 30));
        assert_eq!(week_start(utc(2026, 12, 6, 23)), day(2026, 11, 30));
        assert_eq!(week_start(utc(2026, 12, 7, 0)), day(2026, 12, 7));
    }

    #[test]
    fn weeks_cross_year_ends() {
        // 2027-01-01 is a Friday: its week started in 2026.
        assert_eq!(week_start(utc(2027, 1, 1, 12)), day(2026, 12, 28));
        // 2025-01-01 is a Wednesday: ISO week 1 of 2025 starts 2024-12-30.
        assert_eq!(week_start(utc(2025, 1, 1, 0)), day(2024, 12, 30));
    }

    #[test]
    fn iso_week_53_is_one_week() {
        // 2026 has 53 ISO weeks: week 53 runs 2026-12-28 to 2027-01-03.
        let start = week_start(utc(2026, 12, 28, 0));
        assert_eq!(start.iso_week().week(), 53);
        assert_eq!(week_start(utc(2027, 1, 3, 23)), start);
        assert_eq!(week_start(utc(2027, 1, 4, 0)).iso_week().week(), 1);
        assert_eq!(weeks_back(day(2027, 1, 4), start), 1);
    }

    #[test]
    fn weeks_are_cut_in_utc_not_in_local_time() {
        // Monday 01:00 in Berlin is still Sunday in UTC.
        let berlin = FixedOffset::east_opt(3600).unwrap();
        let local = berlin.with_ymd_and_hms(2026, 12, 7, 0, 30, 0).unwrap();
        assert_eq!(week_start(local.with_timezone(&Utc)), day(2026, 11, 30));
        // Sunday 20:00 in New York is already Monday in UTC.
        let new_york = FixedOffset::west_opt(5 * 3600).unwrap();
        let local = new_york.with_ymd_and_hms(2026, 12, 6, 20, 0, 0).unwrap();
        assert_eq!(week_start(local.with_timezone(&Utc)), day(2026, 12, 7));
    }

    #[test]
    fn weeks_back_counts_whole_weeks() {
        let current = day(2026, 11, 30);
        assert_eq!(weeks_back(current, current), 0);
        assert_eq!(weeks_back(current, weeks_before(current, 3)), 3);
        assert_eq!(weeks_back(current, day(2026, 12, 7)), -1);
        assert_eq!(weeks_before(day(2027, 1, 4), 1), day(2026, 12, 28));
    }

    #[test]
    fn a_half_life_halves_the_weight() {
        let decay = Decay::new(14);
        assert_eq!(decay.weight(0), 1.0);
        assert!((decay.weight(2) - 0.5).abs() < 1e-12);
        assert!((decay.weight(4) - 0.25).abs() < 1e-12);
        assert_eq!(decay.weight(-3), 1.0);
        assert!((Decay::new(7).weight(1) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn the_lookback_keeps_every_week_above_the_cutoff() {
        for h in [1, 7, 14, 30, 90, 182, 365] {
            let decay = Decay::new(h);
            let weeks = decay.lookback_weeks();
            assert!((1..=MAX_LOOKBACK_WEEKS).contains(&weeks));
            let cutoff = (-f64::from(CUTOFF_DOUBLINGS)).exp2();
            if weeks < MAX_LOOKBACK_WEEKS {
                // The last week read is above the cut-off, the next below.
                assert!(decay.weight(i64::from(weeks) - 1) >= cutoff, "h = {h}");
                assert!(decay.weight(i64::from(weeks)) < cutoff, "h = {h}");
            }
        }
        assert_eq!(Decay::new(14).lookback_weeks(), 41);
        assert_eq!(Decay::new(365).lookback_weeks(), MAX_LOOKBACK_WEEKS);
    }
}
