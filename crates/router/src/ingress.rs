//! The ingress: the bounded queue between publishers and the sequencer.
//!
//! Owns: the queue of [`Item`]s, its room (a semaphore with one permit per record
//! of capacity), and the count of records dropped because they found no room.
//!
//! Promises:
//! - Bounded in records: at most `capacity` records are queued (a batch counts
//!   each of its records; an item that is not records counts one), except for one
//!   batch larger than the whole queue, which is let in alone, once the queue is
//!   empty. The capacity is at least 1 and at most [`MAX_CAPACITY`].
//! - Fair: publishers that wait for room are served in the order they started
//!   waiting. Room the sequencer frees goes to the first waiter until it has all it
//!   needs, then to the next; a large batch is never overtaken by smaller ones that
//!   came after it, and [`Ingress::try_push`] takes room only when nobody waits for
//!   it. Waiters are not all woken at once: each is woken when its room is there.
//! - [`Ingress::try_push`] never waits: with no free room (the queue full, or its
//!   room promised to waiting publishers), or once closed, it gives the record back.
//! - Cancel-safe: a push dropped while it waits (a `publish_batch` in
//!   `tokio::select!`) queues nothing and gives back whatever room had been set
//!   aside for it, no more. Room is taken and the item queued in one step, with no
//!   await in between: an item is queued whole or not at all.
//! - Closing refuses every waiting push at once, and every later one, with
//!   [`RouterError::Closed`]; what is already queued is still taken by the
//!   sequencer.
//! - [`Ingress::take`] (the sequencer) swaps out everything queued and frees all of
//!   its room at once.
//!
//! See docs/architecture.md for where the ingress sits on the path of an event.

use std::mem;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use master_events_events::Record;
use parking_lot::Mutex;
use tokio::sync::futures::Notified;
use tokio::sync::{oneshot, Notify, Semaphore, SemaphorePermit, TryAcquireError};

use crate::{Refused, RouterError};

/// The largest capacity an ingress takes (records): a larger one is lowered to it.
/// A wait for room is one `acquire_many`, which counts permits in a `u32`.
pub(crate) const MAX_CAPACITY: usize = if (u32::MAX as usize) < Semaphore::MAX_PERMITS {
    u32::MAX as usize
} else {
    Semaphore::MAX_PERMITS
};

/// Drop warnings are logged at most this often.
const DROP_WARN_INTERVAL_MS: u64 = 1_000;

/// One entry of the ingress queue.
// Records are stored inline on purpose: boxing them would cost an allocation per
// event, and the sequencer works on them in place.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Item {
    One(Record),
    /// One batch, in parts taken in order (a request parsed in parts keeps its
    /// parts: joining them would copy every record once more). The reply is taken
    /// (`None`) once sent.
    Batch(
        Vec<Vec<Record>>,
        Option<oneshot::Sender<RangeInclusive<u64>>>,
    ),
    /// Records sequenced elsewhere (they carry their seq), appended as they are.
    Replicated(
        Vec<Record>,
        Option<oneshot::Sender<Result<u64, RouterError>>>,
    ),
    /// Forget everything and continue at this seq (a replica that missed events).
    SkipTo(u64, Option<oneshot::Sender<()>>),
    /// Cut the archive after this seq (see `Router::truncate_after`).
    Truncate(u64, Option<oneshot::Sender<Result<u64, RouterError>>>),
    /// Begin this epoch at the next seq (see `Router::begin_epoch`).
    BeginEpoch(u64, Option<oneshot::Sender<Result<u64, RouterError>>>),
    /// Makes the sequencer panic (tests of its supervision).
    #[cfg(test)]
    Panic,
}

struct Queue {
    items: Vec<Item>,
    /// Records queued (a batch counts each of its records).
    events: usize,
    /// Permits the queued items hold (what [`Ingress::take`] frees): their
    /// records, except that a batch larger than the capacity holds the capacity.
    permits: usize,
    closed: bool,
}

/// The bounded queue between publishers and the sequencer, counted in records.
pub(crate) struct Ingress {
    queue: Mutex<Queue>,
    /// Wakes the sequencer when the queue stops being empty, and on close.
    wake: Notify,
    /// The free room, one permit per record; closed with the ingress.
    room: Semaphore,
    capacity: usize,
    dropped: AtomicU64,
    created: Instant,
    /// Milliseconds after `created` of the last drop warning; `u64::MAX` for never.
    last_warn_ms: AtomicU64,
}

/// What the sequencer found in the ingress.
pub(crate) enum Take {
    Items,
    Empty,
    Closed,
}

