//! `master-events tail`: follows a server's event stream (`GET /diag/masterEvents`)
//! and prints each event on standard output.
//!
//! Owns: the stream URL's query, the reconnect loop and its backoff, the line
//! splitting of the response body, the handling of control frames and the `--pretty`
//! format.
//!
//! Promises:
//! - No event is printed twice and, across reconnects, none is skipped: every
//!   reconnect asks for `since=<the last seq printed>`, and any event whose `seq` is
//!   not above the last one printed is dropped (whatever the server sends). Events the
//!   server no longer retains are announced by its `gap` frame, which is reported on
//!   standard error with the count; they are never missed silently. (The one window
//!   this cannot cover: with `--start-now`, a drop before the first event is printed
//!   resumes with `start=now` again, as there is no seq to resume from yet.)
//! - Reconnects (a dropped or idle connection, an unreachable server, a 5xx or 429
//!   answer) wait with exponential backoff, 100 ms doubling to 5 s, with jitter; the
//!   wait restarts from 100 ms after a connection that delivered something.
//! - A connection silent for twice the heartbeat interval plus 5 s is taken as dead
//!   and replaced (the server sends a heartbeat on an idle stream; `--heartbeat 0`
//!   turns both off).
//! - Exit codes: 0 when done (`--once` after the archive, `--count` reached, Ctrl-C,
//!   standard output closed), 1 when the server refuses the credentials (401/403,
//!   never retried), refuses the request for good (other 4xx) or `--max-reconnects`
//!   is exhausted, 2 on usage errors.
//! - A resume names the history the seqs belong to (`since=SEQ&history=H`, H from
//!   the stream's `Master-Events-History` header or its heartbeats). When the server's
//!   archive is another history (it restarted without persistence) or never reached
//!   that seq, it answers with a `reset` frame: `tail` warns on standard error and
//!   carries on with the new history from its start — never a silent skip.
//! - `--once` gives up after a bounded number of failed connection attempts
//!   ([`ONCE_MAX_RECONNECTS`], unless `--max-reconnects` says otherwise) and exits 1.
//! - Standard output holds only events (flushed after each chunk received); every
//!   diagnostic goes to standard error.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::{Buf, BytesMut};
use clap::Args;
use futures_util::StreamExt;
use master_events_events::{EventType, Timestamp};
use reqwest::{StatusCode, Url};
use serde_json::{Map, Value};

use super::client::{body_preview, describe, tls_refusal, AuthArgs, Client, Endpoint};

/// The longest line accepted from the server; a longer one means the stream is not
/// what this command expects.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// The first reconnect delay.
pub const BACKOFF_START: Duration = Duration::from_millis(100);

/// The longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// With `--once` and no `--max-reconnects`: how many reconnects in a row that
/// received nothing before `tail` gives up (about 3 s of retrying).
pub const ONCE_MAX_RECONNECTS: u32 = 5;

