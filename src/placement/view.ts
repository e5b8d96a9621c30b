import { idHash, type Candidate } from './candidate.ts';
import { byScore } from './explain.ts';
import { FILTERS } from './filters.ts';
import type { PlacementPolicy } from './policy.ts';
import { driverBit, driverMask, type PlacementRequest } from './request.ts';
import { combine, distanceKm, jitterTerm, loadTerm, proximityTerm, resourceTerm, rttFromDistance, standing, totalWeight } from './scores.ts';

export interface Ranked {
  id: string;
  score: number;
}

const COLUMNS = ['capV', 'capM', 'capD', 'capE', 'capI', 'freeV', 'freeM', 'freeD', 'freeE', 'freeI', 'active', 'queued', 'rtt', 'lat', 'lon', 'rep', 'est', 'standing'] as const;
type Column = (typeof COLUMNS)[number];
/** The capacity and free columns of each resource an advert states. */
const AMOUNT_COLUMNS = [
  ['capV', 'freeV', 'vcpus'],
  ['capM', 'freeM', 'memoryMiB'],
  ['capD', 'freeD', 'diskMiB'],
  ['capE', 'freeE', 'egressMbps'],
  ['capI', 'freeI', 'ingressMbps'],
] as const;

/**
 * The candidates in columns (one typed array per field), kept up to date as adverts arrive, so that a
 * decision over thousands of nodes is a few tight loops over numbers: no allocation per node, no
 * property lookups. Requests with labels, regions, a named driver or excluded nodes also run those
 * filters on the candidates themselves, after the numeric ones. Ranks exactly as `explain` does (checked by
 * test/placement and by the placement benchmark).
 */
export class PlacementView {
  private n = 0;
  private readonly slots = new Map<string, number>();
  private candidates: Candidate[] = [];
  private cols = {} as Record<Column, Float64Array>;
  private mask = new Int32Array(0);
  private hash = new Uint32Array(0);
  private self = new Uint8Array(0);
  /** The requesting node's coordinates that the `est` column (the round trip each node is taken to be away) was computed from. */
  private origin: PlacementRequest['origin'];
  /** The policy whose weights the `standing` column was computed with. */
  private weighed: PlacementPolicy | undefined;
  /** Regions by number (the `region` column; -1 for none), and label pairs `k=v` by bit (the `labels` column). */
  private readonly regionIds = new Map<string, number>();
  private region = new Int32Array(0);
  private readonly labelBits = new Map<string, number>();
  private labels = new Int32Array(0);
  /** More than 31 distinct label pairs: label requests are checked on the candidates themselves. */
  private labelsOverflow = false;

  constructor(capacity = 16) {
    this.grow(capacity);
  }

  get size(): number {
    return this.n;
  }

  list(): Candidate[] {
    return this.candidates.slice(0, this.n);
  }

  has(id: string): boolean {
    return this.slots.has(id);
  }

  /** Adds a candidate or replaces what is held of it. */
  upsert(c: Candidate): void {
    let i = this.slots.get(c.id);
    if (i === undefined) {
      if (this.n === this.mask.length) this.grow(this.n * 2);
      i = this.n++;
      this.slots.set(c.id, i);
      this.hash[i] = idHash(c.id);
    }
    const a = c.advert;
    const cols = this.cols;
    this.candidates[i] = c;
    this.mask[i] = driverMask(a.drivers);
    this.self[i] = c.self ? 1 : 0;
    for (const [cap, free, key] of AMOUNT_COLUMNS) {
      cols[cap][i] = a.capacity[key];
      cols[free][i] = a.free[key];
    }
    cols.active[i] = a.runs.active;
    cols.queued[i] = a.runs.queued;
    cols.rtt[i] = c.rttMs ?? Number.NaN;
    cols.lat[i] = a.location?.latitude ?? Number.NaN;
    cols.lon[i] = a.location?.longitude ?? Number.NaN;
    cols.rep[i] = c.reputation;
    cols.est[i] = this.estimate(i);
    if (this.weighed !== undefined) cols.standing[i] = this.standingOf(i, this.weighed);
    this.region[i] = a.location?.region === undefined ? -1 : this.regionId(a.location.region);
    let labels = 0;
    for (const [k, v] of Object.entries(a.labels)) labels |= this.labelBit(`${k}=${v}`) ?? 0;
    this.labels[i] = labels;
  }

