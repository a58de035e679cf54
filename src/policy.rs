//! Who may do what. Identities come only from verified client certificates; each maps to
//! permission patterns in the config. Anything not granted is denied.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::ClientSettings;

/// A permission pattern: `action:resource` segments, each literal or `*`; `*` alone is all.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern(Vec<String>);

impl Pattern {
    fn parse(s: &str) -> Self {
        Pattern(s.split(':').map(str::to_owned).collect())
    }

    fn matches(&self, permission: &str) -> bool {
        if self.0.len() == 1 && self.0[0] == "*" {
            return true;
        }
        let wanted: Vec<&str> = permission.split(':').collect();
        wanted.len() == self.0.len() && self.0.iter().zip(wanted).all(|(p, w)| p == "*" || p == w)
    }
}

/// The permission table from the config.
#[derive(Debug, Default)]
pub struct Policy {
    grants: HashMap<String, Arc<[Pattern]>>,
}

impl Policy {
    pub fn from_config(clients: &std::collections::BTreeMap<String, ClientSettings>) -> Self {
        let grants = clients
            .iter()
            .map(|(id, c)| {
                (
                    id.clone(),
                    c.permissions.iter().map(|p| Pattern::parse(p)).collect(),
                )
            })
            .collect();
        Self { grants }
    }

    /// The principal for a verified identity, with its grants (none if unknown).
    pub fn principal(&self, identity: &str, origin: &str) -> Principal {
        Principal {
            identity: identity.to_owned(),
            origin: origin.to_owned(),
            grants: self
                .grants
                .get(identity)
                .cloned()
                .unwrap_or_else(|| Arc::from(Vec::new())),
        }
    }
}

/// An authenticated caller: who, from where, and what they may do.
#[derive(Debug, Clone)]
pub struct Principal {
    pub identity: String,
    pub origin: String,
    grants: Arc<[Pattern]>,
}

impl Principal {
    /// A principal for the officer CLI and background tasks, which act with full rights.
    pub fn system(identity: &str) -> Self {
        Self {
            identity: identity.to_owned(),
            origin: "local".into(),
            grants: Arc::from(vec![Pattern::parse("*")]),
        }
    }

    pub fn may(&self, permission: &str) -> bool {
        self.grants.iter().any(|g| g.matches(permission))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_segments_and_nothing_is_granted_by_default() {
        let clients = std::collections::BTreeMap::from([(
            "svc".to_owned(),
            ClientSettings {
                permissions: vec!["tokenize:*".into(), "detokenize:pan".into()],
                ..Default::default()
            },
        )]);
        let policy = Policy::from_config(&clients);
        let p = policy.principal("svc", "127.0.0.1");
        assert!(p.may("tokenize:pan") && p.may("tokenize:email") && p.may("detokenize:pan"));
        assert!(
            !p.may("detokenize:ssn")
                && !p.may("detokenize:pan:x")
                && !p.may("tokenize")
                && !p.may("keys:read")
        );
        let nobody = policy.principal("unknown", "127.0.0.1");
        assert!(!nobody.may("tokenize:pan"));
        assert!(Principal::system("cli").may("keys:destroy"));
    }
}
