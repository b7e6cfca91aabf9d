//! The server over real TLS: ALPN (h2 and HTTP/1.1), plain HTTP refused on the TLS
//! port, server verification by the client, client certificates (mTLS), the
//! handshake under the first-request deadline, and a certificate reload that keeps
//! open streams. Certificates are made here (rcgen); each test has its own server
//! on a free loopback port and its own temporary directory.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use master_events_events::{catalog::*, Record};
use master_events_router::Router;
use master_events_server::tls::{TlsFiles, TlsReloader};
use master_events_server::ServerConfig;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use common::TestServer;

const T: Duration = Duration::from_secs(20);

/// A test certificate authority.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as DER and PEM.
struct Leaf {
    der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// A certificate for `localhost` and 127.0.0.1 signed by this CA.
    fn leaf(&self, common_name: &str) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &*self.issuer).expect("leaf cert");
        Leaf {
            der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }
}

/// A test server over TLS, and what reloads its certificate.
struct TlsServer {
    server: TestServer,
    reloader: TlsReloader,
}

impl std::ops::Deref for TlsServer {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        &self.server
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a test file");
    path
}

/// Writes `leaf` as `cert.pem` / `key.pem` in `dir` (replacing them).
fn write_leaf(dir: &Path, leaf: &Leaf) -> (PathBuf, PathBuf) {
    (
        write(dir, "cert.pem", &leaf.cert_pem),
        write(dir, "key.pem", &leaf.key_pem),
    )
}

async fn start(
    dir: &Path,
    leaf: &Leaf,
    client_ca: Option<&Ca>,
    tweak: impl FnOnce(&mut ServerConfig),
) -> TlsServer {
    let (cert, key) = write_leaf(dir, leaf);
    let tls = TlsFiles {
        cert,
        key,
        client_ca: client_ca.map(|ca| write(dir, "client-ca.pem", &ca.pem())),
    };
    let bound = TestServer::builder()
        .archive(1024)
        .config(|c| c.tls = Some(tls))
        .config(tweak)
        .bind()
        .await;
    let reloader = bound.server.tls_reloader().expect("TLS is on");
    TlsServer {
        server: bound.run(),
        reloader,
    }
}

/// How a test client connects.
struct ClientTls<'a> {
    trust: Option<&'a Ca>,
    alpn: &'a [&'a [u8]],
    identity: Option<&'a Leaf>,
}

