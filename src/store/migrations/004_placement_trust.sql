-- Where placement put a run and why (JSON), and the receipt the executing node signed (a JSON envelope).
ALTER TABLE runs ADD COLUMN placement TEXT;
ALTER TABLE runs ADD COLUMN receipt TEXT;
-- How a run with verify.replicas was verified (JSON).
ALTER TABLE runs ADD COLUMN verification TEXT;
-- The nodes a run went to when it was placed again after losing one (JSON).
ALTER TABLE runs ADD COLUMN attempts TEXT;

-- What this node has observed of each peer's work: decayed good and bad weights, and plain counts per
-- outcome (JSON), as of updated_at (ms since the epoch).
CREATE TABLE reputation (
  peer        TEXT PRIMARY KEY,
  good        REAL NOT NULL,
  bad         REAL NOT NULL,
  counts      TEXT NOT NULL,
  updated_at  INTEGER NOT NULL
) STRICT;
