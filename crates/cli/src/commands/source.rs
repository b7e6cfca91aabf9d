//! Where an event log comes from, for `report` and `trace`: a file, standard input,
//! or the archive of a running server fetched over HTTP.
//!
//! Owns: the `SOURCE` argument ([`SourceArgs`], read by [`Source::parse`]), opening
//! it as a buffered reader ([`open`]), the progress bar of a file read
//! ([`log_reader`]) and the one-line notice of what could not be read
//! ([`warn_unread`]).
//!
//! Promises:
//! - Streaming in every case: a file or standard input is read through a 64 KiB
//!   buffer; a server's archive (`GET URL/diag/masterEvents?o=1`, the retained events
//!   once) is read chunk by chunk as it arrives, at most a few chunks ahead of the
//!   reader (a bounded channel), never held whole.
//! - A server is asked with the credentials of `--user` / `MASTER_EVENTS_AUTH`, as
//!   `tail` and `emit` do (see [`super::client`]): never from the URL, and the
//!   password never appears in a message.
//! - A refusal (401/403), an error status, an unreachable server or a dropped
//!   connection ends the read with an I/O error that names the endpoint; the
//!   caller turns it into exit code 2.
//! - The progress bar is drawn on standard error only when standard error is a
//!   terminal and the source is a file (whose size is known); it is cleared when the
//!   read ends, so standard output holds only the report.

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::{Buf, Bytes};
use clap::Args;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use master_events_report::{LogReader, ReadSummary};

use super::client::{body_preview, describe, AuthArgs, Client, Endpoint};

/// The size of the read buffer of a file or standard input.
const READ_BUFFER: usize = 64 * 1024;

/// How many chunks of a server's answer may wait for the reader.
const CHUNKS_AHEAD: usize = 8;

/// How long a read of a server's answer may stall before the fetch fails.
const SERVER_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// How many bad lines [`warn_unread`] quotes.
const QUOTED_BAD_LINES: usize = 3;

/// The `SOURCE` argument and the credentials for a server, shared by `report` and
/// `trace`.
#[derive(Args, Debug, Clone)]
pub struct SourceArgs {
    /// The event log: a file (this project's NDJSON stream or an ns_server
    /// master_events.log), `-` for standard input, or a server's http:// URL (its
    /// retained events are fetched once, as with `tail --once`).
    #[arg(value_name = "SOURCE")]
    pub source: String,
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// What `SOURCE` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Standard input (`-`).
    Stdin,
    /// A file.
    File(PathBuf),
    /// A server: its base URL or its full stream URL.
    Server(String),
}

impl Source {
    /// Reads the argument: `-` is standard input, a URL starting with `http://` or
    /// `https://` is a server, anything else a file path.
    pub fn parse(arg: &str) -> Source {
        let lower = arg.trim_start().to_ascii_lowercase();
        if arg == "-" {
            Source::Stdin
        } else if lower.starts_with("http://") || lower.starts_with("https://") {
            Source::Server(arg.to_owned())
        } else {
            Source::File(PathBuf::from(arg))
        }
    }
}

/// An opened source: the reader, and the file's size when it is a file.
pub struct Opened {
    /// The bytes of the log.
    pub reader: Box<dyn BufRead + Send>,
    /// The size of the file, for a progress bar; `None` for stdin or a server.
    pub len: Option<u64>,
    /// How to name the source in messages (a server's endpoint, without
    /// credentials).
    pub name: String,
}

/// Opens the source named by `args`. A server is not contacted yet: its errors come
/// with the first read.
pub fn open(args: &SourceArgs) -> Result<Opened> {
    match Source::parse(&args.source) {
        Source::Stdin => Ok(Opened {
            reader: Box::new(BufReader::with_capacity(READ_BUFFER, io::stdin())),
            len: None,
            name: "standard input".to_owned(),
        }),
        Source::File(path) => {
            let file =
                File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
            let len = file.metadata().ok().map(|m| m.len());
            Ok(Opened {
                reader: Box::new(BufReader::with_capacity(READ_BUFFER, file)),
                len,
                name: path.display().to_string(),
            })
        }
        Source::Server(url) => {
            let endpoint = Endpoint::parse(&url)?;
            let credentials = args.auth.credentials()?;
            let name = endpoint.to_string();
            let client = Client::new(endpoint, credentials, Some(SERVER_READ_TIMEOUT), &args.auth)?;
            Ok(Opened {
                reader: Box::new(fetch_archive(client)?),
                len: None,
                name,
            })
        }
    }
}

