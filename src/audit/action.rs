//! The audit vocabulary: every action the trail can record, and what each implies.
//!
//! Services, the writer, `verify` and the report use [`Action`], never string literals.
//! What an action implies is decided by exhaustive matches (no `_` arm), so a new action
//! cannot be added without saying whether it reveals cleartext, whether it belongs to the
//! key history, and which permission it needs. The PCI report counts cleartext access
//! from [`Action::reveals_cleartext`], so a new revealing path is counted automatically.

use std::fmt;

/// What was done. The stored string ([`Action::as_str`]) is part of the audit format:
/// never rename one; add a new variant instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    // The data path.
    Tokenize,
    Detokenize,
    /// A non-production vault answered a token it has no record of with a synthetic value
    /// (no stored value was opened; nothing real was revealed).
    DetokenizeSynthetic,
    /// Token metadata and masked value, never the value.
    Read,
    Delete,
    /// Expired tokens deleted by the retention purge (a count, never the tokens).
    TokenPurge,
    /// Whether a value has a token (Transform's `tokenized`): nothing revealed or stored.
    TokenLookup,
    Encrypt,
    Decrypt,
    Rewrap,
    /// A keyed digest (Vault's `transit/hmac`) and its verification.
    Hmac,
    HmacVerify,
    /// A signature by a Transit signing key (made in the HSM) and its verification.
    Sign,
    SignVerify,
    KeysList,
    MetricsRead,
    /// A request refused by the per-identity request rate, before its body was read.
    RateLimit,
    // The service.
    ServiceStart,
    HsmUnavailable,
    HsmRecovered,
    // Key lifecycle.
    KeyCreate,
    /// A rotation asked for by a client over the API (`transit/keys/:name/rotate`); the
    /// new version itself is recorded as `key.create`.
    KeyRotate,
    KeyRetire,
    KeyRetireForced,
    KeyDestroy,
    KeyRewrap,
    KeyReindex,
    KekCreate,
    KekRotate,
    KekDestroy,
    // Dual control.
    OfficerRequest,
    OfficerApprove,
    /// An officer key registered (the first officers at init, or an approved add/re-key).
    OfficerRegister,
    /// An officer removed under dual control.
    OfficerRemove,
    // Sessions of the Vault-compatible API (certificate login, bound tokens).
    AuthLogin,
    AuthRenew,
    AuthRevoke,
    /// A presented session token refused: unknown, ended, or shown with another
    /// certificate than the one that logged in.
    AuthRefused,
    // Anomaly scoring of reveals (docs/anomaly-detection.md).
    /// A reveal request that scored as unusual for its identity: allowed with an alert
    /// (`success`), or refused for an officer's approval or by a block (`denied`). The
    /// reason holds the verdict, the score and its reasons.
    DetokenizeAnomaly,
    /// An identity suspended by a block verdict, until an officer lifts it.
    IdentitySuspend,
    /// Officers approved a held reveal request: its scope and window are in the reason.
    ApprovalGrant,
    /// Officers denied a held reveal request.
    ApprovalDeny,
    /// A client used an approval (`success`, once), or presented one that does not hold
    /// for the request (`denied`).
    ApprovalRedeem,
    /// Officers lifted an identity's suspension.
    IdentityReinstate,
    /// Anomaly alerts the webhook did not receive (queue full or delivery failed); the
    /// reason holds the count.
    AlertDropped,
    /// A `tokenvault mask` run: a masked copy of a data set was written with a masking key
    /// derived from the fingerprint key; the reason holds the rows, kinds and key (never a
    /// value).
    DataMask,
    /// A `tokenvault mask` run began (or resumed): the reason names the source, the
    /// output, the kinds and the key, so a run that never finishes is on record too.
    DataMaskStart,
}

/// The permission verb an action needs (`<verb>:<object>` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Tokenize,
    /// Receive the value's public fingerprint with a tokenize answer.
    Fingerprint,
    /// Create new deterministic values beyond the hourly budget (migrations).
    Import,
    /// Ask whether a value already has a token (Transform's `tokenized`), storing nothing.
    Lookup,
    Detokenize,
    Read,
    Delete,
    Encrypt,
    Decrypt,
    /// Keyed digests with a keyring (Vault's `transit/hmac` and its verification): apart
    /// from `encrypt`, because a deterministic digest lets its holder test guesses.
    Hmac,
    /// Signatures by a Transit signing key.
    Sign,
    /// Verifying signatures against a Transit signing key's public keys.
    Verify,
    /// Rotating a keyring or signing key over the API (a new version; nothing destroyed).
    Rotate,
    Keys,
    Audit,
    Metrics,
}

