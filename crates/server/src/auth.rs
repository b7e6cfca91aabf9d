//! HTTP Basic authentication, bearer tokens and roles.
//!
//! Owns: the user table ([`Users`]), parsed from the TOML config (`[[users]]`) or the
//! `MASTER_EVENTS_USERS` environment variable (`name:password:role[,...]`), with the
//! configured bearer tokens ([`crate::tokens`]) and the cluster secret, and the
//! check of an `Authorization` header against them.
//!
//! Promises:
//! - Passwords are compared in constant time (SHA-256 digests compared with
//!   `subtle`, so neither content nor length leaks through timing), and every user
//!   is checked, so the time does not tell whether the name exists either.
//! - No password ever appears in a `Debug` output, a log line or an error message.
//! - Roles: `read` (stream, schemas, cluster, metrics), `write` (ingest), `admin`
//!   (everything). With no users and no tokens configured, every route is open —
//!   the server then only listens on loopback (see
//!   [`crate::ServerConfig::check_exposure`]).
//! - A configured token is taken as `Authorization: Bearer <token>` or as the
//!   password of the Basic user [`TOKEN_USER`] (`token:<token>`: what a browser's
//!   prompt, `curl -u` and the `/ui` page's streams can send); the cluster secret
//!   only as Bearer.
//! - A bearer token is the cluster secret or a configured token, never both: a
//!   token is never taken for the cluster secret ([`AuthOutcome::Token`] is its own
//!   outcome, and [`Users::token_is_cluster_secret`] lets start-up refuse a token
//!   equal to the secret).
//! - Failed authentications are rate limited per client address
//!   ([`FailedAuthLimiter`]): past a burst, the address's requests are answered
//!   429 until its allowance refills, before any credential is checked. The table
//!   is an LRU of at most [`AUTH_TRACKED_CLIENTS`] addresses, so its memory is
//!   bounded whatever the number of addresses.

use std::fmt;
use std::num::NonZeroUsize;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use master_events_router::Filter;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::limits::ClientKey;
use crate::tokens::{TokenCheck, Tokens};

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read the stream, the schemas, the cluster view and the metrics.
    Read,
    /// Ingest events.
    Write,
    /// Everything.
    Admin,
}

impl Role {
    /// Whether a user with this role may do what `needed` allows.
    pub fn allows(self, needed: Role) -> bool {
        self == Role::Admin || self == needed
    }
}

impl FromStr for Role {
    type Err = AuthConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(AuthConfigError::UnknownRole(other.to_owned())),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        })
    }
}

/// A user entry as written in the TOML configuration.
#[derive(Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// The user name.
    pub name: String,
    /// The password (never logged).
    pub password: String,
    /// `read`, `write` or `admin`.
    pub role: Role,
}

impl fmt::Debug for UserEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserEntry")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .field("role", &self.role)
            .finish()
    }
}

/// Why a user table could not be built. Never contains a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthConfigError {
    /// An entry of `MASTER_EVENTS_USERS` is not `name:password:role`.
    #[error("MASTER_EVENTS_USERS entry {index} is not name:password:role")]
    Malformed {
        /// 1-based position of the entry.
        index: usize,
    },
    /// A role other than read, write, admin.
    #[error("unknown role {0:?} (expected read, write or admin)")]
    UnknownRole(String),
    /// A user name appears twice.
    #[error("user {0:?} is defined twice")]
    Duplicate(String),
    /// An empty user name or password.
    #[error("user {0:?} has an empty name or password")]
    Empty(String),
}

struct User {
    name: String,
    digest: [u8; 32],
    role: Role,
}

/// The configured users and tokens, and the cluster secret other nodes present.
#[derive(Default)]
pub struct Users {
    users: Vec<User>,
    tokens: Tokens,
    cluster_secret: Option<[u8; 32]>,
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Users")
            .field(
                "users",
                &self
                    .users
                    .iter()
                    .map(|u| (&u.name, u.role))
                    .collect::<Vec<_>>(),
            )
            .field("tokens", &self.tokens)
            .finish()
    }
}

