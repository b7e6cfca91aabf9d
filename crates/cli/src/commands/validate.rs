//! `master-events validate`: checks every line of an NDJSON file (this project's
//! stream, or an ns_server `master_events.log`) against the published schema files.
//!
//! Owns: the per-line verdict and the summary.
//!
//! Promises:
//! - Streaming: memory is bounded by `--max-line-bytes` whatever the input's size; a
//!   longer line is reported and skipped without being held in memory.
//! - Each line is checked twice: by the JSON Schema file of its type (the committed
//!   artefact consumers use, through the `jsonschema` crate) and by the typed parser
//!   (which also catches what a JSON value cannot show, such as duplicate keys). The
//!   first complaint is reported with the line number, the type and the field.
//! - A line without `ts` that would pass as an ingest line (one written to be sent,
//!   which the server stamps) is counted, and the summary says once that `--ingest`
//!   checks such lines.
//! - `--help` lists every event type.
//! - Never panics on input; exit code 0 when every line is valid, 1 otherwise, 2 on
//!   usage or I/O errors.

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::source::PipeWatch;
use anyhow::{anyhow, Context, Result};
use clap::Args;
use master_events_events::{parse_line, published, EventType};
use serde_json::Value;

/// Arguments of `validate`.
#[derive(Args, Debug)]
#[command(after_long_help = event_types_help())]
pub struct ValidateArgs {
    /// The NDJSON file to check; `-` (the default) reads standard input.
    #[arg(default_value = "-")]
    pub file: String,
    /// Lines longer than this many bytes are reported as errors and skipped.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024,
          value_parser = parse_count::<usize>)]
    pub max_line_bytes: usize,
    /// Read the schema files from this directory instead of the copies built into
    /// the binary (e.g. to check a file against an edited schema).
    #[arg(long)]
    pub schemas: Option<PathBuf>,
    /// Check lines as ingest lines (`ts` optional) instead of stream lines.
    #[arg(long)]
    pub ingest: bool,
    /// Print at most this many bad lines (the summary still counts all of them).
    #[arg(long, value_name = "N", value_parser = parse_count::<u64>)]
    pub max_errors: Option<u64>,
    /// Read lines of ns_server's 2012 form too (numbers and vbuckets as strings,
    /// quoted node atoms, ...): each is checked as rewritten in the current form, and
    /// the summary says how many were (docs/legacy-logs.md).
    #[arg(long)]
    pub legacy: bool,
}

/// A count or size given on the command line: a whole number, 0 or more, said in
/// those words when it is not one (or is too large to be one).
pub(crate) fn parse_count<T: std::str::FromStr>(s: &str) -> std::result::Result<T, String> {
    s.trim()
        .parse::<T>()
        .map_err(|_| "not a whole number of 0 or more (digits only, e.g. 10)".to_owned())
}

/// The list of event types at the end of `validate --help`, wrapped to 80 columns.
fn event_types_help() -> String {
    let mut text = format!(
        "Event types ({}; a server serves each one's schema at GET /schemas/event/TYPE.json):",
        EventType::ALL.len()
    );
    let mut line = String::from(" ");
    for ty in EventType::ALL {
        if line.len() + ty.as_str().len() + 1 > 80 {
            text.push('\n');
            text.push_str(line.trim_end());
            line = String::from(" ");
        }
        line.push(' ');
        line.push_str(ty.as_str());
    }
    text.push('\n');
    text.push_str(line.trim_end());
    text
}

/// The schema validators, one per line type.
pub struct Validators {
    by_type: HashMap<String, jsonschema::Validator>,
    /// For stream lines: the schema directory, to load the ingest validators with.
    dir: Option<PathBuf>,
    /// For stream lines: the ingest validators, loaded when a line without `ts`
    /// fails (`None` inside if they could not be).
    as_ingest: OnceCell<Option<Box<Validators>>>,
}

