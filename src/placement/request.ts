import { ISOLATION_LEVELS, type IsolationLevel, type ResolvedResources, type Workload, type WorkloadKind } from '../spec/index.ts';
import type { Candidate } from './candidate.ts';
import type { PlacementPolicy } from './policy.ts';
import { distanceKm, rttFromDistance } from './scores.ts';

/** The resources a run asks for, in the units adverts use. */
export interface Wanted {
  vcpus: number;
  memoryMiB: number;
  diskMiB: number;
  egressMbps: number;
  ingressMbps: number;
}
export const RESOURCE_KEYS = ['vcpus', 'memoryMiB', 'diskMiB', 'egressMbps', 'ingressMbps'] as const;

/** One placement question: what a run needs of a node, and where it may or may not go. */
export interface PlacementRequest {
  kind: WorkloadKind;
  isolation?: IsolationLevel;
  /** Exactly this driver (`workload.driver`). */
  driver?: string;
  want: Wanted;
  labels: Array<[string, string]>;
  regions?: Set<string>;
  excludeRegions?: Set<string>;
  maxRttMs?: number;
  /** The requesting node's declared coordinates, for the distance to nodes not measured yet. */
  origin?: { latitude: number; longitude: number };
  /** Nodes not to choose, and why (tried already and refused, or lost). */
  exclude: Map<string, string>;
  /** Per-request seed of the tie-break (from the run id), so that retries and replays agree. */
  seed: number;
  /** Place on nodes that have the room in all but not free now (the run waits in that node's queue). */
  ignoreFree?: boolean;
}

export function placementRequest(
  workload: Workload,
  resources: ResolvedResources,
  seed: number,
  origin?: { latitude?: number; longitude?: number },
): PlacementRequest {
  const hints = workload.placement ?? {};
  const request: PlacementRequest = {
    kind: workload.kind,
    want: {
      vcpus: resources.vcpus,
      memoryMiB: resources.memoryMiB,
      diskMiB: resources.diskMiB,
      egressMbps: resources.network.egressMbps,
      ingressMbps: resources.network.ingressMbps,
    },
    labels: Object.entries(hints.labels ?? {}),
    exclude: new Map(),
    seed,
  };
  if (workload.isolation !== undefined) request.isolation = workload.isolation;
  if (workload.driver !== undefined) request.driver = workload.driver;
  const allowed = [...(hints.regions ?? []), ...(hints.region === undefined ? [] : [hints.region])];
  if (allowed.length > 0) request.regions = new Set(allowed);
  if (hints.excludeRegions !== undefined) request.excludeRegions = new Set(hints.excludeRegions);
  if (hints.maxRttMs !== undefined) request.maxRttMs = hints.maxRttMs;
  if (origin?.latitude !== undefined && origin.longitude !== undefined) request.origin = { latitude: origin.latitude, longitude: origin.longitude };
  return request;
}

export type RttSource = 'self' | 'measured' | 'distance' | 'unknown';

/** The round trip placement assumes to a candidate: 0 to itself, measured, estimated from distance, or NaN. */
export function effectiveRtt(c: Candidate, origin: PlacementRequest['origin']): { ms: number; source: RttSource } {
  if (c.self) return { ms: 0, source: 'self' };
  if (c.rttMs !== undefined) return { ms: c.rttMs, source: 'measured' };
  const at = c.advert.location;
  if (origin !== undefined && at?.latitude !== undefined && at.longitude !== undefined) {
    return { ms: rttFromDistance(distanceKm(origin.latitude, origin.longitude, at.latitude, at.longitude)), source: 'distance' };
  }
  return { ms: Number.NaN, source: 'unknown' };
}

/** Bit of (kind, least isolation) in a node's driver mask: 4 kinds × 4 levels. */
export function driverBit(kind: WorkloadKind, isolation: IsolationLevel | undefined): number {
  const k = KINDS.indexOf(kind);
  const level = isolation === undefined ? 0 : ISOLATION_LEVELS.indexOf(isolation);
  return 1 << (k * 4 + level);
}
const KINDS: readonly WorkloadKind[] = ['function', 'container', 'microvm', 'unikernel'];

/** Every (kind, level) an advert's available drivers can serve: a driver of level L serves every level up to L. */
export function driverMask(drivers: Candidate['advert']['drivers']): number {
  let mask = 0;
  for (const d of drivers) {
    if (!d.available) continue;
    const top = ISOLATION_LEVELS.indexOf(d.isolation);
    for (const kind of d.kinds) for (let level = 0; level <= top; level++) mask |= driverBit(kind, ISOLATION_LEVELS[level]);
  }
  return mask;
}

export type { PlacementPolicy };
