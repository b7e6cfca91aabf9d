//! Re-polling a connection that wakes itself, instead of rescheduling it.
//!
//! Owns: [`Repoll`], the wrapper every accepted connection's future runs in.
//!
//! Why: hyper's request body is a channel between the connection's dispatcher and
//! the handler, and both are polled by the same task. When the handler takes the
//! body, the channel wakes the dispatcher, that is, the task wakes itself while it
//! runs. tokio's multi-thread scheduler treats a task woken during its own poll as
//! a yield: it goes to the back of the worker's queue and a parked worker is woken
//! to help. So every ingest request woke the second worker, on the other CPU, for
//! nothing; in a VM that wake-up took CPU from the threads that were on the event's
//! path (measured with `strace -f` and `perf sched`; see docs/benchmarks-history.md).
//!
//! Promises:
//! - A wake-up that arrives on the polling thread while the future is being polled
//!   is absorbed: the future is polled again at once, in the same task poll. At
//!   most [`REPOLLS_PER_WAKE`] are absorbed per wake-up from outside (the socket,
//!   another task), and only while tokio's cooperative budget lasts; after that the
//!   wake-up is passed on to tokio, which yields the task as before. A small request
//!   (one body chunk) so runs start to finish on one worker, while a large body,
//!   whose every 8 KiB chunk wakes the task, still yields between chunks and leaves
//!   the streams their turns, as it did without the wrapper.
//! - Every other wake-up (from another task or thread) is passed on unchanged, so
//!   nothing is lost: the task's own waker is registered on every poll and woken
//!   through a `futures` `AtomicWaker`, which is safe against a wake racing a poll.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Self wake-ups absorbed per wake-up from outside: a small ingest request has one
/// or two (the body's data, then its end).
pub const REPOLLS_PER_WAKE: usize = 2;

thread_local! {
    /// The [`Shared`] being polled on this thread (null when none).
    static POLLING: Cell<*const Shared> = const { Cell::new(std::ptr::null()) };
    /// Whether the future being polled on this thread woke itself.
    static SELF_WOKEN: Cell<bool> = const { Cell::new(false) };
}

/// The waker handed to the inner future.
struct Shared {
    task: AtomicWaker,
    /// Set by a wake-up from outside the poll; taken by the next poll.
    woken_from_outside: AtomicBool,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let me: *const Shared = Arc::as_ptr(self);
        if POLLING.with(|p| p.get()) == me {
            SELF_WOKEN.with(|w| w.set(true));
        } else {
            self.woken_from_outside.store(true, Ordering::Release);
            self.task.wake();
        }
    }
}

pin_project_lite::pin_project! {
    /// A future polled again, within the same task poll, when it wakes itself.
    pub struct Repoll<F> {
        // Inline, not boxed: one allocation less per connection (idle streams are
        // counted in kilobytes).
        #[pin]
        inner: F,
        shared: Arc<Shared>,
        waker: Waker,
        // Self wake-ups that may still be absorbed before the next outside wake-up.
        repolls_left: usize,
    }
}

impl<F: Future> Repoll<F> {
    /// Wraps `inner`.
    pub fn new(inner: F) -> Repoll<F> {
        let shared = Arc::new(Shared {
            task: AtomicWaker::new(),
            woken_from_outside: AtomicBool::new(false),
        });
        let waker = Waker::from(Arc::clone(&shared));
        Repoll {
            inner,
            shared,
            waker,
            // The first poll (the task was just spawned) counts as woken from outside.
            repolls_left: REPOLLS_PER_WAKE,
        }
    }
}

/// Restores the thread's polling marks when a poll ends, even by a panic.
struct Marks {
    polling: *const Shared,
    self_woken: bool,
}

impl Drop for Marks {
    fn drop(&mut self) {
        POLLING.with(|p| p.set(self.polling));
        SELF_WOKEN.with(|w| w.set(self.self_woken));
    }
}

