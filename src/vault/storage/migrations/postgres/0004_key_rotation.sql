-- Data-key rotation: the one-rewrap-at-a-time lease, and no record under a destroyed key.

-- At most one `vaultctl keys rewrap` per store: the holder renews the expiry per batch;
-- a holder that died is replaced once its expiry has passed.
CREATE TABLE rewrap_lease (
    id           INTEGER PRIMARY KEY CHECK (id = 1),  -- exactly one row while held
    holder       TEXT NOT NULL,                -- random id of the rewrap run holding it
    expires_at   DOUBLE PRECISION NOT NULL     -- unix seconds; free after this
);

-- A record can never name a retired (destroyed) key version, whoever writes it. FOR KEY
-- SHARE holds the version row until commit: a concurrent retire (SELECT ... FOR UPDATE)
-- waits for this insert and then sees its row; the counter updates of other inserts
-- (FOR NO KEY UPDATE) do not conflict with it, so inserters never deadlock.
CREATE FUNCTION tokens_no_retired_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT state FROM key_versions WHERE version = NEW.key_version FOR KEY SHARE) = 'retired' THEN
        RAISE EXCEPTION 'key version is retired' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER tokens_no_retired_key_insert BEFORE INSERT ON tokens
    FOR EACH ROW EXECUTE FUNCTION tokens_no_retired_key();
CREATE TRIGGER tokens_no_retired_key_update BEFORE UPDATE OF key_version ON tokens
    FOR EACH ROW EXECUTE FUNCTION tokens_no_retired_key();
