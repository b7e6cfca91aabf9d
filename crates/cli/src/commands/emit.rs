//! `master-events emit`: sends events to a server (`POST /diag/masterEvents`), either
//! the NDJSON lines of a file or standard input, or one event built from the command
//! line (`emit URL TYPE key=value ...`).
//!
//! Owns: telling the two forms apart, building an event from `key=value` arguments,
//! the local validation of every line, the batching of lines into requests and the
//! reading of the server's answers.
//!
//! Promises:
//! - Nothing invalid is sent: each line is parsed with [`Record::parse`] first (the
//!   parser the server uses). From a file, every line is checked before the first
//!   request, so a bad line (reported as `FILE:LINE: reason`) means nothing was sent.
//!   Standard input may never end (`tail ... | emit ... -`), so it is checked and
//!   sent batch by batch: a bad line stops the command before its batch is sent, and
//!   the message says which lines earlier batches already delivered.
//! - A batch holds at most `--batch-lines` lines and `--batch-bytes` bytes, so a file
//!   of any size streams in bounded memory; from standard input a batch is also sent
//!   when no new line arrived for 200 ms, so a live pipe is forwarded promptly.
//! - The server takes all lines of a request or none; when it refuses a line (400),
//!   its line number within the request is translated back to the input's line.
//! - A request is never re-sent (its fate is unknown when a connection breaks, and a
//!   second copy would be a duplicate): the command stops, exit 1, saying which lines
//!   were delivered for sure.
//! - A `202 Accepted` reply means the node queued the lines but no master sequenced
//!   them in time: the command goes on with the rest, says which node holds them
//!   and why (from the node's `/ready` and `/cluster`), and exits 3.
//! - Exit codes: 0 all sent and sequenced, 1 a line or the event was refused
//!   (locally or by the server) or the server could not be reached, 2 usage or I/O
//!   errors, 3 all sent but some only queued, not yet sequenced (a 202).

use std::io::{BufReader, IsTerminal, Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use master_events_events::{published, EventType, ParseError, Record};
use reqwest::StatusCode;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::client::{body_preview, describe, one_line, AuthArgs, Client, Endpoint};
use super::validate::{read_bounded_line, ReadLine};

/// The path of the ingest endpoint, which the node's other routes replace.
const EVENTS_SUFFIX: &str = "/diag/masterEvents";

/// How long a batch from standard input waits for another line before it is sent.
pub const LINGER: Duration = Duration::from_millis(200);

/// Arguments of `emit`.
#[derive(Args, Debug)]
pub struct EmitArgs {
    /// The server: its base URL (http://127.0.0.1:9898) or the full ingest URL
    /// (http://127.0.0.1:9898/diag/masterEvents).
    pub url: String,
    /// What to send: an NDJSON file, `-` for standard input (the default), or an
    /// event type (then followed by the event's fields as key=value).
    #[arg(value_name = "FILE|-|TYPE", default_value = "-")]
    pub what: String,
    /// With an event type: the event's fields. A value is read as JSON when it is
    /// JSON (43, true, ["a","b"], {"k":1}), else as a string (default, n_0@host);
    /// where the type wants a string, a JSON-looking value is kept as the string.
    #[arg(value_name = "KEY=VALUE")]
    pub fields: Vec<String>,
    /// At most this many lines per request.
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_lines: u64,
    /// At most this many bytes per request (a longer line is refused locally).
    #[arg(long, value_name = "BYTES", default_value_t = 8 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_bytes: u64,
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// What the arguments ask to send.
#[derive(Debug, PartialEq, Eq)]
pub enum Form {
    /// Standard input (`-`).
    Stdin,
    /// A file's lines.
    File(String),
    /// One event of this type, from `key=value` fields.
    Event(EventType),
}

/// Tells the two forms apart: `-` or an existing path is input to send line by line
/// (a file wins over a type of the same name); a catalog type name is one event.
pub fn form_of(what: &str, fields: &[String]) -> Result<Form> {
    let form = if what == "-" {
        Form::Stdin
    } else if Path::new(what).exists() {
        Form::File(what.to_owned())
    } else if let Ok(ty) = what.parse::<EventType>() {
        Form::Event(ty)
    } else {
        let hint = EventType::ALL
            .iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(what))
            .map(|t| format!(" (did you mean the type {t}?)"))
            .unwrap_or_default();
        bail!(
            "{what:?} is neither a file nor an event type{hint}.\n\
             Give either `emit URL FILE` (or `-` for standard input) to send NDJSON lines,\n\
             or `emit URL TYPE key=value ...` to send one event\n\
             (the types: `master-events validate --help`, GET /schemas/ on the server, or docs/events.md)"
        );
    };
    if !matches!(form, Form::Event(_)) {
        if let Some(first) = fields.first() {
            bail!(
                "unexpected argument {first:?}: key=value fields go with an event type \
                 (`emit URL TYPE key=value ...`), not with a file"
            );
        }
    }
    Ok(form)
}

/// Why an event could not be built from `key=value` arguments.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// An argument is not `key=value`, names a key twice, or sets `type`.
    #[error("{0}")]
    Usage(String),
    /// The fields do not make a valid event of the type.
    #[error("cannot build a {ty} event: {reason}{fields}")]
    Invalid {
        /// The event type.
        ty: EventType,
        /// What the parser said (it names the field).
        reason: ParseError,
        /// The fields of the type, as a hint (starts with a newline when present).
        fields: String,
    },
}

