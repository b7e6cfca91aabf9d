//! The HTTP client side shared by `tail`, `emit`, `report` and `trace`: where the
//! server is, who we are, whom we trust, and how a failure is told to the user.
//!
//! Owns: the endpoint URL ([`Endpoint`]: a base URL such as `http://127.0.0.1:8091`
//! or the full `.../diag/masterEvents` one, `https://` for a TLS server), the
//! credentials ([`Credentials`]: HTTP Basic from `--user` or `MASTER_EVENTS_AUTH`, or
//! a bearer token from `--token` or `MASTER_EVENTS_TOKEN`), the CA certificates
//! trusted for `https://` (`--cacert`, else the system's), the client certificate
//! shown to a server that requires one (`--cert` and `--key`), the configured HTTP
//! client ([`Client`]) and the errors a request can end in ([`ClientError`]).
//!
//! Promises:
//! - A password or token never reaches any output: [`Secret`] and [`Credentials`]
//!   print it as `<hidden>` in debug output, no error message quotes the `--user` or
//!   `--token` value (nor a key file's content), URLs
//!   carrying `user:password@` are refused (without being echoed), and transport
//!   errors are rendered without the request's URL (the caller names the endpoint,
//!   which holds no credentials).
//! - Every request to the server goes through [`Client`], so each carries the
//!   credentials when some were given and none when not.
//! - With `--cacert FILE`, a TLS server is trusted only if its certificate chains
//!   to a certificate of FILE (as curl's `--cacert`); without it, to the system's
//!   trust store. A server that fails verification is reported as not trusted, with
//!   the hint to pass `--cacert` ([`tls_refusal`]).
//! - Nothing here retries: the callers decide (`tail` reconnects, `emit` does not
//!   re-send a batch whose fate is unknown).

use std::convert::Infallible;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use reqwest::{RequestBuilder, Response, StatusCode, Url};

/// The path of the event stream and of ingest on every server.
pub const EVENTS_PATH: &str = "/diag/masterEvents";

/// The name of the environment variable read when `--user` is not given.
pub const AUTH_ENV: &str = "MASTER_EVENTS_AUTH";

/// The name of the environment variable read when `--token` is not given.
pub const TOKEN_ENV: &str = "MASTER_EVENTS_TOKEN";

/// A string from the command line or the environment that must not be shown: its
/// `Debug` prints `<hidden>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// clap's value parser: takes any string, so that clap never echoes a malformed
    /// value in its own error message; [`Credentials::parse`] checks the form later.
    pub fn from_arg(s: &str) -> Result<Secret, Infallible> {
        Ok(Secret(s.to_owned()))
    }

    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

/// The connection options shared by the commands that talk to a server:
/// credentials (a user or a token), the CA trusted for `https://`, and the client
/// certificate for a server that requires one.
#[derive(Args, Debug, Clone)]
pub struct AuthArgs {
    /// HTTP Basic credentials, as NAME:PASSWORD (the password may itself contain
    /// ':'). Prefer the environment variable, which keeps the password out of the
    /// shell history and the process list.
    #[arg(
        long,
        value_name = "NAME:PASSWORD",
        env = AUTH_ENV,
        hide_env_values = true,
        value_parser = Secret::from_arg
    )]
    pub user: Option<Secret>,
    /// A bearer token (made by `master-events token create`; sent as
    /// `Authorization: Bearer`) instead of --user. Prefer the environment variable.
    #[arg(
        long,
        value_name = "TOKEN",
        env = TOKEN_ENV,
        hide_env_values = true,
        value_parser = Secret::from_arg
    )]
    pub token: Option<Secret>,
    /// For an https:// server: trust only the CA certificates in this PEM file (the
    /// CA that signed the server's certificate) instead of the system's.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// For a server that requires client certificates (`--tls-client-ca`): this
    /// PEM certificate (chain) is shown to it; give its private key with --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The PEM private key of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
}

