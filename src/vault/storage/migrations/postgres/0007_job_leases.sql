-- Background jobs (TTL purge, and later rewrap or auto-rotation) run on one vault
-- replica at a time: the replica holding a job's lease runs it and renews the lease;
-- another replica takes over once the lease has expired.
CREATE TABLE job_leases (
    job          TEXT PRIMARY KEY,             -- the job's name (e.g. ttl-purge)
    holder       TEXT NOT NULL,                -- random id of the vault process holding it
    expires_at   DOUBLE PRECISION NOT NULL     -- unix seconds; free after this
);