/// Builds the JSON line (with its `\n`) of one `ty` event from `key=value` fields,
/// validated by [`Record::parse`].
pub fn build_event(ty: EventType, fields: &[String]) -> Result<Vec<u8>, BuildError> {
    let mut object = Map::new();
    object.insert("type".to_owned(), Value::String(ty.as_str().to_owned()));
    // Raw text of the values read as JSON but not as strings: a fallback when the
    // type wants a string there.
    let mut raw_of: Vec<(String, String)> = Vec::new();
    for field in fields {
        let Some((key, raw)) = field.split_once('=') else {
            return Err(BuildError::Usage(format!(
                "expected key=value, got {field:?} (e.g. vbucket=43 bucket=default)"
            )));
        };
        if key.is_empty() {
            return Err(BuildError::Usage(format!(
                "{field:?} has no key before '='"
            )));
        }
        if key == "type" {
            return Err(BuildError::Usage(format!(
                "the type is {ty} (the argument before the fields); do not give type= as a field"
            )));
        }
        let value = match serde_json::from_str::<Value>(raw) {
            Ok(value) => {
                if !value.is_string() {
                    raw_of.push((key.to_owned(), raw.to_owned()));
                }
                value
            }
            Err(_) => Value::String(raw.to_owned()),
        };
        if object.insert(key.to_owned(), value).is_some() {
            return Err(BuildError::Usage(format!("field {key:?} is given twice")));
        }
    }
    loop {
        let line = serde_json::to_vec(&object)
            .map_err(|e| BuildError::Usage(format!("cannot encode the event: {e}")))?;
        match Record::parse(&line) {
            Ok(record) => return Ok(record.to_line()),
            Err(reason) => {
                // A value that read as JSON where the type wants a string: take the
                // text as typed (`name=123`, `bucket=true`), once per field.
                if let ParseError::InvalidField { field, .. } = &reason {
                    if let Some(i) = raw_of.iter().position(|(k, _)| k == field) {
                        let (key, raw) = raw_of.swap_remove(i);
                        object.insert(key, Value::String(raw));
                        continue;
                    }
                }
                return Err(BuildError::Invalid {
                    ty,
                    reason,
                    fields: fields_hint(ty),
                });
            }
        }
    }
}

/// `\nvbucketMoveDone fields: vbucket, bucket (required)` from the published schema.
fn fields_hint(ty: EventType) -> String {
    const ENVELOPE: [&str; 5] = ["type", "ts", "seq", "origin", "originSeq"];
    let Some(schema) = published::get(&format!("event/{}.json", ty.as_str()))
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
    else {
        return String::new();
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut need: Vec<&str> = required
        .iter()
        .copied()
        .filter(|k| !ENVELOPE.contains(k))
        .collect();
    need.dedup();
    let optional: Vec<&str> = schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| {
            p.keys()
                .map(String::as_str)
                .filter(|k| !ENVELOPE.contains(k) && !required.contains(k))
                .collect()
        })
        .unwrap_or_default();
    let mut hint = format!("\n{ty} fields: ");
    if need.is_empty() {
        hint.push_str("none required");
    } else {
        hint.push_str(&need.join(", "));
        hint.push_str(" (required)");
    }
    if !optional.is_empty() {
        hint.push_str("; ");
        hint.push_str(&optional.join(", "));
        hint.push_str(" (optional)");
    }
    hint
}

