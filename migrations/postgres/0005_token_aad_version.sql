-- Which AAD a token's ciphertext was sealed with: 1 binds keyring, version and token;
-- 2 also binds the type, the expiry and a digest of the metadata. Rewrap upgrades 1 to 2.
ALTER TABLE tokens ADD COLUMN aad_version BIGINT NOT NULL DEFAULT 1;
