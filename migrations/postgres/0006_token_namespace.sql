-- The token namespace whose lookup fingerprint a deterministic record carries (NULL: the
-- shared namespace of every value tokenized before namespaces existed). Re-indexing
-- after a fingerprint key rotation needs it to recompute the fingerprint.
ALTER TABLE tokens ADD COLUMN fingerprint_namespace TEXT;
