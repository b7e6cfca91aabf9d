//! Canonical lines: a line written as [`crate::Record::encode_line`] writes it is
//! read by a parser of that form alone, and its fields are kept as they came.
//!
//! Owns: [`parse`], the reading of a canonical line.
//!
//! Promises:
//! - [`parse`] reads a line only if the strict parser (`line.rs`) reads it, and
//!   then to the same record; anything else it declines (`None`), and the strict
//!   parser reads the line as before, refusals and their wording included. A
//!   declined line costs what was read of it before it was declined on top of
//!   the strict parser's reading; a line declined at its first bytes (one not
//!   compact, or not `type` first) next to nothing.
//! - What it reads, it reads with the fields' part of the line (from the first
//!   field's `,` to the closing `}`) exactly as the encoder writes it for the
//!   event read: the record can hold those bytes instead of encoding them again.
//! - It never panics on any input, and looks at each byte of the line once.
//!
//! Why: nearly every line sent for ingest was written by this crate's encoder (or
//! one like it). The strict parser (`serde_json`, which must also skip
//! whitespace, unescape strings, read floats and objects) and then the encoding
//! of the event's fields again took most of the server's time for a request of
//! the mix; this reader, with the fields kept, takes about half the
//! instructions (docs/benchmarks-history.md, "What bounds each figure").
//!
//! The canonical form, which is the encoder's:
//! - `{"type":"<name>"`, then any of the envelope's fields (`seq`, `ts`, `origin`,
//!   `originTs`, `originSeq`, each once, read by the strict parser's own code; a
//!   `ts` may be any JSON number, read as `serde_json` reads it, since the master
//!   writes the envelope anew), then the event's fields, then `}`, with no
//!   whitespace anywhere;
//! - the event's keys are its struct's field names, in the struct's order, every
//!   one but those the encoder leaves out when absent ([`OMITTED`]);
//! - a value is a string with no escape (the encoder escapes only what JSON
//!   requires, so such a string is written as it came), an integer in its
//!   shortest form (no fraction, exponent or `-0`; JSON forbids leading zeros),
//!   `true`, `false`, or an array of those. No `null` (an absent optional field is
//!   not written) and no object (a map is written in key order, which need not be
//!   the line's, and the bucket parameters are redacted when read): a line with
//!   either is read by the strict parser, and its fields encoded.

use std::ops::Range;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::event::{Event, EventType};
use crate::line::{Envelope, EnvelopeField};
use crate::time::{Timestamp, MAX_MICROS, MAX_SECS};

/// How deep arrays may nest in a value read here (the catalog has arrays of
/// strings and of integers, one level deep).
const MAX_DEPTH: usize = 4;

/// The catalog's fields that the encoder leaves out when they are absent (an
/// `Option` that is `None`): `meta`, which a line may leave out; every other field
/// it must write. A test pins this list against what the encoder writes for every
/// catalog type.
const OMITTED: [&str; 1] = ["meta"];

/// Reads `text`, one line without its line end, if it is canonical (see the
/// module docs): its envelope, its event, and where in `text` the event's fields
/// are as the encoder writes them. `None`: not read here.
pub(crate) fn parse(text: &str) -> Option<(Envelope, Event, Range<usize>)> {
    const OPEN: &str = "{\"type\":";
    if !text.starts_with(OPEN) {
        return None;
    }
    let mut fields = Fields {
        text,
        line: text.as_bytes(),
        at: OPEN.len(),
        depth: 0,
        in_struct: false,
        envelope: false,
    };
    let ty: EventType = fields.string().ok()?.parse().ok()?;
    let mut envelope = Envelope::default();
    let mut seen = 0u8;
    // The envelope's fields, up to the event's first.
    while fields.peek().ok()? == b',' {
        let comma = fields.at;
        fields.at += 1;
        let Some(field) = EnvelopeField::of(fields.string().ok()?) else {
            fields.at = comma;
            break;
        };
        if seen & field.bit() != 0 || fields.peek().ok()? != b':' {
            return None;
        }
        seen |= field.bit();
        fields.at += 1;
        let decimal = match field {
            EnvelopeField::Ts => fields.decimal_timestamp().map(|ts| envelope.ts = Some(ts)),
            EnvelopeField::OriginTs => fields
                .decimal_timestamp()
                .map(|ts| envelope.origin_ts = Some(ts)),
            _ => None,
        };
        if decimal.is_none() {
            fields.envelope = true;
            let read = field.read(&mut fields, &mut envelope);
            fields.envelope = false;
            read.ok()?;
        }
    }
    let start = fields.at;
    let event = Event::from_fields(ty, &mut fields).ok()?;
    (fields.at == text.len()).then_some((envelope, event, start..text.len()))
}

