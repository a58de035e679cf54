//! Envelope encryption in process: data keys held in zeroizing memory, AES-256-GCM with
//! AAD that binds each ciphertext to its place, HKDF subkeys and keyed fingerprints.
//!
//! Key bytes never leave this module and `hsm`: everything else holds a `DataKey`.

mod aad;
mod envelope;

pub use aad::Aad;
pub use envelope::{Ciphertext, CiphertextError};

use std::fmt;

use aes::cipher::BlockEncrypt;
use aes_gcm::aead::{Aead, AeadCore, OsRng, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Length of the AES-GCM nonce prefixed to every sealed value.
pub const NONCE_LEN: usize = 12;
/// Length of the AES-GCM tag appended to every sealed value.
pub const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// One opaque error for every way opening can fail.
    #[error("decryption failed")]
    DecryptionFailed,
    #[error("a data key must be 32 bytes")]
    BadKeyLength,
}

/// The nonce of a convergent seal: AES-256-GCM-SIV under a fixed nonce is deterministic
/// authenticated encryption (RFC 8452 §9): the same plaintext and AAD give the same
/// ciphertext, and nothing but that equality is revealed. A random GCM nonce is all
/// zeros with probability 2⁻⁹⁶; `open` tries GCM too if SIV fails on one.
const CONVERGENT_NONCE: [u8; NONCE_LEN] = [0; NONCE_LEN];

/// A 256-bit data key, ready to seal and open. The cipher is initialised once.
pub struct DataKey {
    cipher: Aes256Gcm,
    /// AES-256-GCM-SIV under an HKDF subkey (its own label), for convergent keyrings: the
    /// deterministic cipher never shares a key with the randomized one.
    convergent: aes_gcm_siv::Aes256GcmSiv,
    kcv: [u8; 3],
    /// HMAC subkey (HKDF of the key, its own label): keyed digests for callers (Vault's
    /// `transit/hmac`) never use the encryption key itself.
    mac: Fingerprinter,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([REDACTED])")
    }
}

impl DataKey {
    /// Takes ownership of the key bytes; they are cleared when `bytes` drops.
    pub fn from_bytes(bytes: Zeroizing<Vec<u8>>) -> Result<Self, CryptoError> {
        if bytes.len() != 32 {
            return Err(CryptoError::BadKeyLength);
        }
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| CryptoError::BadKeyLength)?;
        let hk = Hkdf::<Sha256>::new(Some(b"tokenvault/data-key-hmac/v1"), &bytes);
        let mut mac = Zeroizing::new([0u8; 32]);
        // Invariant: 32 bytes is far below HKDF-SHA-256's 8160-byte output limit.
        hk.expand(b"hmac-sha-256", mac.as_mut())
            .expect("HKDF output length is valid");
        let mut siv_key = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(Some(b"tokenvault/data-key-convergent/v1"), &bytes)
            .expand(b"aes-256-gcm-siv", siv_key.as_mut())
            .expect("HKDF output length is valid");
        let convergent =
            <aes_gcm_siv::Aes256GcmSiv as aes_gcm_siv::KeyInit>::new_from_slice(siv_key.as_ref())
                .map_err(|_| CryptoError::BadKeyLength)?;
        Ok(Self {
            cipher,
            convergent,
            kcv: kcv(&bytes),
            mac: Fingerprinter {
                key: std::sync::Arc::new(mac),
            },
        })
    }

    /// HMAC-SHA-256 of `data` under this key's HMAC subkey.
    pub fn mac(&self, data: &[u8]) -> [u8; 32] {
        self.mac.fingerprint(data)
    }

    /// The key check value: the first three bytes of AES-ECB(key, 0¹²⁸).
    pub fn kcv(&self) -> [u8; 3] {
        self.kcv
    }

    /// nonce ‖ ciphertext ‖ tag, with a fresh random 96-bit nonce.
    pub fn seal(&self, aad: &Aad, plaintext: &[u8]) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        // Invariant: AES-GCM encryption only fails for inputs over 64 GiB, far above any limit.
        let ct = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .expect("AES-GCM input within size limits");
        out.extend_from_slice(&ct);
        out
    }

    /// Convergent sealing (keyrings with `convergent`): the same plaintext under the same
    /// AAD gives the same bytes, in the layout of [`Self::seal`] with an all-zero nonce.
    pub fn seal_convergent(&self, aad: &Aad, plaintext: &[u8]) -> Vec<u8> {
        use aes_gcm_siv::aead::Aead as _;
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&CONVERGENT_NONCE);
        // Invariant: AES-GCM-SIV encryption only fails for inputs over 64 GiB.
        let ct = self
            .convergent
            .encrypt(
                aes_gcm_siv::Nonce::from_slice(&CONVERGENT_NONCE),
                aes_gcm_siv::aead::Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .expect("AES-GCM-SIV input within size limits");
        out.extend_from_slice(&ct);
        out
    }

    /// Opens what `seal` or `seal_convergent` made with the same AAD; any mismatch is one
    /// opaque error.
    pub fn open(&self, aad: &Aad, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::DecryptionFailed);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        if nonce == CONVERGENT_NONCE {
            use aes_gcm_siv::aead::Aead as _;
            let opened = self.convergent.decrypt(
                aes_gcm_siv::Nonce::from_slice(nonce),
                aes_gcm_siv::aead::Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            );
            if let Ok(plain) = opened {
                return Ok(Zeroizing::new(plain));
            }
        }
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::DecryptionFailed)
    }
}

