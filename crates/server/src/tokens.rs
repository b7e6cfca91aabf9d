//! Scoped bearer tokens: `Authorization: Bearer met_...`.
//!
//! Owns: the `[[tokens]]` entries of the configuration ([`TokenEntry`]), their
//! checked form ([`Tokens`]), the making of a new token ([`NewToken`], for `token
//! create`), the token's filter expression ([`parse_filter`], the stream's query
//! form), `--expires` durations ([`parse_duration`]) and the RFC 3339 timestamps
//! entries carry ([`format_rfc3339`], [`parse_rfc3339`]).
//!
//! Promises:
//! - The server never holds a token's text: an entry carries its SHA-256 digest,
//!   and a presented token is digested and compared with every entry's digest in
//!   constant time (`subtle`). A token is 32 random bytes, so its digest needs no
//!   salt or stretching to keep it from being guessed.
//! - No token text is in a `Debug` output, a log line or an error; errors name the
//!   entry (its position and name) and the key.
//! - A filter or an expiry that does not parse stops [`Tokens::from_entries`], so a
//!   node never starts with a token wider than its entry says.
//! - A token past its `expires` is refused ([`TokenCheck::Expired`]); the refusal
//!   is logged (WARN, without the token) at most once a minute per token.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use master_events_router::{Filter, TypeSet};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::Role;

/// Every token starts with this, so a token found in a file or a log is known for
/// what it is.
pub const TOKEN_PREFIX: &str = "met_";

/// How a token's digest is written in an entry: `sha256:` then 64 hex digits.
pub const DIGEST_PREFIX: &str = "sha256:";

/// The longest `--expires` taken: about 100 years.
pub const MAX_LIFETIME: Duration = Duration::from_secs(100 * 365 * 86_400);

/// How often an expired token's refusals are logged at most.
const EXPIRED_WARN_EVERY: Duration = Duration::from_secs(60);

/// A `[[tokens]]` entry as written in the TOML configuration.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// The token's name: what logs, errors and the budget of buffered bytes call it.
    pub name: String,
    /// `read`, `write` or `admin`.
    pub role: Role,
    /// `sha256:` and the hex SHA-256 digest of the token (never the token).
    pub digest: String,
    /// What the token may read, in the stream's query form (`bucket=b1`,
    /// `type=rebalanceStart,rebalanceEnd&bucket=x`); ANDed with every stream
    /// request's own filter. None: every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// When the token stops being accepted (RFC 3339, e.g. `2030-01-31T12:00:00Z`).
    /// None: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

impl fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenEntry")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("digest", &"<digest>")
            .field("filter", &self.filter)
            .field("expires", &self.expires)
            .finish()
    }
}

/// Why a `[[tokens]]` entry (or a `token create` request) was refused. Names the
/// entry and the key; never holds a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenConfigError {
    /// A name that is empty, too long or has other characters than letters,
    /// digits, `-`, `_`, `.` and `@` (names go into logs and errors).
    #[error(
        "tokens[{index}]: key name: 1 to 64 letters, digits, '-', '_', '.' or '@', \
         found {name:?}"
    )]
    BadName {
        /// 0-based position of the entry.
        index: usize,
        /// The name, cut to 64 characters.
        name: String,
    },
    /// A name given twice.
    #[error("tokens[{index}] (name {name:?}): the name is used by an earlier entry")]
    Duplicate {
        /// 0-based position of the entry.
        index: usize,
        /// The name.
        name: String,
    },
    /// A digest that is not `sha256:` and 64 hex digits.
    #[error(
        "tokens[{index}] (name {name:?}): key digest: expected \"sha256:\" and 64 hex digits \
         (as `master-events token create` prints it)"
    )]
    BadDigest {
        /// 0-based position of the entry.
        index: usize,
        /// The name.
        name: String,
    },
    /// Two entries with the same digest (the same token).
    #[error("tokens[{index}] (name {name:?}): key digest: the same token as entry {other:?}")]
    SameDigest {
        /// 0-based position of the entry.
        index: usize,
        /// The name.
        name: String,
        /// The other entry's name.
        other: String,
    },
    /// A filter that does not parse, or that would match every event or none.
    #[error("tokens[{index}] (name {name:?}): key filter: {reason}")]
    BadFilter {
        /// 0-based position of the entry.
        index: usize,
        /// The name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// An `expires` that is not an RFC 3339 timestamp.
    #[error("tokens[{index}] (name {name:?}): key expires: {reason}")]
    BadExpires {
        /// 0-based position of the entry.
        index: usize,
        /// The name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// A checked token: what the server keeps of an entry.
struct Token {
    name: String,
    role: Role,
    digest: [u8; 32],
    filter: Option<Arc<Filter>>,
    /// The expression of `filter`, as configured (said back in a 400).
    filter_text: Option<String>,
    /// Seconds since the epoch, and the entry's text.
    expires: Option<(i64, String)>,
    /// When the last refusal of this token as expired was logged.
    warned: Mutex<Option<Instant>>,
}

/// The configured tokens, checked.
#[derive(Default)]
pub struct Tokens {
    tokens: Vec<Token>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.tokens.iter().map(|t| (&t.name, t.role)))
            .finish()
    }
}

