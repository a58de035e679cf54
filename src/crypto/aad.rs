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

    /// A tokenized value: bound to its token, keyring and key version.
    pub fn token(keyring: &str, version: u32, token: &str) -> Self {
        Self::build("token", keyring, version, &[token.as_bytes()])
    }

    /// A value from the encrypt API: bound to keyring, version and the caller's context.
    pub fn encrypt(keyring: &str, version: u32, context: &[u8]) -> Self {
        Self::build("encrypt", keyring, version, &[context])
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}
