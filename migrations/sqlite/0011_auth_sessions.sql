-- The Vault-compatible API (issue 16): `auth/cert/login` issues a short-lived session
-- token bound to the client certificate that logged in. The token itself is never stored:
-- a row holds its SHA-256 (the token carries 256 random bits, so a plain digest is a safe
-- lookup key), the identity, the SHA-256 thumbprint of the certificate (RFC 8705
-- `x5t#S256`) and its lifetime. All nodes of a vault share the rows, so a token issued by
-- one node is honoured, renewed and revoked on every other.
CREATE TABLE auth_sessions (
    token_digest   BLOB PRIMARY KEY,
    -- Public handle of the session (lookups, the audit trail): never the token.
    accessor       TEXT NOT NULL UNIQUE,
    identity       TEXT NOT NULL,
    thumbprint     BLOB NOT NULL,
    issued_at      INTEGER NOT NULL,
    -- The TTL each renewal grants, and the hard end no renewal goes past.
    ttl_ms         INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    max_expires_at INTEGER NOT NULL,
    revoked_at     INTEGER
);
-- The per-identity cap counts an identity's live sessions at login.
CREATE INDEX auth_sessions_by_identity ON auth_sessions (identity, expires_at);
-- Housekeeping deletes what has ended.
CREATE INDEX auth_sessions_by_end ON auth_sessions (max_expires_at);
