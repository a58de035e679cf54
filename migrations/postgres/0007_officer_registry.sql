-- Dual control anchored in the vault (issue 14, H3/M6): the officer registry lives here,
-- every change to it is itself an audited dual-control request, and every key lifecycle
-- command is a request that registered officers sign over its canonical text.

-- Every officer key ever registered. A public key is the primary key, so the same key can
-- never be registered twice (not under two names, not again after removal). An officer
-- has at most one active key; re-keying retires the old row. A row counts only if its
-- audit event and (after the first init) its signed request justify it.
CREATE TABLE officer_keys (
    public_key    BYTEA PRIMARY KEY,
    name          TEXT NOT NULL,
    state         TEXT NOT NULL,
    registered_at BIGINT NOT NULL,
    retired_at    BIGINT,
    audit_seq     BIGINT NOT NULL,
    -- The executed add or re-key request whose signatures justify this key (NULL: one of
    -- the first officers, registered together by the first init).
    request_id    TEXT
);
CREATE UNIQUE INDEX officer_keys_one_active ON officer_keys (name) WHERE state = 'active';

-- Requests of the earlier format (signed over a newline-joined text, approved with a
-- private key on the vault host) cannot be approved any more: they are dropped.
DROP TABLE officer_requests;

-- A request is the canonical JSON document every signature covers.
CREATE TABLE officer_requests (
    id          TEXT PRIMARY KEY,
    document    TEXT NOT NULL,
    operation   TEXT NOT NULL,
    required    BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    state       TEXT NOT NULL,
    decided_at  BIGINT
);

CREATE TABLE officer_signatures (
    request_id  TEXT NOT NULL,
    public_key  BYTEA NOT NULL,
    officer     TEXT NOT NULL,
    signature   BYTEA NOT NULL,
    signed_at   BIGINT NOT NULL,
    PRIMARY KEY (request_id, public_key)
);