/// A token that matched a request's bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    /// A valid token.
    Valid {
        /// The entry's name.
        name: String,
        /// Its role.
        role: Role,
        /// Its filter (`None`: every event).
        filter: Option<Arc<Filter>>,
        /// Its filter's expression, as configured.
        filter_text: Option<String>,
    },
    /// A known token past its expiry.
    Expired {
        /// The entry's name.
        name: String,
        /// When it expired, as configured (RFC 3339).
        at: String,
    },
}

impl Tokens {
    /// Checks every entry: names, digests, filters, expiries.
    pub fn from_entries(entries: &[TokenEntry]) -> Result<Tokens, TokenConfigError> {
        let mut tokens: Vec<Token> = Vec::with_capacity(entries.len());
        for (index, e) in entries.iter().enumerate() {
            let name = e.name.clone();
            if !is_valid_name(&name) {
                return Err(TokenConfigError::BadName {
                    index,
                    name: name.chars().take(64).collect(),
                });
            }
            if tokens.iter().any(|t| t.name == name) {
                return Err(TokenConfigError::Duplicate { index, name });
            }
            let Some(digest) = parse_digest(&e.digest) else {
                return Err(TokenConfigError::BadDigest { index, name });
            };
            if let Some(other) = tokens.iter().find(|t| t.digest == digest) {
                return Err(TokenConfigError::SameDigest {
                    index,
                    name,
                    other: other.name.clone(),
                });
            }
            let filter = match &e.filter {
                None => None,
                Some(text) => Some(Arc::new(parse_filter(text).map_err(|reason| {
                    TokenConfigError::BadFilter {
                        index,
                        name: name.clone(),
                        reason,
                    }
                })?)),
            };
            let expires = match &e.expires {
                None => None,
                Some(text) => Some((
                    parse_rfc3339(text).map_err(|reason| TokenConfigError::BadExpires {
                        index,
                        name: name.clone(),
                        reason,
                    })?,
                    text.clone(),
                )),
            };
            tokens.push(Token {
                name,
                role: e.role,
                digest,
                filter,
                filter_text: e.filter.clone(),
                expires,
                warned: Mutex::new(None),
            });
        }
        Ok(Tokens { tokens })
    }

    /// Whether no token is configured.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// How many tokens are configured.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether a token's digest is `digest` (used to keep tokens apart from the
    /// cluster secret).
    pub(crate) fn has_digest(&self, digest: &[u8; 32]) -> bool {
        self.tokens
            .iter()
            .fold(subtle::Choice::from(0), |acc, t| {
                acc | t.digest.ct_eq(digest)
            })
            .into()
    }

