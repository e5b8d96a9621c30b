/**
 * The score terms, each in 0..1 (higher is better), as plain numeric functions: the explaining path
 * and the fast columnar path both call these, so that the two compute the same floats in the same order.
 */
import type { PlacementPolicy } from './policy.ts';

/** Round trip at which the proximity term is one half. */
export const PROXIMITY_HALF_MS = 20;
/** What a node never measured and without declared coordinates is taken to be away. */
export const UNKNOWN_RTT_MS = 100;
/** Light in fibre covers about 200 km per ms each way: about 1 ms of round trip per 100 km. */
const KM_PER_RTT_MS = 100;
const EARTH_RADIUS_KM = 6371;

/**
 * How full the node's vCPUs and memory would be with the run on it: bin-packing prefers the fullest
 * (whole nodes stay free for large runs), spreading the emptiest.
 */
export function resourceTerm(binpack: boolean, capV: number, freeV: number, wantV: number, capM: number, freeM: number, wantM: number): number {
  const uV = capV > 0 ? (capV - freeV + wantV) / capV : 1;
  const uM = capM > 0 ? (capM - freeM + wantM) / capM : 1;
  const used = (uV + uM) / 2;
  return binpack ? used : 1 - used;
}

/** 1 at 0 ms, 1/2 at 20 ms, 1/5 at 80 ms; NaN (unknown) counts as 100 ms. */
export function proximityTerm(rttMs: number): number {
  return 1 / (1 + (Number.isNaN(rttMs) ? UNKNOWN_RTT_MS : rttMs) / PROXIMITY_HALF_MS);
}

/** Runs active and queued (counted twice: they wait) per vCPU: 1 when idle. */
export function loadTerm(active: number, queued: number, vcpus: number): number {
  return 1 / (1 + (active + 2 * queued) / Math.max(1, vcpus));
}

/** The request's and the node's hashes mixed into 0..1: a tie-break that differs per request. */
export function jitterTerm(seed: number, nodeHash: number): number {
  let h = (seed ^ nodeHash) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b);
  return ((h ^ (h >>> 16)) >>> 0) / 4294967296;
}

/**
 * The weighted terms that do not depend on the request's size: a node's standing. The fast path keeps it
 * per node between decisions; both paths add it to the resource term in the same order.
 */
export function standing(p: PlacementPolicy, proximity: number, reputation: number, load: number): number {
  const w = p.weights;
  return w.proximity * proximity + w.reputation * reputation + w.load * load;
}

/** The weighted mean of the terms plus the tie-break. */
export function combine(p: PlacementPolicy, totalWeight: number, resources: number, standingPart: number, jitter: number): number {
  const mean = totalWeight > 0 ? (p.weights.resources * resources + standingPart) / totalWeight : 0;
  return mean + p.jitter * jitter;
}

export function totalWeight(p: PlacementPolicy): number {
  const w = p.weights;
  return w.resources + w.proximity + w.reputation + w.load;
}

/** Great-circle distance between two declared locations, in km (haversine). */
export function distanceKm(lat1: number, lon1: number, lat2: number, lon2: number): number {
  const rad = Math.PI / 180;
  const dLat = (lat2 - lat1) * rad;
  const dLon = (lon2 - lon1) * rad;
  const a = Math.sin(dLat / 2) ** 2 + Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * EARTH_RADIUS_KM * Math.asin(Math.min(1, Math.sqrt(a)));
}

/** The round trip a distance suggests before any has been measured. */
export function rttFromDistance(km: number): number {
  return km / KM_PER_RTT_MS;
}
