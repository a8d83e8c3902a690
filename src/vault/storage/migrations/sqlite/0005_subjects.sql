-- Data subjects: legal holds, and retention per tenant and data kind.
-- (Per-subject keys are NOT here: they live in their own file, subject-keys.db, which
-- backups of this file must leave out; see storage/subject_keys_sqlite.py.)

-- Subjects under legal hold: their rows are neither erased nor purged (TTL, retention).
CREATE TABLE subject_holds (
    tenant       TEXT NOT NULL,                -- tenant of the subject
    subject_ref  BLOB NOT NULL,                -- HMAC of the subject id (as tokens.subject_ref)
    reason       TEXT NOT NULL,                -- why it is held, as the operator gave it
    held_at      REAL NOT NULL,                -- unix seconds the hold was set
    PRIMARY KEY (tenant, subject_ref)
) WITHOUT ROWID;

-- Maximum age of values, per tenant and data kind; read by every server's retention job.
CREATE TABLE retention_policies (
    tenant       TEXT NOT NULL,                -- tenant it applies to
    kind         INTEGER NOT NULL,             -- DataKind number
    max_age      REAL NOT NULL CHECK (max_age > 0),  -- seconds a value may be kept after creation
    set_at       REAL NOT NULL,                -- unix seconds the policy was set
    PRIMARY KEY (tenant, kind)
) WITHOUT ROWID;

-- What the retention job removed, per tenant and kind (the quarterly report reads it).
CREATE TABLE retention_purges (
    tenant        TEXT NOT NULL,               -- tenant of the purged rows
    kind          INTEGER NOT NULL,            -- DataKind number of the purged rows
    purged        INTEGER NOT NULL,            -- rows purged so far, in total
    last_purge_at REAL NOT NULL,               -- unix seconds of the last purge that removed rows
    PRIMARY KEY (tenant, kind)
) WITHOUT ROWID;

-- No index on tokens.created_at for retention: any further index on every row costs
-- tokenize ~10% CPU (measured). Rows are in insertion order (id) and created_at grows
-- with id, so the old rows are an id prefix the store finds by binary search.
