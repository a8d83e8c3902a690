-- Background jobs (TTL purge, and later rewrap or auto-rotation) run in one vault
-- process at a time: the process holding a job's lease runs it and renews the lease;
-- another takes over once the lease has expired.
CREATE TABLE job_leases (
    job          TEXT PRIMARY KEY,             -- the job's name (e.g. ttl-purge)
    holder       TEXT NOT NULL,                -- random id of the vault process holding it
    expires_at   REAL NOT NULL                 -- unix seconds; free after this
);