    /// The entry whose token `bearer` is, if any, and whether it is still valid at
    /// `now`. Every entry is compared, in constant time.
    pub fn check(&self, bearer: &str, now: SystemTime) -> Option<TokenCheck> {
        let given: [u8; 32] = Sha256::digest(bearer.as_bytes()).into();
        let mut found: Option<&Token> = None;
        for token in &self.tokens {
            if bool::from(token.digest.ct_eq(&given)) {
                found = Some(token);
            }
        }
        let token = found?;
        if let Some((at, text)) = &token.expires {
            if unix_secs(now) >= *at {
                token.warn_expired(text);
                return Some(TokenCheck::Expired {
                    name: token.name.clone(),
                    at: text.clone(),
                });
            }
        }
        Some(TokenCheck::Valid {
            name: token.name.clone(),
            role: token.role,
            filter: token.filter.clone(),
            filter_text: token.filter_text.clone(),
        })
    }
}

impl Token {
    /// Logs the refusal of this expired token, at most once a minute.
    fn warn_expired(&self, at: &str) {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if warned.is_some_and(|w| now.duration_since(w) < EXPIRED_WARN_EVERY) {
            return;
        }
        *warned = Some(now);
        tracing::warn!(
            token = %self.name,
            expired_at = at,
            "refused an expired token (logged at most once a minute per token)"
        );
    }
}

/// Whether `name` is 1 to 64 letters, digits, `-`, `_`, `.` or `@`.
pub fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.@".contains(&c))
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// `sha256:HEX` to its 32 bytes.
fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let hex = text.trim().strip_prefix(DIGEST_PREFIX)?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The `digest` of an entry for `token`: `sha256:` and its hex SHA-256.
pub fn digest_of(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(DIGEST_PREFIX.len() + 64);
    out.push_str(DIGEST_PREFIX);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A token just made, and its configuration entry. `Debug` does not show the token.
pub struct NewToken {
    token: String,
    /// The entry to add to the configuration (a digest, not the token).
    pub entry: TokenEntry,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("token", &"<redacted>")
            .field("entry", &self.entry)
            .finish()
    }
}

impl NewToken {
    /// A token from 32 random bytes (the caller draws them from the operating
    /// system's generator): `met_` and their unpadded base64url. The filter and the
    /// expiry are checked as the server will check the entry.
    pub fn new(
        random: [u8; 32],
        name: &str,
        role: Role,
        filter: Option<&str>,
        expires: Option<SystemTime>,
    ) -> Result<NewToken, TokenConfigError> {
        let token = format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
        );
        let entry = TokenEntry {
            name: name.to_owned(),
            role,
            digest: digest_of(&token),
            filter: filter.map(str::to_owned),
            expires: expires.map(|t| format_rfc3339(unix_secs(t))),
        };
        Tokens::from_entries(std::slice::from_ref(&entry))?;
        Ok(NewToken { token, entry })
    }

    /// The token: shown once, to whoever made it.
    pub fn token(&self) -> &str {
        &self.token
    }
}

/// Parses a token's filter: the stream's query form (`type=a,b&bucket=x&vbucket=1,2
/// &node=n`: OR within a key, AND across keys). Only those four keys; at least one
/// value. The error says what is wrong, quoting the expression's own parts.
pub fn parse_filter(expr: &str) -> Result<Filter, String> {
    let mut types = Vec::new();
    let mut buckets = Vec::new();
    let mut vbuckets = Vec::new();
    let mut nodes = Vec::new();
    for (key, value) in crate::stream::parse_pairs(Some(expr.trim())) {
        let into = match key.as_str() {
            "type" => &mut types,
            "bucket" => &mut buckets,
            "vbucket" => &mut vbuckets,
            "node" => &mut nodes,
            other => {
                return Err(format!(
                    "unknown key {other:?} (a token's filter takes type, bucket, vbucket and node, \
                     as in bucket=b1&type=rebalanceStart,rebalanceEnd)"
                ))
            }
        };
        if value.split(',').all(|v| v.trim().is_empty()) {
            return Err(format!("{key}= has no value"));
        }
        into.push(value);
    }
    let filter =
        Filter::from_query(&types, &buckets, &vbuckets, &nodes).map_err(|e| e.to_string())?;
    if filter.is_all() {
        return Err("empty: leave the filter out for a token that reads every event".to_owned());
    }
    Ok(filter)
}

