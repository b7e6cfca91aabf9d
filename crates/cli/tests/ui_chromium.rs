//! The live page (`GET /ui`) in a real browser: headless Chromium opens it on a
//! `demo` server and the test reads the page's counters while the simulated
//! rebalance streams in, changes a filter, and takes a screenshot; and on a server
//! with tokens, a scoped token held as Basic credentials sees its bucket only.
//!
//! Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
//! commands on fd 3, answers on fd 4, each message a JSON text ended by NUL), not
//! with `--dump-dom` / `--screenshot`: those wait for the page to go idle (or
//! `--virtual-time-budget` to run out), which a page holding a Server-Sent Events
//! stream open never does, so they either hang or capture the page before any event
//! arrived. Over the protocol the test waits for what it wants to see, with a
//! deadline.
//!
//! Chromium must be installed (`scripts/test.sh` installs Debian's `chromium`): when
//! it is missing this test fails and says so. `MASTER_EVENTS_CHROMIUM` names another
//! binary; `MASTER_EVENTS_UI_SCREENSHOT=FILE` also copies the screenshot to FILE.
#![cfg(target_os = "linux")]

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// How long the page gets to show the whole simulated rebalance.
const PAGE_DEADLINE: Duration = Duration::from_secs(90);

/// How long one DevTools command may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(30);

/// A child process killed (and reaped) on drop, whatever happens in the test.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `master-events demo` and returns it with its base URL.
fn start_demo(args: &[&str]) -> (Proc, String) {
    let mut all = vec!["demo"];
    all.extend_from_slice(args);
    start_master_events(&all)
}

/// Starts `master-events ARGS` (a command that serves) and returns it with its base
/// URL.
fn start_master_events(args: &[&str]) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_master-events"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("MASTER_EVENTS_USERS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the master-events binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let proc = Proc { child };
    let url = first_line_url(stdout);
    (proc, url)
}

/// Reads `listening on http://ADDR` from the first stdout line, with a deadline; the
/// rest of stdout is drained by a thread so the child never blocks on it.
fn first_line_url(stdout: ChildStdout) -> String {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = BufReader::new(stdout);
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        let _ = tx.send(line);
        let _ = std::io::copy(&mut out, &mut std::io::sink());
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server prints its address within 30 s");
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("the first line is {line:?}"))
        .to_owned()
}

/// The Chromium binary: `MASTER_EVENTS_CHROMIUM`, or `chromium` / `chromium-browser`
/// on the PATH. Fails the test, saying how to install it, when there is none.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("MASTER_EVENTS_CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "chromium is not installed, and this test needs it to check the live page: \
         install it (`apt-get install chromium`, as scripts/test.sh does) or set \
         MASTER_EVENTS_CHROMIUM to a Chromium binary"
    );
}

/// A headless Chromium driven over `--remote-debugging-pipe`; killed on drop.
struct Browser {
    proc: Proc,
    commands: File,
    answers: Receiver<Value>,
    next_id: u64,
}

/// A pipe whose ends are closed on exec: `(read, write)`.
fn cloexec_pipe() -> (RawFd, RawFd) {
    let mut fds: [libc::c_int; 2] = [-1, -1];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    (fds[0], fds[1])
}

