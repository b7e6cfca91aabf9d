//! HTTP/2 streams' chunks written together: a scheduling hint for streams served
//! by hyper over HTTP/2.
//!
//! Owns: [`Batched`], a wrapper of a stream body that, once it has handed over a
//! chunk and has no other, wakes this worker thread's idle task; and that task.
//!
//! Why: hyper serves each HTTP/2 stream with a task of its own, which hands each
//! chunk to `h2` and wakes the connection's task to write it. tokio runs a task
//! woken by the running one next, on the same worker (its LIFO slot), so the
//! connection writes each stream's chunk nearly alone: at 100,000 streams over
//! 500 connections, an event cost about 35,000 `writev`s. Waking another task
//! after the chunk is handed over takes the slot from the connection's task,
//! which then waits its turn behind the streams already woken and writes their
//! chunks together: about 6,000 `writev`s an event, p99 −20% (docs/benchmarks.md,
//! "100,000 streams over HTTP/2").
//!
//! Promises: [`Batched`] yields exactly the items of the stream it wraps, in
//! order, and wakes whoever polls it exactly as that stream does; the idle task
//! does nothing when it runs. Without a tokio runtime on the thread, or before
//! the thread's idle task first ran, the hint is skipped.

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use futures_util::Stream;

/// Idle tasks a thread keeps: one that is not idle (already woken, or running
/// on another worker) cannot take the slot, so the next is tried.
const IDLE_TASKS: usize = 4;

thread_local! {
    /// Where this thread's idle tasks leave their wakers each time they run.
    static IDLE: RefCell<Vec<Arc<AtomicWaker>>> = const { RefCell::new(Vec::new()) };
}

/// Wakes one of this thread's idle tasks that is idle, starting them on first use
/// (and again if their runtime was shut down). A task woken from this thread while
/// idle takes this thread's slot, wherever it ran before.
fn wake_idle() {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        // Each task holds the other reference to its waker while its runtime runs.
        if idle.len() == IDLE_TASKS && idle.iter().all(|w| Arc::strong_count(w) > 1) {
            if let Some(waker) = idle.iter().find_map(|w| w.take()) {
                waker.wake();
            }
            return;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        idle.clear();
        for _ in 0..IDLE_TASKS {
            let waker = Arc::new(AtomicWaker::new());
            idle.push(Arc::clone(&waker));
            tokio::spawn(std::future::poll_fn(move |cx| {
                waker.register(cx.waker());
                Poll::<()>::Pending
            }));
        }
    });
}

/// A stream body whose chunks, served over HTTP/2, are written together (see the
/// module's docs).
pub struct Batched<S> {
    inner: Pin<Box<S>>,
    /// A chunk (or, before the first poll, the response's head) was handed over
    /// since the stream last had none.
    handed: bool,
}

impl<S> Batched<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Batched<S> {
        Batched {
            inner: Box::pin(inner),
            // hyper hands over the response's head just before it first polls
            // the body: that head is written with the others too.
            handed: true,
        }
    }
}

impl<S: Stream> Stream for Batched<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(_)) => self.handed = true,
            Poll::Pending if self.handed => {
                self.handed = false;
                wake_idle();
            }
            _ => {}
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batched_stream_yields_the_items_of_the_stream_it_wraps_in_order() {
        let (tx, rx) = tokio::sync::mpsc::channel::<u32>(4);
        let inner = futures_util::stream::unfold(rx, |mut rx| async move {
            let n = rx.recv().await?;
            Some((n, rx))
        });
        let mut batched = Batched::new(inner);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(n) = batched.next().await {
                got.push(n);
            }
            got
        });
        for n in 0..100 {
            tx.send(n).await.expect("the reader is there");
        }
        drop(tx);
        let got = reader.await.expect("the reader ran");
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }

    /// Three "stream" tasks each take one item from their body and hand it to a
    /// "connection" task (waking it), as hyper's HTTP/2 stream tasks do; returns
    /// how many had handed theirs over each time the connection ran.
    fn connection_runs(batched: bool) -> Vec<usize> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let handed = Arc::new(AtomicUsize::new(0));
            let conn_waker = Arc::new(AtomicWaker::new());
            let runs = Arc::new(Mutex::new(Vec::new()));
            let conn = {
                let (handed, conn_waker, runs) = (
                    Arc::clone(&handed),
                    Arc::clone(&conn_waker),
                    Arc::clone(&runs),
                );
                tokio::spawn(std::future::poll_fn(move |cx| {
                    conn_waker.register(cx.waker());
                    let n = handed.load(Ordering::SeqCst);
                    runs.lock().expect("runs").push(n);
                    if n == 3 {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                }))
            };
            // The connection has run once, and the idle tasks have started.
            let driver = {
                let (handed, conn_waker, runs) = (
                    Arc::clone(&handed),
                    Arc::clone(&conn_waker),
                    Arc::clone(&runs),
                );
                tokio::spawn(async move {
                    while runs.lock().expect("runs").is_empty() {
                        tokio::task::yield_now().await;
                    }
                    wake_idle();
                    for _ in 0..IDLE_TASKS * 2 {
                        tokio::task::yield_now().await;
                    }
                    // Spawned from the worker: they run in order once this ends.
                    for _ in 0..3 {
                        let (handed, conn_waker) = (Arc::clone(&handed), Arc::clone(&conn_waker));
                        let item = futures_util::stream::iter([1u8])
                            .chain(futures_util::stream::pending());
                        let mut body: Pin<Box<dyn Stream<Item = u8> + Send>> = if batched {
                            Box::pin(Batched::new(item))
                        } else {
                            Box::pin(item)
                        };
                        tokio::spawn(std::future::poll_fn(move |cx| loop {
                            match body.as_mut().poll_next(cx) {
                                Poll::Ready(Some(_)) => {
                                    handed.fetch_add(1, Ordering::SeqCst);
                                    conn_waker.wake();
                                }
                                Poll::Ready(None) => return Poll::Ready(()),
                                Poll::Pending => return Poll::<()>::Pending,
                            }
                        }));
                    }
                })
            };
            driver.await.expect("the driver ran");
            tokio::time::timeout(std::time::Duration::from_secs(10), conn)
                .await
                .expect("the connection took all three in time")
                .expect("the connection ran");
            let runs = runs.lock().expect("runs").clone();
            runs
        })
    }

    #[test]
    fn a_connection_woken_by_batched_streams_takes_their_chunks_together() {
        // Without the hint, tokio runs the connection right after each stream
        // that woke it (this is what the hint is for).
        assert_eq!(connection_runs(false), [0, 1, 2, 3]);
        // With it, the connection waits its turn behind the streams.
        assert_eq!(connection_runs(true), [0, 3]);
    }
}
