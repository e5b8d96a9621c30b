import Database from 'better-sqlite3';
import type { LiveState, ResolvedResources, Run, RunResult, RunState, Workload } from '../spec/index.ts';
import { migrate } from './migrate.ts';

/** What the store keeps of a run: the public Run plus the spec it was submitted with. */
export interface RunRecord extends Run {
  spec: Workload;
}

export type RunPatch = Partial<Pick<RunRecord, 'state' | 'reason' | 'driver' | 'result' | 'startedAt' | 'endedAt'>>;

export type EventType = 'state' | 'stdout' | 'stderr';

export interface StoredEvent {
  id: number;
  runId: string;
  ts: string;
  type: EventType;
  data: Buffer;
}

export interface ListRunsQuery {
  state?: RunState;
  limit?: number;
  /** Only runs created before this run id (paging, newest first). */
  before?: string;
}

interface RunRow {
  id: string;
  state: RunState;
  reason: string | null;
  kind: string;
  name: string | null;
  driver: string | null;
  node_id: string;
  spec: string;
  resources: string;
  result: string | null;
  created_at: string;
  updated_at: string;
  started_at: string | null;
  ended_at: string | null;
}

const LIVE_STATES: LiveState[] = ['queued', 'placed', 'starting', 'running'];

/** The node's SQLite store (WAL mode): runs, their events, and node settings. */
export class Store {
  readonly db: Database.Database;
  private readonly stmts;

  constructor(readonly file: string) {
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('busy_timeout = 5000');
    migrate(this.db);
    this.stmts = {
      insertRun: this.db.prepare(
        `INSERT INTO runs (id, state, reason, kind, name, driver, node_id, spec, resources, result, created_at, updated_at, started_at, ended_at)
         VALUES (@id, @state, @reason, @kind, @name, @driver, @node_id, @spec, @resources, @result, @created_at, @updated_at, @started_at, @ended_at)`,
      ),
      getRun: this.db.prepare('SELECT * FROM runs WHERE id = ?'),
      liveRuns: this.db.prepare(`SELECT * FROM runs WHERE state IN (${LIVE_STATES.map(() => '?').join(',')}) ORDER BY created_at`),
      insertEvent: this.db.prepare('INSERT INTO events (run_id, ts, type, data) VALUES (?, ?, ?, ?)'),
      eventsAfter: this.db.prepare('SELECT id, run_id AS runId, ts, type, data FROM events WHERE run_id = ? AND id > ? ORDER BY id LIMIT ?'),
      getConfig: this.db.prepare('SELECT value FROM config WHERE key = ?'),
      setConfig: this.db.prepare('INSERT INTO config (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value'),
      countByState: this.db.prepare('SELECT state, COUNT(*) AS n FROM runs GROUP BY state'),
    };
  }

  insertRun(run: RunRecord): void {
    this.stmts.insertRun.run({
      id: run.id,
      state: run.state,
      reason: run.reason ?? null,
      kind: run.kind,
      name: run.name ?? null,
      driver: run.driver ?? null,
      node_id: run.nodeId,
      spec: JSON.stringify(run.spec),
      resources: JSON.stringify(run.resources),
      result: run.result === undefined ? null : JSON.stringify(run.result),
      created_at: run.createdAt,
      updated_at: run.updatedAt,
      started_at: run.startedAt ?? null,
      ended_at: run.endedAt ?? null,
    });
  }

  updateRun(id: string, patch: RunPatch, updatedAt = new Date().toISOString()): void {
    const sets: string[] = ['updated_at = @updated_at'];
    const params: Record<string, unknown> = { id, updated_at: updatedAt };
    const columns: Record<keyof RunPatch, string> = {
      state: 'state',
      reason: 'reason',
      driver: 'driver',
      result: 'result',
      startedAt: 'started_at',
      endedAt: 'ended_at',
    };
    for (const [key, column] of Object.entries(columns) as Array<[keyof RunPatch, string]>) {
      if (!(key in patch)) continue;
      const value = patch[key];
      sets.push(`${column} = @${column}`);
      params[column] = value === undefined ? null : key === 'result' ? JSON.stringify(value) : value;
    }
    this.db.prepare(`UPDATE runs SET ${sets.join(', ')} WHERE id = @id`).run(params);
  }

  getRun(id: string): RunRecord | undefined {
    const row = this.stmts.getRun.get(id) as RunRow | undefined;
    return row === undefined ? undefined : fromRow(row);
  }

  listRuns(query: ListRunsQuery = {}): RunRecord[] {
    const where: string[] = [];
    const params: unknown[] = [];
    if (query.state !== undefined) {
      where.push('state = ?');
      params.push(query.state);
    }
    if (query.before !== undefined) {
      where.push('created_at < (SELECT created_at FROM runs WHERE id = ?)');
      params.push(query.before);
    }
    const sql = `SELECT * FROM runs ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at DESC, id DESC LIMIT ?`;
    params.push(Math.min(Math.max(query.limit ?? 50, 1), 1000));
    return (this.db.prepare(sql).all(...params) as RunRow[]).map(fromRow);
  }

  liveRuns(): RunRecord[] {
    return (this.stmts.liveRuns.all(...LIVE_STATES) as RunRow[]).map(fromRow);
  }

  countByState(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const row of this.stmts.countByState.all() as Array<{ state: string; n: number }>) out[row.state] = row.n;
    return out;
  }

  appendEvent(runId: string, type: EventType, data: Uint8Array | string, ts = new Date().toISOString()): number {
    const info = this.stmts.insertEvent.run(runId, ts, type, typeof data === 'string' ? Buffer.from(data) : Buffer.from(data));
    return Number(info.lastInsertRowid);
  }

  eventsAfter(runId: string, afterId = 0, limit = 1000): StoredEvent[] {
    return this.stmts.eventsAfter.all(runId, afterId, limit) as StoredEvent[];
  }

  getConfig(key: string): string | undefined {
    return (this.stmts.getConfig.get(key) as { value: string } | undefined)?.value;
  }

  setConfig(key: string, value: string): void {
    this.stmts.setConfig.run(key, value);
  }

  /** Runs several writes as one transaction (one fsync in WAL mode). */
  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}

function fromRow(row: RunRow): RunRecord {
  const run: RunRecord = {
    id: row.id,
    state: row.state,
    kind: row.kind,
    nodeId: row.node_id,
    spec: JSON.parse(row.spec) as Workload,
    resources: JSON.parse(row.resources) as ResolvedResources,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
  if (row.reason !== null) run.reason = row.reason;
  if (row.name !== null) run.name = row.name;
  if (row.driver !== null) run.driver = row.driver;
  if (row.result !== null) run.result = JSON.parse(row.result) as RunResult;
  if (row.started_at !== null) run.startedAt = row.started_at;
  if (row.ended_at !== null) run.endedAt = row.ended_at;
  return run;
}