  private regionId(name: string): number {
    let id = this.regionIds.get(name);
    if (id === undefined) this.regionIds.set(name, (id = this.regionIds.size));
    return id;
  }

  private labelBit(pair: string, add = true): number | undefined {
    let bit = this.labelBits.get(pair);
    if (bit === undefined && add) {
      if (this.labelBits.size === 31) this.labelsOverflow = true;
      else this.labelBits.set(pair, (bit = 1 << this.labelBits.size));
    }
    return bit;
  }

  private standingOf(i: number, p: PlacementPolicy): number {
    const { est, rep, active, queued, capV } = this.cols;
    return standing(p, proximityTerm(est[i]!), rep[i]!, loadTerm(active[i]!, queued[i]!, capV[i]!));
  }

  /** The standing column follows the weights of the policy asked with (recomputed only when they change). */
  private weigh(p: PlacementPolicy): void {
    const w = p.weights;
    const held = this.weighed?.weights;
    if (held !== undefined && held.proximity === w.proximity && held.reputation === w.reputation && held.load === w.load) return;
    this.weighed = p;
    for (let i = 0; i < this.n; i++) this.cols.standing[i] = this.standingOf(i, p);
  }

  /** The round trip placement assumes to node `i`: 0 to itself, measured, from declared distance, or NaN. */
  private estimate(i: number): number {
    const { rtt, lat, lon } = this.cols;
    if (this.self[i] === 1) return 0;
    if (!Number.isNaN(rtt[i]!)) return rtt[i]!;
    const o = this.origin;
    if (o === undefined || Number.isNaN(lat[i]!) || Number.isNaN(lon[i]!)) return Number.NaN;
    return rttFromDistance(distanceKm(o.latitude, o.longitude, lat[i]!, lon[i]!));
  }

  /** Distances are computed once per origin, not per decision: the requesting node's place rarely moves. */
  private useOrigin(origin: PlacementRequest['origin']): void {
    const same = origin === this.origin || (origin !== undefined && this.origin !== undefined && origin.latitude === this.origin.latitude && origin.longitude === this.origin.longitude);
    if (same) return;
    this.origin = origin === undefined ? undefined : { ...origin };
    for (let i = 0; i < this.n; i++) this.cols.est[i] = this.estimate(i);
    this.weighed = undefined; // proximity moved with the estimates
  }

  remove(id: string): void {
    const i = this.slots.get(id);
    if (i === undefined) return;
    const last = --this.n;
    this.slots.delete(id);
    if (i !== last) {
      // The last candidate moves into the freed slot.
      const moved = this.candidates[last]!;
      this.candidates[i] = moved;
      this.slots.set(moved.id, i);
      this.mask[i] = this.mask[last]!;
      this.hash[i] = this.hash[last]!;
      this.self[i] = this.self[last]!;
      this.region[i] = this.region[last]!;
      this.labels[i] = this.labels[last]!;
      for (const k of COLUMNS) this.cols[k][i] = this.cols[k][last]!;
    }
    this.candidates.length = this.n;
  }

  /** Keeps exactly these candidates (adds, replaces, and removes the ones not given). */
  replaceAll(candidates: readonly Candidate[]): void {
    const keep = new Set(candidates.map((c) => c.id));
    for (const id of [...this.slots.keys()]) if (!keep.has(id)) this.remove(id);
    for (const c of candidates) this.upsert(c);
  }

