//! Certificates for the server and every test client, made once per test process, and
//! HTTPS clients presenting them.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use tokenvault::config::Settings;
use tokenvault::devpki::{DevCa, Issued};

/// Certificates for every test client, made once per test process.
pub struct TestPki {
    pub ca: DevCa,
    pub server: Issued,
    pub clients: HashMap<&'static str, Issued>,
    /// A client certificate from a CA the server does not trust.
    pub foreign: Issued,
    /// A client certificate from the right CA whose validity ended yesterday.
    pub expired: Issued,
}

pub fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = DevCa::new("tokenvault test CA").unwrap();
        let clients = ["app", "tokenizer", "auditor", "stranger"]
            .into_iter()
            .map(|n| (n, ca.client(n).unwrap()))
            .collect();
        let foreign = DevCa::new("someone else's CA")
            .unwrap()
            .client("app")
            .unwrap();
        let now = time::OffsetDateTime::now_utc();
        let expired = ca
            .client_valid(
                "app",
                (
                    now - time::Duration::days(30),
                    now - time::Duration::days(1),
                ),
            )
            .unwrap();
        TestPki {
            server: ca.server().unwrap(),
            ca,
            clients,
            foreign,
            expired,
        }
    })
}

/// Writes the server's TLS files into `dir` and points `settings` at them.
pub fn tls_files(dir: &std::path::Path, s: &mut Settings) {
    let p = pki();
    std::fs::write(dir.join("ca.pem"), &p.ca.cert_pem).unwrap();
    std::fs::write(dir.join("server.pem"), &p.server.cert_pem).unwrap();
    write_private(&dir.join("server-key.pem"), &p.server.key_pem);
    s.server.client_ca = dir.join("ca.pem");
    s.server.tls_cert = dir.join("server.pem");
    s.server.tls_key = dir.join("server-key.pem");
    s.server.listen = "127.0.0.1:0".into();
}

/// Writes a private key as an operator would keep it: mode 0600 (`serve` refuses a
/// server key that others may read).
pub fn write_private(path: &std::path::Path, contents: &str) {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.write(true).create_new(true).open(path).unwrap();
    f.write_all(contents.as_bytes()).unwrap();
}

fn root_store() -> rustls::RootCertStore {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pki().ca.cert_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    roots
}

/// A rustls client config presenting `cert` (or no certificate), for `versions`.
pub fn client_tls(
    cert: Option<&Issued>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(root_store());
    match cert {
        Some(c) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(c.cert_pem.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    }
}

pub fn http_client(cert: Option<&Issued>) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(client_tls(cert, &[&rustls::version::TLS13]))
        .build()
        .unwrap()
}

/// An HTTPS client for one of the test identities.
pub fn client(name: &str) -> reqwest::Client {
    http_client(Some(&pki().clients[name]))
}

/// The serial number (big-endian bytes, as the certificate encodes it) of `cert`.
pub fn serial_of(cert: &Issued) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let der = CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap();
    let (_, parsed) = X509Certificate::from_der(&der).unwrap();
    parsed.raw_serial().to_vec()
}

/// A rustls client config presenting `cert` over TLS 1.3, offering `alpn`.
pub fn client_tls_alpn(cert: &Issued, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut c = client_tls(Some(cert), &[&rustls::version::TLS13]);
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    c
}