/// A [`LogReader`] over `opened`, with a progress bar on standard error when that
/// is a terminal and the size is known. Call [`ProgressBar::finish_and_clear`] on
/// the bar (if any) when the read is over.
pub fn log_reader(
    opened: Opened,
) -> (
    LogReader<'static, Box<dyn BufRead + Send>>,
    Option<ProgressBar>,
) {
    let reader = LogReader::new(opened.reader);
    match opened.len {
        Some(len) if io::stderr().is_terminal() => {
            let bar = ProgressBar::new(len);
            let style = ProgressStyle::with_template(
                "{msg} [{wide_bar}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(format!("reading {}", opened.name));
            let hook = bar.clone();
            (
                reader.with_progress(move |bytes| hook.set_position(bytes)),
                Some(bar),
            )
        }
        _ => (reader, None),
    }
}

/// Tells on standard error, in one line, what of the input was not read as events:
/// the bad lines (their count and the first few, with their line numbers) and the
/// events the stream said were missed; and how many lines were read as rewritten
/// from ns_server's 2012 form. Says nothing when everything was read as it stands.
pub fn warn_unread(command: &str, name: &str, summary: &ReadSummary) {
    if summary.bad_lines > 0 {
        let quoted: Vec<String> = summary
            .first_bad_lines
            .iter()
            .take(QUOTED_BAD_LINES)
            .map(|bad| super::client::one_line(&bad.to_string()))
            .collect();
        let more = summary.bad_lines.saturating_sub(quoted.len() as u64);
        let more = if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        };
        eprintln!(
            "master-events {command}: {name}: skipped {} bad line(s) of {}: {}{more}",
            summary.bad_lines,
            summary.lines,
            quoted.join("; ")
        );
    }
    if summary.legacy_lines > 0 {
        eprintln!(
            "master-events {command}: {name}: read {} line(s) in ns_server's 2012 form \
             (numbers as strings, quoted node names, ...) as rewritten in the current form \
             (docs/legacy-logs.md)",
            summary.legacy_lines
        );
    }
    if summary.gaps > 0 {
        eprintln!(
            "master-events {command}: {name}: the stream reported {} gap(s): some events \
             were no longer retained and are missing from this report",
            summary.gaps
        );
    }
}

/// A writer that remembers whether a write failed, and whether because the reader
/// went away (`| head` closed the pipe): that ends the output early but is not a
/// failure of the command. The errors themselves pass through unchanged; what it
/// remembers tells a caller whose work both reads and writes which side failed.
pub struct PipeWatch<W> {
    inner: W,
    closed: bool,
    failed: bool,
}

impl<W: Write> PipeWatch<W> {
    /// Watches `inner`.
    pub fn new(inner: W) -> Self {
        PipeWatch {
            inner,
            closed: false,
            failed: false,
        }
    }

    /// Whether a write or flush failed (the pipe closed, a full disk, ...).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Whether a write or flush met a closed pipe.
    pub fn closed(&self) -> bool {
        self.closed
    }

    fn note<T>(&mut self, result: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &result {
            self.failed = true;
            if e.kind() == io::ErrorKind::BrokenPipe {
                self.closed = true;
            }
        }
        result
    }
}

impl<W: Write> Write for PipeWatch<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let result = self.inner.write(buf);
        self.note(result)
    }

    fn flush(&mut self) -> io::Result<()> {
        let result = self.inner.flush();
        self.note(result)
    }
}

