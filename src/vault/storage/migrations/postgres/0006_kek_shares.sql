-- Custodian shares of the master key (as sqlite/0006): only the non-secret facts of the
-- split. The shares themselves and the master key are never stored anywhere.
CREATE TABLE kek_shares (
    id           INTEGER PRIMARY KEY CHECK (id = 1),  -- exactly one row: one master key per store
    kek_id       TEXT NOT NULL,                -- public name of the master key the shares rebuild
    threshold    INTEGER NOT NULL              -- K: shares needed to rebuild it (2 <= K <= N)
                 CHECK (threshold >= 2),
    share_count  INTEGER NOT NULL              -- N: shares handed out (K <= N <= 255)
                 CHECK (share_count >= threshold AND share_count <= 255),
    verifiers    BYTEA NOT NULL,               -- N SHA-256 digests of the shares, in index order (a wrong share is refused before combining)
    created_at   DOUBLE PRECISION NOT NULL     -- unix seconds
);
