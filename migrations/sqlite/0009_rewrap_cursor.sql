-- The `keys rewrap` cursor (issue 15): each batch reads `keyring = ? AND token > ?` in
-- token order. With only tokens_by_key (keyring, key_version), every batch read and
-- sorted every remaining record of the keyring (a quadratic sweep); this index starts
-- each batch at the cursor and stops after the batch, already in order.
CREATE INDEX tokens_by_keyring_token ON tokens (keyring, token);