/// Runs the command; returns the process exit code.
pub fn run(args: &EmitArgs) -> Result<i32> {
    let form = form_of(&args.what, &args.fields)?;
    let endpoint = Endpoint::parse(&args.url)?;
    let credentials = args.auth.credentials()?;
    let client = Client::new(
        endpoint,
        credentials,
        Some(Duration::from_secs(60)),
        &args.auth,
    )?;
    let batch_bytes = usize::try_from(args.batch_bytes).unwrap_or(usize::MAX);
    let limits = Limits {
        lines: usize::try_from(args.batch_lines).unwrap_or(usize::MAX),
        bytes: batch_bytes,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match form {
        Form::Event(ty) => {
            let line = match build_event(ty, &args.fields) {
                Ok(line) => line,
                Err(BuildError::Usage(msg)) => bail!("{msg}"),
                Err(e) => {
                    eprintln!("master-events emit: {e}");
                    return Ok(1);
                }
            };
            let mut sender = Sender::new(&client, "<command line>".to_owned());
            let batch = Batch {
                body: line,
                numbers: vec![1],
            };
            runtime.block_on(async {
                Ok(match sender.send(batch).await {
                    Some(code) => code,
                    None => sender.finish(),
                })
            })
        }
        Form::File(path) => {
            let file = std::fs::File::open(&path).with_context(|| format!("cannot open {path}"))?;
            let bad =
                check_all(file, &path, batch_bytes).with_context(|| format!("reading {path}"))?;
            if bad > 0 {
                eprintln!("master-events emit: {bad} invalid lines in {path}; nothing was sent");
                return Ok(1);
            }
            let file = std::fs::File::open(&path).with_context(|| format!("cannot open {path}"))?;
            runtime.block_on(send_lines(&client, file, path, limits))
        }
        Form::Stdin => {
            if std::io::stdin().is_terminal() {
                eprintln!(
                    "master-events emit: reading NDJSON lines from the terminal (Ctrl-D ends); \
                     give a FILE or an event TYPE to send something else"
                );
            }
            runtime.block_on(send_lines(
                &client,
                std::io::stdin(),
                "<stdin>".to_owned(),
                limits,
            ))
        }
    }
}

/// Checks every line of `input`, printing each bad one (at most 20) as
/// `NAME:LINE: reason`; returns the number of bad lines.
fn check_all<R: Read>(input: R, name: &str, max_line: usize) -> std::io::Result<u64> {
    let mut reader = BufReader::with_capacity(256 * 1024, input);
    let mut buf = Vec::new();
    let mut number: u64 = 0;
    let mut bad: u64 = 0;
    loop {
        let verdict = match read_bounded_line(&mut reader, &mut buf, max_line)? {
            ReadLine::Eof => return Ok(bad),
            ReadLine::TooLong(n) => {
                number += 1;
                Some(too_long(n, max_line))
            }
            ReadLine::Line => {
                number += 1;
                check_line(&buf).err()
            }
        };
        if let Some(reason) = verdict {
            bad += 1;
            if bad <= 20 {
                eprintln!("{name}:{number}: {reason}");
            }
        }
    }
}

fn too_long(n: u64, max: usize) -> String {
    format!("line is {n} bytes, over the {max}-byte limit of one request (--batch-bytes)")
}

/// `Ok` for a blank line or a valid event line; else the reason.
fn check_line(line: &[u8]) -> Result<(), String> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    Record::parse(line).map(drop).map_err(|e| e.to_string())
}

/// The size limits of one request.
#[derive(Debug, Clone, Copy)]
struct Limits {
    lines: usize,
    bytes: usize,
}

/// What the reader thread hands over.
enum Item {
    /// A valid, non-blank line (without its newline) and its 1-based number.
    Line(u64, Vec<u8>),
    /// An invalid line: its number and why.
    Bad(u64, String),
    /// Reading failed.
    Failed(std::io::Error),
}

