//! What one reader saw: events counted, holes in the sequence, latencies.
//!
//! Owns: the per-reader bookkeeping every system's reader feeds ([`Tally`]), and
//! folding readers' tallies into one row ([`Totals`]).
//!
//! Promises: every event a reader should have seen is in exactly one bucket —
//! received, announced as missed (a `gap` frame, this project only), missed silently
//! (a hole in the sequence that nothing announced), or undelivered (still missing at
//! the head or tail of the run when the reader stopped waiting). Latency is recorded
//! only for stamped events sent after the warm-up.

use std::time::Instant;

use hdrhistogram::Histogram;

/// The clock every stamp and receipt time is measured on: nanoseconds since a
/// base instant taken when the harness starts.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base: Instant,
}

impl Clock {
    /// A clock based now.
    pub fn new() -> Clock {
        Clock {
            base: Instant::now(),
        }
    }

    /// Nanoseconds since the base (at least 1, so that 0 can mean "unstamped").
    pub fn now_ns(&self) -> u64 {
        (self.base.elapsed().as_nanos() as u64).max(1)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// One reader's bookkeeping.
#[derive(Debug)]
pub struct Tally {
    /// The next sequence number expected (unknown before the first item).
    next: Option<u64>,
    /// The first sequence number seen or announced.
    pub first: Option<u64>,
    /// Events received.
    pub received: u64,
    /// Events a `gap` frame said were missed.
    pub announced: u64,
    /// Events skipped without notice (holes in the sequence).
    pub silent: u64,
    /// Events that came out of order or twice.
    pub disorder: u64,
    /// Nanoseconds (on the [`Clock`]) of the last receipt.
    pub last_receipt_ns: u64,
    /// Produce → receipt latencies in nanoseconds, when measuring.
    pub latency: Option<Histogram<u64>>,
    /// Stamps before this are warm-up and not recorded.
    warmup_until_ns: u64,
}

impl Tally {
    /// A tally; with `measure_latency`, stamped events sent at or after
    /// `warmup_until_ns` are recorded.
    pub fn new(measure_latency: bool, warmup_until_ns: u64) -> Tally {
        Tally {
            next: None,
            first: None,
            received: 0,
            announced: 0,
            silent: 0,
            disorder: 0,
            last_receipt_ns: 0,
            latency: measure_latency.then(new_histogram),
            warmup_until_ns,
        }
    }

    /// The sequence number of the last event received or announced.
    pub fn last(&self) -> Option<u64> {
        self.next.map(|n| n - 1)
    }

    /// An event `seq` received at `now_ns`, stamped `stamp_ns` if it carries one.
    #[inline]
    pub fn event(&mut self, seq: u64, stamp_ns: Option<u64>, now_ns: u64) {
        self.received += 1;
        match self.next {
            None => self.first = Some(seq),
            Some(next) if seq > next => self.silent += seq - next,
            Some(next) if seq < next => {
                self.disorder += 1;
                return;
            }
            Some(_) => {}
        }
        self.next = Some(seq + 1);
        self.last_receipt_ns = now_ns;
        if let (Some(h), Some(sent)) = (self.latency.as_mut(), stamp_ns) {
            if sent >= self.warmup_until_ns {
                let _ = h.record(now_ns.saturating_sub(sent).max(1));
            }
        }
    }

    /// A `gap` frame: `from..=to` (`missed` events) will not come.
    pub fn gap(&mut self, from: u64, to: u64, missed: u64) {
        self.announced += missed;
        match self.next {
            None => self.first = Some(from),
            Some(next) if from > next => self.silent += from - next,
            Some(_) => {}
        }
        self.next = Some(to + 1);
    }

    /// Counts what is still missing against the producer's range `first..=last`:
    /// events before the first one seen and after the last one.
    pub fn undelivered(&self, first: u64, last: u64) -> u64 {
        if last < first {
            return 0;
        }
        match (self.first, self.last()) {
            (Some(f), Some(l)) => f.saturating_sub(first) + last.saturating_sub(l),
            _ => last - first + 1,
        }
    }
}

/// A histogram of 1 ns .. 100 s with 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // Constant bounds, valid by construction (not input).
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// Several readers' tallies folded together.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Totals {
    /// Events received, summed over readers.
    pub received: u64,
    /// Events announced as missed (gap frames), summed.
    pub announced: u64,
    /// Events skipped silently, summed.
    pub silent: u64,
    /// Events still missing at the head or tail when readers stopped, summed.
    pub undelivered: u64,
    /// Events out of order or duplicated, summed.
    pub disorder: u64,
    /// The last receipt of any reader (clock nanoseconds).
    #[serde(skip)]
    pub last_receipt_ns: u64,
    /// Merged latencies.
    #[serde(skip)]
    pub latency: Option<Histogram<u64>>,
}

impl Totals {
    /// Adds one reader's tally, judged against the producer's range.
    pub fn add(&mut self, t: &Tally, first: u64, last: u64) {
        self.received += t.received;
        self.announced += t.announced;
        self.silent += t.silent;
        self.disorder += t.disorder;
        self.undelivered += t.undelivered(first, last);
        self.last_receipt_ns = self.last_receipt_ns.max(t.last_receipt_ns);
        if let Some(h) = &t.latency {
            let merged = self.latency.get_or_insert_with(new_histogram);
            let _ = merged.add(h);
        }
    }

    /// Everything a reader should have had and did not.
    pub fn lost(&self) -> u64 {
        self.announced + self.silent + self.undelivered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_expected_event_lands_in_one_bucket() {
        let mut t = Tally::new(false, 0);
        for s in [3, 4, 6] {
            t.event(s, None, 1);
        }
        t.gap(7, 9, 3);
        t.event(10, None, 2);
        t.event(10, None, 3);
        // producer sent 1..=12
        assert_eq!(t.received, 5);
        assert_eq!(t.disorder, 1);
        assert_eq!(t.silent, 1, "5 skipped without notice");
        assert_eq!(t.announced, 3);
        assert_eq!(t.undelivered(1, 12), 2 + 2);
        let mut totals = Totals::default();
        totals.add(&t, 1, 12);
        assert_eq!(totals.received - totals.disorder + totals.lost(), 12);
    }

    #[test]
    fn latency_skips_warmup_and_unstamped_events() {
        let mut t = Tally::new(true, 100);
        t.event(1, Some(50), 1_000);
        t.event(2, None, 1_000);
        t.event(3, Some(200), 1_200);
        let h = t.latency.as_ref().expect("histogram");
        assert_eq!(h.len(), 1);
        assert!(h.max() >= 999 && h.max() <= 1_001);
    }
}
