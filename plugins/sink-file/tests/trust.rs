//! The `file` sink never loses or corrupts silently: one server per log (a lock
//! naming its holder), a log that cannot be trusted is refused at restart (naming
//! the file and line), a torn last line is cut with a WARN, a log directory that is
//! not a directory is refused, and a failing disk is announced, held and caught up
//! with (a gap line only for what fell out of the bounded backlog).

use std::fs;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use master_events_events::catalog::DeleteBucket;
use master_events_events::{parse_line, Record, StreamLine};
use master_events_router::{load_config, start_sinks, Router, RouterConfig, Sink, SinkInput};
use master_events_sink_file::log::{file_path, FileWriter};
use master_events_sink_file::{
    warm_load, warm_start, FileConfig, FileSink, FileSinkError, FileSinkStatus, SinkHealth,
    SinkState, DEFAULT_FILE_NAME,
};
use tokio_util::sync::CancellationToken;

/// Everything logged by this test binary (tests pick their lines by temp path).
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        struct Capture;
        impl Write for Capture {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                logs()
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let _ = tracing_subscriber::fmt()
            .with_writer(|| Capture)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .try_init();
        Mutex::new(Vec::new())
    })
}

/// The log lines that mention `needle` (a temp path).
fn logged(needle: &Path) -> Vec<String> {
    let needle = needle.display().to_string();
    let bytes = logs().lock().unwrap_or_else(|e| e.into_inner()).clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_owned)
        .collect()
}

fn event(i: u64) -> Record {
    Record::new(DeleteBucket {
        bucket: format!("b{i}").into(),
    })
}

/// The wire line of an event with `seq`.
fn line(seq: u64) -> Vec<u8> {
    let mut r = event(seq);
    r.envelope.seq = Some(seq);
    let mut out = Vec::new();
    r.encode_line(&mut out);
    out
}

fn lines(seqs: impl IntoIterator<Item = u64>) -> Vec<u8> {
    seqs.into_iter().flat_map(line).collect()
}

/// Every line of a file: `Ok(seq)` for an event, `Err((from, to))` for a gap.
fn parsed(path: &Path) -> Vec<Result<u64, (u64, u64)>> {
    let text = fs::read(path).unwrap_or_default();
    text.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| match parse_line(l).expect("a valid line") {
            StreamLine::Event(r) => Ok(r.envelope.seq.expect("seq")),
            StreamLine::Gap(g) => Err((g.from_seq, g.to_seq)),
            other => panic!("unexpected line {other:?}"),
        })
        .collect()
}