  /** The `k` best eligible candidates, best first: what `explain` would rank 1..k. */
  rank(r: PlacementRequest, p: PlacementPolicy, k = 3): Ranked[] {
    this.useOrigin(r.origin);
    this.weigh(p);
    const { capV, capM, capD, capE, capI, freeV, freeM, freeD, freeE, freeI, est, rep, standing: standingCol } = this.cols;
    const { mask, hash, region, labels } = this;
    const bit = driverBit(r.kind, r.isolation);
    const w = r.want;
    const checkFree = r.ignoreFree !== true;
    const binpack = p.strategy === 'binpack';
    const total = totalWeight(p);
    const minRep = p.minReputation;
    const maxRtt = r.maxRttMs ?? Number.POSITIVE_INFINITY;
    // Labels and regions as numbers: a label pair no node carries can match no node.
    let wantLabels = 0;
    let unknownLabel = false;
    for (const [k, v] of r.labels) {
      const bit = this.labelBit(`${k}=${v}`, false);
      if (bit === undefined) unknownLabel = true;
      else wantLabels |= bit;
    }
    if (unknownLabel && !this.labelsOverflow) return [];
    const regionRule = this.regionRule(r);
    const byObject = r.driver !== undefined || r.exclude.size > 0 || (r.labels.length > 0 && this.labelsOverflow);
    const top: Ranked[] = [];
    const wR = p.weights.resources;
    const jitterMax = p.jitter;
    let floor = Number.NEGATIVE_INFINITY; // the k-th best score so far, once there are k
    for (let i = 0; i < this.n; i++) {
      if ((mask[i]! & bit) === 0 || rep[i]! < minRep) continue;
      // The best this node could score (a resource term of 1, the largest tie-break) cannot reach the k best:
      // skip it before anything else is computed. Exact, since rounding is monotone.
      if (total > 0 && (wR + standingCol[i]!) / total + jitterMax < floor) continue;
      if (capV[i]! < w.vcpus || capM[i]! < w.memoryMiB || capD[i]! < w.diskMiB || capE[i]! < w.egressMbps || capI[i]! < w.ingressMbps) continue;
      if (checkFree && (freeV[i]! < w.vcpus || freeM[i]! < w.memoryMiB || freeD[i]! < w.diskMiB || freeE[i]! < w.egressMbps || freeI[i]! < w.ingressMbps)) continue;
      const ms = est[i]!;
      if (r.maxRttMs !== undefined && (Number.isNaN(ms) || ms > maxRtt)) continue;
      if ((labels[i]! & wantLabels) !== wantLabels) continue;
      if (regionRule !== undefined && regionRule[region[i]! + 1] === 0) continue;
      if (byObject && !this.passesByObject(this.candidates[i]!, r, p)) continue;
      const score = combine(p, total, resourceTerm(binpack, capV[i]!, freeV[i]!, w.vcpus, capM[i]!, freeM[i]!, w.memoryMiB), standingCol[i]!, jitterTerm(r.seed, hash[i]!));
      if (score < floor) continue;
      insertRanked(top, { id: this.candidates[i]!.id, score }, k);
      if (top.length === k) floor = top[k - 1]!.score;
    }
    return top;
  }

  /** Which region numbers may be chosen (index 0: no region declared), or undefined when any may. */
  private regionRule(r: PlacementRequest): Uint8Array | undefined {
    if (r.regions === undefined && r.excludeRegions === undefined) return undefined;
    const allowed = new Uint8Array(this.regionIds.size + 1).fill(r.regions === undefined ? 1 : 0);
    for (const name of r.regions ?? []) {
      const id = this.regionIds.get(name);
      if (id !== undefined) allowed[id + 1] = 1;
    }
    for (const name of r.excludeRegions ?? []) {
      const id = this.regionIds.get(name);
      if (id !== undefined) allowed[id + 1] = 0;
    }
    return allowed;
  }

  private passesByObject(c: Candidate, r: PlacementRequest, p: PlacementPolicy): boolean {
    return FILTERS.excluded(c, r, p) === undefined && FILTERS.driver(c, r, p) === undefined && FILTERS.labels(c, r, p) === undefined;
  }

  private grow(size: number): void {
    const copy = <T extends Float64Array | Int32Array | Uint32Array | Uint8Array>(old: T, make: (n: number) => T): T => {
      const next = make(size);
      next.set(old.subarray(0, Math.min(old.length, size)));
      return next;
    };
    for (const k of COLUMNS) this.cols[k] = copy(this.cols[k] ?? new Float64Array(0), (n) => new Float64Array(n));
    this.mask = copy(this.mask, (n) => new Int32Array(n));
    this.hash = copy(this.hash, (n) => new Uint32Array(n));
    this.self = copy(this.self, (n) => new Uint8Array(n));
    this.region = copy(this.region, (n) => new Int32Array(n));
    this.labels = copy(this.labels, (n) => new Int32Array(n));
  }
}

/** Inserts into a list kept sorted by `byScore`, at most `k` long. */
function insertRanked(top: Ranked[], item: Ranked, k: number): void {
  let at = top.length;
  while (at > 0 && byScore(item, top[at - 1]!) < 0) at--;
  if (at >= k) return;
  top.splice(at, 0, item);
  if (top.length > k) top.pop();
}
