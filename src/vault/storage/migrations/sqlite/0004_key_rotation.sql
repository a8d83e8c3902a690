-- Data-key rotation: the one-rewrap-at-a-time lease, and no record under a destroyed key.

-- At most one `vaultctl keys rewrap` per store: the holder renews the expiry per batch;
-- a holder that died is replaced once its expiry has passed.
CREATE TABLE rewrap_lease (
    id           INTEGER PRIMARY KEY CHECK (id = 1),  -- exactly one row while held
    holder       TEXT NOT NULL,                -- random id of the rewrap run holding it
    expires_at   REAL NOT NULL                 -- unix seconds; free after this
);

-- A record can never name a retired (destroyed) key version, whoever writes it.
CREATE TRIGGER tokens_no_retired_key_insert BEFORE INSERT ON tokens
WHEN (SELECT state FROM key_versions WHERE version = NEW.key_version) = 'retired'
BEGIN
    SELECT RAISE(ABORT, 'key version is retired');
END;
CREATE TRIGGER tokens_no_retired_key_update BEFORE UPDATE OF key_version ON tokens
WHEN (SELECT state FROM key_versions WHERE version = NEW.key_version) = 'retired'
BEGIN
    SELECT RAISE(ABORT, 'key version is retired');
END;
