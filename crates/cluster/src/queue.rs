//! The node queue: every event noted or ingested on this node, in order, until it is
//! committed (seen sequenced in the cluster's archive).
//!
//! Owns: the per-origin sequence (`originSeq`: 1, 2, 3, ... for this node's events),
//! the pending events, what has been sent to the current master, and the callers
//! waiting to learn the seqs their events got.
//!
//! Promises:
//! - FIFO: events leave in the order they were queued, and `originSeq` follows that
//!   order, so the master can drop a re-sent duplicate by comparing with the highest
//!   `originSeq` it has of this origin.
//! - Nothing is dropped once queued: an event stays until it is committed — on a
//!   follower, when it comes back through the master's stream; on the master, when
//!   its router has sequenced it. [`NodeQueue::resend_all`] (on a change of master)
//!   makes every uncommitted event go out again.
//! - Bounded: at most `capacity` events wait; beyond that new events are refused
//!   (and counted), never silently lost.
//! - With a journal (`--queue-dir`, [`crate::journal`]), queued events survive a
//!   crash of the node: they are on disk before the request that brought them is
//!   answered, and a restarted node sends them again.

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use master_events_events::{CompactString, Record};
use parking_lot::Mutex;

use crate::journal::{Journal, JournalStatus, NextWrite};
use tokio::sync::{oneshot, Notify};

struct Waiter {
    first: u64,
    last: u64,
    first_seq: Option<u64>,
    reply: oneshot::Sender<RangeInclusive<u64>>,
}

struct State {
    /// The originSeq the next queued event gets.
    next_origin_seq: u64,
    /// Uncommitted events, by originSeq.
    pending: VecDeque<Record>,
    /// The highest originSeq sent to the current master (not yet committed).
    sent: u64,
    /// The highest originSeq committed.
    committed: u64,
    waiters: Vec<Waiter>,
    refused: u64,
    /// When each batch still (partly) pending was queued: (its last originSeq, when).
    queued_at: VecDeque<(u64, Instant)>,
}

/// The queue (see the module documentation).
pub struct NodeQueue {
    origin: CompactString,
    capacity: usize,
    state: Mutex<State>,
    /// Where queued events are kept across a crash (`--queue-dir`), if anywhere.
    journal: Option<Mutex<Journal>>,
    /// Whether that journal writes (read without waiting for a write).
    journal_status: Option<std::sync::Arc<JournalStatus>>,
    /// Wakes the delivery task when there is something to send.
    pub(crate) wake: Notify,
}

/// The queue has no room.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the node queue is full ({capacity} events wait for the master)")]
pub struct QueueFull {
    /// The queue's capacity.
    pub capacity: usize,
}

impl NodeQueue {
    /// An empty queue for events of `origin`; `start_origin_seq` is the originSeq of
    /// the first event (continue after what the archive already has of this node).
    pub fn new(origin: &str, capacity: usize, start_origin_seq: u64) -> NodeQueue {
        let start = start_origin_seq.max(1);
        NodeQueue {
            origin: origin.into(),
            capacity: capacity.max(1),
            state: Mutex::new(State {
                next_origin_seq: start,
                pending: VecDeque::new(),
                sent: start - 1,
                committed: start - 1,
                waiters: Vec::new(),
                refused: 0,
                queued_at: VecDeque::new(),
            }),
            journal: None,
            journal_status: None,
            wake: Notify::new(),
        }
    }

    /// A queue kept in `journal` (`--queue-dir`), holding again the events it gave
    /// back (`restored`: ascending `originSeq`s, not yet committed); new events
    /// continue after them (or from `start_origin_seq` when there are none).
    pub fn with_journal(
        origin: &str,
        capacity: usize,
        start_origin_seq: u64,
        journal: Journal,
        restored: Vec<Record>,
    ) -> NodeQueue {
        let first = restored.first().and_then(|r| r.envelope.origin_seq);
        let last = restored.last().and_then(|r| r.envelope.origin_seq);
        let mut queue = NodeQueue::new(origin, capacity.max(restored.len()), start_origin_seq);
        if let (Some(first), Some(last)) = (first, last) {
            let st = queue.state.get_mut();
            st.next_origin_seq = last + 1;
            st.committed = first - 1;
            st.sent = first - 1;
            st.queued_at.push_back((last, Instant::now()));
            st.pending = restored.into();
        }
        queue.journal_status = Some(journal.status());
        queue.journal = Some(Mutex::new(journal));
        queue
    }