impl Validators {
    /// Compiles the validators from the schema files built into the binary, or from
    /// `dir` when given. `ingest` selects the ingest-line variants (`ts` optional).
    pub fn load(dir: Option<&Path>, ingest: bool) -> Result<Self> {
        let read = |path: &str| -> Result<Value> {
            let text = match dir {
                Some(dir) => std::fs::read_to_string(dir.join(path))
                    .with_context(|| format!("reading schema {}", dir.join(path).display()))?,
                None => published::get(path)
                    .ok_or_else(|| anyhow!("schema {path} is not built into this binary"))?
                    .to_owned(),
            };
            serde_json::from_str(&text).with_context(|| format!("schema {path} is not JSON"))
        };
        let compile = |path: &str, schema: &Value| -> Result<jsonschema::Validator> {
            jsonschema::validator_for(schema)
                .map_err(|e| anyhow!("schema {path} does not compile: {e}"))
        };
        let mut by_type = HashMap::new();
        if ingest {
            let union = read("ingest-line.json")?;
            for ty in EventType::ALL {
                let name = ty.as_str();
                let mut schema = union
                    .pointer(&format!("/$defs/{name}"))
                    .cloned()
                    .ok_or_else(|| anyhow!("ingest-line.json has no definition for {name}"))?;
                if let Some(obj) = schema.as_object_mut() {
                    obj.insert("$schema".into(), union["$schema"].clone());
                }
                by_type.insert(name.to_owned(), compile("ingest-line.json", &schema)?);
            }
        } else {
            for ty in EventType::ALL {
                let path = format!("event/{}.json", ty.as_str());
                by_type.insert(ty.as_str().to_owned(), compile(&path, &read(&path)?)?);
            }
            for frame in ["heartbeat", "gap", "reset"] {
                let path = format!("control/{frame}.json");
                by_type.insert(frame.to_owned(), compile(&path, &read(&path)?)?);
            }
        }
        Ok(Validators {
            by_type,
            dir: (!ingest).then(|| dir.map(Path::to_path_buf)).flatten(),
            as_ingest: if ingest {
                OnceCell::from(None)
            } else {
                OnceCell::new()
            },
        })
    }

    /// Whether `line`, refused as a stream line, has no `ts` and passes as an ingest
    /// line: a line written to be sent, to be checked with `--ingest`. Always false
    /// for ingest validators.
    pub fn is_ingest_line(&self, line: &[u8]) -> bool {
        let lacks_ts = serde_json::from_slice::<Value>(line)
            .ok()
            .is_some_and(|v| v.is_object() && v.get("ts").is_none());
        if !lacks_ts {
            return false;
        }
        self.as_ingest
            .get_or_init(|| {
                Validators::load(self.dir.as_deref(), true)
                    .ok()
                    .map(Box::new)
            })
            .as_ref()
            .is_some_and(|v| v.check_line(line).is_ok())
    }

    /// The verdict on one line (without its newline): `Ok(type)` or the complaint.
    pub fn check_line(&self, line: &[u8]) -> std::result::Result<String, LineError> {
        let typed = parse_line(line);
        let value: Option<Value> = serde_json::from_slice(line).ok();
        let ty = value
            .as_ref()
            .and_then(|v| v.get("type"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let (Some(value), Some(ty)) = (&value, &ty) {
            if let Some(validator) = self.by_type.get(ty) {
                if let Some(err) = validator.iter_errors(value).next() {
                    let path = err.instance_path().to_string();
                    let field = path.trim_start_matches('/').split('/').next().unwrap_or("");
                    return Err(LineError {
                        ty: Some(ty.clone()),
                        field: (!field.is_empty()).then(|| field.to_owned()),
                        reason: if path.is_empty() {
                            err.to_string()
                        } else {
                            format!("{path}: {err}")
                        },
                    });
                }
            }
        }
        match typed {
            Ok(line) => Ok(match line {
                master_events_events::StreamLine::Event(r) => r.event.type_name().to_owned(),
                master_events_events::StreamLine::Heartbeat(_) => "heartbeat".to_owned(),
                master_events_events::StreamLine::Gap(_) => "gap".to_owned(),
                master_events_events::StreamLine::Reset(_) => "reset".to_owned(),
            }),
            Err(e) => {
                let mut reason = e.to_string();
                if ty.as_ref().is_some_and(|t| !self.by_type.contains_key(t)) {
                    reason.push_str("; `master-events validate --help` lists the event types");
                }
                Err(LineError {
                    ty,
                    field: e.field().map(str::to_owned),
                    reason,
                })
            }
        }
    }
}

/// The line rewritten from ns_server's 2012 form, when it is in that form.
fn legacy_form(line: &[u8]) -> Option<Vec<u8>> {
    master_events_events::legacy::normalize_line(line)
        .ok()
        .flatten()
}

/// Why a line is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// The line's `type`, when it has a readable one.
    pub ty: Option<String>,
    /// The top-level field the complaint is about, when there is one.
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
}

/// What one bounded read of a line produced.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadLine {
    /// A complete line (its newline stripped) is in the buffer.
    Line,
    /// The line was longer than the limit; this many bytes were skipped.
    TooLong(u64),
    /// End of input.
    Eof,
}

