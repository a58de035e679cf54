-- Signed checkpoints of the audit chain: (sequence, chain head, time) signed by the
-- HSM-held EC P-256 audit key, so truncation and rewriting are detectable offline.
CREATE TABLE audit_checkpoints (
    seq        BIGINT PRIMARY KEY,
    head_hash  BLOB NOT NULL,
    at         BIGINT NOT NULL,
    key_label  TEXT NOT NULL,
    signature  BLOB NOT NULL
);

-- Public halves of audit signing keys (SEC1 uncompressed), for verification without the HSM.
CREATE TABLE audit_keys (
    label       TEXT PRIMARY KEY,
    public_key  BLOB NOT NULL,
    created_at  BIGINT NOT NULL
);