    /// Queues `records` (all or none), stamping `origin`, `originTs` and `originSeq`. With
    /// `wait`, the returned receiver yields the seqs they get once committed.
    pub fn push(
        &self,
        records: Vec<Record>,
        wait: bool,
    ) -> Result<Option<oneshot::Receiver<RangeInclusive<u64>>>, QueueFull> {
        if records.is_empty() {
            return Ok(None);
        }
        let mut lines = Vec::new();
        // The journal is held from the moment originSeqs are given until the lines
        // are written, so concurrent requests append in originSeq order: a crash
        // then leaves a journal whose every line was answered before any later one.
        // (Lock order: the journal, then the state, as in `commit`.)
        let mut journal = self.journal.as_ref().map(|j| j.lock());
        let mut rewrite = None;
        let mut skip = false;
        let rx = {
            let mut st = self.state.lock();
            if st.pending.len() + records.len() > self.capacity && !st.pending.is_empty() {
                st.refused += records.len() as u64;
                return Err(QueueFull {
                    capacity: self.capacity,
                });
            }
            let first = st.next_origin_seq;
            // When the events were noted here: the master's `ts` may come much later
            // (a change of master, an unreachable master).
            let noted = master_events_events::Timestamp::now();
            for mut rec in records {
                rec.envelope.seq = None;
                rec.envelope.ts = None;
                rec.envelope.origin_ts = Some(noted);
                rec.envelope.origin = Some(self.origin.clone());
                rec.envelope.origin_seq = Some(st.next_origin_seq);
                st.next_origin_seq += 1;
                st.pending.push_back(rec);
            }
            let last = st.next_origin_seq - 1;
            st.queued_at.push_back((last, Instant::now()));
            match journal.as_ref().map(|j| j.next_write(Instant::now())) {
                // A write failed before: the file may end in a partial line and
                // lacks what was queued meanwhile, so it is rewritten whole.
                Some(NextWrite::Rewrite) => {
                    rewrite = Some(st.pending.iter().cloned().collect::<Vec<_>>());
                }
                Some(NextWrite::Append) => {
                    let n = (last + 1 - first) as usize;
                    let from = st.pending.len() - n;
                    for rec in st.pending.range(from..) {
                        rec.encode_line(&mut lines);
                    }
                }
                // A rewrite failed just now (the disk is still full): these events
                // are in memory, and in the next rewrite ([`NodeQueue::retry_journal`]).
                Some(NextWrite::Skip) => skip = true,
                None => {}
            }
            if wait {
                let (tx, rx) = oneshot::channel();
                st.waiters.push(Waiter {
                    first,
                    last,
                    first_seq: None,
                    reply: tx,
                });
                Some(rx)
            } else {
                None
            }
        };
        // On disk before the request is answered (a noted event: written, not synced).
        if let Some(journal) = &mut journal {
            match rewrite {
                Some(pending) => journal.compact(&pending),
                None if skip => {}
                None => journal.append(&lines, wait),
            }
        }
        drop(journal);
        self.wake.notify_one();
        Ok(rx)
    }

    /// Up to `max` events not yet sent to the current master, in order.
    pub fn unsent(&self, max: usize) -> Vec<Record> {
        let st = self.state.lock();
        // `pending` is in originSeq order: the sent ones are a prefix.
        let from = st
            .pending
            .partition_point(|r| r.envelope.origin_seq.is_some_and(|os| os <= st.sent));
        st.pending.range(from..).take(max).cloned().collect()
    }

    /// Marks events up to `origin_seq` as sent.
    pub fn mark_sent(&self, origin_seq: u64) {
        let mut st = self.state.lock();
        st.sent = st.sent.max(origin_seq.min(st.next_origin_seq - 1));
    }

    /// Marks the event `origin_seq` (and every one before it) committed with `seq`.
    pub fn commit(&self, origin_seq: u64, seq: u64) {
        if !self.commit_in_memory(origin_seq, seq) {
            return;
        }
        if let Some(journal) = &self.journal {
            let mut journal = journal.lock();
            if journal.committed(origin_seq) {
                let pending: Vec<Record> = self.state.lock().pending.iter().cloned().collect();
                journal.compact(&pending);
            }
        }
    }