fn digest(password: &[u8]) -> [u8; 32] {
    Sha256::digest(password).into()
}

/// The outcome of checking a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// No users are configured: everything is open.
    Open,
    /// A known user with the right password.
    User {
        /// The user's name.
        name: String,
        /// The user's role.
        role: Role,
    },
    /// Another node of the cluster (it presented the cluster secret): allowed
    /// everything.
    Cluster,
    /// A configured bearer token, valid now.
    Token {
        /// The token's name (its entry's `name`).
        name: String,
        /// Its role.
        role: Role,
        /// What it may read (`None`: every event); ANDed with a stream's filter.
        filter: Option<Arc<Filter>>,
        /// The filter's expression as configured.
        filter_text: Option<String>,
    },
    /// A configured bearer token past its expiry.
    ExpiredToken {
        /// The token's name.
        name: String,
        /// When it expired (RFC 3339, as configured).
        at: String,
    },
    /// No credentials, malformed ones, or a wrong name or password.
    Unauthenticated,
}

impl Users {
    /// A table from entries.
    pub fn from_entries(entries: &[UserEntry]) -> Result<Users, AuthConfigError> {
        let mut users: Vec<User> = Vec::with_capacity(entries.len());
        for e in entries {
            if e.name.is_empty() || e.password.is_empty() {
                return Err(AuthConfigError::Empty(e.name.clone()));
            }
            if users.iter().any(|u| u.name == e.name) {
                return Err(AuthConfigError::Duplicate(e.name.clone()));
            }
            users.push(User {
                name: e.name.clone(),
                digest: digest(e.password.as_bytes()),
                role: e.role,
            });
        }
        Ok(Users {
            users,
            tokens: Tokens::default(),
            cluster_secret: None,
        })
    }

    /// Parses `name:password:role[,name:password:role...]` (the password may contain
    /// `:` but not `,`).
    pub fn parse_env(text: &str) -> Result<Vec<UserEntry>, AuthConfigError> {
        let mut out = Vec::new();
        for (i, item) in text.split(',').enumerate() {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let (name, rest) = item
                .split_once(':')
                .ok_or(AuthConfigError::Malformed { index: i + 1 })?;
            let (password, role) = rest
                .rsplit_once(':')
                .ok_or(AuthConfigError::Malformed { index: i + 1 })?;
            out.push(UserEntry {
                name: name.to_owned(),
                password: password.to_owned(),
                role: role.parse()?,
            });
        }
        Ok(out)
    }

    /// Accepts `Authorization: Bearer <secret>` from other nodes of the cluster.
    /// The secret is kept only as a digest.
    pub fn set_cluster_secret(&mut self, secret: &str) {
        self.cluster_secret = Some(digest(secret.as_bytes()));
    }

    /// Accepts `Authorization: Bearer <token>` for these tokens.
    pub fn set_tokens(&mut self, tokens: Tokens) {
        self.tokens = tokens;
    }

    /// Whether a configured token is the cluster secret (start-up refuses that: the
    /// token would be taken for another node).
    pub fn token_is_cluster_secret(&self) -> bool {
        self.cluster_secret
            .as_ref()
            .is_some_and(|secret| self.tokens.has_digest(secret))
    }

    /// Whether a cluster secret is configured.
    pub fn has_cluster_secret(&self) -> bool {
        self.cluster_secret.is_some()
    }

