import type { Candidate } from '../../src/placement/index.ts';
import type { NodeAdvert, Workload } from '../../src/spec/index.ts';

type Driver = NodeAdvert['drivers'][number];
export const DRIVERS: Record<string, Driver> = {
  wasm: { name: 'wasm', kinds: ['function'], isolation: 'language', available: true },
  quickjs: { name: 'quickjs', kinds: ['function'], isolation: 'language', available: true },
  oci: { name: 'oci', kinds: ['container'], isolation: 'container', available: true },
  qemu: { name: 'qemu', kinds: ['microvm'], isolation: 'vm', available: true },
};

export interface NodeShape {
  id: string;
  self?: boolean;
  drivers?: string[];
  capacity?: Partial<NodeAdvert['capacity']>;
  free?: Partial<NodeAdvert['free']>;
  runs?: { active: number; queued: number };
  labels?: Record<string, string>;
  location?: NodeAdvert['location'];
  rttMs?: number;
  reputation?: number;
}

const AMOUNTS = { vcpus: 8, memoryMiB: 16_384, diskMiB: 100_000, egressMbps: 1000, ingressMbps: 1000 };

/** A candidate as a node would see it from an advert: 8 vCPUs, 16 GiB, all free, unless told otherwise. */
export function candidate(s: NodeShape): Candidate {
  const capacity = { ...AMOUNTS, ...s.capacity };
  const advert: NodeAdvert = {
    format: 'vmesh-advert/1',
    node: s.id,
    seq: 1,
    issuedAt: new Date(0).toISOString(),
    version: 'test',
    addresses: [],
    drivers: (s.drivers ?? ['wasm', 'quickjs', 'oci']).map((d) => DRIVERS[d]!),
    capacity,
    free: { ...capacity, ...s.free },
    runs: s.runs ?? { active: 0, queued: 0 },
    labels: s.labels ?? {},
  };
  if (s.location !== undefined) advert.location = s.location;
  const c: Candidate = { id: s.id, self: s.self ?? false, advert, reputation: s.reputation ?? 0.5 };
  if (s.rttMs !== undefined) c.rttMs = s.rttMs;
  return c;
}

export const fn = (extra: Partial<Workload> = {}): Workload => ({ kind: 'function', source: { inline: 'export default () => 1' }, ...extra });
export const vm = (extra: Partial<Workload> = {}): Workload => ({ kind: 'microvm', source: { guest: 'default' }, command: ['true'], ...extra });
