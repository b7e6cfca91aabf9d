//! Filters: which events a reader or a sink wants, decided from an event's [`Meta`]
//! alone (no line is parsed).
//!
//! Owns: [`Filter`] (by type, bucket, vbucket, node, and `and` / `or` / `not`), its
//! TOML/JSON form, its construction from the stream's query parameters
//! ([`Filter::from_query`]), and the registrations that list the filter kinds
//! ([`FilterRegistration`], collected with `inventory`; [`registered_filters`]).
//!
//! Promises:
//! - A filter is a pure function of the [`Meta`]; an event whose type has no such
//!   field (e.g. no `bucket`) does not match a filter on that field.
//! - `node` matches the event's `node`, its `host` or its `origin`.
//! - Written as a table, every key given must match (AND across keys) and a key with
//!   a list matches any of its values (OR within a key):
//!   `filter = { type = ["vbucketMoveStart", "vbucketMoveDone"], bucket = "default" }`.
//!   `{ and = [..] }`, `{ or = [..] }` and `{ not = {..} }` combine filters.
//! - Unknown keys, unknown event type names, vbuckets out of 0–65535 and empty lists
//!   are errors that say what was wrong, never a filter that silently matches
//!   nothing (or everything).

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use master_events_events::EventType;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::ring::{EventBatch, EventRef, Meta};

const TYPE_WORDS: usize = EventType::ALL.len().div_ceil(64);

/// A set of event types.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct TypeSet([u64; TYPE_WORDS]);

impl TypeSet {
    /// The empty set.
    pub const fn new() -> TypeSet {
        TypeSet([0; TYPE_WORDS])
    }

    /// Every type of the catalog.
    pub fn full() -> TypeSet {
        EventType::ALL.iter().copied().collect()
    }

    /// The types in both sets.
    pub fn intersection(&self, other: &TypeSet) -> TypeSet {
        let mut out = *self;
        for (w, o) in out.0.iter_mut().zip(other.0) {
            *w &= o;
        }
        out
    }

    /// The types in either set.
    pub fn union(&self, other: &TypeSet) -> TypeSet {
        let mut out = *self;
        for (w, o) in out.0.iter_mut().zip(other.0) {
            *w |= o;
        }
        out
    }

    /// The catalog's types that are not in this set.
    pub fn complement(&self) -> TypeSet {
        TypeSet::full().intersection(&TypeSet(self.0.map(|w| !w)))
    }

    /// Adds a type.
    pub fn insert(&mut self, t: EventType) {
        let i = t.index();
        self.0[i / 64] |= 1 << (i % 64);
    }

    /// Whether the set has `t`.
    pub fn contains(&self, t: EventType) -> bool {
        let i = t.index();
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// The types in the set, in catalog order.
    pub fn iter(&self) -> impl Iterator<Item = EventType> + '_ {
        EventType::ALL.iter().copied().filter(|t| self.contains(*t))
    }
}

impl FromIterator<EventType> for TypeSet {
    fn from_iter<I: IntoIterator<Item = EventType>>(iter: I) -> Self {
        let mut set = TypeSet::new();
        for t in iter {
            set.insert(t);
        }
        set
    }
}

impl fmt::Debug for TypeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(EventType::as_str))
            .finish()
    }
}

/// A set of vbuckets (0–65535), as a bitmap.
#[derive(Clone, PartialEq, Eq)]
pub struct VbucketSet(Box<[u64; 1024]>);

impl VbucketSet {
    /// The empty set.
    pub fn new() -> VbucketSet {
        VbucketSet(Box::new([0; 1024]))
    }

    /// Adds a vbucket.
    pub fn insert(&mut self, vb: u16) {
        self.0[vb as usize / 64] |= 1 << (vb % 64);
    }

    /// Whether the set has `vb`.
    pub fn contains(&self, vb: u16) -> bool {
        self.0[vb as usize / 64] & (1 << (vb % 64)) != 0
    }

    /// The vbuckets in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..=u16::MAX).filter(|v| self.contains(*v))
    }
}

impl Default for VbucketSet {
    fn default() -> Self {
        VbucketSet::new()
    }
}

impl FromIterator<u16> for VbucketSet {
    fn from_iter<I: IntoIterator<Item = u16>>(iter: I) -> Self {
        let mut set = VbucketSet::new();
        for v in iter {
            set.insert(v);
        }
        set
    }
}

