//! Lanes: rows of a timeline on which intervals are laid so that none overlap.
//!
//! Owns: the choice of a lane for an interval, online ([`Lanes`], as starts and ends
//! arrive) and offline ([`assign_lanes`], for a finished set).
//!
//! Promises: an interval is given the lowest lane that is free at its start (a lane
//! is free from the end of its last interval on, so touching intervals may share a
//! lane); two intervals on one lane never overlap in time, even when ends and starts
//! arrive out of time order.

/// Online lane allocation for one timeline (e.g. one node).
#[derive(Debug, Default, Clone)]
pub(crate) struct Lanes {
    /// Per lane: `None` while taken, `Some(t)` when free since `t` (µs).
    free_since: Vec<Option<i64>>,
}

impl Lanes {
    /// Takes the lowest lane free at `start` (µs), adding one if none is.
    pub(crate) fn acquire(&mut self, start: i64) -> u32 {
        let found = self
            .free_since
            .iter()
            .position(|f| matches!(f, Some(t) if *t <= start));
        let lane = match found {
            Some(i) => i,
            None => {
                self.free_since.push(None);
                self.free_since.len() - 1
            }
        };
        self.free_since[lane] = None;
        lane as u32
    }

    /// Frees `lane` from `end` (µs) on.
    pub(crate) fn release(&mut self, lane: u32, end: i64) {
        if let Some(slot) = self.free_since.get_mut(lane as usize) {
            *slot = Some(end);
        }
    }

    /// How many lanes have been used.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.free_since.len()
    }
}

/// Lanes for a set of `(start, end)` intervals (µs), in the order given; intervals
/// are laid in order of start.
pub(crate) fn assign_lanes(intervals: &[(i64, i64)]) -> Vec<u32> {
    let mut order: Vec<usize> = (0..intervals.len()).collect();
    order.sort_by_key(|&i| (intervals[i].0, intervals[i].1));
    let mut ends: Vec<i64> = Vec::new();
    let mut lanes = vec![0u32; intervals.len()];
    for i in order {
        let (start, end) = intervals[i];
        let lane = match ends.iter().position(|e| *e <= start) {
            Some(l) => l,
            None => {
                ends.push(end);
                ends.len() - 1
            }
        };
        ends[lane] = end.max(start);
        lanes[i] = lane as u32;
    }
    lanes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_intervals_get_different_lanes_and_touching_ones_share() {
        let lanes = assign_lanes(&[(0, 10), (5, 8), (10, 12), (8, 9)]);
        assert_eq!(lanes, vec![0, 1, 0, 1]);
    }

    #[test]
    fn a_lane_freed_later_in_time_is_not_reused_for_an_earlier_start() {
        let mut lanes = Lanes::default();
        let a = lanes.acquire(0);
        lanes.release(a, 100);
        assert_eq!(lanes.acquire(50), 1);
        assert_eq!(lanes.acquire(100), 0);
        assert_eq!(lanes.len(), 2);
    }

    proptest::proptest! {
        #[test]
        fn assigned_lanes_never_overlap(v in proptest::collection::vec((0i64..1000, 0i64..100), 0..60)) {
            let intervals: Vec<(i64, i64)> = v.iter().map(|(s, d)| (*s, s + d)).collect();
            let lanes = assign_lanes(&intervals);
            for i in 0..intervals.len() {
                for j in 0..i {
                    if lanes[i] == lanes[j] {
                        let (a, b) = (intervals[i], intervals[j]);
                        proptest::prop_assert!(a.1 <= b.0 || b.1 <= a.0,
                            "{a:?} and {b:?} share lane {}", lanes[i]);
                    }
                }
            }
        }
    }
}
