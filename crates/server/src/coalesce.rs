//! An HTTP/2 connection's writes gathered into one buffer and written once a turn.
//!
//! Owns: [`coalesce`], which splits a connection's I/O into the [`Coalesced`] side
//! that `h2` reads and writes, and the [`Flusher`] side the connection's task
//! writes out with at the end of each of its turns.
//!
//! Why: `h2` copies a `DATA` frame of under 256 bytes into its write buffer, but
//! hands a larger one to the socket as it is, and must write it out before it
//! takes the next frame. An event of 256 bytes or more sent to the 200 streams of
//! a connection was 200 `writev`s, each waking the reader; at 100,000 streams one
//! such event took twice the CPU of a smaller one (100,000 `writev`s instead of
//! about 1,500), and it set the p99 of the run (docs/benchmarks-history.md, "100,000
//! streams over HTTP/2").
//!
//! Promises:
//! - Bytes are written in the order they were given, none twice, none dropped.
//! - What `h2` writes is copied into the buffer and held; `h2`'s flushes are
//!   deferred to the connection's task, which calls [`Flusher::poll_flush`] after
//!   each time it polls the connection, in the same turn: nothing waits for a
//!   later turn, and the frames of one turn go out in as few writes as the socket
//!   takes.
//! - Memory is bounded: the buffer holds at most [`BUFFER_BYTES`]; past that a
//!   write first writes the buffer out, and waits (`Pending`, woken by the socket)
//!   while the socket takes nothing. A write of [`DIRECT_BYTES`] or more, with the
//!   buffer empty, goes to the socket as it is, without a copy.
//! - The buffer is let go once written out, so an idle connection holds none.
//! - Shutting down writes out what is held first.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes held before a write has to wait for the socket.
pub(crate) const BUFFER_BYTES: usize = 64 * 1024;

/// A write at least this large, given while nothing is held, goes straight to the
/// socket (a frame's payload of an archive block, not worth a copy).
pub(crate) const DIRECT_BYTES: usize = 16 * 1024;

/// A buffer with more room than this is let go once written out.
const KEEP_BYTES: usize = 4 * 1024;

/// Splits `io` into the side `h2` uses and the side that writes out what it held.
pub(crate) fn coalesce<IO>(io: IO) -> (Coalesced<IO>, Flusher<IO>) {
    let shared = Arc::new(Mutex::new(Shared {
        io,
        held: Vec::new(),
    }));
    (
        Coalesced {
            shared: Arc::clone(&shared),
        },
        Flusher { shared },
    )
}

/// The I/O and the bytes written to it but not yet written out.
struct Shared<IO> {
    io: IO,
    held: Vec<u8>,
}

/// The side of the connection `h2` reads and writes: writes are held until the
/// connection's task flushes them with the [`Flusher`].
pub(crate) struct Coalesced<IO> {
    shared: Arc<Mutex<Shared<IO>>>,
}

/// The side the connection's task writes out with, after each time it polls the
/// connection.
pub(crate) struct Flusher<IO> {
    shared: Arc<Mutex<Shared<IO>>>,
}

