-- Sandbox link subnets handed out by the address pool (src/net), by the run that holds them.
CREATE TABLE net_leases (
  subnet      TEXT PRIMARY KEY,
  owner       TEXT NOT NULL,
  created_at  TEXT NOT NULL
) STRICT;
CREATE INDEX net_leases_by_owner ON net_leases (owner);