impl AuthArgs {
    /// The credentials given, if any (an empty value counts as none). A user and a
    /// token at once are refused: the server would take only one of them.
    pub fn credentials(&self) -> Result<Option<Credentials>, ClientError> {
        let user = self.user.as_ref().filter(|s| !s.expose().is_empty());
        let token = self.token.as_ref().filter(|s| !s.expose().is_empty());
        match (user, token) {
            (Some(_), Some(_)) => Err(ClientError::InvalidCredentials(format!(
                "give either a user (--user / {AUTH_ENV}) or a token (--token / {TOKEN_ENV}), not both"
            ))),
            (Some(user), None) => Credentials::parse(user.expose()).map(Some),
            (None, Some(token)) => Credentials::token(token.expose()).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The client certificate and key to show a server, when given.
    pub fn identity(&self) -> Option<(&Path, &Path)> {
        Some((self.cert.as_deref()?, self.key.as_deref()?))
    }
}

/// Who the client says it is: a user name and password (HTTP Basic), or a bearer
/// token. `Debug` hides the password and the token.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// HTTP Basic.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// `Authorization: Bearer`.
    Bearer(Secret),
}

impl Credentials {
    /// A bearer token: printable ASCII without spaces (what `token create` makes).
    /// The error never quotes the input.
    pub fn token(s: &str) -> Result<Credentials, ClientError> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ClientError::InvalidCredentials(format!(
                "--token / {TOKEN_ENV} must be the token `master-events token create` printed (printable characters, no spaces)"
            )));
        }
        Ok(Credentials::Bearer(Secret(s.to_owned())))
    }

    /// The user name, for a user's credentials.
    pub fn user(&self) -> Option<&str> {
        match self {
            Credentials::Basic { user, .. } => Some(user),
            Credentials::Bearer(_) => None,
        }
    }

    /// Reads `NAME:PASSWORD` (split at the first `:`). The error never quotes the
    /// input, which may be a mistyped password.
    pub fn parse(s: &str) -> Result<Credentials, ClientError> {
        match s.split_once(':') {
            Some((user, password)) if !user.is_empty() => Ok(Credentials::Basic {
                user: user.to_owned(),
                password: password.to_owned(),
            }),
            Some(_) => Err(ClientError::InvalidCredentials(
                "the user name before ':' is empty".into(),
            )),
            None => Err(ClientError::InvalidCredentials(
                "no ':' between the user name and the password".into(),
            )),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { user, .. } => f
                .debug_struct("Credentials")
                .field("user", user)
                .field("password", &"<hidden>")
                .finish(),
            Credentials::Bearer(_) => f
                .debug_struct("Credentials")
                .field("token", &"<hidden>")
                .finish(),
        }
    }
}

/// The URL of a server's event endpoint (`.../diag/masterEvents`), with no query, no
/// fragment and no credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    url: Url,
}

