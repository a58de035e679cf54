//! Finding, creating and destroying token objects by label.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};

use super::policy::{self, KeyRole};
use super::{Hsm, HsmError, count};

impl Hsm {
    /// The health check: a session answers and the KEK labelled `kek_label` is still
    /// there under that label (a stale handle after a token swap would name another
    /// object or none). Costs one or two HSM round trips.
    pub fn probe(&self, kek_label: &str) -> Result<(), HsmError> {
        count("probe");
        let handle = self.kek_handle(kek_label)?;
        let session = self.pool.get()?;
        let attrs = session
            .get_attributes(handle, &[AttributeType::Label])
            .map_err(session.failed("C_GetAttributeValue"))?;
        match attrs.first() {
            Some(Attribute::Label(l)) if l.as_slice() == kek_label.as_bytes() => Ok(()),
            _ => Err(HsmError::StaleHandle {
                label: kek_label.to_owned(),
            }),
        }
    }

    /// The handle of the one object of `class` labelled `label`, cached because a search
    /// costs more the more objects the token holds (HSM-NOTES). Two objects under one
    /// label break the policy: the vault could not tell which one it uses.
    pub(super) fn find(
        &self,
        class: ObjectClass,
        label: &str,
    ) -> Result<Option<ObjectHandle>, HsmError> {
        let cache_key = format!("{class}/{label}");
        if let Some(h) = self
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&cache_key)
        {
            return Ok(Some(*h));
        }
        count("find");
        let session = self.pool.get()?;
        let found = session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(session.failed("C_FindObjects"))?;
        let handle = match found.as_slice() {
            [] => return Ok(None),
            [one] => *one,
            _ => {
                return Err(HsmError::KeyPolicy {
                    label: label.to_owned(),
                    problem: format!("{} objects share this label", found.len()),
                });
            }
        };
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cache_key, handle);
        Ok(Some(handle))
    }

    /// Finds the KEK labelled `label` or generates it inside the HSM, then checks that it
    /// obeys the policy. Returns whether it was created.
    pub fn ensure_kek(&self, label: &str) -> Result<bool, HsmError> {
        self.with_object_lock(|| {
            let created = match self.find(ObjectClass::SECRET_KEY, label)? {
                Some(_) => false,
                None => {
                    let session = self.pool.get()?;
                    session
                        .generate_key(
                            &Mechanism::AesKeyGen,
                            &policy::template(KeyRole::Kek, label),
                        )
                        .map_err(session.failed("C_GenerateKey"))?;
                    true
                }
            };
            self.check_kek(label)?;
            Ok(created)
        })
    }

    /// Refuses a KEK that breaks the key policy (`policy::check`): not sensitive,
    /// extractable (now or once), imported, not AES, allowed more than wrap/unwrap, not
    /// 256 bits, able to derive, modifiable, or wrappable by an untrusted key.
    pub fn check_kek(&self, label: &str) -> Result<(), HsmError> {
        let ev = self.key_evidence(ObjectClass::SECRET_KEY, label)?;
        policy::enforce(KeyRole::Kek, &ev)
    }

    pub(super) fn kek_handle(&self, label: &str) -> Result<ObjectHandle, HsmError> {
        self.find(ObjectClass::SECRET_KEY, label)?
            .ok_or_else(|| HsmError::KeyMissing(label.to_owned()))
    }

    /// Labels of every object in the token under `prefix`, for reconciliation.
    pub fn labels_with_prefix(&self, prefix: &str) -> Result<Vec<String>, HsmError> {
        let session = self.pool.get()?;
        let handles = session
            .find_objects(&[])
            .map_err(session.failed("C_FindObjects"))?;
        let mut labels = Vec::new();
        for h in handles {
            if let Ok(attrs) = session.get_attributes(h, &[AttributeType::Label]) {
                for a in attrs {
                    if let Attribute::Label(l) = a {
                        let l = String::from_utf8_lossy(&l).into_owned();
                        if l.starts_with(prefix) {
                            labels.push(l);
                        }
                    }
                }
            }
        }
        labels.sort();
        labels.dedup();
        Ok(labels)
    }

    /// Destroys every object labelled `label` (used by `keys destroy` of a KEK, to remove a
    /// signing key pair that was made but not recorded, and by tests).
    pub fn destroy_objects(&self, label: &str) -> Result<usize, HsmError> {
        self.with_object_lock(|| self.destroy_labelled_now(label))
    }

    /// [`Self::destroy_objects`] for a caller that holds the object lock already; a failure
    /// is logged (the object is then an orphan the key report names).
    pub(super) fn destroy_labelled(&self, label: &str) {
        if let Err(e) = self.destroy_labelled_now(label) {
            tracing::error!(label, error = %e, "could not destroy an unrecorded key pair");
        }
    }

    /// The value of the token's data object labelled `label`, created holding `value`
    /// when there is none: a fact about the vault (its environment) kept where a database
    /// writer cannot change it. The object is private and not modifiable.
    pub fn claim_data(&self, label: &str, value: &[u8]) -> Result<Vec<u8>, HsmError> {
        self.with_object_lock(|| {
            let session = self.pool.get()?;
            let template = [
                Attribute::Class(ObjectClass::DATA),
                Attribute::Label(label.as_bytes().to_vec()),
            ];
            let found = session
                .find_objects(&template)
                .map_err(session.failed("C_FindObjects"))?;
            let value_of = |handle| {
                let attrs = session
                    .get_attributes(handle, &[AttributeType::Value])
                    .map_err(session.failed("C_GetAttributeValue"))?;
                match attrs.into_iter().next() {
                    Some(Attribute::Value(v)) => Ok(v),
                    _ => Err(HsmError::KeyPolicy {
                        label: label.to_owned(),
                        problem: "the data object has no readable value".into(),
                    }),
                }
            };
            match found.as_slice() {
                [] => {
                    session
                        .create_object(&[
                            Attribute::Class(ObjectClass::DATA),
                            Attribute::Token(true),
                            Attribute::Private(true),
                            Attribute::Modifiable(false),
                            Attribute::Label(label.as_bytes().to_vec()),
                            Attribute::Value(value.to_vec()),
                        ])
                        .map_err(session.failed("C_CreateObject"))?;
                    Ok(value.to_vec())
                }
                // Nodes of a network HSM (no shared lock file) starting together may
                // each have made one: alike, they say one thing.
                many => {
                    let values = many
                        .iter()
                        .map(|h| value_of(*h))
                        .collect::<Result<Vec<_>, _>>()?;
                    if values.windows(2).all(|w| w[0] == w[1]) {
                        Ok(values.into_iter().next().unwrap_or_default())
                    } else {
                        Err(HsmError::KeyPolicy {
                            label: label.to_owned(),
                            problem: format!(
                                "{} data objects share this label and disagree",
                                many.len()
                            ),
                        })
                    }
                }
            }
        })
    }

    fn destroy_labelled_now(&self, label: &str) -> Result<usize, HsmError> {
        let session = self.pool.get()?;
        let handles = session
            .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
            .map_err(session.failed("C_FindObjects"))?;
        for h in &handles {
            session
                .destroy_object(*h)
                .map_err(session.failed("C_DestroyObject"))?;
        }
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| !k.ends_with(&format!("/{label}")));
        Ok(handles.len())
    }
}