impl Ingress {
    /// An empty ingress for `capacity` records (raised to 1, lowered to
    /// [`MAX_CAPACITY`]).
    pub(crate) fn new(capacity: usize) -> Ingress {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        Ingress {
            queue: Mutex::new(Queue {
                items: Vec::new(),
                events: 0,
                permits: 0,
                closed: false,
            }),
            wake: Notify::new(),
            room: Semaphore::new(capacity),
            capacity,
            dropped: AtomicU64::new(0),
            created: Instant::now(),
            last_warn_ms: AtomicU64::new(u64::MAX),
        }
    }

    /// Queues one record without waiting; gives it back if there is no free room
    /// (the queue is full, or its room is promised to waiting publishers) or the
    /// ingress is closed.
    pub(crate) fn try_push(&self, record: Record) -> Result<(), Refused> {
        let refuse = |record, error| {
            Err(Refused {
                record: Box::new(record),
                error,
            })
        };
        let permit = match self.room.try_acquire() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => return refuse(record, RouterError::Closed),
            Err(TryAcquireError::NoPermits) => return refuse(record, RouterError::QueueFull),
        };
        match self.enqueue(Item::One(record), 1, permit) {
            Ok(()) => Ok(()),
            Err(item) => match *item {
                Item::One(record) => refuse(record, RouterError::Closed),
                _ => unreachable!("enqueue gives back the item it was given"),
            },
        }
    }

    /// Queues all the records of `parts` at once, as one batch in their order,
    /// waiting for room (a batch larger than the whole queue is let in when the
    /// queue is empty), then waits for their seqs.
    pub(crate) async fn push_batch(
        &self,
        parts: Vec<Vec<Record>>,
    ) -> Result<RangeInclusive<u64>, RouterError> {
        let (tx, rx) = oneshot::channel();
        let n = parts.iter().map(Vec::len).sum();
        self.push_item(Item::Batch(parts, Some(tx)), n).await?;
        rx.await.map_err(|_| RouterError::Closed)
    }

    /// Queues replicated records; returns the ring's last seq once they are in.
    pub(crate) async fn push_replicated(&self, records: Vec<Record>) -> Result<u64, RouterError> {
        let (tx, rx) = oneshot::channel();
        let n = records.len();
        self.push_item(Item::Replicated(records, Some(tx)), n)
            .await?;
        rx.await.map_err(|_| RouterError::Closed)?
    }

    /// Queues a cut after `seq`; returns the ring's last seq once it is cut.
    pub(crate) async fn push_truncate(&self, seq: u64) -> Result<u64, RouterError> {
        let (tx, rx) = oneshot::channel();
        self.push_item(Item::Truncate(seq, Some(tx)), 1).await?;
        rx.await.map_err(|_| RouterError::Closed)?
    }

    /// Queues the beginning of `epoch`; returns its first seq once it is recorded.
    pub(crate) async fn push_begin_epoch(&self, epoch: u64) -> Result<u64, RouterError> {
        let (tx, rx) = oneshot::channel();
        self.push_item(Item::BeginEpoch(epoch, Some(tx)), 1).await?;
        rx.await.map_err(|_| RouterError::Closed)?
    }

    /// Queues a skip to `seq`; returns once the ring has skipped.
    pub(crate) async fn push_skip(&self, seq: u64) -> Result<(), RouterError> {
        let (tx, rx) = oneshot::channel();
        self.push_item(Item::SkipTo(seq, Some(tx)), 1).await?;
        rx.await.map_err(|_| RouterError::Closed)
    }

    /// Queues an item that makes the sequencer panic.
    #[cfg(test)]
    pub(crate) async fn inject_panic(&self) -> Result<(), RouterError> {
        self.push_item(Item::Panic, 1).await
    }

    /// Queues one item counting `n` records, waiting in line for its room: `n`
    /// permits, or the whole capacity for an item larger than it (so it goes in
    /// alone, once the queue is empty).
    async fn push_item(&self, item: Item, n: usize) -> Result<(), RouterError> {
        // Every item holds at least one permit, so that `take` always has room to
        // free when the queue had items (and a queue of empty batches stays bounded).
        let want = n.clamp(1, self.capacity);
        // At most MAX_CAPACITY, so it fits.
        let want = u32::try_from(want).unwrap_or(u32::MAX);
        // Dropped while waiting, `acquire_many` gives back what it was assigned.
        let permit = self
            .room
            .acquire_many(want)
            .await
            .map_err(|_| RouterError::Closed)?;
        self.enqueue(item, n, permit)
            .map_err(|_| RouterError::Closed)
    }

    /// Queues `item` (of `n` records) with the room `permit` holds, which the queue
    /// keeps until `take`; gives the item back (boxed: only a push that raced a
    /// close pays for it) and frees the room if closed.
    fn enqueue(&self, item: Item, n: usize, permit: SemaphorePermit<'_>) -> Result<(), Box<Item>> {
        let was_empty = {
            let mut q = self.queue.lock();
            if q.closed {
                drop(q);
                drop(permit);
                return Err(Box::new(item));
            }
            q.items.push(item);
            q.events += n;
            q.permits += permit.num_permits();
            permit.forget();
            q.items.len() == 1
        };
        if was_empty {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Counts a record that could not be queued and warns, at most once a second.
    pub(crate) fn count_drop(&self, why: RouterError) {
        let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.created.elapsed().as_millis() as u64;
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        if (last == u64::MAX || now >= last.saturating_add(DROP_WARN_INTERVAL_MS))
            && self
                .last_warn_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                dropped_total = total,
                reason = %why,
                "an event was dropped ({why}); {total} dropped so far"
            );
        }
    }

    /// Records dropped so far (see [`Ingress::count_drop`]).
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records queued now.
    pub(crate) fn queued(&self) -> usize {
        self.queue.lock().events
    }

    /// The capacity in records.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Stops accepting records and refuses every waiting push; what is queued will
    /// still be sequenced.
    pub(crate) fn close(&self) {
        self.queue.lock().closed = true;
        self.room.close();
        self.wake.notify_one();
    }

    /// Resolves when the queue may have stopped being empty, or was closed (for the
    /// sequencer, after `take` found it empty: `notify_one` leaves a permit when no
    /// one waits, so a push between `take` and the wait still wakes it).
    pub(crate) fn woken(&self) -> Notified<'_> {
        self.wake.notified()
    }

    /// Swaps the queued items into `out` (which must be empty) and frees their room;
    /// returns what was found and how many records were taken.
    pub(crate) fn take(&self, out: &mut Vec<Item>) -> (Take, usize) {
        let (taken, events, permits) = {
            let mut q = self.queue.lock();
            if !q.items.is_empty() {
                mem::swap(&mut q.items, out);
                (
                    Take::Items,
                    mem::take(&mut q.events),
                    mem::take(&mut q.permits),
                )
            } else if q.closed {
                (Take::Closed, 0, 0)
            } else {
                (Take::Empty, 0, 0)
            }
        };
        // Outside the queue's lock: the waiters this wakes go on to take it.
        if permits > 0 {
            self.room.add_permits(permits);
        }
        (taken, events)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Waker};

    use master_events_events::catalog::DeleteBucket;

    use super::*;

    fn record(i: usize) -> Record {
        Record::new(DeleteBucket {
            bucket: format!("b{i}").into(),
        })
    }

    fn records(n: usize) -> Vec<Record> {
        (0..n).map(record).collect()
    }

    /// What a drain of the queue holds: `1` for a record noted alone, `bN` for a
    /// batch of N.
    fn drain(ingress: &Ingress) -> Vec<String> {
        let mut items = Vec::new();
        ingress.take(&mut items);
        items
            .iter()
            .map(|item| match item {
                Item::One(_) => "1".to_owned(),
                Item::Batch(parts, _) => format!("b{}", parts.iter().map(Vec::len).sum::<usize>()),
                _ => "other".to_owned(),
            })
            .collect()
    }

    /// Notes records until one is refused; returns how many went in.
    fn fill(ingress: &Ingress) -> usize {
        let mut n = 0;
        while ingress.try_push(record(n)).is_ok() {
            n += 1;
        }
        n
    }

    /// Polls `f` once: whether it finished.
    fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> bool {
        f.poll(&mut Context::from_waker(Waker::noop())).is_ready()
    }

    /// A batch pushed on its own task; its outcome says whether it got room.
    fn spawn_batch(
        ingress: &Arc<Ingress>,
        n: usize,
    ) -> tokio::task::JoinHandle<Result<(), RouterError>> {
        let ingress = Arc::clone(ingress);
        tokio::spawn(async move {
            ingress
                .push_item(Item::Batch(vec![records(n)], None), n)
                .await
        })
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_large_batch_waiting_behind_small_ones_is_served_in_order() {
        let ingress = Arc::new(Ingress::new(10));
        for i in 0..5 {
            ingress.try_push(record(i)).expect("room");
        }
        // 5 records of room are free, the large batch needs 8: it waits...
        let large = spawn_batch(&ingress, 8);
        settle().await;
        assert!(!large.is_finished());
        // ...and small batches that come after it wait behind it, though there
        // would be room for them (with every waiter woken at once, a stream of
        // them could keep the large one waiting for ever).
        let small: Vec<_> = (0..4).map(|_| spawn_batch(&ingress, 1)).collect();
        settle().await;
        assert!(small.iter().all(|s| !s.is_finished()));
        assert!(
            ingress.try_push(record(99)).is_err(),
            "a note does not take room a waiter needs"
        );
        assert_eq!(ingress.queued(), 5);
        // The sequencer frees the 10: the large batch goes in first, then two small
        // ones, in the order they came; the other two wait for the next room.
        assert_eq!(drain(&ingress).len(), 5);
        settle().await;
        assert_eq!(drain(&ingress), ["b8", "b1", "b1"]);
        settle().await;
        assert_eq!(drain(&ingress), ["b1", "b1"]);
        assert_eq!(large.await.expect("task"), Ok(()));
        for s in small {
            assert_eq!(s.await.expect("task"), Ok(()));
        }
        assert_eq!(fill(&ingress), 10, "all the room is free again");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_batch_larger_than_the_queue_goes_in_alone_once_the_queue_is_empty() {
        let ingress = Arc::new(Ingress::new(4));
        ingress.try_push(record(0)).expect("room");
        let huge = spawn_batch(&ingress, 10);
        settle().await;
        assert!(!huge.is_finished(), "waits while anything is queued");
        let after = spawn_batch(&ingress, 1);
        settle().await;
        assert_eq!(drain(&ingress), ["1"]);
        settle().await;
        assert_eq!(huge.await.expect("task"), Ok(()));
        assert_eq!(ingress.queued(), 10);
        assert!(!after.is_finished(), "nothing goes in beside it");
        assert!(ingress.try_push(record(1)).is_err());
        assert_eq!(drain(&ingress), ["b10"]);
        settle().await;
        assert_eq!(after.await.expect("task"), Ok(()));
        assert_eq!(drain(&ingress), ["b1"]);
        assert_eq!(fill(&ingress), 4, "the capacity is back, no more");
    }

    #[test]
    fn a_cancelled_waiter_releases_nothing_it_did_not_take() {
        let ingress = Ingress::new(10);
        for i in 0..6 {
            ingress.try_push(record(i)).expect("room");
        }
        {
            // Waits for 8 with 4 free: the 4 are set aside for it.
            let mut waiting = pin!(ingress.push_item(Item::Batch(vec![records(8)], None), 8));
            assert!(!poll_once(waiting.as_mut()));
            assert!(ingress.try_push(record(6)).is_err());
            // Dropped here (as a `select!` that took another branch would).
        }
        assert_eq!(
            ingress.queued(),
            6,
            "nothing of the cancelled batch is queued"
        );
        assert_eq!(fill(&ingress), 4, "its 4 are free again, and no more");
        assert_eq!(drain(&ingress).len(), 10);
        assert_eq!(fill(&ingress), 10, "the whole capacity, no more");
        drain(&ingress);
        {
            // Cancelled after several rounds of partial room.
            let mut waiting = pin!(ingress.push_item(Item::Batch(vec![records(8)], None), 8));
            for i in 0..9 {
                ingress.try_push(record(i)).expect("room");
            }
            assert!(!poll_once(waiting.as_mut()), "1 of 8 free");
            drain(&ingress);
            assert!(poll_once(waiting.as_mut()), "room freed: it goes in");
        }
        assert_eq!(drain(&ingress), ["b8"], "queued before the drop: kept");
        assert_eq!(fill(&ingress), 10);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn close_wakes_waiters_with_closed() {
        let ingress = Arc::new(Ingress::new(2));
        assert_eq!(fill(&ingress), 2);
        let waiters: Vec<_> = [1, 2, 5]
            .iter()
            .map(|n| spawn_batch(&ingress, *n))
            .collect();
        settle().await;
        assert!(waiters.iter().all(|w| !w.is_finished()));
        ingress.close();
        for w in waiters {
            let outcome = tokio::time::timeout(std::time::Duration::from_secs(5), w)
                .await
                .expect("woken at once")
                .expect("task");
            assert_eq!(outcome, Err(RouterError::Closed));
        }
        assert_eq!(
            ingress.push_truncate(1).await,
            Err(RouterError::Closed),
            "a push after close is refused at once"
        );
        assert_eq!(
            ingress.try_push(record(0)).map_err(|r| r.error).err(),
            Some(RouterError::Closed)
        );
        // What was queued before the close is still taken, then the end.
        let mut items = Vec::new();
        assert!(matches!(ingress.take(&mut items), (Take::Items, 2)));
        assert!(matches!(ingress.take(&mut Vec::new()), (Take::Closed, 0)));
    }

    #[test]
    fn the_capacity_is_bounded_by_what_one_wait_can_count() {
        assert_eq!(Ingress::new(0).capacity(), 1);
        assert_eq!(Ingress::new(usize::MAX).capacity(), MAX_CAPACITY);
        assert!(MAX_CAPACITY <= u32::MAX as usize);
    }
}
