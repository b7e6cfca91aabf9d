//! No configuration error shows a secret. Every key that holds one (a user's
//! `password`; the webhook sink's `headers` and a password in its `url`; the NATS
//! sink's `password` and `token`), and a secret typed where another key's value
//! belongs, goes through each kind of error: a wrongly typed value beside it, an
//! unterminated string, a misspelled key beside it, an unknown key, a secret where a
//! map or a variant was expected. The error — what `master-events serve` prints, and
//! the `Display` and `Debug` of the loader's error — names where, never the value.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Proc;

/// The secret in every document; no error may contain it, or a part of it.
const SECRET: &str = "Zq7SecretValue9x";

/// Parts of [`SECRET`] that would show a partial quote of it.
const SECRET_PARTS: [&str; 3] = ["Zq7Secret", "SecretValue", "Value9x"];

/// `(what it checks, the document with `{S}` for the secret)`.
const DOCUMENTS: &[(&str, &str)] = &[
    // [[users]] password
    (
        "users: a wrongly typed role beside the password",
        r#"users = [ { name = "ops", password = "{S}", role = 5 } ]"#,
    ),
    (
        "users: an unknown role beside the password",
        r#"users = [ { name = "ops", password = "{S}", role = "root" } ]"#,
    ),
    (
        "users: an unterminated password",
        r#"users = [ { name = "ops", password = "{S}, role = "admin" } ]"#,
    ),
    (
        "users: a misspelled key beside the password",
        r#"users = [ { nmae = "ops", password = "{S}", role = "admin" } ]"#,
    ),
    (
        "users: an unknown key in a [[users]] table",
        "[[users]]\nname = \"ops\"\npassword = \"{S}\"\nrole = \"admin\"\nshell = \"/bin/sh\"\n",
    ),
    (
        "users: the password typed as the role",
        r#"users = [ { name = "ops", password = "x", role = "{S}" } ]"#,
    ),
    (
        "users: a password that is not a TOML value",
        "[[users]]\nname = \"ops\"\npassword = 7{S}\nrole = \"admin\"\n",
    ),
    // [server]
    (
        "server: an unknown key holding a secret",
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_password = \"{S}\"\n",
    ),
    (
        "server: a secret where a boolean belongs",
        "[server]\ninsecure_no_auth = \"{S}\"\n",
    ),
    (
        "server: a secret where an address belongs",
        "[server]\nlisten = \"{S}\"\n",
    ),
    // webhook headers (Authorization) and url
    (
        "webhook: a wrongly typed key beside the Authorization header",
        "[[sinks]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nheaders = { Authorization = \"Bearer {S}\" }\nbatch_max_events = \"many\"\n",
    ),
    (
        "webhook: an unterminated Authorization header",
        "[[sinks]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nheaders = { Authorization = \"Bearer {S} }\n",
    ),
    (
        "webhook: a misspelled headers key",
        "[[sinks]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nhedaers = { Authorization = \"Bearer {S}\" }\n",
    ),
    (
        "webhook: headers given as a string",
        "[[sinks]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nheaders = \"Authorization: Bearer {S}\"\n",
    ),
    (
        "webhook: a header value that is not a valid header value",
        "[[sinks]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nheaders = { Authorization = \"Bearer {S}\\u0001\" }\n",
    ),
    (
        "webhook: a password in the url beside a wrongly typed key",
        "[[sinks]]\ntype = \"webhook\"\nurl = \"http://ops:{S}@127.0.0.1:9/\"\nlinger_ms = \"soon\"\n",
    ),
    (
        "webhook: a password in an invalid url",
        "[[sinks]]\ntype = \"webhook\"\nurl = \"ftp://ops:{S}@127.0.0.1:9/\"\n",
    ),
    (
        "webhook: an unknown key holding a secret",
        "[[sinks]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\napi_token = \"{S}\"\n",
    ),
    // nats password and token
    (
        "nats: a wrongly typed key holding the token",
        "[[sinks]]\ntype = \"nats\"\ntoken = \"{S}\"\nmax_pending = \"{S}\"\n",
    ),
    (
        "nats: an unterminated token",
        "[[sinks]]\ntype = \"nats\"\ntoken = \"{S}\n",
    ),
    (
        "nats: a misspelled password key",
        "[[sinks]]\ntype = \"nats\"\nuser = \"ops\"\npasword = \"{S}\"\n",
    ),
    (
        "nats: both a password and a token",
        "[[sinks]]\ntype = \"nats\"\nuser = \"ops\"\npassword = \"{S}\"\ntoken = \"{S}\"\n",
    ),
    (
        "nats: a password where the servers belong",
        "[[sinks]]\ntype = \"nats\"\nservers = \"nats://ops:{S}@127.0.0.1:4222\"\n",
    ),
    (
        "nats: a server url with a password",
        "[[sinks]]\ntype = \"nats\"\nservers = [\"nats://ops:{S}@127.0.0.1:4222\"]\n",
    ),
    (
        "nats: an invalid server url with a password",
        "[[sinks]]\ntype = \"nats\"\nservers = [\"nats://ops:{S}@bad host:x\"]\n",
    ),
    (
        "a secret in a filter",
        "[[sinks]]\ntype = \"stdout\"\nfilter = { type = \"{S}\" }\n",
    ),
];