/// Polls `cond` every 10 ms until it holds, failing after 20 s.
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn toml_for(dir: &Path) -> String {
    format!("[[sinks]]\ntype = \"file\"\ndir = {dir:?}\nfsync = \"never\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sink_on_the_same_log_is_refused_naming_the_lock_file_and_the_holders_pid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = load_config(&toml_for(dir.path())).expect("config");
    let router = Router::start(RouterConfig::default());
    let first = start_sinks(&router, &config).expect("the first sink starts");
    let err = start_sinks(&router, &config).expect_err("the second is refused");
    let text = err.to_string();
    let lock = dir.path().join(format!("{DEFAULT_FILE_NAME}.lock"));
    assert!(
        text.contains(&lock.display().to_string()),
        "names the lock file: {text}"
    );
    assert!(
        text.contains(&format!("pid {}", std::process::id())),
        "names the holder's pid: {text}"
    );
    // A warm load (what `serve` does before starting its sinks) is refused too.
    let warm = warm_start(&config, 100).expect_err("the log is in use");
    assert!(warm.to_string().contains("locked by pid"), "{warm}");
    router.shutdown().await;
    first.shutdown().await;
    // Once the first stops, the log is free again.
    let router = Router::start(RouterConfig::default());
    let again = start_sinks(&router, &config).expect("free after shutdown");
    router.shutdown().await;
    again.shutdown().await;
}

/// A child process group that holds a lock file (util-linux `flock`), killed on
/// drop (the whole group, so no `sleep` is left behind).
struct Holder(std::process::Child);

impl Drop for Holder {
    fn drop(&mut self) {
        if let Ok(pgid) = i32::try_from(self.0.id()) {
            // SAFETY: kill(2) on the child's own process group.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let _ = self.0.wait();
    }
}

#[test]
fn a_log_locked_by_another_process_is_refused_naming_that_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lock = dir.path().join(format!("{DEFAULT_FILE_NAME}.lock"));
    // The other server: takes the lock, then writes its pid (`exec` keeps the
    // pid: the inner shell's parent is the process holding the lock).
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg("exec flock \"$0\" sh -c 'echo $PPID > \"$0\"; exec sleep 60' \"$0\"")
        .arg(&lock)
        .process_group(0)
        .spawn();
    let child = match child {
        Ok(child) => Holder(child),
        Err(e) => {
            println!("SKIPPED a_log_locked_by_another_process_is_refused_naming_that_process: cannot run sh: {e}");
            return;
        }
    };
    let pid = child.0.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    while fs::read_to_string(&lock).unwrap_or_default().trim() != pid.to_string() {
        assert!(
            Instant::now() < deadline,
            "the other process never took the lock (is util-linux flock installed?)"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let err = FileSink::open(&FileConfig::in_dir(dir.path()), None).expect_err("refused");
    let text = err.to_string();
    assert!(text.contains(&format!("locked by pid {pid}")), "{text}");
    assert!(text.contains(&lock.display().to_string()), "{text}");
    drop(child);
    // Its lock went with it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = FileSink::open(&FileConfig::in_dir(dir.path()), None) {
        assert!(Instant::now() < deadline, "still refused: {e}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Writes the log's files: `(index, content)` (0 is the current file).
fn write_log(dir: &Path, files: &[(u32, Vec<u8>)]) {
    for (index, content) in files {
        fs::write(file_path(dir, DEFAULT_FILE_NAME, *index), content).expect("write");
    }
}

fn refusal(dir: &Path) -> (PathBuf, u64, String) {
    let err = warm_load(&FileConfig::in_dir(dir), 1000).expect_err("refused");
    let text = err.to_string();
    match err {
        FileSinkError::BadLog { path, line, .. } => (path, line, text),
        other => panic!("expected a refusal naming a line, got: {other}"),
    }
}

#[test]
fn a_restart_refuses_a_log_with_a_duplicated_seq_naming_the_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Two servers on one log: both wrote seq 4.
    let mut current = lines(4..=6);
    current.extend(line(4));
    current.extend(line(7));
    write_log(dir.path(), &[(1, lines(1..=3)), (0, current)]);
    let (path, number, text) = refusal(dir.path());
    assert_eq!(path, file_path(dir.path(), DEFAULT_FILE_NAME, 0));
    assert_eq!(number, 4);
    assert!(text.contains("line 4"), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(
        text.contains("seq 4 does not follow seq 6"),
        "says why: {text}"
    );
}

#[test]
fn a_restart_refuses_seqs_going_backwards_across_rotated_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The rotated file holds 10..=12, the current one starts again at 5.
    write_log(dir.path(), &[(1, lines(10..=12)), (0, lines(5..=8))]);
    let (path, number, text) = refusal(dir.path());
    assert_eq!(
        (path, number),
        (file_path(dir.path(), DEFAULT_FILE_NAME, 0), 1)
    );
    assert!(text.contains("seq 5 does not follow seq 12"), "{text}");
}

#[test]
fn a_restart_refuses_a_torn_line_in_the_middle_or_a_line_that_is_not_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A crash mid-write, then more lines appended after the torn one.
    let mut rotated = lines(1..=2);
    rotated.extend_from_slice(b"{\"type\":\"deleteBucket\",\"seq\":3,\"ts\":17");
    rotated.extend(line(3));
    rotated.extend(line(4));
    write_log(dir.path(), &[(1, rotated), (0, lines(5..=6))]);
    let (path, number, _) = refusal(dir.path());
    assert_eq!(
        (path, number),
        (file_path(dir.path(), DEFAULT_FILE_NAME, 1), 3)
    );

    // A torn last line of a rotated file is not the end of the log: refused too.
    let mut rotated = lines(1..=2);
    rotated.extend_from_slice(b"{\"type\":\"dele");
    write_log(dir.path(), &[(1, rotated), (0, lines(5..=6))]);
    let (path, number, text) = refusal(dir.path());
    assert_eq!(
        (path, number),
        (file_path(dir.path(), DEFAULT_FILE_NAME, 1), 3)
    );
    assert!(text.contains("torn"), "{text}");

    // Not JSON at all.
    let mut current = lines(1..=2);
    current.extend_from_slice(b"not json\n");
    current.extend(line(3));
    write_log(dir.path(), &[(0, current)]);
    fs::remove_file(file_path(dir.path(), DEFAULT_FILE_NAME, 1)).expect("rm");
    let (path, number, text) = refusal(dir.path());
    assert_eq!(
        (path, number),
        (file_path(dir.path(), DEFAULT_FILE_NAME, 0), 3)
    );
    assert!(text.contains("not a valid line"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_line_is_cut_off_with_a_warn_saying_how_many_bytes_from_which_file() {
    logs();
    let torn: &[u8] = b"{\"type\":\"deleteBucket\",\"seq\":4,\"ts\":17";
    // At warm load (serve with restore = true).
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file_path(dir.path(), DEFAULT_FILE_NAME, 0);
    let mut content = lines(1..=3);
    content.extend_from_slice(torn);
    fs::write(&path, &content).expect("write");
    let config = load_config(&toml_for(dir.path())).expect("config");
    let warm = warm_start(&config, 100).expect("loads").expect("a log");
    assert_eq!((warm.records.len(), warm.next_seq), (3, 4));
    assert_eq!(fs::read(&path).expect("read"), lines(1..=3));
    let warns = logged(&path);
    assert!(
        warns
            .iter()
            .any(|l| l.contains("WARN") && l.contains(&format!("bytes={}", torn.len()))),
        "{warns:?}"
    );

    // At sink start without a warm load (restore = false).
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file_path(dir.path(), DEFAULT_FILE_NAME, 0);
    fs::write(&path, &content).expect("write");
    let sink = FileSink::open(&FileConfig::in_dir(dir.path()), None).expect("opens");
    drop(sink);
    assert_eq!(fs::read(&path).expect("read"), lines(1..=3));
    let warns = logged(&path);
    assert!(
        warns
            .iter()
            .any(|l| l.contains("WARN") && l.contains(&format!("bytes={}", torn.len()))),
        "{warns:?}"
    );
}

#[test]
fn a_log_directory_that_is_a_regular_file_or_a_fifo_is_refused_at_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("a-file");
    fs::write(&file, b"not a directory").expect("write");
    let err = FileSink::open(&FileConfig::in_dir(&file), None).expect_err("refused");
    assert!(
        err.to_string().contains(&format!(
            "{} is a regular file, not a directory",
            file.display()
        )),
        "{err}"
    );
    assert_eq!(fs::read(&file).expect("read"), b"not a directory");

    let fifo = tmp.path().join("a-fifo");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let err = FileSink::open(&FileConfig::in_dir(&fifo), None).expect_err("refused");
    assert!(
        err.to_string()
            .contains(&format!("{} is a FIFO, not a directory", fifo.display())),
        "{err}"
    );
    let err = warm_load(&FileConfig::in_dir(&fifo), 10).expect_err("refused");
    assert!(err.to_string().contains("is a FIFO"), "{err}");
}

/// A disk that can be made full: a full write writes half its bytes (as a real
/// one may), then fails with ENOSPC.
struct Disk(Arc<AtomicBool>);

impl FileWriter for Disk {
    fn write_all(&mut self, file: &mut fs::File, bytes: &[u8]) -> io::Result<()> {
        if self.0.load(Ordering::SeqCst) {
            file.write_all(&bytes[..bytes.len() / 2])?;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        file.write_all(bytes)
    }
}

struct Running {
    router: Router,
    status: Arc<FileSinkStatus>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// A router and a file sink on `config` writing through `disk` (reporting to
/// `health`, if given).
fn run_sink(
    config: &FileConfig,
    disk: Arc<AtomicBool>,
    health: Option<Arc<SinkHealth>>,
) -> Running {
    let router = Router::start(RouterConfig::default());
    let mut sink = FileSink::open(config, Some(&router)).expect("open");
    if let Some(health) = health {
        sink = sink.with_health(health);
    }
    sink.set_writer(Box::new(Disk(disk)));
    let status = sink.status();
    let cancel = CancellationToken::new();
    let input = SinkInput::new(
        "file",
        router.subscribe(sink.start_cursor()),
        None,
        cancel.clone(),
    );
    let task = tokio::spawn(Box::new(sink).run(input));
    Running {
        router,
        status,
        cancel,
        task,
    }
}

impl Running {
    async fn publish(&self, range: std::ops::RangeInclusive<u64>) {
        for i in range {
            self.router
                .publish_batch(vec![event(i)])
                .await
                .expect("published");
        }
    }

    async fn stop(self) {
        self.router.shutdown().await;
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the sink stops")
            .expect("the sink ran");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_announced_the_events_held_and_written_with_no_gap_when_space_returns() {
    logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let full = Arc::new(AtomicBool::new(false));
    let mut config = FileConfig::in_dir(dir.path());
    config.fsync = master_events_sink_file::Fsync::Never;
    let running = run_sink(&config, Arc::clone(&full), None);
    let path = file_path(dir.path(), DEFAULT_FILE_NAME, 0);
    running.publish(1..=5).await;
    wait_for("5 events written", || {
        running.status.snapshot().events_written == 5
    })
    .await;

    full.store(true, Ordering::SeqCst);
    running.publish(6..=30).await;
    wait_for("25 events held", || {
        let s = running.status.snapshot();
        s.held_events == 25 && s.state == SinkState::Retrying
    })
    .await;
    let s = running.status.snapshot();
    assert!(s.reason.contains("No space left"), "{s:?}");
    assert!(s.write_errors >= 1);
    // The half-written lines were cut back: the log holds whole lines only.
    assert_eq!(parsed(&path), (1..=5).map(Ok).collect::<Vec<_>>());
    let warns: Vec<_> = logged(&path)
        .into_iter()
        .filter(|l| l.contains("WARN") && l.contains("cannot write its log"))
        .collect();
    assert_eq!(
        warns.len(),
        1,
        "one WARN for the change of state: {warns:?}"
    );

    full.store(false, Ordering::SeqCst);
    wait_for("recovered", || {
        let s = running.status.snapshot();
        s.state == SinkState::Ok && s.held_events == 0
    })
    .await;
    running.publish(31..=32).await;
    running.stop().await;
    assert_eq!(
        parsed(&path),
        (1..=32).map(Ok).collect::<Vec<_>>(),
        "every event once, in order, no gap"
    );
    let s = master_events_sink_file::stats();
    assert!(
        s.iter().all(|s| s.path != path),
        "a stopped sink is not listed"
    );
    let logs = logged(&path);
    assert!(
        logs.iter()
            .any(|l| l.contains("INFO") && l.contains("recovered")),
        "{logs:?}"
    );
    assert!(!logs.iter().any(|l| l.contains("ERROR")), "{logs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_outgrow_the_backlog_become_one_exact_gap_line_logged_at_error() {
    logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let full = Arc::new(AtomicBool::new(true));
    let mut config = FileConfig::in_dir(dir.path());
    config.fsync = master_events_sink_file::Fsync::Never;
    // Room for about ten lines.
    config.backlog_bytes = 10 * line(10).len() as u64;
    // Built by `start_sinks`, the sink reports to the router's view of its sinks.
    let health = Arc::new(SinkHealth::new("file", 0));
    let running = run_sink(&config, Arc::clone(&full), Some(Arc::clone(&health)));
    let path = file_path(dir.path(), DEFAULT_FILE_NAME, 0);
    running.publish(1..=40).await;
    wait_for("all 40 seen", || {
        let s = running.status.snapshot();
        s.held_events + s.events_dropped == 40
    })
    .await;
    let s = running.status.snapshot();
    assert_eq!(s.state, SinkState::Failing, "{s:?}");
    let h = health.snapshot();
    assert_eq!(h.state, SinkState::Failing, "{h:?}");
    assert!(
        h.reason
            .as_deref()
            .is_some_and(|r| r.contains("No space left") && r.contains("is full")),
        "{h:?}"
    );
    assert!(s.held_bytes <= config.backlog_bytes, "bounded: {s:?}");
    let dropped = s.events_dropped;
    assert!(dropped > 0 && s.held_events > 0, "{s:?}");

    full.store(false, Ordering::SeqCst);
    wait_for("recovered", || running.status.state() == SinkState::Ok).await;
    assert_eq!(health.state(), SinkState::Ok);
    running.stop().await;
    let mut expected = vec![Err((1, dropped))];
    expected.extend((dropped + 1..=40).map(Ok));
    assert_eq!(
        parsed(&path),
        expected,
        "a gap for exactly what was dropped"
    );
    let logs = logged(&path);
    let errors: Vec<_> = logs.iter().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors
            .iter()
            .any(|l| l.contains("sink failing") && l.contains("is full")),
        "{logs:?}"
    );
    assert!(
        errors.iter().any(
            |l| l.contains("gap line records them") && l.contains(&format!("missed={dropped}"))
        ),
        "{logs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_really_full_tmpfs_is_held_and_caught_up_with_once_space_is_freed() {
    let fs = match master_events_testpki::tmpfs::Tmpfs::mount("64k") {
        Ok(fs) => fs,
        Err(why) => {
            println!("SKIPPED a_really_full_tmpfs_is_held_and_caught_up_with_once_space_is_freed: {why} (needs root)");
            return;
        }
    };
    let dir = fs.path().join("log");
    let mut config = FileConfig::in_dir(&dir);
    config.fsync = master_events_sink_file::Fsync::Always;
    let running = run_sink(&config, Arc::new(AtomicBool::new(false)), None);
    let path = file_path(&dir, DEFAULT_FILE_NAME, 0);
    running.publish(1..=3).await;
    wait_for("3 events written", || {
        running.status.snapshot().events_written == 3
    })
    .await;
    let filler = fs.fill();
    // Publish until the sink finds the disk full (the file's last page may take
    // a few more lines first).
    let mut last = 3;
    let deadline = Instant::now() + Duration::from_secs(20);
    while running.status.state() != SinkState::Retrying {
        assert!(Instant::now() < deadline, "the disk never filled up");
        running.publish(last + 1..=last + 10).await;
        last += 10;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = running.status.snapshot();
    assert!(s.reason.contains("No space left"), "{s:?}");
    assert!(s.held_events > 0, "{s:?}");
    fs::remove_file(&filler).expect("free the space");
    wait_for("recovered", || running.status.state() == SinkState::Ok).await;
    running.stop().await;
    assert_eq!(parsed(&path), (1..=last).map(Ok).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_stopping_while_the_disk_is_full_says_which_events_are_not_in_the_log() {
    logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let full = Arc::new(AtomicBool::new(true));
    let mut config = FileConfig::in_dir(dir.path());
    config.fsync = master_events_sink_file::Fsync::Never;
    let running = run_sink(&config, Arc::clone(&full), None);
    let path = file_path(dir.path(), DEFAULT_FILE_NAME, 0);
    running.publish(1..=7).await;
    wait_for("7 events held", || {
        running.status.snapshot().held_events == 7
    })
    .await;
    // Stops after retrying for a while (the disk stays full).
    running.stop().await;
    let errors: Vec<_> = logged(&path)
        .into_iter()
        .filter(|l| l.contains("ERROR") && l.contains("could not write"))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    for field in ["held_events=7", "from_seq=1", "to_seq=7"] {
        assert!(errors[0].contains(field), "{field} in {errors:?}");
    }
}
