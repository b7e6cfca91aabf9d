//! Timestamps: seconds since the Unix epoch with microsecond precision.
//!
//! Owns: the `ts` value of every line. On the wire it is a JSON number
//! (`1333576052.926554`), as ns_server writes it; in memory it is an integer count of
//! microseconds, so ordering and arithmetic are exact.
//!
//! Promises: any timestamp with at most six decimals survives parse → serialize →
//! parse unchanged (the float printed is the shortest one that reads back as the same
//! microsecond count); negative, non-finite or absurdly large values are rejected.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest timestamp accepted: year 2255 or so, well inside the range where an
/// `f64` still resolves microseconds exactly.
pub const MAX_MICROS: i64 = 9_000_000_000_000_000;

/// A point in time, in microseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    micros: i64,
}

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros().min(MAX_MICROS as u128) as i64)
            .unwrap_or(0);
        Timestamp { micros }
    }

    /// A timestamp from microseconds since the epoch, clamped to `0..=MAX_MICROS`.
    pub fn from_micros(micros: i64) -> Self {
        Timestamp {
            micros: micros.clamp(0, MAX_MICROS),
        }
    }

    /// A timestamp from a number of seconds, as found on the wire; `None` when the
    /// number is negative, not finite or out of range.
    pub fn from_secs_f64(secs: f64) -> Option<Self> {
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        let micros = (secs * 1e6).round();
        if micros > MAX_MICROS as f64 {
            return None;
        }
        Some(Timestamp {
            micros: micros as i64,
        })
    }

    /// Microseconds since the epoch.
    pub fn as_micros(self) -> i64 {
        self.micros
    }

    /// Seconds since the epoch, as written on the wire.
    pub fn as_secs_f64(self) -> f64 {
        self.micros as f64 / 1e6
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06}",
            self.micros / 1_000_000,
            self.micros % 1_000_000
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.as_secs_f64())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TsVisitor;
        impl Visitor<'_> for TsVisitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative number of seconds since the Unix epoch")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Timestamp, E> {
                Timestamp::from_secs_f64(v)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Float(v), &self))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
                match v.checked_mul(1_000_000) {
                    Some(m) if m <= MAX_MICROS as u64 => Ok(Timestamp { micros: m as i64 }),
                    _ => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
                if v < 0 {
                    return Err(E::invalid_value(de::Unexpected::Signed(v), &self));
                }
                self.visit_u64(v as u64)
            }
        }
        d.deserialize_f64(TsVisitor)
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "number",
            "minimum": 0,
            "description": "Seconds since the Unix epoch, with microsecond precision (e.g. 1333576052.926554)."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_decimal_timestamps_survive_a_round_trip() {
        for text in [
            "1333576052.926554",
            "1333576032.53991",
            "0.000001",
            "1700000000.1",
        ] {
            let ts: Timestamp = serde_json::from_str(text).expect("parses");
            let back = serde_json::to_string(&ts).expect("serializes");
            let again: Timestamp = serde_json::from_str(&back).expect("parses again");
            assert_eq!(ts, again, "{text} -> {back}");
            assert_eq!(back.parse::<f64>().ok(), text.parse::<f64>().ok());
        }
    }

    #[test]
    fn negative_and_huge_timestamps_are_rejected() {
        assert!(serde_json::from_str::<Timestamp>("-1").is_err());
        assert!(serde_json::from_str::<Timestamp>("-0.5").is_err());
        assert!(serde_json::from_str::<Timestamp>("1e300").is_err());
        assert!(serde_json::from_str::<Timestamp>("\"1\"").is_err());
    }

    #[test]
    fn display_shows_seconds_and_micros() {
        assert_eq!(
            Timestamp::from_micros(1_333_576_052_926_554).to_string(),
            "1333576052.926554"
        );
    }
}
