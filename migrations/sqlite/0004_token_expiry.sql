-- Expired tokens are purged (retention): find them without scanning every row.
CREATE INDEX tokens_by_expiry ON tokens (expires_at) WHERE expires_at IS NOT NULL;