/// Arguments of `tail`.
#[derive(Args, Debug)]
pub struct TailArgs {
    /// The server: its base URL (http://127.0.0.1:9898) or the full stream URL
    /// (http://127.0.0.1:9898/diag/masterEvents); or a NATS server
    /// (nats://127.0.0.1:4222) to read the JetStream stream a nats sink fills.
    pub url: String,
    /// With a nats:// URL: the JetStream stream to read (default MASTER_EVENTS).
    #[arg(long, value_name = "NAME")]
    pub stream: Option<String>,
    /// With a nats:// URL: only the messages of these subjects, e.g. one cluster's of
    /// a fleet (`master_events.east-1.>`); default: the whole stream.
    #[arg(long, value_name = "FILTER")]
    pub subject: Option<String>,
    /// With a nats:// URL: read as the durable consumer NAME, acknowledging each
    /// line once printed, so that a tail started again with the same name resumes
    /// after the last line it printed. Without it, the stream is read from its start.
    #[arg(long, value_name = "NAME")]
    pub durable: Option<String>,
    /// With a nats:// URL: the NATS user, as NAME:PASSWORD. Prefer the environment
    /// variable. (--user and --token are a master-events server's credentials.)
    #[arg(
        long,
        value_name = "NAME:PASSWORD",
        env = "MASTER_EVENTS_NATS_AUTH",
        hide_env_values = true,
        value_parser = super::client::Secret::from_arg
    )]
    pub nats_user: Option<super::client::Secret>,
    /// With a nats:// URL: the NATS token. Prefer the environment variable.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "MASTER_EVENTS_NATS_TOKEN",
        hide_env_values = true,
        value_parser = super::client::Secret::from_arg
    )]
    pub nats_token: Option<super::client::Secret>,
    /// With a nats:// URL: a NATS credentials file (a user JWT and its nkey seed).
    #[arg(long, value_name = "FILE")]
    pub nats_creds: Option<std::path::PathBuf>,
    /// Print the events the server retains (its archive), then exit.
    #[arg(long, conflicts_with = "start_now")]
    pub once: bool,
    /// Start after this seq (exclusive): print only events with a higher seq.
    #[arg(long, value_name = "SEQ", conflicts_with = "start_now")]
    pub since: Option<u64>,
    /// Skip the archive: print only events sequenced from now on.
    #[arg(long)]
    pub start_now: bool,
    /// Only events of these types (comma-separated; any of them).
    #[arg(
        long = "type",
        value_name = "TYPE,..",
        value_delimiter = ',',
        value_parser = parse_event_type
    )]
    pub types: Vec<EventType>,
    /// Only events of this bucket.
    #[arg(long, value_name = "BUCKET")]
    pub bucket: Option<String>,
    /// Only events of these vbuckets (comma-separated; any of them).
    #[arg(long, value_name = "N,..", value_delimiter = ',')]
    pub vbucket: Vec<u16>,
    /// Only events of this node.
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// Ask the server for a heartbeat after this many idle seconds (0 = none); a
    /// connection silent for twice as long plus 5 s is replaced by a new one.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub heartbeat: u32,
    /// Print each event as one readable line (`#SEQ TIME TYPE key=value ...`, time in
    /// UTC) instead of its raw JSON.
    #[arg(long)]
    pub pretty: bool,
    /// Exit (0) after printing this many events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Give up (exit 1) after this many reconnects in a row that received nothing;
    /// 0 never reconnects. Default: retry for ever (with --once: 5, about 3 s).
    #[arg(long, value_name = "N")]
    pub max_reconnects: Option<u32>,
    /// Also report heartbeats, dropped duplicates and each connection on stderr.
    #[arg(long, short)]
    pub verbose: bool,
    #[command(flatten)]
    pub auth: AuthArgs,
}

fn parse_event_type(s: &str) -> Result<EventType, String> {
    s.trim().parse::<EventType>().map_err(|_| {
        let hint = EventType::ALL
            .iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s.trim()))
            .map(|t| format!(" (did you mean {t}?)"))
            .unwrap_or_default();
        format!(
            "not an event type{hint}; `master-events validate --help` lists them all, and \
             a server serves them at GET /schemas/; docs/events.md describes each"
        )
    })
}

/// Runs the command; returns the process exit code.
pub fn run(args: &TailArgs) -> Result<i32> {
    if super::tail_nats::is_nats_url(&args.url) {
        return super::tail_nats::run(args);
    }
    if args.stream.is_some()
        || args.subject.is_some()
        || args.durable.is_some()
        || args.nats_creds.is_some()
    {
        anyhow::bail!(
            "--stream, --subject, --durable and --nats-creds read a JetStream stream: give a nats:// URL"
        );
    }
    let endpoint = Endpoint::parse(&args.url)?;
    let credentials = args.auth.credentials()?;
    let client = Client::new(endpoint, credentials, None, &args.auth)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let code = tokio::select! {
            biased;
            () = ctrl_c() => Ok(0),
            code = follow(&client, args, &mut out) => code,
        };
        finish_output(&mut out, code)
    })
}

