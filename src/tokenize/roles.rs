//! Vault Transform's roles and tokenization transformations, mapped onto tokenvault's
//! token types: a transformation names the type its values are tokenized as, a role the
//! transformations a caller may use through it. Permissions stay those of the type
//! (`tokenize:<type>`, `detokenize:<type>`, `read:<type>`); a role only narrows.
//!
//! With no `[vault_api.transform]` configured, every token type is a transformation of
//! its own name and a role of its own name holding just it, so `encode/pan` works out of
//! the box.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::TypeSettings;
use crate::error::Error;

/// `[vault_api.transform]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransformSettings {
    pub roles: BTreeMap<String, RoleSettings>,
    pub transformations: BTreeMap<String, TransformationSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSettings {
    pub transformations: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformationSettings {
    /// The tokenvault token type whose values this transformation tokenizes.
    pub token_type: String,
    /// The roles that may use it (Vault's `allowed_roles`); empty: every role listing it.
    #[serde(default)]
    pub allowed_roles: Vec<String>,
}

/// The roles and transformations in force: the configured ones, or one of each per type.
#[derive(Debug, Clone, Default)]
pub struct Transforms {
    pub roles: BTreeMap<String, RoleSettings>,
    pub transformations: BTreeMap<String, TransformationSettings>,
}

impl TransformSettings {
    /// Refuses a transformation of an unknown type, a role naming an unknown
    /// transformation, and a role a transformation does not allow.
    pub fn validate(&self, types: &BTreeMap<String, TypeSettings>) -> Result<(), String> {
        for (name, t) in &self.transformations {
            if !types.contains_key(&t.token_type) {
                return Err(format!(
                    "vault_api.transform transformation `{name}` uses type `{}`, which is not \
                     configured",
                    t.token_type
                ));
            }
        }
        for (role, r) in &self.roles {
            for name in &r.transformations {
                let t = self.transformations.get(name).ok_or_else(|| {
                    format!("vault_api.transform role `{role}` names transformation `{name}`, which is not configured")
                })?;
                if !t.allowed_roles.is_empty() && !t.allowed_roles.contains(role) {
                    return Err(format!(
                        "vault_api.transform role `{role}` names transformation `{name}`, whose \
                         allowed_roles do not include it"
                    ));
                }
            }
        }
        Ok(())
    }

    /// What is in force for `types`.
    pub fn effective(&self, types: &BTreeMap<String, TypeSettings>) -> Transforms {
        if !self.roles.is_empty() || !self.transformations.is_empty() {
            return Transforms {
                roles: self.roles.clone(),
                transformations: self.transformations.clone(),
            };
        }
        let transformations = types
            .keys()
            .map(|t| {
                let settings = TransformationSettings {
                    token_type: t.clone(),
                    allowed_roles: vec![t.clone()],
                };
                (t.clone(), settings)
            })
            .collect();
        let roles = types
            .keys()
            .map(|t| {
                let role = RoleSettings {
                    transformations: vec![t.clone()],
                };
                (t.clone(), role)
            })
            .collect();
        Transforms {
            roles,
            transformations,
        }
    }
}

impl Transforms {
    /// The token type a request through `role` (and `transformation`, required when the
    /// role has several) works on. Unknown names are refused without being quoted.
    pub fn resolve(&self, role: &str, transformation: Option<&str>) -> Result<&str, Error> {
        let r = self
            .roles
            .get(role)
            .ok_or_else(|| Error::InvalidRequest("no such role".into()))?;
        let name = match (
            transformation.filter(|t| !t.is_empty()),
            r.transformations.as_slice(),
        ) {
            (Some(t), names) if names.iter().any(|n| n == t) => t,
            (Some(_), _) => {
                return Err(Error::InvalidRequest(
                    "the role has no such transformation".into(),
                ));
            }
            (None, [only]) => only.as_str(),
            (None, _) => {
                return Err(Error::InvalidRequest(
                    "the role has several transformations: name one in `transformation`".into(),
                ));
            }
        };
        let t = self
            .transformations
            .get(name)
            .ok_or_else(|| Error::InvalidRequest("the role has no such transformation".into()))?;
        if !t.allowed_roles.is_empty() && !t.allowed_roles.iter().any(|a| a == role) {
            return Err(Error::InvalidRequest(
                "the transformation does not allow this role".into(),
            ));
        }
        Ok(t.token_type.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::{TokenFormat, Validator};

    fn types() -> BTreeMap<String, TypeSettings> {
        let t = |v| TypeSettings {
            validator: v,
            keyring: "pii".into(),
            format: TokenFormat::Opaque,
            deterministic: false,
            formats: None,
            synthetic: None,
        };
        BTreeMap::from([
            ("pan".into(), t(Validator::Pan)),
            ("ssn".into(), t(Validator::Ssn)),
        ])
    }

    #[test]
    fn without_configuration_each_type_is_a_role_and_a_transformation() {
        let t = TransformSettings::default().effective(&types());
        assert_eq!(t.resolve("pan", None).unwrap(), "pan");
        assert_eq!(t.resolve("ssn", Some("ssn")).unwrap(), "ssn");
        assert!(t.resolve("pan", Some("ssn")).is_err());
        assert!(t.resolve("nosuch", None).is_err());
    }

    #[test]
    fn configured_roles_narrow_and_must_agree_with_their_transformations() {
        let mut s = TransformSettings::default();
        s.transformations.insert(
            "cards".into(),
            TransformationSettings {
                token_type: "pan".into(),
                allowed_roles: vec!["payments".into()],
            },
        );
        s.transformations.insert(
            "ids".into(),
            TransformationSettings {
                token_type: "ssn".into(),
                allowed_roles: Vec::new(),
            },
        );
        s.roles.insert(
            "payments".into(),
            RoleSettings {
                transformations: vec!["cards".into(), "ids".into()],
            },
        );
        assert!(s.validate(&types()).is_ok());
        let t = s.effective(&types());
        assert!(
            t.resolve("payments", None).is_err(),
            "two transformations: name one"
        );
        assert_eq!(t.resolve("payments", Some("cards")).unwrap(), "pan");
        assert!(
            t.resolve("pan", None).is_err(),
            "configured roles replace the defaults"
        );
        s.roles.insert(
            "support".into(),
            RoleSettings {
                transformations: vec!["cards".into()],
            },
        );
        assert!(
            s.validate(&types()).is_err(),
            "cards does not allow support"
        );
        s.transformations.get_mut("ids").unwrap().token_type = "nosuch".into();
        assert!(s.validate(&types()).is_err());
    }
}
