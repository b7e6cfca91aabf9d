//! `serve` over TLS, end to end with the binary: the `[server]` TLS keys and the
//! `--tls-*` flags, `tail` and `emit` with `--cacert` (and without: not trusted),
//! and SIGHUP reloading the certificate while an open stream keeps going.
//! Certificates come from master-events-testpki; each test has its own temporary directory
//! and a free port; every process is killed on drop.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::{wait_until, Proc};
use master_events_testpki::TestPki;
use rustls::pki_types::{CertificateDer, ServerName};

const WAIT: Duration = Duration::from_secs(30);

/// A test CA and the files of a server certificate it signed.
struct Pki(TestPki);

impl Pki {
    fn new() -> Pki {
        Pki(TestPki::new())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path(name)
    }

    fn arg(&self, name: &str) -> String {
        self.0.arg(name)
    }

    /// Writes a new server certificate (`cert.pem`, `key.pem`) named `cn`; returns
    /// its DER.
    fn server_cert(&self, cn: &str) -> CertificateDer<'static> {
        CertificateDer::from(
            self.0
                .issue("cert.pem", "key.pem", cn, &["localhost", "127.0.0.1"]),
        )
    }
}

/// Starts `master-events ARGS` with stderr in `log` (RUST_LOG=info); returns it
/// with the URL of its first line, which must be `listening on https://ADDR`.
fn serve_tls(args: &[String], log: &Path) -> (Proc, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_master-events"))
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("MASTER_EVENTS_USERS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("binary starts");
    let mut p = Proc::new(child);
    let stdout = p.child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let _ = tx.send(line);
        let mut rest = Vec::new();
        let _ = stdout.read_to_end(&mut rest);
    });
    let line = rx.recv_timeout(WAIT).expect("the first line in time");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line is {line:?}"))
        .to_owned();
    assert!(url.starts_with("https://"), "{line}");
    (p, url)
}

/// Runs `master-events ARGS` to its end (within [`WAIT`]).
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_master-events"))
        .args(args)
        .env_remove("MASTER_EVENTS_AUTH")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let (tx, rx) = mpsc::channel();
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        let _ = stderr.read_to_end(&mut err);
        let _ = tx.send((out, err));
    });
    let mut proc = Proc::new(child);
    let (stdout, stderr) = rx.recv_timeout(WAIT).expect("the command ends in time");
    let status = proc.child.wait().expect("exit status");
    Output {
        status,
        stdout,
        stderr,
    }
}

/// A TLS client connection of the test's own, trusting the test CA.
fn tls_connect(addr: &str, pki: &Pki) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(pki.0.ca_der()))
        .expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let tcp = TcpStream::connect(addr).expect("connects");
    tcp.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("handshake");
    }
    tls
}

fn served_cert(addr: &str, pki: &Pki) -> CertificateDer<'static> {
    let tls = tls_connect(addr, pki);
    tls.conn
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a certificate")
        .clone()
        .into_owned()
}

/// Reads `stream` until `needle` has arrived (the stream stays open).
fn read_until(
    stream: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    seen: &mut Vec<u8>,
    needle: &str,
) {
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(seen).contains(needle) {
        let n = stream.read(&mut buf).expect("the stream is still open");
        assert!(n > 0, "the stream ended before {needle}");
        seen.extend_from_slice(&buf[..n]);
    }
}

fn emit(url: &str, pki: &Pki, bucket: &str) {
    let out = run(&[
        "emit",
        url,
        "--cacert",
        &pki.arg("ca.pem"),
        "deleteBucket",
        &format!("bucket={bucket}"),
    ]);
    assert!(
        out.status.success(),
        "emit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn with_client_certificates_required_our_clients_show_theirs_and_without_one_are_told_to() {
    let pki = Pki::new();
    pki.server_cert("server");
    // A client certificate signed by the same CA.
    pki.0
        .issue("client.pem", "client-key.pem", "ops-client", &[]);
    let (_server, url) = serve_tls(
        &[
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--tls-cert".into(),
            pki.arg("cert.pem"),
            "--tls-key".into(),
            pki.arg("key.pem"),
            "--tls-client-ca".into(),
            pki.arg("ca.pem"),
        ],
        &pki.path("serve.log"),
    );
    let (ca, client, client_key) = (
        pki.arg("ca.pem"),
        pki.arg("client.pem"),
        pki.arg("client-key.pem"),
    );
    let with_cert = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--cacert", &ca, "--cert", &client, "--key", &client_key]);
        run(&all)
    };
    let out = with_cert(&["emit", &url, "deleteBucket", "bucket=mtls"]);
    assert!(
        out.status.success(),
        "emit with a client certificate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = with_cert(&["tail", &url, "--count", "1"]);
    assert!(
        out.status.success(),
        "tail with a client certificate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"bucket\":\"mtls\""));

    // Without one: refused, and told what to give.
    let out = run(&["emit", &url, "--cacert", &ca, "deleteBucket", "bucket=no"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("requires a client certificate") && stderr.contains("--cert"),
        "{stderr}"
    );
    // --cert without --key is a usage error naming --key.
    let out = run(&["tail", &url, "--cacert", &ca, "--cert", &client]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--key"), "{stderr}");
}

#[test]
fn tail_and_emit_with_cacert_talk_to_a_server_set_up_by_the_config_file() {
    let pki = Pki::new();
    pki.server_cert("server");
    let config = pki.path("me.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = {:?}\ntls_key = {:?}\n",
            pki.arg("cert.pem"),
            pki.arg("key.pem")
        ),
    )
    .expect("write config");
    let (_server, url) = serve_tls(
        &[
            "serve".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        &pki.path("serve.log"),
    );
    emit(&url, &pki, "first");
    // Live: the archive's event, then one sent while tail waits.
    let tail = std::thread::spawn({
        let (url, ca) = (url.clone(), pki.arg("ca.pem"));
        move || run(&["tail", &url, "--cacert", &ca, "--count", "2"])
    });
    emit(&url, &pki, "second");
    let out = tail.join().expect("tail thread");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tail: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].contains("\"bucket\":\"first\""), "{stdout}");
    assert!(lines[1].contains("\"bucket\":\"second\""), "{stdout}");
}

