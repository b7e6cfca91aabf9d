//! Secret redaction for bucket parameters.
//!
//! Owns: [`BucketParams`], the `params` object of `createBucket`.
//!
//! Promises: a value whose key names a password or a secret (case-insensitive
//! substring `password`, `passwd` or `secret`, at any depth) never survives into a
//! `BucketParams`, whether it was built in code ([`BucketParams::new`]) or parsed from
//! input (its `Deserialize`). There is no way to build one that skips redaction.

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The text that replaces a redacted value.
pub const REDACTED: &str = "*****";

/// Whether a parameter name denotes a secret.
pub fn is_secret_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    ["password", "passwd", "secret"]
        .iter()
        .any(|word| lower.contains(word))
}

fn redact_value(value: &mut Value) {
    match value {
        Value::Object(map) => redact_map(map),
        Value::Array(items) => items.iter_mut().for_each(redact_value),
        _ => {}
    }
}

fn redact_map(map: &mut Map<String, Value>) {
    for (key, value) in map.iter_mut() {
        if is_secret_key(key) {
            *value = Value::String(REDACTED.to_owned());
        } else {
            redact_value(value);
        }
    }
}

/// A bucket's parameters with every secret redacted.
#[derive(Serialize, Clone, Debug, PartialEq, Default)]
pub struct BucketParams(Map<String, Value>);

impl BucketParams {
    /// Builds the parameters, redacting every value whose key names a secret.
    pub fn new(mut params: Map<String, Value>) -> Self {
        redact_map(&mut params);
        BucketParams(params)
    }

    /// The (redacted) parameters.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }
}

impl From<Map<String, Value>> for BucketParams {
    fn from(params: Map<String, Value>) -> Self {
        BucketParams::new(params)
    }
}

impl<'de> Deserialize<'de> for BucketParams {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Map::deserialize(d).map(BucketParams::new)
    }
}

impl JsonSchema for BucketParams {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "BucketParams".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "object" })
    }
}

#[cfg(test)]
impl proptest::arbitrary::Arbitrary for BucketParams {
    type Parameters = ();
    type Strategy = proptest::strategy::BoxedStrategy<Self>;
    fn arbitrary_with(_: ()) -> Self::Strategy {
        use proptest::strategy::Strategy;
        crate::catalog::strategies::json_object()
            .prop_map(BucketParams::new)
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test input is an object"),
        }
    }

    #[test]
    fn secrets_are_redacted_when_built_in_code() {
        let p = BucketParams::new(map(json!({
            "ramQuota": 100, "saslPassword": "hunter2", "auth": {"Secret_Key": "s", "user": "u"},
            "list": [{"password": "p"}]
        })));
        let text = serde_json::to_string(&p).expect("serializes");
        assert!(!text.contains("hunter2") && !text.contains("\"s\"") && !text.contains("\"p\""));
        assert_eq!(p.as_map()["ramQuota"], json!(100));
        assert_eq!(p.as_map()["auth"]["user"], json!("u"));
        assert_eq!(p.as_map()["saslPassword"], json!(REDACTED));
    }

    #[test]
    fn secrets_are_redacted_when_parsed() {
        let p: BucketParams =
            serde_json::from_str(r#"{"purge_passwd":"x","num_replicas":1}"#).expect("parses");
        assert_eq!(p.as_map()["purge_passwd"], json!(REDACTED));
        assert_eq!(p.as_map()["num_replicas"], json!(1));
    }
}
