import Database from 'better-sqlite3';
import type { LiveState, ResolvedResources, Run, RunResult, RunState, Workload } from '../spec/index.ts';
import type { LeaseStore } from '../net/address-pool.ts';
import { migrate } from './migrate.ts';

/** What the store keeps of a run: the public Run plus the spec it was submitted with. */
export interface RunRecord extends Run {
  spec: Workload;
}

export type RunPatch = Partial<Pick<RunRecord, 'state' | 'reason' | 'driver' | 'result' | 'startedAt' | 'endedAt' | 'network' | 'placement' | 'receipt' | 'nodeId' | 'verification' | 'attempts'>>;

/** One row of what this node has observed of a peer (see src/trust/reputation.ts). */
export interface ReputationRow {
  peer: string;
  good: number;
  bad: number;
  counts: Record<string, number>;
  updatedAt: number;
}

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
  network: string | null;
  placement: string | null;
  receipt: string | null;
  verification: string | null;
  attempts: string | null;
}

const LIVE_STATES: LiveState[] = ['queued', 'placed', 'starting', 'running'];

/**
 * The node's SQLite store (WAL mode): runs, their events, and node settings.
 *
 * Writes are queued and committed together once per turn of the event loop (one transaction instead of
 * a dozen per run); every read commits what is queued first, so readers always see every write made
 * before them. Event ids are assigned when the event is queued.
 */
export class Store implements LeaseStore {
  readonly db: Database.Database;
  private readonly stmts;
  private readonly updates = new Map<string, Database.Statement>();
  private readonly queued: Array<() => void> = [];
  /** Updates of one run queued in the same turn are merged into one UPDATE. */
  private readonly pendingUpdates = new Map<string, { patch: RunPatch; updatedAt: string }>();
  private flushScheduled = false;
  private nextEventId: number;

  constructor(
    readonly file: string,
    private readonly onWriteError: (err: unknown) => void = (err) => {
      throw err;
    },
  ) {
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('busy_timeout = 5000');
    migrate(this.db);
    this.stmts = {
      insertRun: this.db.prepare(
        `INSERT INTO runs (id, state, reason, kind, name, driver, node_id, spec, resources, result, created_at, updated_at, started_at, ended_at, placement)
         VALUES (@id, @state, @reason, @kind, @name, @driver, @node_id, @spec, @resources, @result, @created_at, @updated_at, @started_at, @ended_at, @placement)`,
      ),
      getRun: this.db.prepare('SELECT * FROM runs WHERE id = ?'),
      liveRuns: this.db.prepare(`SELECT * FROM runs WHERE state IN (${LIVE_STATES.map(() => '?').join(',')}) ORDER BY created_at`),
      insertEvent: this.db.prepare('INSERT INTO events (id, run_id, ts, type, data) VALUES (?, ?, ?, ?, ?)'),
      eventsAfter: this.db.prepare('SELECT id, run_id AS runId, ts, type, data FROM events WHERE run_id = ? AND id > ? ORDER BY id LIMIT ?'),
      getConfig: this.db.prepare('SELECT value FROM config WHERE key = ?'),
      claimLease: this.db.prepare('INSERT OR IGNORE INTO net_leases (subnet, owner, created_at) VALUES (?, ?, ?)'),
      releaseLeases: this.db.prepare('DELETE FROM net_leases WHERE owner = ?'),
      releaseAllLeases: this.db.prepare('DELETE FROM net_leases'),
      leasedSubnets: this.db.prepare('SELECT subnet FROM net_leases').pluck(),
      listReputation: this.db.prepare('SELECT peer, good, bad, counts, updated_at AS updatedAt FROM reputation'),
      putReputation: this.db.prepare(
        `INSERT INTO reputation (peer, good, bad, counts, updated_at) VALUES (@peer, @good, @bad, @counts, @updatedAt)
         ON CONFLICT (peer) DO UPDATE SET good = excluded.good, bad = excluded.bad, counts = excluded.counts, updated_at = excluded.updated_at`,
      ),
      setConfig: this.db.prepare('INSERT INTO config (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value'),
    };
    this.nextEventId = ((this.db.prepare('SELECT MAX(id) AS id FROM events').get() as { id: number | null }).id ?? 0) + 1;
  }

  /** Commits every queued write now, as one transaction. */
  flush(): void {
    this.flushScheduled = false;
    if (this.queued.length === 0 && this.pendingUpdates.size === 0) return;
    const batch = this.queued.splice(0);
    for (const [id, { patch, updatedAt }] of this.pendingUpdates) batch.push(this.updateStatement(id, patch, updatedAt));
    this.pendingUpdates.clear();
    try {
      this.db.transaction(() => batch.forEach((write) => write()))();
    } catch {
      // One bad write must not take the others with it: apply them one by one and report the failures.
      for (const write of batch) {
        try {
          write();
        } catch (err) {
          this.onWriteError(err);
        }
      }
    }
  }