/// Flushes what is left of standard output and returns `code`; a reader that went
/// away (a closed pipe) is not an error.
pub(crate) fn finish_output(out: &mut impl Write, code: Result<i32>) -> Result<i32> {
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("writing standard output")
        }
        _ => code,
    }
}

/// Resolves on Ctrl-C; never, when the signal cannot be watched.
pub(crate) async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// What the reconnect loop knows: the cursor and the count.
#[derive(Debug, Default)]
struct Progress {
    /// The seq of the last event printed (or `--since`).
    last_seq: Option<u64>,
    /// Events printed so far.
    printed: u64,
    /// The history `last_seq` belongs to, once the server named it.
    history: Option<String>,
    /// Connections that ended in a drop so far (for the "reconnected" note).
    drops: u32,
}

/// How one connection ended.
#[derive(Debug)]
enum Ended {
    /// The command is done (exit 0).
    Done,
    /// Stop with this exit code; the reason was already reported.
    Stop(i32),
    /// The connection is gone or could not be made: reconnect.
    Dropped {
        /// The connection delivered at least one line.
        delivered: bool,
        /// What happened, for the user.
        why: String,
    },
}

async fn follow<W: Write>(client: &Client, args: &TailArgs, out: &mut W) -> Result<i32> {
    let mut progress = Progress {
        last_seq: args.since,
        ..Progress::default()
    };
    let max_reconnects = args
        .max_reconnects
        .or(args.once.then_some(ONCE_MAX_RECONNECTS));
    let mut reconnects_without_progress: u32 = 0;
    loop {
        let url = stream_url(
            client.endpoint(),
            args,
            progress.last_seq,
            progress.history.as_deref(),
        );
        if args.verbose {
            eprintln!("master-events tail: connecting to {url}");
        }
        match connect(client, args, &url, &mut progress, out).await? {
            Ended::Done => return Ok(0),
            Ended::Stop(code) => return Ok(code),
            Ended::Dropped { delivered, why } => {
                if delivered {
                    reconnects_without_progress = 0;
                }
                if max_reconnects.is_some_and(|max| reconnects_without_progress >= max) {
                    eprintln!(
                        "master-events tail: {why}; giving up after {reconnects_without_progress} \
                         reconnects without receiving anything (--max-reconnects{})",
                        if args.max_reconnects.is_none() {
                            ", 5 by default with --once"
                        } else {
                            ""
                        }
                    );
                    return Ok(1);
                }
                progress.drops = progress.drops.saturating_add(1);
                let delay = backoff(reconnects_without_progress, random_u64());
                reconnects_without_progress = reconnects_without_progress.saturating_add(1);
                let resume = match progress.last_seq {
                    Some(seq) => format!("after seq {seq}"),
                    None => "from the start".to_owned(),
                };
                eprintln!(
                    "master-events tail: {why}; reconnecting in {} ms ({resume})",
                    delay.as_millis()
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The stream URL for the next connection: the options as a query, resuming after
/// `last_seq` (in `history`, when known) when there is one.
fn stream_url(
    endpoint: &Endpoint,
    args: &TailArgs,
    last_seq: Option<u64>,
    history: Option<&str>,
) -> Url {
    let mut url = endpoint.url().clone();
    {
        let mut q = url.query_pairs_mut();
        if args.once {
            q.append_pair("o", "1");
        }
        match last_seq {
            Some(seq) => {
                q.append_pair("since", &seq.to_string());
                if let Some(history) = history {
                    q.append_pair("history", history);
                }
            }
            None if args.start_now => {
                q.append_pair("start", "now");
            }
            None => {}
        }
        if !args.types.is_empty() {
            let types: Vec<&str> = args.types.iter().map(|t| t.as_str()).collect();
            q.append_pair("type", &types.join(","));
        }
        if let Some(bucket) = &args.bucket {
            q.append_pair("bucket", bucket);
        }
        if !args.vbucket.is_empty() {
            let vbuckets: Vec<String> = args.vbucket.iter().map(u16::to_string).collect();
            q.append_pair("vbucket", &vbuckets.join(","));
        }
        if let Some(node) = &args.node {
            q.append_pair("node", node);
        }
        q.append_pair("heartbeat", &args.heartbeat.to_string());
    }
    url
}

/// One connection: the request, then its lines until the end, a drop or the count.
async fn connect<W: Write>(
    client: &Client,
    args: &TailArgs,
    url: &Url,
    progress: &mut Progress,
    out: &mut W,
) -> Result<Ended> {
    let endpoint = client.endpoint();
    let response = match client.get(url.clone()).send().await {
        Ok(r) => r,
        Err(e) => {
            // An untrusted server stays untrusted: say so and stop, as for a 401.
            if let Some(refusal) = tls_refusal(&e) {
                eprintln!("master-events tail: cannot reach {endpoint}: {refusal}");
                return Ok(Ended::Stop(1));
            }
            return Ok(Ended::Dropped {
                delivered: false,
                why: format!("cannot reach {endpoint}: {}", describe(e)),
            });
        }
    };
    let status = response.status();
    if let Some(refusal) = client.refusal(status) {
        eprintln!("master-events tail: {refusal}");
        return Ok(Ended::Stop(1));
    }
    if !status.is_success() {
        let body = body_preview(response, 2000).await;
        let said = if body.is_empty() {
            String::new()
        } else {
            format!(": {body}")
        };
        return Ok(match status {
            StatusCode::TOO_MANY_REQUESTS => Ended::Dropped {
                delivered: false,
                why: format!("{endpoint} answered {status}{said}"),
            },
            s if s.is_server_error() => Ended::Dropped {
                delivered: false,
                why: format!("{endpoint} answered {status}{said}"),
            },
            StatusCode::BAD_REQUEST => {
                eprintln!("master-events tail: the server refused the request ({status}){said}");
                Ended::Stop(2)
            }
            StatusCode::NOT_FOUND => {
                eprintln!(
                    "master-events tail: {endpoint} answered {status}: is this a master-events \
                     server (the stream is GET /diag/masterEvents)?"
                );
                Ended::Stop(1)
            }
            _ => {
                eprintln!("master-events tail: {endpoint} answered {status}{said}");
                Ended::Stop(1)
            }
        });
    }

    let server_history = response
        .headers()
        .get("master-events-history")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if progress.drops > 0 {
        let resume = match progress.last_seq {
            Some(seq) => format!("resuming after seq {seq}"),
            None => "from the start".to_owned(),
        };
        eprintln!("master-events tail: reconnected to {endpoint} ({resume})");
    }
    if progress.history.is_none() {
        progress.history = server_history;
    }
    let idle_limit =
        (args.heartbeat > 0).then(|| Duration::from_secs(u64::from(args.heartbeat) * 2 + 5));
    let mut body = response.bytes_stream();
    let mut lines = LineBuffer::default();
    let mut delivered = false;
    loop {
        let next = match idle_limit {
            Some(limit) => match tokio::time::timeout(limit, body.next()).await {
                Ok(next) => next,
                Err(_) => {
                    return Ok(Ended::Dropped {
                        delivered,
                        why: format!(
                            "nothing received for {} s although heartbeats were asked every {} s",
                            limit.as_secs(),
                            args.heartbeat
                        ),
                    })
                }
            },
            None => body.next().await,
        };
        let clean_end = match next {
            Some(Ok(chunk)) => {
                lines.push(&chunk);
                false
            }
            Some(Err(e)) => {
                return Ok(Ended::Dropped {
                    delivered,
                    why: format!("the connection to {endpoint} broke: {}", describe(e)),
                })
            }
            None => true,
        };
        loop {
            let line = match lines.next_line(clean_end) {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(len) => {
                    eprintln!(
                        "master-events tail: the server sent a line longer than {len} bytes; \
                         this is not an event stream"
                    );
                    return Ok(Ended::Stop(1));
                }
            };
            delivered = true;
            match handle_line(&line, args, progress, out) {
                Ok(Handled::Continue) => {}
                Ok(Handled::CountReached) => return Ok(Ended::Done),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(Ended::Done),
                Err(e) => return Err(e).context("writing standard output"),
            }
        }
        match out.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(Ended::Done),
            Err(e) => return Err(e).context("writing standard output"),
        }
        if clean_end {
            if args.once {
                return Ok(Ended::Done);
            }
            return Ok(Ended::Dropped {
                delivered,
                why: format!("{endpoint} ended the stream"),
            });
        }
    }
}

/// Splits a byte stream into lines, holding at most [`MAX_LINE_BYTES`] of an
/// unfinished one.
#[derive(Debug, Default)]
struct LineBuffer {
    buf: BytesMut,
    /// How far `buf` is known to hold no newline.
    scanned: usize,
}

impl LineBuffer {
    fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete line, without its `\n` (or `\r\n`). At the end of the
    /// stream (`at_end`), the unterminated rest is a line too. `Err(limit)` when
    /// a line is longer than the limit.
    fn next_line(&mut self, at_end: bool) -> Result<Option<BytesMut>, usize> {
        match self.buf[self.scanned..].iter().position(|b| *b == b'\n') {
            Some(i) => {
                let mut line = self.buf.split_to(self.scanned + i + 1);
                self.scanned = 0;
                line.truncate(line.len() - 1);
                if line.last() == Some(&b'\r') {
                    line.truncate(line.len() - 1);
                }
                if line.len() > MAX_LINE_BYTES {
                    return Err(MAX_LINE_BYTES);
                }
                Ok(Some(line))
            }
            None if self.buf.len() > MAX_LINE_BYTES => Err(MAX_LINE_BYTES),
            None if at_end && self.buf.has_remaining() => {
                self.scanned = 0;
                Ok(Some(self.buf.split()))
            }
            None => {
                self.scanned = self.buf.len();
                Ok(None)
            }
        }
    }
}

/// What became of one line.
#[derive(Debug, PartialEq, Eq)]
enum Handled {
    Continue,
    CountReached,
}

/// Prints an event line (once), reports a control frame, skips the rest.
fn handle_line<W: Write>(
    line: &[u8],
    args: &TailArgs,
    progress: &mut Progress,
    out: &mut W,
) -> std::io::Result<Handled> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(Handled::Continue);
    }
    let object = match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(map)) => map,
        _ => {
            eprintln!(
                "master-events tail: warning: ignoring a line that is not a JSON object: {}",
                preview(line)
            );
            return Ok(Handled::Continue);
        }
    };
    let seq = object.get("seq").and_then(Value::as_u64);
    match object.get("type").and_then(Value::as_str) {
        Some("heartbeat") => {
            if progress.history.is_none() {
                progress.history = object
                    .get("history")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
            }
            if args.verbose {
                eprintln!(
                    "master-events tail: heartbeat (server's last seq {})",
                    seq.map_or("-".to_owned(), |s| s.to_string())
                );
            }
            Ok(Handled::Continue)
        }
        Some("gap") => {
            eprintln!("master-events tail: WARNING: {}", describe_gap(&object));
            Ok(Handled::Continue)
        }
        Some("reset") => {
            eprintln!("master-events tail: WARNING: {}", describe_reset(&object));
            // The seqs that follow are the new history's: the old cursor means
            // nothing in it.
            progress.history = object
                .get("history")
                .and_then(Value::as_str)
                .map(str::to_owned);
            progress.last_seq = None;
            Ok(Handled::Continue)
        }
        Some(_) => {
            if let (Some(seq), Some(last)) = (seq, progress.last_seq) {
                if seq <= last {
                    if args.verbose {
                        eprintln!(
                            "master-events tail: dropping seq {seq}, already past it (last {last})"
                        );
                    }
                    return Ok(Handled::Continue);
                }
            }
            if args.pretty {
                out.write_all(pretty_line(&object).as_bytes())?;
            } else {
                out.write_all(line)?;
            }
            out.write_all(b"\n")?;
            if seq.is_some() {
                progress.last_seq = seq;
            }
            progress.printed += 1;
            if args.count.is_some_and(|n| progress.printed >= n) {
                return Ok(Handled::CountReached);
            }
            Ok(Handled::Continue)
        }
        None => {
            eprintln!(
                "master-events tail: warning: ignoring a line without a \"type\": {}",
                preview(line)
            );
            Ok(Handled::Continue)
        }
    }
}

