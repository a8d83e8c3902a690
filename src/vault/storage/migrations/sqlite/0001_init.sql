-- Initial schema. Every column says what it holds; the store never holds plaintext.

-- Data-key versions. A record names the version that encrypted it.
CREATE TABLE key_versions (
    version      INTEGER PRIMARY KEY,          -- data-key version number
    state        TEXT NOT NULL                 -- primary: encrypts; active: decrypts only; retired: destroyed
                 CHECK (state IN ('primary', 'active', 'retired')),
    wrapped_key  BLOB,                         -- DEK wrapped by the master key; NULL once retired
    kek_id       TEXT NOT NULL,                -- name of the master key that wrapped it
    created_at   REAL NOT NULL,                -- unix seconds
    encryptions  INTEGER NOT NULL DEFAULT 0    -- encryptions so far (random-nonce GCM budget)
);
-- At most one primary version.
CREATE UNIQUE INDEX key_versions_one_primary ON key_versions (state) WHERE state = 'primary';

-- Per-tenant fingerprint keys, separate from data keys so fingerprints survive rotation.
CREATE TABLE fingerprint_keys (
    tenant       TEXT PRIMARY KEY,             -- the tenant
    wrapped_key  BLOB NOT NULL,                -- HMAC key wrapped by the master key
    kek_id       TEXT NOT NULL,                -- name of the master key that wrapped it
    created_at   REAL NOT NULL                 -- unix seconds
);

-- Tokens. A rowid table: the time-ordered rowid makes inserts appends, and the random
-- token lives in a narrow secondary index (the note in PERFORMANCE-NOTES on random keys).
CREATE TABLE tokens (
    id            INTEGER PRIMARY KEY,         -- insertion order; never exposed
    token         TEXT NOT NULL,               -- the token handed out
    tenant        TEXT NOT NULL,               -- owning tenant
    kind          INTEGER NOT NULL,            -- DataKind number
    token_format  INTEGER NOT NULL,            -- TokenFormat number
    key_version   INTEGER NOT NULL             -- data-key version of ciphertext
                  REFERENCES key_versions (version),
    ciphertext    BLOB NOT NULL,               -- nonce || AES-256-GCM(value, metadata, subject) || tag
    fingerprint   BLOB NOT NULL,               -- HMAC-SHA-256 of the value (tenant fingerprint key)
    deterministic INTEGER NOT NULL,            -- 1 when created deterministic
    subject_ref   BLOB,                        -- HMAC of the subject id; NULL when none
    request_id    TEXT,                        -- caller's idempotency key; NULL when none
    request_hash  BLOB,                        -- HMAC of the request that used request_id
    created_at    REAL NOT NULL,               -- unix seconds
    expires_at    REAL                         -- unix seconds; NULL = never
);
CREATE UNIQUE INDEX tokens_token ON tokens (token);
-- Only deterministic rows are indexed by fingerprint: a random index on every row
-- halves insert throughput at a million rows.
CREATE UNIQUE INDEX tokens_deterministic ON tokens (tenant, kind, token_format, fingerprint)
    WHERE deterministic = 1;
CREATE UNIQUE INDEX tokens_request ON tokens (tenant, request_id) WHERE request_id IS NOT NULL;
CREATE INDEX tokens_subject ON tokens (tenant, subject_ref) WHERE subject_ref IS NOT NULL;
CREATE INDEX tokens_expiry ON tokens (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX tokens_key_version ON tokens (key_version);

-- Request ids answered by an existing deterministic token rather than a new row: the
-- id stays reserved for that request (a row's own request id lives in tokens).
CREATE TABLE request_ids (
    tenant       TEXT NOT NULL,                -- tenant of the request
    request_id   TEXT NOT NULL,                -- caller's idempotency key
    request_hash BLOB NOT NULL,                -- HMAC of the request that used it
    token        TEXT NOT NULL                 -- the token it was answered with
                 REFERENCES tokens (token) ON DELETE CASCADE,
    PRIMARY KEY (tenant, request_id)
) WITHOUT ROWID;
CREATE INDEX request_ids_token ON request_ids (token);

-- Callers with API keys. Only a hash of the secret half is stored.
CREATE TABLE callers (
    name        TEXT PRIMARY KEY,              -- unique caller name
    tenant      TEXT NOT NULL,                 -- tenant it works in
    scopes      TEXT NOT NULL,                 -- comma-separated scopes
    key_id      TEXT UNIQUE,                   -- public half of the API key (lookup)
    key_hash    BLOB,                          -- SHA-256 of the secret half
    created_at  REAL NOT NULL,                 -- unix seconds
    expires_at  REAL,                          -- unix seconds; NULL = never
    revoked_at  REAL                           -- unix seconds; NULL = valid
);
