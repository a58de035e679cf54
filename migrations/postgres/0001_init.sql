-- Key-encryption keys: the key itself lives in the HSM; this row records its lifecycle.
CREATE TABLE keks (
    label       TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT
);

-- Data keys: one row per keyring version, stored only wrapped by a KEK.
CREATE TABLE data_keys (
    keyring              TEXT NOT NULL,
    version              BIGINT NOT NULL,
    state                TEXT NOT NULL,
    algorithm            TEXT NOT NULL,
    wrapped_key          BYTEA,
    wrap_mechanism       TEXT NOT NULL,
    kek_label            TEXT NOT NULL REFERENCES keks (label),
    kcv                  TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    activated_at         BIGINT,
    cryptoperiod_ends_at BIGINT NOT NULL,
    state_changed_at     BIGINT NOT NULL,
    usage_count          BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (keyring, version)
);

-- Tokens: the value only as AES-GCM ciphertext bound (AAD) to token, keyring and version.
CREATE TABLE tokens (
    token        TEXT PRIMARY KEY,
    token_type   TEXT NOT NULL,
    keyring      TEXT NOT NULL,
    key_version  BIGINT NOT NULL,
    ciphertext   BYTEA NOT NULL,
    fingerprint  BYTEA,
    masked       TEXT NOT NULL,
    metadata     TEXT,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT
);
-- Deterministic types store a keyed fingerprint; NULLs (random types) never collide.
CREATE UNIQUE INDEX tokens_by_fingerprint ON tokens (token_type, fingerprint);
CREATE INDEX tokens_by_key ON tokens (keyring, key_version);

-- The audit trail: a hash chain; audit_head holds its tip and serializes appends.
CREATE TABLE audit_events (
    seq        BIGINT PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    resource   TEXT,
    origin     TEXT,
    reason     TEXT,
    prev_hash  BYTEA NOT NULL,
    hash       BYTEA NOT NULL
);
CREATE TABLE audit_head (
    id    BIGINT PRIMARY KEY,
    seq   BIGINT NOT NULL,
    hash  BYTEA NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
