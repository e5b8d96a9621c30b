import { setTimeout as sleep } from 'node:timers/promises';
import { AbortedError, type RunAttempt } from '../spec/index.ts';
import type { RemoteFeed, RemoteUpdate } from './remote.ts';

export interface FailoverPlan {
  /** Nodes the run may go to in all, the first included. */
  maxAttempts: number;
  /** Wait before the second attempt; doubled before each one after it. */
  backoffMs: number;
  /** Starts the run again on a node that is none of `lost`; throws when no node takes it. */
  restart(lost: ReadonlySet<string>, signal: AbortSignal): Promise<RemoteFeed>;
  /** Hears of each node lost, with why. */
  onLost?(node: string, reason: string): void;
}

/**
 * A remote run that survives losing its node: when the node goes away (its stream breaks, it stops
 * beating, it closes the run unfinished), the run is placed again, on a node not lost yet, under the same
 * run id, after a backoff, up to `maxAttempts` nodes in all. The stream to a lost node is aborted and its
 * node cancels the run when it notices, so that only one node's end ever reaches the run: the client sees
 * one outcome, and `attempts` lists every node it went to.
 */
export function failoverFeed(first: RemoteFeed, plan: FailoverPlan): RemoteFeed {
  let current = first;
  const stopped = new AbortController();
  const attempts: RunAttempt[] = [{ node: first.node, startedAt: new Date().toISOString() }];
  const updates = (async function* (): AsyncGenerator<RemoteUpdate> {
    const lost = new Set<string>();
    for (;;) {
      try {
        for await (const u of current.updates) {
          if (u.type !== 'end') {
            yield u;
            continue;
          }
          if (attempts.length === 1) yield u;
          else {
            Object.assign(attempts.at(-1)!, { endedAt: new Date().toISOString(), outcome: u.run.state });
            yield { type: 'end', run: { ...u.run, attempts } };
          }
          return;
        }
        throw new Error(`node ${current.node} closed the run's stream before it ended`);
      } catch (err) {
        const reason = (err as Error).message;
        Object.assign(attempts.at(-1)!, { endedAt: new Date().toISOString(), outcome: 'lost', reason: reason.slice(0, 1024) });
        lost.add(current.node);
        plan.onLost?.(current.node, reason);
        if (stopped.signal.aborted) throw new AbortedError(String(stopped.signal.reason ?? 'cancelled by request'));
        if (attempts.length >= plan.maxAttempts) {
          if (attempts.length > 1) yield { type: 'patch', patch: { attempts: attempts.map((a) => ({ ...a })) } };
          throw err;
        }
        try {
          await sleep(plan.backoffMs * 2 ** (attempts.length - 1), undefined, { signal: stopped.signal });
          current = await plan.restart(lost, stopped.signal);
        } catch (again) {
          if (stopped.signal.aborted) throw new AbortedError(String(stopped.signal.reason ?? 'cancelled by request'));
          throw new Error(`${reason}; placing it again failed: ${(again as Error).message}`);
        }
        attempts.push({ node: current.node, startedAt: new Date().toISOString() });
        yield { type: 'patch', patch: { nodeId: current.node, attempts: attempts.map((a) => ({ ...a })) } };
      }
    }
  })();
  return {
    get node() {
      return current.node;
    },
    updates,
    cancel(reason) {
      stopped.abort(reason);
      current.cancel(reason);
    },
  };
}
