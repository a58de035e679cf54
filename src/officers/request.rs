//! What officers sign: a request document in canonical JSON.
//!
//! The document is serialized from a struct with a fixed field order and no maps, so the
//! same request always gives the same bytes (serde_json escapes strings one way). Unknown
//! fields are refused when a document is read back, and the human summary is recomputed
//! from the operation and must match, so the text an officer is shown is exactly what the
//! signature covers. A signature covers a domain-separation prefix and those bytes; there
//! is no field-joining format that a value with a newline could confuse (review L16).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::OfficerError;
use crate::anomaly::approvals::RevealScope;

/// The document format this build writes and signs.
pub const FORMAT: &str = "tokenvault-officer-request/2";

/// Prefixed to the canonical document before signing.
const SIGNING_DOMAIN: &[u8] = b"tokenvault officer signature v2\n";

/// Every key lifecycle operation, and every change to the officer registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Operation {
    /// Create what `init` finds missing (the KEK, audit signing key, first data keys).
    Init,
    /// A new active data key version.
    Rotate { keyring: String },
    /// A new KEK; every data key re-wrapped under it.
    RotateKek,
    /// Re-encrypt every record of a keyring under its active version.
    Rewrap { keyring: String },
    /// Retire a decrypt-only version that protects no records.
    Retire { keyring: String, version: u32 },
    /// Retire a version that still protects records (they become unreadable).
    ForceRetire { keyring: String, version: u32 },
    /// Crypto-shred a retired data key version.
    Destroy { keyring: String, version: u32 },
    /// Destroy a retired KEK in the HSM.
    DestroyKek { label: String },
    /// Destroy a version, rotate the KEK and destroy every KEK that wrapped the version.
    DestroyWithKek { keyring: String, version: u32 },
    /// Register a new officer.
    AddOfficer { name: String, public_key: String },
    /// Remove an officer (at least two must remain).
    RemoveOfficer { name: String },
    /// Replace an officer's key (the old key stops counting at once).
    RekeyOfficer { name: String, public_key: String },
    /// Let a client retry a reveal that anomaly scoring held (step-up), once, within
    /// `valid_for_secs` of the approval, for `scope`.
    ApproveReveal {
        held: String,
        identity: String,
        scope: RevealScope,
        valid_for_secs: u32,
    },
    /// Refuse a held reveal for good.
    DenyReveal { held: String, identity: String },
    /// Lift the suspension of an identity that anomaly scoring blocked: the one that
    /// began at `since` (ms), not a later one.
    Reinstate { identity: String, since: i64 },
}