/// Reads, checks and batches the lines of `input`, sending each batch as it fills
/// (or, when input pauses, after [`LINGER`]).
async fn send_lines<R: Read + Send + 'static>(
    client: &Client,
    input: R,
    name: String,
    limits: Limits,
) -> Result<i32> {
    let (tx, mut rx) = mpsc::channel::<Item>(1024);
    let max_line = limits.bytes.saturating_sub(1);
    // A plain thread: standard input blocks, and the process exits without waiting
    // for it.
    std::thread::spawn(move || read_lines(input, max_line, tx));
    let mut sender = Sender::new(client, name);
    let mut batch = Batch::default();
    loop {
        let item = if batch.numbers.is_empty() {
            rx.recv().await
        } else {
            match tokio::time::timeout(LINGER, rx.recv()).await {
                Ok(item) => item,
                Err(_) => {
                    if let Some(code) = sender.send(std::mem::take(&mut batch)).await {
                        return Ok(code);
                    }
                    continue;
                }
            }
        };
        match item {
            None => break,
            Some(Item::Line(number, line)) => {
                if !batch.numbers.is_empty() && batch.body.len() + line.len() + 1 > limits.bytes {
                    if let Some(code) = sender.send(std::mem::take(&mut batch)).await {
                        return Ok(code);
                    }
                }
                batch.body.extend_from_slice(&line);
                batch.body.push(b'\n');
                batch.numbers.push(number);
                if batch.numbers.len() >= limits.lines {
                    if let Some(code) = sender.send(std::mem::take(&mut batch)).await {
                        return Ok(code);
                    }
                }
            }
            Some(Item::Bad(number, reason)) => {
                eprintln!("{}:{number}: {reason}", sender.name);
                eprintln!(
                    "master-events emit: stopped at line {number}; {}",
                    sender.delivered_so_far()
                );
                return Ok(1);
            }
            Some(Item::Failed(e)) => {
                return Err(e).with_context(|| format!("reading {}", sender.name));
            }
        }
    }
    if !batch.numbers.is_empty() {
        if let Some(code) = sender.send(batch).await {
            return Ok(code);
        }
    }
    eprintln!(
        "master-events emit: {} lines sent to {} in {} request{}",
        sender.lines_sent,
        client.endpoint(),
        sender.requests,
        if sender.requests == 1 { "" } else { "s" }
    );
    Ok(sender.finish())
}

/// The reader thread: numbered, checked lines into `tx`, until the end, an invalid
/// line or a read error.
fn read_lines<R: Read>(input: R, max_line: usize, tx: mpsc::Sender<Item>) {
    let mut reader = BufReader::with_capacity(256 * 1024, input);
    let mut number: u64 = 0;
    loop {
        let mut buf = Vec::new();
        let item = match read_bounded_line(&mut reader, &mut buf, max_line) {
            Ok(ReadLine::Eof) => return,
            Ok(ReadLine::TooLong(n)) => {
                number += 1;
                Item::Bad(number, too_long(n, max_line))
            }
            Ok(ReadLine::Line) => {
                number += 1;
                if buf.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match check_line(&buf) {
                    Ok(()) => Item::Line(number, buf),
                    Err(reason) => Item::Bad(number, reason),
                }
            }
            Err(e) => Item::Failed(e),
        };
        let last = !matches!(item, Item::Line(..));
        if tx.blocking_send(item).is_err() || last {
            return;
        }
    }
}

/// One request's lines.
#[derive(Debug, Default)]
struct Batch {
    /// The NDJSON body.
    body: Vec<u8>,
    /// The input line number of each body line.
    numbers: Vec<u64>,
}

/// Sends batches and keeps count.
struct Sender<'a> {
    client: &'a Client,
    /// The input's name for messages (a path, `<stdin>`).
    name: String,
    lines_sent: u64,
    requests: u64,
    /// The input line number of the last line the server took.
    last_delivered: Option<u64>,
    /// Lines the server only queued (202), and what it said about why.
    queued: u64,
    queued_note: Option<String>,
}

impl<'a> Sender<'a> {
    fn new(client: &'a Client, name: String) -> Self {
        Sender {
            client,
            name,
            lines_sent: 0,
            requests: 0,
            last_delivered: None,
            queued: 0,
            queued_note: None,
        }
    }

    /// The exit code once everything was sent: 3 (and why) when some lines were
    /// only queued, else 0.
    fn finish(&self) -> i32 {
        match &self.queued_note {
            Some(note) => {
                eprintln!(
                    "master-events emit: {} of {} lines {note}; they stay queued on that node \
                     and are sequenced once the master takes them",
                    self.queued, self.lines_sent
                );
                3
            }
            None => 0,
        }
    }