  private write(fn?: () => void): void {
    if (fn !== undefined) this.queued.push(fn);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  insertRun(run: RunRecord): void {
    const row = {
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
      placement: run.placement === undefined ? null : JSON.stringify(run.placement),
    };
    this.write(() => this.stmts.insertRun.run(row));
  }

  updateRun(id: string, patch: RunPatch, updatedAt = new Date().toISOString()): void {
    const pending = this.pendingUpdates.get(id);
    if (pending === undefined) this.pendingUpdates.set(id, { patch: { ...patch }, updatedAt });
    else {
      Object.assign(pending.patch, patch);
      pending.updatedAt = updatedAt;
    }
    this.write();
  }

  private updateStatement(id: string, patch: RunPatch, updatedAt: string): () => void {
    const sets: string[] = ['updated_at = @updated_at'];
    const params: Record<string, unknown> = { id, updated_at: updatedAt };
    const columns: Record<keyof RunPatch, string> = {
      state: 'state',
      reason: 'reason',
      driver: 'driver',
      result: 'result',
      startedAt: 'started_at',
      endedAt: 'ended_at',
      network: 'network',
      placement: 'placement',
      receipt: 'receipt',
      nodeId: 'node_id',
      verification: 'verification',
      attempts: 'attempts',
    };
    for (const [key, column] of Object.entries(columns) as Array<[keyof RunPatch, string]>) {
      if (!(key in patch)) continue;
      const value = patch[key];
      sets.push(`${column} = @${column}`);
      params[column] = value === undefined ? null : typeof value === 'object' ? JSON.stringify(value) : value;
    }
    const sql = `UPDATE runs SET ${sets.join(', ')} WHERE id = @id`;
    let stmt = this.updates.get(sql);
    if (stmt === undefined) this.updates.set(sql, (stmt = this.db.prepare(sql)));
    const update = stmt;
    return () => update.run(params);
  }

  getRun(id: string): RunRecord | undefined {
    this.flush();
    const row = this.stmts.getRun.get(id) as RunRow | undefined;
    return row === undefined ? undefined : fromRow(row);
  }

  listRuns(query: ListRunsQuery = {}): RunRecord[] {
    this.flush();
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
    this.flush();
    return (this.stmts.liveRuns.all(...LIVE_STATES) as RunRow[]).map(fromRow);
  }

  appendEvent(runId: string, type: EventType, data: Uint8Array | string, ts = new Date().toISOString()): number {
    const id = this.nextEventId++;
    const bytes = Buffer.from(data);
    this.write(() => this.stmts.insertEvent.run(id, runId, ts, type, bytes));
    return id;
  }

  eventsAfter(runId: string, afterId = 0, limit = 1000): StoredEvent[] {
    this.flush();
    return this.stmts.eventsAfter.all(runId, afterId, limit) as StoredEvent[];
  }

  /** Claims a subnet at once (not queued): the answer must be final before the address is used. */
  claimLease(subnet: string, owner: string): boolean {
    this.flush();
    return this.stmts.claimLease.run(subnet, owner, new Date().toISOString()).changes === 1;
  }

  releaseLeases(owner: string): void {
    this.write(() => this.stmts.releaseLeases.run(owner));
  }

  releaseAllLeases(): void {
    this.write(() => this.stmts.releaseAllLeases.run());
  }

  leasedSubnets(): Set<string> {
    this.flush();
    return new Set(this.stmts.leasedSubnets.all() as string[]);
  }

  getConfig(key: string): string | undefined {
    this.flush();
    return (this.stmts.getConfig.get(key) as { value: string } | undefined)?.value;
  }

  setConfig(key: string, value: string): void {
    this.write(() => this.stmts.setConfig.run(key, value));
  }

  listReputation(): ReputationRow[] {
    this.flush();
    return (this.stmts.listReputation.all() as Array<Omit<ReputationRow, 'counts'> & { counts: string }>).map((r) => ({ ...r, counts: JSON.parse(r.counts) as Record<string, number> }));
  }

  putReputation(row: ReputationRow): void {
    const params = { ...row, counts: JSON.stringify(row.counts) };
    this.write(() => this.stmts.putReputation.run(params));
  }

  /** Makes several writes and commits them together, before returning. */
  transaction<T>(fn: () => T): T {
    const result = fn();
    this.flush();
    return result;
  }

  close(): void {
    if (!this.db.open) return;
    this.flush();
    this.db.close();
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
  if (row.network !== null) run.network = JSON.parse(row.network) as NonNullable<Run['network']>;
  if (row.placement !== null) run.placement = JSON.parse(row.placement) as NonNullable<Run['placement']>;
  if (row.attempts !== null) run.attempts = JSON.parse(row.attempts) as NonNullable<Run['attempts']>;
  if (row.verification !== null) run.verification = JSON.parse(row.verification) as NonNullable<Run['verification']>;
  if (row.receipt !== null) run.receipt = JSON.parse(row.receipt) as NonNullable<Run['receipt']>;
  return run;
}
