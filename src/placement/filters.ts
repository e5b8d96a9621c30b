import { meetsIsolation } from '../drivers/registry.ts';
import type { Candidate } from './candidate.ts';
import type { PlacementPolicy } from './policy.ts';
import { effectiveRtt, RESOURCE_KEYS, type PlacementRequest } from './request.ts';

/** The filters, in the order they are applied. The first a node fails is why it was not chosen. */
export const FILTER_NAMES = ['excluded', 'driver', 'labels', 'region', 'reputation', 'rtt', 'capacity', 'free'] as const;
export type FilterName = (typeof FILTER_NAMES)[number];

/** One filter: undefined when the candidate passes, otherwise why it does not, in words. */
export type Filter = (c: Candidate, r: PlacementRequest, p: PlacementPolicy) => string | undefined;

const UNIT: Record<(typeof RESOURCE_KEYS)[number], string> = {
  vcpus: 'vCPUs',
  memoryMiB: 'MiB memory',
  diskMiB: 'MiB disk',
  egressMbps: 'Mbit/s egress',
  ingressMbps: 'Mbit/s ingress',
};

export function amountText(key: (typeof RESOURCE_KEYS)[number], v: number): string {
  return `${Math.round(v * 1000) / 1000} ${UNIT[key]}`;
}

/** The resources the candidate lacks against `have` (its capacity or what is free), or undefined. */
function short(c: Candidate, r: PlacementRequest, have: 'capacity' | 'free'): string | undefined {
  const amounts = c.advert[have];
  const lacking = RESOURCE_KEYS.filter((k) => r.want[k] > amounts[k]);
  if (lacking.length === 0) return undefined;
  const what = have === 'capacity' ? 'in all' : 'free';
  return lacking.map((k) => `${amountText(k, amounts[k])} ${what}, ${r.want[k]} asked`).join('; ');
}

export const FILTERS: Record<FilterName, Filter> = {
  excluded: (c, r) => r.exclude.get(c.id),
  driver: (c, r) => {
    const fits = c.advert.drivers.some(
      (d) => d.available && d.kinds.includes(r.kind) && meetsIsolation(d.isolation, r.isolation) && (r.driver === undefined || d.name === r.driver),
    );
    if (fits) return undefined;
    const which = r.driver === undefined ? `a ${r.kind}` : `${r.driver} for a ${r.kind}`;
    const level = r.isolation === undefined ? '' : ` with ${r.isolation} isolation or stronger`;
    const has = c.advert.drivers.filter((d) => d.available).map((d) => `${d.name} (${d.kinds.join('/')}, ${d.isolation})`);
    return `no available driver runs ${which}${level}; it has ${has.length === 0 ? 'none' : has.join(', ')}`;
  },
  labels: (c, r) => {
    const missing = r.labels.filter(([k, v]) => c.advert.labels[k] !== v);
    if (missing.length === 0) return undefined;
    return missing.map(([k, v]) => `label ${k}=${v} asked, ${c.advert.labels[k] === undefined ? 'it has none' : `it has ${k}=${c.advert.labels[k]}`}`).join('; ');
  },
  region: (c, r) => {
    const region = c.advert.location?.region;
    if (r.regions !== undefined && (region === undefined || !r.regions.has(region))) {
      return `region ${region ?? '(none declared)'} is not one of ${[...r.regions].join(', ')}`;
    }
    if (r.excludeRegions !== undefined && region !== undefined && r.excludeRegions.has(region)) return `region ${region} is excluded`;
    return undefined;
  },
  reputation: (c, _r, p) => (c.reputation < p.minReputation ? `reputation ${c.reputation.toFixed(3)} is below ${p.minReputation}` : undefined),
  rtt: (c, r) => {
    if (r.maxRttMs === undefined) return undefined;
    const rtt = effectiveRtt(c, r.origin);
    if (Number.isNaN(rtt.ms)) return `round trip unknown (never measured, no coordinates declared); at most ${r.maxRttMs} ms asked`;
    return rtt.ms > r.maxRttMs ? `round trip ${rtt.ms.toFixed(1)} ms (${rtt.source}), more than the ${r.maxRttMs} ms asked` : undefined;
  },
  capacity: (c, r) => short(c, r, 'capacity'),
  free: (c, r) => (r.ignoreFree === true ? undefined : short(c, r, 'free')),
};

/** The first filter the candidate fails, with its reason; undefined when it passes all. */
export function firstRejection(c: Candidate, r: PlacementRequest, p: PlacementPolicy): { filter: FilterName; reason: string } | undefined {
  for (const name of FILTER_NAMES) {
    const reason = FILTERS[name](c, r, p);
    if (reason !== undefined) return { filter: name, reason };
  }
  return undefined;
}
