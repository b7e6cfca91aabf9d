//! TLS for the HTTP server: the certificate it presents, its reload, client
//! certificates (mTLS), and the handshake of each connection.
//!
//! Owns: reading the PEM files ([`TlsFiles`]), the rustls server configuration (the
//! `ring` provider; ALPN `h2`, then `http/1.1`), the certificate in use (a resolver
//! holding an `Arc` that [`TlsReloader::reload`] swaps) and the handshake of an
//! accepted connection (`Tls::accept`).
//!
//! Promises:
//! - A certificate and its key are checked together before they are used: a key that
//!   does not belong to the certificate's public key is refused, at start-up and at a
//!   reload alike.
//! - A reload that fails (a missing, unreadable or invalid file, a key of another
//!   certificate) keeps the certificate in use and logs an ERROR naming the file; a
//!   reload that succeeds is used by every handshake after it. Connections already
//!   open keep their session, so no stream is cut by a reload.
//! - No error, log line or `Debug` output carries key material or a file's text:
//!   errors name the file and what is wrong with it, never what it holds.
//! - The handshake runs under the connection's first-request deadline (counted from
//!   accept, `conn::Activity`): a client that connects and never finishes
//!   it is closed then (`first_request_timeout`). A failed handshake (plain HTTP sent
//!   to the TLS port, an untrusted or missing client certificate) closes the
//!   connection (`tls_handshake` in `master_events_connections_closed`); nothing is
//!   answered in plain text.
//! - With a client CA, a client without a certificate signed by it fails the
//!   handshake: no request of it reaches any route, `/health` included.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::conn::Driver;

/// The files TLS is set up from (PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain the server presents, the server's own certificate first.
    pub cert: PathBuf,
    /// The private key of the first certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, every client must present a certificate signed by one of the CA
    /// certificates in this file (mTLS). Read at start only.
    pub client_ca: Option<PathBuf>,
}

/// Which of the files an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFile {
    /// `--tls-cert` / `tls_cert`.
    Certificate,
    /// `--tls-key` / `tls_key`.
    Key,
    /// `--tls-client-ca` / `tls_client_ca`.
    ClientCa,
}

impl fmt::Display for TlsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsFile::Certificate => "TLS certificate file",
            TlsFile::Key => "TLS key file",
            TlsFile::ClientCa => "TLS client CA file",
        })
    }
}

/// Why TLS could not be set up from the files. Each names the file; none shows
/// what the file holds.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read the {file} {}: {source}", path.display())]
    Read {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid PEM.
    #[error("the {file} {} is not valid PEM: {reason}", path.display())]
    Pem {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// What is wrong (never the file's text).
        reason: &'static str,
    },
    /// The file holds no PEM block of the kind wanted.
    #[error("the {file} {} holds no {wanted}", path.display())]
    Empty {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// What was looked for, e.g. `certificate (-----BEGIN CERTIFICATE-----)`.
        wanted: &'static str,
    },
    /// The private key is of a kind this server cannot sign with, or damaged.
    #[error("the TLS key file {} holds a private key this server cannot use (RSA, ECDSA P-256/P-384 and Ed25519 keys are supported)", path.display())]
    UnusableKey {
        /// The key file.
        path: PathBuf,
    },
    /// The private key is not the key of the certificate.
    #[error("the TLS key file {} does not hold the private key of the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate could not be parsed or used.
    #[error("the TLS certificate file {} holds a certificate this server cannot use: {reason}", path.display())]
    BadCertificate {
        /// The certificate file.
        path: PathBuf,
        /// What rustls said of it (no key material).
        reason: String,
    },
    /// The client CA file holds no certificate usable as a trust anchor.
    #[error("the TLS client CA file {} cannot be used: {reason}", path.display())]
    BadClientCa {
        /// The client CA file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The certificate the server presents: the same to every client, swapped as a
/// whole by a reload.
struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertResolver {
    fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = key;
    }
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CertResolver { .. }")
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Reloads the certificate and key from their files (on SIGHUP, say). Cheap to
/// clone.
#[derive(Clone)]
pub struct TlsReloader {
    files: Arc<TlsFiles>,
    resolver: Arc<CertResolver>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for TlsReloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsReloader")
            .field("cert", &self.files.cert)
            .field("key", &self.files.key)
            .finish_non_exhaustive()
    }
}

impl TlsReloader {
    /// Reads the certificate and key files again. On success new handshakes present
    /// the new certificate (logged at INFO); on failure the certificate in use stays
    /// and the error, which names the file, is logged at ERROR and returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        match load_certified_key(&self.files, &self.provider) {
            Ok(key) => {
                self.resolver.set(Arc::new(key));
                tracing::info!(
                    cert = %self.files.cert.display(),
                    key = %self.files.key.display(),
                    "reloaded the TLS certificate: new connections get it"
                );
                Ok(())
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "TLS reload failed: still serving the certificate loaded before"
                );
                Err(e)
            }
        }
    }
}

/// TLS set up for a server: the acceptor of its connections and the certificate it
/// presents (see the module's promises). Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    reloader: TlsReloader,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("reloader", &self.reloader)
            .finish_non_exhaustive()
    }
}