/// The content of the string that opens at `at` (which must be a `"`), and where
/// it ends (just past its closing `"`); `None` if it holds an escape or a control
/// character (which JSON refuses in a string).
#[inline(always)]
fn string_at(line: &[u8], at: usize) -> Option<(&[u8], usize)> {
    if *line.get(at)? != b'"' {
        return None;
    }
    let close = special_at(line, at + 1)?;
    if line[close] != b'"' {
        return None;
    }
    Some((&line[at + 1..close], close + 1))
}

/// Whether `a` and `b` are equal: for the few bytes of a field name, two
/// overlapping loads of each instead of a call to `memcmp`.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if b.len() != n {
        return false;
    }
    match n {
        8..=16 => word(a) == word(b) && word(&a[n - 8..]) == word(&b[n - 8..]),
        4..=7 => half(a) == half(b) && half(&a[n - 4..]) == half(&b[n - 4..]),
        _ => a == b,
    }
}

/// The first four bytes of `bytes`, little-endian.
fn half(bytes: &[u8]) -> u32 {
    let mut half = [0u8; 4];
    half.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(half)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `x` that equals `byte`, and perhaps of bytes above
/// it: the lowest bit set is exact (borrows only run upwards).
fn bytes_equal(x: u64, byte: u8) -> u64 {
    let v = x ^ (ONES * u64::from(byte));
    v.wrapping_sub(ONES) & !v & HIGH
}

/// The first eight bytes of `bytes`, little-endian.
fn word(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(word)
}

/// Where the first `"`, `\` or control character at or after `at` is, eight bytes
/// at a time.
#[inline(always)]
fn special_at(line: &[u8], mut at: usize) -> Option<usize> {
    while let Some(bytes) = line.get(at..at + 8) {
        let x = word(bytes);
        // Below 0x20: the usual "has a byte less than n", exact for the lowest.
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let found = control | bytes_equal(x, b'"') | bytes_equal(x, b'\\');
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    let rest = line.get(at..)?;
    rest.iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
        .map(|i| at + i)
}

/// Why a canonical reading stopped: nothing more is said, since the strict parser
/// reads the line again and words any refusal.
#[derive(Debug)]
pub(crate) struct NotCanonical;

impl std::fmt::Display for NotCanonical {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a canonical line")
    }
}

impl std::error::Error for NotCanonical {}

impl de::Error for NotCanonical {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        NotCanonical
    }
}

/// The fields' part of a canonical line, read as the event's struct: a map whose
/// keys must come in the struct's order, and a deserializer of each value that
/// behaves as `serde_json`'s does for the canonical values (and declines the
/// rest).
struct Fields<'l> {
    /// The line.
    text: &'l str,
    /// The line's bytes.
    line: &'l [u8],
    /// The next byte to read.
    at: usize,
    /// Arrays open around the value being read.
    depth: usize,
    /// The event's struct is being read: any other struct is inside a value.
    in_struct: bool,
    /// An envelope field is being read: a number may be a float (`ts`), read as
    /// `serde_json` reads it. In the event's fields, a float is declined: the
    /// encoder need not write it as it came.
    envelope: bool,
}