/// Key check value of a raw AES-256 key.
pub fn kcv(key: &[u8]) -> [u8; 3] {
    let cipher = aes::Aes256::new_from_slice(key).expect("caller checked a 32-byte key");
    let mut block = aes::Block::default();
    cipher.encrypt_block(&mut block);
    [block[0], block[1], block[2]]
}

/// HMAC-SHA-256 keys derived from the fingerprint data key, one per purpose label.
/// Derived subkeys are cached here, so they live exactly as long as the key: when the
/// key manager drops a key (rotation, an HSM outage), its subkeys go with it.
pub struct FingerprintKey {
    ikm: Zeroizing<Vec<u8>>,
    derived: std::sync::RwLock<std::collections::HashMap<String, Fingerprinter>>,
}

impl fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FingerprintKey([REDACTED])")
    }
}

/// A derived HMAC key. Only the derived bytes are kept, in zeroizing memory shared by
/// the clones; the HMAC state (whose inner and outer pads are key-equivalent, and which
/// hmac 0.12 does not wipe) exists only for the length of one `fingerprint` call.
#[derive(Clone)]
pub struct Fingerprinter {
    key: std::sync::Arc<Zeroizing<[u8; 32]>>,
}

impl fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fingerprinter([REDACTED])")
    }
}

impl FingerprintKey {
    pub fn from_bytes(ikm: Zeroizing<Vec<u8>>) -> Result<Self, CryptoError> {
        if ikm.len() != 32 {
            return Err(CryptoError::BadKeyLength);
        }
        Ok(Self {
            ikm,
            derived: Default::default(),
        })
    }

    /// `derive(label)`, computed once per label and key.
    pub fn derived(&self, label: &str) -> Fingerprinter {
        if let Some(f) = self
            .derived
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(label)
        {
            return f.clone();
        }
        let f = self.derive(label);
        self.derived
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(label.to_owned(), f.clone());
        f
    }

    /// A subkey for `label`; every purpose gets its own label, so fingerprints of one
    /// purpose say nothing about another.
    pub fn derive(&self, label: &str) -> Fingerprinter {
        let hk = Hkdf::<Sha256>::new(Some(b"tokenvault/fingerprint/v1"), &self.ikm);
        let mut okm = Zeroizing::new([0u8; 32]);
        // Invariant: 32 bytes is far below HKDF-SHA-256's 8160-byte output limit.
        hk.expand(label.as_bytes(), okm.as_mut())
            .expect("HKDF output length is valid");
        Fingerprinter {
            key: std::sync::Arc::new(okm),
        }
    }
}

