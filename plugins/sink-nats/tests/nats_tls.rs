//! The `nats` sink over TLS, against a real `nats-server` that verifies clients
//! (certificates from master-events-testpki): with `tls_ca_file` and a client certificate
//! every event arrives, in order; without the certificate, or with `tls_required`
//! against a server without TLS, nothing is delivered and the sink says it cannot
//! connect (health and a WARN line); TLS options that cannot be used are refused,
//! naming the key and the path, never what a file holds.

mod common;

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use common::{seqs, wait_until, ClientTls, NatsServer, NatsTarget, Running};
use master_events_router::SinkState;
use master_events_sink_nats::{NatsConfig, NatsError, NatsSink};
use master_events_testpki::TestPki;

/// Everything logged by this test binary (tests pick their lines by server port).
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        struct Capture;
        impl Write for Capture {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                logs()
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let _ = tracing_subscriber::fmt()
            .with_writer(|| Capture)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .try_init();
        Mutex::new(Vec::new())
    })
}

/// The log lines that mention `needle`.
fn logged(needle: &str) -> Vec<String> {
    let bytes = logs().lock().unwrap_or_else(|e| e.into_inner()).clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// A test CA, a server certificate for 127.0.0.1 and localhost, and a client
/// certificate, as PEM files in a temp dir.
struct Pki(TestPki);

impl Pki {
    fn new() -> Pki {
        Pki(TestPki::with_server_and_client("master-events"))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path(name)
    }

    /// A nats-server that requires TLS and a client certificate signed by the CA.
    fn server(&self) -> NatsServer {
        NatsServer::start_with_config(&format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n  timeout: 5\n}}\n",
            self.path("server.pem"),
            self.path("server-key.pem"),
            self.path("ca.pem"),
        ))
    }

    /// The client side: the CA, the client certificate and its key.
    fn client(&self) -> ClientTls {
        ClientTls {
            ca_file: self.path("ca.pem"),
            cert_file: self.path("client.pem"),
            key_file: self.path("client-key.pem"),
        }
    }

    /// The sink's config for `url`, trusting the CA and presenting the client
    /// certificate.
    fn sink_config(&self, url: String) -> NatsConfig {
        let mut config = NatsConfig::to_server(url);
        config.tls_required = true;
        config.tls_ca_file = Some(self.path("ca.pem"));
        config.tls_cert_file = Some(self.path("client.pem"));
        config.tls_key_file = Some(self.path("client-key.pem"));
        config
    }
}