impl Operation {
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Init => "init",
            Operation::Rotate { .. } => "rotate",
            Operation::RotateKek => "rotate-kek",
            Operation::Rewrap { .. } => "rewrap",
            Operation::Retire { .. } => "retire",
            Operation::ForceRetire { .. } => "force-retire",
            Operation::Destroy { .. } => "destroy",
            Operation::DestroyKek { .. } => "destroy-kek",
            Operation::DestroyWithKek { .. } => "destroy-with-kek",
            Operation::AddOfficer { .. } => "add-officer",
            Operation::RemoveOfficer { .. } => "remove-officer",
            Operation::RekeyOfficer { .. } => "rekey-officer",
            Operation::ApproveReveal { .. } => "approve-reveal",
            Operation::DenyReveal { .. } => "deny-reveal",
            Operation::Reinstate { .. } => "reinstate",
        }
    }

    /// How many distinct registered officers must sign: two for what cannot be undone,
    /// for changes to who the officers are, and for letting a held reveal of cleartext go
    /// (or a blocked identity reveal again: the officer who proposes it and a second
    /// one, never the same twice); one for the rest, a denial included.
    pub fn signatures_required(&self) -> u32 {
        match self {
            Operation::Init
            | Operation::Rotate { .. }
            | Operation::RotateKek
            | Operation::Rewrap { .. }
            | Operation::Retire { .. }
            | Operation::DenyReveal { .. } => 1,
            Operation::ForceRetire { .. }
            | Operation::Destroy { .. }
            | Operation::DestroyKek { .. }
            | Operation::DestroyWithKek { .. }
            | Operation::AddOfficer { .. }
            | Operation::RemoveOfficer { .. }
            | Operation::RekeyOfficer { .. }
            | Operation::ApproveReveal { .. }
            | Operation::Reinstate { .. } => 2,
        }
    }

    /// The exact operation in words: what changes, and what becomes unrecoverable.
    pub fn summary(&self) -> String {
        match self {
            Operation::Init => {
                "INIT: create the KEK, audit signing key and first data keys that are missing. \
                 Nothing is deleted."
                    .into()
            }
            Operation::Rotate { keyring } => format!(
                "ROTATE keyring {keyring}: a new active data key version; older versions stay \
                 decrypt-only. Nothing becomes unrecoverable."
            ),
            Operation::RotateKek => "ROTATE-KEK: a new KEK in the HSM; every data key is \
                 re-wrapped under it and the old KEK is retired (still in the HSM). Nothing \
                 becomes unrecoverable."
                .into(),
            Operation::Rewrap { keyring } => format!(
                "REWRAP keyring {keyring}: re-encrypt every record under the active version \
                 (expired records are purged first and are gone)."
            ),
            Operation::Retire { keyring, version } => format!(
                "RETIRE {keyring} v{version}: no new use; it protects no records. It can still \
                 be destroyed later under dual control."
            ),
            Operation::ForceRetire { keyring, version } => format!(
                "FORCE-RETIRE {keyring} v{version}: retire it although records remain; those \
                 records can no longer be read by the API."
            ),
            Operation::Destroy { keyring, version } => format!(
                "DESTROY {keyring} v{version}: crypto-shred the data key. Every record and \
                 ciphertext under {keyring} v{version} becomes UNRECOVERABLE from the vault \
                 (a database backup still holds it wrapped until its KEK is destroyed)."
            ),
            Operation::DestroyKek { label } => format!(
                "DESTROY-KEK {label}: destroy the KEK in the HSM. Every data key wrapped by \
                 it, in the database or in any backup, becomes UNRECOVERABLE."
            ),
            Operation::DestroyWithKek { keyring, version } => format!(
                "DESTROY {keyring} v{version} WITH ITS KEKS: crypto-shred the data key, rotate \
                 the KEK and destroy every KEK that wrapped it. Every record under {keyring} \
                 v{version} becomes UNRECOVERABLE, from the vault and from every backup."
            ),
            Operation::AddOfficer { name, public_key } => format!(
                "ADD OFFICER {name} with Ed25519 public key {public_key}: from then on this key \
                 counts as officer {name} in dual control."
            ),
            Operation::RemoveOfficer { name } => format!(
                "REMOVE OFFICER {name}: their key stops counting at once; at least two \
                 officers must remain."
            ),
            Operation::RekeyOfficer { name, public_key } => format!(
                "RE-KEY OFFICER {name} to Ed25519 public key {public_key}: the old key stops \
                 counting at once and can never be registered again."
            ),
            Operation::ApproveReveal {
                held,
                identity,
                scope,
                valid_for_secs,
            } => format!(
                "APPROVE REVEAL of held request {held}: client {identity} may retry it once, \
                 within {valid_for_secs} s of the approval, and see the CLEARTEXT of {}.",
                scope.describe()
            ),
            Operation::DenyReveal { held, identity } => format!(
                "DENY REVEAL of held request {held} by client {identity}: nothing of it is \
                 ever revealed."
            ),
            Operation::Reinstate { identity, since } => format!(
                "REINSTATE client {identity}: lift its suspension of {}; it may reveal \
                 again, under its permissions and anomaly scoring.",
                crate::keys::rfc3339(*since)
            ),
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::Init => write!(f, "init"),
            Operation::Rotate { keyring } => write!(f, "rotate {keyring}"),
            Operation::RotateKek => write!(f, "rotate-kek"),
            Operation::Rewrap { keyring } => write!(f, "rewrap {keyring}"),
            Operation::Retire { keyring, version } => write!(f, "retire {keyring} v{version}"),
            Operation::ForceRetire { keyring, version } => {
                write!(f, "force-retire {keyring} v{version}")
            }
            Operation::Destroy { keyring, version } => write!(f, "destroy {keyring} v{version}"),
            Operation::DestroyKek { label } => write!(f, "destroy KEK {label}"),
            Operation::DestroyWithKek { keyring, version } => write!(
                f,
                "destroy {keyring} v{version}, rotate the KEK and destroy the KEK that wrapped it"
            ),
            Operation::AddOfficer { name, .. } => write!(f, "add officer {name}"),
            Operation::RemoveOfficer { name } => write!(f, "remove officer {name}"),
            Operation::RekeyOfficer { name, .. } => write!(f, "re-key officer {name}"),
            Operation::ApproveReveal { held, identity, .. } => {
                write!(f, "approve reveal {held} of {identity}")
            }
            Operation::DenyReveal { held, identity } => {
                write!(f, "deny reveal {held} of {identity}")
            }
            Operation::Reinstate { identity, .. } => write!(f, "reinstate {identity}"),
        }
    }
}