impl<F: Future> Future for Repoll<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        this.shared.task.register(cx.waker());
        if this.shared.woken_from_outside.swap(false, Ordering::AcqRel) {
            *this.repolls_left = REPOLLS_PER_WAKE;
        }
        let me: *const Shared = Arc::as_ptr(this.shared);
        let _marks = Marks {
            polling: POLLING.with(|p| p.replace(me)),
            self_woken: SELF_WOKEN.with(|w| w.replace(false)),
        };
        let mut inner_cx = Context::from_waker(this.waker);
        loop {
            if let Poll::Ready(out) = this.inner.as_mut().poll(&mut inner_cx) {
                return Poll::Ready(out);
            }
            if !SELF_WOKEN.with(|w| w.replace(false)) {
                return Poll::Pending;
            }
            if *this.repolls_left == 0 || !tokio::task::coop::has_budget_remaining() {
                // Hand the wake-up to tokio: the task yields and runs again later.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            *this.repolls_left -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    use crate::testwake::counting;

    /// Wakes itself on each of its first `self_wakes` polls, then is ready; counts
    /// its polls.
    struct SelfWaking {
        self_wakes: usize,
        polls: Arc<AtomicUsize>,
    }

    impl Future for SelfWaking {
        type Output = usize;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            let polls = self.polls.fetch_add(1, Ordering::SeqCst) + 1;
            if self.self_wakes == 0 {
                return Poll::Ready(polls);
            }
            self.self_wakes -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    /// Keeps the waker of its last poll and never completes.
    struct Parked(Arc<Mutex<Option<Waker>>>);

    impl Future for Parked {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if let Ok(mut slot) = self.0.lock() {
                *slot = Some(cx.waker().clone());
            }
            Poll::Pending
        }
    }

    #[test]
    fn a_future_that_wakes_itself_is_polled_again_in_the_same_poll() {
        let polls = Arc::new(AtomicUsize::new(0));
        let mut f = Repoll::new(SelfWaking {
            self_wakes: 1,
            polls: Arc::clone(&polls),
        });
        let (count, waker) = counting();
        let out = Pin::new(&mut f).poll(&mut Context::from_waker(&waker));
        assert_eq!(
            out,
            Poll::Ready(2),
            "ready on the inner future's second poll"
        );
        assert_eq!(count.get(), 0, "the task was not rescheduled");
    }

    #[test]
    fn a_future_that_keeps_waking_itself_yields_to_the_runtime() {
        let polls = Arc::new(AtomicUsize::new(0));
        let mut f = Repoll::new(SelfWaking {
            self_wakes: usize::MAX,
            polls: Arc::clone(&polls),
        });
        let (count, waker) = counting();
        let out = Pin::new(&mut f).poll(&mut Context::from_waker(&waker));
        assert_eq!(out, Poll::Pending);
        assert_eq!(polls.load(Ordering::SeqCst), REPOLLS_PER_WAKE + 1);
        assert_eq!(
            count.get(),
            1,
            "the last wake-up goes to the runtime, so the task runs again"
        );
        // Polled again for that yield, not for anything from outside: no re-poll.
        let out = Pin::new(&mut f).poll(&mut Context::from_waker(&waker));
        assert_eq!(out, Poll::Pending);
        assert_eq!(polls.load(Ordering::SeqCst), REPOLLS_PER_WAKE + 2);
        assert_eq!(count.get(), 2);
    }

    #[test]
    fn a_wake_from_outside_renews_the_repolls() {
        let slot = Arc::new(Mutex::new(None));
        let polls = Arc::new(AtomicUsize::new(0));
        // Wakes itself on every poll, and keeps its waker for the test to wake.
        struct Both(Arc<Mutex<Option<Waker>>>, Arc<AtomicUsize>);
        impl Future for Both {
            type Output = ();
            fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
                self.1.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut slot) = self.0.lock() {
                    *slot = Some(cx.waker().clone());
                }
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
        let mut f = Repoll::new(Both(Arc::clone(&slot), Arc::clone(&polls)));
        let (_count, waker) = counting();
        let _ = Pin::new(&mut f).poll(&mut Context::from_waker(&waker));
        let _ = Pin::new(&mut f).poll(&mut Context::from_waker(&waker));
        assert_eq!(polls.load(Ordering::SeqCst), REPOLLS_PER_WAKE + 2);
        let inner = slot.lock().ok().and_then(|s| s.clone());
        inner.expect("the inner future kept its waker").wake();
        let _ = Pin::new(&mut f).poll(&mut Context::from_waker(&waker));
        assert_eq!(polls.load(Ordering::SeqCst), 2 * REPOLLS_PER_WAKE + 3);
    }

    #[test]
    fn a_wake_from_another_thread_reaches_the_task_waker_of_the_last_poll() {
        let slot = Arc::new(Mutex::new(None));
        let mut f = Repoll::new(Parked(Arc::clone(&slot)));
        let (first, first_waker) = counting();
        let (second, second_waker) = counting();
        assert!(Pin::new(&mut f)
            .poll(&mut Context::from_waker(&first_waker))
            .is_pending());
        // The task moved (another waker) before the wake-up came.
        assert!(Pin::new(&mut f)
            .poll(&mut Context::from_waker(&second_waker))
            .is_pending());
        let inner = slot.lock().ok().and_then(|s| s.clone());
        let inner = inner.expect("the inner future kept its waker");
        std::thread::spawn(move || inner.wake())
            .join()
            .expect("the waking thread ran");
        assert_eq!(first.get(), 0);
        assert_eq!(second.get(), 1);
    }

    #[test]
    fn a_wake_on_the_same_thread_after_the_poll_is_not_absorbed() {
        let slot = Arc::new(Mutex::new(None));
        let mut f = Repoll::new(Parked(Arc::clone(&slot)));
        let (count, waker) = counting();
        assert!(Pin::new(&mut f)
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        let inner = slot.lock().ok().and_then(|s| s.clone());
        inner.expect("the inner future kept its waker").wake();
        assert_eq!(count.get(), 1);
    }

    #[test]
    fn nested_wrappers_each_absorb_their_own_wake_ups() {
        let polls = Arc::new(AtomicUsize::new(0));
        let inner = Repoll::new(SelfWaking {
            self_wakes: 2,
            polls: Arc::clone(&polls),
        });
        let mut outer = Repoll::new(SelfWaking2 {
            inner,
            woke_self: false,
        });
        let (count, waker) = counting();
        let out = Pin::new(&mut outer).poll(&mut Context::from_waker(&waker));
        assert_eq!(out, Poll::Ready(3));
        assert_eq!(count.get(), 0);
    }

    /// Wakes itself once, then polls `inner` to completion.
    struct SelfWaking2 {
        inner: Repoll<SelfWaking>,
        woke_self: bool,
    }

    impl Future for SelfWaking2 {
        type Output = usize;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            if !self.woke_self {
                self.woke_self = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Pin::new(&mut self.inner).poll(cx)
        }
    }
}
