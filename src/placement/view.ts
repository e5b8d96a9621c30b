import { idHash, type Candidate } from './candidate.ts';
import { byScore } from './explain.ts';
import { FILTERS } from './filters.ts';
import type { PlacementPolicy } from './policy.ts';
import { driverBit, driverMask, type PlacementRequest } from './request.ts';
import { combine, distanceKm, jitterTerm, loadTerm, proximityTerm, resourceTerm, rttFromDistance, totalWeight } from './scores.ts';

export interface Ranked {
  id: string;
  score: number;
}

const COLUMNS = ['capV', 'capM', 'capD', 'capE', 'capI', 'freeV', 'freeM', 'freeD', 'freeE', 'freeI', 'active', 'queued', 'rtt', 'lat', 'lon', 'rep'] as const;
type Column = (typeof COLUMNS)[number];

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
    cols.capV[i] = a.capacity.vcpus;
    cols.capM[i] = a.capacity.memoryMiB;
    cols.capD[i] = a.capacity.diskMiB;
    cols.capE[i] = a.capacity.egressMbps;
    cols.capI[i] = a.capacity.ingressMbps;
    cols.freeV[i] = a.free.vcpus;
    cols.freeM[i] = a.free.memoryMiB;
    cols.freeD[i] = a.free.diskMiB;
    cols.freeE[i] = a.free.egressMbps;
    cols.freeI[i] = a.free.ingressMbps;
    cols.active[i] = a.runs.active;
    cols.queued[i] = a.runs.queued;
    cols.rtt[i] = c.rttMs ?? Number.NaN;
    cols.lat[i] = a.location?.latitude ?? Number.NaN;
    cols.lon[i] = a.location?.longitude ?? Number.NaN;
    cols.rep[i] = c.reputation;
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
    const { capV, capM, capD, capE, capI, freeV, freeM, freeD, freeE, freeI, active, queued, rtt, lat, lon, rep } = this.cols;
    const { mask, hash, self } = this;
    const bit = driverBit(r.kind, r.isolation);
    const w = r.want;
    const checkFree = r.ignoreFree !== true;
    const binpack = p.strategy === 'binpack';
    const total = totalWeight(p);
    const minRep = p.minReputation;
    const maxRtt = r.maxRttMs ?? Number.POSITIVE_INFINITY;
    const origin = r.origin;
    const byObject = r.driver !== undefined || r.labels.length > 0 || r.regions !== undefined || r.excludeRegions !== undefined || r.exclude.size > 0;
    const top: Ranked[] = [];
    for (let i = 0; i < this.n; i++) {
      if ((mask[i]! & bit) === 0 || rep[i]! < minRep) continue;
      if (capV[i]! < w.vcpus || capM[i]! < w.memoryMiB || capD[i]! < w.diskMiB || capE[i]! < w.egressMbps || capI[i]! < w.ingressMbps) continue;
      if (checkFree && (freeV[i]! < w.vcpus || freeM[i]! < w.memoryMiB || freeD[i]! < w.diskMiB || freeE[i]! < w.egressMbps || freeI[i]! < w.ingressMbps)) continue;
      let ms = self[i] === 1 ? 0 : rtt[i]!;
      if (Number.isNaN(ms) && origin !== undefined && !Number.isNaN(lat[i]!) && !Number.isNaN(lon[i]!)) {
        ms = rttFromDistance(distanceKm(origin.latitude, origin.longitude, lat[i]!, lon[i]!));
      }
      if (r.maxRttMs !== undefined && (Number.isNaN(ms) || ms > maxRtt)) continue;
      if (byObject && !this.passesByObject(this.candidates[i]!, r, p)) continue;
      const score = combine(
        p,
        total,
        resourceTerm(binpack, capV[i]!, freeV[i]!, w.vcpus, capM[i]!, freeM[i]!, w.memoryMiB),
        proximityTerm(ms),
        rep[i]!,
        loadTerm(active[i]!, queued[i]!, capV[i]!),
        jitterTerm(r.seed, hash[i]!),
      );
      if (top.length === k && score < top[k - 1]!.score) continue;
      insertRanked(top, { id: this.candidates[i]!.id, score }, k);
    }
    return top;
  }

  private passesByObject(c: Candidate, r: PlacementRequest, p: PlacementPolicy): boolean {
    return (
      FILTERS.excluded(c, r, p) === undefined &&
      FILTERS.driver(c, r, p) === undefined &&
      FILTERS.labels(c, r, p) === undefined &&
      FILTERS.region(c, r, p) === undefined
    );
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
