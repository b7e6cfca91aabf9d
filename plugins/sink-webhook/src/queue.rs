//! The bounded queue between the webhook sink's reader (which follows the router
//! and must never wait) and its sender (which waits on the network).
//!
//! Owns: the queued items, the count of events held (queued or being sent), the
//! drop accounting, and the close signal.
//!
//! Promises:
//! - [`Queue::push_event`] never waits: past `capacity` events held (counting the
//!   batch being sent), the event is dropped and counted, and the dropped run
//!   becomes one gap item, queued in order before the next event that fits (or at
//!   when room is made, or at close), so the receiver learns exactly which seqs
//!   it will not get.
//! - Items come out in the order they went in.

use std::collections::VecDeque;

use bytes::Bytes;
use master_events_events::Gap;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The reason carried by gap lines for events the queue had no room for.
pub const GAP_QUEUE_FULL: &str = "dropped by the webhook sink: its queue was full";

/// One thing to send: a line and the seqs it stands for.
#[derive(Clone, Debug)]
pub struct Item {
    /// The line, with its `\n`.
    pub line: Bytes,
    /// Whether it is an event (a gap line does not count against the bound).
    pub is_event: bool,
}

struct State {
    items: VecDeque<Item>,
    /// Events queued or being sent.
    held: usize,
    /// Seqs dropped since the last gap item was queued.
    dropped: Option<(u64, u64)>,
}

/// The queue (see the [module documentation](self)).
pub struct Queue {
    state: Mutex<State>,
    capacity: usize,
    /// Wakes the sender when an item is pushed, and on close.
    pushed: Notify,
    closed: CancellationToken,
}

/// What [`Queue::push_event`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// Dropped: no room.
    Dropped,
}

impl Queue {
    /// A queue holding at most `capacity` events (at least 1).
    pub fn new(capacity: usize) -> Queue {
        Queue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                held: 0,
                dropped: None,
            }),
            capacity: capacity.max(1),
            pushed: Notify::new(),
            closed: CancellationToken::new(),
        }
    }

    /// Queues an event line, or drops it if the queue holds `capacity` events.
    pub fn push_event(&self, seq: u64, line: Bytes) -> Pushed {
        {
            let mut st = self.state.lock();
            if st.held >= self.capacity {
                st.dropped = Some(match st.dropped {
                    Some((from, _)) => (from, seq),
                    None => (seq, seq),
                });
                return Pushed::Dropped;
            }
            Self::flush_dropped(&mut st);
            st.items.push_back(Item {
                line,
                is_event: true,
            });
            st.held += 1;
        }
        self.pushed.notify_one();
        Pushed::Queued
    }

    /// Queues a gap line (always: gaps are rare and merge nothing).
    pub fn push_gap(&self, gap: &Gap) {
        {
            let mut st = self.state.lock();
            Self::flush_dropped(&mut st);
            st.items.push_back(gap_item(gap));
        }
        self.pushed.notify_one();
    }

    fn flush_dropped(st: &mut State) {
        if let Some((from, to)) = st.dropped.take() {
            st.items
                .push_back(gap_item(&Gap::new(from, to, GAP_QUEUE_FULL)));
        }
    }

    /// Takes up to `max_events` events and `max_bytes` bytes from the front (at
    /// least one item if any). The events stay counted as held until
    /// [`Queue::release`].
    pub fn take(&self, max_events: usize, max_bytes: usize) -> Vec<Item> {
        let mut st = self.state.lock();
        let mut out = Vec::new();
        let (mut events, mut bytes) = (0, 0);
        while let Some(front) = st.items.front() {
            let adds = usize::from(front.is_event);
            if !out.is_empty()
                && (events + adds > max_events || bytes + front.line.len() > max_bytes)
            {
                break;
            }
            events += adds;
            bytes += front.line.len();
            if let Some(item) = st.items.pop_front() {
                out.push(item);
            }
        }
        out
    }

    /// The events of a taken batch are delivered or given up: room for as many.
    /// A dropped run pending since the queue was full becomes a gap item now
    /// (after everything queued, which all came before it).
    pub fn release(&self, events: usize) {
        let gap = {
            let mut st = self.state.lock();
            st.held = st.held.saturating_sub(events);
            let pending = st.dropped.is_some();
            Self::flush_dropped(&mut st);
            pending
        };
        if gap {
            self.pushed.notify_one();
        }
    }

    /// `(events queued, bytes queued)`, not counting a batch being sent.
    pub fn queued(&self) -> (usize, usize) {
        let st = self.state.lock();
        let events = st.items.iter().filter(|i| i.is_event).count();
        let bytes = st.items.iter().map(|i| i.line.len()).sum();
        (events, bytes)
    }

    /// Events queued or being sent.
    pub fn held(&self) -> usize {
        self.state.lock().held
    }

    /// Whether nothing is queued (a batch may still be being sent).
    pub fn is_empty(&self) -> bool {
        self.state.lock().items.is_empty()
    }

    /// No more pushes: a pending dropped run becomes a gap item, and the sender is
    /// woken to deliver what is left.
    pub fn close(&self) {
        {
            let mut st = self.state.lock();
            Self::flush_dropped(&mut st);
        }
        self.closed.cancel();
        self.pushed.notify_one();
    }

    /// Whether [`Queue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Resolves when the queue is closed.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }

    /// Resolves after the next push or close (or at once if one happened since the
    /// last wait).
    pub async fn pushed(&self) {
        self.pushed.notified().await
    }
}

