import { NoDriverError, ISOLATION_LEVELS, type IsolationLevel, type Workload, type WorkloadKind } from '../spec/index.ts';
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

/** Which driver a kind of workload goes to (unless the request names one), and why each before it was passed over. */
export interface DriverChoice {
  kind: WorkloadKind;
  /** The first driver in preference order that runs the kind and is available; absent when none is. */
  driver?: string;
  passedOver: Array<{ driver: string; reason: string }>;
}

const KINDS: readonly WorkloadKind[] = ['function', 'container', 'microvm', 'unikernel'];

/**
 * Puts the drivers named in `preference` first, in that order; the others keep their order after them.
 * A name that no driver has is ignored (the probe of a node without it has nothing to say about it).
 */
export function inPreferenceOrder<D extends { name: string }>(drivers: readonly D[], preference: readonly string[]): D[] {
  const rank = (d: D) => {
    const i = preference.indexOf(d.name);
    return i < 0 ? preference.length : i;
  };
  return drivers.map((d, i) => ({ d, i })).sort((a, b) => rank(a.d) - rank(b.d) || a.i - b.i).map(({ d }) => d);
}

/**
 * The drivers this node has, probed once at start, and the choice of one driver for a workload.
 * Drivers are listed in preference order: the first that is available, accepts the workload and meets
 * its isolation request wins.
 */
export class DriverRegistry {
  private readonly probes = new Map<string, DriverProbe>();
  private readonly drivers: readonly Driver[];

  /** `preference` names drivers to try first, in order (the node's `drivers.preference`). */
  constructor(drivers: readonly Driver[], preference: readonly string[] = []) {
    this.drivers = inPreferenceOrder(drivers, preference);
  }

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
    return this.drivers.map((d) => {
      const probe = this.probes.get(d.name) ?? { available: false, reason: 'not probed yet' };
      return { name: d.name, kinds: [...d.kinds], isolation: d.isolation, probe: probe.available && d.status !== undefined ? d.status() : probe };
    });
  }

  all(): readonly Driver[] {
    return this.drivers;
  }

  /**
   * For each kind this node has a driver for, the driver a request of that kind goes to when it names none
   * (a function's runtime may still move it to another function driver), and why the earlier ones were not it.
   */
  choices(): DriverChoice[] {
    const choices: DriverChoice[] = [];
    for (const kind of KINDS) {
      const candidates = this.drivers.filter((d) => d.kinds.includes(kind));
      if (candidates.length === 0) continue;
      const choice: DriverChoice = { kind, passedOver: [] };
      for (const d of candidates) {
        const probe = this.probes.get(d.name);
        if (probe?.available) {
          choice.driver = d.name;
          break;
        }
        choice.passedOver.push({ driver: d.name, reason: `unavailable: ${probe?.reason ?? 'not probed'}` });
      }
      choices.push(choice);
    }
    return choices;
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
    // A driver the request named and cannot have: the field to change is `driver`; otherwise the kind has no driver here.
    throw new NoDriverError(`no driver on this node can run this ${workload.kind} workload: ${why.join('; ') || 'no drivers'}`, { field: workload.driver === undefined ? 'kind' : 'driver' });
  }

  async close(): Promise<void> {
    await Promise.all(this.drivers.map((d) => d.close()));
  }
}
