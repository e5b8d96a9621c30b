-- A run's network as the sandbox got it: its address and published ports (JSON), while it has one.
ALTER TABLE runs ADD COLUMN network TEXT;