impl fmt::Debug for VbucketSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Which events to keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// The event's type is in the set.
    Type(TypeSet),
    /// The event has a `bucket` equal to one of these.
    Bucket(Vec<String>),
    /// The event has a `vbucket` in the set.
    Vbucket(VbucketSet),
    /// The event's `node`, `host` or `origin` is one of these.
    Node(Vec<String>),
    /// Every filter matches (an empty `And` matches everything).
    And(Vec<Filter>),
    /// At least one filter matches (an empty `Or` matches nothing).
    Or(Vec<Filter>),
    /// The filter does not match.
    Not(Box<Filter>),
}

/// Why a filter could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A type name that is not in the catalog.
    #[error("unknown event type {name:?}{}", suggestion(name))]
    UnknownType {
        /// The name given.
        name: String,
    },
    /// A vbucket that is not an integer in 0–65535.
    #[error("invalid vbucket {value:?}: expected an integer from 0 to 65535")]
    BadVbucket {
        /// The value given.
        value: String,
    },
    /// A key given with no value (it would match nothing).
    #[error("{key:?} is empty: give at least one value")]
    Empty {
        /// The key (`type`, `bucket`, `vbucket`, `node`, `or`).
        key: &'static str,
    },
    /// A table with none of the filter keys.
    #[error("a filter needs at least one of: type, bucket, vbucket, node, and, or, not")]
    NoKey,
}

impl FilterError {
    /// The filter key the error is about (`type`, `vbucket`, or the key given
    /// empty), or `filter` when it is about the filter as a whole: the stream's
    /// query parameter to name in its answer.
    pub fn key(&self) -> &'static str {
        match self {
            FilterError::UnknownType { .. } => "type",
            FilterError::BadVbucket { .. } => "vbucket",
            FilterError::Empty { key } => key,
            FilterError::NoKey => "filter",
        }
    }
}