fn connector(c: &ClientTls<'_>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    if let Some(ca) = c.trust {
        roots.add(ca.der()).expect("a root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots);
    let mut config = match c.identity {
        Some(leaf) => {
            let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("client key");
            builder
                .with_client_auth_cert(vec![leaf.der.clone()], key)
                .expect("client certificate")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = c.alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

use rustls::pki_types::pem::PemObject;

async fn connect(addr: SocketAddr, c: &ClientTls<'_>) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("a server name");
    timeout(T, connector(c).connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("TLS handshake timed out"))?
}

/// One GET over an established TLS connection, by the protocol ALPN chose.
async fn get(
    tls: TlsStream<TcpStream>,
    path: &str,
) -> Result<Response<Incoming>, Box<dyn std::error::Error + Send + Sync>> {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        let req = Request::get(format!("https://localhost{path}")).body(Empty::<Bytes>::new())?;
        Ok(sender.send_request(req).await?)
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        let req = Request::get(path)
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())?;
        Ok(sender.send_request(req).await?)
    }
}

async fn body_text(resp: Response<Incoming>) -> String {
    let bytes = timeout(T, resp.into_body().collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

async fn publish(router: &Router, bucket: &str, n: u16) {
    let recs = (0..n)
        .map(|vb| {
            Record::new(VbucketMoveDone {
                vbucket: vb,
                bucket: bucket.into(),
            })
        })
        .collect();
    router.publish_batch(recs).await.expect("published");
}

/// The next complete line of a streaming body.
async fn next_line(body: &mut Incoming, buf: &mut Vec<u8>) -> String {
    loop {
        if let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            return String::from_utf8_lossy(&line).trim().to_owned();
        }
        let frame = timeout(T, body.frame())
            .await
            .expect("a frame in time")
            .expect("the stream is open")
            .expect("a frame");
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
    }
}

#[tokio::test]
async fn h2_is_negotiated_by_alpn_and_serves_the_archive() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("test CA");
    let server = start(dir.path(), &ca.leaf("server"), None, |_| {}).await;
    publish(&server.router, "b1", 3).await;
    let client = ClientTls {
        trust: Some(&ca),
        alpn: &[b"h2", b"http/1.1"],
        identity: None,
    };
    let tls = connect(server.addr, &client).await.expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let resp = get(tls, "/diag/masterEvents?o=1")
        .await
        .expect("a response");
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let body = body_text(resp).await;
    assert_eq!(body.lines().count(), 3, "{body}");
    assert!(body.contains("\"bucket\":\"b1\""), "{body}");
}

#[tokio::test]
async fn http1_is_served_to_a_client_that_offers_only_http1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("test CA");
    let server = start(dir.path(), &ca.leaf("server"), None, |_| {}).await;
    let client = ClientTls {
        trust: Some(&ca),
        alpn: &[b"http/1.1"],
        identity: None,
    };
    let tls = connect(server.addr, &client).await.expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let resp = get(tls, "/health").await.expect("a response");
    assert_eq!(resp.version(), Version::HTTP_11);
    assert_eq!(resp.status(), 200);
    assert!(body_text(resp).await.contains("ok"));

    // A client that offers no ALPN at all speaks HTTP/1.1 too.
    let client = ClientTls {
        trust: Some(&ca),
        alpn: &[],
        identity: None,
    };
    let tls = connect(server.addr, &client).await.expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    let resp = get(tls, "/health").await.expect("a response");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_no_http_answer_and_is_closed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("test CA");
    let server = start(dir.path(), &ca.leaf("server"), None, |_| {}).await;
    let mut tcp = TcpStream::connect(server.addr).await.expect("connects");
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("writes");
    let mut got = Vec::new();
    // The server ends the connection (at most a TLS alert comes back): read to EOF.
    let _ = timeout(T, tcp.read_to_end(&mut got))
        .await
        .expect("the server closes the connection");
    assert!(
        !got.windows(5).any(|w| w == b"HTTP/"),
        "plain HTTP was answered: {:?}",
        String::from_utf8_lossy(&got)
    );
    let metrics = server.metrics.render();
    assert!(
        metrics.contains("master_events_connections_closed_total{reason=\"tls_handshake\"} 1"),
        "{metrics}"
    );

    // A plain HTTP client gets an error, not a response.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/health", server.addr))
        .timeout(T)
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
}

#[tokio::test]
async fn a_client_without_the_ca_fails_to_verify_the_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("test CA");
    let other = Ca::new("another CA");
    let server = start(dir.path(), &ca.leaf("server"), None, |_| {}).await;
    for trust in [None, Some(&other)] {
        let client = ClientTls {
            trust,
            alpn: &[b"h2"],
            identity: None,
        };
        let e = connect(server.addr, &client)
            .await
            .expect_err("an unknown issuer is refused");
        let rustls_error = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        assert!(
            matches!(
                rustls_error,
                Some(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer
                ))
            ),
            "{e:?}"
        );
    }
}