/// The crypto provider every TLS configuration of the server uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// Reads the files and builds the server's TLS configuration: the certificate
    /// and key (checked to belong together), ALPN `h2` and `http/1.1`, and client
    /// certificates required when `client_ca` is set.
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        let provider = provider();
        let key = load_certified_key(files, &provider)?;
        let resolver = Arc::new(CertResolver {
            current: RwLock::new(Arc::new(key)),
        });
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::BadCertificate {
                path: files.cert.clone(),
                reason: e.to_string(),
            })?;
        let builder = match &files.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let roots = load_client_ca(path)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(|e| TlsError::BadClientCa {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(Arc::clone(&resolver) as _);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            reloader: TlsReloader {
                files: Arc::new(files.clone()),
                resolver,
                provider,
            },
        })
    }

    /// What reloads the certificate and key.
    pub fn reloader(&self) -> TlsReloader {
        self.reloader.clone()
    }

    /// Runs the handshake of an accepted connection, within its first-request
    /// deadline. `None` when it failed or took too long; the connection is then
    /// closed (dropped) and the close counted.
    pub(crate) async fn accept(
        &self,
        stream: TcpStream,
        driver: &Driver,
    ) -> Option<TlsStream<TcpStream>> {
        let deadline = driver.activity.first_deadline(driver.first_request);
        match tokio::time::timeout_at(deadline, self.acceptor.accept(stream)).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                driver.metrics.connection_closed("tls_handshake");
                tracing::debug!(client = %driver.client, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                driver.metrics.connection_closed("first_request_timeout");
                if let Some(n) = driver.guards.warn_first_request.note() {
                    tracing::warn!(
                        client = %driver.client,
                        closed = n,
                        timeout_secs = driver.first_request.as_secs_f64(),
                        "closed connections that sent no complete request in time (TLS handshake unfinished)"
                    );
                }
                None
            }
        }
    }
}

fn read(file: TlsFile, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        file,
        path: path.to_owned(),
        source,
    })
}

/// What is wrong with a PEM file, without quoting it (pki-types' own messages
/// quote the offending line).
fn pem_reason(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a block has no END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a block is not valid base64",
        pem::Error::SectionTooLarge => "a block is larger than 256 MB",
        _ => "it cannot be read as PEM",
    }
}

fn load_certs(file: TlsFile, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(file, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            file,
            path: path.to_owned(),
            reason: pem_reason(&e),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            file,
            path: path.to_owned(),
            wanted: "certificate (-----BEGIN CERTIFICATE-----)",
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(TlsFile::Key, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::Empty {
            file: TlsFile::Key,
            path: path.to_owned(),
            wanted: "private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)",
        },
        e => TlsError::Pem {
            file: TlsFile::Key,
            path: path.to_owned(),
            reason: pem_reason(&e),
        },
    })
}

/// The certificate chain and its key, checked to belong together.
fn load_certified_key(
    files: &TlsFiles,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let certs = load_certs(TlsFile::Certificate, &files.cert)?;
    let key = load_key(&files.key)?;
    let signing =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|_| TlsError::UnusableKey {
                path: files.key.clone(),
            })?;
    let certified = CertifiedKey::new(certs, signing);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            })
        }
        // The key cannot tell its public half: nothing to compare.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(e) => Err(TlsError::BadCertificate {
            path: files.cert.clone(),
            reason: e.to_string(),
        }),
    }
}

fn load_client_ca(path: &Path) -> Result<RootCertStore, TlsError> {
    let certs = load_certs(TlsFile::ClientCa, path)?;
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError::BadClientCa {
            path: path.to_owned(),
            reason: format!("none of its {ignored} certificates can be parsed"),
        });
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write a test file");
        path
    }

    #[test]
    fn errors_name_the_file_and_never_quote_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let secret_line = "-----BEGIN PRIVATE KEY-----\nTOPSECRETKEYMATERIAL!!\n";
        let key = write(dir.path(), "key.pem", secret_line);
        let cert = write(dir.path(), "cert.pem", "not a certificate\n");
        let files = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: None,
        };
        let e = Tls::load(&files).expect_err("no certificate");
        let shown = e.to_string();
        assert!(shown.contains("cert.pem"), "{shown}");
        assert!(shown.contains("no certificate"), "{shown}");

        let good_cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("a test certificate");
        std::fs::write(&cert, good_cert.cert.pem()).expect("write cert");
        let e = Tls::load(&files).expect_err("a broken key");
        let shown = format!("{e} {e:?}");
        assert!(shown.contains("key.pem"), "{shown}");
        assert!(!shown.contains("TOPSECRET"), "{shown}");

        let missing = TlsFiles {
            key: dir.path().join("absent.pem"),
            ..files.clone()
        };
        let e = Tls::load(&missing).expect_err("a missing key");
        assert!(e.to_string().contains("absent.pem"), "{e}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let one = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("a test certificate");
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("a test certificate");
        let files = TlsFiles {
            cert: write(dir.path(), "cert.pem", &one.cert.pem()),
            key: write(dir.path(), "key.pem", &other.signing_key.serialize_pem()),
            client_ca: None,
        };
        let e = Tls::load(&files).expect_err("mismatched key");
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
        std::fs::write(&files.key, one.signing_key.serialize_pem()).expect("write key");
        let tls = Tls::load(&files).expect("matching key");
        // A reload that fails keeps the certificate in use.
        let before = tls.reloader.resolver.current();
        std::fs::write(&files.key, other.signing_key.serialize_pem()).expect("write key");
        assert!(tls.reloader().reload().is_err());
        assert!(Arc::ptr_eq(&before, &tls.reloader.resolver.current()));
    }
}
