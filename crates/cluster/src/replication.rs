//! The replication protocol's state and wire format: promises, votes, the
//! followers' acknowledgements and the majority commit.
//!
//! Owns: this node's **promise** (the highest discovery epoch it has answered a
//! vote for, or followed, or led), its **run id** (random per process start, so a
//! master can tell a restarted follower from the one it knew), whether its archive
//! is **trusted** (it holds everything the cluster committed: it was restored from
//! disk, or has caught up with a master's commit since it started), and on the
//! master the followers' **matches** (how far each one's archive agrees with the
//! master's, in the master's epoch) and the commit they make. Also the control
//! frames of `GET /cluster/log` ([`Control`]) and the answer to `GET
//! /cluster/vote` ([`Vote`]).
//!
//! Promises (the rules of Raft, with the discovery epoch as the term; see
//! docs/cluster.md, "Replication"):
//! - A node never acknowledges, nor appends from, a master of an epoch below its
//!   promise; so once a new master has heard a majority, no deposed master can
//!   commit anything more.
//! - The master commits seq `s` only when a majority of the cluster (itself
//!   included) holds every event up to `s` in its own epoch's archive, and `s` is
//!   of its own epoch (an entry of an older epoch is committed through a newer one
//!   after it: Raft's §5.4.2).
//! - A follower's match counts only for the run of the follower that reported it,
//!   and only in the epoch it was reported for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// A control frame of the `GET /cluster/log` stream (event lines come between
/// them as they are in the archive).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "control", rename_all = "camelCase")]
pub enum Control {
    /// The first line: how far the asker's archive agrees with this node's, and
    /// what this node holds.
    #[serde(rename_all = "camelCase")]
    Start {
        /// The last seq on which both archives agree (the asker keeps its archive
        /// up to it, or up to its own commit if that is higher).
        agreed: u64,
        /// This node's last seq when the stream started.
        last: u64,
        /// This node's commit.
        committed: u64,
        /// This node's epoch table, in text form.
        epochs: String,
        /// This node's history id.
        history: String,
    },
    /// The master's commit (also sent every half second as a heartbeat).
    Commit {
        /// The last committed seq.
        seq: u64,
    },
    /// Events the asker wanted that this node no longer has.
    #[serde(rename_all = "camelCase")]
    Gap {
        /// The first seq missing.
        from_seq: u64,
        /// The last seq missing.
        to_seq: u64,
    },
}

impl Control {
    /// The frame as one NDJSON line.
    pub fn line(&self) -> bytes::Bytes {
        let mut text = serde_json::to_vec(self).unwrap_or_default();
        text.push(b'\n');
        text.into()
    }

    /// Whether `line` is a control frame (event lines start with `{"type":`).
    pub fn is_control(line: &[u8]) -> bool {
        line.starts_with(b"{\"control\":")
    }

    /// Parses a control frame.
    pub fn parse(line: &[u8]) -> Result<Control, String> {
        serde_json::from_slice(line).map_err(|e| format!("bad control frame: {e}"))
    }
}

/// A node's answer to `GET /cluster/vote?epoch=E`: it promised `E`, and this is
/// its archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vote {
    /// The node's name.
    pub node: String,
    /// Its last seq.
    pub last_seq: u64,
    /// The epoch of its last seq.
    pub last_epoch: u64,
    /// Its commit.
    pub committed: u64,
    /// Whether its archive holds everything the cluster committed (see the
    /// module documentation).
    pub trusted: bool,
}

impl Vote {
    /// Raft's "at least as up-to-date": the later last epoch wins, then the longer
    /// archive.
    pub fn rank(&self) -> (u64, u64) {
        (self.last_epoch, self.last_seq)
    }
}

/// Whether the votes a new master holds (its own included) let it take over: a
/// majority of the cluster's `size` nodes with trusted archives, or every node
/// (an empty cluster starting: no one can be trusted yet, and no one holds more).
pub fn is_quorum(votes: &[Vote], size: usize) -> bool {
    let trusted = votes.iter().filter(|v| v.trusted).count();
    trusted >= majority(size) || votes.len() >= size
}

/// How many nodes of `size` are a majority.
pub fn majority(size: usize) -> usize {
    size / 2 + 1
}

/// The seq a majority holds, given the master's last seq and its followers'
/// matches: the `majority(size)`-th highest (a follower that reported nothing
/// counts as 0).
pub fn majority_seq(master_last: u64, matches: &[u64], size: usize) -> u64 {
    let mut all: Vec<u64> = std::iter::once(master_last)
        .chain(matches.iter().copied())
        .collect();
    all.resize(size.max(all.len()), 0);
    all.sort_unstable_by(|a, b| b.cmp(a));
    all.get(majority(size) - 1).copied().unwrap_or(0)
}

/// Each follower's (run, matching seq), by name.
type Matches = HashMap<String, (u64, u64)>;

/// This node's side of the protocol (see the module documentation).
pub struct Replication {
    promised: AtomicU64,
    run: u64,
    trusted: AtomicBool,
    /// On the master: its epoch and each follower's (run, matching seq).
    matches: Mutex<(u64, Matches)>,
}

impl Replication {
    /// A node's state at start; `trusted` when its archive was restored.
    pub fn new(trusted: bool) -> Replication {
        Replication {
            promised: AtomicU64::new(0),
            run: rand::random::<u64>() | 1,
            trusted: AtomicBool::new(trusted),
            matches: Mutex::new((0, HashMap::new())),
        }
    }