/// `refused` cannot connect to `target`'s server: once its health says so (with
/// the server's address, also in a WARN line), `control` publishes the same seqs
/// and the subscriber gets exactly those, none from `refused`.
async fn assert_refused_while_the_control_delivers(
    target: &NatsTarget,
    mut refused: NatsConfig,
    control: NatsConfig,
) {
    let address = target.server.url().replace("nats://", "");
    refused.shutdown_timeout_ms = 200;
    let refused = Running::start(refused, None);
    refused.publish(0, 10).await;
    wait_until("the sink's health says it cannot connect", || {
        let now = refused.health.snapshot();
        now.state == SinkState::Retrying
            && now.reason.as_deref().is_some_and(|r| {
                r.contains("cannot connect to the NATS server") && r.contains(&address)
            })
    })
    .await;
    wait_until("a WARN line says it cannot connect", || {
        logged(&address)
            .iter()
            .any(|l| l.contains("WARN") && l.contains("cannot connect to the NATS server"))
    })
    .await;

    let control = Running::start(control, None);
    control.publish(0, 10).await;
    wait_until("the control sink's 10 events received", || {
        target.messages().len() >= 10
    })
    .await;
    control.stop().await;
    assert_eq!(
        seqs(&target.messages()),
        (1..=10).collect::<Vec<_>>(),
        "only the control sink's events, once each"
    );
    let now = refused.health.snapshot();
    assert_eq!(now.state, SinkState::Retrying, "{:?}", now.reason);
    refused.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_ca_and_a_client_certificate_every_event_arrives_in_order_over_tls() {
    let pki = Pki::new();
    let target = NatsTarget::over_tls(pki.server(), pki.client()).await;
    let running = Running::start(pki.sink_config(target.server.url()), None);
    for batch in 0..4 {
        running.publish(batch * 250, 250).await;
    }
    wait_until("1000 received over TLS", || target.messages().len() >= 1000).await;
    assert_eq!(running.health.state(), SinkState::Ok);
    running.stop().await;
    let messages = target.messages();
    assert_eq!(seqs(&messages), (1..=1000).collect::<Vec<_>>());
    assert!(messages
        .iter()
        .all(|(subject, _)| subject.starts_with("master_events.")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_url_with_the_ca_and_a_client_certificate_delivers_too() {
    let pki = Pki::new();
    let target = NatsTarget::over_tls(pki.server(), pki.client()).await;
    let mut config = pki.sink_config(target.server.tls_url());
    config.tls_required = false;
    let running = Running::start(config, None);
    running.publish(0, 20).await;
    wait_until("20 received over TLS", || target.messages().len() >= 20).await;
    running.stop().await;
    assert_eq!(seqs(&target.messages()), (1..=20).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_client_certificate_nothing_is_delivered_and_the_sink_says_it_cannot_connect() {
    logs();
    let pki = Pki::new();
    let target = NatsTarget::over_tls(pki.server(), pki.client()).await;
    let mut refused = pki.sink_config(target.server.url());
    refused.tls_cert_file = None;
    refused.tls_key_file = None;
    let control = pki.sink_config(target.server.url());
    assert_refused_while_the_control_delivers(&target, refused, control).await;
    // The key's PEM body is never logged.
    let key = std::fs::read_to_string(pki.path("client-key.pem")).expect("key");
    let body = key.lines().nth(1).expect("a line of the key");
    assert!(logged(body).is_empty(), "the private key was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_never_talks_plain_text_to_a_server_without_tls() {
    logs();
    let pki = Pki::new();
    let target = NatsTarget::start().await;
    let mut refused = NatsConfig::to_server(target.server.url());
    refused.tls_required = true;
    refused.tls_ca_file = Some(pki.path("ca.pem"));
    let control = NatsConfig::to_server(target.server.url());
    assert_refused_while_the_control_delivers(&target, refused, control).await;
}

#[test]
fn a_client_certificate_without_its_key_is_refused_naming_both_keys() {
    for keys in [
        "tls_cert_file = \"/etc/master-events/client.pem\"",
        "tls_key_file = \"/etc/master-events/client-key.pem\"",
    ] {
        let text = format!("[[sinks]]\ntype = \"nats\"\n{keys}\n");
        let err = master_events_router::load_config(&text).expect_err(keys);
        let message = err.to_string();
        assert!(
            message.contains("tls_cert_file") && message.contains("tls_key_file"),
            "{keys}: {message}"
        );
    }
}

#[test]
fn tls_files_that_cannot_be_used_are_refused_naming_the_key_and_the_path_not_the_content() {
    let pki = Pki::new();
    let missing = pki.path("missing-ca.pem");
    let mut config = pki.sink_config("nats://127.0.0.1:4222".into());
    config.tls_ca_file = Some(missing.clone());
    let e = NatsSink::new(config).expect_err("a missing CA file is refused");
    assert!(matches!(e, NatsError::Tls(_)), "{e}");
    let message = e.to_string();
    assert!(
        message.starts_with("tls_ca_file: ") && message.contains(&missing.display().to_string()),
        "{message}"
    );

    let not_a_key = pki.path("not-a-key.pem");
    std::fs::write(
        &not_a_key,
        "-----BEGIN PRIVATE KEY-----\nhunter2-not-base64!\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let mut config = pki.sink_config("nats://127.0.0.1:4222".into());
    config.tls_key_file = Some(not_a_key.clone());
    let message = NatsSink::new(config)
        .expect_err("a key file without a key is refused")
        .to_string();
    assert!(
        message.starts_with("tls_key_file: ")
            && message.contains(&not_a_key.display().to_string())
            && !message.contains("hunter2"),
        "{message}"
    );

    // A key where the certificate should be: no certificate in it.
    let mut config = pki.sink_config("nats://127.0.0.1:4222".into());
    config.tls_cert_file = Some(pki.path("client-key.pem"));
    let message = NatsSink::new(config)
        .expect_err("a certificate file without a certificate is refused")
        .to_string();
    assert!(
        message.starts_with("tls_cert_file: ") && message.contains("holds no certificate"),
        "{message}"
    );
    let key = std::fs::read_to_string(pki.path("client-key.pem")).expect("key");
    let body = key.lines().nth(1).expect("a line of the key");
    assert!(!message.contains(body), "{message}");

    assert!(NatsSink::new(pki.sink_config("nats://127.0.0.1:4222".into())).is_ok());
}

#[test]
fn the_config_schema_describes_the_tls_keys() {
    let registration = master_events_router::registered_sinks()
        .into_iter()
        .find(|r| r.name == "nats")
        .expect("registered");
    let schema = (registration.config_schema)();
    let properties = schema.get("properties").expect("properties");
    for key in [
        "tls_required",
        "tls_ca_file",
        "tls_cert_file",
        "tls_key_file",
    ] {
        let description = properties[key]["description"].as_str().unwrap_or_default();
        assert!(!description.is_empty(), "{key} has no description");
    }
}
