//! Sinks: hooks, filters, flush and shutdown, and the stdout sink's formats.

use std::io::Write;
use std::sync::Arc;

use master_events_events::catalog::BecameMaster;
use master_events_events::{EventType, Gap, Record};
use master_events_router::sinks::stdout::{StdoutFormat, StdoutSink};
use master_events_router::{
    Cursor, EventRef, Filter, Router, RouterConfig, Sink, SinkBatch, SinkInput,
};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::*;

#[derive(Default, Debug, PartialEq)]
struct Log {
    events: Vec<u64>,
    gaps: Vec<(u64, u64)>,
    batches: usize,
    flushes: usize,
    shutdowns: usize,
}

/// A sink that records what it was given.
struct Recorder(Arc<Mutex<Log>>);

impl Sink for Recorder {
    fn on_batch(&mut self, batch: &SinkBatch<'_>) {
        let mut log = self.0.lock();
        log.batches += 1;
        log.events.extend(batch.iter().map(|e| e.seq));
    }
    fn on_gap(&mut self, gap: &Gap) {
        self.0.lock().gaps.push((gap.from_seq, gap.to_seq));
    }
    fn flush(&mut self) {
        self.0.lock().flushes += 1;
    }
    fn shutdown(&mut self) {
        self.0.lock().shutdowns += 1;
    }
}

/// A sink that implements only `on_event`.
struct OnlyEvents(Arc<Mutex<Vec<u64>>>);

impl Sink for OnlyEvents {
    fn on_event(&mut self, event: &EventRef<'_>) {
        self.0.lock().push(event.seq);
    }
}