#[tokio::test]
async fn mtls_refuses_a_client_without_a_certificate_or_with_one_of_another_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("test CA");
    let clients_ca = Ca::new("clients CA");
    let other = Ca::new("another CA");
    let server = start(dir.path(), &ca.leaf("server"), Some(&clients_ca), |_| {}).await;
    let stranger = other.leaf("stranger");
    for identity in [None, Some(&stranger)] {
        let client = ClientTls {
            trust: Some(&ca),
            alpn: &[b"http/1.1"],
            identity,
        };
        // With TLS 1.3 the client may finish its side before the server refuses its
        // certificate: the refusal then ends the first request.
        let outcome = match connect(server.addr, &client).await {
            Err(e) => Err(e.to_string()),
            Ok(tls) => match timeout(T, get(tls, "/health")).await.expect("in time") {
                Ok(resp) => Ok(resp.status()),
                Err(e) => Err(e.to_string()),
            },
        };
        assert!(outcome.is_err(), "{outcome:?}");
    }
    let metrics = server.metrics.render();
    assert!(
        metrics.contains("master_events_connections_closed_total{reason=\"tls_handshake\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn mtls_accepts_a_client_certificate_signed_by_the_client_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("test CA");
    let clients_ca = Ca::new("clients CA");
    let server = start(dir.path(), &ca.leaf("server"), Some(&clients_ca), |_| {}).await;
    publish(&server.router, "b1", 2).await;
    let me = clients_ca.leaf("node-1");
    for alpn in [&[&b"h2"[..]][..], &[&b"http/1.1"[..]][..]] {
        let client = ClientTls {
            trust: Some(&ca),
            alpn,
            identity: Some(&me),
        };
        let tls = connect(server.addr, &client).await.expect("handshake");
        let resp = get(tls, "/diag/masterEvents?o=1")
            .await
            .expect("a response");
        assert_eq!(resp.status(), 200);
        assert_eq!(body_text(resp).await.lines().count(), 2);
    }
}

#[tokio::test]
async fn a_handshake_never_finished_is_closed_at_the_first_request_deadline() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("test CA");
    let deadline = Duration::from_millis(800);
    let server = start(dir.path(), &ca.leaf("server"), None, |c| {
        c.header_read_timeout = deadline;
    })
    .await;
    // One connection sends nothing, one the first bytes of a ClientHello.
    let silent = TcpStream::connect(server.addr).await.expect("connects");
    let mut partial = TcpStream::connect(server.addr).await.expect("connects");
    let opened = Instant::now();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .expect("writes");
    for mut conn in [silent, partial] {
        let mut got = Vec::new();
        let read = timeout(T, conn.read_to_end(&mut got))
            .await
            .expect("closed in time");
        // Closed (EOF or reset), not answered.
        assert!(read.map_or(true, |n| n == 0), "{got:?}");
    }
    let waited = opened.elapsed();
    assert!(
        waited >= deadline - Duration::from_millis(100),
        "{waited:?}"
    );
    assert!(waited < deadline + Duration::from_secs(5), "{waited:?}");
    // Other clients are served meanwhile and after.
    let client = ClientTls {
        trust: Some(&ca),
        alpn: &[b"h2"],
        identity: None,
    };
    let tls = connect(server.addr, &client).await.expect("handshake");
    assert_eq!(get(tls, "/health").await.expect("a response").status(), 200);
    let metrics = server.metrics.render();
    assert!(
        metrics
            .contains("master_events_connections_closed_total{reason=\"first_request_timeout\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_reload_serves_the_new_certificate_to_new_connections_and_keeps_open_streams() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("test CA");
    let old = ca.leaf("server-old");
    let server = start(dir.path(), &old, None, |_| {}).await;
    let client = ClientTls {
        trust: Some(&ca),
        alpn: &[b"h2"],
        identity: None,
    };
    let tls = connect(server.addr, &client).await.expect("handshake");
    assert_eq!(
        tls.get_ref().1.peer_certificates().map(|c| c[0].clone()),
        Some(old.der.clone())
    );
    let resp = get(tls, "/diag/masterEvents?start=now")
        .await
        .expect("a stream");
    assert_eq!(resp.status(), 200);
    let mut stream = resp.into_body();
    let mut buf = Vec::new();
    publish(&server.router, "before", 1).await;
    assert!(next_line(&mut stream, &mut buf)
        .await
        .contains("\"before\""));

    // A broken file on reload keeps the old certificate.
    write(dir.path(), "key.pem", "-----BEGIN PRIVATE KEY-----\n");
    assert!(server.reloader.reload().is_err());
    let tls = connect(server.addr, &client).await.expect("handshake");
    assert_eq!(
        tls.get_ref().1.peer_certificates().map(|c| c[0].clone()),
        Some(old.der.clone())
    );

    let new = ca.leaf("server-new");
    write_leaf(dir.path(), &new);
    server.reloader.reload().expect("reloads");
    let tls = connect(server.addr, &client).await.expect("handshake");
    assert_eq!(
        tls.get_ref().1.peer_certificates().map(|c| c[0].clone()),
        Some(new.der.clone())
    );
    assert_eq!(get(tls, "/health").await.expect("a response").status(), 200);

    // The stream opened before the reload goes on, on its connection.
    publish(&server.router, "after", 1).await;
    assert!(next_line(&mut stream, &mut buf).await.contains("\"after\""));
}
