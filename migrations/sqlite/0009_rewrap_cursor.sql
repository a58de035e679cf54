-- The `keys rewrap` cursor (issue 15): each batch reads `keyring = ? AND (created_at,
-- token) > (?, ?)` in that order. With only tokens_by_key (keyring, key_version), every
-- batch read and sorted every remaining record of the keyring (a quadratic sweep); this
-- index starts each batch at the cursor and stops after the batch, already in order.
-- Creation order, not token order: it follows the order records were stored in, so a
-- batch touches neighbouring pages (src/store/rewrap.rs).
CREATE INDEX tokens_by_keyring_age ON tokens (keyring, created_at, token);
