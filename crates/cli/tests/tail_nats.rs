//! `tail nats://`: reads the JetStream stream a server's nats sink fills. Every
//! message once in order; with `--durable NAME`, a tail started again resumes after
//! the last line it printed; `--once` stops at the stream's end; flags that mean
//! something only for a master-events server are refused by name.
//!
//! Needs `nats-server` (scripts/deps.sh installs it).

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{host_port, listening_url, nats_server, run_bounded as run, spawn, stream_messages};

const STREAM: &str = "TAIL";

/// The `seq` of every line of `out`'s stdout.
fn seqs(out: &Output) -> Vec<u64> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["seq"].as_u64())
        .collect()
}

/// `serve` with a nats sink (JetStream, stream [`STREAM`]) to `url` with the extra
/// `keys` (credentials, TLS), and one event posted and acknowledged.
fn serve_one_event(dir: &std::path::Path, url: &str, keys: &str) -> common::Proc {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[[sinks]]\ntype = \"nats\"\nservers = [\"{url}\"]\n{keys}\n\
             jetstream = {{ stream = \"{STREAM}\" }}\n"
        ),
    )
    .expect("config");
    let config = config.display().to_string();
    let mut server = spawn(&["serve", "--listen", "127.0.0.1:0", "--config", &config]);
    let addr = host_port(&listening_url(&mut server));
    common::post_acknowledged(&addr, "{\"type\":\"deleteBucket\",\"bucket\":\"x\"}\n")
        .expect("acknowledged");
    server
}

/// Runs `tail` until it prints the one event (seq 1) and exits 0; fails after 30 s
/// with `what` and what the last run said.
fn read_the_event(what: &str, tail: impl Fn() -> Output) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = tail();
        if seqs(&out) == vec![1] {
            assert!(out.status.success(), "{what}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the event was not read: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_durable_tail_resumes_after_what_it_printed_and_once_stops_at_the_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = nats_server(dir.path());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[[sinks]]\ntype = \"nats\"\nservers = [\"{}\"]\njetstream = {{ stream = \"{STREAM}\" }}\n",
            nats.url
        ),
    )
    .expect("config");
    let config = config.display().to_string();
    let mut server = spawn(&["serve", "--listen", "127.0.0.1:0", "--config", &config]);
    let addr = host_port(&listening_url(&mut server));
    let body: String = (0..30)
        .map(|i| {
            if i % 3 == 0 {
                format!("{{\"type\":\"deleteBucket\",\"bucket\":\"b{i}\"}}\n")
            } else {
                format!("{{\"type\":\"vbucketMoveDone\",\"bucket\":\"b\",\"vbucket\":{i}}}\n")
            }
        })
        .collect();
    common::post_acknowledged(&addr, &body).expect("30 events acknowledged");
    let deadline = Instant::now() + Duration::from_secs(30);
    while stream_messages(&nats.url, STREAM).len() < 30 {
        assert!(
            Instant::now() < deadline,
            "the stream did not get the 30 events"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let tail = |extra: &[&str]| {
        let mut args = vec!["tail", nats.url.as_str(), "--stream", STREAM];
        args.extend_from_slice(extra);
        run(&args)
    };
    let first = tail(&["--durable", "me", "--count", "10"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(seqs(&first), (1..=10).collect::<Vec<_>>());
    let rest = tail(&["--durable", "me", "--once"]);
    assert!(
        rest.status.success(),
        "{}",
        String::from_utf8_lossy(&rest.stderr)
    );
    assert_eq!(
        seqs(&rest),
        (11..=30).collect::<Vec<_>>(),
        "resumed after line 10"
    );
    let again = tail(&["--durable", "me", "--once"]);
    assert_eq!(
        seqs(&again),
        Vec::<u64>::new(),
        "nothing new: nothing printed"
    );

    // Without a name: the whole stream; --type by subject.
    let deletes = tail(&["--once", "--type", "deleteBucket"]);
    assert_eq!(seqs(&deletes), (1..=30).step_by(3).collect::<Vec<_>>());
    let pretty = tail(&["--once", "--count", "1", "--pretty"]);
    let text = String::from_utf8_lossy(&pretty.stdout);
    assert!(text.starts_with("#1 "), "{text}");

    // What means something only for a master-events server is refused by name.
    let refused = tail(&["--since", "3"]);
    assert_eq!(refused.status.code(), Some(2));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("--since"), "{said}");
    let no_stream = run(&["tail", nats.url.as_str(), "--stream", "NOPE", "--once"]);
    assert_eq!(no_stream.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_stream.stderr).contains("NOPE"));
    server.kill9();
}

#[test]
fn a_token_protected_server_is_read_with_the_nats_token_and_a_wrong_one_is_refused_unshown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = common::nats_server_with(dir.path(), &["--auth", "s3cret-nats-token"]);
    let mut server = serve_one_event(dir.path(), &nats.url, "token = \"s3cret-nats-token\"");
    read_the_event("with the token", || {
        run(&[
            "tail",
            &nats.url,
            "--stream",
            STREAM,
            "--once",
            "--nats-token",
            "s3cret-nats-token",
        ])
    });

    let refused = run(&[
        "tail",
        &nats.url,
        "--stream",
        STREAM,
        "--once",
        "--nats-token",
        "not-the-token-42",
    ]);
    assert_eq!(refused.status.code(), Some(2));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("cannot connect to the NATS server"), "{said}");
    assert!(
        !said.contains("not-the-token-42"),
        "the token is not shown: {said}"
    );
    let none = run(&["tail", &nats.url, "--stream", STREAM, "--once"]);
    assert_eq!(none.status.code(), Some(2), "no credentials: refused");
    server.kill9();
}

