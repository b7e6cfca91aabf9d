//! The epoch table: which master (by its discovery epoch) sequenced which seqs of
//! the archive — Kafka's leader-epoch cache (KIP-101), Raft's per-entry term.
//!
//! Owns: [`EpochTable`] (a list of `(epoch, first seq)`, both strictly growing),
//! its compact text form (`"3:1,7:512"`), and [`agreed_through`], the rule that
//! tells a replica how much of its archive agrees with its master's.
//!
//! Promises:
//! - Every seq of an archive has one epoch: the epoch of the last entry whose first
//!   seq is at or before it (0, "before any epoch was recorded", when none is). An
//!   epoch is only ever begun by the one master of that epoch, which never
//!   overwrites what it sequenced; so two archives that hold the same epoch at the
//!   same seq hold the same event there and agree on every seq before it (Raft's
//!   log-matching property). [`agreed_through`] relies on exactly this.
//! - The text form round-trips, and a table that does not grow strictly (in epoch
//!   and in seq) is refused with [`InvalidEpochs`], never half taken.

use std::fmt;

/// The most entries a table keeps (a master change each; the oldest are dropped,
/// which only makes the oldest seqs' epoch unknown, `0`).
pub const MAX_ENTRIES: usize = 4096;

/// Which epoch sequenced which seqs (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpochTable {
    /// `(epoch, first seq)`, both strictly growing.
    entries: Vec<(u64, u64)>,
}

/// A table in text form that does not parse or does not grow strictly.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid epoch table: {0}")]
pub struct InvalidEpochs(pub String);

impl EpochTable {
    /// An empty table (every seq has epoch 0).
    pub fn new() -> EpochTable {
        EpochTable::default()
    }

    /// A table of these `(epoch, first seq)` entries; refused unless both grow
    /// strictly and no epoch is 0.
    pub fn from_entries(entries: Vec<(u64, u64)>) -> Result<EpochTable, InvalidEpochs> {
        for w in entries.windows(2) {
            if w[1].0 <= w[0].0 || w[1].1 <= w[0].1 {
                return Err(InvalidEpochs(format!(
                    "entry {}:{} does not follow {}:{}",
                    w[1].0, w[1].1, w[0].0, w[0].1
                )));
            }
        }
        if entries.iter().any(|(e, s)| *e == 0 || *s == 0) {
            return Err(InvalidEpochs("epochs and seqs start at 1".to_owned()));
        }
        if entries.len() > MAX_ENTRIES {
            return Err(InvalidEpochs(format!(
                "{} entries, at most {MAX_ENTRIES}",
                entries.len()
            )));
        }
        Ok(EpochTable { entries })
    }

    /// Parses the text form (`epoch:firstSeq` pairs separated by commas; empty for
    /// an empty table).
    pub fn parse(text: &str) -> Result<EpochTable, InvalidEpochs> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(EpochTable::new());
        }
        let mut entries = Vec::new();
        for (i, pair) in text.split(',').enumerate() {
            let parsed = pair
                .split_once(':')
                .and_then(|(e, s)| Some((e.trim().parse().ok()?, s.trim().parse().ok()?)));
            match parsed {
                Some(entry) => entries.push(entry),
                None => {
                    return Err(InvalidEpochs(format!(
                        "entry {} is not epoch:firstSeq",
                        i + 1
                    )))
                }
            }
            if entries.len() > MAX_ENTRIES {
                return Err(InvalidEpochs(format!("more than {MAX_ENTRIES} entries")));
            }
        }
        EpochTable::from_entries(entries)
    }

    /// The `(epoch, first seq)` entries.
    pub fn entries(&self) -> &[(u64, u64)] {
        &self.entries
    }

    /// The epoch that sequenced `seq` (0 if no entry covers it).
    pub fn epoch_of(&self, seq: u64) -> u64 {
        let i = self.entries.partition_point(|(_, first)| *first <= seq);
        match i {
            0 => 0,
            i => self.entries[i - 1].0,
        }
    }

    /// The latest epoch begun (0 if none).
    pub fn last_epoch(&self) -> u64 {
        self.entries.last().map_or(0, |(e, _)| *e)
    }

    /// The first seq of `epoch`, if it was begun.
    pub fn first_seq_of(&self, epoch: u64) -> Option<u64> {
        self.entries
            .iter()
            .find(|(e, _)| *e == epoch)
            .map(|(_, s)| *s)
    }

    /// Begins `epoch` at `first_seq`. The same epoch as the last one continues
    /// (nothing changes); a lower one is refused. An entry of the last epoch that
    /// holds no seq yet (it begins at `first_seq` or later) is replaced.
    pub fn begin(&mut self, epoch: u64, first_seq: u64) -> Result<(), InvalidEpochs> {
        let last = self.last_epoch();
        if epoch == last {
            return Ok(());
        }
        if epoch < last || epoch == 0 {
            return Err(InvalidEpochs(format!(
                "epoch {epoch} cannot follow epoch {last}"
            )));
        }
        while self.entries.last().is_some_and(|(_, s)| *s >= first_seq) {
            self.entries.pop();
        }
        self.entries.push((epoch, first_seq.max(1)));
        if self.entries.len() > MAX_ENTRIES {
            self.entries.remove(0);
        }
        Ok(())
    }

    /// Forgets the epochs of seqs after `seq` (the archive was cut there).
    pub fn truncate_after(&mut self, seq: u64) {
        while self.entries.last().is_some_and(|(_, s)| *s > seq) {
            self.entries.pop();
        }
    }

    /// Takes `master`'s epochs for every seq from `from` on (what a replica appends
    /// from there comes from that master's archive); keeps its own before.
    pub fn adopt_from(&mut self, master: &EpochTable, from: u64) {
        self.truncate_after(from.saturating_sub(1));
        let at = master.epoch_of(from);
        if at != 0 && self.last_epoch() < at {
            self.entries.push((at, from.max(1)));
        }
        for (e, s) in master.entries.iter().filter(|(_, s)| *s > from) {
            if *e > self.last_epoch() {
                self.entries.push((*e, *s));
            }
        }
        while self.entries.len() > MAX_ENTRIES {
            self.entries.remove(0);
        }
    }
}

