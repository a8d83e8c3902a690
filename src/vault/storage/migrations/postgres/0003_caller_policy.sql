-- Caller policy beyond scopes, and callers identified by a client certificate.
ALTER TABLE callers ADD COLUMN cert_identity TEXT;      -- mTLS identity (SAN URI or CN); NULL for API-key callers
ALTER TABLE callers ADD COLUMN reveal_kinds TEXT NOT NULL DEFAULT '';  -- comma-separated DataKind names it may reveal; '' = no kind restriction
ALTER TABLE callers ADD COLUMN reveal_rate DOUBLE PRECISION NOT NULL DEFAULT 0;  -- reveals per second refilled; 0 = no limit
ALTER TABLE callers ADD COLUMN reveal_burst INTEGER NOT NULL DEFAULT 0; -- bucket size in reveals; 0 = rate (at least 1)
CREATE UNIQUE INDEX callers_cert_identity ON callers (cert_identity) WHERE cert_identity IS NOT NULL;