/// The request every signature covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestDocument {
    pub format: String,
    pub id: String,
    pub operation: Operation,
    pub summary: String,
    pub reason: Option<String>,
    pub signatures_required: u32,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub expires_at: i64,
}

impl RequestDocument {
    pub fn new(
        id: String,
        operation: Operation,
        reason: Option<String>,
        now: i64,
        ttl_ms: i64,
    ) -> Self {
        Self {
            format: FORMAT.into(),
            id,
            summary: operation.summary(),
            signatures_required: operation.signatures_required(),
            operation,
            reason,
            created_at: now,
            expires_at: now + ttl_ms,
        }
    }

    /// The canonical text: what is stored, written to the request file and signed.
    pub fn canonical(&self) -> String {
        // Invariant: a struct of strings, integers and a tagged enum always serializes.
        serde_json::to_string(self).expect("request document serializes")
    }

    /// Reads a document (stored or from a request file) and checks that it is one this
    /// build would have written: the format, the summary and the signature count all
    /// follow from the operation, so a document cannot show one thing and do another.
    pub fn parse(text: &str) -> Result<Self, OfficerError> {
        let doc: Self = serde_json::from_str(text.trim())
            .map_err(|e| OfficerError::BadRequestFile(e.to_string()))?;
        if doc.format != FORMAT {
            return Err(OfficerError::BadRequestFile(format!(
                "format '{}' is not {FORMAT}",
                doc.format
            )));
        }
        if !is_request_id(&doc.id) {
            return Err(OfficerError::BadRequestFile(
                "the id is not a request id (req- and 16 hex digits)".into(),
            ));
        }
        if let Some(reason) = &doc.reason {
            check_reason(reason)?;
        }
        if doc.summary != doc.operation.summary()
            || doc.signatures_required != doc.operation.signatures_required()
        {
            return Err(OfficerError::BadRequestFile(
                "the summary or signature count does not follow from the operation".into(),
            ));
        }
        Ok(doc)
    }

    /// The bytes a signature covers.
    pub fn signing_message(&self) -> Vec<u8> {
        let mut m = SIGNING_DOMAIN.to_vec();
        m.extend_from_slice(self.canonical().as_bytes());
        m
    }
}

/// A fresh request id: `req-` and 16 lowercase hex digits from the OS random source.
/// The id is stored in the audit trail (as a request's resource), so an id whose hex
/// happens to hold a Luhn-valid run of 12 or more digits (about one in a thousand) is
/// drawn again: nothing the vault writes there may read as a card number.
pub fn new_request_id() -> String {
    loop {
        let mut id_bytes = [0u8; 8];
        crate::crypto::random_bytes(&mut id_bytes);
        let id = format!("req-{}", hex::encode(id_bytes));
        if !crate::cardscan::contains_pan(&id) {
            return id;
        }
    }
}

