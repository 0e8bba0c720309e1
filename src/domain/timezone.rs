//! A learner's time zone: where their days begin, which decides what "one
//! lapse per day" and a due date mean.

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, TimeZone, Utc};

/// An IANA time zone name, parsed (`Europe/Paris`, `UTC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timezone(chrono_tz::Tz);

/// Longest time zone name accepted (the longest IANA name is 32 bytes).
pub const MAX_TIMEZONE_CHARS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be an IANA time zone name, such as Europe/Paris or UTC")]
pub struct TimezoneError;

impl Timezone {
    pub const UTC: Self = Self(chrono_tz::Tz::UTC);

    /// The zone named `raw` (surrounding whitespace ignored, the name's
    /// case as IANA spells it).
    pub fn parse(raw: &str) -> Result<Self, TimezoneError> {
        let raw = raw.trim();
        if raw.is_empty() || raw.len() > MAX_TIMEZONE_CHARS {
            return Err(TimezoneError);
        }
        raw.parse::<chrono_tz::Tz>()
            .map(Self)
            .map_err(|_| TimezoneError)
    }

    /// The zone a stored name names; UTC when none is stored (or a name
    /// this build no longer knows).
    pub fn from_stored(stored: Option<&str>) -> Self {
        stored.and_then(|s| Self::parse(s).ok()).unwrap_or_default()
    }

    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// The learner's calendar day at `at`.
    pub fn day_of(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.0).date_naive()
    }

    /// When `day` begins for the learner. Where a clock change skips
    /// midnight, the day begins at the first instant that exists.
    pub fn start_of(&self, day: NaiveDate) -> DateTime<Utc> {
        let midnight = day.and_time(NaiveTime::MIN);
        let mut local = midnight;
        for _ in 0..4 {
            if let Some(at) = self.0.from_local_datetime(&local).earliest() {
                return at.with_timezone(&Utc);
            }
            local += TimeDelta::minutes(30);
        }
        Utc.from_utc_datetime(&midnight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_iana_names() {
        assert_eq!(
            Timezone::parse(" Europe/Paris ").unwrap().name(),
            "Europe/Paris"
        );
        assert!(Timezone::parse("Mars/Olympus").is_err());
        assert!(Timezone::parse("").is_err());
        assert_eq!(Timezone::from_stored(None), Timezone::UTC);
    }

    #[test]
    fn a_day_begins_at_local_midnight() {
        let tokyo = Timezone::parse("Asia/Tokyo").unwrap();
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 16, 0, 0).unwrap();
        assert_eq!(
            tokyo.day_of(at),
            NaiveDate::from_ymd_opt(2026, 3, 2).unwrap()
        );
        assert_eq!(
            tokyo.start_of(NaiveDate::from_ymd_opt(2026, 3, 2).unwrap()),
            Utc.with_ymd_and_hms(2026, 3, 1, 15, 0, 0).unwrap()
        );
    }
}
