//! The time errata stamps what it records with, and reads "this week" by.
//!
//! Every handler takes the time from the application's [`Clock`], so both
//! backends see the same instants: an error point is counted in the week of
//! the time its request was received (the time its events carry), never in
//! the week a flusher happens to apply it. The clock is the system clock
//! moved by an offset, zero unless someone sets it: tests set it to write a
//! history weeks in the past, or to stand just before a week boundary,
//! without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};

/// The system clock plus an offset shared by every clone.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock, unmoved.
    pub fn system() -> Self {
        Self::default()
    }

    /// Now, at the precision every backend keeps (milliseconds).
    pub fn now(&self) -> DateTime<Utc> {
        let offset = TimeDelta::milliseconds(self.offset_ms.load(Ordering::Relaxed));
        (Utc::now() + offset).trunc_subsecs(3)
    }

    /// From now on (for every clone) the clock reads `at`, and keeps going
    /// from there.
    pub fn set(&self, at: DateTime<Utc>) {
        let offset = at.timestamp_millis() - Utc::now().timestamp_millis();
        self.offset_ms.store(offset, Ordering::Relaxed);
    }

    /// Back to the system clock.
    pub fn reset(&self) {
        self.offset_ms.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_set_clock_moves_every_clone_and_keeps_going() {
        let clock = Clock::system();
        let other = clock.clone();
        let at = Utc.with_ymd_and_hms(2020, 2, 29, 23, 59, 59).unwrap();
        clock.set(at);
        let read = other.now();
        assert!(read >= at && read - at < TimeDelta::seconds(5), "{read}");
        clock.reset();
        assert!(other.now() > Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap());
    }
}
