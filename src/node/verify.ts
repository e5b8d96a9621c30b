import type { Run, RunVerification } from '../spec/index.ts';
import type { LogEvent, NodeEvents, StateEvent } from './events.ts';
import type { RemoteFeed, RemoteUpdate } from './remote.ts';

/** One replica of a verified run: a run of its own, on its own node. */
export interface Replica {
  run: string;
  node: string;
}

/** What the verification needs of the node that follows the replicas. */
export interface ReplicaHost {
  events: NodeEvents;
  waitFor(id: string): Promise<Run>;
  cancel(id: string): unknown;
}

/**
 * The result of each replica, by the hash its receipt gives (the part a deterministic workload reproduces:
 * exit code, stdout, JSON output, outputs archive). More than half the replicas must agree.
 */
export function tally(ended: Run[], mode: Pick<RunVerification, 'mode' | 'rate'> = { mode: 'replicas' }): { verification: RunVerification; winner?: Run } {
  const keyOf = (r: Run) => resultHashOf(r) ?? `no result: ${r.state}`;
  const groups = new Map<string, Run[]>();
  for (const r of ended) groups.set(keyOf(r), [...(groups.get(keyOf(r)) ?? []), r]);
  const [key, group] = [...groups].sort((a, b) => b[1].length - a[1].length)[0]!;
  const won = group.length * 2 > ended.length;
  const verification: RunVerification = {
    ...mode,
    replicas: ended.length,
    verdict: !won ? 'inconclusive' : group.length === ended.length ? 'unanimous' : 'majority',
    runs: ended.map((r) => {
      const hash = resultHashOf(r);
      return { run: r.id, node: r.nodeId, state: r.state, ...(hash === undefined ? {} : { resultHash: hash }), agreed: won && keyOf(r) === key };
    }),
  };
  const winnerHash = won ? resultHashOf(group[0]!) : undefined;
  if (winnerHash !== undefined) verification.resultHash = winnerHash;
  return won ? { verification, winner: group[0]! } : { verification };
}

function resultHashOf(run: Run): string | undefined {
  if (run.receipt === undefined) return undefined;
  try {
    const hash = (JSON.parse(run.receipt.payload) as { resultHash?: unknown }).resultHash;
    return typeof hash === 'string' ? hash : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A verified run as one feed: it runs once any replica runs, relays the first replica's output, ends when
 * every replica has ended, and then takes the result more than half of them agree on (with that replica's
 * receipt), or fails as inconclusive. Cancelling it cancels every replica.
 */
export interface VerificationPlan {
  mode: Pick<RunVerification, 'mode' | 'rate'>;
  /** Another replica when no result has a majority yet (a spot check that disagreed); undefined when none is left. */
  escalate?(): Promise<Replica | undefined>;
  onVerdict(v: RunVerification): void;
}

export function verificationFeed(host: ReplicaHost, replicas: Replica[], plan: VerificationPlan): RemoteFeed {
  const ids = new Set(replicas.map((r) => r.run));
  const first = replicas[0]!.run;
  const updates = (async function* (): AsyncGenerator<RemoteUpdate> {
    const pending: RemoteUpdate[] = [];
    let wake: (() => void) | undefined;
    const push = (u: RemoteUpdate) => {
      pending.push(u);
      wake?.();
    };
    let running = false;
    const onState = (e: StateEvent) => {
      if (!running && ids.has(e.runId) && e.state === 'running') {
        running = true;
        push({ type: 'state', state: 'running', patch: { startedAt: new Date().toISOString() } });
      }
    };
    const onLog = (e: LogEvent) => {
      if (e.runId === first) push({ type: 'log', stream: e.stream, data: e.data, ts: e.ts });
    };
    host.events.on('state', onState);
    host.events.on('log', onLog);
    let all = false;
    // Every replica's end; a tie adds a replica (when the plan has one to add) and waits for it too.
    const ended = (async () => {
      let runs = await Promise.all(replicas.map((r) => host.waitFor(r.run)));
      while (tally(runs, plan.mode).winner === undefined) {
        const more = await plan.escalate?.().catch(() => undefined);
        if (more === undefined) break;
        replicas.push(more);
        ids.add(more.run);
        runs = [...runs, await host.waitFor(more.run)];
      }
      return runs;
    })().finally(() => {
      all = true;
      wake?.();
    });
    try {
      yield { type: 'state', state: 'placed', patch: {} };
      yield { type: 'state', state: 'starting', patch: {} };
      while (!all || pending.length > 0) {
        if (pending.length === 0) await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
        yield* pending.splice(0);
      }
      const runs = await ended;
      const { verification, winner } = tally(runs, plan.mode);
      plan.onVerdict(verification);
      if (winner !== undefined) {
        yield { type: 'end', run: { ...winner, verification } };
      } else {
        const seen = verification.runs.map((r) => `${r.node}: ${r.resultHash ?? r.state}`).join('; ');
        const { result: _r, receipt: _c, ...base } = runs[0]!;
        yield { type: 'end', run: { ...base, state: 'failed', reason: `verification inconclusive: no result had more than half of ${runs.length} replicas (${seen})`, verification } };
      }
    } finally {
      host.events.off('state', onState);
      host.events.off('log', onLog);
    }
  })();
  return {
    get node() {
      return `${replicas.length} replicas`;
    },
    updates,
    cancel: () => {
      for (const r of replicas) {
        try {
          host.cancel(r.run);
        } catch {
          // that replica has ended already
        }
      }
    },
  };
}

