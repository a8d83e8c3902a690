-- The sealed head of the audit chain moves only forward: the writer raises its seq on
-- every append and never removes it. A head cut back (to hide rows cut off the end) or
-- removed is refused here; someone with the file can still drop these triggers, which
-- `vaultctl audit verify` (and the writer, which then refuses to append) detects.
CREATE TRIGGER audit_head_forward_only BEFORE UPDATE ON audit_head
WHEN NEW.id <> OLD.id OR NEW.seq <= OLD.seq
BEGIN
    SELECT RAISE(ABORT, 'audit_head moves only forward');
END;
CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
BEGIN
    SELECT RAISE(ABORT, 'audit_head cannot be removed');
END;
