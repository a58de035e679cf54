//! The server's TLS configuration: TLS 1.3 only, client certificates from `client_ca`
//! only, checked against the CRLs in `server.crl_file`. The CRL file is re-read every
//! `server.crl_reload_secs`; when it changed, a new configuration is built and used for
//! new handshakes (connections already open keep theirs). A file that no longer parses
//! keeps the last good configuration and logs an error; at start a configured CRL that
//! cannot be read or parsed stops the server.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use crate::config::ServerSettings;

/// The current TLS configuration, swapped whole when the CRL file changes.
pub struct Tls {
    settings: ServerSettings,
    current: RwLock<Arc<ServerConfig>>,
    /// The CRL file's bytes the current configuration was built from.
    crl_seen: Mutex<Option<Vec<u8>>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// Builds the configuration from the files `settings` names; fails closed.
    pub fn load(settings: &ServerSettings) -> anyhow::Result<Self> {
        let crl = read_crl_file(settings)?;
        let config = build(settings, crl.as_deref())?;
        Ok(Self {
            settings: settings.clone(),
            current: RwLock::new(Arc::new(config)),
            crl_seen: Mutex::new(crl),
        })
    }

    /// An acceptor with the configuration in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        TlsAcceptor::from(config)
    }

    /// Re-reads the CRL file every `crl_reload_secs` while the returned task runs;
    /// `None` when no CRL file is configured.
    pub fn spawn_reload(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        self.settings.crl_file.as_ref()?;
        let tls = Arc::clone(self);
        let every = Duration::from_secs(self.settings.crl_reload_secs);
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let tls = Arc::clone(&tls);
                let _ = tokio::task::spawn_blocking(move || tls.reload_if_changed()).await;
            }
        }))
    }

    /// Rebuilds the configuration if the CRL file's content changed; on any error the
    /// configuration in force stays.
    fn reload_if_changed(&self) {
        let crl = match read_crl_file(&self.settings) {
            Ok(crl) => crl,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "CRL reload failed; the previous CRLs stay in force");
                return;
            }
        };
        let mut seen = self.crl_seen.lock().unwrap_or_else(PoisonError::into_inner);
        if *seen == crl {
            return;
        }
        match build(&self.settings, crl.as_deref()) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
                *seen = crl;
                metrics::counter!("tokenvault_crl_reloads_total").increment(1);
                tracing::info!("CRL file changed; new connections are checked against it");
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "CRL reload failed; the previous CRLs stay in force");
            }
        }
    }
}

fn read_crl_file(s: &ServerSettings) -> anyhow::Result<Option<Vec<u8>>> {
    let Some(path) = &s.crl_file else {
        return Ok(None);
    };
    std::fs::read(path)
        .map(Some)
        .with_context(|| format!("reading the CRL file {} (server.crl_file)", path.display()))
}

/// The CRLs in a file: PEM (one or more `X509 CRL` blocks) or one DER CRL.
fn parse_crls(bytes: &[u8]) -> anyhow::Result<Vec<CertificateRevocationListDer<'static>>> {
    let crls = if bytes.starts_with(b"-----") || bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        CertificateRevocationListDer::pem_slice_iter(bytes)
            .collect::<Result<Vec<_>, _>>()
            .context("the CRL file is not valid PEM")?
    } else {
        vec![CertificateRevocationListDer::from(bytes.to_vec())]
    };
    anyhow::ensure!(!crls.is_empty(), "the CRL file holds no CRL");
    Ok(crls)
}

/// The configuration: TLS 1.3 only, client certificates from `client_ca` only, and
/// revocation checked against `crl` (every certificate of the chain must be covered by
/// a CRL of its issuer; an unknown status is refused).
fn build(s: &ServerSettings, crl: Option<&[u8]>) -> anyhow::Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(&s.client_ca)? {
        roots.add(cert).context("adding the client CA")?;
    }
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if let Some(bytes) = crl {
        verifier = verifier.with_crls(parse_crls(bytes).context("server.crl_file")?);
    }
    let verifier = verifier
        .build()
        .context("building the client certificate verifier (is server.crl_file a valid CRL?)")?;
    let key = PrivateKeyDer::from_pem_file(&s.tls_key).with_context(|| {
        format!(
            "reading the server key {} — run `tokenvault dev-certs`",
            s.tls_key.display()
        )
    })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(read_certs(&s.tls_cert)?, key)
        .context("the server certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| {
            format!(
                "reading {} — run `tokenvault dev-certs` or fix [server]",
                path.display()
            )
        })?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", path.display());
    Ok(certs)
}