    /// Whether no user and no token is configured (the server is open, loopback
    /// only).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.tokens.is_empty()
    }

    /// How many users are configured.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// How many tokens are configured.
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// Checks an `Authorization` header value.
    pub fn check(&self, header: Option<&[u8]>) -> AuthOutcome {
        self.check_at(header, SystemTime::now())
    }

    /// [`Users::check`] at `now` (a token's expiry is compared with it).
    pub fn check_at(&self, header: Option<&[u8]>, now: SystemTime) -> AuthOutcome {
        let bearer = header.and_then(parse_bearer);
        if let (Some(secret), Some(token)) = (&self.cluster_secret, &bearer) {
            if bool::from(secret.ct_eq(&digest(token.as_bytes()))) {
                return AuthOutcome::Cluster;
            }
        }
        // A token may also come as the password of the Basic user `token` (what a
        // browser can send, the /ui page's streams included): never the cluster
        // secret, which is Bearer only.
        let basic = header.and_then(parse_basic);
        let token = bearer.or_else(|| match &basic {
            Some((name, password)) if name == TOKEN_USER && !self.tokens.is_empty() => {
                Some(password.clone())
            }
            _ => None,
        });
        if let Some(token) = &token {
            match self.tokens.check(token, now) {
                Some(TokenCheck::Valid {
                    name,
                    role,
                    filter,
                    filter_text,
                }) => {
                    return AuthOutcome::Token {
                        name,
                        role,
                        filter,
                        filter_text,
                    }
                }
                Some(TokenCheck::Expired { name, at }) => {
                    return AuthOutcome::ExpiredToken { name, at }
                }
                None => {}
            }
        }
        if self.is_empty() {
            return AuthOutcome::Open;
        }
        let Some((name, password)) = basic else {
            return AuthOutcome::Unauthenticated;
        };
        let given = digest(password.as_bytes());
        let mut found: Option<&User> = None;
        for user in &self.users {
            let name_ok = user.name.as_bytes().ct_eq(name.as_bytes());
            let password_ok = user.digest.ct_eq(&given);
            if bool::from(name_ok & password_ok) {
                found = Some(user);
            }
        }
        match found {
            Some(u) => AuthOutcome::User {
                name: u.name.clone(),
                role: u.role,
            },
            None => AuthOutcome::Unauthenticated,
        }
    }
}

/// Client addresses whose failed authentications are remembered at most (the least
/// recently seen is forgotten first).
pub const AUTH_TRACKED_CLIENTS: usize = 16_384;

/// An address's allowance of failed authentications: a token bucket.
#[derive(Debug, Clone, Copy)]
struct Allowance {
    tokens: f64,
    at: Instant,
}

/// Failed authentications per client address: `burst` at once, then `rate` a
/// second. An address with no allowance left is refused before its credentials
/// are checked, so guessing costs the server nearly nothing and runs no faster
/// than the rate.
#[derive(Debug)]
pub struct FailedAuthLimiter {
    burst: f64,
    rate: f64,
    clients: Mutex<lru::LruCache<ClientKey, Allowance>>,
}

impl FailedAuthLimiter {
    /// A limiter allowing `burst` failures at once and `rate` a second after.
    pub fn new(burst: u32, rate: f64) -> FailedAuthLimiter {
        let capacity = NonZeroUsize::new(AUTH_TRACKED_CLIENTS).unwrap_or(NonZeroUsize::MIN);
        FailedAuthLimiter {
            burst: f64::from(burst.max(1)),
            rate: if rate.is_finite() && rate > 0.0 {
                rate
            } else {
                1.0
            },
            clients: Mutex::new(lru::LruCache::new(capacity)),
        }
    }

    fn refill(&self, a: &mut Allowance, now: Instant) {
        let elapsed = now.saturating_duration_since(a.at).as_secs_f64();
        a.tokens = (a.tokens + elapsed * self.rate).min(self.burst);
        a.at = now;
    }

    /// `Some(wait)` when `client` has no failure left: refuse its request (429)
    /// and tell it to retry after `wait`.
    pub fn refused(&self, client: ClientKey) -> Option<Duration> {
        self.refused_at(client, Instant::now())
    }