impl Verb {
    pub const ALL: [Verb; 16] = [
        Verb::Tokenize,
        Verb::Fingerprint,
        Verb::Import,
        Verb::Lookup,
        Verb::Detokenize,
        Verb::Read,
        Verb::Delete,
        Verb::Encrypt,
        Verb::Decrypt,
        Verb::Hmac,
        Verb::Sign,
        Verb::Verify,
        Verb::Rotate,
        Verb::Keys,
        Verb::Audit,
        Verb::Metrics,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Verb::Tokenize => "tokenize",
            Verb::Fingerprint => "fingerprint",
            Verb::Import => "import",
            Verb::Lookup => "lookup",
            Verb::Detokenize => "detokenize",
            Verb::Read => "read",
            Verb::Delete => "delete",
            Verb::Encrypt => "encrypt",
            Verb::Decrypt => "decrypt",
            Verb::Hmac => "hmac",
            Verb::Sign => "sign",
            Verb::Verify => "verify",
            Verb::Rotate => "rotate",
            Verb::Keys => "keys",
            Verb::Audit => "audit",
            Verb::Metrics => "metrics",
        }
    }

    pub fn parse(s: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// What the object segment of a `<verb>:<object>` permission names.
    pub const fn object(self) -> ObjectKind {
        match self {
            Verb::Tokenize
            | Verb::Fingerprint
            | Verb::Import
            | Verb::Lookup
            | Verb::Detokenize
            | Verb::Read
            | Verb::Delete => ObjectKind::TokenType,
            Verb::Encrypt | Verb::Decrypt | Verb::Hmac => ObjectKind::Keyring,
            Verb::Sign | Verb::Verify => ObjectKind::SigningKey,
            Verb::Rotate => ObjectKind::TransitKey,
            Verb::Keys | Verb::Audit | Verb::Metrics => ObjectKind::Scope,
        }
    }
}

/// The kind of name a permission's object segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A configured token type (`tokenize:pan`).
    TokenType,
    /// A configured keyring (`encrypt:pii`).
    Keyring,
    /// A configured Transit signing key (`sign:receipts`).
    SigningKey,
    /// A configured keyring or signing key (`rotate:pii`).
    TransitKey,
    /// A fixed scope word (`keys:read`).
    Scope,
}

