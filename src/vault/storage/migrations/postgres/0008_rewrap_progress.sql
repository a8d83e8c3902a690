-- Progress of the latest rewrap run (as sqlite/0008), kept in the store so that every
-- replica sharing it (not only the process running the rewrap, e.g. `vaultctl keys
-- rewrap`) can show it in key status and export it as metrics. One row, replaced when a
-- new run starts; a run killed midway leaves its row (finished_at NULL, lease gone):
-- "interrupted".
CREATE TABLE rewrap_progress (
    id              INTEGER PRIMARY KEY CHECK (id = 1),  -- the latest run only
    holder          TEXT NOT NULL,             -- random id of the run (its rewrap_lease holder)
    primary_version BIGINT NOT NULL,           -- the version records are moved to
    batch_size      BIGINT NOT NULL,           -- records per batch the run was asked for
    rate            DOUBLE PRECISION NOT NULL, -- records per second it was limited to; 0 = no limit
    started_at      DOUBLE PRECISION NOT NULL, -- unix seconds the run started
    last_batch_at   DOUBLE PRECISION NOT NULL, -- unix seconds of its last progress (a batch, or the start)
    finished_at     DOUBLE PRECISION,          -- unix seconds it completed; NULL while running or if killed
    batches         BIGINT NOT NULL,           -- batches done so far
    rewrapped       BIGINT NOT NULL,           -- rows moved to primary_version so far
    skipped         BIGINT NOT NULL,           -- rows changed or deleted meanwhile (compare-and-set lost)
    failed          BIGINT NOT NULL,           -- rows that did not decrypt (left as they are)
    remaining       BIGINT NOT NULL            -- rows still on older versions (estimate while running, exact when finished)
);
