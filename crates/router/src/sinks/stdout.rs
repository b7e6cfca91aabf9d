//! The `stdout` sink: events on the process's standard output, as JSON lines or in a
//! readable one-line format.
//!
//! Promises: `json` writes each event's line exactly as it is on the wire (and a gap
//! frame where events were missed); `line` writes one line per event,
//! `#<seq> <HH:MM:SS.micros UTC> <type> key=value ...` (envelope fields left out, the
//! other fields in key order), e.g.
//! `#12 14:03:05.123456 vbucketMoveDone bucket=default vbucket=43`. A write error
//! (e.g. a closed pipe) is logged once, and the sink keeps consuming.

use std::io::{self, BufWriter, Write};

use master_events_events::{Gap, Timestamp};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::config::ConfigError;
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
                tracing::warn!(error = %e, "master-events: the stdout sink cannot write; its output is lost from now on");
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
            StdoutFormat::Line => self.scratch.extend_from_slice(
                format!(
                    "# gap: {} events missed (seq {} to {}): {}\n",
                    gap.missed, gap.from_seq, gap.to_seq, gap.reason
                )
                .as_bytes(),
            ),
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

/// Appends the readable form of a JSON event line to `out` (with `\n`):
/// `#<seq> <HH:MM:SS.micros> <type> key=value ...`. A line that is not a JSON object
/// is written as it is.
pub fn readable_line(line: &[u8], out: &mut Vec<u8>) {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(line) else {
        out.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            out.push(b'\n');
        }
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
                    && !s.contains(|c: char| c.is_whitespace() || c == '"' || c == '=') =>
            {
                text.push_str(s)
            }
            other => text.push_str(&other.to_string()),
        }
    }
    text.push('\n');
    out.extend_from_slice(text.as_bytes());
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
}