    /// Why a node answered 202: which node queued the lines and what it says of
    /// its master (`queued by NODE, not yet sequenced: ...`).
    async fn why_queued(&self) -> String {
        let base = self.client.endpoint().url().clone();
        let path = base.path().trim_end_matches(EVENTS_SUFFIX).to_owned();
        let ask = |route: &str| {
            let mut url = base.clone();
            url.set_path(&format!("{path}{route}"));
            let request = self.client.get(url).timeout(Duration::from_secs(5));
            async move {
                let response = request.send().await.ok()?;
                let text = response.text().await.ok()?;
                serde_json::from_str::<Value>(&text).ok()
            }
        };
        let (cluster, ready) = tokio::join!(ask("/cluster"), ask("/ready"));
        let cluster = cluster.unwrap_or_default();
        let node = cluster["node"]
            .as_str()
            .map(one_line)
            .unwrap_or_else(|| self.client.endpoint().to_string());
        let reason = ready
            .as_ref()
            .and_then(|r| r["reason"].as_str())
            .map(one_line);
        let last_error = cluster["forwarding"]["lastError"].as_str().map(one_line);
        let detail = reason
            .or(last_error)
            .unwrap_or_else(|| "no reason given".to_owned());
        let why = if cluster["forwarding"]["state"] == "refused" {
            format!("the master refuses this node ({detail})")
        } else if cluster["masterReachable"] == false {
            format!("the master is unreachable ({detail})")
        } else {
            format!("the master did not confirm them in time ({detail})")
        };
        format!("queued by {node}, not yet sequenced: {why}")
    }

    fn delivered_so_far(&self) -> String {
        match self.last_delivered {
            Some(n) => format!(
                "the lines up to line {n} were delivered ({} lines)",
                self.lines_sent
            ),
            None => "nothing was sent".to_owned(),
        }
    }

