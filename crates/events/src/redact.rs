//! Secret redaction for bucket parameters.
//!
//! Owns: [`BucketParams`], the `params` object of `createBucket`, and the list of key
//! words that mark a parameter as a secret ([`is_secret_key`], [`DEFAULT_SECRET_WORDS`],
//! [`add_secret_words`]).
//!
//! Promises:
//! - A value whose key names a secret never survives into a `BucketParams`, at any
//!   depth, whether it was built in code ([`BucketParams::new`]) or parsed from input
//!   (its `Deserialize`). There is no way to build one that skips redaction.
//! - A key names a secret when, compared case-insensitively, it contains one of
//!   [`DEFAULT_SECRET_WORDS`] (`password`, `pwd`, `token`, `apiKey`, `x-auth-token`,
//!   `privateKey`, ...), ends with the word `auth` (`auth`, `x-auth`, `basicAuth`; not
//!   `auth_type`, which ns_server sends as `sasl` or `none`, nor `author`), or
//!   contains a word added with [`add_secret_words`] (the
//!   configuration's `[redaction] secret_words`). The list can only grow: nothing
//!   removes a default word.
//! - Parsing refuses a duplicate key at any depth of the parameters, so no reader
//!   sees a copy of a key that another reader dropped.

use std::sync::RwLock;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The text that replaces a redacted value.
pub const REDACTED: &str = "*****";

/// The words that mark a key as a secret when the key contains one of them
/// (case-insensitively): `saslPassword`, `purge_passwd`, `apiKey`, `x-auth-token`, ...
pub const DEFAULT_SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "credential",
    "private",
    "authorization",
];

/// Words that mark a key as a secret when they are its last word (after the last `_`,
/// `-`, `.` or space and the last lower-to-upper case change): `auth`, `x-auth`,
/// `basicAuth`, but not `auth_type` or `author`.
const SECRET_LAST_WORDS: &[&str] = &["auth"];

/// Words added by the configuration, lowercase.
static EXTRA_WORDS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Adds words to the secret list (for the rest of the process): a key containing one,
/// case-insensitively, is redacted from then on. Empty words are ignored (they would
/// match every key); the defaults always stay.
pub fn add_secret_words<I, S>(words: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut extra = EXTRA_WORDS.write().unwrap_or_else(|e| e.into_inner());
    for word in words {
        let word = word.as_ref().trim().to_ascii_lowercase();
        if !word.is_empty() && !extra.contains(&word) {
            extra.push(word);
        }
    }
}

/// The last word of a key: after its last separator, from its last lower-to-upper
/// case change.
fn last_word(key: &str) -> &str {
    let part = key.rsplit(['_', '-', '.', ' ']).next().unwrap_or(key);
    let bytes = part.as_bytes();
    let start = (1..bytes.len())
        .rev()
        .find(|&i| bytes[i].is_ascii_uppercase() && bytes[i - 1].is_ascii_lowercase())
        .unwrap_or(0);
    &part[start..]
}

/// Whether a parameter name denotes a secret (see the [module documentation](self)).
pub fn is_secret_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    if DEFAULT_SECRET_WORDS.iter().any(|word| lower.contains(word)) {
        return true;
    }
    let last = last_word(key);
    if SECRET_LAST_WORDS
        .iter()
        .any(|word| last.eq_ignore_ascii_case(word))
    {
        return true;
    }
    let extra = EXTRA_WORDS.read().unwrap_or_else(|e| e.into_inner());
    extra.iter().any(|word| lower.contains(word.as_str()))
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
        crate::strict::object(d, "params").map(BucketParams::new)
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
            "ramQuota": 100, "saslPassword": "hunter2", "sasl": {"Secret_Key": "s", "user": "u"},
            "list": [{"password": "p"}]
        })));
        let text = serde_json::to_string(&p).expect("serializes");
        assert!(!text.contains("hunter2") && !text.contains("\"s\"") && !text.contains("\"p\""));
        assert_eq!(p.as_map()["ramQuota"], json!(100));
        assert_eq!(p.as_map()["sasl"]["user"], json!("u"));
        assert_eq!(p.as_map()["saslPassword"], json!(REDACTED));
    }

    #[test]
    fn secrets_are_redacted_when_parsed() {
        let p: BucketParams =
            serde_json::from_str(r#"{"purge_passwd":"x","num_replicas":1}"#).expect("parses");
        assert_eq!(p.as_map()["purge_passwd"], json!(REDACTED));
        assert_eq!(p.as_map()["num_replicas"], json!(1));
    }

    #[test]
    fn pwd_token_api_key_and_other_credential_keys_are_redacted() {
        let p: BucketParams = serde_json::from_str(
            r#"{"pwd":"a1","token":"a2","apiKey":"a3","API_KEY":"a4","x-auth-token":"a5",
                "credentials":{"user":"a6"},"privateKey":"a7","auth":"a8","Authorization":"a9",
                "nested":[{"Pwd":"a10"}],"bucketType":"membase","author":"kept","ramQuotaMB":100,
                "basicAuth":"a11","x-auth":"a12","auth_type":"sasl"}"#,
        )
        .expect("parses");
        let text = serde_json::to_string(&p).expect("serializes");
        for n in 1..=12 {
            assert!(!text.contains(&format!("\"a{n}\"")), "a{n} in {text}");
        }
        assert_eq!(p.as_map()["apiKey"], json!(REDACTED));
        assert_eq!(p.as_map()["nested"][0]["Pwd"], json!(REDACTED));
        assert_eq!(p.as_map()["bucketType"], json!("membase"));
        assert_eq!(p.as_map()["author"], json!("kept"));
        assert_eq!(
            p.as_map()["auth_type"],
            json!("sasl"),
            "ns_server's auth_type stays"
        );
        assert_eq!(p.as_map()["ramQuotaMB"], json!(100));
    }

    #[test]
    fn added_words_extend_the_list_and_never_remove_a_default() {
        assert!(!is_secret_key("bucketSigningSalt"));
        add_secret_words(["Salt", ""]);
        assert!(is_secret_key("bucketSigningSalt"));
        assert!(is_secret_key("password"), "a default stays");
        assert!(!is_secret_key("ramQuota"), "an empty word matches nothing");
    }

    #[test]
    fn a_key_repeated_at_any_depth_of_params_is_refused() {
        for (text, key, at) in [
            (r#"{"a":1,"a":2}"#, "a", "params"),
            (r#"{"x":{"pwd":"1","pwd":"2"}}"#, "pwd", "params.x"),
            (r#"{"x":[{"b":1},{"b":1,"b":2}]}"#, "b", "params.x[1]"),
        ] {
            let e = serde_json::from_str::<BucketParams>(text)
                .expect_err(text)
                .to_string();
            assert!(
                e.contains(&format!("duplicate key \"{key}\" in {at}")),
                "{text}: {e}"
            );
        }
    }
}
