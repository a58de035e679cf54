-- Facts about the vault itself, set once (issue 18): `environment` is `production` or
-- `nonproduction`, recorded the first time a vault opens the database; a vault whose
-- config says otherwise refuses to open it.
CREATE TABLE vault_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Every checkpoint signs the environment too (format v3); older ones have none.
ALTER TABLE audit_checkpoints ADD COLUMN environment TEXT;