    /// This process's run id.
    pub fn run(&self) -> u64 {
        self.run
    }

    /// The highest epoch promised.
    pub fn promised(&self) -> u64 {
        self.promised.load(Ordering::Acquire)
    }

    /// Promises `epoch` (never lowers the promise); whether `epoch` is now the
    /// promise (false: a higher epoch was promised before).
    pub fn promise(&self, epoch: u64) -> bool {
        let before = self.promised.fetch_max(epoch, Ordering::AcqRel);
        before <= epoch
    }

    /// Whether this node's archive holds everything the cluster committed.
    pub fn is_trusted(&self) -> bool {
        self.trusted.load(Ordering::Acquire)
    }

    /// This node's archive now holds everything the cluster committed.
    pub fn trust(&self) {
        self.trusted.store(true, Ordering::Release);
    }

    /// On a new master of `epoch`: forgets the matches of any other epoch.
    pub fn lead(&self, epoch: u64) {
        let mut m = self.matches.lock();
        if m.0 != epoch {
            *m = (epoch, HashMap::new());
        }
    }

    /// A follower's report, for the master of `epoch`: `node` (run `run`) holds the
    /// master's archive up to `seq`. Refused (false) for another epoch. A new run
    /// of a node replaces what its previous run reported.
    pub fn matched(&self, epoch: u64, node: &str, run: u64, seq: u64) -> bool {
        let mut m = self.matches.lock();
        if m.0 != epoch {
            return false;
        }
        let entry = m.1.entry(node.to_owned()).or_insert((run, 0));
        if entry.0 != run {
            *entry = (run, seq);
        } else {
            entry.1 = entry.1.max(seq);
        }
        true
    }

    /// The followers' matches, for the master of `epoch` (empty for another).
    pub fn matches(&self, epoch: u64) -> Vec<u64> {
        let m = self.matches.lock();
        if m.0 != epoch {
            return Vec::new();
        }
        m.1.values().map(|(_, seq)| *seq).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(node: &str, last_epoch: u64, last_seq: u64, trusted: bool) -> Vote {
        Vote {
            node: node.into(),
            last_seq,
            last_epoch,
            committed: 0,
            trusted,
        }
    }

    #[test]
    fn the_majority_seq_is_what_a_majority_holds_counting_silent_followers_as_nothing() {
        assert_eq!(majority_seq(10, &[], 1), 10);
        assert_eq!(majority_seq(10, &[], 3), 0);
        assert_eq!(majority_seq(10, &[7], 3), 7);
        assert_eq!(majority_seq(10, &[7, 12], 3), 10);
        assert_eq!(majority_seq(10, &[3, 7, 9, 1], 5), 7);
    }

    #[test]
    fn a_takeover_needs_a_trusted_majority_or_every_node() {
        let fresh: Vec<Vote> = (0..3)
            .map(|i| vote(&format!("n{i}"), 0, 0, false))
            .collect();
        assert!(is_quorum(&fresh, 3), "a new cluster: every node answered");
        assert!(
            !is_quorum(&fresh[..2], 3),
            "two empty nodes may have forgotten"
        );
        let restarted = [vote("n0", 0, 0, false), vote("n1", 3, 40, true)];
        assert!(!is_quorum(&restarted, 3));
        let with_two = [
            vote("n0", 0, 0, false),
            vote("n1", 3, 40, true),
            vote("n2", 3, 38, true),
        ];
        assert!(is_quorum(&with_two, 3));
        assert!(is_quorum(&with_two[1..], 3));
    }

    #[test]
    fn a_later_epoch_outranks_a_longer_archive() {
        assert!(vote("a", 5, 10, true).rank() > vote("b", 4, 900, true).rank());
        assert!(vote("a", 5, 10, true).rank() < vote("b", 5, 11, true).rank());
    }

    #[test]
    fn promises_never_go_back_and_refuse_older_epochs() {
        let r = Replication::new(false);
        assert!(r.promise(3));
        assert!(r.promise(3));
        assert!(!r.promise(2));
        assert_eq!(r.promised(), 3);
    }

    #[test]
    fn matches_count_only_in_their_epoch_and_a_new_run_replaces_the_old() {
        let r = Replication::new(true);
        r.lead(4);
        assert!(r.matched(4, "n1", 7, 10));
        assert!(
            r.matched(4, "n1", 7, 8),
            "a late report keeps the higher match"
        );
        assert_eq!(r.matches(4), vec![10]);
        assert!(!r.matched(3, "n1", 7, 99), "another epoch's report");
        assert!(r.matched(4, "n1", 9, 2), "n1 restarted and holds less");
        assert_eq!(r.matches(4), vec![2]);
        r.lead(5);
        assert_eq!(r.matches(5), Vec::<u64>::new());
        assert_eq!(r.matches(4), Vec::<u64>::new());
    }

    #[test]
    fn control_frames_round_trip_and_are_told_from_events() {
        let start = Control::Start {
            agreed: 4,
            last: 9,
            committed: 3,
            epochs: "2:1".into(),
            history: "abc".into(),
        };
        let line = start.line();
        assert!(Control::is_control(&line));
        assert_eq!(Control::parse(line.trim_ascii_end()), Ok(start));
        assert!(!Control::is_control(br#"{"type":"deleteBucket","seq":1}"#));
        assert!(Control::parse(br#"{"control":"nonsense"}"#).is_err());
    }
}
