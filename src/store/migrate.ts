import { readdirSync, readFileSync } from 'node:fs';
import type Database from 'better-sqlite3';

const MIGRATIONS = new URL('./migrations/', import.meta.url);

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** The numbered SQL files in migrations/, in order: `001_init.sql` is version 1. */
export function loadMigrations(dir: URL = MIGRATIONS): Migration[] {
  return readdirSync(dir)
    .filter((f) => /^\d+_.+\.sql$/.test(f))
    .map((f) => ({ version: Number.parseInt(f, 10), name: f, sql: readFileSync(new URL(f, dir), 'utf8') }))
    .sort((a, b) => a.version - b.version);
}

/**
 * Brings the database to the newest schema. The applied version lives in `PRAGMA user_version`;
 * each migration runs in its own transaction together with the bump, so a failure leaves the last
 * good version in place. A database newer than this code is refused rather than misread.
 */
export function migrate(db: Database.Database, migrations: Migration[] = loadMigrations()): number {
  const current = db.pragma('user_version', { simple: true }) as number;
  const newest = migrations.at(-1)?.version ?? 0;
  if (current > newest) {
    throw new Error(`the store is at schema version ${current}, newer than this vmesh (${newest}); upgrade vmesh`);
  }
  for (const m of migrations) {
    if (m.version <= current) continue;
    db.transaction(() => {
      db.exec(m.sql);
      db.pragma(`user_version = ${m.version}`);
    })();
  }
  return db.pragma('user_version', { simple: true }) as number;
}