impl Endpoint {
    /// Reads what the user typed: a base URL (`http://127.0.0.1:8091`, with or
    /// without a trailing `/` or a path prefix), the full endpoint
    /// (`http://127.0.0.1:8091/diag/masterEvents`), or a bare `host:port` (taken as
    /// `http://host:port`). Refuses other schemes, a query string (options say what
    /// to ask for) and credentials in the URL (they would show up in errors and in
    /// the process list; `--user` or `MASTER_EVENTS_AUTH` carry them).
    pub fn parse(input: &str) -> Result<Endpoint, ClientError> {
        let input = input.trim();
        let with_scheme = if input.contains("://") {
            input.to_owned()
        } else {
            format!("http://{input}")
        };
        let mut url = Url::parse(&with_scheme).map_err(|e| {
            // The URL may hold a password: say what is wrong without quoting it.
            ClientError::InvalidUrl(format!("not a URL ({e})"))
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ClientError::InvalidUrl(
                "credentials in the URL are not accepted: give them with --user NAME:PASSWORD \
                 or the MASTER_EVENTS_AUTH environment variable"
                    .into(),
            ));
        }
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(ClientError::InvalidUrl(format!(
                "{input}: the scheme must be http:// or https://"
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(ClientError::InvalidUrl(format!("{input}: no host")));
        }
        if url.query().is_some() {
            return Err(ClientError::InvalidUrl(format!(
                "{input}: give the server's URL without a query string; \
                 say what to ask for with the command's options"
            )));
        }
        url.set_fragment(None);
        let path = url.path().trim_end_matches('/').to_owned();
        if !path.ends_with(EVENTS_PATH) {
            url.set_path(&format!("{path}{EVENTS_PATH}"));
        } else {
            url.set_path(&path);
        }
        Ok(Endpoint { url })
    }

    /// The endpoint URL (no query).
    pub fn url(&self) -> &Url {
        &self.url
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str())
    }
}

/// Why a request to the server failed, or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server URL is unusable.
    #[error("bad server URL: {0}")]
    InvalidUrl(String),
    /// `--user` / `MASTER_EVENTS_AUTH` is not `NAME:PASSWORD`, or `--token` is not
    /// a token, or both were given.
    #[error("bad credentials: {0}")]
    InvalidCredentials(String),
    /// 401: no credentials were sent but the server wants some, or it refused them.
    #[error("{}", unauthorized_message(.user.as_deref(), *.token))]
    Unauthorized {
        /// The user name sent, if any.
        user: Option<String>,
        /// Whether a token was sent.
        token: bool,
    },
    /// 403: the credentials are valid but not allowed to do this.
    #[error("{}", forbidden_message(.user.as_deref(), *.token))]
    Forbidden {
        /// The user name sent, if any.
        user: Option<String>,
        /// Whether a token was sent.
        token: bool,
    },
    /// The `--cert` / `--key` files cannot be used.
    #[error("--cert {} / --key {}: {reason}", cert.display(), key.display())]
    ClientCert {
        /// The certificate file given.
        cert: PathBuf,
        /// The key file given.
        key: PathBuf,
        /// What is wrong with them (never their content).
        reason: String,
    },
    /// The HTTP client could not be set up, or a request could not be sent or read.
    #[error("{0}")]
    Transport(String),
    /// The `--cacert` file cannot be used.
    #[error("--cacert {}: {reason}", path.display())]
    CaCert {
        /// The file given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

fn forbidden_message(user: Option<&str>, token: bool) -> String {
    match (user, token) {
        (_, true) => "the server refused access to the token (403 Forbidden): its role or scope does not allow this (a scoped token may read its events only; /cluster and /metrics need an unscoped one)".to_owned(),
        (Some(user), false) => format!("the server refused access to user {user:?} (403 Forbidden): the user lacks the role this needs"),
        (None, false) => "the server refused access to anonymous requests (403 Forbidden): give --user or --token".to_owned(),
    }
}

fn unauthorized_message(user: Option<&str>, token: bool) -> String {
    if token {
        return format!(
            "authentication failed: the server refused the token (401 Unauthorized): it is unknown, expired or revoked; check --token / {TOKEN_ENV}"
        );
    }
    match user {
        Some(user) => format!(
            "authentication failed: the server refused the credentials of user {user:?} \
             (401 Unauthorized); check --user / {AUTH_ENV}"
        ),
        None => format!(
            "authentication required: the server answered 401 Unauthorized; give \
             --user NAME:PASSWORD (or set {AUTH_ENV}=NAME:PASSWORD), or --token TOKEN \
             (or {TOKEN_ENV})"
        ),
    }
}

/// The HTTP client both commands use: one connection pool, the endpoint and the
/// credentials.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: Endpoint,
    credentials: Option<Credentials>,
}

impl Client {
    /// A client for `endpoint`. `read_timeout` bounds each read of a response (a
    /// stream that may rightly be silent must pass `None` and watch idleness itself).
    /// `auth.cacert`: a PEM file of the CA certificates to trust for `https://`
    /// instead of the system's; `auth.cert` and `auth.key`: the client certificate
    /// shown to a server that asks for one.
    pub fn new(
        endpoint: Endpoint,
        credentials: Option<Credentials>,
        read_timeout: Option<Duration>,
        auth: &AuthArgs,
    ) -> Result<Client, ClientError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("master-events/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10));
        if let Some(t) = read_timeout {
            builder = builder.read_timeout(t);
        }
        if let Some(path) = auth.cacert.as_deref() {
            builder = builder.tls_built_in_root_certs(false);
            for cert in read_cacert(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some((cert, key)) = auth.identity() {
            builder = builder.identity(read_identity(cert, key)?);
        }
        let http = builder.build().map_err(|e| {
            ClientError::Transport(format!("cannot set up the HTTP client: {}", describe(e)))
        })?;
        Ok(Client {
            http,
            endpoint,
            credentials,
        })
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// A GET of `url` (the endpoint with a query), with the credentials.
    pub fn get(&self, url: Url) -> RequestBuilder {
        self.authed(self.http.get(url))
    }

    /// A POST of an NDJSON body to the endpoint, with the credentials.
    pub fn post_ndjson(&self, body: Vec<u8>) -> RequestBuilder {
        self.authed(
            self.http
                .post(self.endpoint.url().clone())
                .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
                .body(body),
        )
    }

    fn authed(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.credentials {
            Some(Credentials::Basic { user, password }) => request.basic_auth(user, Some(password)),
            Some(Credentials::Bearer(token)) => request.bearer_auth(token.expose()),
            None => request,
        }
    }

    /// The error for a 401 or 403 answer; `None` for any other status.
    pub fn refusal(&self, status: StatusCode) -> Option<ClientError> {
        let user = self
            .credentials
            .as_ref()
            .and_then(|c| c.user().map(str::to_owned));
        let token = matches!(self.credentials, Some(Credentials::Bearer(_)));
        match status {
            StatusCode::UNAUTHORIZED => Some(ClientError::Unauthorized { user, token }),
            StatusCode::FORBIDDEN => Some(ClientError::Forbidden { user, token }),
            _ => None,
        }
    }
}

/// The certificates of a `--cacert` file (PEM, one or more).
fn read_cacert(path: &Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let error = |reason: String| ClientError::CaCert {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| error(format!("cannot read it: {e}")))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|_| error("not a PEM file of certificates".into()))?;
    if certs.is_empty() {
        return Err(error(
            "holds no certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

/// The client certificate of `--cert` and its key `--key` (PEM), as one identity.
/// Errors say which file and what is wrong, never what is in them.
fn read_identity(cert: &Path, key: &Path) -> Result<reqwest::Identity, ClientError> {
    let error = |reason: String| ClientError::ClientCert {
        cert: cert.to_owned(),
        key: key.to_owned(),
        reason,
    };
    let cert_pem =
        std::fs::read(cert).map_err(|e| error(format!("cannot read the certificate: {e}")))?;
    let key_pem = std::fs::read(key).map_err(|e| error(format!("cannot read the key: {e}")))?;
    if !cert_pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(error(
            "the certificate file holds no certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    if !key_pem
        .windows(b"PRIVATE KEY-----".len())
        .any(|w| w == b"PRIVATE KEY-----")
    {
        return Err(error(
            "the key file holds no private key (-----BEGIN ... PRIVATE KEY-----)".into(),
        ));
    }
    let mut pem = key_pem;
    pem.push(b'\n');
    pem.extend_from_slice(&cert_pem);
    reqwest::Identity::from_pem(&pem)
        .map_err(|_| error("not a usable PEM certificate and private key".into()))
}

/// When `error` is a TLS server whose certificate failed verification: what to
/// tell the user (it is not trusted, and how to trust it). `None` for any other
/// error.
pub fn tls_refusal(error: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(rustls::Error::AlertReceived(alert)) = rustls_error_in(cause) {
            match alert {
                rustls::AlertDescription::CertificateRequired => {
                    return Some(
                        "the server requires a client certificate (TLS alert: certificate required): give --cert FILE --key FILE".to_owned(),
                    )
                }
                rustls::AlertDescription::BadCertificate
                | rustls::AlertDescription::UnknownCA
                | rustls::AlertDescription::CertificateExpired
                | rustls::AlertDescription::CertificateUnknown => {
                    return Some(format!(
                        "the server refused this client's certificate (TLS alert: {alert:?}): --cert must be signed by a CA the server trusts (its --tls-client-ca) and be valid now"
                    ))
                }
                _ => {}
            }
        }
        if let Some(e @ rustls::Error::InvalidCertificate(why)) = rustls_error_in(cause) {
            return Some(match why {
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. } => format!(
                    "the server's TLS certificate is not valid for this host name ({e}): use the name or address its certificate was issued for"
                ),
                rustls::CertificateError::Expired
                | rustls::CertificateError::ExpiredContext { .. }
                | rustls::CertificateError::NotValidYet
                | rustls::CertificateError::NotValidYetContext { .. } => format!(
                    "the server's TLS certificate is not trusted: it is out of its validity period ({e})"
                ),
                _ => format!(
                    "the server's TLS certificate is not trusted ({e}): give the CA certificate that signed it with --cacert FILE"
                ),
            });
        }
        source = cause.source();
    }
    None
}

/// The rustls error `error` is, or wraps as the custom error of an `io::Error`
/// (at any depth: the TLS connector nests them, and an `io::Error`'s `source()`
/// skips its own custom error).
fn rustls_error_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(e) = error.downcast_ref::<rustls::Error>() {
        return Some(e);
    }
    let inner = error.downcast_ref::<std::io::Error>()?.get_ref()?;
    rustls_error_in(inner)
}

/// A transport error as one line: its two innermost causes joined with `: `, without
/// the URL (the caller says which endpoint it was talking to). A server certificate
/// that failed verification is said so, with what to do ([`tls_refusal`]).
pub fn describe(error: reqwest::Error) -> String {
    if let Some(refusal) = tls_refusal(&error) {
        return refusal;
    }
    let plain_http = error.url().is_some_and(|u| u.scheme() == "http");
    let error = error.without_url();
    let mut parts: Vec<String> = vec![error.to_string()];
    // A cause that is hyper's parse error: the answer was not HTTP.
    let mut not_http = false;
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        not_http |= cause
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse);
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    // The outer layers ("error sending request", "client error (Connect)") say
    // little; the innermost two say what happened.
    let keep = parts.len().saturating_sub(2);
    let said = parts[keep..].join(": ");
    // Not HTTP, to an http:// URL: most often a TLS port (its alert is no HTTP
    // version), which only a hint makes plain.
    if plain_http && not_http {
        format!("{said}: the answer is not HTTP; if the server serves TLS, use https://")
    } else {
        said
    }
}

/// The start of a response body, for an error message: at most `limit` bytes read,
/// control characters flattened to spaces, trimmed. A body that cannot be read gives
/// what was read so far.
pub async fn body_preview(mut response: Response, limit: usize) -> String {
    let mut buf: Vec<u8> = Vec::new();
    while buf.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    buf.truncate(limit);
    one_line(&String::from_utf8_lossy(&buf))
}

/// `text` on one line: control characters (newlines included) become spaces.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(s: &str) -> String {
        match Endpoint::parse(s) {
            Ok(e) => e.to_string(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn a_base_url_gets_the_events_path() {
        assert_eq!(
            endpoint("http://127.0.0.1:8091"),
            "http://127.0.0.1:8091/diag/masterEvents"
        );
        assert_eq!(
            endpoint("http://127.0.0.1:8091/"),
            "http://127.0.0.1:8091/diag/masterEvents"
        );
        assert_eq!(
            endpoint("http://proxy.example/cluster-a/"),
            "http://proxy.example/cluster-a/diag/masterEvents"
        );
    }

    #[test]
    fn a_full_endpoint_url_is_kept() {
        assert_eq!(
            endpoint("http://127.0.0.1:8091/diag/masterEvents"),
            "http://127.0.0.1:8091/diag/masterEvents"
        );
        assert_eq!(
            endpoint("http://127.0.0.1:8091/diag/masterEvents/"),
            "http://127.0.0.1:8091/diag/masterEvents"
        );
    }

    #[test]
    fn a_bare_host_and_port_means_http() {
        assert_eq!(
            endpoint("127.0.0.1:8091"),
            "http://127.0.0.1:8091/diag/masterEvents"
        );
        assert_eq!(
            endpoint("localhost:8091"),
            "http://localhost:8091/diag/masterEvents"
        );
    }

    #[test]
    fn credentials_in_the_url_are_refused_without_being_echoed() {
        let e = endpoint("http://alice:hunter2@127.0.0.1:8091");
        assert!(e.starts_with("error: "), "{e}");
        assert!(e.contains("--user"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn other_schemes_and_queries_are_refused() {
        assert!(endpoint("ftp://x/").contains("scheme"));
        assert!(endpoint("http://x/diag/masterEvents?o=1").contains("query"));
    }

    #[test]
    fn credentials_split_at_the_first_colon() {
        let c = Credentials::parse("alice:pa:ss").expect("valid");
        assert_eq!(
            c,
            Credentials::Basic {
                user: "alice".into(),
                password: "pa:ss".into()
            }
        );
        assert!(Credentials::parse("alice").is_err());
        assert!(Credentials::parse(":pw").is_err());
    }

    #[test]
    fn debug_output_hides_the_password() {
        let c = Credentials::parse("alice:hunter2").expect("valid");
        let shown = format!("{c:?} {:?}", Secret("alice:hunter2".into()));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("alice"), "{shown}");
        let err = Credentials::parse("alicehunter2").expect_err("no colon");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    fn auth(user: Option<&str>, token: Option<&str>) -> AuthArgs {
        AuthArgs {
            user: user.map(|u| Secret(u.into())),
            token: token.map(|t| Secret(t.into())),
            cacert: None,
            cert: None,
            key: None,
        }
    }

    #[test]
    fn an_empty_auth_value_means_no_credentials() {
        assert!(matches!(auth(Some(""), Some("")).credentials(), Ok(None)));
    }

    #[test]
    fn a_token_is_sent_as_bearer_and_never_shown() {
        let c = auth(None, Some("me_tok3n.secret"))
            .credentials()
            .expect("valid")
            .expect("some");
        assert_eq!(c, Credentials::Bearer(Secret("me_tok3n.secret".into())));
        assert!(!format!("{c:?}").contains("tok3n"), "{c:?}");
        let e = auth(None, Some("has space"))
            .credentials()
            .expect_err("refused")
            .to_string();
        assert!(e.contains("--token") && !e.contains("has space"), "{e}");
    }

    #[test]
    fn a_user_and_a_token_at_once_are_refused() {
        let e = auth(Some("alice:pw"), Some("tok"))
            .credentials()
            .expect_err("refused")
            .to_string();
        assert!(e.contains("not both"), "{e}");
        assert!(!e.contains("pw") && !e.contains("tok\""), "{e}");
    }

    #[test]
    fn refusals_say_whether_a_token_or_a_user_was_refused() {
        let t = ClientError::Unauthorized {
            user: None,
            token: true,
        }
        .to_string();
        assert!(t.contains("token") && t.contains("expired"), "{t}");
        let f = ClientError::Forbidden {
            user: None,
            token: true,
        }
        .to_string();
        assert!(f.contains("scope"), "{f}");
        let u = ClientError::Unauthorized {
            user: Some("alice".into()),
            token: false,
        }
        .to_string();
        assert!(u.contains("\"alice\""), "{u}");
    }

    #[test]
    fn a_client_certificate_that_is_not_one_is_named_without_its_content() {
        let dir = tempfile::tempdir().expect("dir");
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&cert, "not a certificate s3cr3t").expect("write");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\ns3cr3t\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        let e = read_identity(&cert, &key).expect_err("refused").to_string();
        assert!(e.contains("c.pem") && e.contains("no certificate"), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");
        let e = read_identity(&cert, &dir.path().join("missing.pem"))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("cannot read the key"), "{e}");
    }

    #[test]
    fn one_line_flattens_control_characters() {
        assert_eq!(one_line(" a\nb\tc \r\n"), "a b c");
    }
}