fn document(template: &str) -> String {
    template.replace("{S}", SECRET)
}

fn assert_no_secret(what: &str, text: &str) {
    for part in SECRET_PARTS {
        assert!(
            !text.contains(part),
            "{what}: the error shows the secret ({part}):\n{text}"
        );
    }
}

/// Runs `master-events serve` on `config`; its exit code and standard error.
fn serve_with(config: &std::path::Path) -> (Option<i32>, String) {
    serve_with_users(config, None)
}

/// As [`serve_with`], with `MASTER_EVENTS_USERS` set to `users` when given.
fn serve_with_users(config: &std::path::Path, users: Option<&str>) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_master-events"));
    command.env_remove("MASTER_EVENTS_USERS");
    if let Some(users) = users {
        command.env("MASTER_EVENTS_USERS", users);
    }
    let child = command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    // Killed on drop, whatever happens below.
    let mut p = Proc::new(child);
    let code = p.wait_exit(Duration::from_secs(20));
    p.kill9();
    let mut stderr = String::new();
    if let Some(mut err) = p.child.stderr.take() {
        err.read_to_string(&mut stderr).expect("read stderr");
    }
    (code, stderr)
}

#[test]
fn serve_names_the_bad_key_of_every_secret_holding_config_but_never_its_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("secrets.toml");
    for (what, template) in DOCUMENTS {
        std::fs::write(&config, document(template)).expect("write config");
        let (code, stderr) = serve_with(&config);
        assert_eq!(code, Some(2), "{what}: refused at start:\n{stderr}");
        assert!(
            stderr.contains("secrets.toml"),
            "{what}: the error names the file:\n{stderr}"
        );
        assert_no_secret(what, &stderr);
    }
}

#[test]
fn a_toml_error_says_file_line_and_column_and_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("me.toml");
    std::fs::write(
        &config,
        document("# users\n[[users]]\nname = \"ops\"\npassword = [\"{S}\"]\nrole = \"admin\"\n"),
    )
    .expect("write config");
    let (_, stderr) = serve_with(&config);
    let shown = format!("{}:4:12: ", config.display());
    assert!(stderr.contains(&shown), "{stderr}");
    assert!(stderr.contains("users.password"), "{stderr}");
    assert_no_secret("line and column", &stderr);
}

#[test]
fn the_sinks_loader_error_shows_no_secret_in_display_or_debug() {
    // Link every sink, so the loader checks their keys.
    let names = master_events_plugins::sink_names();
    assert!(
        names.contains(&"webhook") && names.contains(&"nats"),
        "{names:?}"
    );
    for (what, template) in DOCUMENTS {
        let text = document(template);
        let Err(e) = master_events_router::load_config(&text) else {
            // The users and [server] documents are the application's, not the loader's.
            continue;
        };
        assert_no_secret(what, &e.to_string());
        assert_no_secret(what, &format!("{e:?}"));
    }
}

#[test]
fn a_password_misplaced_in_master_events_users_is_not_shown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("empty.toml");
    std::fs::write(&config, "").expect("write config");
    // name:role:password instead of name:password:role.
    let users = format!("ops:admin:{SECRET}");
    let (code, stderr) = serve_with_users(&config, Some(&users));
    assert_eq!(code, Some(2), "refused at start:\n{stderr}");
    assert!(stderr.contains("MASTER_EVENTS_USERS"), "{stderr}");
    assert_no_secret("MASTER_EVENTS_USERS", &stderr);
}