    /// POSTs one batch and prints the server's reply. `None` when it was taken;
    /// otherwise the exit code, after saying what happened.
    async fn send(&mut self, batch: Batch) -> Option<i32> {
        let endpoint = self.client.endpoint();
        let (first, last) = match (batch.numbers.first(), batch.numbers.last()) {
            (Some(&f), Some(&l)) => (f, l),
            _ => return None,
        };
        let size = batch.body.len();
        let count = batch.numbers.len();
        let lines = if first == last {
            format!("line {first}")
        } else {
            format!("lines {first} to {last}")
        };
        let response = match self.client.post_ndjson(batch.body).send().await {
            Ok(r) => r,
            Err(e) => {
                if e.is_connect() {
                    eprintln!(
                        "master-events emit: cannot reach {endpoint}: {}; {}",
                        describe(e),
                        self.delivered_so_far()
                    );
                } else {
                    eprintln!(
                        "master-events emit: sending {lines} to {endpoint} failed: {}; whether the \
                         server took them is unknown; {}",
                        describe(e),
                        self.delivered_so_far()
                    );
                }
                return Some(1);
            }
        };
        let status = response.status();
        if let Some(refusal) = self.client.refusal(status) {
            eprintln!("master-events emit: {refusal}");
            return Some(1);
        }
        if status.is_success() {
            let reply = body_preview(response, 64 * 1024).await;
            // A reader that went away (`| head`) is not an error; the events were sent.
            let printed = writeln!(std::io::stdout(), "{reply}");
            if status == StatusCode::ACCEPTED {
                self.queued += count as u64;
                if self.queued_note.is_none() {
                    let note = self.why_queued().await;
                    eprintln!("master-events emit: {lines} {note}");
                    self.queued_note = Some(note);
                }
            }
            if let Err(e) = printed.and_then(|()| std::io::stdout().flush()) {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    eprintln!("master-events emit: writing standard output: {e}");
                }
            }
            self.requests += 1;
            self.lines_sent += count as u64;
            self.last_delivered = Some(last);
            return None;
        }
        let body = body_preview(response, 8 * 1024).await;
        match status {
            StatusCode::BAD_REQUEST => {
                let (error, line) = serde_json::from_str::<Value>(&body)
                    .ok()
                    .map(|v| {
                        (
                            v.get("error").and_then(Value::as_str).map(one_line),
                            v.get("line").and_then(Value::as_u64),
                        )
                    })
                    .unwrap_or((None, None));
                let at = line
                    .and_then(|l| usize::try_from(l).ok()?.checked_sub(1))
                    .and_then(|i| batch.numbers.get(i).copied());
                let reason = error.unwrap_or(body);
                match at {
                    Some(n) => {
                        eprintln!("{}:{n}: the server refused the line: {reason}", self.name)
                    }
                    None => {
                        eprintln!("master-events emit: the server refused {lines} (400): {reason}")
                    }
                }
                eprintln!(
                    "master-events emit: nothing of {lines} was taken; {}",
                    self.delivered_so_far()
                );
            }
            StatusCode::PAYLOAD_TOO_LARGE => eprintln!(
                "master-events emit: the server refused a request of {size} bytes ({count} lines) \
                 as too large (413); lower --batch-bytes or --batch-lines; {}",
                self.delivered_so_far()
            ),
            // Not an ingest at all: most often another server at that address.
            StatusCode::NOT_FOUND
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::NOT_IMPLEMENTED => {
                eprintln!(
                    "master-events emit: {endpoint} answered {status}: is this a master-events \
                     server (events are sent with POST /diag/masterEvents)?; {lines} not taken; {}",
                    self.delivered_so_far()
                );
            }
            _ => {
                let said = if body.is_empty() {
                    String::new()
                } else {
                    format!(": {body}")
                };
                eprintln!(
                    "master-events emit: {endpoint} answered {status}{said}; {lines} \
                     not taken; {}",
                    self.delivered_so_far()
                );
            }
        }
        Some(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(f: &[&str]) -> Vec<String> {
        f.iter().map(|s| (*s).to_owned()).collect()
    }

    fn json(line: &[u8]) -> Value {
        serde_json::from_slice(line).expect("the built line is JSON")
    }

    #[test]
    fn values_read_as_json_when_they_are_json_else_as_strings() {
        let line = build_event(
            EventType::VbucketMoveDone,
            &fields(&["vbucket=43", "bucket=default"]),
        )
        .expect("valid event");
        assert_eq!(
            json(&line),
            serde_json::json!({"type":"vbucketMoveDone","vbucket":43,"bucket":"default"})
        );
        assert!(line.ends_with(b"\n"));
        let line = build_event(
            EventType::Failover,
            &fields(&[r#"hosts=["10.0.0.1:8091","10.0.0.2:8091"]"#]),
        )
        .expect("valid event");
        assert_eq!(
            json(&line)["hosts"],
            serde_json::json!(["10.0.0.1:8091", "10.0.0.2:8091"])
        );
    }

    #[test]
    fn a_json_looking_value_stays_a_string_where_the_type_wants_one() {
        let line =
            build_event(EventType::DeleteBucket, &fields(&["bucket=123"])).expect("valid event");
        assert_eq!(json(&line)["bucket"], serde_json::json!("123"));
        let line = build_event(EventType::DeleteBucket, &fields(&["bucket=\"quoted\""]))
            .expect("valid event");
        assert_eq!(json(&line)["bucket"], serde_json::json!("quoted"));
    }

    #[test]
    fn a_missing_field_is_named_with_the_fields_of_the_type() {
        let err = build_event(EventType::VbucketMoveDone, &fields(&["vbucket=43"]))
            .expect_err("bucket is required")
            .to_string();
        assert!(err.contains("missing field \"bucket\""), "{err}");
        assert!(
            err.contains("vbucketMoveDone fields: vbucket, bucket (required)"),
            "{err}"
        );
    }

    #[test]
    fn a_wrongly_typed_value_is_named() {
        let err = build_event(
            EventType::VbucketMoveDone,
            &fields(&["vbucket=lots", "bucket=default"]),
        )
        .expect_err("vbucket is a number")
        .to_string();
        assert!(err.contains("field \"vbucket\""), "{err}");
    }

    #[test]
    fn malformed_fields_are_usage_errors() {
        for bad in [
            &["vbucket"][..],
            &["=1"],
            &["type=x"],
            &["bucket=a", "bucket=b"],
        ] {
            assert!(
                matches!(
                    build_event(EventType::DeleteBucket, &fields(bad)),
                    Err(BuildError::Usage(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_form_is_a_file_stdin_or_a_type() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("events.ndjson");
        std::fs::write(&file, b"").expect("write");
        let path = file.to_string_lossy().into_owned();
        assert_eq!(form_of("-", &[]).ok(), Some(Form::Stdin));
        assert_eq!(form_of(&path, &[]).ok(), Some(Form::File(path.clone())));
        assert_eq!(
            form_of("vbucketMoveDone", &fields(&["vbucket=1"])).ok(),
            Some(Form::Event(EventType::VbucketMoveDone))
        );
        let err = form_of("nosuchthing", &[])
            .expect_err("neither")
            .to_string();
        assert!(
            err.contains("emit URL FILE") && err.contains("emit URL TYPE"),
            "{err}"
        );
        assert!(form_of(&path, &fields(&["a=1"])).is_err());
    }

    #[test]
    fn check_all_names_each_bad_line() {
        let input =
            b"{\"type\":\"deleteBucket\",\"bucket\":\"a\"}\n\n{\"type\":\"deleteBucket\"}\n";
        assert_eq!(check_all(&input[..], "x", 1024).ok(), Some(1));
    }
}
