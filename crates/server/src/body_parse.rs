//! A long ingest body parsed in chunks, on the request's task and helper threads,
//! while it is still being read.
//!
//! Owns: cutting a body into chunks of whole lines (about [`CHUNK_BYTES`] each) as
//! its bytes come ([`BodyParse::push`]) or all at once ([`BodyParse::push_whole`]);
//! the queue of chunks that this task and the helpers (`parse_helpers`) take one at
//! a time; and putting the chunks' records back together ([`BodyParse::finish`]).
//!
//! Promises:
//! - [`BodyParse::finish`] gives what [`parse_body`] gives for the whole body: the
//!   same records (in parts, in order) or the refusal of the body's first bad line,
//!   numbered in the whole body. Nothing is published here; a request cut off while
//!   its body is read just drops the parse (a helper parsing one of its chunks
//!   finishes it and throws the records away).
//! - A chunk handed out while the body is read is parsed by a helper thread, so a
//!   request's first chunks are parsed while the rest of its body arrives. Why: a
//!   request of 1,000 lines (about 200 KB) comes in about four reads spread over
//!   ~50 µs, and a producer that sends one request at a time waits for each reply,
//!   so that time was on its critical path with the other core idle (see
//!   docs/benchmarks-history.md).
//! - This task never waits for a helper to start, only for a chunk a helper has
//!   taken to be done; a chunk no helper took is parsed by this task in
//!   [`BodyParse::finish`]. When no helper thread can be started, tokio's blocking
//!   pool stands in.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use master_events_events::Record;

use crate::ingest::{parse_body, parse_chunk, parse_lines_until, Refusal, Stop};

/// The pieces a long body is cut into (at line ends), which the threads parsing it
/// take one at a time: small enough that they finish together, large enough that
/// taking one costs nothing next to parsing it.
pub(crate) const CHUNK_BYTES: usize = 16 * 1024;

/// What one chunk came to: its records, or why it stopped.
type Parsed = (Vec<Record>, Option<Stop>);

/// The chunks handed out and what became of them, shared with the helpers.
#[derive(Default)]
struct Queue {
    /// Every chunk handed out, in order (kept after it is parsed: to number a
    /// refusal's line in the whole body, and to parse the whole body again should
    /// a chunk's parse panic).
    chunks: Vec<Bytes>,
    /// The next chunk not yet taken.
    next: usize,
    /// Chunk `i`'s result once parsed (`Err` if its parse panicked).
    done: Vec<Option<Result<Parsed, ()>>>,
    /// Chunks parsed so far.
    finished: usize,
    /// No more chunks will come.
    sealed: bool,
    /// Helper jobs asked for and not yet returned.
    helping: usize,
}

/// The queue and the signal that its last chunk is parsed.
#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Told when the last chunk of a sealed queue is parsed.
    all_done: tokio::sync::Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes and parses chunks until none is left to take. A chunk's lines are
    /// numbered from 1 here; a refusal is numbered again in [`BodyParse::finish`].
    fn work(&self, helper: bool) {
        loop {
            let (i, chunk) = {
                let mut q = self.lock();
                if q.next >= q.chunks.len() {
                    if helper {
                        q.helping -= 1;
                    }
                    return;
                }
                let i = q.next;
                q.next += 1;
                (i, q.chunks[i].clone())
            };
            let parsed =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse_chunk(&chunk)))
                    .map_err(|_| ());
            let mut q = self.lock();
            q.done[i] = Some(parsed);
            q.finished += 1;
            if q.sealed && q.finished == q.chunks.len() {
                self.all_done.notify_one();
            }
        }
    }
}

/// A body being parsed chunk by chunk (see the module docs).
pub(crate) struct BodyParse {
    shared: Arc<Shared>,
    /// Bytes pushed and not yet cut into a chunk.
    pending: BytesMut,
    /// How far `pending` is known to hold no line end past [`CHUNK_BYTES`].
    scanned: usize,
    /// Threads to parse on, this task's included.
    threads: usize,
}

impl BodyParse {
    /// A parse on up to `threads` threads, this task's included (at least 2).
    pub(crate) fn new(threads: usize) -> BodyParse {
        BodyParse {
            shared: Arc::default(),
            pending: BytesMut::new(),
            scanned: 0,
            threads: threads.max(2),
        }
    }