#[test]
fn over_mutual_tls_the_ca_and_a_client_certificate_read_and_without_either_it_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = master_events_testpki::TestPki::with_server_and_client("tail");
    let (cert, key, ca) = (
        pki.arg("server.pem"),
        pki.arg("server-key.pem"),
        pki.arg("ca.pem"),
    );
    let nats = common::nats_server_with(
        dir.path(),
        &[
            "--tlsverify",
            "--tlscert",
            &cert,
            "--tlskey",
            &key,
            "--tlscacert",
            &ca,
        ],
    );
    let mut server = serve_one_event(
        dir.path(),
        &nats.url,
        &format!(
            "tls_ca_file = {ca:?}\ntls_cert_file = {:?}\ntls_key_file = {:?}",
            pki.arg("client.pem"),
            pki.arg("client-key.pem"),
        ),
    );
    let (client, client_key) = (pki.arg("client.pem"), pki.arg("client-key.pem"));
    let with_tls = |extra: &[&str]| {
        let mut args = vec!["tail", nats.url.as_str(), "--stream", STREAM, "--once"];
        args.extend_from_slice(extra);
        run(&args)
    };
    let full = [
        "--cacert",
        ca.as_str(),
        "--cert",
        client.as_str(),
        "--key",
        client_key.as_str(),
    ];
    read_the_event("over TLS", || with_tls(&full));
    // Without the client certificate the server refuses the handshake; without the
    // CA, the server's certificate is not trusted: either way, exit 2 and why.
    for (what, args) in [("no client certificate", &full[..2]), ("no CA", &full[2..])] {
        let out = with_tls(args);
        assert_eq!(out.status.code(), Some(2), "{what}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("cannot connect to the NATS server"),
            "{what}: {said}"
        );
        assert!(seqs(&out).is_empty(), "{what}: nothing read");
    }
    server.kill9();
}

#[test]
fn an_operator_mode_server_is_fed_and_read_with_a_creds_file_and_a_stranger_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let operator = master_events_testpki::nats::NatsOperator::new(dir.path());
    let server_config = dir.path().join("nats.conf");
    std::fs::write(&server_config, &operator.server_config).expect("nats config");
    let nats = common::nats_server_with(dir.path(), &["-c", &server_config.display().to_string()]);
    let creds = operator.creds.display().to_string();
    let mut server = serve_one_event(dir.path(), &nats.url, &format!("creds_file = {creds:?}"));
    let tail = |creds: &str| {
        run(&[
            "tail",
            &nats.url,
            "--stream",
            STREAM,
            "--once",
            "--nats-creds",
            creds,
        ])
    };
    read_the_event("with the creds file", || tail(&creds));
    let stranger = operator.stranger_creds.display().to_string();
    let refused = tail(&stranger);
    assert_eq!(refused.status.code(), Some(2));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("cannot connect to the NATS server"), "{said}");
    let seed = std::fs::read_to_string(&operator.stranger_creds).expect("creds");
    let seed_line = seed.lines().find(|l| l.starts_with("SU")).expect("a seed");
    assert!(!said.contains(seed_line), "the seed is not shown: {said}");
    server.kill9();
}