/// A gap frame for a human: how many events were missed, which, and why.
fn describe_gap(gap: &Map<String, Value>) -> String {
    let num = |k: &str| gap.get(k).and_then(Value::as_u64);
    let missed = num("missed")
        .or_else(|| Some(num("toSeq")?.checked_sub(num("fromSeq")?)? + 1))
        .map_or("some".to_owned(), |n| n.to_string());
    let range = match (num("fromSeq"), num("toSeq")) {
        (Some(a), Some(b)) => format!(" (seq {a} to {b})"),
        _ => String::new(),
    };
    let reason = gap
        .get("reason")
        .and_then(Value::as_str)
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    format!("{missed} events were missed{range}, the server no longer has them{reason}")
}

/// A reset frame for a human: what was asked, what the server has, and that the
/// stream starts again from the server's oldest event.
fn describe_reset(reset: &Map<String, Value>) -> String {
    let num = |k: &str| reset.get(k).and_then(Value::as_u64).unwrap_or(0);
    let text = |k: &str| {
        reset
            .get(k)
            .and_then(Value::as_str)
            .map(super::client::one_line)
            .unwrap_or_else(|| "-".to_owned())
    };
    format!(
        "the server's history is not the one this stream resumed after seq {} (history {}): {}; \
         continuing with history {} from its oldest retained event (seq {}, last seq {}); \
         events of the old history after seq {} may be lost",
        num("requestedSince"),
        text("requestedHistory"),
        text("reason"),
        text("history"),
        num("oldestSeq"),
        num("lastSeq"),
        num("requestedSince"),
    )
}

