import type { NodeAdvert } from '../spec/index.ts';

/**
 * One node placement may choose, as the requesting node sees it: the node's own signed advert (drivers,
 * capacity, free resources, load, labels, location), what the requesting node measured of it, and the
 * reputation it holds of it. The requesting node is a candidate too (`self`, round trip 0).
 */
export interface Candidate {
  id: string;
  self: boolean;
  advert: NodeAdvert;
  /** The lowest recent round trip from the requesting node, in ms; absent when never measured. */
  rttMs?: number;
  /** 0..1: what the requesting node has seen of this node's work (0.5 for a stranger, 1 for itself). */
  reputation: number;
}

/** 32-bit FNV-1a of a node id: the node's part of the tie-break, computed once per candidate. */
export function idHash(id: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) {
    h ^= id.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** A 32-bit seed from a string (a run id): the request's part of the tie-break. */
export const seedOf = idHash;