/// Whether no event can pass both `a` and `b`, as far as their types, buckets and
/// vbuckets tell (an event has one type, at most one bucket and one vbucket). A
/// `false` may still be a pair that never matches together (nodes, `or`, `not`
/// are not compared); a `true` is always right.
pub fn disjoint(a: &Filter, b: &Filter) -> bool {
    let mut bounds = Bounds::default();
    bounds.add(a);
    bounds.add(b);
    bounds.types.is_empty()
        || bounds.buckets.as_ref().is_some_and(Vec::is_empty)
        || bounds.vbuckets.as_ref().is_some_and(Vec::is_empty)
}

/// What the conjunction of filters allows: types, and the buckets and vbuckets
/// (`None`: any).
struct Bounds {
    types: TypeSet,
    buckets: Option<Vec<String>>,
    vbuckets: Option<Vec<u16>>,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            types: TypeSet::full(),
            buckets: None,
            vbuckets: None,
        }
    }
}

impl Bounds {
    fn add(&mut self, f: &Filter) {
        match f {
            Filter::And(all) => all.iter().for_each(|f| self.add(f)),
            Filter::Bucket(list) => {
                self.buckets = Some(match self.buckets.take() {
                    None => list.clone(),
                    Some(had) => had.into_iter().filter(|b| list.contains(b)).collect(),
                });
            }
            Filter::Vbucket(set) => {
                self.vbuckets = Some(match self.vbuckets.take() {
                    None => set.iter().collect(),
                    Some(had) => had.into_iter().filter(|v| set.contains(*v)).collect(),
                });
            }
            other => self.types = self.types.intersection(&other.possible_types()),
        }
    }
}

/// Parses an `--expires` duration: a number and a unit (`s`, `m`, `h`, `d`, `w`),
/// or several (`1d12h`). More than zero, at most [`MAX_LIFETIME`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let teach = || {
        format!(
            "{:?} is not a duration: a number and a unit s, m, h, d or w (90m, 12h, 30d, 1d12h)",
            text.chars().take(40).collect::<String>()
        )
    };
    let mut total: u64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(teach());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(teach)?;
        if digits == 0 {
            return Err(teach());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| teach())?;
        let unit_len = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len() - digits);
        let secs_per = match rest[digits..digits + unit_len].trim() {
            "s" => 1,
            "m" | "min" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            _ => return Err(teach()),
        };
        total = n
            .checked_mul(secs_per)
            .and_then(|s| total.checked_add(s))
            .filter(|t| *t <= MAX_LIFETIME.as_secs())
            .ok_or_else(|| "longer than 100 years: leave --expires out instead".to_owned())?;
        rest = &rest[digits + unit_len..];
    }
    if total == 0 {
        return Err("a token that expires at once would never be accepted".to_owned());
    }
    Ok(Duration::from_secs(total))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Seconds since the epoch as RFC 3339 in UTC: `2030-01-31T12:00:00Z`.