/// The first 200 characters of a line, for a warning.
fn preview(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let mut shown: String = text.chars().take(200).collect();
    if shown.len() < text.len() {
        shown.push_str("...");
    }
    super::client::one_line(&shown)
}

/// The `--pretty` form of an event: `#SEQ TIME TYPE key=value ...`, keys sorted,
/// the time in UTC with microseconds (`-` for an absent seq or time). No control
/// character (C0, DEL, C1: what a terminal may act on) is written raw: each is
/// written `\u00XX`, wherever it is (type, key or value).
pub(crate) fn pretty_line(event: &Map<String, Value>) -> String {
    escape_controls(&pretty_fields(event))
}

/// `text` with every control character written as the JSON escape `\u00XX`.
fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

fn pretty_fields(event: &Map<String, Value>) -> String {
    let seq = event
        .get("seq")
        .and_then(Value::as_u64)
        .map_or("-".to_owned(), |s| s.to_string());
    let ts = event
        .get("ts")
        .and_then(|v| serde_json::from_value::<Timestamp>(v.clone()).ok())
        .map_or("-".to_owned(), format_utc);
    let ty = event.get("type").and_then(Value::as_str).unwrap_or("?");
    let mut line = format!("#{seq} {ts} {ty}");
    let mut keys: Vec<&String> = event
        .keys()
        .filter(|k| !matches!(k.as_str(), "type" | "seq" | "ts"))
        .collect();
    keys.sort();
    for key in keys {
        line.push(' ');
        line.push_str(key);
        line.push('=');
        match &event[key.as_str()] {
            Value::String(s) if is_bare(s) => line.push_str(s),
            other => line.push_str(&other.to_string()),
        }
    }
    line
}