    /// Takes bytes of the body as they were read: the whole lines they complete, in
    /// chunks of about [`CHUNK_BYTES`], go to the helpers at once.
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
        let mut cut = Vec::new();
        while self.pending.len() > CHUNK_BYTES {
            let from = CHUNK_BYTES.max(self.scanned);
            match memchr::memchr(b'\n', &self.pending[from..]) {
                Some(i) => {
                    cut.push(self.pending.split_to(from + i + 1).freeze());
                    self.scanned = 0;
                }
                None => {
                    self.scanned = self.pending.len();
                    break;
                }
            }
        }
        if !cut.is_empty() {
            self.hand_out(cut);
            self.ask_helpers();
        }
    }

    /// Takes a whole body at once, cut into chunks without copying it; the helpers
    /// are asked in [`BodyParse::finish`].
    pub(crate) fn push_whole(&mut self, body: &Bytes) {
        let mut cut = Vec::new();
        let mut start = 0;
        let mut from = CHUNK_BYTES;
        while from < body.len() {
            match memchr::memchr(b'\n', &body[from..]) {
                Some(i) if from + i + 1 < body.len() => {
                    cut.push(body.slice(start..from + i + 1));
                    start = from + i + 1;
                    from = start + CHUNK_BYTES;
                }
                _ => break,
            }
        }
        cut.push(body.slice(start..));
        self.hand_out(cut);
    }

    /// Queues `cut` after the chunks before it.
    fn hand_out(&self, cut: Vec<Bytes>) {
        let mut q = self.shared.lock();
        for chunk in cut {
            q.chunks.push(chunk);
            q.done.push(None);
        }
    }

    /// Asks as many helpers as there are chunks waiting for one, up to one for
    /// each thread but this task's, counting those already helping.
    fn ask_helpers(&self) {
        let wanted = {
            let mut q = self.shared.lock();
            let waiting = q.chunks.len() - q.next;
            let wanted = (self.threads - 1).min(waiting).saturating_sub(q.helping);
            q.helping += wanted;
            wanted
        };
        if wanted == 0 {
            return;
        }
        let helper = Arc::clone(&self.shared);
        let job: crate::parse_helpers::Job = Arc::new(move || helper.work(true));
        for _ in crate::parse_helpers::ask(wanted, &job)..wanted {
            // No helper thread of our own could be started: tokio's blocking pool.
            let helper = Arc::clone(&self.shared);
            drop(tokio::task::spawn_blocking(move || helper.work(true)));
        }
    }

    /// Parses what is left on this task and the helpers, waits for the chunks the
    /// helpers took, and gives the records in their parts (or the first bad line's
    /// refusal), as [`parse_body`] would for the whole body.
    pub(crate) async fn finish(mut self) -> Result<Vec<Vec<Record>>, Refusal> {
        if !self.pending.is_empty() || self.shared.lock().chunks.is_empty() {
            let rest = std::mem::take(&mut self.pending).freeze();
            self.hand_out(vec![rest]);
        }
        self.shared.lock().sealed = true;
        self.ask_helpers();
        self.shared.work(false);
        let all_done = {
            let q = self.shared.lock();
            q.finished == q.chunks.len()
        };
        if !all_done {
            self.shared.all_done.notified().await;
        }
        let (done, chunks) = {
            let mut q = self.shared.lock();
            (std::mem::take(&mut q.done), std::mem::take(&mut q.chunks))
        };
        let mut parsed = Vec::with_capacity(done.len());
        for result in done {
            match result {
                Some(Ok(chunk)) => parsed.push(chunk),
                // A parse panicked: parse the whole body here, which says the same
                // (and reports the panic where it belongs).
                Some(Err(())) | None => return parse_whole(&chunks),
            }
        }
        // The first chunk that stopped holds the first bad line of the body; parse
        // it again with its lines numbered as in the whole body.
        if let Some(i) = parsed.iter().position(|(_, stop)| stop.is_some()) {
            let first_line = 1 + chunks[..i]
                .iter()
                .map(|c| memchr::memchr_iter(b'\n', c).count())
                .sum::<usize>();
            return match parse_lines_until(&chunks[i], first_line, usize::MAX) {
                (_, Some(Stop::BadLine(refusal) | Stop::TooLong(refusal))) => Err(refusal),
                // The same chunk parsed twice cannot differ; were it to, the whole
                // body's parse decides, rather than a batch missing that chunk's
                // tail.
                (_, None) => parse_whole(&chunks),
            };
        }
        Ok(parsed.into_iter().map(|(part, _)| part).collect())
    }
}

