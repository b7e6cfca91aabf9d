//! Helpers shared by the process-level tests: child processes killed on drop (with
//! their first `listening on` line read), free ports, a minimal HTTP/1.1 client,
//! waiting for a condition with a deadline, and a JetStream `nats-server` with a
//! reader of its stream.
#![allow(dead_code)]

pub mod handoff;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Sends SIGCONT to a paused process when dropped (before its `Proc` kills it), so
/// a failing test never leaves a frozen server behind.
pub struct Paused(i32);

impl Paused {
    /// Sends SIGSTOP to `p`.
    pub fn pause(p: &Proc) -> Paused {
        let pid = p.child.id() as i32;
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(pid, libc::SIGSTOP) };
        assert_eq!(rc, 0, "SIGSTOP");
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid (not yet reaped: its Proc lives on).
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// A child process killed on drop, whatever happens in the test.
pub struct Proc {
    pub child: Child,
    /// Its standard output, when piped and not handed to a draining thread.
    pub stdout: Option<BufReader<ChildStdout>>,
    /// Its standard error (the last [`STDERR_KEPT`] bytes, when [`spawn`] started
    /// it; all of it from [`run_logged`]): what a test that fails on it shows.
    pub stderr: Option<Arc<Mutex<String>>>,
}

/// How much of a child's standard error [`spawn`] keeps (the end of it).
pub const STDERR_KEPT: usize = 16 * 1024;

impl Proc {
    /// The end of its standard error, as text (empty when it is not kept).
    pub fn stderr_tail(&self) -> String {
        self.stderr
            .as_ref()
            .map(|log| log.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Wraps a child whose output the test does not read.
    pub fn new(child: Child) -> Proc {
        Proc {
            child,
            stdout: None,
            stderr: None,
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0);
    }

    /// The exit code, if the process exits within `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Starts `master-events` with `args`, its standard output piped.
pub fn spawn(args: &[&str]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_master-events"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("MASTER_EVENTS_USERS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().map(BufReader::new);
    // Drained for good (a full pipe would stall the child), its end kept.
    let stderr = child.stderr.take().map(|err| collect(err, STDERR_KEPT));
    Proc {
        child,
        stdout,
        stderr,
    }
}

/// Reads the first stdout line (with a deadline), `listening on http://ADDR`, and
/// returns the base URL.
pub fn listening_url(p: &mut Proc) -> String {
    let mut stdout = p.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let _ = tx.send((line, stdout));
    });
    let (line, stdout) = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no first line in 30 s; stderr:\n{}", p.stderr_tail()));
    p.stdout = Some(stdout);
    let Some(url) = line.trim().strip_prefix("listening on ") else {
        // It exited, most likely: give its last words a moment to arrive.
        let _ = p.wait_exit(Duration::from_secs(2));
        panic!(
            "first line is {line:?}; exit status {:?}; stderr:\n{}",
            p.child.try_wait().ok().flatten(),
            p.stderr_tail()
        );
    };
    assert!(
        url.starts_with("http://") || url.starts_with("https://"),
        "{line}"
    );
    url.to_owned()
}

/// `host:port` of a base URL.
pub fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

/// Starts `master-events` with `args`, waits for its `listening on` line, then
/// keeps draining its output so it never blocks on a full pipe.
pub fn start_binary(args: &[String]) -> Proc {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut p = spawn(&args);
    listening_url(&mut p);
    if let Some(mut out) = p.stdout.take() {
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink);
        });
    }
    p
}

/// A loopback port free now, below the ephemeral range, never handed out before by
/// this test process (see `master_events_testpki::ports`).
pub fn free_port() -> u16 {
    master_events_testpki::ports::free_port()
}

/// [`http_to`] a loopback port.
pub fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    http_to(&format!("127.0.0.1:{port}"), method, path, body)
}

/// A minimal HTTP/1.1 exchange with `Connection: close` to `host:port`; returns
/// (status, body, de-chunked when it was chunked), status 0 when the server
/// cannot be reached.
pub fn http_to(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    http_with(addr, method, path, &[], body)
}

/// [`http_to`] with extra request headers.
pub fn http_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-ndjson\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw.get(split + 4..).unwrap_or_default();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_vec()
    };
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Decodes a chunked body.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&body[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || body.len() < eol + 2 + size {
            return out;
        }
        out.extend_from_slice(&body[eol + 2..eol + 2 + size]);
        body = &body[(eol + 4 + size).min(body.len())..];
    }
}

/// Polls `f` every 50 ms until it holds; panics after `within`.
pub fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// A `master-events` child whose standard error (the log, at the default level) is
/// collected.
pub struct Logged {
    /// The child.
    pub proc: Proc,
    /// Its standard error so far.
    pub log: Arc<Mutex<String>>,
}

impl Logged {
    /// The log so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// Reads `from` to its end on a thread of its own, keeping the last `keep` bytes
/// of what it read (cut at a character boundary) in the string returned.
fn collect(mut from: impl Read + Send + 'static, keep: usize) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    let into = Arc::clone(&log);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            let mut l = into.lock().unwrap_or_else(|e| e.into_inner());
            l.push_str(&String::from_utf8_lossy(&buf[..n]));
            if l.len() > keep {
                let mut cut = l.len() - keep;
                while !l.is_char_boundary(cut) {
                    cut += 1;
                }
                l.drain(..cut);
            }
        }
    });
    log
}

