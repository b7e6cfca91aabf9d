//! Waking the ring's readers when it changes.
//!
//! Owns: [`Wakeup`], the list of readers waiting for the ring to change, and each
//! reader's registration in it ([`Waiter`]).
//!
//! Promises:
//! - No lost wake-up: a reader registers ([`Wakeup::register`]) and then looks at
//!   the ring again; the writer changes the ring and then wakes
//!   ([`Wakeup::wake_all`]). Either the reader's second look sees the change, or
//!   the wake-up that follows the change wakes the task the reader registered
//!   with last.
//! - A reader is listed at most once, however often it registers between two
//!   wake-ups (a stream polled by its heartbeat timer registers each time).
//! - Bounded: a dropped reader's entry is forgotten at the next wake-up, or
//!   before the list grows, so the list holds at most about twice the live
//!   readers, however many come and go while the ring is quiet; and a dropped
//!   reader lets go of its task at once ([`Wakeup::forget`]), so an entry left
//!   in the list holds a few bytes, not the task.
//! - Readers are woken in the order they registered, so that readers that wait
//!   together (the streams of one HTTP/2 connection) are woken together, and
//!   their connection writes for them at once.
//! - The writer holds the list's lock only to take the list; it wakes outside it.
//!
//! Why not tokio's `Notify`: with 100,000 readers, each event had each reader
//! take the `Notify`'s lock about three times (to register, to see it was woken,
//! and when its wait ended), against the writer waking them 32 at a time under
//! that lock; `perf` put 8% of the server's time in it. Here a reader takes the
//! lock once an event, to be listed. Why one list and not several: readers spread
//! over 16 lists were woken list by list, so each HTTP/2 connection was woken
//! 16 times an event, and p99 at 100,000 streams went up by half
//! (docs/benchmarks.md, "100,000 streams over HTTP/2").

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Waker;

use atomic_waker::AtomicWaker;
use parking_lot::Mutex;

/// One reader's registration: the task to wake, and whether it is listed.
#[derive(Debug, Default)]
pub(crate) struct Waiter {
    waker: AtomicWaker,
    /// In the list (or in a list being woken, until its wake-up).
    queued: AtomicBool,
}

/// The readers waiting for the ring to change.
#[derive(Default)]
pub(crate) struct Wakeup {
    list: Mutex<Vec<Arc<Waiter>>>,
}

impl Wakeup {
    /// No reader waiting.
    pub(crate) fn new() -> Wakeup {
        Wakeup::default()
    }

    /// A new reader's registration.
    pub(crate) fn waiter(&self) -> Arc<Waiter> {
        Arc::new(Waiter::default())
    }

    /// Wakes `waker` at the next [`Wakeup::wake_all`]. The caller looks at the ring
    /// again afterwards (see the module's promises).
    pub(crate) fn register(&self, waiter: &Arc<Waiter>, waker: &Waker) {
        waiter.waker.register(waker);
        if waiter.queued.swap(true, Ordering::AcqRel) {
            // Listed already: the wake-up that takes it wakes the waker just
            // registered.
            return;
        }
        let mut list = self.list.lock();
        if list.len() == list.capacity() && !list.is_empty() {
            // About to grow: forget the readers dropped since the last wake-up
            // (only the list holds them), so that comings and goings in a quiet
            // ring do not grow it.
            list.retain(|w| Arc::strong_count(w) > 1);
        }
        list.push(Arc::clone(waiter));
    }

    /// A reader is gone: its entry, if listed, stays until the next wake-up (or
    /// until the list grows), but no longer holds the task it last registered
    /// (a waker keeps its task's memory alive, and a finished connection's task
    /// can be large).
    pub(crate) fn forget(&self, waiter: &Waiter) {
        drop(waiter.waker.take());
    }