impl Action {
    pub const ALL: [Action; 47] = [
        Action::Tokenize,
        Action::Detokenize,
        Action::DetokenizeSynthetic,
        Action::Read,
        Action::Delete,
        Action::TokenPurge,
        Action::TokenLookup,
        Action::Encrypt,
        Action::Decrypt,
        Action::Rewrap,
        Action::Hmac,
        Action::HmacVerify,
        Action::Sign,
        Action::SignVerify,
        Action::KeysList,
        Action::MetricsRead,
        Action::RateLimit,
        Action::ServiceStart,
        Action::HsmUnavailable,
        Action::HsmRecovered,
        Action::KeyCreate,
        Action::KeyRotate,
        Action::KeyRetire,
        Action::KeyRetireForced,
        Action::KeyDestroy,
        Action::KeyRewrap,
        Action::KeyReindex,
        Action::KekCreate,
        Action::KekRotate,
        Action::KekDestroy,
        Action::OfficerRequest,
        Action::OfficerApprove,
        Action::OfficerRegister,
        Action::OfficerRemove,
        Action::AuthLogin,
        Action::AuthRenew,
        Action::AuthRevoke,
        Action::AuthRefused,
        Action::DetokenizeAnomaly,
        Action::IdentitySuspend,
        Action::ApprovalGrant,
        Action::ApprovalDeny,
        Action::ApprovalRedeem,
        Action::IdentityReinstate,
        Action::AlertDropped,
        Action::DataMask,
        Action::DataMaskStart,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Tokenize => "tokenize",
            Action::Detokenize => "detokenize",
            Action::DetokenizeSynthetic => "detokenize.synthetic",
            Action::Read => "read",
            Action::Delete => "delete",
            Action::TokenPurge => "token.purge",
            Action::TokenLookup => "token.lookup",
            Action::Encrypt => "encrypt",
            Action::Decrypt => "decrypt",
            Action::Rewrap => "rewrap",
            Action::Hmac => "hmac",
            Action::HmacVerify => "hmac.verify",
            Action::Sign => "sign",
            Action::SignVerify => "sign.verify",
            Action::KeysList => "keys.list",
            Action::MetricsRead => "metrics.read",
            Action::RateLimit => "rate_limit",
            Action::ServiceStart => "service.start",
            Action::HsmUnavailable => "hsm.unavailable",
            Action::HsmRecovered => "hsm.recovered",
            Action::KeyCreate => "key.create",
            Action::KeyRotate => "key.rotate",
            Action::KeyRetire => "key.retire",
            Action::KeyRetireForced => "key.retire.forced",
            Action::KeyDestroy => "key.destroy",
            Action::KeyRewrap => "key.rewrap",
            Action::KeyReindex => "key.reindex",
            Action::KekCreate => "key.kek.create",
            Action::KekRotate => "key.kek.rotate",
            Action::KekDestroy => "key.kek.destroy",
            Action::OfficerRequest => "officer.request",
            Action::OfficerApprove => "officer.approve",
            Action::OfficerRegister => "officer.register",
            Action::OfficerRemove => "officer.remove",
            Action::AuthLogin => "auth.login",
            Action::AuthRenew => "auth.renew",
            Action::AuthRevoke => "auth.revoke",
            Action::AuthRefused => "auth.refused",
            Action::DetokenizeAnomaly => "detokenize.anomaly",
            Action::IdentitySuspend => "identity.suspend",
            Action::ApprovalGrant => "approval.grant",
            Action::ApprovalDeny => "approval.deny",
            Action::ApprovalRedeem => "approval.redeem",
            Action::IdentityReinstate => "identity.reinstate",
            Action::AlertDropped => "alert.dropped",
            Action::DataMask => "data.mask",
            Action::DataMaskStart => "data.mask.start",
        }
    }

    /// The action a stored string names; `None` for a string outside the vocabulary.
    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Whether a successful event of this action handed cleartext to its caller. These
    /// are the events PCI DSS 10.2.1 asks to be counted per user.
    pub const fn reveals_cleartext(self) -> bool {
        match self {
            Action::Detokenize | Action::Decrypt => true,
            // Rewrap opens and re-seals inside the vault; the plaintext never leaves.
            Action::Tokenize
            | Action::DetokenizeSynthetic
            | Action::Read
            | Action::Delete
            | Action::TokenPurge
            | Action::TokenLookup
            | Action::Encrypt
            | Action::Rewrap
            | Action::Hmac
            | Action::HmacVerify
            | Action::Sign
            | Action::SignVerify
            | Action::KeysList
            | Action::MetricsRead
            | Action::RateLimit
            | Action::ServiceStart
            | Action::HsmUnavailable
            | Action::HsmRecovered
            | Action::KeyCreate
            | Action::KeyRotate
            | Action::KeyRetire
            | Action::KeyRetireForced
            | Action::KeyDestroy
            | Action::KeyRewrap
            | Action::KeyReindex
            | Action::KekCreate
            | Action::KekRotate
            | Action::KekDestroy
            | Action::OfficerRequest
            | Action::OfficerApprove
            | Action::OfficerRegister
            | Action::OfficerRemove
            | Action::AuthLogin
            | Action::AuthRenew
            | Action::AuthRevoke
            | Action::AuthRefused
            | Action::DetokenizeAnomaly
            | Action::IdentitySuspend
            | Action::ApprovalGrant
            | Action::ApprovalDeny
            | Action::ApprovalRedeem
            | Action::IdentityReinstate
            | Action::AlertDropped
            | Action::DataMask
            | Action::DataMaskStart => false,
        }
    }

    /// Whether the action belongs to the key management history of the report (key
    /// lifecycle and dual control).
    pub const fn is_key_management(self) -> bool {
        match self {
            Action::KeyCreate
            | Action::KeyRotate
            | Action::KeyRetire
            | Action::KeyRetireForced
            | Action::KeyDestroy
            | Action::KeyRewrap
            | Action::KeyReindex
            | Action::KekCreate
            | Action::KekRotate
            | Action::KekDestroy
            | Action::OfficerRequest
            | Action::OfficerApprove
            | Action::OfficerRegister
            | Action::OfficerRemove => true,
            Action::Tokenize
            | Action::Detokenize
            | Action::DetokenizeSynthetic
            | Action::Read
            | Action::Delete
            | Action::TokenPurge
            | Action::TokenLookup
            | Action::Encrypt
            | Action::Decrypt
            | Action::Rewrap
            | Action::Hmac
            | Action::HmacVerify
            | Action::Sign
            | Action::SignVerify
            | Action::KeysList
            | Action::MetricsRead
            | Action::RateLimit
            | Action::ServiceStart
            | Action::HsmUnavailable
            | Action::HsmRecovered
            | Action::AuthLogin
            | Action::AuthRenew
            | Action::AuthRevoke
            | Action::AuthRefused
            | Action::DetokenizeAnomaly
            | Action::IdentitySuspend
            | Action::ApprovalGrant
            | Action::ApprovalDeny
            | Action::ApprovalRedeem
            | Action::IdentityReinstate
            | Action::AlertDropped
            | Action::DataMask
            | Action::DataMaskStart => false,
        }
    }

    /// The permission verb a client needs for this action; `None` for actions no client
    /// can ask for (the CLI and the vault itself perform them).
    pub const fn verb(self) -> Option<Verb> {
        match self {
            Action::Tokenize => Some(Verb::Tokenize),
            Action::TokenLookup => Some(Verb::Lookup),
            Action::Detokenize | Action::DetokenizeSynthetic => Some(Verb::Detokenize),
            Action::Read => Some(Verb::Read),
            Action::Delete => Some(Verb::Delete),
            // Rewrap needs no decrypt permission: the plaintext never leaves the vault.
            Action::Encrypt | Action::Rewrap => Some(Verb::Encrypt),
            Action::Hmac | Action::HmacVerify => Some(Verb::Hmac),
            Action::Sign => Some(Verb::Sign),
            Action::SignVerify => Some(Verb::Verify),
            Action::Decrypt => Some(Verb::Decrypt),
            Action::KeysList => Some(Verb::Keys),
            Action::MetricsRead => Some(Verb::Metrics),
            Action::KeyRotate => Some(Verb::Rotate),
            Action::TokenPurge
            | Action::RateLimit
            | Action::ServiceStart
            | Action::HsmUnavailable
            | Action::HsmRecovered
            | Action::KeyCreate
            | Action::KeyRetire
            | Action::KeyRetireForced
            | Action::KeyDestroy
            | Action::KeyRewrap
            | Action::KeyReindex
            | Action::KekCreate
            | Action::KekRotate
            | Action::KekDestroy
            | Action::OfficerRequest
            | Action::OfficerApprove
            | Action::OfficerRegister
            | Action::OfficerRemove
            // Any configured client may log in; its session carries its own grants.
            | Action::AuthLogin
            | Action::AuthRenew
            | Action::AuthRevoke
            | Action::AuthRefused
            | Action::DetokenizeAnomaly
            | Action::IdentitySuspend
            | Action::ApprovalGrant
            | Action::ApprovalDeny
            | Action::ApprovalRedeem
            | Action::IdentityReinstate
            | Action::AlertDropped
            | Action::DataMask
            | Action::DataMaskStart => None,
        }
    }

    /// The actions that reveal cleartext, in a stable order (the report's columns).
    pub fn revealing() -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(|a| a.reveals_cleartext())
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_round_trips_and_no_two_share_a_string() {
        let mut seen = std::collections::HashSet::new();
        for a in Action::ALL {
            assert!(seen.insert(a.as_str()), "{a} twice");
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
        assert_eq!(Action::parse("detokenise"), None);
        for v in Verb::ALL {
            assert_eq!(Verb::parse(v.as_str()), Some(v));
        }
    }

    #[test]
    fn the_cleartext_paths_are_the_ones_pci_counts() {
        let revealing: Vec<_> = Action::revealing().map(Action::as_str).collect();
        assert_eq!(revealing, ["detokenize", "decrypt"]);
        assert!(Action::revealing().all(|a| a.verb().is_some()));
    }
}
