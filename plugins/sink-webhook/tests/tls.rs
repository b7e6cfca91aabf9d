//! The `webhook` sink over HTTPS: a receiver with a certificate of a test CA (made
//! here with rcgen) gets the batches when `ca_file` names that CA, and none when
//! the sink does not trust it; `ca_file` errors name the file.

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use master_events_events::catalog::DeleteBucket;
use master_events_events::Record;
use master_events_router::{Cursor, Router, RouterConfig, Sink, SinkInput};
use master_events_sink_webhook::{WebhookConfig, WebhookError, WebhookSink};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

fn new_ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "test CA");
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
}

/// An HTTPS receiver on loopback: its certificate is signed by `ca`; it keeps
/// every body it is sent.
struct Receiver {
    url: String,
    body: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(ca: &CertifiedIssuer<'static, KeyPair>) -> Receiver {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("params")
            .signed_by(&key, &**ca)
            .expect("cert");
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .expect("server config");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let body = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&body);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, kept) = (acceptor.clone(), Arc::clone(&kept));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req: Request<Incoming>| {
                        let kept = Arc::clone(&kept);
                        async move {
                            if let Ok(b) = req.into_body().collect().await {
                                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                                kept.extend_from_slice(&b.to_bytes());
                            }
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Receiver {
            url: format!("https://127.0.0.1:{}/events", addr.port()),
            body,
            task,
        }
    }

    fn lines(&self) -> usize {
        let body = self.body.lock().unwrap_or_else(|e| e.into_inner());
        body.iter().filter(|b| **b == b'\n').count()
    }
}

/// Runs the sink against a router holding `n` events; returns what stops it.
async fn run(
    config: WebhookConfig,
    n: u64,
) -> (
    Router,
    CancellationToken,
    Arc<master_events_sink_webhook::Counters>,
) {
    let router = Router::start(RouterConfig::default());
    router
        .publish_batch(
            (0..n)
                .map(|i| {
                    Record::new(DeleteBucket {
                        bucket: format!("b{i}").into(),
                    })
                })
                .collect(),
        )
        .await
        .expect("published");
    let sink = WebhookSink::new(config).expect("valid config");
    let counters = sink.counters();
    let cancel = CancellationToken::new();
    let input = SinkInput::new(
        "webhook",
        router.subscribe(Cursor::Oldest),
        None,
        cancel.clone(),
    );
    tokio::spawn(Box::new(sink).run(input));
    (router, cancel, counters)
}

fn config(url: &str, ca_file: Option<&Path>) -> WebhookConfig {
    let mut config = WebhookConfig::to_url(url);
    config.ca_file = ca_file.map(Path::to_path_buf);
    config.linger_ms = 5;
    config.retry_initial_ms = 20;
    config.retry_max_ms = 200;
    config.shutdown_timeout_ms = 100;
    config
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_reach_an_https_receiver_whose_ca_is_the_ca_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = new_ca();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write the CA");
    let receiver = Receiver::start(&ca).await;
    let (router, cancel, counters) = run(config(&receiver.url, Some(&ca_file)), 20).await;
    wait_until("all 20 delivered over https", || receiver.lines() == 20).await;
    assert_eq!(counters.snapshot().failed_attempts, 0);
    router.shutdown().await;
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_receiver_the_sink_does_not_trust_is_sent_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = new_ca();
    let other = new_ca();
    let other_file = dir.path().join("other.pem");
    std::fs::write(&other_file, other.pem()).expect("write a CA");
    let receiver = Receiver::start(&ca).await;
    // Trusting another CA, and (without ca_file) the system's trust store.
    for ca_file in [Some(other_file.as_path()), None] {
        let (router, cancel, counters) = run(config(&receiver.url, ca_file), 5).await;
        wait_until("failed attempts", || {
            counters.snapshot().failed_attempts >= 2
        })
        .await;
        assert_eq!(counters.snapshot().delivered, 0);
        router.shutdown().await;
        cancel.cancel();
    }
    assert_eq!(receiver.lines(), 0);
}

#[test]
fn a_ca_file_that_cannot_be_used_is_refused_at_load_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing-ca.pem");
    let e = WebhookSink::new(config("https://127.0.0.1:1/", Some(&missing)))
        .expect_err("a missing file is refused");
    assert!(matches!(e, WebhookError::CaFile(_)), "{e}");
    assert!(e.to_string().contains("missing-ca.pem"), "{e}");

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificate here\n").expect("write");
    let e = WebhookSink::new(config("https://127.0.0.1:1/", Some(&empty)))
        .expect_err("a file without a certificate is refused");
    assert!(e.to_string().contains("empty.pem"), "{e}");

    let e = config("http://127.0.0.1:1/", Some(&empty))
        .check()
        .expect_err("ca_file with http:// is refused");
    assert!(e.to_string().contains("https://"), "{e}");
}
