import assert from 'node:assert/strict';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { loadMigrations, migrate } from '../../src/store/migrate.ts';
import { Store, type RunRecord } from '../../src/store/store.ts';
import { tempDir } from '../helpers/tmp.ts';

const tmp = tempDir();
after(() => tmp.remove());

function record(id: string, createdAt: string): RunRecord {
  return {
    id,
    state: 'queued',
    kind: 'function',
    nodeId: 'node-test',
    spec: { kind: 'function', source: { inline: 'export default () => 1' } },
    resources: { vcpus: 0.1, memoryMiB: 64, diskMiB: 16, timeoutMs: 1000, network: { egressMbps: 0, ingressMbps: 0 } },
    createdAt,
    updatedAt: createdAt,
  };
}

describe('store', () => {
  it('migrates a new file to the newest version in WAL mode, and reopening changes nothing', () => {
    const file = path.join(tmp.dir, 'a.db');
    const newest = loadMigrations().at(-1)!.version;
    const store = new Store(file);
    assert.equal(store.db.pragma('user_version', { simple: true }), newest);
    assert.equal(store.db.pragma('journal_mode', { simple: true }), 'wal');
    store.insertRun(record('r1', '2026-01-01T00:00:00.000Z'));
    store.close();
    const again = new Store(file);
    assert.equal(again.getRun('r1')?.state, 'queued');
    again.close();
  });

  it('refuses a database from a newer vmesh', () => {
    const file = path.join(tmp.dir, 'future.db');
    const db = new Database(file);
    db.pragma('user_version = 999');
    db.close();
    assert.throws(() => new Store(file), /schema version 999, newer than this vmesh/);
  });

  it('applies only the migrations past the current version, each atomically', () => {
    const db = new Database(':memory:');
    const steps = [
      { version: 1, name: '001', sql: 'CREATE TABLE a (x INTEGER);' },
      { version: 2, name: '002', sql: 'CREATE TABLE b (x INTEGER); CREATE TABLE broken (;' },
    ];
    assert.throws(() => migrate(db, steps));
    assert.equal(db.pragma('user_version', { simple: true }), 1, 'the failed migration left version 1');
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").pluck().all();
    assert.deepEqual(tables, ['a'], 'nothing of the failed migration remains');
    db.close();
  });

  it('keeps runs, updates them, lists newest first, and pages', () => {
    const store = new Store(path.join(tmp.dir, 'b.db'));
    for (let i = 0; i < 5; i++) store.insertRun(record(`r${i}`, `2026-01-01T00:00:0${i}.000Z`));
    store.updateRun('r3', { state: 'succeeded', reason: 'fine', endedAt: '2026-01-01T00:01:00.000Z', result: { exitCode: 0, stdout: { text: 'x', bytes: 1, truncated: false }, stderr: { text: '', bytes: 0, truncated: false }, outputs: [], timings: { queuedMs: 0, startMs: 0, runMs: 1, totalMs: 1 }, usage: {} } });
    const r3 = store.getRun('r3')!;
    assert.equal(r3.state, 'succeeded');
    assert.equal(r3.result?.stdout.text, 'x');
    assert.deepEqual(store.listRuns({ limit: 2 }).map((r) => r.id), ['r4', 'r3']);
    assert.deepEqual(store.listRuns({ limit: 2, before: 'r3' }).map((r) => r.id), ['r2', 'r1']);
    assert.deepEqual(store.listRuns({ state: 'succeeded' }).map((r) => r.id), ['r3']);
    assert.deepEqual(store.liveRuns().map((r) => r.id), ['r0', 'r1', 'r2', 'r4']);
    store.close();
  });

  it('keeps events in order per run and returns them after a given id', () => {
    const store = new Store(path.join(tmp.dir, 'c.db'));
    store.insertRun(record('r', '2026-01-01T00:00:00.000Z'));
    const a = store.appendEvent('r', 'stdout', 'one');
    store.appendEvent('r', 'stderr', Buffer.from('two'));
    store.appendEvent('r', 'state', JSON.stringify({ state: 'running' }));
    const all = store.eventsAfter('r');
    assert.deepEqual(all.map((e) => [e.type, e.data.toString()]), [['stdout', 'one'], ['stderr', 'two'], ['state', '{"state":"running"}']]);
    assert.equal(store.eventsAfter('r', a).length, 2);
    store.close();
  });

  it('commits queued writes together, lets readers see them at once, and keeps event ids across reopening', async () => {
    const file = path.join(tmp.dir, 'd.db');
    const store = new Store(file);
    store.insertRun(record('r', '2026-01-01T00:00:00.000Z'));
    const first = store.appendEvent('r', 'stdout', 'a');
    const raw = new Database(file, { readonly: true });
    assert.equal(raw.prepare('SELECT COUNT(*) FROM events').pluck().get(), 0, 'nothing committed within the same turn');
    assert.equal(store.eventsAfter('r').length, 1, 'a read commits what is queued');
    await new Promise((resolve) => setImmediate(resolve));
    store.appendEvent('r', 'stdout', 'b');
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(raw.prepare('SELECT COUNT(*) FROM events').pluck().get(), 2, 'committed by the next turn without a read');
    raw.close();
    store.close();
    const again = new Store(file);
    assert.equal(again.appendEvent('r', 'stdout', 'c'), first + 2);
    again.close();
  });

  it('keeps the good writes of a batch when one write in it fails', () => {
    const failures: unknown[] = [];
    const store = new Store(path.join(tmp.dir, 'e.db'), (err) => failures.push(err));
    store.insertRun(record('x', '2026-01-01T00:00:00.000Z'));
    store.insertRun(record('x', '2026-01-01T00:00:01.000Z')); // duplicate id: fails
    store.insertRun(record('y', '2026-01-01T00:00:02.000Z'));
    assert.deepEqual(store.listRuns().map((r) => r.id).sort(), ['x', 'y']);
    assert.equal(failures.length, 1);
    assert.match(String(failures[0]), /UNIQUE/);
    store.close();
  });
});
