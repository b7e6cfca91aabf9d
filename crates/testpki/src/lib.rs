//! Test certificates for the TLS tests of master-events: a CA of its own in a fresh
//! temp dir, and the certificates it signs, written as PEM files there.
//!
//! Also a NATS operator, account and user for tests of credentials files
//! ([`nats::NatsOperator`]), loopback ports for the servers tests start
//! ([`ports::free_port`]), and a small tmpfs to fill up ([`tmpfs::Tmpfs`]).
//!
//! Owns: [`TestPki`]. Promises: every file lives in the PKI's temp dir, removed when
//! it is dropped; the CA's certificate is `ca.pem`; nothing here is for production
//! (keys are generated per run and written unencrypted).
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod nats;
pub mod ports;
pub mod tmpfs;

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A test CA (`ca.pem`) in a temp dir, and what it signs.
pub struct TestPki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl TestPki {
    /// A new CA, "test CA", its certificate written to `ca.pem`.
    ///
    /// Panics when the temp dir or a key cannot be made: a test cannot go on.
    pub fn new() -> TestPki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a key"))
            .expect("the CA certificate");
        let pki = TestPki {
            dir: tempfile::tempdir().expect("a temp dir"),
            ca,
        };
        std::fs::write(pki.path("ca.pem"), pki.ca.pem()).expect("write ca.pem");
        pki
    }

    /// The CA's certificate, DER (for a root store built in a test).
    pub fn ca_der(&self) -> Vec<u8> {
        self.ca.der().to_vec()
    }

    /// The temp dir holding every file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The path of `name` in the temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The path of `name` in the temp dir, as a command-line argument.
    pub fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// Signs a new certificate named `cn` for the subject alternative names `sans`
    /// (host names or IP addresses), writes it to `cert_file` and its key to
    /// `key_file` (PEM, in the temp dir), and returns its DER.
    pub fn issue(&self, cert_file: &str, key_file: &str, cn: &str, sans: &[&str]) -> Vec<u8> {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans).expect("certificate params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &*self.ca).expect("a certificate");
        std::fs::write(self.path(cert_file), cert.pem()).expect("write the certificate");
        std::fs::write(self.path(key_file), key.serialize_pem()).expect("write the key");
        cert.der().to_vec()
    }

    /// A server certificate for `127.0.0.1` and `localhost` (`server.pem`,
    /// `server-key.pem`) and a client certificate named `client_cn` (`client.pem`,
    /// `client-key.pem`): what a mutual-TLS test needs.
    pub fn with_server_and_client(client_cn: &str) -> TestPki {
        let pki = TestPki::new();
        pki.issue(
            "server.pem",
            "server-key.pem",
            "server",
            &["127.0.0.1", "localhost"],
        );
        pki.issue("client.pem", "client-key.pem", "client", &[client_cn]);
        pki
    }
}

impl Default for TestPki {
    fn default() -> Self {
        TestPki::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_and_each_issued_pair_are_pem_files_in_the_temp_dir() {
        let pki = TestPki::with_server_and_client("node");
        for name in [
            "ca.pem",
            "server.pem",
            "server-key.pem",
            "client.pem",
            "client-key.pem",
        ] {
            let text = std::fs::read_to_string(pki.path(name)).expect(name);
            assert!(text.starts_with("-----BEGIN "), "{name} is PEM");
        }
        let der = pki.issue("x.pem", "x-key.pem", "x", &["localhost"]);
        assert!(!der.is_empty());
        let dir = pki.dir().to_owned();
        drop(pki);
        assert!(!dir.exists(), "the temp dir goes with the PKI");
    }
}
