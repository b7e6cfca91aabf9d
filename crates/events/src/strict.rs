//! Strict reading of the free-form parts of an event: JSON objects and maps whose
//! keys repeat are refused at every depth.
//!
//! Owns: the `deserialize_with` functions of the catalog's free-form fields
//! (`meta`, `checkpoints`, `volumes`) and of [`crate::redact::BucketParams`].
//!
//! Promises:
//! - A key that appears twice in one object, at any depth (an object in an array of
//!   objects included), is an error naming the key and where it is, as a path from
//!   the field: `duplicate key "a" in meta.b[0]`. Plain JSON readers keep the last
//!   copy silently; a line that reads differently in different readers is refused.
//! - The check costs one map look-up per key, which building the map does anyway
//!   (the key goes in through the map's entry), and no allocation: the path is a
//!   chain of borrowed frames on the stack, written out only for an error.

use std::collections::btree_map::{BTreeMap, Entry as BTreeEntry};
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

/// Where a value is: a chain of frames from the field down, each on the stack of the
/// reader of its parent.
#[derive(Clone, Copy)]
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    segment: Segment<'a>,
}

#[derive(Clone, Copy)]
enum Segment<'a> {
    /// The field the value belongs to.
    Field(&'static str),
    /// A key of an object.
    Key(&'a str),
    /// An index of an array.
    Index(usize),
}

impl<'a> Path<'a> {
    fn field(name: &'static str) -> Path<'static> {
        Path {
            parent: None,
            segment: Segment::Field(name),
        }
    }

    fn child(&'a self, segment: Segment<'a>) -> Path<'a> {
        Path {
            parent: Some(self),
            segment,
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(parent) = self.parent {
            fmt::Display::fmt(parent, f)?;
        }
        match self.segment {
            Segment::Field(name) => f.write_str(name),
            Segment::Key(key)
                if !key.is_empty()
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                write!(f, ".{key}")
            }
            Segment::Key(key) => write!(f, "[{key:?}]"),
            Segment::Index(i) => write!(f, "[{i}]"),
        }
    }
}

fn duplicate<E: de::Error>(key: &dyn fmt::Debug, path: &Path<'_>) -> E {
    E::custom(format_args!("duplicate key {key:?} in {path}"))
}

/// Reads any JSON value, refusing duplicate keys in every object within it.
struct ValueSeed<'p> {
    path: &'p Path<'p>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        loop {
            let path = self.path.child(Segment::Index(items.len()));
            match seq.next_element_seed(ValueSeed { path: &path })? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        read_object(map, self.path).map(Value::Object)
    }
}

/// Reads the entries of an object, refusing a key that repeats.
fn read_object<'de, A: MapAccess<'de>>(
    mut map: A,
    path: &Path<'_>,
) -> Result<Map<String, Value>, A::Error> {
    let mut object = Map::new();
    while let Some(key) = map.next_key::<String>()? {
        let child = path.child(Segment::Key(&key));
        let value = map.next_value_seed(ValueSeed { path: &child })?;
        match object.entry(key) {
            Entry::Vacant(slot) => {
                slot.insert(value);
            }
            Entry::Occupied(taken) => return Err(duplicate(taken.key(), path)),
        }
    }
    Ok(object)
}

/// Reads a JSON object (the value of the field `field`) with no duplicate key at any
/// depth.
struct ObjectVisitor {
    field: &'static str,
}

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        read_object(map, &Path::field(self.field))
    }
}

/// The object of the field `field`, with no duplicate key at any depth.
pub(crate) fn object<'de, D: Deserializer<'de>>(
    d: D,
    field: &'static str,
) -> Result<Map<String, Value>, D::Error> {
    d.deserialize_map(ObjectVisitor { field })
}

/// `null` or absent, or an object as [`object`] reads it.
struct OptionalObject {
    field: &'static str,
}

impl<'de> Visitor<'de> for OptionalObject {
    type Value = Option<Map<String, Value>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object or null")
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        object(d, self.field).map(Some)
    }
}

/// `meta` of `vbucketStateChange`: an optional object, no duplicate key at any depth.
pub(crate) fn meta<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Map<String, Value>>, D::Error> {
    d.deserialize_option(OptionalObject { field: "meta" })
}

/// A map with typed keys and values, refusing a key that repeats.
struct BTreeMapVisitor<K, V> {
    field: &'static str,
    types: PhantomData<fn() -> (K, V)>,
}

impl<'de, K, V> Visitor<'de> for BTreeMapVisitor<K, V>
where
    K: Deserialize<'de> + Ord + fmt::Debug,
    V: Deserialize<'de>,
{
    type Value = BTreeMap<K, V>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some((key, value)) = map.next_entry::<K, V>()? {
            match out.entry(key) {
                BTreeEntry::Vacant(slot) => {
                    slot.insert(value);
                }
                BTreeEntry::Occupied(taken) => {
                    return Err(duplicate(taken.key(), &Path::field(self.field)))
                }
            }
        }
        Ok(out)
    }
}

fn btree_map<'de, D, K, V>(d: D, field: &'static str) -> Result<BTreeMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord + fmt::Debug,
    V: Deserialize<'de>,
{
    d.deserialize_map(BTreeMapVisitor {
        field,
        types: PhantomData,
    })
}

/// `checkpoints` of `ebucketmigratorStart`: no vbucket twice.
pub(crate) fn checkpoints<'de, D, K, V>(d: D) -> Result<BTreeMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord + fmt::Debug,
    V: Deserialize<'de>,
{
    btree_map(d, "checkpoints")
}

/// `volumes` of `mountingVolumesStarted`: no node twice.
pub(crate) fn volumes<'de, D, K, V>(d: D) -> Result<BTreeMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord + fmt::Debug,
    V: Deserialize<'de>,
{
    btree_map(d, "volumes")
}
