//! Duration statistics: count, nearest-rank percentiles, maximum and total.
//!
//! Owns: [`DurationStats`] and how it is computed from samples.
//!
//! Promises: percentiles are exact and use the nearest-rank definition (the p-th
//! percentile of n sorted samples is the one at rank ⌈p·n/100⌉), so every reported
//! value is one that was observed; with no samples every figure is zero.

use std::time::Duration;

use serde::Serialize;

use crate::secs;

/// Summary of a set of durations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DurationStats {
    /// How many durations.
    pub count: u64,
    /// The median (nearest rank).
    #[serde(serialize_with = "secs::serialize")]
    pub p50: Duration,
    /// The 90th percentile (nearest rank).
    #[serde(serialize_with = "secs::serialize")]
    pub p90: Duration,
    /// The longest.
    #[serde(serialize_with = "secs::serialize")]
    pub max: Duration,
    /// The sum of all of them.
    #[serde(serialize_with = "secs::serialize")]
    pub total: Duration,
}

impl DurationStats {
    /// Statistics of `samples` (microseconds); reorders them.
    pub fn from_micros(samples: &mut [u64]) -> Self {
        if samples.is_empty() {
            return DurationStats::default();
        }
        samples.sort_unstable();
        let total: u64 = samples.iter().fold(0u64, |a, b| a.saturating_add(*b));
        DurationStats {
            count: samples.len() as u64,
            p50: Duration::from_micros(nearest_rank(samples, 50)),
            p90: Duration::from_micros(nearest_rank(samples, 90)),
            max: Duration::from_micros(samples[samples.len() - 1]),
            total: Duration::from_micros(total),
        }
    }
}

/// The `p`-th percentile (0–100) of non-empty sorted `samples`, nearest rank.
fn nearest_rank(sorted: &[u64], p: u64) -> u64 {
    let n = sorted.len() as u64;
    let rank = (p * n).div_ceil(100).clamp(1, n);
    sorted[(rank - 1) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_of_four_samples() {
        let s = DurationStats::from_micros(&mut [4, 2, 6, 1]);
        assert_eq!(s.count, 4);
        assert_eq!(s.p50, Duration::from_micros(2));
        assert_eq!(s.p90, Duration::from_micros(6));
        assert_eq!(s.max, Duration::from_micros(6));
        assert_eq!(s.total, Duration::from_micros(13));
    }

    #[test]
    fn no_samples_is_all_zero() {
        assert_eq!(
            DurationStats::from_micros(&mut []),
            DurationStats::default()
        );
    }

    proptest::proptest! {
        #[test]
        fn percentiles_are_observed_values_in_order(mut v in proptest::collection::vec(0u64..1_000_000, 1..200)) {
            let orig = v.clone();
            let s = DurationStats::from_micros(&mut v);
            proptest::prop_assert!(s.p50 <= s.p90 && s.p90 <= s.max);
            for p in [s.p50, s.p90, s.max] {
                proptest::prop_assert!(orig.contains(&(p.as_micros() as u64)));
            }
        }
    }
}