/// Reads one line into `buf` (cleared first), holding at most `max` bytes of it.
pub fn read_bounded_line<R: BufRead>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<ReadLine> {
    buf.clear();
    let mut total: u64 = 0;
    let mut too_long = false;
    let mut saw_any = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            if !saw_any {
                return Ok(ReadLine::Eof);
            }
            break;
        }
        saw_any = true;
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        total += chunk.len() as u64;
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf.clear();
                buf.shrink_to(64 * 1024);
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let consumed = done.unwrap_or(chunk.len());
        reader.consume(consumed);
        if done.is_some() {
            break;
        }
    }
    if too_long {
        return Ok(ReadLine::TooLong(total));
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(ReadLine::Line)
}

/// Counts of a validation run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Valid lines per type.
    pub valid: BTreeMap<String, u64>,
    /// Invalid lines per type (`?` when the type could not be read).
    pub invalid: BTreeMap<String, u64>,
    /// Lines holding only whitespace (skipped).
    pub blank: u64,
    /// Invalid lines that have no `ts` but are valid ingest lines.
    pub ingest_lines: u64,
    /// Lines in ns_server's 2012 form checked as rewritten in the current form
    /// (`--legacy`).
    pub legacy_read: u64,
    /// Invalid lines in ns_server's 2012 form that are valid rewritten (without
    /// `--legacy`).
    pub legacy_refused: u64,
}

impl Summary {
    /// Number of valid lines.
    pub fn valid_total(&self) -> u64 {
        self.valid.values().sum()
    }
    /// Number of invalid lines.
    pub fn invalid_total(&self) -> u64 {
        self.invalid.values().sum()
    }
}

/// Validates every line of `input`, writing each bad line's verdict to `out`.
pub fn validate_stream<R: Read, W: Write>(
    input: R,
    out: &mut W,
    validators: &Validators,
    max_line_bytes: usize,
    max_errors: Option<u64>,
    legacy: bool,
) -> std::io::Result<Summary> {
    let mut reader = BufReader::with_capacity(256 * 1024, input);
    let mut buf = Vec::new();
    let mut summary = Summary::default();
    let mut number: u64 = 0;
    let mut printed: u64 = 0;
    loop {
        let outcome = read_bounded_line(&mut reader, &mut buf, max_line_bytes)?;
        let verdict = match outcome {
            ReadLine::Eof => break,
            ReadLine::TooLong(n) => {
                number += 1;
                Err(LineError {
                    ty: None,
                    field: None,
                    reason: format!("line is {n} bytes, over the limit of {max_line_bytes}"),
                })
            }
            ReadLine::Line => {
                number += 1;
                if buf.iter().all(u8::is_ascii_whitespace) {
                    summary.blank += 1;
                    continue;
                }
                let verdict = validators.check_line(&buf);
                match (&verdict, legacy_form(&buf)) {
                    (Err(_), Some(rewritten)) => {
                        let again = validators.check_line(&rewritten);
                        if again.is_err() {
                            verdict
                        } else if legacy {
                            summary.legacy_read += 1;
                            again
                        } else {
                            summary.legacy_refused += 1;
                            verdict
                        }
                    }
                    _ => verdict,
                }
            }
        };
        match verdict {
            Ok(ty) => *summary.valid.entry(ty).or_default() += 1,
            Err(e) => {
                if outcome == ReadLine::Line && validators.is_ingest_line(&buf) {
                    summary.ingest_lines += 1;
                }
                let ty = e.ty.clone().unwrap_or_else(|| "?".to_owned());
                if max_errors.is_none_or(|m| printed < m) {
                    printed += 1;
                    match &e.field {
                        Some(field) => writeln!(
                            out,
                            "line {number}: type {ty}: field {field:?}: {}",
                            e.reason
                        )?,
                        None => writeln!(out, "line {number}: type {ty}: {}", e.reason)?,
                    }
                }
                *summary.invalid.entry(ty).or_default() += 1;
            }
        }
    }
    Ok(summary)
}

