//! Scoped bearer tokens end to end: `token create` prints the token alone on its
//! first line and a `[[tokens]]` entry without it; `serve` with that entry accepts
//! the token, narrows its streams to its filter, refuses it once expired (saying
//! so), stops at a bad entry naming it, and never writes a token in its log or its
//! errors; Basic users work beside tokens.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use common::{http_with, run_logged, Logged};
use serde_json::Value;

/// `master-events token create ARGS`: (exit code, stdout, stderr).
fn token_create(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_master-events"))
        .arg("token")
        .arg("create")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A new token and its entry, as `token create` prints them.
fn make_token(args: &[&str]) -> (String, String) {
    let (code, stdout, stderr) = token_create(args);
    assert_eq!(code, Some(0), "{stderr}");
    let (token, entry) = stdout.split_once('\n').expect("two parts");
    (token.to_owned(), entry.to_owned())
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// `GET`/`POST` with an `Authorization` header.
fn call(addr: &str, method: &str, path: &str, auth: &str, body: &str) -> (u16, String) {
    http_with(addr, method, path, &[("Authorization", auth)], body)
}

/// The buckets of every event of an NDJSON body.
fn buckets(body: &str) -> Vec<String> {
    body.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
        .filter(|v| v["type"] == "vbucketMoveDone")
        .map(|v| v["bucket"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn token_create_prints_the_token_alone_on_line_one_and_an_entry_without_it() {
    let (code, stdout, stderr) = token_create(&[
        "--name",
        "b1-dash",
        "--role",
        "read",
        "--filter",
        "type=rebalanceStart,rebalanceEnd&bucket=b1",
        "--expires",
        "30d",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let mut lines = stdout.lines();
    let token = lines.next().expect("a first line");
    let body = token.strip_prefix("met_").expect("met_ prefix");
    assert_eq!(body.len(), 43, "{token}");
    assert!(body
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    let rest: String = lines.collect::<Vec<_>>().join("\n");
    for part in [token, body, &body[..20], &body[20..]] {
        assert!(!rest.contains(part), "the entry holds the token:\n{rest}");
        assert!(!stderr.contains(part), "stderr holds the token:\n{stderr}");
    }
    let doc: toml::Table = toml::from_str(&rest).expect("the rest is TOML");
    let entry = &doc["tokens"][0];
    assert_eq!(entry["name"].as_str(), Some("b1-dash"));
    assert_eq!(entry["role"].as_str(), Some("read"));
    assert_eq!(
        entry["filter"].as_str(),
        Some("type=rebalanceStart,rebalanceEnd&bucket=b1")
    );
    assert!(entry["digest"]
        .as_str()
        .is_some_and(|d| d.starts_with("sha256:") && d.len() == 71));
    assert!(entry["expires"]
        .as_str()
        .is_some_and(|e| e.ends_with('Z') && e.len() == 20));

    // Two tokens are never the same.
    let (other, _) = make_token(&["--name", "x", "--role", "read"]);
    assert_ne!(other, token);
}

#[test]
fn token_create_refuses_a_bad_filter_or_duration_naming_the_flag() {
    let (code, stdout, stderr) = token_create(&[
        "--name",
        "x",
        "--role",
        "read",
        "--filter",
        "bucket=b1&since=4",
    ]);
    assert_eq!(code, Some(2));
    assert!(stdout.is_empty(), "nothing printed: {stdout}");
    assert!(
        stderr.contains("--filter: unknown key \"since\""),
        "{stderr}"
    );
    let (code, stdout, stderr) =
        token_create(&["--name", "x", "--role", "read", "--expires", "forever"]);
    assert_eq!(code, Some(2));
    assert!(stdout.is_empty());
    assert!(stderr.contains("--expires"), "{stderr}");
}

/// Starts `serve` on a free port with `config`: the running node and its address.
fn serve(dir: &tempfile::TempDir, config: &str) -> (Logged, String) {
    let path = dir.path().join("me.toml");
    std::fs::write(&path, config).expect("config written");
    let mut logged = run_logged(
        &[
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--config".into(),
            path.display().to_string(),
        ],
        false,
    );
    let url = common::listening_url(&mut logged.proc);
    // Keep draining stdout so the child never blocks on it.
    if let Some(mut out) = logged.proc.stdout.take() {
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut out, &mut sink);
        });
    }
    (logged, common::host_port(&url))
}

#[test]
fn a_server_with_the_entries_accepts_the_tokens_narrows_them_and_never_logs_them() {
    let (b1_token, b1_entry) = make_token(&[
        "--name",
        "b1-reader",
        "--role",
        "read",
        "--filter",
        "bucket=b1",
        "--expires",
        "1h",
    ]);
    let (old_token, old_entry) = make_token(&["--name", "old", "--role", "admin"]);
    // The same entry, expired.
    let old_entry = format!("{old_entry}expires = \"2001-09-09T01:46:40Z\"\n");
    let config = format!(
        "[[users]]\nname = \"ops\"\npassword = \"pw\"\nrole = \"admin\"\n\n{b1_entry}\n{old_entry}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let (node, addr) = serve(&dir, &config);
    let ops = basic("ops", "pw");
    let b1 = format!("Bearer {b1_token}");

    // A Basic user ingests, as before.
    let lines: String = [("b1", 1), ("b2", 2), ("b1", 3), ("b2", 4)]
        .iter()
        .map(|(b, vb)| {
            format!("{{\"type\":\"vbucketMoveDone\",\"bucket\":\"{b}\",\"vbucket\":{vb}}}\n")
        })
        .collect();
    let (status, body) = call(&addr, "POST", "/diag/masterEvents", &ops, &lines);
    assert_eq!(status, 200, "{body}");

    // The token is accepted, and sees b1 only, whatever it asks.
    for path in [
        "/diag/masterEvents?o=1",
        "/diag/masterEvents?o=1&bucket=b1,b2",
        "/diag/masterEvents?o=1&since=1",
    ] {
        let (status, body) = call(&addr, "GET", path, &b1, "");
        assert_eq!(status, 200, "{path}: {body}");
        let want = if path.contains("since") { 1 } else { 2 };
        assert_eq!(buckets(&body), vec!["b1"; want], "{path}");
    }
    let (status, body) = call(&addr, "GET", "/diag/masterEvents?o=1&bucket=b2", &b1, "");
    assert_eq!(status, 400, "{body}");
    // The Basic user is not narrowed.
    let (status, body) = call(&addr, "GET", "/diag/masterEvents?o=1", &ops, "");
    assert_eq!(status, 200);
    assert_eq!(buckets(&body).len(), 4);
    // A read token does not ingest.
    let (status, body) = call(&addr, "POST", "/diag/masterEvents", &b1, &lines);
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains(&b1_token));

    // The expired token: 401 saying so, and a WARN naming it.
    let (status, body) = call(
        &addr,
        "GET",
        "/diag/masterEvents?o=1",
        &format!("Bearer {old_token}"),
        "",
    );
    assert_eq!(status, 401);
    assert!(
        body.contains("token \\\"old\\\" expired at 2001-09-09T01:46:40Z"),
        "{body}"
    );
    assert!(!body.contains(&old_token));
    common::wait_until(
        "the WARN about the expired token",
        Duration::from_secs(20),
        || node.log().contains("refused an expired token"),
    );
    // A wrong token is a plain 401.
    let (status, body) = call(
        &addr,
        "GET",
        "/diag/masterEvents?o=1",
        "Bearer met_nope",
        "",
    );
    assert_eq!(status, 401, "{body}");

    let log = node.log();
    assert!(log.contains("old"), "{log}");
    for token in [&b1_token, &old_token] {
        let secret = token.trim_start_matches("met_");
        assert!(
            !log.contains(&secret[..16]) && !log.contains(&secret[16..32]),
            "a token is in the log:\n{log}"
        );
    }
}

/// Runs `master-events ARGS` with `env` set (and no inherited credentials), to its
/// end or for 60 s at most (coreutils' `timeout`): (success, stdout, stderr).
fn client(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new("timeout");
    cmd.arg("60")
        .arg(env!("CARGO_BIN_EXE_master-events"))
        .args(args)
        .env_remove("MASTER_EVENTS_AUTH")
        .env_remove("MASTER_EVENTS_TOKEN")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tail_and_emit_carry_a_token_and_a_scoped_one_sees_its_scope_only() {
    let (writer, writer_entry) = make_token(&["--name", "writer", "--role", "write"]);
    let (b1, b1_entry) = make_token(&[
        "--name",
        "b1-reader",
        "--role",
        "read",
        "--filter",
        "bucket=b1",
    ]);
    let dir = tempfile::tempdir().expect("temp dir");
    let (_node, addr) = serve(&dir, &format!("{writer_entry}\n{b1_entry}"));
    let url = format!("http://{addr}");

    for bucket in ["b1", "b2", "b1"] {
        let (ok, _, stderr) = client(
            &[
                "emit",
                &url,
                "--token",
                &writer,
                "deleteBucket",
                &format!("bucket={bucket}"),
            ],
            &[],
        );
        assert!(ok, "emit --token: {stderr}");
        assert!(!stderr.contains(&writer), "the token is not echoed");
    }
    // The scoped token, from the environment: tail gets b1's events only.
    let (ok, stdout, stderr) = client(
        &["tail", &url, "--count", "2"],
        &[("MASTER_EVENTS_TOKEN", &b1)],
    );
    assert!(ok, "tail with MASTER_EVENTS_TOKEN: {stderr}");
    let got: Vec<String> = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
        .map(|v| v["bucket"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(got, ["b1", "b1"], "{stdout}");

    // A read token does not ingest: told why, without the token.
    let (ok, _, stderr) = client(
        &["emit", &url, "--token", &b1, "deleteBucket", "bucket=b1"],
        &[],
    );
    assert!(!ok);
    assert!(
        stderr.contains("403") && stderr.contains("token"),
        "{stderr}"
    );
    assert!(!stderr.contains(&b1), "{stderr}");
    // An unknown token: 401, told to check --token.
    let (ok, _, stderr) = client(
        &[
            "emit",
            &url,
            "--token",
            "met_unknown",
            "deleteBucket",
            "bucket=x",
        ],
        &[],
    );
    assert!(!ok);
    assert!(stderr.contains("--token"), "{stderr}");
    assert!(!stderr.contains("met_unknown"), "{stderr}");
    // A user and a token at once: refused before any request.
    let (ok, _, stderr) = client(&["tail", &url, "--token", &b1, "--user", "ops:pw"], &[]);
    assert!(!ok);
    assert!(stderr.contains("not both"), "{stderr}");
}

#[test]
fn a_bad_filter_in_the_config_stops_start_up_naming_the_token_and_the_key() {
    let (token, entry) = make_token(&["--name", "ci", "--role", "read", "--filter", "bucket=b1"]);
    let entry = entry.replace("filter = \"bucket=b1\"", "filter = \"bucket=b1&typo=x\"");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("me.toml");
    std::fs::write(&path, &entry).expect("config written");
    let mut node = run_logged(
        &[
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--config".into(),
            path.display().to_string(),
        ],
        false,
    );
    assert_eq!(node.proc.wait_exit(Duration::from_secs(30)), Some(2));
    common::wait_until("the error", Duration::from_secs(10), || {
        node.log().contains("error")
    });
    let log = node.log();
    assert!(
        log.contains("tokens[0] (name \"ci\"): key filter: unknown key \"typo\""),
        "{log}"
    );
    assert!(log.contains("me.toml"), "{log}");
    assert!(!log.contains(token.trim_start_matches("met_")), "{log}");
}
