//! The `stdout` sink: events on the process's standard output, as JSON lines or in a
//! readable one-line format.
//!
//! Promises: `json` writes each event's line exactly as it is on the wire (and a gap
//! frame where events were missed); `line` writes one line per event,
//! `#<seq> <HH:MM:SS.micros UTC> <type> key=value ...` (envelope fields left out, the
//! other fields in key order), e.g.
//! `#12 14:03:05.123456 vbucketMoveDone bucket=default vbucket=43`. A write error
//! (e.g. a closed pipe) is logged once, and the sink keeps consuming.
//!
//! The `line` format is for a terminal, and events carry what any ingest client
//! sent: it writes no control character (C0, DEL or C1, e.g. ESC or BEL) raw,
//! anywhere in the line (type, keys, values, a gap's reason). Each is written as the
//! JSON escape `\u00XX`, so `bucket=\u001b[2J` shows what was sent and the terminal
//! does nothing with it. A value with a control character or a backslash is quoted,
//! as JSON, like one with a space.

use std::io::{self, BufWriter, Write};

use master_events_events::{Gap, Timestamp};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ConfigError;
use crate::registry::{SinkConfig, SinkContext};
use crate::sink::{Sink, SinkBatch};

/// How the `stdout` sink writes events.
#[derive(Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StdoutFormat {
    /// The JSON lines, as on the wire.
    #[default]
    Json,
    /// One readable line per event: `#12 14:03:05.123456 vbucketMoveDone bucket=default vbucket=43`.
    Line,
}

/// Writes events to standard output.
#[derive(Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {
    /// `json` (default): the JSON lines as they are on the wire; `line`: one readable
    /// line per event.
    #[serde(default)]
    pub format: StdoutFormat,
}

impl SinkConfig for StdoutConfig {
    const NAME: &'static str = "stdout";
    const DESCRIPTION: &'static str =
        "writes events to standard output, as JSON lines or readable lines";

    fn build(self, _ctx: &SinkContext) -> Result<Box<dyn Sink>, ConfigError> {
        Ok(Box::new(StdoutSink::new(
            self.format,
            Box::new(io::stdout()),
        )))
    }
}

crate::register_sink!(StdoutConfig);

/// The running `stdout` sink (writing to any writer, for tests and reuse).
pub struct StdoutSink {
    format: StdoutFormat,
    out: BufWriter<Box<dyn Write + Send>>,
    failed: bool,
    scratch: Vec<u8>,
}

impl StdoutSink {
    /// A sink writing in `format` to `out`.
    pub fn new(format: StdoutFormat, out: Box<dyn Write + Send>) -> StdoutSink {
        StdoutSink {
            format,
            out: BufWriter::with_capacity(64 * 1024, out),
            failed: false,
            scratch: Vec::new(),
        }
    }

    fn check(&mut self, result: io::Result<()>) {
        if let Err(e) = result {
            if !self.failed {
                self.failed = true;
                tracing::warn!(error = %e, "the stdout sink cannot write; its output is lost from now on");
            }
        }
    }
}

impl Sink for StdoutSink {
    fn on_batch(&mut self, batch: &SinkBatch<'_>) {
        if self.failed {
            return;
        }
        let result = match self.format {
            StdoutFormat::Json => self.out.write_all(&batch.bytes()),
            StdoutFormat::Line => {
                self.scratch.clear();
                for event in batch.iter() {
                    readable_line(event.line, &mut self.scratch);
                }
                self.out.write_all(&self.scratch)
            }
        };
        self.check(result);
    }

    fn on_gap(&mut self, gap: &Gap) {
        if self.failed {
            return;
        }
        self.scratch.clear();
        match self.format {
            StdoutFormat::Json => gap.encode_line(&mut self.scratch),
            StdoutFormat::Line => {
                let text = format!(
                    "# gap: {} events missed (seq {} to {}): {}",
                    gap.missed, gap.from_seq, gap.to_seq, gap.reason
                );
                push_escaped(&text, &mut self.scratch);
                self.scratch.push(b'\n');
            }
        }
        let result = self.out.write_all(&self.scratch);
        self.check(result);
    }

    fn flush(&mut self) {
        if !self.failed {
            let result = self.out.flush();
            self.check(result);
        }
    }
}

/// Appends `text` to `out` with every control character (C0, DEL, C1: what a
/// terminal may act on) written as the JSON escape `\u00XX`.
fn push_escaped(text: &str, out: &mut Vec<u8>) {
    let mut rest = text;
    while let Some(at) = rest.find(char::is_control) {
        out.extend_from_slice(&rest.as_bytes()[..at]);
        let mut chars = rest[at..].chars();
        if let Some(c) = chars.next() {
            out.extend_from_slice(format!("\\u{:04x}", u32::from(c)).as_bytes());
        }
        rest = chars.as_str();
    }
    out.extend_from_slice(rest.as_bytes());
}

