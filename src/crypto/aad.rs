//! Additional authenticated data: where a ciphertext belongs. Every field is
//! length-prefixed so no two different places encode to the same bytes.

/// The AAD of one sealed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aad(Vec<u8>);

impl Aad {
    fn build(kind: &str, keyring: &str, version: u32, parts: &[&[u8]]) -> Self {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(b"tokenvault/v1");
        for field in [kind.as_bytes(), keyring.as_bytes(), &version.to_be_bytes()]
            .into_iter()
            .chain(parts.iter().copied())
        {
            out.extend_from_slice(&(field.len() as u32).to_be_bytes());
            out.extend_from_slice(field);
        }
        Aad(out)
    }

    /// A tokenized value, as sealed before records bound their type and expiry (AAD
    /// version 1): bound to its token, keyring and key version. Still opened; rewrap
    /// re-seals such records with [`Aad::token_record`].
    pub fn token(keyring: &str, version: u32, token: &str) -> Self {
        Self::build("token", keyring, version, &[token.as_bytes()])
    }

    /// A tokenized value (AAD version 2): bound to its token, keyring and key version, and
    /// to every stored field that decides who may read it or for how long: the type, the
    /// expiry, and a SHA-256 digest of the metadata.
    pub fn token_record(
        keyring: &str,
        version: u32,
        token: &str,
        token_type: &str,
        expires_at: Option<i64>,
        metadata: Option<&str>,
    ) -> Self {
        use sha2::{Digest, Sha256};
        let expiry = expires_at.map_or_else(Vec::new, |e| e.to_be_bytes().to_vec());
        let digest = metadata.map_or_else(Vec::new, |m| Sha256::digest(m.as_bytes()).to_vec());
        // An absent expiry or metadata is the empty field; a present one is never empty
        // (8 bytes, 32 bytes), so the two cannot be confused.
        Self::build(
            "token/v2",
            keyring,
            version,
            &[token.as_bytes(), token_type.as_bytes(), &expiry, &digest],
        )
    }

    /// A value from the encrypt API: bound to keyring, version and the caller's context.
    pub fn encrypt(keyring: &str, version: u32, context: &[u8]) -> Self {
        Self::build("encrypt", keyring, version, &[context])
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}
