-- Chained checkpoints (format v2): each checkpoint signs the digest of the one before it,
-- so a deleted checkpoint row breaks the link of the next. NULL: a v1 checkpoint, made
-- before the chain; it still verifies by its own signature.
ALTER TABLE audit_checkpoints ADD COLUMN prev_digest BYTEA;
