//! The JSON writer of the encode path: compact JSON, byte for byte what
//! `serde_json::to_writer` writes, with a faster way through strings.
//!
//! Owns: [`write`], which serializes a value into a `Vec<u8>`.
//!
//! Promises:
//! - The bytes written are exactly `serde_json`'s compact output for the value (the
//!   property tests in `line.rs` and below pin this on every catalog type).
//! - A string is checked eight bytes at a time for what JSON must escape (a control
//!   character, `"` or `\`) and, when it has none (nearly every string in an event:
//!   names, hosts, pids), copied in one go. A string that does need escaping is
//!   written by `serde_json` itself. `serde_json` checks byte by byte: in a profile
//!   of the server under load its string escaping was an eighth of all the
//!   instructions spent.
//! - Anything this writer does not handle (a map key that is not a string, an
//!   integer or a bool, `serde_json`'s raw values) makes [`write`] start over with
//!   `serde_json` for the whole value, so the output never differs.

use std::fmt;

use serde::ser::{self, Serialize};

/// The prefix of the names under which serde_json's own types (raw values,
/// arbitrary-precision numbers) serialize themselves.
const SERDE_JSON_PRIVATE: &str = "$serde_json";

/// Appends `value` to `buf` as compact JSON, as `serde_json::to_writer` would.
pub(crate) fn write<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) {
    let start = buf.len();
    if value.serialize(Writer { buf: &mut *buf }).is_err() {
        buf.truncate(start);
        let result = serde_json::to_writer(&mut *buf, value);
        // Catalog values have string keys and finite numbers, and a Vec never
        // refuses a write: serializing them cannot fail.
        debug_assert!(result.is_ok(), "encoding a catalog value failed");
    }
}

/// Whether `bytes` may hold anything JSON must escape: a control character (below
/// 0x20), `"` or `\`. Eight bytes at a time, the last word overlapping the one
/// before it (and a short string read as two overlapping halves), so that no
/// string is ever looked at byte by byte unless it has fewer than four bytes.
fn needs_escape(bytes: &[u8]) -> bool {
    let n = bytes.len();
    if n >= 8 {
        let mut at = 0;
        while at + 8 < n {
            if word_needs_escape(load8(&bytes[at..at + 8])) {
                return true;
            }
            at += 8;
        }
        word_needs_escape(load8(&bytes[n - 8..]))
    } else if n >= 4 {
        let low = u64::from(load4(&bytes[..4]));
        let high = u64::from(load4(&bytes[n - 4..]));
        word_needs_escape(low | high << 32)
    } else {
        bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
    }
}

/// Whether any byte of `x` is below 0x20, `"` or `\` (the usual bit tricks: "has
/// a byte less than n", and "has a zero byte" after XOR with the byte looked for;
/// exact for whether there is one).
fn word_needs_escape(x: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let control = x.wrapping_sub(ONES * 0x20);
    let quote = (x ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES);
    let backslash = (x ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES);
    // Bytes from 0x80 up (the rest of a UTF-8 character) never match: `!x` drops
    // them.
    (control | quote | backslash) & !x & HIGH != 0
}

/// The first eight bytes of `b` (which has at least eight), little-endian.
fn load8(b: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&b[..8]);
    u64::from_le_bytes(word)
}

/// The first four bytes of `b` (which has at least four), little-endian.
fn load4(b: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&b[..4]);
    u32::from_le_bytes(word)
}

/// Appends `s` as a JSON string.
fn write_str(buf: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        let result = serde_json::to_writer(&mut *buf, s);
        debug_assert!(result.is_ok());
        return;
    }
    buf.reserve(s.len() + 2);
    buf.push(b'"');
    buf.extend_from_slice(s.as_bytes());
    buf.push(b'"');
}

fn write_int<I: itoa::Integer>(buf: &mut Vec<u8>, i: I) {
    buf.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
}

/// Something this writer leaves to `serde_json` (see the module docs).
#[derive(Debug)]
pub(crate) struct Unsupported;

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("left to serde_json")
    }
}

impl std::error::Error for Unsupported {}

impl ser::Error for Unsupported {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Unsupported
    }
}