/// Request ids: `req-` and 16 lowercase hex digits.
pub fn is_request_id(id: &str) -> bool {
    id.strip_prefix("req-").is_some_and(|h| {
        h.len() == 16
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A reason is shown to the officers who sign and stored in the audit trail: the API's
/// reason rule (length, control characters, no card-number-like digit runs) plus no
/// bidirectional or invisible characters, so it cannot reorder what is shown.
pub fn check_reason(reason: &str) -> Result<(), OfficerError> {
    let invisible = |c: char| matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}' | '\u{061C}' | '\u{00AD}');
    if crate::tokenize::check_reason(Some(reason)).is_err() || reason.chars().any(invisible) {
        return Err(OfficerError::BadReason);
    }
    Ok(())
}

/// What `officer sign` writes and `keys approve --signature` reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    pub request_id: String,
    /// The signer's Ed25519 public key, base64. Who signed is decided by looking this key
    /// up in the vault's registry, never by a name given on the command line.
    pub public_key: String,
    /// Ed25519 signature over the signing message, base64.
    pub signature: String,
}

impl SignatureFile {
    pub fn parse(text: &str) -> Result<Self, OfficerError> {
        serde_json::from_str(text.trim()).map_err(|e| OfficerError::BadSignatureFile(e.to_string()))
    }

    pub fn public_key_bytes(&self) -> Result<Vec<u8>, OfficerError> {
        STANDARD
            .decode(self.public_key.trim())
            .map_err(|_| OfficerError::BadSignatureFile("public_key is not base64".into()))
    }

    pub fn signature_bytes(&self) -> Result<Vec<u8>, OfficerError> {
        STANDARD
            .decode(self.signature.trim())
            .map_err(|_| OfficerError::BadSignatureFile("signature is not base64".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_never_read_as_card_numbers() {
        // About one plain 16-hex-digit id in a thousand holds a Luhn-valid run of 12+
        // digits; the leak scan once failed CI on one in the audit trail.
        for _ in 0..50_000 {
            let id = new_request_id();
            assert!(is_request_id(&id), "{id}");
            assert!(!crate::cardscan::contains_pan(&id), "{id}");
        }
    }

    fn doc(reason: Option<&str>) -> RequestDocument {
        RequestDocument::new(
            "req-0123456789abcdef".into(),
            Operation::Destroy {
                keyring: "pan".into(),
                version: 1,
            },
            reason.map(str::to_owned),
            1_000,
            10,
        )
    }

    #[test]
    fn the_canonical_text_round_trips_and_is_unambiguous() {
        let d = doc(Some("end of life; ticket SEC-42"));
        assert_eq!(RequestDocument::parse(&d.canonical()).unwrap(), d);
        // A newline in a field would stay inside its JSON string (it cannot forge a
        // field), and a reason with one is refused anyway.
        let forged = doc(Some("line one\nrequester=mallory"));
        assert!(!forged.canonical().contains('\n'));
        assert!(RequestDocument::parse(&forged.canonical()).is_err());
        assert_ne!(
            doc(Some("a")).signing_message(),
            doc(Some("b")).signing_message()
        );
    }

    #[test]
    fn a_document_whose_summary_does_not_follow_from_its_operation_is_refused() {
        let mut d = doc(None);
        d.summary = "ROTATE keyring pan: harmless".into();
        assert!(RequestDocument::parse(&d.canonical()).is_err());
        let mut d = doc(None);
        d.signatures_required = 1;
        assert!(RequestDocument::parse(&d.canonical()).is_err());
        let extra = doc(None).canonical().replacen('{', "{\"extra\":1,", 1);
        assert!(RequestDocument::parse(&extra).is_err());
    }

    #[test]
    fn reasons_that_could_disguise_what_is_shown_are_refused() {
        for bad in [
            "\u{1b}[3Ahidden",
            "a\rb",
            "\u{202E}txet",
            "x".repeat(201).as_str(),
            // Reasons land in the audit trail: never a place for a card number.
            "refund for 4111 1111 1111 1111",
        ] {
            assert!(check_reason(bad).is_err(), "{bad:?}");
        }
        assert!(check_reason("annual rotation, ticket SEC-42").is_ok());
        let mut d = doc(None);
        d.id = "req-../../x".into();
        assert!(RequestDocument::parse(&d.canonical()).is_err());
    }

    #[test]
    fn destructive_operations_and_registry_changes_need_two_officers() {
        assert_eq!(doc(None).signatures_required, 2);
        let rm = Operation::RemoveOfficer { name: "a".into() };
        assert_eq!(rm.signatures_required(), 2);
        assert_eq!(Operation::RotateKek.signatures_required(), 1);
        assert!(doc(None).summary.contains("UNRECOVERABLE"));
    }
}
