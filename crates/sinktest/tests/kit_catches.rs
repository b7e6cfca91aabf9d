//! The kit fails sinks that break its promises: one that forgets gaps (loses events
//! silently), one that forgets to flush on shutdown, one that ignores its filter.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use master_events_events::Gap;
use master_events_router::sinks::stdout::{StdoutFormat, StdoutSink};
use master_events_router::{ConfigError, Sink, SinkBatch, SinkContext, SinkFuture, SinkInput};
use master_events_sinktest::{observe_ndjson, Kit, Observed, Target};

#[derive(Default)]
struct State {
    bytes: Vec<u8>,
    stalled: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Flaw {
    ForgetsGaps,
    NeverFlushes,
    IgnoresFilter,
}

#[derive(Clone)]
struct Capture(Arc<(Mutex<State>, Condvar)>, Flaw);

impl Capture {
    fn new(flaw: Flaw) -> Capture {
        Capture(Arc::default(), flaw)
    }
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0 .0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut st = self.lock();
        while st.stalled {
            st = self.0 .1.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The stdout sink with a flaw.
struct Flawed(StdoutSink, Capture, Flaw, Vec<u8>);

impl Sink for Flawed {
    fn on_batch(&mut self, batch: &SinkBatch<'_>) {
        match self.2 {
            Flaw::NeverFlushes => self.3.extend_from_slice(&batch.bytes()),
            Flaw::IgnoresFilter => {
                let _ = self.1.write_all(&batch.unfiltered().bytes());
            }
            Flaw::ForgetsGaps => self.0.on_batch(batch),
        }
    }
    fn on_gap(&mut self, gap: &Gap) {
        if self.2 != Flaw::ForgetsGaps {
            self.0.on_gap(gap);
        }
    }
    fn flush(&mut self) {
        self.0.flush();
    }
    fn run(self: Box<Self>, input: SinkInput) -> SinkFuture {
        master_events_router::run_blocking(self, input)
    }
}

impl Target for Capture {
    fn config(&self) -> String {
        "format = \"json\"".into()
    }
    fn observed(&self) -> Vec<Observed> {
        observe_ndjson(&self.lock().bytes)
    }
    fn stall(&self) {
        self.lock().stalled = true;
    }
    fn resume(&self) {
        self.lock().stalled = false;
        self.0 .1.notify_all();
    }
    fn build(&self, _: toml::Value, _: &SinkContext) -> Option<Result<Box<dyn Sink>, ConfigError>> {
        let inner = StdoutSink::new(StdoutFormat::Json, Box::new(self.clone()));
        Some(Ok(Box::new(Flawed(
            inner,
            self.clone(),
            self.1,
            Vec::new(),
        ))))
    }
}

fn kit() -> Kit {
    let mut kit = Kit::new("stdout");
    kit.deadline = std::time::Duration::from_secs(3);
    kit
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "were neither delivered nor reported in a gap")]
async fn a_sink_that_forgets_gaps_fails_never_blocks_the_router() {
    kit()
        .never_blocks_the_router(&Capture::new(Flaw::ForgetsGaps))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "everything sequenced before shutdown delivered")]
async fn a_sink_that_never_flushes_fails_shutdown_flushes() {
    kit()
        .shutdown_flushes(&Capture::new(Flaw::NeverFlushes))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "exactly the events passing")]
async fn a_sink_that_ignores_its_filter_fails_filter_is_honoured() {
    kit()
        .filter_is_honoured(&Capture::new(Flaw::IgnoresFilter))
        .await;
}