/// The serializer: compact JSON into `buf`.
struct Writer<'a> {
    buf: &'a mut Vec<u8>,
}

/// A sequence, map or struct being written: whether an element was written yet.
struct Compound<'a> {
    buf: &'a mut Vec<u8>,
    first: bool,
    /// What closes it: `]`, `}`, or `]}` / `}}` for enum variants.
    close: &'static [u8],
}

impl Compound<'_> {
    fn comma(&mut self) {
        if self.first {
            self.first = false;
        } else {
            self.buf.push(b',');
        }
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        self.comma();
        value.serialize(Writer {
            buf: &mut *self.buf,
        })
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), Unsupported> {
        self.comma();
        write_str(self.buf, key);
        self.buf.push(b':');
        value.serialize(Writer {
            buf: &mut *self.buf,
        })
    }

    fn end(self) -> Result<(), Unsupported> {
        self.buf.extend_from_slice(self.close);
        Ok(())
    }
}

impl<'a> Writer<'a> {
    fn integer<I: itoa::Integer>(self, i: I) -> Result<(), Unsupported> {
        write_int(self.buf, i);
        Ok(())
    }

    fn open(self, open: &[u8], close: &'static [u8]) -> Compound<'a> {
        self.buf.extend_from_slice(open);
        Compound {
            buf: self.buf,
            first: true,
            close,
        }
    }

    /// `{"variant":` then the compound, closed by `close` and `}`.
    fn open_variant(self, variant: &str, open: u8, close: &'static [u8]) -> Compound<'a> {
        self.buf.push(b'{');
        write_str(self.buf, variant);
        self.buf.push(b':');
        self.buf.push(open);
        Compound {
            buf: self.buf,
            first: true,
            close,
        }
    }
}

impl<'a> ser::Serializer for Writer<'a> {
    type Ok = ();
    type Error = Unsupported;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Unsupported> {
        self.buf
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    integers!();

    fn serialize_f32(self, v: f32) -> Result<(), Unsupported> {
        serde_json::to_writer(self.buf, &v).map_err(|_| Unsupported)
    }

    fn serialize_f64(self, v: f64) -> Result<(), Unsupported> {
        serde_json::to_writer(self.buf, &v).map_err(|_| Unsupported)
    }

    fn serialize_char(self, v: char) -> Result<(), Unsupported> {
        write_str(self.buf, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), Unsupported> {
        write_str(self.buf, v);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), Unsupported> {
        serde_json::to_writer(self.buf, &v).map_err(|_| Unsupported)
    }

    fn serialize_none(self) -> Result<(), Unsupported> {
        self.serialize_unit()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Unsupported> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Unsupported> {
        self.buf.extend_from_slice(b"null");
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Unsupported> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Unsupported> {
        write_str(self.buf, variant);
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Unsupported> {
        if name.starts_with(SERDE_JSON_PRIVATE) {
            return Err(Unsupported);
        }
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Unsupported> {
        self.buf.push(b'{');
        write_str(self.buf, variant);
        self.buf.push(b':');
        value.serialize(Writer {
            buf: &mut *self.buf,
        })?;
        self.buf.push(b'}');
        Ok(())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a>, Unsupported> {
        Ok(self.open(b"[", b"]"))
    }

    fn serialize_tuple(self, _len: usize) -> Result<Compound<'a>, Unsupported> {
        Ok(self.open(b"[", b"]"))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, Unsupported> {
        Ok(self.open(b"[", b"]"))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, Unsupported> {
        Ok(self.open_variant(variant, b'[', b"]}"))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'a>, Unsupported> {
        Ok(self.open(b"{", b"}"))
    }

    fn serialize_struct(
        self,
        name: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, Unsupported> {
        // serde_json's raw values (and arbitrary-precision numbers) pass through
        // here as structs of their own names: those are serde_json's to write.
        if name.starts_with(SERDE_JSON_PRIVATE) {
            return Err(Unsupported);
        }
        Ok(self.open(b"{", b"}"))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, Unsupported> {
        Ok(self.open_variant(variant, b'{', b"}}"))
    }
}

/// The `serialize_iN`/`serialize_uN` methods of a serializer with an `integer`
/// method of its own.
macro_rules! integers {
    () => {
        integers!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
            serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
            serialize_u32: u32, serialize_u64: u64, serialize_u128: u128);
    };
    ($($method:ident: $ty:ty),*) => {
        $(fn $method(self, v: $ty) -> Result<(), Unsupported> {
            self.integer(v)
        })*
    };
}
use integers;

/// The compound traits whose elements are written one after another (`[a,b]`).
macro_rules! element_compounds {
    ($($trait:ident::$method:ident),*) => {$(
        impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = Unsupported;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
                self.element(value)
            }

            fn end(self) -> Result<(), Unsupported> {
                Compound::end(self)
            }
        }
    )*};
}

element_compounds!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

/// The compound traits written as objects of named fields (`{"k":v}`).
macro_rules! field_compounds {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = Unsupported;

            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), Unsupported> {
                self.field(key, value)
            }

            fn end(self) -> Result<(), Unsupported> {
                Compound::end(self)
            }
        }
    )*};
}

field_compounds!(SerializeStruct, SerializeStructVariant);

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = Unsupported;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Unsupported> {
        self.comma();
        key.serialize(KeyWriter {
            buf: &mut *self.buf,
        })?;
        self.buf.push(b':');
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        value.serialize(Writer {
            buf: &mut *self.buf,
        })
    }

    fn end(self) -> Result<(), Unsupported> {
        Compound::end(self)
    }
}

/// A map key: a string as it is, an integer or a bool quoted (as `serde_json`
/// writes them); any other key is left to `serde_json`.
struct KeyWriter<'a> {
    buf: &'a mut Vec<u8>,
}

impl KeyWriter<'_> {
    /// A key is a string: an integer key is written quoted.
    fn integer<I: itoa::Integer>(self, i: I) -> Result<(), Unsupported> {
        self.buf.push(b'"');
        write_int(self.buf, i);
        self.buf.push(b'"');
        Ok(())
    }
}

impl ser::Serializer for KeyWriter<'_> {
    type Ok = ();
    type Error = Unsupported;
    type SerializeSeq = ser::Impossible<(), Unsupported>;
    type SerializeTuple = ser::Impossible<(), Unsupported>;
    type SerializeTupleStruct = ser::Impossible<(), Unsupported>;
    type SerializeTupleVariant = ser::Impossible<(), Unsupported>;
    type SerializeMap = ser::Impossible<(), Unsupported>;
    type SerializeStruct = ser::Impossible<(), Unsupported>;
    type SerializeStructVariant = ser::Impossible<(), Unsupported>;

    fn serialize_bool(self, v: bool) -> Result<(), Unsupported> {
        self.buf
            .extend_from_slice(if v { b"\"true\"" } else { b"\"false\"" });
        Ok(())
    }

    integers!();

    fn serialize_f32(self, _v: f32) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_f64(self, _v: f64) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_char(self, v: char) -> Result<(), Unsupported> {
        write_str(self.buf, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), Unsupported> {
        write_str(self.buf, v);
        Ok(())
    }

    fn serialize_bytes(self, _v: &[u8]) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_none(self) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_unit(self) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Unsupported> {
        write_str(self.buf, variant);
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Unsupported> {
        if name.starts_with(SERDE_JSON_PRIVATE) {
            return Err(Unsupported);
        }
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Unsupported> {
        Err(Unsupported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ours<T: Serialize + ?Sized>(value: &T) -> String {
        let mut buf = b"prefix".to_vec();
        write(&mut buf, value);
        String::from_utf8(buf.split_off(6)).expect("UTF-8")
    }

    fn theirs<T: Serialize + ?Sized>(value: &T) -> String {
        serde_json::to_string(value).expect("serializes")
    }

    #[test]
    fn strings_are_escaped_exactly_as_serde_json_escapes_them() {
        let mut cases: Vec<String> = vec![
            String::new(),
            "plain".into(),
            "n_0@10.17.2.163".into(),
            "a\"b".into(),
            "back\\slash".into(),
            "tab\there\nnewline\r\u{8}\u{c}".into(),
            "\u{0}\u{1}\u{1f}\u{7f}".into(),
            "héllo wörld ✓ 𝄞".into(),
            "exactly8".into(),
            "sixteen bytes!!!".into(),
            "seventeen bytes!\"".into(),
        ];
        // Every byte value that can stand alone in a string, at every position
        // of an eight-byte word and in the remainder.
        for c in (0u8..=0x7f).map(char::from).chain(['é', '€', '\u{ffff}']) {
            for pad in 0..17 {
                cases.push(format!("{}{c}{}", "x".repeat(pad), "y".repeat(16 - pad)));
            }
        }
        for s in &cases {
            assert_eq!(ours(s), theirs(s), "{s:?}");
        }
    }

    #[test]
    fn values_of_every_shape_match_serde_json() {
        let mut ints = BTreeMap::new();
        ints.insert(7u16, 1u64);
        ints.insert(1023u16, u64::MAX);
        let mut bools = BTreeMap::new();
        bools.insert(true, "yes");
        bools.insert(false, "no");
        let value: serde_json::Value = serde_json::json!({
            "null": null, "t": true, "f": false, "i": -12, "u": 18446744073709551615u64,
            "float": 1.5, "tiny": 1e-7, "big": 1e300, "whole": 3.0,
            "arr": [[], {}, [1, "two", 3.25], {"k\"ey": "v\\al"}],
            "ctl": "\u{1}",
        });
        assert_eq!(ours(&ints), theirs(&ints));
        assert_eq!(ours(&bools), theirs(&bools));
        assert_eq!(ours(&value), theirs(&value));
        assert_eq!(ours(&Some(5u8)), theirs(&Some(5u8)));
        assert_eq!(ours(&None::<u8>), theirs(&None::<u8>));
        assert_eq!(ours(&(1u8, 'c', -2i128)), theirs(&(1u8, 'c', -2i128)));
        assert_eq!(ours(&f64::NAN), theirs(&f64::NAN));
        assert_eq!(ours(&vec![0.1f32, -0.0]), theirs(&vec![0.1f32, -0.0]));
    }

    #[test]
    fn enum_variants_match_serde_json() {
        #[derive(serde::Serialize)]
        enum E {
            Unit,
            Newtype(u8),
            Tuple(u8, String),
            Struct { a: u8, b: Vec<u8> },
        }
        for e in [
            E::Unit,
            E::Newtype(1),
            E::Tuple(2, "x".into()),
            E::Struct { a: 3, b: vec![] },
        ] {
            assert_eq!(ours(&e), theirs(&e));
        }
    }

    #[test]
    fn what_it_does_not_handle_is_left_to_serde_json() {
        let raw = serde_json::value::RawValue::from_string("{ \"spaced\" : 1 }".into())
            .expect("valid JSON");
        assert_eq!(ours(&raw), theirs(&raw));
        let mut float_keys = BTreeMap::new();
        float_keys.insert("k", 2.5f64);
        assert_eq!(ours(&float_keys), theirs(&float_keys));
        // A sequence as a key is refused by the writer (and by serde_json).
        let mut seq_keys = BTreeMap::new();
        seq_keys.insert(vec![1u8], 2u8);
        let mut buf = Vec::new();
        assert!(Serialize::serialize(&seq_keys, Writer { buf: &mut buf }).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        /// Every catalog type, with arbitrary strings (escapes included), numbers
        /// and nested JSON objects, comes out as serde_json writes it.
        #[test]
        fn every_catalog_event_is_written_as_serde_json_writes_it(
            event in proptest::prelude::any::<crate::Event>(),
        ) {
            let mut buf = Vec::new();
            event.write_fields(&mut buf);
            let expected = serde_json::to_vec(&EventFields(&event)).expect("serializes");
            proptest::prop_assert_eq!(
                String::from_utf8_lossy(&buf),
                String::from_utf8_lossy(&expected)
            );
        }
    }

    /// An event's fields, serialized by serde_json (the reference).
    struct EventFields<'a>(&'a crate::Event);

    impl Serialize for EventFields<'_> {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            self.0.serialize_fields(s)
        }
    }
}
