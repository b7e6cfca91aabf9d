//! Commit gates: what decides that a sequenced event is committed — readable by
//! every reader, and acknowledged to its publisher.
//!
//! Owns: the gates' marks and the commit they make ([`CommitGates`]), and the handle
//! a gate advances ([`CommitGate`]).
//!
//! Promises:
//! - With no gate, an event is committed as soon as it is appended (nothing waits).
//! - With gates, an event is committed once every gate has it: the commit is the
//!   lowest of the gates' marks. A durable sink is a gate (it marks what it has
//!   written and synced to disk); so on a single node with such a sink, a `200` to a
//!   publisher and an event on any stream both mean "on disk" — a `kill -9` cannot
//!   take back what anyone was told or shown. One mark covers every event up to it,
//!   so one fsync answers many publishers (group commit).
//! - The commit never goes backwards and never passes the last appended event.
//! - A cut of the uncommitted suffix (a deposed master's events) takes every mark
//!   back to the cut: a gate commits the events that take those seqs only once it
//!   marks them itself.
//! - A gate that stops advancing stops the commit: publishers wait and readers see
//!   nothing newer. That is the promise (nothing is acknowledged that is not
//!   durable); the gate's sink reports why through its [`crate::SinkHealth`].

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::ring::{Ring, Subscription};

/// The gates of one router.
pub(crate) struct CommitGates {
    ring: Arc<Ring>,
    /// Each gate's mark: the last seq it has.
    marks: Mutex<Vec<u64>>,
    /// Woken whenever the commit advances (publishers waiting for it).
    advanced: Notify,
}

impl CommitGates {
    pub(crate) fn new(ring: Arc<Ring>) -> CommitGates {
        CommitGates {
            ring,
            marks: Mutex::new(Vec::new()),
            advanced: Notify::new(),
        }
    }

    /// Adds a gate; from now on the gates decide the commit. Its mark starts at the
    /// present commit.
    pub(crate) fn add(self: &Arc<Self>) -> CommitGate {
        let mut marks = self.marks.lock();
        self.ring.set_gated();
        marks.push(self.ring.committed());
        CommitGate {
            gates: Arc::clone(self),
            index: marks.len() - 1,
        }
    }

    /// The archive was cut after `seq` (never below the commit): a mark beyond it
    /// goes back to it. What a gate had marked past `seq` is gone, and the events
    /// that take those seqs next are new to it: its old mark must not commit them.
    pub(crate) fn cut(&self, seq: u64) {
        for mark in self.marks.lock().iter_mut() {
            if *mark > seq {
                *mark = seq;
            }
        }
    }

    /// Whether any gate exists.
    pub(crate) fn any(&self) -> bool {
        !self.marks.lock().is_empty()
    }

    /// A reader's mark: its position, unless a cut it has not taken into account
    /// (made after it last read, `cuts_seen`) lies below it — then that cut, for
    /// what the reader had past it is gone. Checked under the marks' lock, so a
    /// cut is either seen here or lowers the mark right after ([`Self::cut`]).
    fn advance_reader(&self, index: usize, position: u64, cuts_seen: u64) {
        let lowest = {
            let mut marks = self.marks.lock();
            let seq = match self.ring.cut_since(cuts_seen).0 {
                Some(after) => position.min(after),
                None => position,
            };
            let Some(mark) = marks.get_mut(index) else {
                return;
            };
            if seq <= *mark {
                return;
            }
            *mark = seq;
            marks.iter().copied().min().unwrap_or(seq)
        };
        let before = self.ring.committed();
        if self.ring.commit_through(lowest) > before {
            self.advanced.notify_waiters();
        }
    }

    fn advance(&self, index: usize, seq: u64) {
        let lowest = {
            let mut marks = self.marks.lock();
            let Some(mark) = marks.get_mut(index) else {
                return;
            };
            if seq <= *mark {
                return;
            }
            *mark = seq;
            marks.iter().copied().min().unwrap_or(seq)
        };
        let before = self.ring.committed();
        if self.ring.commit_through(lowest) > before {
            self.advanced.notify_waiters();
        }
    }

    /// Waits until `seq` is committed (at once when it is).
    pub(crate) async fn wait(&self, seq: u64) {
        loop {
            if self.ring.committed() >= seq {
                return;
            }
            let notified = self.advanced.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.ring.committed() >= seq {
                return;
            }
            notified.await;
        }
    }
}