fn suggestion(name: &str) -> String {
    let best = EventType::ALL
        .iter()
        .map(|t| {
            (
                edit_distance(&name.to_ascii_lowercase(), &t.as_str().to_ascii_lowercase()),
                t,
            )
        })
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, t)) if d <= 3 => format!("; did you mean {:?}?", t.as_str()),
        _ => format!(
            "; expected one of: {}",
            EventType::ALL
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn parse_type(name: &str) -> Result<EventType, FilterError> {
    name.parse().map_err(|_| FilterError::UnknownType {
        name: name.to_owned(),
    })
}

fn parse_vbucket(value: &str) -> Result<u16, FilterError> {
    value.trim().parse().map_err(|_| FilterError::BadVbucket {
        value: value.to_owned(),
    })
}

/// Splits query values on commas, trims them and drops empty pieces.
fn pieces<I, S>(values: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    values
        .into_iter()
        .flat_map(|v| {
            v.as_ref()
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

impl Filter {
    /// The filter that matches every event.
    pub fn all() -> Filter {
        Filter::And(Vec::new())
    }

    /// The event types this filter can match at all (a superset: a type in it may
    /// still be refused by a bucket, vbucket or node condition). An empty set means
    /// the filter matches nothing, whatever the events.
    pub fn possible_types(&self) -> TypeSet {
        match self {
            Filter::Type(set) => *set,
            Filter::Bucket(_) | Filter::Vbucket(_) | Filter::Node(_) => TypeSet::full(),
            Filter::And(all) => all.iter().fold(TypeSet::full(), |acc, f| {
                acc.intersection(&f.possible_types())
            }),
            Filter::Or(any) => any
                .iter()
                .fold(TypeSet::new(), |acc, f| acc.union(&f.possible_types())),
            Filter::Not(inner) => match &**inner {
                Filter::Type(set) => set.complement(),
                _ => TypeSet::full(),
            },
        }
    }

    /// Whether this is [`Filter::all`] (an empty `And`).
    pub fn is_all(&self) -> bool {
        matches!(self, Filter::And(v) if v.is_empty())
    }

    /// The events of these types.
    pub fn types(types: impl IntoIterator<Item = EventType>) -> Filter {
        Filter::Type(types.into_iter().collect())
    }

    /// The events of this bucket.
    pub fn bucket(bucket: impl Into<String>) -> Filter {
        Filter::Bucket(vec![bucket.into()])
    }

    /// The events of these vbuckets.
    pub fn vbuckets(vbuckets: impl IntoIterator<Item = u16>) -> Filter {
        Filter::Vbucket(vbuckets.into_iter().collect())
    }

    /// The events whose node, host or origin is `node`.
    pub fn node(node: impl Into<String>) -> Filter {
        Filter::Node(vec![node.into()])
    }

    /// The events this filter does not match.
    pub fn negate(self) -> Filter {
        Filter::Not(Box::new(self))
    }

    /// Whether the event described by `meta` passes.
    pub fn matches(&self, meta: &Meta<'_>) -> bool {
        match self {
            Filter::Type(set) => set.contains(meta.event_type),
            Filter::Bucket(buckets) => meta.bucket.is_some_and(|b| buckets.iter().any(|x| x == b)),
            Filter::Vbucket(set) => meta.vbucket.is_some_and(|v| set.contains(v)),
            Filter::Node(nodes) => [meta.node, meta.host, meta.origin]
                .into_iter()
                .flatten()
                .any(|n| nodes.iter().any(|x| **x == *n)),
            Filter::And(all) => all.iter().all(|f| f.matches(meta)),
            Filter::Or(any) => any.iter().any(|f| f.matches(meta)),
            Filter::Not(f) => !f.matches(meta),
        }
    }

    /// The filter of the stream's query parameters `?type=a,b&bucket=x&vbucket=1,2&node=n`:
    /// OR within a key, AND across keys. Each argument is the key's values (repeat
    /// the key or separate values with commas; blanks are ignored); a key with no
    /// value does not filter. With no key at all, the filter matches everything.
    pub fn from_query<T, B, V, N>(
        types: impl IntoIterator<Item = T>,
        buckets: impl IntoIterator<Item = B>,
        vbuckets: impl IntoIterator<Item = V>,
        nodes: impl IntoIterator<Item = N>,
    ) -> Result<Filter, FilterError>
    where
        T: AsRef<str>,
        B: AsRef<str>,
        V: AsRef<str>,
        N: AsRef<str>,
    {
        let mut all = Vec::new();
        let types = pieces(types);
        if !types.is_empty() {
            let set = types
                .iter()
                .map(|t| parse_type(t))
                .collect::<Result<TypeSet, _>>()?;
            all.push(Filter::Type(set));
        }
        let buckets = pieces(buckets);
        if !buckets.is_empty() {
            all.push(Filter::Bucket(buckets));
        }
        let vbuckets = pieces(vbuckets);
        if !vbuckets.is_empty() {
            let set = vbuckets
                .iter()
                .map(|v| parse_vbucket(v))
                .collect::<Result<VbucketSet, _>>()?;
            all.push(Filter::Vbucket(set));
        }
        let nodes = pieces(nodes);
        if !nodes.is_empty() {
            all.push(Filter::Node(nodes));
        }
        Ok(match all.len() {
            1 => all.remove(0),
            _ => Filter::And(all),
        })
    }
}

impl EventBatch {
    /// The lines of the events that pass `filter`, back to back: a zero-copy slice
    /// when they are consecutive (in particular when all pass), else a copy; empty
    /// when none pass.
    pub fn select(&self, filter: &Filter) -> Bytes {
        self.select_each(filter, |_| {})
    }

    /// [`EventBatch::select`], calling `each` with every event that passes, in
    /// order (each event is matched against the filter once).
    pub fn select_each(&self, filter: &Filter, mut each: impl FnMut(&EventRef<'_>)) -> Bytes {
        let (start, end) = (self.start, self.end);
        let mut first: Option<(usize, usize)> = None;
        let mut copy: Option<Vec<u8>> = None;
        // The start of the run of passing events being walked, if any.
        let mut run: Option<usize> = None;
        for i in start..=end {
            let passes = i < end && {
                let event = self.event(i);
                let passes = filter.matches(&event.meta);
                if passes {
                    each(&event);
                }
                passes
            };
            let from = match (passes, run) {
                (true, None) => {
                    run = Some(i);
                    continue;
                }
                (false, Some(from)) => from,
                _ => continue,
            };
            run = None;
            match (first, copy.as_mut()) {
                (None, _) => first = Some((from, i)),
                (Some((a, b)), None) => {
                    let mut v = Vec::with_capacity(self.slice(a, b).len() * 2);
                    v.extend_from_slice(&self.slice(a, b));
                    v.extend_from_slice(&self.slice(from, i));
                    copy = Some(v);
                }
                (Some(_), Some(v)) => v.extend_from_slice(&self.slice(from, i)),
            }
        }
        match (first, copy) {
            (_, Some(v)) => Bytes::from(v),
            (Some((a, b)), None) => self.slice(a, b),
            (None, None) => Bytes::new(),
        }
    }
}

// ---- The TOML / JSON form ----

/// A filter as written in configuration. Every key given must match (AND across
/// keys); a key whose value is a list matches any of its values (OR within a key).
#[derive(Deserialize, JsonSchema, Debug, Default)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Filter")]
struct FilterSpec {
    /// Event types (wire names, e.g. `vbucketMoveStart`): one or a list.
    #[serde(default, rename = "type")]
    types: Option<TypeList>,
    /// Bucket names: one or a list. Events without a bucket do not match.
    #[serde(default)]
    bucket: Option<StringList>,
    /// vbucket numbers (0–65535): one or a list. Events without a vbucket do not
    /// match.
    #[serde(default)]
    vbucket: Option<VbucketList>,
    /// Node names or hosts: one or a list; matches the event's `node`, `host` or
    /// `origin`.
    #[serde(default)]
    node: Option<StringList>,
    /// Filters that must all match.
    #[serde(default)]
    and: Option<Vec<FilterSpec>>,
    /// Filters of which at least one must match.
    #[serde(default)]
    or: Option<Vec<FilterSpec>>,
    /// A filter that must not match.
    #[serde(default)]
    not: Option<Box<FilterSpec>>,
}

impl TryFrom<FilterSpec> for Filter {
    type Error = FilterError;

    fn try_from(spec: FilterSpec) -> Result<Filter, FilterError> {
        let mut all = Vec::new();
        if let Some(TypeList(types)) = spec.types {
            if types.is_empty() {
                return Err(FilterError::Empty { key: "type" });
            }
            all.push(Filter::Type(types.into_iter().collect()));
        }
        if let Some(StringList(buckets)) = spec.bucket {
            if buckets.is_empty() {
                return Err(FilterError::Empty { key: "bucket" });
            }
            all.push(Filter::Bucket(buckets));
        }
        if let Some(VbucketList(vbuckets)) = spec.vbucket {
            if vbuckets.is_empty() {
                return Err(FilterError::Empty { key: "vbucket" });
            }
            all.push(Filter::Vbucket(vbuckets.into_iter().collect()));
        }
        if let Some(StringList(nodes)) = spec.node {
            if nodes.is_empty() {
                return Err(FilterError::Empty { key: "node" });
            }
            all.push(Filter::Node(nodes));
        }
        if let Some(and) = spec.and {
            let and = and
                .into_iter()
                .map(Filter::try_from)
                .collect::<Result<Vec<_>, _>>()?;
            all.push(Filter::And(and));
        }
        if let Some(or) = spec.or {
            if or.is_empty() {
                return Err(FilterError::Empty { key: "or" });
            }
            let or = or
                .into_iter()
                .map(Filter::try_from)
                .collect::<Result<Vec<_>, _>>()?;
            all.push(Filter::Or(or));
        }
        if let Some(not) = spec.not {
            all.push(Filter::try_from(*not)?.negate());
        }
        match all.len() {
            0 => Err(FilterError::NoKey),
            1 => Ok(all.remove(0)),
            _ => Ok(Filter::And(all)),
        }
    }
}

impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Filter, D::Error> {
        let spec = FilterSpec::deserialize(d)?;
        Filter::try_from(spec).map_err(de::Error::custom)
    }
}

impl JsonSchema for Filter {
    fn schema_name() -> Cow<'static, str> {
        "Filter".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        FilterSpec::json_schema(generator)
    }
}

/// One value or a list of values, for the keys of [`FilterSpec`].
macro_rules! one_or_many {
    ($name:ident, $item:ty, $what:literal, $schema:expr, |$v:ident| $from_str:expr, $from_u64:expr) => {
        #[derive(Debug, Default)]
        struct $name(Vec<$item>);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!($what, " or a list of them"))
                    }
                    fn visit_str<E: de::Error>(self, $v: &str) -> Result<$name, E> {
                        Ok($name(vec![$from_str.map_err(E::custom)?]))
                    }
                    fn visit_u64<E: de::Error>(self, $v: u64) -> Result<$name, E> {
                        Ok($name(vec![$from_u64.map_err(E::custom)?]))
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$name, E> {
                        match u64::try_from(v) {
                            Ok(v) => self.visit_u64(v),
                            Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                        }
                    }
                    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<$name, A::Error> {
                        let mut out = Vec::new();
                        // Which value of the list is wrong: an error about it names its
                        // place, since a configuration error does not quote the value.
                        for at in 1.. {
                            let one = seq.next_element::<$name>().map_err(|e| {
                                <A::Error as de::Error>::custom(format_args!("value {at} of the list: {e}"))
                            })?;
                            match one {
                                Some(one) => out.extend(one.0),
                                None => break,
                            }
                        }
                        Ok($name(out))
                    }
                }
                d.deserialize_any(V)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                let one: serde_json::Value = $schema;
                json_schema!({
                    "anyOf": [one.clone(), { "type": "array", "items": one, "minItems": 1 }]
                })
            }
        }
    };
}