fn run<S: Sink>(
    router: &Router,
    sink: S,
    filter: Option<Filter>,
    cancel: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let input = SinkInput::new(
        "test",
        router.subscribe(Cursor::Oldest),
        filter,
        cancel.child_token(),
    );
    tokio::spawn(Box::new(sink).run(input))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_gets_filtered_events_then_flush_and_shutdown() {
    let router = Router::start(RouterConfig::default());
    let log = Arc::new(Mutex::new(Log::default()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let cancel = CancellationToken::new();
    let only_b = Filter::bucket("b");
    let recorder = run(&router, Recorder(Arc::clone(&log)), Some(only_b), &cancel);
    let plain = run(&router, OnlyEvents(Arc::clone(&seen)), None, &cancel);
    let records = (0..30u16)
        .map(|i| move_done(if i % 3 == 0 { "b" } else { "other" }, i))
        .collect();
    router.publish_batch(records).await.expect("published");
    router.shutdown().await;
    within(recorder).await.expect("sink task");
    within(plain).await.expect("sink task");
    let log = log.lock();
    assert_eq!(
        log.events,
        (1..=30).filter(|s| (s - 1) % 3 == 0).collect::<Vec<_>>()
    );
    assert!(log.flushes >= 1);
    assert_eq!(log.shutdowns, 1);
    assert_eq!(*seen.lock(), (1..=30).collect::<Vec<_>>());
}

// On a current-thread runtime too: the hooks run on a blocking thread.
#[tokio::test]
async fn a_sink_that_falls_behind_gets_a_gap_and_others_are_unaffected() {
    let router = Router::start(RouterConfig {
        archive_capacity: 8,
        ..Default::default()
    });
    // Publish before the sink starts reading: it starts behind the tail.
    let sub = router.subscribe(Cursor::After(0));
    router
        .publish_batch((0..20).map(|i| Record::new(event(i))).collect())
        .await
        .expect("published");
    let log = Arc::new(Mutex::new(Log::default()));
    let cancel = CancellationToken::new();
    let input = SinkInput::new("test", sub, None, cancel.child_token());
    let task = tokio::spawn(Box::new(Recorder(Arc::clone(&log))).run(input));
    router.shutdown().await;
    within(task).await.expect("sink task");
    let log = log.lock();
    assert_eq!(log.gaps, [(1, 12)]);
    assert_eq!(log.events, (13..=20).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_sink_delivers_what_was_sequenced_and_stops_it() {
    let router = Router::start(RouterConfig::default());
    let log = Arc::new(Mutex::new(Log::default()));
    let cancel = CancellationToken::new();
    let task = run(&router, Recorder(Arc::clone(&log)), None, &cancel);
    router
        .publish_batch((0..10).map(|i| Record::new(event(i))).collect())
        .await
        .expect("published");
    cancel.cancel();
    within(task).await.expect("sink task");
    let log = log.lock();
    assert_eq!(log.events, (1..=10).collect::<Vec<_>>());
    assert_eq!(log.shutdowns, 1);
    assert!(!router.is_shut_down(), "the router keeps running");
}

#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn stdout_output(format: StdoutFormat, filter: Option<Filter>, archive: usize) -> String {
    let router = Router::start(RouterConfig {
        node: "n_0@a".into(),
        archive_capacity: archive,
        ..Default::default()
    });
    let buf = SharedBuf::default();
    let sub = router.subscribe(Cursor::After(0));
    router
        .publish_batch(vec![
            Record::new(BecameMaster {
                node: "n_0@a".into(),
                host: "10.0.0.1:8091".into(),
            }),
            move_done("default", 43),
            move_done("other", 44),
        ])
        .await
        .expect("published");
    let sink = StdoutSink::new(format, Box::new(buf.clone()));
    let input = SinkInput::new("stdout", sub, filter, CancellationToken::new());
    router.shutdown().await;
    within(Box::new(sink).run(input)).await;
    let out = buf.0.lock().clone();
    String::from_utf8(out).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_json_writes_the_lines_as_they_are() {
    let out = stdout_output(
        StdoutFormat::Json,
        Some(Filter::types([EventType::VbucketMoveDone])),
        100,
    )
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for (line, seq) in lines.iter().zip([2, 3]) {
        let rec = Record::parse(line.as_bytes()).expect("valid");
        assert_eq!(rec.envelope.seq, Some(seq));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_line_format_is_readable() {
    let out = stdout_output(StdoutFormat::Line, Some(Filter::bucket("default")), 100).await;
    let re_time = |l: &str| {
        l.split(' ')
            .nth(1)
            .map(|t| t.len() == 15 && t.as_bytes()[2] == b':')
    };
    assert_eq!(out.lines().count(), 1, "{out}");
    let line = out.lines().next().unwrap_or_default();
    assert!(line.starts_with("#2 "), "{line}");
    assert_eq!(re_time(line), Some(true), "{line}");
    assert!(
        line.ends_with(" vbucketMoveDone bucket=default vbucket=43"),
        "{line}"
    );
    // A gap is written too.
    let out = stdout_output(StdoutFormat::Line, None, 1).await;
    assert!(
        out.starts_with("# gap: 2 events missed (seq 1 to 2): evicted from the archive\n#3 "),
        "{out}"
    );
    let out = stdout_output(StdoutFormat::Json, None, 1).await;
    assert!(
        out.starts_with("{\"type\":\"gap\",\"fromSeq\":1,\"toSeq\":2,\"missed\":2,"),
        "{out}"
    );
}

#[tokio::test]
async fn event_batch_select_is_zero_copy_for_a_run() {
    let router = Router::start(RouterConfig::default());
    let records = (0..6u16)
        .map(|i| move_done(if (2..5).contains(&i) { "b" } else { "x" }, i))
        .collect();
    router.publish_batch(records).await.expect("published");
    let mut sub = router.subscribe(Cursor::Oldest);
    let Some(master_events_router::Chunk::Events(batch)) = sub.try_recv() else {
        panic!("events");
    };
    let all = batch.bytes();
    let run = batch.select(&Filter::bucket("b"));
    let lines: Vec<&[u8]> = batch.iter().map(|e| e.line).collect();
    assert_eq!(run, lines[2..5].concat());
    // Same memory: a slice of the block.
    let offset = run.as_ptr() as usize - all.as_ptr() as usize;
    assert_eq!(offset, lines[..2].concat().len());
    let scattered = batch.select(&Filter::vbuckets([0, 5]));
    assert_eq!(scattered, [lines[0], lines[5]].concat());
    assert!(batch.select(&Filter::bucket("none")).is_empty());
}

#[tokio::test]
async fn event_batch_select_each_reports_every_selected_event_once_in_order() {
    let router = Router::start(RouterConfig::default());
    let records = (0..8u16)
        .map(|i| move_done(if i % 3 == 0 { "x" } else { "b" }, i))
        .collect();
    router.publish_batch(records).await.expect("published");
    let mut sub = router.subscribe(Cursor::Oldest);
    let Some(master_events_router::Chunk::Events(batch)) = sub.try_recv() else {
        panic!("events");
    };
    let mut seen = Vec::new();
    let out = batch.select_each(&Filter::bucket("b"), |e| seen.push(e.seq));
    assert_eq!(seen, [2, 3, 5, 6, 8]);
    let lines: Vec<&[u8]> = batch.iter().map(|e| e.line).collect();
    assert_eq!(
        out,
        [lines[1], lines[2], lines[4], lines[5], lines[7]].concat()
    );
    assert_eq!(out, batch.select(&Filter::bucket("b")));
}