/// Starts fetching the server's archive (`?o=1`) on a thread of its own and returns
/// the reader of its body.
fn fetch_archive(client: Client) -> Result<ChannelReader> {
    let mut url = client.endpoint().url().clone();
    url.query_pairs_mut().append_pair("o", "1");
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(CHUNKS_AHEAD);
    std::thread::Builder::new()
        .name("archive-fetch".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.blocking_send(Err(io::Error::other(format!(
                        "cannot start the async runtime: {e}"
                    ))));
                    return;
                }
            };
            runtime.block_on(async move {
                if let Err(message) = send_body(&client, url, &tx).await {
                    let _ = tx.send(Err(io::Error::other(message))).await;
                }
            });
        })
        .context("starting the fetch thread")?;
    Ok(ChannelReader {
        rx,
        current: Bytes::new(),
    })
}

/// GETs `url` and forwards its body to `tx`, chunk by chunk; the error is the
/// message for the user. Returns early (`Ok`) when the reader is gone.
async fn send_body(
    client: &Client,
    url: reqwest::Url,
    tx: &tokio::sync::mpsc::Sender<io::Result<Bytes>>,
) -> Result<(), String> {
    let endpoint = client.endpoint();
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("cannot reach {endpoint}: {}", describe(e)))?;
    let status = response.status();
    if let Some(refusal) = client.refusal(status) {
        return Err(format!("{endpoint}: {refusal}"));
    }
    if !status.is_success() {
        let body = body_preview(response, 2000).await;
        let said = if body.is_empty() {
            String::new()
        } else {
            format!(": {body}")
        };
        return Err(format!("{endpoint} answered {status}{said}"));
    }
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| format!("reading the answer of {endpoint}: {}", describe(e)))?;
        if tx.send(Ok(chunk)).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Reads the chunks a fetch thread sends; the end of the channel is the end of the
/// input.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, amount: usize) {
        self.current.advance(amount.min(self.current.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dash_is_stdin_a_url_is_a_server_anything_else_a_file() {
        assert_eq!(Source::parse("-"), Source::Stdin);
        assert_eq!(
            Source::parse("http://127.0.0.1:8091"),
            Source::Server("http://127.0.0.1:8091".into())
        );
        assert_eq!(
            Source::parse("HTTPS://example.org/"),
            Source::Server("HTTPS://example.org/".into())
        );
        assert_eq!(
            Source::parse("logs/master_events.log"),
            Source::File(PathBuf::from("logs/master_events.log"))
        );
    }

    #[test]
    fn the_channel_reader_yields_every_chunk_then_the_end() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut reader = ChannelReader {
            rx,
            current: Bytes::new(),
        };
        let sent = std::thread::spawn(move || {
            for part in ["{\"a\":", "1}\n", "", "x\n"] {
                if tx.blocking_send(Ok(Bytes::from(part))).is_err() {
                    return;
                }
            }
        });
        let mut text = String::new();
        let read = reader.read_to_string(&mut text);
        let _ = sent.join();
        assert_eq!(read.ok(), Some(10));
        assert_eq!(text, "{\"a\":1}\nx\n");
    }

    #[test]
    fn an_error_sent_by_the_fetch_ends_the_read_with_it() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut reader = ChannelReader {
            rx,
            current: Bytes::new(),
        };
        let _ = tx.try_send(Ok(Bytes::from_static(b"line\n")));
        let _ = tx.try_send(Err(io::Error::other("server went away")));
        let mut line = String::new();
        assert_eq!(reader.read_line(&mut line).ok(), Some(5));
        let err = reader.read_line(&mut String::new()).err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some("server went away".to_owned())
        );
    }

    #[test]
    fn a_closed_pipe_is_remembered_and_other_errors_are_not() {
        struct Failing(io::ErrorKind);
        impl Write for Failing {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(self.0))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut pipe = PipeWatch::new(Failing(io::ErrorKind::BrokenPipe));
        assert!(pipe.write_all(b"x").is_err());
        assert!(pipe.closed());
        let mut disk = PipeWatch::new(Failing(io::ErrorKind::StorageFull));
        assert!(disk.write_all(b"x").is_err());
        assert!(!disk.closed());
    }
}
