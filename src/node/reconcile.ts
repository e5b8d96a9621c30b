import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Store } from '../store/store.ts';

export interface ReconcileReport {
  /** Runs that were live when the node last stopped and are now `lost`. */
  lost: string[];
  /** Leftover sandbox directories removed. */
  removedSandboxes: number;
}

/**
 * Run at every start, before any new work: whatever a previous process left live cannot be running any
 * more (its sandboxes died with it), so each such run becomes `lost` with the state it was in, and the
 * scratch directories it left are removed. Nothing stays "running" forever.
 */
export async function reconcile(store: Store, sandboxRoot: string, now = new Date()): Promise<ReconcileReport> {
  const lost: string[] = [];
  const ts = now.toISOString();
  store.transaction(() => {
    for (const run of store.liveRuns()) {
      const reason = `the node stopped while this run was ${run.state}; its sandbox did not survive the restart`;
      store.updateRun(run.id, { state: 'lost', reason, endedAt: ts }, ts);
      store.appendEvent(run.id, 'state', JSON.stringify({ state: 'lost', reason }), ts);
      lost.push(run.id);
    }
  });
  let removedSandboxes = 0;
  const entries = await fs.readdir(sandboxRoot).catch(() => [] as string[]);
  for (const entry of entries) {
    await fs.rm(path.join(sandboxRoot, entry), { recursive: true, force: true });
    removedSandboxes++;
  }
  return { lost, removedSandboxes };
}