impl Browser {
    fn launch(binary: &Path, profile: &Path) -> Browser {
        let (to_browser_read, to_browser_write) = cloexec_pipe();
        let (from_browser_read, from_browser_write) = cloexec_pipe();
        let mut command = Command::new(binary);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
                "--window-size=1280,900",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: between fork and exec only async-signal-safe calls (fcntl, dup2) on
        // descriptors this process owns. The ends first go to descriptors >= 10, so
        // that placing them on 3 and 4 cannot overwrite one with the other.
        unsafe {
            command.pre_exec(move || {
                let read_end = libc::fcntl(to_browser_read, libc::F_DUPFD, 10);
                let write_end = libc::fcntl(from_browser_write, libc::F_DUPFD, 10);
                if read_end < 0
                    || write_end < 0
                    || libc::dup2(read_end, 3) < 0
                    || libc::dup2(write_end, 4) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = command.spawn();
        // SAFETY: each descriptor comes from pipe2 above and is owned once, here.
        let (commands, answers_file) = unsafe {
            drop(File::from_raw_fd(to_browser_read));
            drop(File::from_raw_fd(from_browser_write));
            (
                File::from_raw_fd(to_browser_write),
                File::from_raw_fd(from_browser_read),
            )
        };
        let child = spawned.unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(answers_file);
            let mut message = Vec::new();
            loop {
                message.clear();
                match reader.read_until(0, &mut message) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if message.last() == Some(&0) {
                            message.pop();
                        }
                        if let Ok(value) = serde_json::from_slice::<Value>(&message) {
                            if tx.send(value).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Browser {
            proc: Proc { child },
            commands,
            answers,
            next_id: 0,
        }
    }

    /// Sends one DevTools command (to the page's session when `session` is given)
    /// and returns its result; panics on an error answer or after the deadline.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).expect("a JSON value serializes");
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("sending {method} to Chromium: {e}"));
        let deadline = Instant::now() + COMMAND_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = match self.answers.recv_timeout(left) {
                Ok(answer) => answer,
                Err(_) => {
                    let exited = self.proc.child.try_wait().ok().flatten();
                    panic!("no answer from Chromium to {method} (browser exit: {exited:?})")
                }
            };
            if answer["id"].as_u64() != Some(id) {
                continue; // an event, or the answer to an earlier command
            }
            if let Some(error) = answer.get("error") {
                panic!("Chromium refused {method}: {error}");
            }
            return answer["result"].clone();
        }
    }

    /// Evaluates `expression` in the page and returns its value.
    fn eval(&mut self, session: &str, expression: &str) -> Value {
        let result = self.call(
            Some(session),
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("the page threw evaluating {expression:?}: {exception}");
        }
        result["result"]["value"].clone()
    }
}

impl Drop for Browser {
    /// Asks Chromium to close (so it takes its helper processes down with it), and
    /// gives it 5 s before [`Proc`] kills it.
    fn drop(&mut self) {
        let _ = self
            .commands
            .write_all(b"{\"id\":0,\"method\":\"Browser.close\",\"params\":{}}\0");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.proc.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What the page shows, read from its elements.
const READ_PAGE: &str = r#"(() => {
  const t = (id) => { const e = document.getElementById(id); return e ? e.textContent.trim() : null; };
  const n = (id) => { const v = parseInt(t(id), 10); return Number.isFinite(v) ? v : -1; };
  return {
    status: t('status'),
    events: n('event-count'),
    rows: document.querySelectorAll('#event-rows tr').length,
    gapRows: document.querySelectorAll('#event-rows tr.gap').length,
    movesDone: n('moves-done'),
    movesTotal: n('moves-total'),
    inflight: n('moves-inflight'),
    rebalance: t('rebalance-state'),
    nodes: document.querySelectorAll('#node-rows tr').length,
    firstType: (document.querySelector('#event-rows tr td:nth-child(3)') || {}).textContent || null,
    error: (document.getElementById('error') || {hidden: true}).hidden ? null : t('error'),
  };
})()"#;

/// Reads the page until `done` holds for what it shows, or panics at the deadline
/// with the last reading.
fn wait_for(
    browser: &mut Browser,
    session: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + PAGE_DEADLINE;
    loop {
        let shown = browser.eval(session, READ_PAGE);
        if done(&shown) {
            return shown;
        }
        assert!(
            Instant::now() < deadline,
            "the page did not show {what} within {PAGE_DEADLINE:?}; it shows {shown}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn the_live_page_shows_events_and_rebalance_progress_in_headless_chromium() {
    let binary = chromium();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (_demo, url) = start_demo(&[
        "--listen",
        "127.0.0.1:0",
        "--rate",
        "200",
        "--vbuckets",
        "64",
    ]);
    let mut browser = Browser::launch(&binary, &dir.path().join("profile"));

    let target = browser.call(
        None,
        "Target.createTarget",
        json!({"url": format!("{url}/ui")}),
    );
    let target_id = target["targetId"].as_str().expect("a target id").to_owned();
    let attached = browser.call(
        None,
        "Target.attachToTarget",
        json!({"targetId": target_id, "flatten": true}),
    );
    let session = attached["sessionId"]
        .as_str()
        .expect("a session id")
        .to_owned();

    // Events arrive while the demo runs, and the rebalance view follows the moves.
    let first = wait_for(&mut browser, &session, "the first events", |s| {
        s["events"].as_i64() > Some(0) && s["rows"].as_i64() > Some(0)
    });
    assert_eq!(first["status"], "live", "{first}");
    let finished = wait_for(&mut browser, &session, "the rebalance finished", |s| {
        s["rebalance"] == "ended: normal"
    });
    assert_eq!(finished["movesDone"], 64, "{finished}");
    assert_eq!(finished["movesTotal"], 64, "{finished}");
    assert_eq!(finished["inflight"], 0, "{finished}");
    // The demo's three nodes each give up vbuckets: a row per mover node.
    assert_eq!(finished["nodes"], 3, "{finished}");
    assert!(
        finished["rows"].as_i64() <= Some(500),
        "at most 500 rows: {finished}"
    );
    assert_eq!(finished["error"], Value::Null, "{finished}");

    let shot = browser.call(
        Some(&session),
        "Page.captureScreenshot",
        json!({"format": "png"}),
    );
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap_or_default())
        .expect("the screenshot is base64");
    let png_path = dir.path().join("ui.png");
    std::fs::write(&png_path, &png).expect("write the screenshot");
    let written = std::fs::read(&png_path).expect("read the screenshot back");
    assert!(written.len() > 1000, "{} bytes", written.len());
    assert_eq!(&written[..8], b"\x89PNG\r\n\x1a\n", "a PNG file");
    if let Some(copy) = std::env::var_os("MASTER_EVENTS_UI_SCREENSHOT") {
        std::fs::write(copy, &written).expect("copy the screenshot");
    }

    // A filter reconnects the table's stream: only the two rebalance events remain,
    // newest first, while the rebalance view is untouched.
    browser.eval(
        &session,
        "document.getElementById('filter-type').value = 'rebalanceStart, rebalanceEnd'; \
         document.getElementById('filters').requestSubmit(); true",
    );
    let filtered = wait_for(&mut browser, &session, "the filtered events", |s| {
        s["events"] == 2 && s["rows"] == 2
    });
    assert_eq!(filtered["firstType"], "rebalanceEnd", "{filtered}");
    assert_eq!(filtered["movesDone"], 64, "{filtered}");
    let location = browser.eval(&session, "location.search");
    assert_eq!(
        location, "?type=rebalanceStart%2CrebalanceEnd",
        "the filters are kept in the page's URL"
    );

    // A filter the server refuses is shown, not retried for ever.
    browser.eval(
        &session,
        "document.getElementById('filter-type').value = 'noSuchType'; \
         document.getElementById('filters').requestSubmit(); true",
    );
    let refused = wait_for(&mut browser, &session, "the refusal", |s| {
        s["status"] == "closed"
    });
    let error = refused["error"].as_str().unwrap_or_default();
    assert!(error.contains("400"), "{refused}");
}

/// `master-events ARGS` run to its end (60 s at most); its standard output.
fn run_to_end(args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_master-events"))
        .args(args)
        .env_remove("MASTER_EVENTS_AUTH")
        .env_remove("MASTER_EVENTS_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("the master-events binary runs");
    assert!(
        out.status.success(),
        "master-events {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_scoped_token_given_as_the_basic_password_sees_its_bucket_only_on_the_live_page() {
    let binary = chromium();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let token = |args: &[&str]| -> (String, String) {
        let mut all = vec!["token", "create"];
        all.extend_from_slice(args);
        let out = run_to_end(&all);
        let (token, entry) = out.split_once('\n').expect("the token, then its entry");
        (token.to_owned(), entry.to_owned())
    };
    let (reader, reader_entry) = token(&[
        "--name",
        "b1-dash",
        "--role",
        "read",
        "--filter",
        "bucket=b1",
    ]);
    let (writer, writer_entry) = token(&["--name", "feeder", "--role", "write"]);
    let config = dir.path().join("me.toml");
    std::fs::write(&config, format!("{reader_entry}\n{writer_entry}")).expect("config");
    let config = config.display().to_string();
    let (_server, url) =
        start_master_events(&["serve", "--listen", "127.0.0.1:0", "--config", &config]);
    for bucket in ["b1", "b2", "b1", "b2", "b2"] {
        run_to_end(&[
            "emit",
            &url,
            "--token",
            &writer,
            "deleteBucket",
            &format!("bucket={bucket}"),
        ]);
    }

    // The browser holds the token as Basic credentials of the user `token` (as its
    // prompt would, for the page and its streams alike).
    let mut browser = Browser::launch(&binary, &dir.path().join("profile"));
    let target = browser.call(None, "Target.createTarget", json!({"url": "about:blank"}));
    let target_id = target["targetId"].as_str().expect("a target id").to_owned();
    let attached = browser.call(
        None,
        "Target.attachToTarget",
        json!({"targetId": target_id, "flatten": true}),
    );
    let session = attached["sessionId"]
        .as_str()
        .expect("a session id")
        .to_owned();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("token:{reader}"));
    browser.call(Some(&session), "Network.enable", json!({}));
    browser.call(
        Some(&session),
        "Network.setExtraHTTPHeaders",
        json!({"headers": {"Authorization": format!("Basic {basic}")}}),
    );
    browser.call(
        Some(&session),
        "Page.navigate",
        json!({"url": format!("{url}/ui")}),
    );

    let shown = wait_for(&mut browser, &session, "the token's two events", |s| {
        s["events"] == 2 && s["rows"] == 2 && s["status"] == "live"
    });
    assert_eq!(shown["error"], Value::Null, "{shown}");
    let rows = browser.eval(
        &session,
        "document.getElementById('event-rows').textContent",
    );
    let rows = rows.as_str().unwrap_or_default();
    assert!(rows.contains("b1") && !rows.contains("b2"), "{rows}");
}