fn not_a_string<T>(v: u64) -> Result<T, String> {
    Err(format!("expected a string, found the number {v}"))
}

one_or_many!(
    TypeList,
    EventType,
    "an event type name",
    serde_json::json!({
        "type": "string",
        "enum": EventType::ALL.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
    }),
    |v| parse_type(v),
    not_a_string(v)
);
one_or_many!(
    StringList,
    String,
    "a string",
    serde_json::json!({ "type": "string" }),
    |v| Ok::<_, String>(v.to_owned()),
    not_a_string(v)
);
one_or_many!(
    VbucketList,
    u16,
    "a vbucket number (0–65535)",
    serde_json::json!({ "type": "integer", "minimum": 0, "maximum": 65535 }),
    |v| Err::<u16, _>(format!("expected a vbucket number, found the string {v:?}")),
    u16::try_from(v).map_err(|_| FilterError::BadVbucket {
        value: v.to_string()
    })
);

// ---- Registrations of the built-in filter kinds (for listings) ----

fn type_schema() -> Schema {
    schemars::schema_for!(TypeList)
}
fn string_list_schema() -> Schema {
    schemars::schema_for!(StringList)
}
fn vbucket_schema() -> Schema {
    schemars::schema_for!(VbucketList)
}
fn filters_schema() -> Schema {
    schemars::schema_for!(Vec<Filter>)
}
fn filter_schema() -> Schema {
    schemars::schema_for!(Filter)
}