impl fmt::Display for EpochTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (e, s)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{e}:{s}")?;
        }
        Ok(())
    }
}

/// How far a replica's archive (`replica`, its last seq `replica_last`) agrees with
/// its master's (`master`, `master_last`): the highest seq `s` at or below both
/// lasts such that every seq up to `s` has the same epoch in both tables — by the
/// log-matching property, the same events. The replica keeps its archive up to it
/// and takes the master's from the next seq on.
///
/// Epoch 0 (seqs sequenced before epochs were recorded, e.g. restored from a file
/// log) agrees only with epoch 0. A replica also keeps whatever it knows the
/// cluster committed (the caller takes the larger of the two): a committed event is
/// in every later master's archive.
pub fn agreed_through(
    replica: &EpochTable,
    replica_last: u64,
    master: &EpochTable,
    master_last: u64,
) -> u64 {
    let end = replica_last.min(master_last);
    // The seqs where either table changes epoch split 1..=end into runs of one
    // epoch per side: walk them in order until the first run where they differ.
    let mut bounds: Vec<u64> = replica
        .entries
        .iter()
        .chain(master.entries.iter())
        .map(|(_, s)| *s)
        .filter(|s| *s <= end)
        .collect();
    bounds.push(1);
    bounds.sort_unstable();
    bounds.dedup();
    for start in bounds {
        if replica.epoch_of(start) != master.epoch_of(start) {
            return start - 1;
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(u64, u64)]) -> EpochTable {
        EpochTable::from_entries(entries.to_vec()).expect("valid")
    }

    #[test]
    fn the_text_form_round_trips_and_bad_tables_are_refused_with_the_entry() {
        let t = table(&[(3, 1), (7, 512)]);
        assert_eq!(t.to_string(), "3:1,7:512");
        assert_eq!(EpochTable::parse("3:1,7:512"), Ok(t));
        assert_eq!(EpochTable::parse(""), Ok(EpochTable::new()));
        let err = EpochTable::parse("3:1,2:9").unwrap_err();
        assert!(err.to_string().contains("2:9"), "{err}");
        assert!(EpochTable::parse("3:1,7:1").is_err());
        assert!(EpochTable::parse("x").is_err());
        assert!(EpochTable::parse("0:1").is_err());
    }

    #[test]
    fn a_seq_has_the_epoch_of_the_last_entry_at_or_before_it() {
        let t = table(&[(3, 5), (7, 10)]);
        assert_eq!(
            (1..=12).map(|s| t.epoch_of(s)).collect::<Vec<_>>(),
            vec![0, 0, 0, 0, 3, 3, 3, 3, 3, 7, 7, 7]
        );
        assert_eq!(t.last_epoch(), 7);
        assert_eq!(t.first_seq_of(3), Some(5));
    }

    #[test]
    fn beginning_an_epoch_refuses_an_older_one_and_replaces_an_empty_one() {
        let mut t = table(&[(3, 1)]);
        t.begin(3, 9).expect("the same epoch continues");
        assert_eq!(t, table(&[(3, 1)]));
        t.begin(5, 9).expect("newer");
        t.begin(6, 9).expect("epoch 5 held nothing");
        assert_eq!(t, table(&[(3, 1), (6, 9)]));
        assert!(t.begin(4, 20).is_err());
    }

    #[test]
    fn replicas_that_hold_the_same_epochs_agree_through_the_shorter_archive() {
        let m = table(&[(1, 1), (2, 100)]);
        assert_eq!(agreed_through(&m, 150, &m, 120), 120);
        assert_eq!(agreed_through(&m, 50, &m, 120), 50);
    }

    #[test]
    fn a_replica_ahead_in_a_deposed_masters_epoch_agrees_only_up_to_the_new_epoch() {
        // The old master (epoch 2) sequenced 100..=180 alone; the new master (epoch
        // 3) took over at 150 holding 100..=149 of epoch 2.
        let old = table(&[(1, 1), (2, 100)]);
        let new = table(&[(1, 1), (2, 100), (3, 150)]);
        assert_eq!(agreed_through(&old, 180, &new, 200), 149);
        // The new master never got epoch 2 at all.
        let new = table(&[(1, 1), (3, 100)]);
        assert_eq!(agreed_through(&old, 180, &new, 200), 99);
        // A replica with no epochs (restored) agrees on epoch-0 seqs only.
        assert_eq!(agreed_through(&EpochTable::new(), 180, &new, 200), 0);
        let restored = table(&[(3, 101)]);
        assert_eq!(
            agreed_through(&restored, 180, &table(&[(3, 101)]), 120),
            120
        );
    }

    #[test]
    fn adopting_a_masters_epochs_keeps_the_replicas_own_before_the_cut() {
        let mut replica = table(&[(1, 1), (2, 100)]);
        let master = table(&[(1, 1), (2, 100), (3, 150)]);
        replica.adopt_from(&master, 150);
        assert_eq!(replica, master);
        let mut replica = table(&[(1, 1), (2, 100)]);
        replica.adopt_from(&table(&[(1, 1), (3, 100)]), 100);
        assert_eq!(replica, table(&[(1, 1), (3, 100)]));
        let mut empty = EpochTable::new();
        empty.adopt_from(&table(&[(4, 10), (5, 20)]), 15);
        assert_eq!(empty, table(&[(4, 15), (5, 20)]));
    }
}
