import { NoDriverError, ISOLATION_LEVELS, type IsolationLevel, type Workload } from '../spec/index.ts';
import type { Driver, DriverProbe } from './driver.ts';

export interface DriverStatus {
  name: string;
  kinds: string[];
  isolation: IsolationLevel;
  probe: DriverProbe;
}

/** True when `offered` is at least as strong as `requested`. */
export function meetsIsolation(offered: IsolationLevel, requested: IsolationLevel | undefined): boolean {
  if (requested === undefined) return true;
  return ISOLATION_LEVELS.indexOf(offered) >= ISOLATION_LEVELS.indexOf(requested);
}

/**
 * The drivers this node has, probed once at start, and the choice of one driver for a workload.
 * Drivers are listed in preference order: the first that is available, accepts the workload and meets
 * its isolation request wins.
 */
export class DriverRegistry {
  private readonly probes = new Map<string, DriverProbe>();

  constructor(private readonly drivers: readonly Driver[]) {}

  async probeAll(signal?: AbortSignal): Promise<void> {
    await Promise.all(
      this.drivers.map(async (d) => {
        const probe = await d.probe(signal).catch((err: Error) => ({ available: false, reason: `probe failed: ${err.message}` }));
        this.probes.set(d.name, probe);
      }),
    );
  }

  /** Lets every available driver remove what a crashed process left; returns how many sandboxes in all. */
  async recoverAll(): Promise<number> {
    let total = 0;
    for (const d of this.drivers) {
      if (this.probes.get(d.name)?.available && d.recover !== undefined) total += await d.recover().catch(() => 0);
    }
    return total;
  }

  list(): DriverStatus[] {
    return this.drivers.map((d) => ({
      name: d.name,
      kinds: [...d.kinds],
      isolation: d.isolation,
      probe: this.probes.get(d.name) ?? { available: false, reason: 'not probed yet' },
    }));
  }

  all(): readonly Driver[] {
    return this.drivers;
  }

  /** Picks the driver for a workload, or throws NoDriverError saying why each candidate was passed over. */
  choose(workload: Workload, code: Uint8Array): Driver {
    const why: string[] = [];
    const candidates = workload.driver === undefined ? this.drivers : this.drivers.filter((d) => d.name === workload.driver);
    if (workload.driver !== undefined && candidates.length === 0) {
      throw new NoDriverError(`driver: this node has no driver named ${JSON.stringify(workload.driver)} (it has ${this.drivers.map((d) => d.name).join(', ')})`, { field: 'driver' });
    }
    for (const d of candidates) {
      const probe = this.probes.get(d.name);
      if (!d.kinds.includes(workload.kind)) why.push(`${d.name} runs ${d.kinds.join('/')}, not ${workload.kind}`);
      else if (!probe?.available) why.push(`${d.name} is unavailable: ${probe?.reason ?? 'not probed'}`);
      else if (!meetsIsolation(d.isolation, workload.isolation)) why.push(`${d.name} gives ${d.isolation} isolation, less than ${workload.isolation}`);
      else if (!d.accepts(workload, code)) why.push(`${d.name} does not take this source${workload.runtime ? ` (runtime ${workload.runtime})` : ''}`);
      else return d;
    }
    throw new NoDriverError(`no driver on this node can run this ${workload.kind} workload: ${why.join('; ') || 'no drivers'}`, { field: 'kind' });
  }

  async close(): Promise<void> {
    await Promise.all(this.drivers.map((d) => d.close()));
  }
}
