-- Transit signing keys (issue 16): key pairs generated inside the HSM, one token object
-- pair per version. The private half never leaves the HSM; a row records the version's
-- label there, its public key (SEC1 point for ecdsa-p256, the 32-byte key for ed25519),
-- and its state. Versions are never overwritten: a rotation adds one.
CREATE TABLE signing_keys (
    name             TEXT NOT NULL,
    version          INTEGER NOT NULL,
    algorithm        TEXT NOT NULL,
    -- `active` (signs) or `verify_only` (an older version: verifies, never signs).
    state            TEXT NOT NULL,
    hsm_label        TEXT NOT NULL UNIQUE,
    public_key       BLOB NOT NULL,
    created_at       INTEGER NOT NULL,
    state_changed_at INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);
