//! Evenly spaced timestamps, for a caller that stamps simulated events itself.
//!
//! Owns: [`timestamps`], an endless iterator of `ts` values at a given rate.
//!
//! Promises: the `i`-th value is `start + i / rate` seconds, rounded to the
//! microsecond, computed from `i` (not accumulated), so a long run does not drift; the
//! values never decrease. The simulator itself never sleeps: pacing in real time is
//! the caller's business.

use master_events_events::Timestamp;

/// Why [`timestamps`] refused a rate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PaceError {
    /// The rate is zero, negative or not a finite number.
    #[error("the rate must be a positive number of events per second, not {0}")]
    Rate(f64),
}

/// Timestamps `start`, `start + 1/rate`, `start + 2/rate`, ... (see [`timestamps`]).
#[derive(Clone, Debug)]
pub struct Timestamps {
    start: i64,
    micros_per_event: f64,
    index: u64,
}

/// An endless iterator of timestamps `rate_per_sec` apart per second, from `start`.
pub fn timestamps(start: Timestamp, rate_per_sec: f64) -> Result<Timestamps, PaceError> {
    if !rate_per_sec.is_finite() || rate_per_sec <= 0.0 {
        return Err(PaceError::Rate(rate_per_sec));
    }
    Ok(Timestamps {
        start: start.as_micros(),
        micros_per_event: 1e6 / rate_per_sec,
        index: 0,
    })
}

impl Iterator for Timestamps {
    type Item = Timestamp;

    fn next(&mut self) -> Option<Timestamp> {
        let offset = (self.index as f64 * self.micros_per_event).round();
        self.index = self.index.saturating_add(1);
        // `Timestamp::from_micros` clamps, and the float-to-int cast saturates.
        Some(Timestamp::from_micros(
            self.start.saturating_add(offset as i64),
        ))
    }

    fn nth(&mut self, n: usize) -> Option<Timestamp> {
        self.index = self.index.saturating_add(n as u64);
        self.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}

impl std::iter::FusedIterator for Timestamps {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_spaced_by_the_rate() {
        let start = Timestamp::from_micros(1_333_576_032_539_910);
        let ts: Vec<i64> = timestamps(start, 4.0)
            .map(|t| t.take(3).map(Timestamp::as_micros).collect())
            .unwrap_or_default();
        assert_eq!(
            ts,
            [
                1_333_576_032_539_910,
                1_333_576_032_789_910,
                1_333_576_033_039_910
            ]
        );
    }

    #[test]
    fn timestamps_do_not_drift_over_a_long_run() {
        let start = Timestamp::from_micros(0);
        let last = timestamps(start, 3.0)
            .ok()
            .and_then(|mut t| t.nth(3_000_000));
        assert_eq!(last.map(Timestamp::as_micros), Some(1_000_000_000_000));
    }

    #[test]
    fn a_rate_that_is_not_positive_is_refused() {
        let start = Timestamp::from_micros(0);
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(timestamps(start, rate).is_err(), "{rate}");
        }
    }
}