    fn commit_in_memory(&self, origin_seq: u64, seq: u64) -> bool {
        let mut st = self.state.lock();
        if origin_seq <= st.committed {
            return false;
        }
        // By originSeq, not by count: a journal restored after a failed write may
        // have gaps in its originSeqs.
        while st
            .pending
            .front()
            .is_some_and(|r| r.envelope.origin_seq.is_some_and(|os| os <= origin_seq))
        {
            st.pending.pop_front();
        }
        st.committed = origin_seq;
        st.sent = st.sent.max(origin_seq);
        while st
            .queued_at
            .front()
            .is_some_and(|(last, _)| *last <= origin_seq)
        {
            st.queued_at.pop_front();
        }
        let mut i = 0;
        while i < st.waiters.len() {
            let w = &mut st.waiters[i];
            if w.first == origin_seq || (w.first_seq.is_none() && w.first < origin_seq) {
                w.first_seq.get_or_insert(seq);
            }
            if w.last <= origin_seq {
                let w = st.waiters.swap_remove(i);
                let first_seq = w.first_seq.unwrap_or(seq);
                let _ = w.reply.send(first_seq..=seq);
            } else {
                i += 1;
            }
        }
        true
    }

    /// After a change of master: every uncommitted event goes out again.
    pub fn resend_all(&self) {
        let mut st = self.state.lock();
        st.sent = st.committed;
        drop(st);
        self.wake.notify_one();
    }

    /// Events waiting (uncommitted).
    pub fn len(&self) -> usize {
        self.state.lock().pending.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How long the oldest uncommitted event has waited (`None` when none waits).
    pub fn oldest_age(&self) -> Option<Duration> {
        let st = self.state.lock();
        if st.pending.is_empty() {
            return None;
        }
        st.queued_at.front().map(|(_, at)| at.elapsed())
    }

    /// While the journal cannot write: tries the rewrite it is due (see
    /// [`crate::journal`]), so that what was queued reaches the disk once there is
    /// room again even if no request comes. Does nothing when the journal writes,
    /// when a rewrite failed less than [`crate::journal::REWRITE_EVERY`] ago, or
    /// when a request holds the journal. Returns whether the journal still fails.
    pub fn retry_journal(&self) -> bool {
        let Some(journal) = &self.journal else {
            return false;
        };
        let Some(mut journal) = journal.try_lock() else {
            return self.journal_error().is_some();
        };
        if journal.next_write(Instant::now()) == NextWrite::Rewrite {
            // Lock order: the journal, then the state.
            let pending: Vec<Record> = self.state.lock().pending.iter().cloned().collect();
            journal.compact(&pending);
        }
        journal.next_write(Instant::now()) != NextWrite::Append
    }

    /// Why the journal (`--queue-dir`) cannot write, while it cannot.
    pub fn journal_error(&self) -> Option<String> {
        self.journal_status.as_ref().and_then(|s| s.error())
    }

    /// Journal writes that failed since start-up (0 without a journal).
    pub fn journal_failures(&self) -> u64 {
        self.journal_status.as_ref().map_or(0, |s| s.failures())
    }

    /// Events refused because the queue was full.
    pub fn refused(&self) -> u64 {
        self.state.lock().refused
    }

    /// The origin name of this queue's events.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use master_events_events::catalog::DeleteBucket;

    fn recs(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| {
                Record::new(DeleteBucket {
                    bucket: format!("b{i}").into(),
                })
            })
            .collect()
    }

