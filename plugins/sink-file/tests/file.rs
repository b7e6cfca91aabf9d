//! The `file` sink: exact lines and gap lines, rotation, fsync policy configuration,
//! warm load (rotated files, torn last line) and a restart that neither loses nor
//! repeats what the log has.

use std::fs;
use std::path::Path;

use master_events_events::catalog::DeleteBucket;
use master_events_events::{parse_line, Record, StreamLine};
use master_events_router::{
    load_config, start_sinks, Chunk, Cursor, Router, RouterConfig, Sink, SinkInput,
};
use master_events_sink_file::log::file_path;
use master_events_sink_file::{
    warm_load, warm_start, FileConfig, FileSink, Fsync, DEFAULT_FILE_NAME,
};
use tokio_util::sync::CancellationToken;

fn event(i: u64) -> Record {
    Record::new(DeleteBucket {
        bucket: format!("b{i}").into(),
    })
}

/// `(seq, is_gap)` of every line of a file, in order (a gap gives its `toSeq`).
fn lines_of(path: &Path) -> Vec<(u64, bool)> {
    let text = fs::read(path).unwrap_or_default();
    text.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| match parse_line(l).expect("a valid line") {
            StreamLine::Event(r) => (r.envelope.seq.expect("seq"), false),
            StreamLine::Gap(g) => (g.to_seq, true),
            StreamLine::Heartbeat(h) => (h.seq, false),
            StreamLine::Reset(r) => (r.last_seq, true),
        })
        .collect()
}

fn event_seqs(path: &Path) -> Vec<u64> {
    lines_of(path)
        .into_iter()
        .filter(|(_, gap)| !gap)
        .map(|(s, _)| s)
        .collect()
}

fn toml_for(dir: &Path, extra: &str) -> String {
    format!("[[sinks]]\ntype = \"file\"\ndir = {dir:?}\n{extra}\n")
}

/// Runs a router with the configured sinks: publishes `n` events, stops.
async fn run_once(text: &str, n: u64) -> Vec<u8> {
    let config = load_config(text).expect("config");
    let router = Router::start(RouterConfig::default());
    let sinks = start_sinks(&router, &config).expect("sinks");
    router
        .publish_batch((0..n).map(event).collect())
        .await
        .expect("published");
    let archive = archive_bytes(&router);
    router.shutdown().await;
    sinks.shutdown().await;
    archive
}

