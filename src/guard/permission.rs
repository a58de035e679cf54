//! Typed permissions. A grant in the config (`tokenize:pan`, `detokenize:*`, `keys:read`,
//! `*`) is parsed once, when the config loads; a pattern that names no known action, has
//! the wrong shape or an impossible object fails start-up instead of silently granting
//! nothing. Checks compare typed values, never formatted strings.

use std::fmt;
use std::sync::Arc;

use crate::audit::{ObjectKind, Verb};

/// One granted pattern: a verb (or any) on an object (or any).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Grant {
    verb: Option<Verb>,
    object: Option<String>,
}

/// Why a permission pattern was refused at load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("`{0}` is not a permission: write `<action>:<object>` (e.g. `tokenize:pan`) or `*`")]
    Shape(String),
    #[error("`{pattern}` names no known action; the actions are {known}")]
    UnknownVerb { pattern: String, known: String },
    #[error("`{0}`: the object must be `read` or `*`")]
    Scope(String),
    #[error("`{0}`: the object must be `*` or a name of a-z, 0-9, _ and -")]
    Object(String),
}

impl Grant {
    /// Everything: the grant of the officer CLI and of background tasks.
    pub fn all() -> Self {
        Self {
            verb: None,
            object: None,
        }
    }

    pub fn parse(pattern: &str) -> Result<Self, GrantError> {
        if pattern == "*" {
            return Ok(Self::all());
        }
        let mut parts = pattern.split(':');
        let (Some(verb), Some(object), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(GrantError::Shape(pattern.to_owned()));
        };
        let verb = match verb {
            "*" => None,
            v => Some(Verb::parse(v).ok_or_else(|| GrantError::UnknownVerb {
                pattern: pattern.to_owned(),
                known: Verb::ALL.map(Verb::as_str).join(", "),
            })?),
        };
        let object = match object {
            "*" => None,
            o => {
                let name_ok = !o.is_empty()
                    && o.len() <= 64
                    && o.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                    });
                if !name_ok {
                    return Err(GrantError::Object(pattern.to_owned()));
                }
                if verb.is_some_and(|v| v.object() == ObjectKind::Scope) && o != "read" {
                    return Err(GrantError::Scope(pattern.to_owned()));
                }
                Some(o.to_owned())
            }
        };
        Ok(Self { verb, object })
    }

    /// The verb and object this grant names, for cross-checks against the config
    /// (a grant on a type or keyring that does not exist is a typo).
    pub fn named(&self) -> Option<(Verb, &str)> {
        Some((self.verb?, self.object.as_deref()?))
    }

    pub fn allows(&self, verb: Verb, object: &str) -> bool {
        self.verb.is_none_or(|v| v == verb) && self.object.as_deref().is_none_or(|o| o == object)
    }
}

impl TryFrom<String> for Grant {
    type Error = GrantError;

    fn try_from(s: String) -> Result<Self, GrantError> {
        Grant::parse(&s)
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.verb, &self.object) {
            (None, None) => f.write_str("*"),
            (v, o) => write!(
                f,
                "{}:{}",
                v.map_or("*", Verb::as_str),
                o.as_deref().unwrap_or("*")
            ),
        }
    }
}

/// An authenticated caller: who, from where, and what they may do. Built only by the
/// guard (from a verified certificate identity) or for the vault's own tasks.
#[derive(Debug, Clone)]
pub struct Principal {
    pub identity: String,
    pub origin: String,
    /// The token namespace: deterministic types give one token per value *within* a
    /// namespace, and a client finds only values tokenized in its own.
    pub namespace: String,
    /// Whether no other client shares the namespace: only then is an existing value's
    /// expiry shown to this client (a peer in a shared namespace may have set it).
    pub namespace_is_private: bool,
    /// The held request whose officers' approval this call presents (header
    /// `Tokenvault-Approval`), if any: its reveal is checked against the approved scope
    /// instead of being scored.
    pub approval: Option<String>,
    grants: Arc<[Grant]>,
}

/// The namespace every deterministic value was tokenized in before namespaces existed;
/// clients configured into it share those tokens (and the vault's own tasks use it).
pub const SHARED_NAMESPACE: &str = "shared";

impl Principal {
    pub(super) fn new(
        identity: &str,
        origin: &str,
        (namespace, namespace_is_private): (&str, bool),
        grants: Arc<[Grant]>,
    ) -> Self {
        Self {
            identity: identity.to_owned(),
            origin: origin.to_owned(),
            namespace: namespace.to_owned(),
            namespace_is_private,
            approval: None,
            grants,
        }
    }

    /// The principal presenting an approval of a held reveal request.
    pub fn with_approval(mut self, held: Option<String>) -> Self {
        self.approval = held;
        self
    }

    /// A principal for the officer CLI and background tasks, which act with full rights.
    pub fn system(identity: &str) -> Self {
        Self::new(
            identity,
            "local",
            (SHARED_NAMESPACE, false),
            Arc::from(vec![Grant::all()]),
        )
    }

    /// The grants this principal holds (as configured).
    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }

    pub fn may(&self, verb: Verb, object: &str) -> bool {
        self.grants.iter().any(|g| g.allows(verb, object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(grants: &[&str]) -> Principal {
        let grants: Vec<Grant> = grants.iter().map(|g| Grant::parse(g).unwrap()).collect();
        Principal::new("svc", "127.0.0.1", ("svc", true), Arc::from(grants))
    }

    #[test]
    fn grants_match_whole_segments_and_nothing_is_granted_by_default() {
        let p = principal(&["tokenize:*", "detokenize:pan"]);
        assert!(p.may(Verb::Tokenize, "pan") && p.may(Verb::Tokenize, "email"));
        assert!(p.may(Verb::Detokenize, "pan"));
        assert!(!p.may(Verb::Detokenize, "ssn") && !p.may(Verb::Keys, "read"));
        assert!(!principal(&[]).may(Verb::Tokenize, "pan"));
        assert!(principal(&["*:pan"]).may(Verb::Delete, "pan"));
        assert!(!principal(&["*:pan"]).may(Verb::Delete, "ssn"));
        assert!(Principal::system("cli").may(Verb::Keys, "read"));
    }

    #[test]
    fn a_mistyped_pattern_is_refused_with_a_clear_error() {
        for (bad, want) in [
            ("detokenise:*", "names no known action"),
            ("detokenize", "is not a permission"),
            ("detokenize:pan:x", "is not a permission"),
            ("keys:write", "must be `read` or `*`"),
            ("tokenize:PAN", "a name of a-z"),
            ("tokenize:", "a name of a-z"),
            ("", "is not a permission"),
        ] {
            let e = Grant::parse(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn grants_display_as_they_were_written() {
        for g in ["*", "tokenize:pan", "detokenize:*", "*:pii", "keys:read"] {
            assert_eq!(Grant::parse(g).unwrap().to_string(), g);
        }
        assert_eq!(Grant::parse("*:*").unwrap().to_string(), "*");
    }
}