impl<'l> Fields<'l> {
    fn peek(&self) -> Result<u8, NotCanonical> {
        self.line.get(self.at).copied().ok_or(NotCanonical)
    }

    /// The string at the cursor, which must be canonical; moves past it.
    #[inline(always)]
    fn string(&mut self) -> Result<&'l str, NotCanonical> {
        let (content, end) = string_at(self.line, self.at).ok_or(NotCanonical)?;
        let s = self
            .text
            .get(end - 1 - content.len()..end - 1)
            .ok_or(NotCanonical)?;
        self.at = end;
        Ok(s)
    }

    /// Whether the key at the cursor is `"name"` (a field name: no escapes); moves
    /// past it if so. Compared in place, word by word, instead of read as a string
    /// first and then compared (a call to `memcmp` for a few bytes).
    #[inline(always)]
    fn quoted_is(&mut self, name: &str) -> bool {
        let name = name.as_bytes();
        let end = self.at + name.len() + 2;
        let Some(quoted) = self.line.get(self.at..end) else {
            return false;
        };
        let same = quoted[0] == b'"'
            && quoted[end - self.at - 1] == b'"'
            && same_bytes(&quoted[1..quoted.len() - 1], name);
        if same {
            self.at = end;
        }
        same
    }

    /// The number at the cursor, in an envelope field: an integer as
    /// [`Fields::integer`], a float as `serde_json` reads it (correctly rounded,
    /// as with its `float_roundtrip`, which this workspace enables).
    fn number<'de, V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, NotCanonical> {
        let line = self.line;
        let digits = |mut i: usize| {
            while line.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let start = self.at;
        let mut i = start + usize::from(line.get(start) == Some(&b'-'));
        match line.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => i = digits(i),
            _ => return Err(NotCanonical),
        }
        let mut integer = true;
        if line.get(i) == Some(&b'.') {
            let after = digits(i + 1);
            if after == i + 1 {
                return Err(NotCanonical);
            }
            i = after;
            integer = false;
        }
        if matches!(line.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(line.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let after = digits(i);
            if after == i {
                return Err(NotCanonical);
            }
            i = after;
            integer = false;
        }
        if integer {
            return self.integer(visitor);
        }
        let text = self.text.get(start..i).ok_or(NotCanonical)?;
        let value: f64 = text.parse().map_err(|_| NotCanonical)?;
        if !value.is_finite() {
            // serde_json refuses a number out of range.
            return Err(NotCanonical);
        }
        self.at = i;
        visitor.visit_f64(value)
    }

    /// The timestamp at the cursor when it is written as the encoder writes one
    /// (and ns_server does): whole seconds, and up to six decimals. Read exactly,
    /// in integers, it is the timestamp the strict parser reads through an `f64`
    /// ([`Timestamp::from_secs_f64`]): up to [`MAX_SECS`], the `f64` nearest to
    /// such a number is within half a microsecond of it (under 0.477 µs: its
    /// spacing is at most 2⁻²⁰ s there), and `from_secs_f64` rounds the
    /// fraction alone, so it lands on the number's own microsecond (a property
    /// test pins this against `serde_json`). `None`, with the cursor where it
    /// was, for any other form: the `f64` reading takes it.
    ///
    /// Why: parsing the `ts` of every line as an `f64` was a tenth of the
    /// instructions of a canonical line.
    fn decimal_timestamp(&mut self) -> Option<Timestamp> {
        let line = self.line;
        let mut at = self.at;
        let mut whole: u64 = 0;
        while let Some(d) = line.get(at).filter(|b| b.is_ascii_digit()) {
            // Past MAX_SECS's ten digits: left to the f64 reading.
            if at - self.at == 10 {
                return None;
            }
            whole = whole * 10 + u64::from(d - b'0');
            at += 1;
        }
        let digits = at - self.at;
        // At least a digit, and no leading zero.
        if digits == 0 || (digits > 1 && line[self.at] == b'0') {
            return None;
        }
        let mut fraction: u64 = 0;
        if line.get(at) == Some(&b'.') {
            at += 1;
            let mut scale = 1_000_000;
            while let Some(d) = line.get(at).filter(|b| b.is_ascii_digit()) {
                // A seventh decimal: left to the f64 reading.
                scale /= 10;
                if scale == 0 {
                    return None;
                }
                fraction += u64::from(d - b'0') * scale;
                at += 1;
            }
            if scale == 1_000_000 {
                return None;
            }
        }
        if matches!(line.get(at), Some(b'e' | b'E')) || whole > MAX_SECS {
            return None;
        }
        let micros = i64::try_from(whole * 1_000_000 + fraction).ok()?;
        if micros > MAX_MICROS {
            return None;
        }
        self.at = at;
        Some(Timestamp::from_micros(micros))
    }

    /// The integer at the cursor, in its shortest form, as `serde_json` hands it
    /// to a visitor: a non-negative one as a `u64`, a negative one as an `i64`.
    fn integer<'de, V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, NotCanonical> {
        let negative = self.peek()? == b'-';
        let digits_at = self.at + usize::from(negative);
        let digits = self.line.get(digits_at..).ok_or(NotCanonical)?;
        let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
        let end = digits_at + n;
        let leading_zero = n > 1 && digits[0] == b'0';
        let minus_zero = negative && n == 1 && digits[0] == b'0';
        let fraction = matches!(self.line.get(end), Some(b'.' | b'e' | b'E'));
        if n == 0 || leading_zero || minus_zero || fraction {
            return Err(NotCanonical);
        }
        let mut value: u64 = 0;
        for &d in &digits[..n] {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
                .ok_or(NotCanonical)?;
        }
        self.at = end;
        if negative {
            // Down to i64::MIN; beyond, serde_json reads a float.
            let value = 0i64.checked_sub_unsigned(value).ok_or(NotCanonical)?;
            visitor.visit_i64(value)
        } else {
            visitor.visit_u64(value)
        }
    }

    fn literal(&mut self, literal: &[u8]) -> Result<(), NotCanonical> {
        if self
            .line
            .get(self.at..)
            .is_some_and(|rest| rest.starts_with(literal))
        {
            self.at += literal.len();
            Ok(())
        } else {
            Err(NotCanonical)
        }
    }
}