/// Starts `master-events ARGS` with the default log level; with `serving`, waits
/// for its `listening on` line.
pub fn run_logged(args: &[String], serving: bool) -> Logged {
    let mut child = Command::new(env!("CARGO_BIN_EXE_master-events"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("MASTER_EVENTS_USERS")
        .env_remove("MASTER_EVENTS_AUTH")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().expect("stderr");
    let log = collect(stderr, usize::MAX);
    let stdout = child.stdout.take().map(BufReader::new);
    let mut proc = Proc {
        child,
        stdout,
        stderr: Some(Arc::clone(&log)),
    };
    if serving {
        listening_url(&mut proc);
        if let Some(out) = proc.stdout.take() {
            collect(out, 0);
        }
    }
    Logged { proc, log }
}

/// Starts a single-member etcd (Debian's `etcd-server`, or `ETCD_BIN`) on free
/// loopback ports with its data in `dir`, fast elections; waits until it answers.
/// Killed on drop.
pub fn start_etcd(dir: &std::path::Path) -> (Proc, u16) {
    let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into());
    let client = free_port();
    let peer = free_port();
    let child = Command::new(&bin)
        .args([
            "--name",
            "test",
            "--data-dir",
            &dir.join("etcd").display().to_string(),
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client}"),
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{client}"),
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-cluster",
            &format!("test=http://127.0.0.1:{peer}"),
            "--heartbeat-interval=50",
            "--election-timeout=500",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {bin} ({e}): install Debian's etcd-server (scripts/test.sh does)")
        });
    let etcd = Proc::new(child);
    wait_until("etcd to answer", Duration::from_secs(20), || {
        http(client, "GET", "/health", "").1.contains("true")
    });
    (etcd, client)
}

/// POSTs `body` (NDJSON) to `addr` as one ingest request, waiting up to 20 s for the
/// reply; the `[first, last]` seqs of an acknowledged (`200`) request, `None` for
/// any other outcome (a refusal, the server gone).
pub fn post_acknowledged(addr: &str, body: &str) -> Option<(u64, u64)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let req = format!(
        "POST /diag/masterEvents HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    if !reply.starts_with("HTTP/1.1 200") {
        return None;
    }
    let body = reply.split("\r\n\r\n").nth(1)?;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let seqs = v["seqs"].as_array()?;
    Some((seqs.first()?.as_u64()?, seqs.get(1)?.as_u64()?))
}

/// A `nats-server` with JetStream (file storage in a temp dir), killed on drop.
pub struct NatsServer {
    child: Child,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `nats-server -js` on a free loopback port, storing under `dir/js`; waits
/// (up to 20 s) until it listens. Needs `nats-server` (scripts/deps.sh installs it).
pub fn nats_server(dir: &Path) -> NatsServer {
    nats_server_with(dir, &[])
}

/// [`nats_server`] with more of nats-server's flags (e.g. `--auth TOKEN`).
pub fn nats_server_with(dir: &Path, extra: &[&str]) -> NatsServer {
    let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nats-server"));
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let child = Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.join("js"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("nats-server.log")).expect("a log file"))
        .spawn()
        .expect("nats-server starts (scripts/deps.sh installs it)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nats-server did not listen; it said: {}",
            std::fs::read_to_string(dir.join("nats-server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    NatsServer {
        child,
        url: format!("nats://127.0.0.1:{port}"),
    }
}

/// Every message of the JetStream stream `stream` at `url`: (its `Master-Events-Seq`,
/// `Nats-Msg-Id` and `Master-Events-History` headers); empty while there is no
/// such stream.
pub fn stream_messages(url: &str, stream: &str) -> Vec<(u64, String, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let client = async_nats::connect(url).await.expect("connect to nats");
        let js = async_nats::jetstream::new(client);
        let Ok(mut stream) = js.get_stream(stream).await else {
            return Vec::new();
        };
        let info = stream.info().await.expect("stream info").clone();
        let mut out = Vec::new();
        for seq in info.state.first_sequence.max(1)..=info.state.last_sequence {
            let m = stream.get_raw_message(seq).await.expect("a message");
            let h = |n: &str| {
                m.headers
                    .get(n)
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default()
            };
            out.push((
                h("Master-Events-Seq").parse().unwrap_or(0),
                h("Nats-Msg-Id"),
                h("Master-Events-History"),
            ));
        }
        out
    })
}

/// Waits (up to 60 s) until the stream `stream` at `url` holds seq `last`; its
/// messages then ([`stream_messages`]). `what` names the run in the failure.
pub fn wait_for_stream_seq(
    url: &str,
    stream: &str,
    last: u64,
    what: &str,
) -> Vec<(u64, String, String)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = stream_messages(url, stream);
        if m.last().is_some_and(|l| l.0 >= last) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "the stream holds up to seq {:?}, not {last} ({what})",
            m.last().map(|l| l.0)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `master-events ARGS` to its end, with its output captured; kills it and
/// fails the test after 60 s.
pub fn run_bounded(args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_master-events"));
    command.args(args);
    output_bounded(command, &format!("{args:?}"))
}

/// Runs `command` to its end with its output captured (stdin closed); kills it and
/// fails the test, naming it `what`, after 60 s.
pub fn output_bounded(mut command: Command, what: &str) -> std::process::Output {
    const LIMIT: Duration = Duration::from_secs(60);
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the master-events binary runs");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(LIMIT) {
        Ok(out) => out.expect("the binary finishes"),
        Err(_) => {
            // Still unreaped (its waiter blocks on it), so the pid is still ours.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("{what} did not finish within {LIMIT:?}");
        }
    }
}