/// A commit gate's handle: the gate marks, with [`CommitGate::mark`], the last seq
/// it has (for a durable sink: written and synced, or filtered out: every event up
/// to its position). Cheap to clone.
#[derive(Clone)]
pub struct CommitGate {
    gates: Arc<CommitGates>,
    index: usize,
}

impl CommitGate {
    /// This gate has every event up to `seq` (a lower mark than before is ignored).
    /// For a gate whose marks come from what it is sequenced into, not from what it
    /// read (a cluster's commit); a reader of uncommitted events marks with
    /// [`CommitGate::mark_read`].
    pub fn mark(&self, seq: u64) {
        self.gates.advance(self.index, seq);
    }

    /// This gate has every event `reader` has been handed (its
    /// [`Subscription::position`], a reader of uncommitted events). Safe against a
    /// cut racing the mark: a position read before a cut of the archive (a deposed
    /// master's uncommitted events taken back) is not taken for the events that
    /// replace the ones cut; the mark stops at the cut until the reader has read on.
    pub fn mark_read(&self, reader: &Subscription) {
        self.gates
            .advance_reader(self.index, reader.position(), reader.cuts_seen());
    }

    /// The present commit (the lowest mark of all gates).
    pub fn committed(&self) -> u64 {
        self.gates.ring.committed()
    }
}

impl std::fmt::Debug for CommitGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitGate")
            .field("index", &self.index)
            .field("committed", &self.committed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use master_events_events::catalog::DeleteBucket;
    use master_events_events::Record;

    use crate::ring::{Chunk, Cursor};
    use crate::{Router, RouterConfig};

    fn deletes(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| {
                Record::new(DeleteBucket {
                    bucket: format!("b{i}").into(),
                })
            })
            .collect()
    }

    fn seqs(chunk: Option<Chunk>) -> Vec<u64> {
        match chunk {
            Some(Chunk::Events(batch)) => batch.iter().map(|e| e.seq).collect(),
            other => panic!("expected events, got {other:?}"),
        }
    }

    const T: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn an_event_is_read_and_acknowledged_only_once_every_gate_marked_it() {
        let router = Router::start(RouterConfig::default());
        let first = router.add_commit_gate();
        let second = router.add_commit_gate();
        let mut reader = router.subscribe(Cursor::Oldest);
        let mut gatekeeper = router.subscribe_uncommitted(Cursor::Oldest);
        let publisher = {
            let router = router.clone();
            tokio::spawn(async move { router.publish_batch(deletes(3)).await })
        };
        // The gate's own reader sees the events as soon as they are appended...
        let appended = tokio::time::timeout(T, gatekeeper.recv())
            .await
            .expect("appended");
        assert_eq!(seqs(appended), vec![1, 2, 3]);
        // ...no one else does, and no one is told they are in.
        assert!(reader.try_recv().is_none());
        assert!(!publisher.is_finished());
        assert_eq!(router.committed_seq(), 0);
        assert_eq!(router.last_seq(), 3);
        // One gate is not enough: the commit is the lowest mark.
        first.mark(3);
        assert!(reader.try_recv().is_none());
        assert!(!publisher.is_finished());
        second.mark(2);
        assert_eq!(seqs(reader.try_recv()), vec![1, 2], "never past the commit");
        assert!(!publisher.is_finished());
        second.mark(3);
        assert_eq!(seqs(reader.try_recv()), vec![3]);
        let reply = tokio::time::timeout(T, publisher)
            .await
            .expect("answered once committed")
            .expect("task");
        assert_eq!(reply, Ok(1..=3));
        // A mark never takes the commit back, nor past what was appended.
        first.mark(1);
        second.mark(99);
        assert_eq!(router.committed_seq(), 3);
    }

    #[tokio::test]
    async fn without_a_gate_every_append_commits() {
        let router = Router::start(RouterConfig::default());
        let mut reader = router.subscribe(Cursor::Oldest);
        assert_eq!(router.publish_batch(deletes(2)).await, Ok(1..=2));
        assert_eq!(router.committed_seq(), 2);
        assert_eq!(seqs(reader.try_recv()), vec![1, 2]);
        assert!(!router.is_gated());
    }
}
