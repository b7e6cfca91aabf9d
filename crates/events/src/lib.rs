//! The typed catalog of master activity events, their wire encoding and their
//! published JSON Schemas.
//!
//! This crate is the vocabulary every other part of master-events speaks:
//! - [`catalog`]: one struct per event type (the fields of ns_server's "master
//!   activity events"), each a variant of [`Event`];
//! - [`Record`]: an event with its envelope (`seq`, `ts`, `origin`, `originSeq`),
//!   encoded as one JSON line by [`Record::encode_line`] and parsed strictly by
//!   [`Record::parse`] / [`parse_line`], which also read the control frames
//!   [`Heartbeat`] and [`Gap`];
//! - [`schema`]: the JSON Schemas generated from these types, and [`published`], the
//!   committed copies of them that the binary serves and validates against.
//!
//! ```
//! use master_events_events::{catalog::VbucketMoveDone, Record};
//!
//! let rec = Record::new(VbucketMoveDone { vbucket: 43, bucket: "default".into() });
//! assert_eq!(rec.to_line(), b"{\"type\":\"vbucketMoveDone\",\"vbucket\":43,\"bucket\":\"default\"}\n");
//! assert_eq!(Record::parse(&rec.to_line()), Ok(rec));
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod canonical;
pub mod catalog;
pub mod cloudevents;
pub mod compat;
pub mod docs;
mod event;
mod json;
pub mod legacy;
mod line;
pub mod redact;
pub mod schema;
mod strict;
mod time;

pub use event::{Event, EventFields, EventType, UnknownEventType};
pub use line::{
    parse_line, Envelope, Gap, Heartbeat, ParseError, Record, Reset, StampCache, StreamLine,
    MAX_FIELDS,
};
pub use time::Timestamp;

/// The catalog's text fields and an envelope's `origin`: a string kept inline, with
/// no allocation, up to 24 bytes (a node name, a bucket, a host, a pid), and on the
/// heap beyond. Build one with `"text".into()`, `String::into()` or
/// [`compact_str::format_compact!`]; it derefs to `&str`. Re-exported so that a
/// sink crate needs no dependency of its own to build or read events.
pub use compact_str::{self, CompactString};

/// The schema files committed under `schemas/`, embedded at build time.
pub mod published {
    include!(concat!(env!("OUT_DIR"), "/published.rs"));

    /// The contents of one committed schema file, by its path relative to `schemas/`
    /// (e.g. `event/becameMaster.json`).
    pub fn get(path: &str) -> Option<&'static str> {
        FILES.iter().find(|(p, _)| *p == path).map(|(_, c)| *c)
    }
}
