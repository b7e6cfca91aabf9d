//! Configuration errors: what every part of the sinks' configuration refuses with.
//!
//! Owns: [`ConfigError`] and [`Location`] (which `[[sinks]]` entry an error is
//! about), and the text of TOML errors ([`toml_error`], [`describe_toml_error`]).
//! The configuration loader (`crate::config`), the sink registry
//! (`crate::registry`) and every sink's `build` (the built-in ones in
//! `crate::sinks`, plugins) return these; this module depends on none of them.
//!
//! Promises:
//! - No error quotes the configuration's text or any value in it: a value can be a
//!   secret (a password, a token, an `Authorization` header). A TOML error says
//!   `line:column: message (key users.password)`, with the parser's message
//!   stripped of the value it found; key names and what was expected are kept.
//! - An error about an entry names it: `sinks[2] (type "stdout", line 9): ...`.
//!
//! See docs/architecture.md and docs/configuration.md.

use std::fmt;

/// Where in the configuration an error is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The entry's index in `[[sinks]]`, from 0.
    pub index: usize,
    /// The entry's `type`, if it has a string one.
    pub kind: Option<String>,
    /// The line (from 1) where the entry starts, when known.
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sinks[{}]", self.index)?;
        match (&self.kind, self.line) {
            (Some(kind), Some(line)) => write!(f, " (type {kind:?}, line {line})"),
            (Some(kind), None) => write!(f, " (type {kind:?})"),
            (None, Some(line)) => write!(f, " (line {line})"),
            (None, None) => Ok(()),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The document is not valid TOML, or a key's value has the wrong type. Holds no
    /// text of the document (see [`toml_error`]).
    #[error("{}", display_toml(*.line, *.column, .message))]
    Toml {
        /// The line (from 1) of the error, when the parser gave a position.
        line: Option<usize>,
        /// The column (from 1, in characters) of the error, with `line`.
        column: Option<usize>,
        /// What is wrong, and the key's path when known; never a value.
        message: String,
    },
    /// An entry without a `type`.
    #[error("{at}: missing \"type\"; registered sink types: {}", .registered.join(", "))]
    MissingType {
        /// The entry.
        at: Location,
        /// The registered sink names.
        registered: Vec<&'static str>,
    },
    /// An entry whose `type` is not a registered sink.
    #[error("{at}: unknown sink type {kind:?}; registered sink types: {}", .registered.join(", "))]
    UnknownSinkType {
        /// The entry.
        at: Location,
        /// The type given.
        kind: String,
        /// The registered sink names.
        registered: Vec<&'static str>,
    },
    /// An entry whose keys, values or filter are wrong, or whose sink failed to build.
    #[error("{at}: {message}")]
    Entry {
        /// The entry.
        at: Location,
        /// What is wrong.
        message: String,
    },
    /// A sink's own configuration is wrong (returned by check and build functions;
    /// [`load_config`](crate::load_config) and [`start_sinks`](crate::start_sinks)
    /// turn it into [`ConfigError::Entry`]).
    #[error("{0}")]
    Invalid(String),
}

fn display_toml(line: Option<usize>, column: Option<usize>, message: &str) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!("{line}:{column}: {message}"),
        _ => format!("invalid configuration: {message}"),
    }
}

/// The parser's message of a TOML error without any value from the document, and the
/// path of the key it is about when the parser knows it: `invalid type: string (value
/// not shown), expected u16 (key server.port)`. Serde's messages quote the value they
/// found (`invalid type: string "hunter2"`, `unknown variant `hunter2``); that part is
/// replaced. Key names (`unknown field `pasword``) and what was expected are kept.
pub fn describe_toml_error(e: &toml::de::Error) -> String {
    let mut message = hide_values(e.message().trim());
    if let Some(key) = key_path(e) {
        message.push_str(&format!(" (key {key})"));
    }
    message
}

/// A TOML error of the document `text` as a [`ConfigError::Toml`]: the line and
/// column, the key path and the message, without any of the document's text.
pub fn toml_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = match e.span() {
        Some(span) => {
            let at = floor_char_boundary(text, span.start);
            let before = &text[..at];
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            (
                Some(before.matches('\n').count() + 1),
                Some(before[line_start..].chars().count() + 1),
            )
        }
        None => (None, None),
    };
    ConfigError::Toml {
        line,
        column,
        message: describe_toml_error(e),
    }
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The key path the parser noted (`users.password`): it shows it as a last line
/// `in `...`` when it has no document to quote.
fn key_path(e: &toml::de::Error) -> Option<String> {
    let mut bare = e.clone();
    bare.set_input(None);
    let shown = bare.to_string();
    let last = shown.trim_end().lines().last()?;
    let path = last.strip_prefix("in `")?.strip_suffix('`')?;
    (!path.is_empty()).then(|| path.to_owned())
}

/// Replaces what a message quotes of the document's values (see
/// [`describe_toml_error`]).
fn hide_values(message: &str) -> String {
    // These quote key names, which are kept.
    const KEYS_ONLY: [&str; 4] = [
        "unknown field ",
        "missing field ",
        "duplicate field ",
        "duplicate key",
    ];
    if KEYS_ONLY.iter().any(|p| message.starts_with(p)) {
        return message.to_owned();
    }
    // What comes after ", expected " (or a suggestion) is what the type wants, from
    // the code.
    let (head, tail) = match [", expected ", "; expected ", "; did you mean "]
        .iter()
        .filter_map(|sep| message.find(sep))
        .min()
    {
        Some(i) => message.split_at(i),
        None => (message, ""),
    };
    let quote = |c: char| c == '`' || c == '"' || c == '\'';
    match (head.find(quote), head.rfind(quote)) {
        (Some(first), Some(last)) => {
            // A quoted literal without letters or digits (`=`, `,`) is the parser's
            // own and is kept; anything else may be a value.
            let quoted = &head[first..=last];
            if quoted.chars().any(|c| c.is_alphanumeric()) || quoted.len() > 3 {
                format!(
                    "{}(value not shown){}{tail}",
                    &head[..first],
                    &head[last + 1..]
                )
            } else {
                message.to_owned()
            }
        }
        _ => message.to_owned(),
    }
}
