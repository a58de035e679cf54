//! Who is calling: only the verified client certificate says so (SAN URI, else CN).
//! The TLS layer verified the chain; this reads the name and looks up the grants.

use std::net::SocketAddr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::AppState;
use crate::error::Error;
use crate::guard::Principal;

/// What the connection knows about its peer; inserted into every request by the server.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub identity: Option<String>,
    pub peer: SocketAddr,
}

/// The identity in a certificate: its first SAN URI, else its subject CN.
pub fn identity_of(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                return Some((*uri).to_owned());
            }
        }
    }
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    (!cn.is_empty()).then(|| cn.to_owned())
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
        Ok(Caller(
            state
                .services
                .guard
                .principal(identity, &info.peer.ip().to_string()),
        ))
    }
}
