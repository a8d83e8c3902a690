-- The tamper-evident audit trail and the vault-wide keys it needs (as sqlite/0002).

-- Vault-wide keys other than data and fingerprint keys (the audit key "audit:1").
CREATE TABLE service_keys (
    name         TEXT PRIMARY KEY,             -- what the key is for, with its version ("audit:1")
    wrapped_key  BYTEA NOT NULL,               -- the key wrapped by the master key (label = name)
    kek_id       TEXT NOT NULL,                -- name of the master key that wrapped it
    created_at   DOUBLE PRECISION NOT NULL     -- unix seconds
);

-- One row per audited event. Append-only (the triggers below); every row is chained to
-- the one before it by its MAC. Never holds a value.
CREATE TABLE audit_log (
    seq          BIGINT PRIMARY KEY,           -- position in the chain, from 1, without gaps
    time         DOUBLE PRECISION NOT NULL,    -- unix seconds the event happened
    caller       TEXT NOT NULL,                -- authenticated caller name; '' when unknown
    tenant       TEXT NOT NULL,                -- the caller's tenant; '' when unknown
    action       TEXT NOT NULL,                -- what was attempted (token.reveal, caller.add, ...)
    tokens       TEXT NOT NULL,                -- JSON array of the tokens acted on (never values)
    purpose      TEXT NOT NULL,                -- the reason given for a reveal; '' otherwise
    outcome      TEXT NOT NULL                 -- ok, denied (refused) or error (failed)
                 CHECK (outcome IN ('ok', 'denied', 'error')),
    reason       TEXT NOT NULL,                -- UPPER_SNAKE reason code; '' when ok
    request_id   TEXT NOT NULL,                -- the request's id (x-request-id or made up)
    peer         TEXT NOT NULL,                -- network peer of the call; '' for vaultctl
    detail       TEXT NOT NULL,                -- JSON array of [key, value] non-sensitive facts
    mac          BYTEA NOT NULL                -- HMAC-SHA-256(audit key, previous mac || record)
);

-- The sealed head: the last seq and a MAC over it, so rows cut off the end are noticed.
-- Appenders lock this row (SELECT ... FOR UPDATE) first: replicas extend one chain.
CREATE TABLE audit_head (
    id           INTEGER PRIMARY KEY CHECK (id = 1),  -- exactly one row
    seq          BIGINT NOT NULL,              -- seq of the newest record
    mac          BYTEA NOT NULL                -- HMAC(audit key, newest record's mac || head)
);

-- Append-only in the store too: changing or removing a record is refused.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
