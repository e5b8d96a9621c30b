-- Runs, their events (state changes and log chunks) and node settings.
CREATE TABLE runs (
  id          TEXT PRIMARY KEY,
  state       TEXT NOT NULL,
  reason      TEXT,
  kind        TEXT NOT NULL,
  name        TEXT,
  driver      TEXT,
  node_id     TEXT NOT NULL,
  spec        TEXT NOT NULL,
  resources   TEXT NOT NULL,
  result      TEXT,
  created_at  TEXT NOT NULL,
  updated_at  TEXT NOT NULL,
  started_at  TEXT,
  ended_at    TEXT
) STRICT;
CREATE INDEX runs_by_state ON runs (state);
CREATE INDEX runs_by_created ON runs (created_at);

CREATE TABLE events (
  id      INTEGER PRIMARY KEY AUTOINCREMENT,
  run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
  ts      TEXT NOT NULL,
  type    TEXT NOT NULL,
  data    BLOB
) STRICT;
CREATE INDEX events_by_run ON events (run_id, id);

CREATE TABLE config (
  key    TEXT PRIMARY KEY,
  value  TEXT NOT NULL
) STRICT;
