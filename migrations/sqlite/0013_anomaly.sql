-- Detokenize anomaly scoring (issue 17). Each identity's baseline of reveal behaviour,
-- serialized by the vault (JSON: counts, shares, the hour-of-day histogram, origins, and
-- a filter of SHA-256 bit positions of the tokens it revealed; never a value), so a
-- restart does not reset it and every node reads the same one.
CREATE TABLE anomaly_baselines (
    identity   TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
-- Reveal requests held for an officer's approval (step-up): who asked, from where, the
-- score and its reasons, and the tokens asked for (tokens, never values).
CREATE TABLE step_ups (
    id          TEXT PRIMARY KEY,
    identity    TEXT NOT NULL,
    origin      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    score       INTEGER NOT NULL,
    reasons     TEXT NOT NULL,
    tokens      TEXT NOT NULL,
    token_count INTEGER NOT NULL,
    -- pending, approved, denied, used
    state       TEXT NOT NULL,
    -- The officers' decision: the approved scope (a JSON array of tokens, or a count of
    -- any tokens), until when the client may use it, who decided and when, and when the
    -- client used it (once).
    scope_tokens TEXT,
    scope_count  INTEGER,
    valid_until  INTEGER,
    decided_by   TEXT,
    decided_at   INTEGER,
    decision     TEXT,
    used_at      INTEGER
);
CREATE INDEX step_ups_by_identity ON step_ups (identity, created_at);
-- Identities suspended by a block verdict, until an officer lifts the suspension.
CREATE TABLE suspensions (
    identity TEXT PRIMARY KEY,
    since    INTEGER NOT NULL,
    reasons  TEXT NOT NULL
);
