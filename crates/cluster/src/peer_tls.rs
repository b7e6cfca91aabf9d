//! How a node reaches its peers over `https://`: the CA it trusts for them
//! (`serve --peer-ca FILE`) and the client certificate it presents when they
//! require one (`--peer-cert FILE --peer-key FILE`, for peers serving with
//! `--tls-client-ca`).
//!
//! Owns: building the HTTP client of the cluster links (forwarding, votes, the
//! replication log, reports) with those settings ([`peer_client`]).
//!
//! Promises: with a CA file, peers are trusted only if their certificate chains to
//! a certificate of that file (the system's roots are not used); a file that cannot
//! be read or holds no usable PEM is an error naming the file and what is wrong,
//! never its contents; a certificate without its key (or the reverse) is refused.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the peers' TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PeerTlsError {
    /// A file cannot be read.
    #[error("{flag} {}: {source}", path.display())]
    Read {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM.
    #[error("{flag} {}: {reason}", path.display())]
    Pem {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Only one of `--peer-cert` and `--peer-key`.
    #[error("--peer-cert and --peer-key go together: give both, or neither")]
    HalfIdentity,
    /// The client could not be built.
    #[error("the peers' HTTP client: {0}")]
    Client(String),
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, PeerTlsError> {
    std::fs::read(path).map_err(|source| PeerTlsError::Read {
        flag,
        path: path.to_owned(),
        source,
    })
}

/// The HTTP client of the cluster links: trusting only the CAs of `ca` for
/// `https://` peers when given, presenting `cert` + `key` (PEM) when given.
pub fn peer_client(
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<reqwest::Client, PeerTlsError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(30));
    if let Some(path) = ca {
        let pem = read("--peer-ca", path)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| PeerTlsError::Pem {
            flag: "--peer-ca",
            path: path.to_owned(),
            reason: format!("not a PEM certificate bundle ({e})"),
        })?;
        if certs.is_empty() {
            return Err(PeerTlsError::Pem {
                flag: "--peer-ca",
                path: path.to_owned(),
                reason: "no certificate in it".to_owned(),
            });
        }
        builder = builder.tls_built_in_root_certs(false);
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let mut pem = read("--peer-cert", cert)?;
            pem.push(b'\n');
            pem.extend(read("--peer-key", key)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| PeerTlsError::Pem {
                flag: "--peer-cert",
                path: cert.to_owned(),
                reason: format!("not a certificate and key pair in PEM ({e})"),
            })?;
            builder = builder.identity(identity);
        }
        (None, None) => {}
        _ => return Err(PeerTlsError::HalfIdentity),
    }
    builder
        .build()
        .map_err(|e| PeerTlsError::Client(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_are_named_and_their_contents_never_quoted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = dir.path().join("ca.pem");
        std::fs::write(&bad, "secret-looking-garbage").expect("write");
        let err = peer_client(Some(&bad), None, None).expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains("--peer-ca") && text.contains("ca.pem"),
            "{text}"
        );
        assert!(!text.contains("secret-looking-garbage"), "{text}");
        let missing = dir.path().join("nope.pem");
        let err = peer_client(Some(&missing), None, None).expect_err("refused");
        assert!(err.to_string().contains("nope.pem"), "{err}");
        let err = peer_client(None, Some(&bad), None).expect_err("refused");
        assert!(matches!(err, PeerTlsError::HalfIdentity), "{err}");
        assert!(peer_client(None, None, None).is_ok());
    }
}
