-- Data subjects: legal holds, and retention per tenant and data kind (as sqlite/0005).
-- (Per-subject keys are NOT here: they live in a database of their own, named by
-- subject_key_database_url, which backups and WAL archives of this one never hold; see
-- storage/subject_keys_postgres.py.)

-- Subjects under legal hold: their rows are neither erased nor purged (TTL, retention).
-- Setting a hold locks the subject's token rows FOR KEY SHARE; erasure and the purges
-- lock rows FOR UPDATE before they look for holds, so a hold is never missed.
CREATE TABLE subject_holds (
    tenant       TEXT NOT NULL,                -- tenant of the subject
    subject_ref  BYTEA NOT NULL,               -- HMAC of the subject id (as tokens.subject_ref)
    reason       TEXT NOT NULL,                -- why it is held, as the operator gave it
    held_at      DOUBLE PRECISION NOT NULL,    -- unix seconds the hold was set
    PRIMARY KEY (tenant, subject_ref)
);

-- Maximum age of values, per tenant and data kind; read by every replica's retention job
-- (one replica at a time runs it: the retention-purge job lease).
CREATE TABLE retention_policies (
    tenant       TEXT NOT NULL,                -- tenant it applies to
    kind         INTEGER NOT NULL,             -- DataKind number
    max_age      DOUBLE PRECISION NOT NULL CHECK (max_age > 0),  -- seconds a value may be kept after creation
    set_at       DOUBLE PRECISION NOT NULL,    -- unix seconds the policy was set
    PRIMARY KEY (tenant, kind)
);

-- What the retention job removed, per tenant and kind (the quarterly report reads it).
CREATE TABLE retention_purges (
    tenant        TEXT NOT NULL,               -- tenant of the purged rows
    kind          INTEGER NOT NULL,            -- DataKind number of the purged rows
    purged        BIGINT NOT NULL,             -- rows purged so far, in total
    last_purge_at DOUBLE PRECISION NOT NULL,   -- unix seconds of the last purge that removed rows
    PRIMARY KEY (tenant, kind)
);

-- No index on tokens.created_at for retention (as in SQLite: one more index on every row
-- costs every tokenize). Rows are numbered in insertion order (id) and created_at grows
-- with id, so the old rows are an id prefix the store finds by binary search.