    /// Wakes every registered reader (after the ring changed), in the order they
    /// registered.
    pub(crate) fn wake_all(&self) {
        let mut taken = {
            let mut list = self.list.lock();
            if list.is_empty() {
                return;
            }
            std::mem::take(&mut *list)
        };
        for waiter in taken.drain(..) {
            waiter.queued.store(false, Ordering::Release);
            waiter.waker.wake();
        }
        // Give the list its room back, unless readers registered meanwhile.
        let mut list = self.list.lock();
        if list.is_empty() && list.capacity() < taken.capacity() {
            *list = taken;
        }
    }

    /// How many entries the list holds (live and dropped readers).
    #[cfg(test)]
    pub(crate) fn listed(&self) -> usize {
        self.list.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::task::Wake;

    use super::*;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicU64);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counted() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count::default());
        (Arc::clone(&count), Waker::from(count))
    }

    #[test]
    fn a_reader_registered_many_times_is_listed_and_woken_once() {
        let wakeup = Wakeup::new();
        let waiter = wakeup.waiter();
        let (count, waker) = counted();
        for _ in 0..100 {
            wakeup.register(&waiter, &waker);
        }
        assert_eq!(wakeup.listed(), 1);
        wakeup.wake_all();
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert_eq!(wakeup.listed(), 0);
        wakeup.wake_all();
        assert_eq!(count.0.load(Ordering::Relaxed), 1, "not listed any more");
        // Registered again after its wake-up: listed again.
        wakeup.register(&waiter, &waker);
        wakeup.wake_all();
        assert_eq!(count.0.load(Ordering::Relaxed), 2);
    }

    /// A waker that notes its name in a shared log when woken.
    struct Named(usize, Arc<Mutex<Vec<usize>>>);

    impl Wake for Named {
        fn wake(self: Arc<Self>) {
            self.1.lock().push(self.0);
        }
    }

    #[test]
    fn readers_are_woken_in_the_order_they_registered() {
        let wakeup = Wakeup::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let waiters: Vec<Arc<Waiter>> = (0..5).map(|_| wakeup.waiter()).collect();
        for i in [3, 0, 4, 1, 2] {
            let waker = Waker::from(Arc::new(Named(i, Arc::clone(&log))));
            wakeup.register(&waiters[i], &waker);
        }
        wakeup.wake_all();
        assert_eq!(*log.lock(), vec![3, 0, 4, 1, 2]);
    }

    #[test]
    fn the_task_registered_last_is_the_one_woken() {
        let wakeup = Wakeup::new();
        let waiter = wakeup.waiter();
        let (first, first_waker) = counted();
        let (second, second_waker) = counted();
        wakeup.register(&waiter, &first_waker);
        wakeup.register(&waiter, &second_waker);
        wakeup.wake_all();
        assert_eq!(first.0.load(Ordering::Relaxed), 0);
        assert_eq!(second.0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_forgotten_reader_no_longer_holds_its_task() {
        let wakeup = Wakeup::new();
        let waiter = wakeup.waiter();
        let (count, waker) = counted();
        wakeup.register(&waiter, &waker);
        drop(waker);
        assert_eq!(
            Arc::strong_count(&count),
            2,
            "the registration holds the task"
        );
        wakeup.forget(&waiter);
        assert_eq!(Arc::strong_count(&count), 1, "forgotten, it does not");
        wakeup.wake_all();
        assert_eq!(count.0.load(Ordering::Relaxed), 0, "and it is not woken");
    }

    #[test]
    fn readers_that_come_and_go_in_a_quiet_ring_do_not_grow_the_lists() {
        let wakeup = Wakeup::new();
        let (_, waker) = counted();
        let live: Vec<Arc<Waiter>> = (0..50).map(|_| wakeup.waiter()).collect();
        for w in &live {
            wakeup.register(w, &waker);
        }
        for _ in 0..100_000 {
            let gone = wakeup.waiter();
            wakeup.register(&gone, &waker);
        }
        // The list holds at most about twice its live readers (and a few).
        let bound = 2 * live.len() + 8;
        assert!(
            wakeup.listed() <= bound,
            "{} listed, bound {bound}",
            wakeup.listed()
        );
    }
}
