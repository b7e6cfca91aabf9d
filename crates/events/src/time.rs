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

/// The largest timestamp accepted: 8,000,000,000 s (year 2223), below 2^33 s, where
/// an `f64` of seconds still resolves microseconds (its spacing is under 1 µs there,
/// 2^-20 s), so every timestamp survives its wire form exactly.
pub const MAX_MICROS: i64 = 8_000_000_000_000_000;

/// [`MAX_MICROS`] in seconds: the published schemas' `maximum` of a timestamp
/// (a consumer validating against them agrees with the parser).
pub const MAX_SECS: u64 = (MAX_MICROS / 1_000_000) as u64;

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
        // Whole seconds and the fraction apart: `secs - whole` is exact, so the
        // only error left is the wire number's own (under half a microsecond below
        // MAX_MICROS), where `secs * 1e6` would add the product's rounding and could
        // land on the neighbouring microsecond (found by the `line` fuzz target).
        let whole = secs.trunc();
        if whole > (MAX_MICROS / 1_000_000) as f64 {
            return None;
        }
        let micros = whole as i64 * 1_000_000 + ((secs - whole) * 1e6).round() as i64;
        (micros <= MAX_MICROS).then_some(Timestamp { micros })
    }

    /// Microseconds since the epoch.
    pub fn as_micros(self) -> i64 {
        self.micros
    }

    /// Seconds since the epoch, as written on the wire.
    pub fn as_secs_f64(self) -> f64 {
        self.micros as f64 / 1e6
    }

    /// Appends this timestamp to `buf` as JSON: byte for byte what `serde_json`
    /// writes for [`Timestamp::as_secs_f64`] (its [`Serialize`]), without going
    /// through a float formatter for the timestamps of this era.
    ///
    /// From 1 s to 2^32 s (year 2106) an `f64` is spaced at most 2^-20 s apart,
    /// closer than a microsecond, so the shortest decimal that reads back as
    /// `micros / 1e6` is that number's own digits, trailing zeros dropped (and
    /// `.0` for whole seconds): written here with integer formatting. Outside that
    /// range the float is printed as `serde_json` prints it.
    pub fn write_json(self, buf: &mut Vec<u8>) {
        if !(1_000_000..DIGITS_LIMIT).contains(&self.micros) {
            let result = serde_json::to_writer(&mut *buf, &self.as_secs_f64());
            // A finite float always serializes, and a Vec never refuses a write.
            debug_assert!(result.is_ok());
            return;
        }
        let mut digits = itoa::Buffer::new();
        buf.extend_from_slice(digits.format(self.micros / 1_000_000).as_bytes());
        buf.push(b'.');
        let mut frac = self.micros % 1_000_000;
        if frac == 0 {
            buf.push(b'0');
            return;
        }
        let mut width = 6;
        while frac % 10 == 0 {
            frac /= 10;
            width -= 1;
        }
        let frac = digits.format(frac).as_bytes();
        buf.extend(std::iter::repeat_n(b'0', width - frac.len()));
        buf.extend_from_slice(frac);
    }
}

/// Microseconds below which [`Timestamp::write_json`] writes digits, not a float.
const DIGITS_LIMIT: i64 = (1 << 32) * 1_000_000;

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
            "maximum": MAX_SECS,
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

    /// Every timestamp comes back from its wire form exactly, at every magnitude up
    /// to MAX_MICROS (the `line` fuzz target found 4333576040.237 coming back one
    /// microsecond off when seconds were multiplied by 1e6 whole).
    #[test]
    fn every_timestamp_survives_its_wire_form_exactly() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut micros = vec![
            0,
            1,
            999_999,
            4_333_576_040_237_000,
            MAX_MICROS,
            MAX_MICROS - 1,
        ];
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            micros.push((x % (MAX_MICROS as u64 + 1)) as i64);
        }
        for m in micros {
            let mut text = Vec::new();
            Timestamp::from_micros(m).write_json(&mut text);
            let back: Timestamp = serde_json::from_slice(&text).expect("parses");
            assert_eq!(back.as_micros(), m, "{}", String::from_utf8_lossy(&text));
        }
        assert!(serde_json::from_str::<Timestamp>("8000000000.000001").is_err());
        assert!(serde_json::from_str::<Timestamp>("8000000000").is_ok());
    }

    /// `write_json` against `serde_json`'s float printing, at the edges of the
    /// digits range and at many points in and around it.
    #[test]
    fn written_json_is_byte_identical_to_the_serialized_float() {
        let mut micros: Vec<i64> = vec![
            0,
            1,
            999_999,
            1_000_000,
            1_000_001,
            1_100_000,
            1_333_576_052_926_554,
            1_333_576_032_539_910,
            1_700_000_000_000_000,
            1_700_000_000_100_000,
            1_795_738_329_000_010,
            DIGITS_LIMIT - 1,
            DIGITS_LIMIT,
            DIGITS_LIMIT + 1,
            MAX_MICROS,
        ];
        // A deterministic spread over every magnitude up to MAX_MICROS.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let magnitude = 1 + x % 16;
            let m = (x >> 8) % 10u64.pow(magnitude as u32);
            micros.push((m as i64).min(MAX_MICROS));
            // Round values, whose trailing zeros are dropped.
            micros.push(((m / 1000) * 1000) as i64);
        }
        for m in micros {
            let ts = Timestamp::from_micros(m);
            let mut ours = Vec::new();
            ts.write_json(&mut ours);
            let theirs = serde_json::to_vec(&ts).expect("serializes");
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs),
                "micros {m}"
            );
        }
    }

    #[test]
    fn display_shows_seconds_and_micros() {
        assert_eq!(
            Timestamp::from_micros(1_333_576_052_926_554).to_string(),
            "1333576052.926554"
        );
    }
}
