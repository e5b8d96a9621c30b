import type { ReputationRow } from '../store/store.ts';

/**
 * What the requesting node saw of one run on a peer. `failed` is the workload's own failure (it exited
 * non-zero, ran out of its memory): it says nothing of the node. `crashed` is a failure with no exit code
 * (the sandbox or the driver broke). `mismatch` is a verification the peer lost; `bad_receipt` a receipt
 * that did not check.
 */
export const OUTCOMES = ['succeeded', 'verified', 'failed', 'crashed', 'timeout', 'lost', 'refused', 'mismatch', 'bad_receipt', 'slow'] as const;
export type Outcome = (typeof OUTCOMES)[number];

/** How much each outcome adds to the good and the bad weight. */
const WEIGHT: Record<Outcome, { good: number; bad: number }> = {
  succeeded: { good: 1, bad: 0 },
  verified: { good: 2, bad: 0 },
  failed: { good: 0, bad: 0 },
  crashed: { good: 0, bad: 1 },
  timeout: { good: 0, bad: 0.25 },
  lost: { good: 0, bad: 2 },
  refused: { good: 0, bad: 0 },
  mismatch: { good: 0, bad: 20 },
  bad_receipt: { good: 0, bad: 20 },
  slow: { good: 0, bad: 0.25 },
};

/** What a round trip may add to a remote run before the node counts as slow: a few round trips and some slack. */
const SLOW_RTTS = 4;
const SLOW_SLACK_MS = 250;

/**
 * Whether a remote run took the requesting node much longer than the executing node says it ran, given the
 * round trip measured to that node: the time beyond its own total is the network's and its queue's, and a
 * node that answers far later than its distance explains (a loaded or throttled node, or one that delays on
 * purpose) is `slow`.
 */
export function latencyOutcome(elapsedMs: number, reportedTotalMs: number, rttMs: number | undefined): 'slow' | undefined {
  if (rttMs === undefined || !Number.isFinite(reportedTotalMs)) return undefined;
  return elapsedMs - reportedTotalMs > SLOW_RTTS * rttMs + SLOW_SLACK_MS ? 'slow' : undefined;
}

export interface ReputationStore {
  listReputation(): ReputationRow[];
  putReputation(row: ReputationRow): void;
}

export interface PeerReputation {
  peer: string;
  /** 0..1: (good + 1) / (good + bad + 2), so a stranger is 0.5 and one bad outcome among many moves it little. */
  score: number;
  /** The decayed weights the score comes from. */
  good: number;
  bad: number;
  /** Outcomes observed, by kind (not decayed). */
  counts: Record<string, number>;
  updatedAt: number;
}

/** A stranger's reputation: no evidence either way. */
export const NEUTRAL_REPUTATION = 0.5;

/**
 * This node's own observations of its peers, with time decay: every weight halves each `halfLifeMs`, so a
 * node that misbehaved long ago can earn its way back and a good record must be kept up. Held in memory
 * (placement reads it for every candidate) and written through to the store, so it survives restarts.
 */
export class Reputation {
  private readonly rows = new Map<string, ReputationRow>();

  constructor(
    private readonly store: ReputationStore,
    private readonly halfLifeMs: number,
    private readonly now: () => number = Date.now,
    /** This node's own id: it trusts itself fully. */
    readonly self?: string,
  ) {
    for (const row of store.listReputation()) this.rows.set(row.peer, row);
  }

  record(peer: string, outcome: Outcome): PeerReputation {
    const at = this.now();
    const held = this.decayed(this.rows.get(peer), at, peer);
    const w = WEIGHT[outcome];
    const row: ReputationRow = {
      peer,
      good: held.good + w.good,
      bad: held.bad + w.bad,
      counts: { ...held.counts, [outcome]: (held.counts[outcome] ?? 0) + 1 },
      updatedAt: at,
    };
    this.rows.set(peer, row);
    this.store.putReputation(row);
    return toPublic(row);
  }

  get(peer: string): PeerReputation {
    return toPublic(this.decayed(this.rows.get(peer), this.now(), peer));
  }

  score(peer: string): number {
    return peer === this.self ? 1 : this.get(peer).score;
  }

  list(): PeerReputation[] {
    const at = this.now();
    return [...this.rows.values()].map((r) => toPublic(this.decayed(r, at)));
  }

  private decayed(row: ReputationRow | undefined, at: number, peer = row?.peer ?? ''): ReputationRow {
    if (row === undefined) return { peer, good: 0, bad: 0, counts: {}, updatedAt: at };
    const factor = 0.5 ** (Math.max(0, at - row.updatedAt) / this.halfLifeMs);
    return { ...row, good: row.good * factor, bad: row.bad * factor, updatedAt: at };
  }
}

function toPublic(r: ReputationRow): PeerReputation {
  return { peer: r.peer, score: (r.good + 1) / (r.good + r.bad + 2), good: r.good, bad: r.bad, counts: r.counts, updatedAt: r.updatedAt };
}
