//! Who is calling: only the verified client certificate says so, through the one source
//! `server.identity` names (the subject CN, or the one URI SAN with the configured
//! prefix), never one and then the other. The TLS layer verified the chain (and the
//! CRLs); this reads the name and looks up the grants.

use std::net::SocketAddr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::AppState;
use crate::config::{IdentitySource, ServerSettings};
use crate::error::Error;
use crate::guard::Principal;

/// What the connection knows about its peer; inserted into every request by the server.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// `None` when the certificate names no identity the configured source accepts:
    /// every request then answers 401.
    pub identity: Option<String>,
    /// The client's address, the audit origin: the TCP peer, or the source address in
    /// the PROXY header of a trusted load balancer.
    pub peer: SocketAddr,
    /// SHA-256 of the client certificate's DER (RFC 8705 `x5t#S256`): what a session
    /// token of the Vault-compatible API is bound to.
    pub thumbprint: Option<[u8; 32]>,
}

/// Why a verified certificate names no identity (logged; the client gets 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the certificate cannot be parsed")]
    Unparsable,
    #[error("the certificate has {0} URI SANs; one identity per certificate")]
    SeveralUris(usize),
    #[error("server.identity is uri and the certificate has no URI SAN")]
    NoUri,
    #[error("the URI SAN does not start with server.identity_uri_prefix")]
    WrongPrefix,
    #[error("the certificate subject has no CN")]
    NoCn,
    #[error("the certificate subject has several CNs")]
    SeveralCns,
    #[error("the CN looks like a URI (`://`); URI identities come only from a URI SAN")]
    UriLikeCn,
}

/// The identity in a certificate, from the one source `server.identity` names.
/// - Either way, a certificate with several URI SANs is refused.
/// - `uri`: the one URI SAN, which must start with `identity_uri_prefix` (and go on
///   past it); the CN is ignored.
/// - `cn`: the one subject CN; a CN holding `://` is refused, so it cannot pose as a
///   URI identity; URI SANs are ignored.
pub fn identity_of(der: &[u8], server: &ServerSettings) -> Result<String, IdentityError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError::Unparsable)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|_| IdentityError::Unparsable)?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|s| s.value.general_names.iter())
        .filter_map(|n| match n {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    if uris.len() > 1 {
        return Err(IdentityError::SeveralUris(uris.len()));
    }
    match server.identity {
        IdentitySource::Uri => {
            let uri = uris.first().ok_or(IdentityError::NoUri)?;
            let prefix = server.identity_uri_prefix.as_str();
            if prefix.is_empty() || !uri.starts_with(prefix) || uri.len() == prefix.len() {
                return Err(IdentityError::WrongPrefix);
            }
            Ok((*uri).to_owned())
        }
        IdentitySource::Cn => {
            let mut cns = cert.subject().iter_common_name();
            let cn = cns.next().ok_or(IdentityError::NoCn)?;
            if cns.next().is_some() {
                return Err(IdentityError::SeveralCns);
            }
            let cn = cn.as_str().map_err(|_| IdentityError::Unparsable)?;
            if cn.is_empty() {
                return Err(IdentityError::NoCn);
            }
            if cn.contains("://") {
                return Err(IdentityError::UriLikeCn);
            }
            Ok(cn.to_owned())
        }
    }
}

/// The authenticated caller of a request.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let info = parts
            .extensions
            .get::<ConnInfo>()
            .ok_or(Error::Unauthenticated)?;
        let identity = info.identity.as_deref().ok_or(Error::Unauthenticated)?;
        let approval = approval_header(parts)?;
        Ok(Caller(
            state
                .services
                .guard
                .principal(identity, &info.peer.ip().to_string())
                .with_approval(approval),
        ))
    }
}

/// The header a client retries a held reveal with, naming the held request officers
/// approved.
pub const APPROVAL_HEADER: &str = "tokenvault-approval";

/// The held request id of `Tokenvault-Approval`, if sent; anything else is refused
/// without being echoed.
fn approval_header(parts: &Parts) -> Result<Option<String>, Error> {
    let Some(v) = parts.headers.get(APPROVAL_HEADER) else {
        return Ok(None);
    };
    match v.to_str() {
        // An empty header is no approval (some clients send every optional header).
        Ok("") => Ok(None),
        Ok(id) if crate::anomaly::approvals::is_held_id(id) => Ok(Some(id.to_owned())),
        _ => Err(Error::InvalidRequest(
            "Tokenvault-Approval must be the held request id of an approval_required answer \
             (su_ and 32 hex digits)"
                .into(),
        )),
    }
}