fn gap_item(gap: &Gap) -> Item {
    let mut line = Vec::with_capacity(128);
    gap.encode_line(&mut line);
    Item {
        line: Bytes::from(line),
        is_event: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64) -> Bytes {
        Bytes::from(format!("{{\"seq\":{seq}}}\n"))
    }

    #[test]
    fn past_the_bound_events_are_dropped_and_become_one_gap_in_order() {
        let q = Queue::new(2);
        assert_eq!(q.push_event(1, line(1)), Pushed::Queued);
        assert_eq!(q.push_event(2, line(2)), Pushed::Queued);
        assert_eq!(q.push_event(3, line(3)), Pushed::Dropped);
        assert_eq!(q.push_event(4, line(4)), Pushed::Dropped);
        let batch = q.take(10, 1 << 20);
        assert_eq!(batch.len(), 2);
        assert_eq!(
            q.push_event(5, line(5)),
            Pushed::Dropped,
            "a taken batch still counts"
        );
        q.release(2);
        assert_eq!(q.push_event(6, line(6)), Pushed::Queued);
        let rest = q.take(10, 1 << 20);
        let text: Vec<String> = rest
            .iter()
            .map(|i| String::from_utf8_lossy(&i.line).into_owned())
            .collect();
        assert_eq!(text.len(), 2);
        assert!(
            text[0].starts_with("{\"type\":\"gap\",\"fromSeq\":3,\"toSeq\":5,\"missed\":3"),
            "{}",
            text[0]
        );
        assert_eq!(text[1], "{\"seq\":6}\n");
    }

    #[test]
    fn take_respects_counts_and_bytes_but_always_takes_one() {
        let q = Queue::new(100);
        for seq in 1..=5 {
            q.push_event(seq, line(seq));
        }
        assert_eq!(q.take(2, 1 << 20).len(), 2);
        assert_eq!(
            q.take(10, 1).len(),
            1,
            "one item even if larger than max_bytes"
        );
        assert_eq!(q.take(10, 1 << 20).len(), 2);
        assert!(q.is_empty());
    }

    #[test]
    fn close_queues_a_pending_drop_as_a_gap() {
        let q = Queue::new(1);
        q.push_event(1, line(1));
        q.push_event(2, line(2));
        q.close();
        assert!(q.is_closed());
        assert_eq!(q.take(10, 1 << 20).len(), 2);
    }
}
