-- The reveal index: which audit records name a token (storage/sql/audit_index.py).
-- A reveal writes one chained record per call naming every token it revealed; this
-- table holds one row per distinct token of each token.reveal record, written in the
-- same transaction as the record, so a token's reveal history (ExportSubject) is a
-- lookup, not a scan of audit_log. Not part of the chain: derived from the records,
-- append-only like them, and checked against them by `vaultctl audit verify`.
CREATE TABLE audit_tokens (
    tenant       TEXT NOT NULL,                -- the record's tenant
    token        TEXT NOT NULL,                -- one token the record names (never a value)
    seq          INTEGER NOT NULL,             -- the record (audit_log.seq)
    PRIMARY KEY (tenant, token, seq)
) WITHOUT ROWID;
CREATE INDEX audit_tokens_seq ON audit_tokens (seq);

-- The records written before this migration (one per token then, any number now).
INSERT OR IGNORE INTO audit_tokens (tenant, token, seq)
SELECT a.tenant, j.value, a.seq
FROM audit_log AS a, json_each(a.tokens) AS j
WHERE a.action = 'token.reveal' AND json_valid(a.tokens) AND j.value <> '[not recorded]';

CREATE TRIGGER audit_tokens_no_update BEFORE UPDATE ON audit_tokens
BEGIN
    SELECT RAISE(ABORT, 'audit_tokens is append-only');
END;
CREATE TRIGGER audit_tokens_no_delete BEFORE DELETE ON audit_tokens
BEGIN
    SELECT RAISE(ABORT, 'audit_tokens is append-only');
END;