    #[test]
    fn events_get_consecutive_origin_seqs_in_order() {
        let q = NodeQueue::new("n_1@a", 100, 1);
        q.push(recs(3), false).expect("room");
        let out = q.unsent(10);
        let seqs: Vec<_> = out.iter().filter_map(|r| r.envelope.origin_seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert!(out
            .iter()
            .all(|r| r.envelope.origin.as_deref() == Some("n_1@a")));
    }

    #[test]
    fn sent_events_are_not_sent_again_until_a_master_change() {
        let q = NodeQueue::new("n", 100, 1);
        q.push(recs(5), false).expect("room");
        q.mark_sent(3);
        assert_eq!(q.unsent(10).len(), 2);
        q.commit(2, 40);
        assert_eq!(q.len(), 3);
        q.resend_all();
        let again: Vec<_> = q
            .unsent(10)
            .iter()
            .filter_map(|r| r.envelope.origin_seq)
            .collect();
        assert_eq!(again, vec![3, 4, 5], "uncommitted events go out again");
    }

    #[test]
    fn a_waiter_learns_the_seqs_of_its_events() {
        let q = NodeQueue::new("n", 100, 1);
        q.push(recs(1), false).expect("room");
        let mut rx = q.push(recs(3), true).expect("room").expect("waiter");
        q.commit(1, 10);
        assert!(rx.try_recv().is_err());
        q.commit(2, 11);
        q.commit(3, 12);
        q.commit(4, 13);
        assert_eq!(rx.try_recv().ok(), Some(11..=13));
    }

    #[test]
    fn a_full_queue_refuses_and_counts() {
        let q = NodeQueue::new("n", 4, 1);
        q.push(recs(3), false).expect("room");
        assert_eq!(
            q.push(recs(2), false).err(),
            Some(QueueFull { capacity: 4 })
        );
        assert_eq!(q.refused(), 2);
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn the_oldest_wait_is_that_of_the_first_uncommitted_batch() {
        let q = NodeQueue::new("n", 100, 1);
        assert_eq!(q.oldest_age(), None);
        q.push(recs(2), false).expect("room");
        std::thread::sleep(Duration::from_millis(30));
        q.push(recs(1), false).expect("room");
        let first = q.oldest_age().expect("events wait");
        assert!(first >= Duration::from_millis(30), "{first:?}");
        q.commit(1, 10);
        assert!(q.oldest_age().expect("events wait") >= Duration::from_millis(30));
        q.commit(2, 11);
        let second = q.oldest_age().expect("one event waits");
        assert!(second < first, "{second:?} vs {first:?}");
        q.commit(3, 12);
        assert_eq!(q.oldest_age(), None);
    }

    fn journaled(dir: &std::path::Path, restored_seqs: &[u64]) -> NodeQueue {
        let (journal, _) = Journal::open(dir, "n", 0).expect("journal");
        let restored = restored_seqs
            .iter()
            .map(|&n| {
                let mut r = recs(1).remove(0);
                r.envelope.origin = Some("n".into());
                r.envelope.origin_seq = Some(n);
                r
            })
            .collect();
        NodeQueue::with_journal("n", 1000, 1, journal, restored)
    }

    #[test]
    fn a_restored_queue_with_a_gap_sends_and_commits_by_origin_seq() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = journaled(dir.path(), &[1, 2, 3, 7, 8]);
        let seqs = |v: Vec<Record>| -> Vec<u64> {
            v.iter().filter_map(|r| r.envelope.origin_seq).collect()
        };
        assert_eq!(seqs(q.unsent(10)), vec![1, 2, 3, 7, 8]);
        q.mark_sent(3);
        assert_eq!(seqs(q.unsent(10)), vec![7, 8]);
        q.commit(3, 30);
        assert_eq!(q.len(), 2);
        q.commit(7, 31);
        assert_eq!(q.len(), 1);
        q.push(recs(1), false).expect("room");
        assert_eq!(seqs(q.unsent(10)), vec![8, 9]);
    }

    #[test]
    fn requests_queued_at_once_reach_the_journal_in_origin_seq_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = std::sync::Arc::new(journaled(dir.path(), &[]));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let q = std::sync::Arc::clone(&q);
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        q.push(recs(3), true).expect("room");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("pusher");
        }
        let text = std::fs::read_to_string(dir.path().join("queue.ndjson")).expect("journal");
        let order: Vec<u64> = text
            .lines()
            .filter_map(|l| Record::parse(l.as_bytes()).ok()?.envelope.origin_seq)
            .collect();
        assert_eq!(order, (1..=600).collect::<Vec<u64>>());
    }

    #[test]
    fn a_journal_that_failed_is_rewritten_whole_by_the_retry_without_a_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = journaled(dir.path(), &[]);
        q.push(recs(2), true).expect("room");
        q.journal.as_ref().expect("journal").lock().fail_writes();
        q.push(recs(3), true).expect("room");
        assert!(q
            .journal_error()
            .is_some_and(|e| e.contains("No space left")));
        // The next write is a rewrite, through a new file: it works again.
        assert!(!q.retry_journal(), "the rewrite worked");
        assert_eq!(q.journal_error(), None);
        let text = std::fs::read_to_string(dir.path().join("queue.ndjson")).expect("journal");
        let order: Vec<u64> = text
            .lines()
            .filter_map(|l| Record::parse(l.as_bytes()).ok()?.envelope.origin_seq)
            .collect();
        assert_eq!(order, vec![1, 2, 3, 4, 5]);
        assert!(!q.retry_journal(), "nothing to do");
    }

    #[test]
    fn origin_seqs_continue_after_a_restart() {
        let q = NodeQueue::new("n", 10, 42);
        q.push(recs(1), false).expect("room");
        assert_eq!(q.unsent(1)[0].envelope.origin_seq, Some(42));
    }
}
