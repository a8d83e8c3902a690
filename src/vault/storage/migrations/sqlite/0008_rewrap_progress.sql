-- Progress of the latest rewrap run, kept in the store so that every server sharing it
-- (not only the process running the rewrap, e.g. `vaultctl keys rewrap`) can show it in
-- key status and export it as metrics. One row, replaced when a new run starts; a run
-- killed midway leaves its row (finished_at NULL, lease gone): "interrupted".
CREATE TABLE rewrap_progress (
    id              INTEGER PRIMARY KEY CHECK (id = 1),  -- the latest run only
    holder          TEXT NOT NULL,             -- random id of the run (its rewrap_lease holder)
    primary_version INTEGER NOT NULL,          -- the version records are moved to
    batch_size      INTEGER NOT NULL,          -- records per batch the run was asked for
    rate            REAL NOT NULL,             -- records per second it was limited to; 0 = no limit
    started_at      REAL NOT NULL,             -- unix seconds the run started
    last_batch_at   REAL NOT NULL,             -- unix seconds of its last progress (a batch, or the start)
    finished_at     REAL,                      -- unix seconds it completed; NULL while running or if killed
    batches         INTEGER NOT NULL,          -- batches done so far
    rewrapped       INTEGER NOT NULL,          -- rows moved to primary_version so far
    skipped         INTEGER NOT NULL,          -- rows changed or deleted meanwhile (compare-and-set lost)
    failed          INTEGER NOT NULL,          -- rows that did not decrypt (left as they are)
    remaining       INTEGER NOT NULL           -- rows still on older versions (estimate while running, exact when finished)
);
