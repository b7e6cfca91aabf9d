//! Serializing durations as seconds (a JSON number with microsecond precision), the
//! way `ts` is written on the wire.

use std::time::Duration;

use serde::Serializer;

/// Serializes `d` as seconds.
pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(as_secs(*d))
}

/// Serializes `d` as seconds, or `null`.
pub(crate) fn serialize_opt<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(as_secs(*d)),
        None => s.serialize_none(),
    }
}

/// Whole microseconds as seconds, so that `0.1` s prints as `0.1`.
fn as_secs(d: Duration) -> f64 {
    d.as_micros() as f64 / 1e6
}