#[test]
fn clients_without_the_ca_say_the_certificate_is_not_trusted_and_plain_http_is_told_to_use_https() {
    let pki = Pki::new();
    pki.server_cert("server");
    let (_server, url) = serve_tls(
        &[
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--tls-cert".into(),
            pki.arg("cert.pem"),
            "--tls-key".into(),
            pki.arg("key.pem"),
        ],
        &pki.path("serve.log"),
    );
    for args in [
        vec!["tail", url.as_str(), "--once"],
        vec!["emit", url.as_str(), "deleteBucket", "bucket=b"],
        vec!["report", "moves", url.as_str()],
    ] {
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
        assert!(stderr.contains("not trusted"), "{args:?}: {stderr}");
        assert!(stderr.contains("--cacert"), "{args:?}: {stderr}");
    }
    // Plain http:// to the TLS port gets no HTTP answer, and the client says what
    // to do.
    let plain = url.replace("https://", "http://");
    for args in [
        vec!["tail", plain.as_str(), "--once"],
        vec!["emit", plain.as_str(), "deleteBucket", "bucket=b"],
    ] {
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
        assert!(
            stderr.contains("if the server serves TLS, use https://"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn serve_refuses_a_certificate_without_its_key_and_names_a_missing_file() {
    let pki = Pki::new();
    pki.server_cert("server");
    let out = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        &pki.arg("cert.pem"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
    let out = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        &pki.arg("cert.pem"),
        "--tls-key",
        &pki.arg("absent-key.pem"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent-key.pem"));
}

#[test]
fn sighup_serves_a_new_certificate_to_new_connections_while_an_open_stream_keeps_receiving() {
    let pki = Pki::new();
    let old = pki.server_cert("server-old");
    let log = pki.path("serve.log");
    let (server, url) = serve_tls(
        &[
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--tls-cert".into(),
            pki.arg("cert.pem"),
            "--tls-key".into(),
            pki.arg("key.pem"),
        ],
        &log,
    );
    let addr = url.trim_start_matches("https://").to_owned();

    // A stream opened on the first certificate.
    let mut stream = tls_connect(&addr, &pki);
    assert_eq!(
        stream.conn.peer_certificates().map(|c| c[0].clone()),
        Some(old.clone())
    );
    stream
        .write_all(b"GET /diag/masterEvents?heartbeat=0 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("request");
    let mut seen = Vec::new();
    emit(&url, &pki, "before-reload");
    read_until(&mut stream, &mut seen, "before-reload");

    let new = pki.server_cert("server-new");
    assert_ne!(new, old);
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(server.child.id() as i32, libc::SIGHUP) };
    assert_eq!(rc, 0);
    wait_until("new connections get the new certificate", WAIT, || {
        served_cert(&addr, &pki) == new
    });

    // The stream from before the reload goes on, on the same connection.
    emit(&url, &pki, "after-reload");
    read_until(&mut stream, &mut seen, "after-reload");

    // A broken key file on SIGHUP keeps the certificate in use, with an ERROR that
    // names the file and shows none of it.
    std::fs::write(
        pki.path("key.pem"),
        "-----BEGIN PRIVATE KEY-----\nU0VDUkVUS0VZTUFURVJJQUw=\n",
    )
    .expect("write a broken key");
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(server.child.id() as i32, libc::SIGHUP) };
    assert_eq!(rc, 0);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("the failed reload is logged", WAIT, || {
        log_text().contains("TLS reload failed")
    });
    let text = log_text();
    let failed = text
        .lines()
        .find(|l| l.contains("TLS reload failed"))
        .expect("the line");
    assert!(failed.contains("ERROR"), "{failed}");
    assert!(failed.contains("key.pem"), "{failed}");
    assert!(!text.contains("U0VDUkVUS0VZTUFURVJJQUw"), "{text}");
    assert_eq!(served_cert(&addr, &pki), new);
    emit(&url, &pki, "after-failed-reload");
    read_until(&mut stream, &mut seen, "after-failed-reload");
}