/// A string printed without quotes in the pretty form: non-empty, no spaces, no
/// quotes, no control characters.
fn is_bare(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
}

/// `2012-04-04T21:47:32.926554Z`.
fn format_utc(ts: Timestamp) -> String {
    master_events_report::utc_micros(ts)
}

/// The wait before reconnect number `attempt` (0-based) of a streak: 100 ms doubled
/// per attempt, capped at 5 s, then jittered into its upper half with `random`.
fn backoff(attempt: u32, random: u64) -> Duration {
    let full = BACKOFF_START
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(BACKOFF_MAX);
    let half = full / 2;
    let half_ms = half.as_millis() as u64;
    let jitter = if half_ms == 0 {
        0
    } else {
        random % (half_ms + 1)
    };
    half + Duration::from_millis(jitter)
}

/// A random number from the standard library's randomly keyed hasher.
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TailArgs,
    }

    fn args(extra: &[&str]) -> TailArgs {
        let mut argv = vec!["tail", "http://127.0.0.1:9898"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).expect("valid arguments").args
    }

    fn object(line: &str) -> Map<String, Value> {
        match serde_json::from_str(line) {
            Ok(Value::Object(m)) => m,
            other => panic!("not an object: {other:?}"),
        }
    }

    #[test]
    fn the_query_carries_every_option() {
        let a = args(&[
            "--once",
            "--type",
            "vbucketMoveDone,updateMap",
            "--bucket",
            "default",
            "--vbucket",
            "1,2",
            "--node",
            "n_0@h",
            "--heartbeat",
            "5",
        ]);
        let e = Endpoint::parse(&a.url).expect("valid");
        assert_eq!(
            stream_url(&e, &a, None, None).as_str(),
            "http://127.0.0.1:9898/diag/masterEvents?o=1&type=vbucketMoveDone%2CupdateMap\
             &bucket=default&vbucket=1%2C2&node=n_0%40h&heartbeat=5"
        );
    }

    #[test]
    fn a_reconnect_resumes_after_the_last_seq_even_with_start_now() {
        let a = args(&["--start-now"]);
        let e = Endpoint::parse(&a.url).expect("valid");
        assert!(stream_url(&e, &a, None, None)
            .as_str()
            .contains("start=now"));
        let resumed = stream_url(&e, &a, Some(42), Some("h1"));
        assert!(resumed.as_str().contains("since=42"), "{resumed}");
        assert!(resumed.as_str().contains("history=h1"), "{resumed}");
        assert!(!resumed.as_str().contains("start="), "{resumed}");
    }

    #[test]
    fn start_now_conflicts_with_since_and_once() {
        for extra in [["--start-now", "--since=3"], ["--start-now", "--once"]] {
            let mut argv = vec!["tail", "http://x"];
            argv.extend_from_slice(&extra);
            assert!(Cli::try_parse_from(argv).is_err(), "{extra:?}");
        }
    }

    #[test]
    fn an_unknown_type_is_a_usage_error_with_a_hint() {
        let err = Cli::try_parse_from(["tail", "http://x", "--type", "vbucketmovedone"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("did you mean vbucketMoveDone"), "{err}");
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        let mut b = LineBuffer::default();
        b.push(b"{\"a\":1}\n{\"b\"");
        assert_eq!(
            b.next_line(false).ok().flatten().as_deref(),
            Some(&b"{\"a\":1}"[..])
        );
        assert_eq!(b.next_line(false), Ok(None));
        b.push(b":2}\r\n{\"c\":3}");
        assert_eq!(
            b.next_line(false).ok().flatten().as_deref(),
            Some(&b"{\"b\":2}"[..])
        );
        assert_eq!(b.next_line(false), Ok(None));
        assert_eq!(
            b.next_line(true).ok().flatten().as_deref(),
            Some(&b"{\"c\":3}"[..])
        );
        assert_eq!(b.next_line(true), Ok(None));
    }

    #[test]
    fn events_at_or_below_the_last_seq_are_dropped() {
        let a = args(&[]);
        let mut p = Progress {
            last_seq: Some(2),
            ..Progress::default()
        };
        let mut out = Vec::new();
        for line in [
            r#"{"type":"failoverEnded","seq":2,"ts":1}"#,
            r#"{"type":"failoverEnded","seq":3,"ts":1}"#,
            r#"{"type":"failoverEnded","seq":3,"ts":1}"#,
            r#"{"type":"heartbeat","seq":3,"ts":1}"#,
            r#"{"type":"gap","fromSeq":4,"toSeq":9,"missed":6,"reason":"evicted"}"#,
            r#"{"type":"failoverEnded","seq":10,"ts":1}"#,
        ] {
            handle_line(line.as_bytes(), &a, &mut p, &mut out).expect("writes to a Vec");
        }
        assert_eq!(
            String::from_utf8_lossy(&out),
            "{\"type\":\"failoverEnded\",\"seq\":3,\"ts\":1}\n{\"type\":\"failoverEnded\",\"seq\":10,\"ts\":1}\n"
        );
        assert_eq!(p.last_seq, Some(10));
        assert_eq!(p.printed, 2);
    }

    #[test]
    fn count_stops_at_the_nth_event() {
        let a = args(&["--count", "2"]);
        let mut p = Progress::default();
        let mut out = Vec::new();
        let line = |s: u64| format!(r#"{{"type":"failoverEnded","seq":{s},"ts":1}}"#);
        assert_eq!(
            handle_line(line(1).as_bytes(), &a, &mut p, &mut out).ok(),
            Some(Handled::Continue)
        );
        assert_eq!(
            handle_line(line(2).as_bytes(), &a, &mut p, &mut out).ok(),
            Some(Handled::CountReached)
        );
    }

    #[test]
    fn pretty_lines_are_sorted_utc_and_quote_only_when_needed() {
        let e = object(
            r#"{"type":"vbucketMoveDone","seq":12,"ts":1333576052.926554,"vbucket":43,"bucket":"default","origin":"n 1","chainAfter":["a",""]}"#,
        );
        assert_eq!(
            pretty_line(&e),
            "#12 2012-04-04T21:47:32.926554Z vbucketMoveDone bucket=default chainAfter=[\"a\",\"\"] origin=\"n 1\" vbucket=43"
        );
        let bare = object(r#"{"type":"failoverEnded"}"#);
        assert_eq!(pretty_line(&bare), "#- - failoverEnded");
    }

    #[test]
    fn pretty_lines_write_no_control_character_raw() {
        // ESC, BEL (C0), DEL and a C1 character in a value, and ESC in a key.
        let e = object(
            "{\"type\":\"deleteBucket\",\"bucket\":\"\\u001b[2J\\u001b[31mFAKE\\u0007\\u007f\\u009b\",\"x\\u001by\":1}",
        );
        let line = pretty_line(&e);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(
            line.contains("\\u007f") && line.contains("\\u009b"),
            "{line}"
        );
        assert!(line.contains("FAKE"), "{line}");
    }

    #[test]
    fn utc_dates_are_right_across_leap_years() {
        assert_eq!(
            format_utc(Timestamp::from_micros(0)),
            "1970-01-01T00:00:00.000000Z"
        );
        // 2024-02-29T23:59:59.999999Z
        assert_eq!(
            format_utc(Timestamp::from_micros(1_709_251_199_999_999)),
            "2024-02-29T23:59:59.999999Z"
        );
        // 2000-03-01T00:00:00Z
        assert_eq!(
            format_utc(Timestamp::from_micros(951_868_800_000_000)),
            "2000-03-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn a_gap_warning_says_how_many_and_which() {
        let g = object(r#"{"type":"gap","fromSeq":4,"toSeq":9,"missed":6,"reason":"evicted"}"#);
        assert_eq!(
            describe_gap(&g),
            "6 events were missed (seq 4 to 9), the server no longer has them: evicted"
        );
    }

    #[test]
    fn backoff_doubles_from_100ms_to_5s_with_jitter_in_the_upper_half() {
        assert_eq!(backoff(0, 0), Duration::from_millis(50));
        assert_eq!(backoff(0, 50), Duration::from_millis(100));
        assert_eq!(backoff(1, 0), Duration::from_millis(100));
        assert_eq!(backoff(3, u64::MAX), backoff(3, u64::MAX % 401));
        for attempt in [6, 7, 30, u32::MAX] {
            for r in [0, 1, 1234, u64::MAX] {
                let d = backoff(attempt, r);
                assert!(
                    d >= Duration::from_millis(2500) && d <= BACKOFF_MAX,
                    "{d:?}"
                );
            }
        }
    }
}