/// `Deserializer` methods for what the catalog never asks of a canonical line
/// (a map, a float in the event's fields, bytes, a unit...): each declines. Not
/// `forward_to_deserialize_any!`: `deserialize_any` would hand a float's visitor an
/// integer, which the encoder would then write as a float, not as it came.
macro_rules! declined {
    ($($method:ident $(($($arg:ty),*))?;)*) => {
        $(
            fn $method<V: Visitor<'de>>(
                self,
                $($(_: $arg,)*)?
                _: V,
            ) -> Result<V::Value, NotCanonical> {
                Err(NotCanonical)
            }
        )*
    };
}

/// `Deserializer` methods that read as another one does.
macro_rules! forwarded {
    ($($to:ident: $($method:ident),*;)*) => {
        $($(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NotCanonical> {
                self.$to(visitor)
            }
        )*)*
    };
}

impl<'de, 'l> Deserializer<'de> for &mut Fields<'l> {
    type Error = NotCanonical;

    /// As `serde_json` for the canonical values; `null`, an object, a float and
    /// anything else are declined.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NotCanonical> {
        match self.peek()? {
            b'"' => {
                let s = self.string()?;
                visitor.visit_str(s)
            }
            b'-' | b'0'..=b'9' => self.integer(visitor),
            b't' => {
                self.literal(b"true")?;
                visitor.visit_bool(true)
            }
            b'f' => {
                self.literal(b"false")?;
                visitor.visit_bool(false)
            }
            b'[' => self.deserialize_seq(visitor),
            _ => Err(NotCanonical),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NotCanonical> {
        if self.peek()? != b'"' {
            return Err(NotCanonical);
        }
        let s = self.string()?;
        visitor.visit_str(s)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NotCanonical> {
        match self.peek()? {
            b't' | b'f' => self.deserialize_any(visitor),
            _ => Err(NotCanonical),
        }
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NotCanonical> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.integer(visitor),
            _ => Err(NotCanonical),
        }
    }

    // An integer of any width is read as `serde_json` reads it (a `u64` or an
    // `i64` to the visitor, which checks the range); a string as a string.
    forwarded! {
        deserialize_u64: deserialize_u8, deserialize_u16, deserialize_u32,
            deserialize_i8, deserialize_i16, deserialize_i32, deserialize_i64;
        deserialize_str: deserialize_string, deserialize_identifier;
    }

    /// `null` is declined, so a value here is always there.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NotCanonical> {
        if self.peek()? == b'n' {
            return Err(NotCanonical);
        }
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, NotCanonical> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NotCanonical> {
        if self.peek()? != b'[' || self.depth >= MAX_DEPTH {
            return Err(NotCanonical);
        }
        self.at += 1;
        self.depth += 1;
        let value = visitor.visit_seq(Elements {
            fields: &mut *self,
            first: true,
        })?;
        // The visitor read every element (a `Vec`'s does): the array ends here.
        if self.peek()? != b']' {
            return Err(NotCanonical);
        }
        self.at += 1;
        self.depth -= 1;
        Ok(value)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, NotCanonical> {
        self.deserialize_seq(visitor)
    }

    /// A unit variant, as a string (the catalog's enums).
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, NotCanonical> {
        if self.peek()? != b'"' {
            return Err(NotCanonical);
        }
        let s = self.string()?;
        visitor.visit_enum(de::value::StrDeserializer::<NotCanonical>::new(s))
    }

    /// The event's own struct: its fields, in its order.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        names: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, NotCanonical> {
        if self.in_struct {
            // A struct inside a value is an object: declined.
            return Err(NotCanonical);
        }
        self.in_struct = true;
        let value = visitor.visit_map(Keys {
            fields: &mut *self,
            names,
            next: 0,
        })?;
        if self.peek()? != b'}' {
            return Err(NotCanonical);
        }
        self.at += 1;
        Ok(value)
    }

    /// In an envelope field (`ts`, `originTs`) only.
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NotCanonical> {
        match self.peek()? {
            b'-' | b'0'..=b'9' if self.envelope => self.number(visitor),
            _ => Err(NotCanonical),
        }
    }

    declined! {
        deserialize_map;
        deserialize_ignored_any;
        deserialize_f32;
        deserialize_i128;
        deserialize_u128;
        deserialize_char;
        deserialize_bytes;
        deserialize_byte_buf;
        deserialize_unit;
        deserialize_unit_struct(&'static str);
        deserialize_tuple_struct(&'static str, usize);
    }
}

/// The elements of an array.
struct Elements<'f, 'l> {
    fields: &'f mut Fields<'l>,
    first: bool,
}

impl<'de> SeqAccess<'de> for Elements<'_, '_> {
    type Error = NotCanonical;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, NotCanonical> {
        match self.fields.peek()? {
            b']' => return Ok(None),
            b',' if !self.first => self.fields.at += 1,
            _ if self.first => {}
            _ => return Err(NotCanonical),
        }
        self.first = false;
        seed.deserialize(&mut *self.fields).map(Some)
    }
}

/// The event struct's fields: each key must be the struct's next field name (or
/// one after fields the encoder leaves out when absent).
struct Keys<'f, 'l> {
    fields: &'f mut Fields<'l>,
    names: &'static [&'static str],
    next: usize,
}

impl<'de> MapAccess<'de> for Keys<'_, '_> {
    type Error = NotCanonical;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, NotCanonical> {
        match self.fields.peek()? {
            b'}' => {
                let rest = self.names.get(self.next..).ok_or(NotCanonical)?;
                return if rest.iter().all(|n| OMITTED.contains(n)) {
                    Ok(None)
                } else {
                    Err(NotCanonical)
                };
            }
            b',' => self.fields.at += 1,
            _ => return Err(NotCanonical),
        }
        // The key is the next name the struct lists, but for names that may be
        // omitted: anything else (an escape in it, another name) is declined.
        loop {
            let name = *self.names.get(self.next).ok_or(NotCanonical)?;
            self.next += 1;
            if self.fields.quoted_is(name) {
                break;
            }
            if !OMITTED.contains(&name) {
                return Err(NotCanonical);
            }
        }
        if self.fields.peek()? != b':' {
            return Err(NotCanonical);
        }
        self.fields.at += 1;
        // The field by its index: a derived struct's field visitor takes the
        // index of a field among those it lists (its `FIELDS`, which are `names`;
        // the catalog has no aliases, which would be listed too), so the key is
        // not matched against the names a second time. The property tests read
        // every catalog type this way back to the record that was written.
        let index = u64::try_from(self.next - 1).map_err(|_| NotCanonical)?;
        seed.deserialize(de::value::U64Deserializer::<NotCanonical>::new(index))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, NotCanonical> {
        seed.deserialize(&mut *self.fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::strategies::any_record;
    use crate::line::Record;

    /// What the strict parser makes of `text` (the canonical reading is tried
    /// first by every parse, so it is compared with the two-pass reading).
    fn strict(text: &str) -> Option<Record> {
        crate::line::parse_two_pass_record(text)
    }

    /// The fields part of `rec`'s line as the encoder writes it.
    fn encoded_fields(rec: &Record) -> String {
        let line = String::from_utf8(Record::new(rec.event.clone()).to_line()).unwrap_or_default();
        let start = line.find(',').unwrap_or(line.len() - 2);
        line[start..line.len() - 1].to_owned()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// A line the encoder wrote is read here, to the same record as the strict
        /// parser reads, its fields part being the encoder's, unless its fields hold
        /// an object or an escaped string (which the encoder may write differently
        /// from a line). This also pins [`OMITTED`]: a field the encoder leaves out
        /// that the list lacks would make such a line declined.
        #[test]
        fn a_line_the_encoder_wrote_is_read_here_unless_it_holds_an_object_or_an_escape(
            rec in any_record("[a-z0-9_@.]{0,12}"),
        ) {
            let line = String::from_utf8(rec.to_line()).unwrap_or_default();
            let text = line.trim_end();
            let fields = encoded_fields(&rec);
            let plain = !fields.contains('{') && !fields.contains('\\')
                && !fields.bytes().any(|b| b < 0x20);
            match parse(text) {
                Some((envelope, event, range)) => {
                    let read = Record::from_parts(envelope, event);
                    proptest::prop_assert_eq!(&read, &rec);
                    proptest::prop_assert_eq!(Some(read.clone()), strict(text));
                    proptest::prop_assert_eq!(&text[range], fields.as_str());
                }
                None => proptest::prop_assert!(!plain, "declined: {}", text),
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]
        /// A timestamp of whole seconds and up to six decimals, read exactly in
        /// integers, is the one `serde_json` reads through an `f64`, up to and
        /// beyond the largest there is; other forms are left to it.
        #[test]
        fn a_decimal_timestamp_read_exactly_is_the_one_read_through_an_f64(
            whole in proptest::prop_oneof![
                0u64..=MAX_SECS + 2,
                (MAX_SECS - 1000)..=MAX_SECS + 2,
                (1u64 << 32) - 10..(1u64 << 32) + 10,
            ],
            fraction in proptest::prop_oneof![0u64..1_000_000, 999_990u64..1_000_000, 0u64..10],
            decimals in 0usize..=7,
            tail in proptest::sample::select(vec!["", "e0", "E1", "0", "1"]),
        ) {
            let text = match decimals {
                0 => format!("{whole}{tail}"),
                n => format!("{whole}.{:0width$}{tail}", fraction % 10u64.pow(n as u32), width = n),
            };
            let mut fields = Fields {
                text: &text,
                line: text.as_bytes(),
                at: 0,
                depth: 0,
                in_struct: false,
                envelope: false,
            };
            let reference = serde_json::from_str::<Timestamp>(&text).ok();
            match fields.decimal_timestamp() {
                Some(ts) => {
                    proptest::prop_assert_eq!(Some(ts), reference, "{}", text);
                    proptest::prop_assert_eq!(fields.at, text.len(), "{}", text);
                }
                None => proptest::prop_assert_eq!(fields.at, 0),
            }
            let exact = decimals <= 6 && tail.is_empty();
            if exact && reference.is_some() {
                proptest::prop_assert!(fields.at == text.len(), "not read exactly: {}", text);
            }
        }
    }

    #[test]
    fn same_bytes_agrees_with_slice_equality_at_every_length_and_every_differing_byte() {
        for n in 0..=24usize {
            let a: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(same_bytes(&a, &a.clone()), "length {n}");
            for i in 0..n {
                let mut b = a.clone();
                b[i] ^= 0x20;
                assert!(!same_bytes(&a, &b), "length {n}, byte {i} differs");
            }
            let longer = [a.as_slice(), b"x"].concat();
            assert!(!same_bytes(&a, &longer), "lengths {n} and {}", n + 1);
        }
    }

    #[test]
    fn a_key_is_matched_in_place_and_an_escaped_or_other_key_is_not() {
        let line = br#""vbucket":5,"vbuckes":6,"vb\u0075cket":7,"vbucke"#;
        let text = std::str::from_utf8(line).expect("ASCII");
        let mut fields = Fields {
            text,
            line,
            at: 0,
            depth: 0,
            in_struct: true,
            envelope: false,
        };
        assert!(fields.quoted_is("vbucket"));
        assert_eq!(fields.at, 9, "moved past the key and its quotes");
        fields.at = 12;
        assert!(!fields.quoted_is("vbucket"), "another name");
        assert_eq!(fields.at, 12, "not moved");
        fields.at = 24;
        assert!(!fields.quoted_is("vbucket"), "an escape in the key");
        fields.at = line.len() - 7;
        assert!(!fields.quoted_is("vbucket"), "a key cut at the line's end");
    }

    #[test]
    fn a_canonical_line_is_read_with_its_envelope_and_the_place_of_its_fields() {
        let text = r#"{"type":"vbucketStateChange","seq":7,"ts":1333576052.926554,"origin":"n_0@h","originSeq":3,"vbucket":5,"state":"replica","host":"h:1","bucket":"b"}"#;
        let (envelope, event, range) = parse(text).expect("canonical");
        let rec = Record::from_parts(envelope, event);
        assert_eq!(Some(&rec), strict(text).as_ref());
        assert_eq!(
            &text[range],
            r#","vbucket":5,"state":"replica","host":"h:1","bucket":"b"}"#
        );
        let empty = r#"{"type":"failoverEnded","seq":1}"#;
        let (_, _, range) = parse(empty).expect("canonical");
        assert_eq!(&empty[range], "}");
    }

    #[test]
    fn a_line_not_written_as_the_encoder_writes_is_left_to_the_strict_parser() {
        let fields = r#""vbucket":5,"state":"replica","host":"h:1","bucket":"b""#;
        let declined = [
            // Whitespace, anywhere.
            format!(r#"{{ "type":"vbucketStateChange",{fields}}}"#),
            format!(r#"{{"type":"vbucketStateChange", {fields}}}"#),
            format!(r#"{{"type":"vbucketStateChange",{fields} }}"#),
            // The type not first, or fields in another order.
            format!(r#"{{"seq":1,"type":"vbucketStateChange",{fields}}}"#),
            r#"{"type":"vbucketStateChange","state":"replica","vbucket":5,"host":"h:1","bucket":"b"}"#.to_owned(),
            // An envelope field after the event's first.
            r#"{"type":"vbucketStateChange","vbucket":5,"seq":1,"state":"replica","host":"h:1","bucket":"b"}"#.to_owned(),
            // An escape, which the encoder would not write, or must.
            r#"{"type":"vbucketStateChange","vbucket":5,"state":"replica","host":"h\u003a1","bucket":"b"}"#.to_owned(),
            r#"{"type":"vbucketStateChange","vbucket":5,"state":"replica","host":"h\"1","bucket":"b"}"#.to_owned(),
            // Numbers not in their shortest form, or not integers.
            r#"{"type":"vbucketStateChange","vbucket":-0,"state":"replica","host":"h:1","bucket":"b"}"#.to_owned(),
            r#"{"type":"vbucketStateChange","vbucket":5.0,"state":"replica","host":"h:1","bucket":"b"}"#.to_owned(),
            r#"{"type":"vbucketStateChange","vbucket":5e0,"state":"replica","host":"h:1","bucket":"b"}"#.to_owned(),
            r#"{"type":"vbucketStateChange","vbucket":05,"state":"replica","host":"h:1","bucket":"b"}"#.to_owned(),
            // An absent optional field written as null, or an object.
            format!(r#"{{"type":"vbucketStateChange",{fields},"meta":null}}"#),
            format!(r#"{{"type":"vbucketStateChange",{fields},"meta":{{"a":1}}}}"#),
            // A field twice, an unknown one, one missing.
            format!(r#"{{"type":"vbucketStateChange",{fields},"bucket":"b"}}"#),
            format!(r#"{{"type":"vbucketStateChange",{fields},"zz":1}}"#),
            r#"{"type":"vbucketStateChange","vbucket":5,"state":"replica","host":"h:1"}"#.to_owned(),
            // An envelope field twice, a zero seq, a bad value.
            format!(r#"{{"type":"vbucketStateChange","seq":1,"seq":2,{fields}}}"#),
            format!(r#"{{"type":"vbucketStateChange","seq":0,{fields}}}"#),
            format!(r#"{{"type":"vbucketStateChange","ts":1e400,{fields}}}"#),
            format!(r#"{{"type":"vbucketStateChange","ts":"1",{fields}}}"#),
            // Anything after the object, a cut line, a control frame, no type.
            format!(r#"{{"type":"vbucketStateChange",{fields}}}x"#),
            format!(r#"{{"type":"vbucketStateChange",{fields}"#),
            r#"{"type":"heartbeat","seq":1,"ts":1}"#.to_owned(),
            r#"{"type":"nope"}"#.to_owned(),
            String::new(),
        ];
        for text in &declined {
            assert!(parse(text).is_none(), "read as canonical: {text}");
        }
        // Those the strict parser accepts it reads as before.
        assert!(strict(&declined[0]).is_some());
        assert!(strict(&declined[4]).is_some());
        assert!(strict(&declined[6]).is_some());
        assert!(strict(&declined[12]).is_some());
    }

    #[test]
    fn a_control_character_in_a_string_is_left_to_the_strict_parser_which_refuses_it() {
        let text = "{\"type\":\"deleteBucket\",\"bucket\":\"a\u{1}b\"}";
        assert!(parse(text).is_none());
        assert!(strict(text).is_none());
    }

    #[test]
    fn a_canonical_reading_of_a_bucket_with_parameters_is_declined_so_they_are_redacted() {
        let text = r#"{"type":"createBucket","bucket":"b","bucketType":"membase","params":{"sasl_password":"hunter2"}}"#;
        assert!(parse(text).is_none());
        let line = Record::parse(text.as_bytes()).expect("valid").to_line();
        assert!(!String::from_utf8_lossy(&line).contains("hunter2"));
    }
}
