//! The error type of this crate.
//!
//! Owns: [`Error`], one variant per way writing a report can fail.
//!
//! Promises: bad input lines are never errors (they are counted, see
//! [`crate::ReadSummary`]); an error is always about the output or the I/O under it,
//! and says which.

use std::io;

/// Why a report could not be produced or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the input or writing the output failed: the I/O error itself (the
    /// caller says which side), shown once in an error's chain.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Writing CSV failed, for another reason than I/O (an I/O error of the CSV
    /// writer is [`Error::Io`]: `csv::Error` both shows and chains it).
    #[error("writing CSV failed: {0}")]
    Csv(csv::Error),
    /// Writing JSON failed.
    #[error("writing JSON failed: {0}")]
    Json(#[from] serde_json::Error),
    /// Formatting text failed (a `fmt::Write` sink refused it).
    #[error("formatting text failed")]
    Fmt(#[from] std::fmt::Error),
    /// Drawing the SVG timeline failed.
    #[error("drawing the SVG timeline failed: {0}")]
    Svg(String),
    /// A format name that is not `table`, `csv` or `jsonl`.
    #[error("unknown format {0:?} (expected table, csv or jsonl)")]
    UnknownFormat(String),
}

impl From<csv::Error> for Error {
    fn from(e: csv::Error) -> Error {
        if !e.is_io_error() {
            return Error::Csv(e);
        }
        match e.into_kind() {
            csv::ErrorKind::Io(io) => Error::Io(io),
            // `is_io_error` is true of `ErrorKind::Io` alone.
            other => Error::Io(io::Error::other(format!("writing CSV failed: {other:?}"))),
        }
    }
}
