//! Test support: a waker that counts its wake-ups, for the tests of the
//! hand-written futures and streams of this crate (`repoll`, `stream`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

/// How many times the waker of [`counting`] was woken.
#[derive(Default)]
pub(crate) struct Count(AtomicUsize);

impl Count {
    /// The wake-ups so far.
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A waker and the count of its wake-ups.
pub(crate) fn counting() -> (Arc<Count>, Waker) {
    let count = Arc::new(Count::default());
    let waker = Waker::from(Arc::clone(&count));
    (count, waker)
}
