-- The reveal index: which audit records name a token (as sqlite/0013).
-- One row per distinct token of each token.reveal record, written in the same
-- transaction as the record; a token's reveal history is a lookup, not a scan.
-- Not part of the chain: derived from the records, append-only like them, and checked
-- against them by `vaultctl audit verify`.
CREATE TABLE audit_tokens (
    tenant       TEXT NOT NULL,                -- the record's tenant
    token        TEXT NOT NULL,                -- one token the record names (never a value)
    seq          BIGINT NOT NULL,              -- the record (audit_log.seq)
    PRIMARY KEY (tenant, token, seq)
);
CREATE INDEX audit_tokens_seq ON audit_tokens (seq);

-- The records written before this migration (one per token then, any number now).
INSERT INTO audit_tokens (tenant, token, seq)
SELECT DISTINCT a.tenant, t.token, a.seq
FROM audit_log AS a CROSS JOIN LATERAL json_array_elements_text(a.tokens::json) AS t(token)
WHERE a.action = 'token.reveal' AND t.token <> '[not recorded]'
ON CONFLICT DO NOTHING;

CREATE TRIGGER audit_tokens_no_update BEFORE UPDATE ON audit_tokens
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_tokens_no_delete BEFORE DELETE ON audit_tokens
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_tokens_no_truncate BEFORE TRUNCATE ON audit_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION audit_no_truncate();