impl Fingerprinter {
    pub fn fingerprint(&self, value: &[u8]) -> [u8; 32] {
        // Invariant: HMAC accepts a key of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key[..])
            .expect("HMAC takes any key length");
        mac.update(value);
        mac.finalize().into_bytes().into()
    }
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) {
    use aes_gcm::aead::rand_core::RngCore;
    OsRng.fill_bytes(buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> DataKey {
        DataKey::from_bytes(Zeroizing::new(vec![byte; 32])).unwrap()
    }

    #[test]
    fn a_keys_hmac_is_deterministic_per_key_and_not_keyed_by_the_key_itself() {
        assert_eq!(key(1).mac(b"x"), key(1).mac(b"x"));
        assert_ne!(key(1).mac(b"x"), key(2).mac(b"x"));
        assert_ne!(key(1).mac(b"x"), key(1).mac(b"y"));
        let mut raw = <Hmac<Sha256> as Mac>::new_from_slice(&[1u8; 32]).unwrap();
        raw.update(b"x");
        let raw: [u8; 32] = raw.finalize().into_bytes().into();
        assert_ne!(
            key(1).mac(b"x"),
            raw,
            "the HMAC subkey is derived, not the data key"
        );
    }

    #[test]
    fn sealed_values_open_only_with_the_same_aad_and_key() {
        let k = key(7);
        let aad = Aad::token("pan", 1, "tok_a");
        let sealed = k.seal(&aad, b"4111111111111111");
        assert_eq!(
            k.open(&aad, &sealed).unwrap().as_slice(),
            b"4111111111111111"
        );
        assert_eq!(
            k.open(&Aad::token("pan", 1, "tok_b"), &sealed),
            Err(CryptoError::DecryptionFailed)
        );
        assert_eq!(
            k.open(&Aad::token("pan", 2, "tok_a"), &sealed),
            Err(CryptoError::DecryptionFailed)
        );
        assert_eq!(
            key(8).open(&aad, &sealed),
            Err(CryptoError::DecryptionFailed)
        );
        for i in 0..sealed.len() * 8 {
            let mut flipped = sealed.clone();
            flipped[i / 8] ^= 1 << (i % 8);
            assert_eq!(
                k.open(&aad, &flipped),
                Err(CryptoError::DecryptionFailed),
                "bit {i}"
            );
        }
        assert_eq!(
            k.open(&aad, &sealed[..20]),
            Err(CryptoError::DecryptionFailed)
        );
    }

    #[test]
    fn convergent_seals_are_equal_only_for_equal_plaintext_and_aad() {
        let k = key(3);
        let aad = Aad::encrypt("pii", 1, b"tenant-a");
        let a = k.seal_convergent(&aad, b"row 7");
        assert_eq!(a, k.seal_convergent(&aad, b"row 7"));
        assert_ne!(a, k.seal_convergent(&aad, b"row 8"));
        assert_ne!(
            a,
            k.seal_convergent(&Aad::encrypt("pii", 1, b"tenant-b"), b"row 7")
        );
        assert_ne!(a, key(4).seal_convergent(&aad, b"row 7"));
        assert_eq!(k.open(&aad, &a).unwrap().as_slice(), b"row 7");
        assert_eq!(
            k.open(&Aad::encrypt("pii", 1, b"tenant-b"), &a),
            Err(CryptoError::DecryptionFailed)
        );
        for i in 0..a.len() * 8 {
            let mut flipped = a.clone();
            flipped[i / 8] ^= 1 << (i % 8);
            assert!(k.open(&aad, &flipped).is_err(), "bit {i}");
        }
        // The randomized seal of the same plaintext is another ciphertext, and opens.
        let random = k.seal(&aad, b"row 7");
        assert_ne!(a, random);
        assert_eq!(k.open(&aad, &random).unwrap().as_slice(), b"row 7");
    }

    #[test]
    fn two_seals_of_one_value_differ() {
        let k = key(1);
        let aad = Aad::token("pan", 1, "t");
        assert_ne!(k.seal(&aad, b"x"), k.seal(&aad, b"x"));
    }

    #[test]
    fn kcv_matches_the_published_aes_256_zero_key_value() {
        // AES-256 of the zero block under the zero key starts DC 95 C0 (FIPS-197 style vector).
        assert_eq!(kcv(&[0u8; 32]), [0xdc, 0x95, 0xc0]);
    }

    #[test]
    fn fingerprints_are_keyed_and_separated_by_label() {
        let fk = FingerprintKey::from_bytes(Zeroizing::new(vec![3; 32])).unwrap();
        let other = FingerprintKey::from_bytes(Zeroizing::new(vec![4; 32])).unwrap();
        let v = b"4111111111111111";
        assert_eq!(
            fk.derive("type:pan").fingerprint(v),
            fk.derive("type:pan").fingerprint(v)
        );
        assert_ne!(
            fk.derive("type:pan").fingerprint(v),
            fk.derive("type:ssn").fingerprint(v)
        );
        assert_ne!(
            fk.derive("type:pan").fingerprint(v),
            other.derive("type:pan").fingerprint(v)
        );
        let plain: [u8; 32] = <Sha256 as sha2::Digest>::digest(v).into();
        assert_ne!(fk.derive("type:pan").fingerprint(v), plain);
    }

    #[test]
    fn debug_output_of_secret_types_is_redacted() {
        let fk = FingerprintKey::from_bytes(Zeroizing::new(vec![0x41; 32])).unwrap();
        for s in [
            format!("{:?}", key(0x41)),
            format!("{fk:?}"),
            format!("{:?}", fk.derive("x")),
        ] {
            assert!(s.contains("REDACTED"), "{s}");
            assert!(
                !s.contains("65") && !s.contains("AAAA") && !s.contains("41, 41"),
                "{s}"
            );
        }
    }
}