/// Appends the readable form of a JSON event line to `out` (with `\n`):
/// `#<seq> <HH:MM:SS.micros> <type> key=value ...`. A line that is not a JSON object
/// is written as it is (invalid UTF-8 replaced). Either way no control character is
/// written raw (see the [module documentation](self)).
pub fn readable_line(line: &[u8], out: &mut Vec<u8>) {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(line) else {
        let text = String::from_utf8_lossy(line);
        push_escaped(text.trim_end_matches(['\n', '\r']), out);
        out.push(b'\n');
        return;
    };
    let mut text = String::with_capacity(line.len());
    if let Some(seq) = fields.get("seq").and_then(Value::as_u64) {
        text.push_str(&format!("#{seq} "));
    }
    if let Some(ts) = fields
        .get("ts")
        .and_then(Value::as_f64)
        .and_then(Timestamp::from_secs_f64)
    {
        let tod = ts.as_micros().rem_euclid(86_400_000_000);
        let secs = tod / 1_000_000;
        text.push_str(&format!(
            "{:02}:{:02}:{:02}.{:06} ",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            tod % 1_000_000
        ));
    }
    text.push_str(fields.get("type").and_then(Value::as_str).unwrap_or("?"));
    for (key, value) in &fields {
        if matches!(key.as_str(), "type" | "seq" | "ts" | "origin" | "originSeq") {
            continue;
        }
        text.push(' ');
        text.push_str(key);
        text.push('=');
        match value {
            Value::String(s)
                if !s.is_empty()
                    && !s.contains(|c: char| {
                        c.is_whitespace() || c.is_control() || matches!(c, '"' | '=' | '\\')
                    }) =>
            {
                text.push_str(s)
            }
            other => text.push_str(&other.to_string()),
        }
    }
    push_escaped(&text, out);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(line: &str) -> String {
        let mut out = Vec::new();
        readable_line(line.as_bytes(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn line_format_is_seq_time_type_and_sorted_fields() {
        assert_eq!(
            readable(
                r#"{"type":"vbucketMoveDone","seq":12,"ts":1333576985.123456,"origin":"n_0@a","vbucket":43,"bucket":"default"}"#
            ),
            "#12 22:03:05.123456 vbucketMoveDone bucket=default vbucket=43\n"
        );
    }

    #[test]
    fn line_format_quotes_what_would_be_ambiguous() {
        assert_eq!(
            readable(
                r#"{"type":"rebalanceEnd","reason":"bad thing","pid":"<0.1.0>","chain":["a",""]}"#
            ),
            "rebalanceEnd chain=[\"a\",\"\"] pid=<0.1.0> reason=\"bad thing\"\n"
        );
    }

    #[test]
    fn line_format_writes_no_control_character_raw() {
        let line = r#"{"type":"deleteBucket\u0007","seq":3,"bucket":"\u001b[2J\u001b[31mFAKE\u0007","k\u001b]0;x\u0007":"a\u007fb\u009bc","d":{"e":"\u0085\u009d"},"q":"two words\u001b"}"#;
        let text = readable(line);
        assert!(
            !text.trim_end_matches('\n').contains(char::is_control),
            "{text:?}"
        );
        assert_eq!(
            text,
            "#3 deleteBucket\\u0007 bucket=\"\\u001b[2J\\u001b[31mFAKE\\u0007\" d={\"e\":\"\\u0085\\u009d\"} k\\u001b]0;x\\u0007=\"a\\u007fb\\u009bc\" q=\"two words\\u001b\"\n"
        );
    }

    #[test]
    fn a_line_that_is_not_an_object_and_a_gap_reason_are_escaped_too() {
        assert_eq!(
            readable("not json \u{1b}[2J\u{9b}"),
            "not json \\u001b[2J\\u009b\n"
        );
        let mut sink = StdoutSink::new(StdoutFormat::Line, Box::new(io::sink()));
        sink.on_gap(&Gap::new(1, 2, "evicted \u{7}\u{1b}[31m"));
        let written = String::from_utf8_lossy(&sink.scratch).into_owned();
        assert_eq!(
            written,
            "# gap: 2 events missed (seq 1 to 2): evicted \\u0007\\u001b[31m\n"
        );
    }

    #[test]
    fn a_value_with_a_backslash_is_quoted_so_it_cannot_pass_for_an_escape() {
        assert_eq!(
            readable(r#"{"type":"deleteBucket","bucket":"\\u001b"}"#),
            "deleteBucket bucket=\"\\\\u001b\"\n"
        );
    }
}
