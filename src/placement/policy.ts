import type { PlacementHints, PlacementStrategy } from '../spec/index.ts';

/** Everything placement weighs, resolved: the node's defaults with a request's overrides on top. */
export interface PlacementPolicy {
  strategy: PlacementStrategy;
  weights: { resources: number; proximity: number; reputation: number; load: number };
  /** Nodes held below this reputation receive no work. */
  minReputation: number;
  /**
   * Size of the random tie-break added to each score (0..1 of a score point). Nodes whose scores are
   * closer than this share the work instead of all requesters picking the same one.
   */
  jitter: number;
}

export const DEFAULT_POLICY: PlacementPolicy = {
  strategy: 'spread',
  weights: { resources: 1, proximity: 2, reputation: 2, load: 1 },
  minReputation: 0.2,
  jitter: 0.02,
};

/** The policy one request is placed under: `base` (the node's) overridden by the request's hints. */
export function requestPolicy(base: PlacementPolicy, hints: PlacementHints | undefined): PlacementPolicy {
  return {
    strategy: hints?.strategy ?? base.strategy,
    weights: { ...base.weights, ...hints?.weights },
    minReputation: hints?.minReputation ?? base.minReputation,
    jitter: base.jitter,
  };
}