pub fn format_rfc3339(secs: i64) -> String {
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Parses an RFC 3339 timestamp (`2030-01-31T12:00:00Z`, `2030-01-31T13:00:00.5+01:00`;
/// a space or a lowercase `t` for the `T` too) to whole seconds since the epoch
/// (fractions dropped).
pub fn parse_rfc3339(text: &str) -> Result<i64, String> {
    let teach = || {
        format!(
            "{:?} is not an RFC 3339 timestamp such as 2030-01-31T12:00:00Z",
            text.chars().take(40).collect::<String>()
        )
    };
    let b = text.trim().as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| std::str::from_utf8(part).ok()?.parse().ok())?
    };
    let sep = |at: usize, allowed: &[u8]| b.get(at).is_some_and(|c| allowed.contains(c));
    if b.len() < 20
        || !sep(4, b"-")
        || !sep(7, b"-")
        || !sep(10, b"Tt ")
        || !sep(13, b":")
        || !sep(16, b":")
    {
        return Err(teach());
    }
    let (y, mo, d) = (
        num(0, 4).ok_or_else(teach)?,
        num(5, 2).ok_or_else(teach)?,
        num(8, 2).ok_or_else(teach)?,
    );
    let (h, mi, s) = (
        num(11, 2).ok_or_else(teach)?,
        num(14, 2).ok_or_else(teach)?,
        num(17, 2).ok_or_else(teach)?,
    );
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let valid_day = usize::try_from(mo - 1)
        .ok()
        .and_then(|m| month_days.get(m))
        .is_some_and(|max| (1..=*max).contains(&d));
    if !valid_day || h > 23 || mi > 59 || s > 60 {
        return Err(teach());
    }
    let mut at = 19;
    if sep(at, b".") {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == start {
            return Err(teach());
        }
    }
    let offset = match b.get(at..) {
        Some(b"Z") | Some(b"z") => 0,
        Some(tz) if tz.len() == 6 && (tz[0] == b'+' || tz[0] == b'-') && tz[3] == b':' => {
            let oh = num(at + 1, 2).filter(|h| *h <= 23).ok_or_else(teach)?;
            let om = num(at + 4, 2).filter(|m| *m <= 59).ok_or_else(teach)?;
            let sign = if tz[0] == b'-' { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return Err(teach()),
    };
    Ok(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s.min(59) - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, token: &str) -> TokenEntry {
        TokenEntry {
            name: name.into(),
            role: Role::Read,
            digest: digest_of(token),
            filter: None,
            expires: None,
        }
    }

    #[test]
    fn a_new_token_is_prefixed_base64url_and_its_entry_holds_only_the_digest() {
        let t = NewToken::new([7; 32], "ci", Role::Read, Some("bucket=b1"), None)
            .expect("a valid token");
        assert!(t.token().starts_with(TOKEN_PREFIX));
        assert_eq!(t.token().len(), TOKEN_PREFIX.len() + 43);
        assert!(t.token()[4..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(t.entry.digest, digest_of(t.token()));
        let toml = toml::to_string(&t.entry).expect("serializes");
        assert!(!toml.contains(t.token()) && !toml.contains(&t.token()[4..]));
        assert!(!format!("{t:?}").contains(&t.token()[4..]));
    }

    #[test]
    fn a_token_is_matched_by_its_digest_and_a_wrong_one_by_none() {
        let tokens =
            Tokens::from_entries(&[entry("a", "met_one"), entry("b", "met_two")]).expect("valid");
        let now = SystemTime::now();
        assert!(matches!(
            tokens.check("met_two", now),
            Some(TokenCheck::Valid { name, role: Role::Read, .. }) if name == "b"
        ));
        assert_eq!(tokens.check("met_three", now), None);
        assert_eq!(tokens.check("", now), None);
    }

    #[test]
    fn an_expired_token_is_known_but_refused() {
        let mut e = entry("old", "met_old");
        e.expires = Some("2001-02-03T04:05:06Z".into());
        let tokens = Tokens::from_entries(&[e]).expect("valid");
        assert_eq!(
            tokens.check("met_old", SystemTime::now()),
            Some(TokenCheck::Expired {
                name: "old".into(),
                at: "2001-02-03T04:05:06Z".into()
            })
        );
        let before = UNIX_EPOCH + Duration::from_secs(981_173_105);
        assert!(matches!(
            tokens.check("met_old", before),
            Some(TokenCheck::Valid { .. })
        ));
    }

    #[test]
    fn bad_entries_are_named_with_their_key_and_never_show_the_digest() {
        let mut e = entry("ci", "met_x");
        e.filter = Some("bucket=b1&typo=x".into());
        let err = Tokens::from_entries(&[entry("ok", "met_y"), e.clone()])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("tokens[1] (name \"ci\"): key filter: unknown key \"typo\""),
            "{err}"
        );
        assert!(!err.contains(&digest_of("met_x")[7..]));
        e.filter = Some("type=rebalanceStrat".into());
        let err = Tokens::from_entries(&[e.clone()])
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|m| m.contains("did you mean \"rebalanceStart\"")));
        e.filter = None;
        e.expires = Some("tomorrow".into());
        let err = Tokens::from_entries(&[e.clone()])
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|m| m.contains("key expires") && m.contains("RFC 3339")));
        e.expires = None;
        e.digest = "sha256:abc".into();
        let err = Tokens::from_entries(&[e]).err().map(|e| e.to_string());
        assert!(err.is_some_and(|m| m.contains("key digest")));
        let err = Tokens::from_entries(&[entry("a\u{1b}[2J", "met_1")]).err();
        assert!(matches!(
            err,
            Some(TokenConfigError::BadName { index: 0, .. })
        ));
        let err = Tokens::from_entries(&[entry("", "met_1")]).err();
        assert!(matches!(
            err,
            Some(TokenConfigError::BadName { index: 0, .. })
        ));
        let err = Tokens::from_entries(&[entry("a", "met_1"), entry("a", "met_2")]).err();
        assert!(matches!(
            err,
            Some(TokenConfigError::Duplicate { index: 1, .. })
        ));
        let err = Tokens::from_entries(&[entry("a", "met_1"), entry("b", "met_1")]).err();
        assert!(matches!(
            err,
            Some(TokenConfigError::SameDigest { index: 1, .. })
        ));
    }

    #[test]
    fn filters_take_the_stream_query_form_and_nothing_else() {
        assert_eq!(parse_filter("bucket=b1"), Ok(Filter::bucket("b1")));
        let f = parse_filter("type=rebalanceStart,rebalanceEnd&bucket=x").expect("parses");
        assert!(matches!(f, Filter::And(ref v) if v.len() == 2));
        for bad in [
            "",
            "bucket=",
            "o=1",
            "since=3",
            "bucket=b1&vbucket=x",
            "type=nope",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn disjoint_filters_are_found_by_type_bucket_and_vbucket() {
        let f = |s: &str| parse_filter(s).expect("parses");
        assert!(disjoint(&f("bucket=b1"), &f("bucket=b2")));
        assert!(!disjoint(&f("bucket=b1"), &f("bucket=b2,b1")));
        assert!(!disjoint(&f("bucket=b1"), &f("type=rebalanceStart")));
        assert!(disjoint(
            &f("type=rebalanceStart"),
            &f("type=rebalanceEnd&bucket=b1")
        ));
        assert!(disjoint(&f("vbucket=1,2"), &f("vbucket=3")));
        assert!(
            !disjoint(&f("node=a"), &f("node=b")),
            "node matches host and origin too"
        );
    }

    #[test]
    fn durations_take_units_and_refuse_the_rest() {
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("1d12h"), Ok(Duration::from_secs(129_600)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        for bad in [
            "",
            "30",
            "d",
            "-1d",
            "1y",
            "0s",
            "99999999999999999999d",
            "1d x",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rfc3339_round_trips_and_takes_offsets() {
        for secs in [
            0,
            951_782_400,
            1_700_000_000,
            4_102_444_800,
            253_402_300_799,
        ] {
            assert_eq!(parse_rfc3339(&format_rfc3339(secs)), Ok(secs), "{secs}");
        }
        assert_eq!(format_rfc3339(951_827_696), "2000-02-29T12:34:56Z");
        assert_eq!(
            parse_rfc3339("2000-02-29T13:34:56.789+01:00"),
            Ok(951_827_696)
        );
        assert_eq!(parse_rfc3339("2000-02-29 07:04:56-05:30"), Ok(951_827_696));
        for bad in [
            "2001-02-29T00:00:00Z",
            "2000-13-01T00:00:00Z",
            "2000-01-01T24:00:00Z",
            "2000-01-01T00:00:00",
            "2000-01-01T00:00:00+1:00",
            "2000-01-01",
            "2000-01-01T00:00:00.Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }
}