/// Locks `shared`: only the connection's task uses either side, so the lock is
/// never waited for; a panic while it was held leaves the bytes as they were.
fn lock<IO>(shared: &Mutex<Shared<IO>>) -> MutexGuard<'_, Shared<IO>> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<IO: AsyncWrite + Unpin> Shared<IO> {
    /// Writes out what is held, until nothing is or the socket takes no more.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut written = 0;
        let outcome = loop {
            if written == self.held.len() {
                break Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.io).poll_write(cx, &self.held[written..]) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                Poll::Pending => break Poll::Pending,
            }
        };
        self.held.drain(..written);
        if self.held.is_empty() && self.held.capacity() > KEEP_BYTES {
            self.held = Vec::new();
        }
        outcome
    }

    /// Takes what fits of `bufs` into the buffer (writing out what is held first
    /// when it is full, or passing a large write straight through).
    fn poll_take(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        if self.held.len() + total > BUFFER_BYTES || total >= DIRECT_BYTES {
            // What is held goes first; if the socket takes only part of it, what
            // still fits is taken below.
            if let Poll::Ready(Err(e)) = self.poll_write_out(cx) {
                return Poll::Ready(Err(e));
            }
            if self.held.is_empty() && total >= DIRECT_BYTES {
                return Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
            }
        }
        let room = BUFFER_BYTES.saturating_sub(self.held.len());
        if room == 0 {
            // The socket took nothing of a full buffer: it woke no one yet, but
            // `poll_write_out` registered `cx` with it.
            return Poll::Pending;
        }
        let take = total.min(room);
        if self.held.capacity() == 0 {
            self.held
                .reserve(BUFFER_BYTES.min(take.max(KEEP_BYTES * 4)));
        }
        let mut left = take;
        for buf in bufs {
            if left == 0 {
                break;
            }
            let part = &buf[..buf.len().min(left)];
            self.held.extend_from_slice(part);
            left -= part.len();
        }
        Poll::Ready(Ok(take))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Coalesced<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut lock(&self.shared).io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Coalesced<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        lock(&self.shared).poll_take(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        lock(&self.shared).poll_take(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Deferred: the connection's task writes out with [`Flusher::poll_flush`]
    /// once it has polled the connection.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = lock(&self.shared);
        ready!(shared.poll_write_out(cx))?;
        ready!(Pin::new(&mut shared.io).poll_flush(cx))?;
        Pin::new(&mut shared.io).poll_shutdown(cx)
    }
}

impl<IO: AsyncWrite + Unpin> Flusher<IO> {
    /// Writes out everything held and flushes the I/O (a TLS session's records);
    /// `Pending` while the socket takes no more, with `cx` woken when it may.
    pub(crate) fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = lock(&self.shared);
        ready!(shared.poll_write_out(cx))?;
        Pin::new(&mut shared.io).poll_flush(cx)
    }

    /// How many bytes are held, not yet written out.
    #[cfg(test)]
    fn held(&self) -> usize {
        lock(&self.shared).held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    /// A socket that records each write call, and takes at most `room` bytes
    /// until `room` is raised (then `Pending` with the waker kept).
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        room: Option<usize>,
        flushed: usize,
        shut: bool,
    }

    impl AsyncRead for Recorder {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = match self.room {
                Some(0) => return Poll::Pending,
                Some(room) => buf.len().min(room),
                None => buf.len(),
            };
            if let Some(room) = self.room.as_mut() {
                *room -= n;
            }
            self.writes.push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushed += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut = true;
            Poll::Ready(Ok(()))
        }
    }

    fn frame(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 31 + j) as u8).collect()
    }

    fn noop() -> Context<'static> {
        Context::from_waker(std::task::Waker::noop())
    }

    #[tokio::test]
    async fn frames_written_in_a_turn_go_out_in_one_write_when_flushed() {
        let (mut io, flusher) = coalesce(Recorder::default());
        let mut expected = Vec::new();
        for i in 0..200 {
            // A frame head, then a payload over h2's copy threshold, as h2 hands
            // them: one vectored write each, then a flush.
            let head = frame(i, 9);
            let payload = frame(i + 1, 300);
            let bufs = [IoSlice::new(&head), IoSlice::new(&payload)];
            let n = io.write_vectored(&bufs).await.expect("write");
            assert_eq!(n, 309);
            io.flush().await.expect("flush");
            expected.extend_from_slice(&head);
            expected.extend_from_slice(&payload);
        }
        assert!(
            lock(&flusher.shared).io.writes.is_empty(),
            "nothing is written before the task flushes"
        );
        assert_eq!(flusher.held(), expected.len());
        assert!(flusher.poll_flush(&mut noop()).is_ready());
        let shared = lock(&flusher.shared);
        assert_eq!(
            shared.io.writes.len(),
            1,
            "the turn's frames go out in one write"
        );
        assert_eq!(shared.io.writes[0], expected);
        assert_eq!(shared.io.flushed, 1);
        assert_eq!(
            shared.held.capacity(),
            0,
            "the buffer is let go once written out"
        );
    }

    #[tokio::test]
    async fn a_full_buffer_waits_for_the_socket_and_keeps_every_byte_in_order() {
        let (mut io, flusher) = coalesce(Recorder {
            room: Some(0),
            ..Recorder::default()
        });
        let mut given = Vec::new();
        let mut cx = noop();
        let mut i = 0;
        // Fill until a write is refused: no more than the bound is held.
        loop {
            let chunk = frame(i, 1000);
            match Pin::new(&mut io).poll_write(&mut cx, &chunk) {
                Poll::Ready(Ok(n)) => given.extend_from_slice(&chunk[..n]),
                Poll::Ready(Err(e)) => panic!("write failed: {e}"),
                Poll::Pending => break,
            }
            i += 1;
            assert!(i < 1000, "writes were never refused");
        }
        assert_eq!(flusher.held(), BUFFER_BYTES);
        assert!(
            flusher.poll_flush(&mut cx).is_pending(),
            "the socket takes nothing yet"
        );
        // The socket takes a little at a time: every byte arrives once, in order.
        let mut out = Vec::new();
        while flusher.held() > 0 {
            lock(&flusher.shared).io.room = Some(7_000);
            let _ = flusher.poll_flush(&mut cx);
            out.extend(lock(&flusher.shared).io.writes.drain(..).flatten());
        }
        assert_eq!(out, given);
    }

    #[tokio::test]
    async fn a_large_write_with_nothing_held_goes_straight_to_the_socket() {
        let (mut io, flusher) = coalesce(Recorder::default());
        let big = frame(3, DIRECT_BYTES);
        io.write_all(&big).await.expect("write");
        assert_eq!(flusher.held(), 0);
        assert_eq!(lock(&flusher.shared).io.writes, vec![big.clone()]);
        // With something held, the held bytes go first, then the large write.
        io.write_all(b"small").await.expect("write");
        io.write_all(&big).await.expect("write");
        let writes = lock(&flusher.shared).io.writes.clone();
        assert_eq!(writes[1..], [b"small".to_vec(), big]);
    }

    #[tokio::test]
    async fn shutdown_writes_out_what_is_held_first() {
        let (mut io, flusher) = coalesce(Recorder::default());
        io.write_all(b"goaway frame").await.expect("write");
        io.shutdown().await.expect("shutdown");
        let shared = lock(&flusher.shared);
        assert_eq!(shared.io.writes, vec![b"goaway frame".to_vec()]);
        assert!(shared.io.shut);
    }
}