fn archive_bytes(router: &Router) -> Vec<u8> {
    let mut sub = router.subscribe(Cursor::Oldest);
    let mut out = Vec::new();
    while let Some(chunk) = sub.try_recv() {
        if let Chunk::Events(b) = chunk {
            out.extend_from_slice(&b.bytes());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_holds_the_exact_wire_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = run_once(&toml_for(dir.path(), "fsync = \"always\""), 20).await;
    let log = fs::read(dir.path().join(DEFAULT_FILE_NAME)).expect("log");
    assert_eq!(log, archive);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_fell_behind_writes_a_gap_line_saying_what_it_missed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let router = Router::start(RouterConfig {
        archive_capacity: 8,
        ..Default::default()
    });
    router
        .publish_batch((0..50).map(event).collect())
        .await
        .expect("published");
    // A reader that wanted everything from seq 1 finds only 43..=50 retained.
    let sink = FileSink::open(&FileConfig::in_dir(dir.path()), None).expect("open");
    let cancel = CancellationToken::new();
    let input = SinkInput::new(
        "file",
        router.subscribe(Cursor::After(0)),
        None,
        cancel.clone(),
    );
    let task = tokio::spawn(Box::new(sink).run(input));
    router.shutdown().await;
    cancel.cancel();
    task.await.expect("sink ran");
    let lines = lines_of(&dir.path().join(DEFAULT_FILE_NAME));
    let mut expected = vec![(42, true)];
    expected.extend((43..=50).map(|s| (s, false)));
    assert_eq!(lines, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_k_files_of_at_most_max_bytes_holding_the_latest_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_once(
        &toml_for(dir.path(), "max_bytes = 2048\nkeep = 2\nfsync = \"never\""),
        200,
    )
    .await;
    let name = DEFAULT_FILE_NAME;
    let mut all = Vec::new();
    for i in [2, 1, 0] {
        let path = file_path(dir.path(), name, i);
        let len = fs::metadata(&path).expect("exists").len();
        assert!(len <= 2048, "{} has {len} bytes", path.display());
        all.extend(event_seqs(&path));
    }
    assert!(
        !file_path(dir.path(), name, 3).exists(),
        "only 2 rotated files"
    );
    let last = *all.last().expect("events");
    assert_eq!(last, 200);
    let first = all[0];
    assert_eq!(
        all,
        (first..=200).collect::<Vec<_>>(),
        "contiguous, in order"
    );
}

#[test]
fn fsync_is_always_never_or_every_ms_and_a_bad_value_says_what_is_expected() {
    let parse = |v: &str| {
        toml::from_str::<FileConfig>(&format!("dir = \"/tmp\"\nfsync = {v}"))
            .map(|c| c.fsync)
            .map_err(|e| e.to_string())
    };
    assert_eq!(parse("\"always\""), Ok(Fsync::Always));
    assert_eq!(parse("\"never\""), Ok(Fsync::Never));
    assert_eq!(parse("{ every_ms = 200 }"), Ok(Fsync::EveryMs(200)));
    let default: FileConfig = toml::from_str("dir = \"/tmp\"").expect("defaults");
    assert_eq!(default.fsync, Fsync::EveryMs(1000));
    let err = parse("\"sometimes\"").expect_err("refused");
    assert!(
        err.contains("\"always\", \"never\" or { every_ms = N }"),
        "{err}"
    );
    let err = parse("{ every = 5 }").expect_err("refused");
    assert!(err.contains("every"), "{err}");
    assert!(parse("{ every_ms = 0 }").is_err());
}

#[test]
fn a_file_name_with_a_path_or_a_tiny_max_bytes_is_refused_at_load() {
    let err = load_config("[[sinks]]\ntype = \"file\"\ndir = \"/tmp\"\nfile_name = \"../x\"\n")
        .expect_err("refused");
    assert!(err.to_string().contains("file_name"), "{err}");
    let err = load_config("[[sinks]]\ntype = \"file\"\ndir = \"/tmp\"\nmax_bytes = 10\n")
        .expect_err("refused");
    assert!(err.to_string().contains("max_bytes"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_load_reads_rotated_files_oldest_first_and_cuts_a_torn_last_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_once(
        &toml_for(dir.path(), "max_bytes = 2048\nkeep = 3\nfsync = \"never\""),
        100,
    )
    .await;
    let current = dir.path().join(DEFAULT_FILE_NAME);
    let clean = fs::read(&current).expect("log");
    // A crash in the middle of a write leaves a torn line.
    let mut torn = clean.clone();
    torn.extend_from_slice(b"{\"type\":\"deleteBucket\",\"seq\":101,\"ts\":17");
    fs::write(&current, &torn).expect("write");

    let mut config = FileConfig::in_dir(dir.path());
    config.keep = 3;
    let warm = warm_load(&config, 30).expect("loads");
    assert_eq!(warm.next_seq, 101);
    assert_eq!(warm.torn_bytes, (torn.len() - clean.len()) as u64);
    let seqs: Vec<u64> = warm.records.iter().filter_map(|r| r.envelope.seq).collect();
    assert_eq!(seqs, (71..=100).collect::<Vec<_>>());
    assert_eq!(
        fs::read(&current).expect("log"),
        clean,
        "the torn line is cut"
    );

    // With a capacity larger than what is kept, all the kept files are read.
    let warm = warm_load(&config, 100_000).expect("loads");
    assert_eq!(warm.torn_bytes, 0);
    let first = warm.records[0].envelope.seq.expect("seq");
    assert!(first > 1, "old files were dropped by rotation");
    let seqs: Vec<u64> = warm.records.iter().filter_map(|r| r.envelope.seq).collect();
    assert_eq!(seqs, (first..=100).collect::<Vec<_>>());
}

#[test]
fn warm_load_stops_at_a_gap_and_continues_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = Vec::new();
    for seq in 1..=3 {
        let mut r = event(seq);
        r.envelope.seq = Some(seq);
        r.encode_line(&mut text);
    }
    master_events_events::Gap::new(4, 9, "evicted from the archive").encode_line(&mut text);
    for seq in 10..=12 {
        let mut r = event(seq);
        r.envelope.seq = Some(seq);
        r.encode_line(&mut text);
    }
    fs::write(dir.path().join(DEFAULT_FILE_NAME), &text).expect("write");
    let warm = warm_load(&FileConfig::in_dir(dir.path()), 100).expect("loads");
    let seqs: Vec<u64> = warm.records.iter().filter_map(|r| r.envelope.seq).collect();
    assert_eq!(seqs, vec![10, 11, 12]);
    assert_eq!(warm.next_seq, 13);

    // A log that ends with a gap continues after the gap.
    master_events_events::Gap::new(13, 20, "evicted from the archive").encode_line(&mut text);
    fs::write(dir.path().join(DEFAULT_FILE_NAME), &text).expect("write");
    let warm = warm_load(&FileConfig::in_dir(dir.path()), 100).expect("loads");
    assert!(warm.records.is_empty());
    assert_eq!(warm.next_seq, 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_restores_the_archive_continues_the_seq_and_does_not_append_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = toml_for(dir.path(), "fsync = \"always\"");
    let before = run_once(&text, 50).await;

    // Restart: warm load, then the same sinks.
    let config = load_config(&text).expect("config");
    let warm = warm_start(&config, 4096)
        .expect("loads")
        .expect("a file sink");
    assert_eq!(warm.next_seq, 51);
    let router = Router::start_with_archive(
        RouterConfig {
            start_seq: warm.next_seq,
            ..Default::default()
        },
        warm.records,
    )
    .await
    .expect("router");
    assert_eq!(archive_bytes(&router), before, "?o=1 returns what it did");
    let sinks = start_sinks(&router, &config).expect("sinks");
    let range = router
        .publish_batch((50..60).map(event).collect())
        .await
        .expect("published");
    assert_eq!(range, 51..=60);
    router.shutdown().await;
    sinks.shutdown().await;
    assert_eq!(
        event_seqs(&dir.path().join(DEFAULT_FILE_NAME)),
        (1..=60).collect::<Vec<_>>(),
        "each event once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_or_unrestored_log_is_not_warm_loaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let filtered = format!(
        "{}filter = {{ type = [\"deleteBucket\"] }}\n",
        toml_for(dir.path(), "")
    );
    run_once(&filtered, 5).await;
    let config = load_config(&filtered).expect("config");
    assert!(warm_start(&config, 10).expect("ok").is_none());
    let config = load_config(&toml_for(dir.path(), "restore = false")).expect("config");
    assert!(warm_start(&config, 10).expect("ok").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_from_another_run_is_appended_to_not_skipped() {
    // The router did not start from this log (no warm load): its events are new,
    // even though their seqs are below the log's last one.
    let dir = tempfile::tempdir().expect("tempdir");
    let text = toml_for(dir.path(), "restore = false");
    run_once(&text, 5).await;
    run_once(&text, 3).await;
    assert_eq!(
        event_seqs(&dir.path().join(DEFAULT_FILE_NAME)),
        vec![1, 2, 3, 4, 5, 1, 2, 3]
    );
    // A reset line marks where the second run's seqs start over, so the log can
    // still be trusted: a warm load restores the second run.
    let text = fs::read(dir.path().join(DEFAULT_FILE_NAME)).expect("log");
    let resets: Vec<(usize, u64, u64)> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
        .filter_map(|(i, l)| match parse_line(l) {
            Ok(StreamLine::Reset(r)) => Some((i, r.requested_since, r.oldest_seq)),
            _ => None,
        })
        .collect();
    assert_eq!(
        resets,
        vec![(5, 5, 1)],
        "after line 5: the log had 5, 1 comes next"
    );
    let warm = warm_load(&FileConfig::in_dir(dir.path()), 100).expect("trusted");
    let seqs: Vec<u64> = warm.records.iter().filter_map(|r| r.envelope.seq).collect();
    assert_eq!((seqs, warm.next_seq), (vec![1, 2, 3], 4));
}