/// Writes the summary table.
pub fn print_summary<W: Write>(out: &mut W, name: &str, s: &Summary) -> std::io::Result<()> {
    writeln!(
        out,
        "{name}: {} valid, {} invalid, {} blank",
        s.valid_total(),
        s.invalid_total(),
        s.blank
    )?;
    let mut types: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (t, n) in &s.valid {
        types.entry(t).or_default().0 = *n;
    }
    for (t, n) in &s.invalid {
        types.entry(t).or_default().1 = *n;
    }
    if !types.is_empty() {
        writeln!(out, "  {:<42} {:>10} {:>10}", "type", "valid", "invalid")?;
        for (t, (v, i)) in types {
            writeln!(out, "  {t:<42} {v:>10} {i:>10}")?;
        }
    }
    if s.legacy_read > 0 {
        writeln!(
            out,
            "{} lines were in ns_server's 2012 form, checked as rewritten in the current \
             form (docs/legacy-logs.md)",
            s.legacy_read
        )?;
    }
    if s.legacy_refused > 0 {
        writeln!(
            out,
            "{} of the invalid lines are in ns_server's 2012 form (numbers as strings, \
             quoted node names, ...) and valid once rewritten: check those with \
             `master-events validate --legacy`",
            s.legacy_refused
        )?;
    }
    if s.ingest_lines > 0 {
        writeln!(
            out,
            "{} of the invalid lines have no \"ts\" and are valid ingest lines (written to be \
             sent; the server adds seq and ts): check those with `master-events validate \
             --ingest`",
            s.ingest_lines
        )?;
    }
    Ok(())
}

