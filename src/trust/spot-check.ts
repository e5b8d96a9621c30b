import type { PeerReputation } from './reputation.ts';

/** Below this many outcomes seen (good + bad weight), a node is new: every run on it is checked. */
export const NEW_NODE_EVIDENCE = 3;
/** Even the most trusted node is checked this often. */
export const MIN_SPOT_CHECK_RATE = 0.05;

/**
 * How often a run with `verify.spotCheck` on a node is run on a second node too: always for a new node,
 * then 1 - its reputation, never below 5%; never for this node itself (undefined), which trusts itself.
 */
export function spotCheckRate(rep: Pick<PeerReputation, 'score' | 'good' | 'bad'> | undefined): number {
  if (rep === undefined) return 0;
  if (rep.good + rep.bad < NEW_NODE_EVIDENCE) return 1;
  return Math.min(1, Math.max(MIN_SPOT_CHECK_RATE, 1 - rep.score));
}
