-- Key lifecycle: why a key changed state, which fingerprint key made a fingerprint,
-- and officer requests under dual control.
ALTER TABLE data_keys ADD COLUMN state_reason TEXT;
ALTER TABLE tokens ADD COLUMN fingerprint_version BIGINT;
UPDATE tokens SET fingerprint_version = 1 WHERE fingerprint IS NOT NULL;

CREATE TABLE officer_requests (
    id            TEXT PRIMARY KEY,
    operation     TEXT NOT NULL,
    params        TEXT NOT NULL,
    reason        TEXT,
    requester     TEXT NOT NULL,
    request_sig   BYTEA NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    state         TEXT NOT NULL,
    approver      TEXT,
    approval_sig  BYTEA,
    decided_at    BIGINT
);