/// Runs the command; returns the process exit code.
pub fn run(args: &ValidateArgs) -> Result<i32> {
    let validators = Validators::load(args.schemas.as_deref(), args.ingest)?;
    let stdout = std::io::stdout();
    let mut out = PipeWatch::new(std::io::BufWriter::new(stdout.lock()));
    // An error of the validation is the input's unless the output failed.
    let side = |out: &PipeWatch<_>, input: &str| {
        if out.failed() {
            "writing standard output".to_owned()
        } else {
            format!("reading {input}")
        }
    };
    let (summary, name) = if args.file == "-" {
        let s = validate_stream(
            std::io::stdin().lock(),
            &mut out,
            &validators,
            args.max_line_bytes,
            args.max_errors,
            args.legacy,
        )
        .with_context(|| side(&out, "standard input"))?;
        (s, "<stdin>".to_owned())
    } else {
        let file = std::fs::File::open(&args.file)
            .with_context(|| format!("cannot open {}", args.file))?;
        let s = validate_stream(
            file,
            &mut out,
            &validators,
            args.max_line_bytes,
            args.max_errors,
            args.legacy,
        )
        .with_context(|| side(&out, &args.file))?;
        (s, args.file.clone())
    };
    print_summary(&mut out, &name, &summary).context("writing standard output")?;
    out.flush().context("writing standard output")?;
    Ok(if summary.invalid_total() == 0 { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_on(input: &[u8]) -> (Summary, String) {
        let v = Validators::load(None, false).expect("built-in schemas compile");
        let mut out = Vec::new();
        let s = validate_stream(input, &mut out, &v, 1024, None, false).expect("in-memory IO");
        (s, String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn valid_lines_are_counted_per_type() {
        let (s, out) = run_on(
            b"{\"type\":\"deleteBucket\",\"ts\":1.5,\"bucket\":\"a\"}\n\n{\"type\":\"failoverEnded\",\"ts\":2}\r\n",
        );
        assert_eq!(out, "");
        assert_eq!(s.valid_total(), 2);
        assert_eq!(s.blank, 1);
        assert_eq!(s.valid.get("deleteBucket"), Some(&1));
    }

    #[test]
    fn bad_lines_name_line_type_and_field() {
        let (s, out) = run_on(
            b"{\"type\":\"vbucketMoveDone\",\"ts\":1,\"vbucket\":\"x\",\"bucket\":\"b\"}\n{\"type\":\"nope\",\"ts\":1}\n{\"type\":\"deleteBucket\",\"ts\":1,\"bucket\":\"a\",\"bucket\":\"b\"}\n",
        );
        assert_eq!(s.invalid_total(), 3, "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with("line 1: type vbucketMoveDone: field \"vbucket\""),
            "{out}"
        );
        assert!(
            lines[1].starts_with("line 2: type nope:") && lines[1].contains("unknown event type"),
            "{out}"
        );
        assert!(
            lines[2].starts_with("line 3: type deleteBucket: field \"bucket\"")
                && lines[2].contains("duplicate"),
            "{out}"
        );
    }

    #[test]
    fn a_line_over_the_limit_is_skipped_without_being_held() {
        let mut input = Vec::new();
        input.extend_from_slice(b"{\"type\":\"failoverEnded\",\"ts\":1}\n");
        input.extend(std::iter::repeat_n(b'x', 10_000));
        input.extend_from_slice(b"\n{\"type\":\"failoverEnded\",\"ts\":1}\n");
        let (s, out) = run_on(&input);
        assert_eq!(s.valid_total(), 2);
        assert_eq!(s.invalid_total(), 1);
        assert!(
            out.contains("line 2: type ?: line is 10000 bytes, over the limit of 1024"),
            "{out}"
        );
    }

    #[test]
    fn bounded_reader_handles_a_missing_final_newline() {
        let mut r = BufReader::with_capacity(4, &b"ab\ncdefgh"[..]);
        let mut buf = Vec::new();
        assert_eq!(
            read_bounded_line(&mut r, &mut buf, 100).ok(),
            Some(ReadLine::Line)
        );
        assert_eq!(buf, b"ab");
        assert_eq!(
            read_bounded_line(&mut r, &mut buf, 100).ok(),
            Some(ReadLine::Line)
        );
        assert_eq!(buf, b"cdefgh");
        assert_eq!(
            read_bounded_line(&mut r, &mut buf, 100).ok(),
            Some(ReadLine::Eof)
        );
    }

    #[test]
    fn invalid_utf8_truncated_and_non_finite_lines_are_errors() {
        let (s, out) = run_on(
            b"{\"type\":\"deleteBucket\",\"ts\":1,\"bucket\":\"\xff\"}\n{\"type\":\"deleteBucket\",\"ts\":1,\n{\"type\":\"deleteBucket\",\"ts\":NaN,\"bucket\":\"a\"}\n",
        );
        assert_eq!(s.invalid_total(), 3, "{out}");
        assert!(out.contains("UTF-8"), "{out}");
        assert!(out.contains("truncated"), "{out}");
        assert!(out.contains("invalid JSON"), "{out}");
    }

    #[test]
    fn lines_without_ts_that_are_valid_ingest_lines_point_to_ingest_once() {
        let (s, out) = run_on(
            b"{\"type\":\"deleteBucket\",\"bucket\":\"a\"}\n{\"type\":\"failoverEnded\"}\n{\"type\":\"deleteBucket\"}\n{\"type\":\"deleteBucket\",\"ts\":1}\n",
        );
        assert_eq!(s.invalid_total(), 4, "{out}");
        assert_eq!(
            s.ingest_lines, 2,
            "lines 1 and 2; 3 lacks its bucket, 4 has ts"
        );
        let mut printed = Vec::new();
        print_summary(&mut printed, "hand.ndjson", &s).expect("in-memory IO");
        let printed = String::from_utf8_lossy(&printed);
        assert_eq!(printed.matches("--ingest").count(), 1, "{printed}");
        assert!(
            printed.contains("2 of the invalid lines have no \"ts\" and are valid ingest lines"),
            "{printed}"
        );

        let (s, _) = run_on(b"{\"type\":\"deleteBucket\",\"ts\":1}\n");
        let mut printed = Vec::new();
        print_summary(&mut printed, "stream.ndjson", &s).expect("in-memory IO");
        assert!(!String::from_utf8_lossy(&printed).contains("--ingest"));
    }

    #[test]
    fn an_unknown_type_points_to_the_list_of_types() {
        let (_, out) =
            run_on(b"{\"type\":\"nope\",\"ts\":1}\n{\"type\":\"deleteBucket\",\"ts\":1}\n");
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].ends_with(
                "unknown event type \"nope\"; `master-events validate --help` lists the event types"
            ),
            "{out}"
        );
        assert!(!lines[1].contains("--help"), "a known type's error: {out}");
    }

    #[test]
    fn counts_are_refused_in_words_not_in_rust_types() {
        assert_eq!(parse_count::<u64>(" 12 "), Ok(12));
        let err = parse_count::<usize>("1k").expect_err("not digits");
        assert_eq!(
            err,
            "not a whole number of 0 or more (digits only, e.g. 10)"
        );
        assert!(
            parse_count::<u64>("99999999999999999999").is_err(),
            "too large"
        );
        assert!(parse_count::<u64>("-1").is_err());
    }

    #[test]
    fn help_lists_every_event_type_within_80_columns() {
        let help = event_types_help();
        for ty in EventType::ALL {
            assert!(
                help.split_whitespace().any(|w| w == ty.as_str()),
                "{ty} missing from {help}"
            );
        }
        assert!(help.lines().skip(1).all(|l| l.len() <= 80), "{help}");
        assert!(help.contains("GET /schemas/"), "{help}");
    }

    #[test]
    fn ingest_mode_accepts_lines_without_ts() {
        let v = Validators::load(None, true).expect("compiles");
        assert!(v
            .check_line(b"{\"type\":\"deleteBucket\",\"bucket\":\"a\"}")
            .is_ok());
        let stream = Validators::load(None, false).expect("compiles");
        let err = stream
            .check_line(b"{\"type\":\"deleteBucket\",\"bucket\":\"a\"}")
            .expect_err("ts is required in a stream line");
        assert!(err.reason.contains("ts"), "{err:?}");
    }
}