/// A filter kind, for listings (filters are parsed by [`crate::Filter`]'s own
/// `Deserialize`; these registrations describe its keys).
pub struct FilterRegistration {
    /// The key that names it in a filter table (`type`, `bucket`, `and`, ...).
    pub name: &'static str,
    /// One line for listings.
    pub description: &'static str,
    /// The JSON Schema of the key's value.
    pub config_schema: fn() -> Schema,
}

inventory::collect!(FilterRegistration);

/// Every registered filter kind, sorted by name.
pub fn registered_filters() -> Vec<&'static FilterRegistration> {
    let mut all: Vec<_> = inventory::iter::<FilterRegistration>.into_iter().collect();
    all.sort_by_key(|r| r.name);
    all
}

inventory::submit! {
    FilterRegistration {
        name: "type",
        description: "events of one of these types (wire names, e.g. vbucketMoveStart)",
        config_schema: type_schema,
    }
}
inventory::submit! {
    FilterRegistration {
        name: "bucket",
        description: "events whose bucket is one of these",
        config_schema: string_list_schema,
    }
}
inventory::submit! {
    FilterRegistration {
        name: "vbucket",
        description: "events whose vbucket is one of these (0-65535)",
        config_schema: vbucket_schema,
    }
}
inventory::submit! {
    FilterRegistration {
        name: "node",
        description: "events whose node, host or origin is one of these",
        config_schema: string_list_schema,
    }
}
inventory::submit! {
    FilterRegistration {
        name: "and",
        description: "events that every one of these filters matches",
        config_schema: filters_schema,
    }
}
inventory::submit! {
    FilterRegistration {
        name: "or",
        description: "events that at least one of these filters matches",
        config_schema: filters_schema,
    }
}
inventory::submit! {
    FilterRegistration {
        name: "not",
        description: "events that this filter does not match",
        config_schema: filter_schema,
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn possible_types_tells_a_filter_that_can_never_match() {
        let moves = Filter::types([EventType::VbucketMoveStart, EventType::VbucketMoveDone]);
        let not_moves = moves.clone().negate();
        assert!(not_moves
            .possible_types()
            .intersection(&Filter::types([EventType::VbucketMoveDone]).possible_types())
            .is_empty());
        let both = Filter::And(vec![
            not_moves.clone(),
            Filter::types([EventType::VbucketMoveDone]),
        ]);
        assert!(both.possible_types().is_empty());
        // A condition on anything else than the type may match any type.
        let bucket = Filter::And(vec![Filter::bucket("b"), moves.clone()]);
        assert_eq!(bucket.possible_types(), moves.possible_types());
        assert_eq!(
            Filter::bucket("b").negate().possible_types(),
            TypeSet::full()
        );
        assert_eq!(Filter::all().possible_types(), TypeSet::full());
        assert!(Filter::Or(Vec::new()).possible_types().is_empty());
        let either = Filter::Or(vec![moves.clone(), Filter::types([EventType::Failover])]);
        assert_eq!(either.possible_types().iter().count(), 3);
    }

    fn meta(t: EventType) -> Meta<'static> {
        Meta::of_type(t)
    }

    fn move_start<'a>(bucket: &'a str, vb: u16, node: &'a str) -> Meta<'a> {
        Meta {
            vbucket: Some(vb),
            bucket: Some(bucket),
            node: Some(node),
            origin: Some("n_0@a"),
            ..meta(EventType::VbucketMoveStart)
        }
    }

    fn parse(text: &str) -> Result<Filter, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Doc {
            filter: Filter,
        }
        toml::from_str::<Doc>(text)
            .map(|d| d.filter)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn type_filter_matches_only_its_types() {
        let f = Filter::types([EventType::VbucketMoveStart, EventType::VbucketMoveDone]);
        assert!(f.matches(&move_start("default", 1, "n")));
        assert!(!f.matches(&meta(EventType::BecameMaster)));
    }

    #[test]
    fn field_filters_do_not_match_events_without_the_field() {
        let m = meta(EventType::RebalanceStart);
        assert!(!Filter::bucket("default").matches(&m));
        assert!(!Filter::vbuckets([0]).matches(&m));
        assert!(!Filter::node("n").matches(&m));
        assert!(Filter::bucket("default").negate().matches(&m));
    }

    #[test]
    fn node_filter_matches_node_host_or_origin() {
        let m = move_start("default", 7, "10.0.0.2:8091");
        assert!(Filter::node("10.0.0.2:8091").matches(&m));
        assert!(Filter::node("n_0@a").matches(&m));
        assert!(!Filter::node("n_1@b").matches(&m));
        let host_only = Meta {
            host: Some("h:1"),
            ..meta(EventType::BecameMaster)
        };
        assert!(Filter::node("h:1").matches(&host_only));
    }

    #[test]
    fn combinators_compose() {
        let m = move_start("default", 7, "n");
        let f = Filter::And(vec![
            Filter::bucket("default"),
            Filter::Or(vec![Filter::vbuckets([1]), Filter::vbuckets([7])]),
            Filter::types([EventType::VbucketMoveDone]).negate(),
        ]);
        assert!(f.matches(&m));
        assert!(!Filter::Or(vec![]).matches(&m));
        assert!(Filter::all().matches(&m));
    }

    #[test]
    fn from_query_is_or_within_a_key_and_across_keys() {
        let f = Filter::from_query(
            ["vbucketMoveStart,vbucketMoveDone"],
            ["default"],
            ["1", "7,9"],
            None::<&str>,
        )
        .expect("valid");
        assert!(f.matches(&move_start("default", 7, "n")));
        assert!(!f.matches(&move_start("default", 8, "n")));
        assert!(!f.matches(&move_start("other", 7, "n")));
        let none =
            Filter::from_query(None::<&str>, [""], None::<&str>, None::<&str>).expect("valid");
        assert!(none.is_all());
    }

    #[test]
    fn from_query_rejects_unknown_types_and_bad_vbuckets() {
        let e = Filter::from_query(
            ["vbucketMoveStrat"],
            None::<&str>,
            None::<&str>,
            None::<&str>,
        )
        .expect_err("unknown type");
        assert_eq!(
            e.to_string(),
            r#"unknown event type "vbucketMoveStrat"; did you mean "vbucketMoveStart"?"#
        );
        let e = Filter::from_query(None::<&str>, None::<&str>, ["70000"], None::<&str>)
            .expect_err("bad vb");
        assert_eq!(
            e,
            FilterError::BadVbucket {
                value: "70000".into()
            }
        );
    }

    #[test]
    fn filter_from_toml_ands_keys_and_ors_values() {
        let f = parse(r#"filter = { type = ["vbucketMoveStart"], bucket = "default" }"#)
            .expect("valid");
        assert_eq!(
            f,
            Filter::And(vec![
                Filter::types([EventType::VbucketMoveStart]),
                Filter::bucket("default"),
            ])
        );
        assert!(f.matches(&move_start("default", 1, "n")));
        assert!(!f.matches(&move_start("other", 1, "n")));
    }

    #[test]
    fn filter_from_toml_supports_and_or_not() {
        let f = parse(
            r#"filter = { or = [ { vbucket = [1, 2] }, { and = [ { bucket = "b" }, { not = { type = "vbucketMoveStart" } } ] } ] }"#,
        )
        .expect("valid");
        assert!(f.matches(&move_start("default", 2, "n")));
        assert!(!f.matches(&move_start("b", 3, "n")));
        let done_b = Meta {
            bucket: Some("b"),
            ..meta(EventType::VbucketMoveDone)
        };
        assert!(f.matches(&done_b));
    }

    #[test]
    fn an_error_in_a_list_names_the_place_of_the_wrong_value() {
        let e = parse(r#"filter = { type = ["rebalanceStart", "becameMastr"] }"#)
            .expect_err("unknown type");
        assert!(
            e.contains(r#"value 2 of the list: unknown event type "becameMastr""#),
            "{e}"
        );
        let e = parse(r#"filter = { vbucket = [1, 2, 70000] }"#).expect_err("vbucket");
        assert!(e.contains("value 3 of the list: invalid vbucket"), "{e}");
        let json = serde_json::from_str::<Filter>(r#"{"type": ["becameMaster", "nope"]}"#)
            .expect_err("unknown type")
            .to_string();
        assert!(
            json.contains(r#"value 2 of the list: unknown event type "nope""#),
            "{json}"
        );
    }

    #[test]
    fn filter_from_toml_rejects_unknown_keys_types_and_empty_lists() {
        let e = parse(r#"filter = { typ = "becameMaster" }"#).expect_err("unknown key");
        assert!(e.contains("unknown field `typ`"), "{e}");
        let e = parse(r#"filter = { type = "becameMastr" }"#).expect_err("unknown type");
        assert!(
            e.contains(r#"unknown event type "becameMastr"; did you mean "becameMaster"?"#),
            "{e}"
        );
        let e = parse(r#"filter = { type = "zzzzzzzzzzzz" }"#).expect_err("unknown type");
        assert!(e.contains("expected one of: becameMaster, "), "{e}");
        let e = parse(r#"filter = { vbucket = 70000 }"#).expect_err("range");
        assert!(e.contains("invalid vbucket \"70000\""), "{e}");
        let e = parse(r#"filter = { bucket = [] }"#).expect_err("empty");
        assert!(e.contains("\"bucket\" is empty"), "{e}");
        let e = parse(r#"filter = {}"#).expect_err("no key");
        assert!(e.contains("a filter needs at least one of"), "{e}");
        let e = parse(r#"filter = { bucket = 3 }"#).expect_err("type");
        assert!(e.contains("expected a string"), "{e}");
    }

    #[test]
    fn filter_schema_lists_the_event_types() {
        let schema = serde_json::to_string(&filter_schema()).unwrap_or_default();
        assert!(schema.contains("vbucketMoveStart"), "{schema}");
        assert!(schema.contains("\"not\""), "{schema}");
    }
}