/// The whole body, `chunks` put back together, parsed on this task alone.
fn parse_whole(chunks: &[Bytes]) -> Result<Vec<Vec<Record>>, Refusal> {
    parse_body(&Bytes::from(chunks.concat())).map(|records| vec![records])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A body of `n` numbered lines of several kinds (blank lines, `\r\n` ends,
    /// lines long enough to span a chunk's end), with the lines `bad` (1-based) not
    /// events, and no line end after the last line.
    pub(crate) fn body(n: usize, bad: &[usize]) -> Bytes {
        let mut body = Vec::new();
        for i in 1..=n {
            if bad.contains(&i) {
                body.extend_from_slice(b"{\"type\":\"deleteBucket\",\"bucket\":7}");
            } else if i % 97 == 0 {
                body.extend_from_slice(b"  ");
            } else if i % 31 == 0 {
                let pad = "p".repeat(i % 3000);
                body.extend_from_slice(
                    format!("{{\"type\":\"deleteBucket\",\"bucket\":\"b{i}{pad}\"}}\r").as_bytes(),
                );
            } else {
                body.extend_from_slice(
                    format!("{{\"type\":\"deleteBucket\",\"bucket\":\"b{i}\"}}").as_bytes(),
                );
            }
            if i < n {
                body.push(b'\n');
            }
        }
        Bytes::from(body)
    }

    /// `body` pushed in pieces of the sizes `sizes` gives in turn (cycling), then
    /// finished.
    async fn pushed(
        body: &Bytes,
        sizes: &[usize],
        threads: usize,
    ) -> Result<Vec<Vec<Record>>, Refusal> {
        let mut parse = BodyParse::new(threads);
        let mut at = 0;
        for size in sizes.iter().cycle() {
            if at >= body.len() {
                break;
            }
            let end = (at + size).min(body.len());
            parse.push(&body[at..end]);
            at = end;
        }
        parse.finish().await
    }

    /// Piece sizes from `seed` (a small xorshift): 1 byte to 96 KiB.
    fn sizes(seed: u64) -> Vec<usize> {
        let mut x = seed | 1;
        (0..64)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                match x % 4 {
                    0 => 1 + (x >> 8) as usize % 16,
                    1 => 1 + (x >> 8) as usize % 4096,
                    2 => CHUNK_BYTES - 8 + (x >> 8) as usize % 16,
                    _ => 1 + (x >> 8) as usize % (96 * 1024),
                }
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_pushed_in_any_pieces_gives_the_records_and_refusals_of_one_parse() {
        let n = 6_000; // about 600 KB: some forty chunks
        let whole = body(n, &[]);
        assert!(whole.len() > 30 * CHUNK_BYTES);
        let expected = parse_body(&whole).expect("valid");
        for seed in 1..=12u64 {
            let sizes = sizes(seed);
            let threads = 2 + seed as usize % 3;
            let got = pushed(&whole, &sizes, threads)
                .await
                .unwrap_or_else(|r| panic!("seed {seed}: refused: {r:?}"));
            assert!(got.len() > 1, "seed {seed}: the body stays in parts");
            let got: Vec<Record> = got.into_iter().flatten().collect();
            assert_eq!(got, expected, "seed {seed}");
            let lines =
                |records: &[Record]| records.iter().map(Record::to_line).collect::<Vec<_>>();
            assert_eq!(lines(&got), lines(&expected), "seed {seed}");
            for bad in [vec![1], vec![n / 3], vec![n - 1], vec![n], vec![n / 2, 40]] {
                let spoilt = body(n, &bad);
                let one = parse_body(&spoilt).expect_err("a bad line");
                let got = pushed(&spoilt, &sizes, threads)
                    .await
                    .expect_err("a bad line");
                assert_eq!(got, one, "seed {seed}, lines {bad:?} bad");
                assert_eq!(got.line, Some(*bad.iter().min().unwrap_or(&0)));
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_empty_body_or_one_long_line_is_one_part() {
        assert_eq!(pushed(&Bytes::new(), &[1], 2).await, Ok(vec![Vec::new()]));
        let line = Bytes::from(format!(
            "{{\"type\":\"deleteBucket\",\"bucket\":\"{}\"}}",
            "p".repeat(5 * CHUNK_BYTES)
        ));
        for piece in [7, CHUNK_BYTES, 3 * CHUNK_BYTES] {
            let got = pushed(&line, &[piece], 2).await.expect("valid");
            assert_eq!(got.len(), 1);
            assert_eq!(got.concat(), parse_body(&line).expect("valid"));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_pushed_while_reading_are_parsed_before_the_body_ends() {
        let whole = body(3_000, &[]);
        let mut parse = BodyParse::new(2);
        let half = whole.len() / 2;
        parse.push(&whole[..half]);
        let handed = parse.shared.lock().chunks.len();
        assert!(handed >= 2, "{handed} chunks handed out from {half} bytes");
        // The helper (or the blocking pool) takes them without this task's help.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let finished = parse.shared.lock().finished;
            if finished == handed {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{finished} of {handed} parsed"
            );
            tokio::task::yield_now().await;
            std::thread::yield_now();
        }
        parse.push(&whole[half..]);
        let got: Vec<Record> = parse.finish().await.expect("valid").concat();
        assert_eq!(got, parse_body(&whole).expect("valid"));
    }
}