    fn refused_at(&self, client: ClientKey, now: Instant) -> Option<Duration> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.is_empty() {
            return None;
        }
        let a = clients.peek_mut(&client)?;
        self.refill(a, now);
        (a.tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - a.tokens) / self.rate))
    }

    /// Notes a failed authentication from `client`.
    pub fn failed(&self, client: ClientKey) {
        self.failed_at(client, Instant::now())
    }

    fn failed_at(&self, client: ClientKey, now: Instant) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let a = clients.get_or_insert_mut(client, || Allowance {
            tokens: self.burst,
            at: now,
        });
        self.refill(a, now);
        a.tokens = (a.tokens - 1.0).max(0.0);
    }

    /// Addresses remembered now.
    pub fn tracked(&self) -> usize {
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The Basic user name whose password is taken as a bearer token (`token:met_...`).
pub const TOKEN_USER: &str = "token";

/// The token of `Bearer <token>`.
fn parse_bearer(header: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// Splits `Basic base64(name:password)`.
fn parse_basic(header: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (name, password) = decoded.split_once(':')?;
    Some((name.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(name: &str, password: &str) -> Vec<u8> {
        let enc = base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}"));
        format!("Basic {enc}").into_bytes()
    }

    fn users() -> Users {
        Users::from_entries(
            &Users::parse_env("alice:s3:cr:et:read, bob:pw:write,root:toor:admin").expect("parses"),
        )
        .expect("valid")
    }

    #[test]
    fn env_entries_allow_colons_in_passwords() {
        let u = users();
        assert_eq!(
            u.check(Some(&basic("alice", "s3:cr:et"))),
            AuthOutcome::User {
                name: "alice".into(),
                role: Role::Read
            }
        );
    }

    #[test]
    fn wrong_password_unknown_user_and_garbage_are_refused() {
        let u = users();
        assert_eq!(
            u.check(Some(&basic("alice", "nope"))),
            AuthOutcome::Unauthenticated
        );
        assert_eq!(
            u.check(Some(&basic("mallory", "pw"))),
            AuthOutcome::Unauthenticated
        );
        assert_eq!(u.check(Some(b"Basic !!!")), AuthOutcome::Unauthenticated);
        assert_eq!(u.check(Some(b"Bearer abc")), AuthOutcome::Unauthenticated);
        assert_eq!(u.check(None), AuthOutcome::Unauthenticated);
    }

    #[test]
    fn the_cluster_secret_is_accepted_as_a_bearer_token() {
        let mut u = users();
        u.set_cluster_secret("s3cret-cluster");
        assert_eq!(
            u.check(Some(b"Bearer s3cret-cluster")),
            AuthOutcome::Cluster
        );
        assert_eq!(u.check(Some(b"Bearer nope")), AuthOutcome::Unauthenticated);
        let mut open = Users::default();
        open.set_cluster_secret("x");
        assert_eq!(open.check(None), AuthOutcome::Open);
    }

    #[test]
    fn failed_authentications_past_the_burst_are_refused_until_the_allowance_refills() {
        let limiter = FailedAuthLimiter::new(3, 2.0);
        let me = ClientKey::of([10, 1, 1, 1].into());
        let other = ClientKey::of([10, 1, 1, 2].into());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.refused_at(me, t0), None);
            limiter.failed_at(me, t0);
        }
        let wait = limiter.refused_at(me, t0).expect("the burst is spent");
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(limiter.refused_at(other, t0), None);
        assert_eq!(
            limiter.refused_at(me, t0 + Duration::from_millis(500)),
            None
        );
    }

    #[test]
    fn the_failed_authentication_table_is_bounded() {
        let limiter = FailedAuthLimiter::new(1, 1.0);
        let now = Instant::now();
        for i in 0..(AUTH_TRACKED_CLIENTS as u32 + 100) {
            limiter.failed_at(ClientKey::of(std::net::Ipv4Addr::from(i).into()), now);
        }
        assert_eq!(limiter.tracked(), AUTH_TRACKED_CLIENTS);
    }

    #[test]
    fn tokens_are_checked_apart_from_users_and_the_cluster_secret() {
        use crate::tokens::{digest_of, TokenEntry};
        let entry = |name: &str, token: &str, expires: Option<&str>| TokenEntry {
            name: name.into(),
            role: Role::Write,
            digest: digest_of(token),
            filter: Some("bucket=b1".into()),
            expires: expires.map(str::to_owned),
        };
        let mut u = Users::default();
        u.set_tokens(
            Tokens::from_entries(&[
                entry("ci", "met_ci", None),
                entry("old", "met_old", Some("2001-01-01T00:00:00Z")),
            ])
            .expect("valid"),
        );
        assert!(!u.is_empty(), "tokens alone close the server");
        assert_eq!(u.check(None), AuthOutcome::Unauthenticated);
        assert_eq!(u.check(Some(b"Bearer nope")), AuthOutcome::Unauthenticated);
        assert!(matches!(
            u.check(Some(b"Bearer met_ci")),
            AuthOutcome::Token { name, role: Role::Write, filter: Some(_), .. } if name == "ci"
        ));
        assert!(matches!(
            u.check(Some(b"Bearer met_old")),
            AuthOutcome::ExpiredToken { name, .. } if name == "old"
        ));
        u.set_cluster_secret("another");
        assert!(!u.token_is_cluster_secret());
        assert!(matches!(
            u.check(Some(b"Bearer met_ci")),
            AuthOutcome::Token { .. }
        ));
        u.set_cluster_secret("met_ci");
        assert!(u.token_is_cluster_secret());
        assert!(!format!("{u:?}").contains("met_ci"));
    }

    #[test]
    fn a_token_is_taken_as_the_password_of_the_basic_user_token_and_the_secret_is_not() {
        use crate::tokens::{digest_of, TokenEntry};
        let mut u = users();
        u.set_tokens(
            Tokens::from_entries(&[TokenEntry {
                name: "dash".into(),
                role: Role::Read,
                digest: digest_of("met_dash"),
                filter: Some("bucket=b1".into()),
                expires: None,
            }])
            .expect("valid"),
        );
        u.set_cluster_secret("s3cret-cluster");
        assert!(matches!(
            u.check(Some(&basic("token", "met_dash"))),
            AuthOutcome::Token { name, filter: Some(_), .. } if name == "dash"
        ));
        assert_eq!(
            u.check(Some(&basic("token", "met_other"))),
            AuthOutcome::Unauthenticated
        );
        assert_eq!(
            u.check(Some(&basic("token", "s3cret-cluster"))),
            AuthOutcome::Unauthenticated,
            "the cluster secret is Bearer only"
        );
        assert_eq!(
            u.check(Some(&basic("alice", "met_dash"))),
            AuthOutcome::Unauthenticated,
            "only the user `token` carries a token"
        );
        assert!(matches!(
            u.check(Some(&basic("alice", "s3:cr:et"))),
            AuthOutcome::User { .. }
        ));
    }

    #[test]
    fn no_users_means_open() {
        assert_eq!(Users::default().check(None), AuthOutcome::Open);
    }

    #[test]
    fn admin_allows_everything_and_roles_are_separate() {
        assert!(Role::Admin.allows(Role::Write) && Role::Admin.allows(Role::Read));
        assert!(!Role::Read.allows(Role::Write));
        assert!(!Role::Write.allows(Role::Read));
    }

    #[test]
    fn bad_env_entries_are_named_without_the_password() {
        let e = Users::parse_env("alice:secretpw")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("MASTER_EVENTS_USERS entry 1 is not name:password:role")
        );
        let e = Users::parse_env("alice:secretpw:root")
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|m| !m.contains("secretpw") && m.contains("root")));
        let dbg = format!("{:?}", Users::parse_env("alice:secretpw:read"));
        assert!(!dbg.contains("secretpw"), "{dbg}");
        assert!(!format!("{:?}", users()).contains("toor"));
    }
}
