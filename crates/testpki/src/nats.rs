//! A NATS operator for tests of credentials files: an operator, one account and one
//! user, their JWTs signed as NATS signs them (ed25519 nkeys), the server
//! configuration that trusts the operator (a memory resolver preloaded with the
//! account, JetStream enabled for it, and a system account), and the user's `.creds`
//! file.
//!
//! Owns: [`NatsOperator`]. Test-only: the JWT ids are random, not the hashes the
//! `nsc` tool computes (nats-server does not check them).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use nkeys::KeyPair;
use serde_json::{json, Value};

/// An operator, an account and a user, written out under a directory.
pub struct NatsOperator {
    /// The nats-server configuration (operator mode) to include in a server's
    /// config file; it names no store directory.
    pub server_config: String,
    /// The user's credentials file (its JWT and nkey seed).
    pub creds: PathBuf,
    /// Another user's credentials, of an account the server does not know: refused.
    pub stranger_creds: PathBuf,
}

/// `header.claims.signature` of `claims`, signed by `issuer`.
fn jwt(issuer: &KeyPair, claims: Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{body}");
    let signature = issuer
        .sign(signing_input.as_bytes())
        .expect("an nkey signs");
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn claims(issuer: &KeyPair, subject: &KeyPair, name: &str, nats: Value) -> Value {
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    json!({
        "jti": format!("{}{}", name.to_uppercase(), iat),
        "iat": iat,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject.public_key(),
        "nats": nats,
    })
}

fn user_creds(account: &KeyPair, name: &str) -> String {
    let user = KeyPair::new_user();
    let token = jwt(
        account,
        claims(
            account,
            &user,
            name,
            json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2}),
        ),
    );
    let seed = user.seed().expect("a user seed");
    format!(
        "-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )
}

impl NatsOperator {
    /// Makes the keys and JWTs; writes the creds files into `dir`.
    pub fn new(dir: &Path) -> NatsOperator {
        let operator = KeyPair::new_operator();
        let account = KeyPair::new_account();
        let operator_jwt = jwt(
            &operator,
            claims(
                &operator,
                &operator,
                "operator",
                json!({"type": "operator", "version": 2}),
            ),
        );
        let limits = json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
        });
        let account_jwt = jwt(
            &operator,
            claims(
                &operator,
                &account,
                "events",
                json!({"limits": limits, "type": "account", "version": 2}),
            ),
        );
        // JetStream needs a system account.
        let system = KeyPair::new_account();
        let system_jwt = jwt(
            &operator,
            claims(
                &operator,
                &system,
                "SYS",
                json!({"type": "account", "version": 2}),
            ),
        );
        let server_config = format!(
            "operator: {operator_jwt}\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {acc}: {account_jwt}\n  {sys}: {system_jwt}\n}}\n",
            acc = account.public_key(),
            sys = system.public_key(),
        );
        let creds = dir.join("user.creds");
        std::fs::write(&creds, user_creds(&account, "events")).expect("write the creds");
        let stranger_creds = dir.join("stranger.creds");
        std::fs::write(
            &stranger_creds,
            user_creds(&KeyPair::new_account(), "stranger"),
        )
        .expect("write the creds");
        NatsOperator {
            server_config,
            creds,
            stranger_creds,
        }
    }
}
