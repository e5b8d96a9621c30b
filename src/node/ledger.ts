import { CapacityExceededError, type ResolvedResources } from '../spec/index.ts';

/** The amounts a node can hand out. Bandwidth is a resource like CPU and memory. */
export interface Capacity {
  vcpus: number;
  memoryMiB: number;
  diskMiB: number;
  egressMbps: number;
  ingressMbps: number;
}

type Amounts = Capacity;
const KEYS = ['vcpus', 'memoryMiB', 'diskMiB', 'egressMbps', 'ingressMbps'] as const;
const FIELD: Record<(typeof KEYS)[number], string> = {
  vcpus: 'resources.vcpus',
  memoryMiB: 'resources.memoryMiB',
  diskMiB: 'resources.diskMiB',
  egressMbps: 'resources.network.egressMbps',
  ingressMbps: 'resources.network.ingressMbps',
};
/** vCPUs are kept in thousandths so that fractions add up exactly. */
const SCALE: Record<(typeof KEYS)[number], number> = { vcpus: 1000, memoryMiB: 1, diskMiB: 1, egressMbps: 1000, ingressMbps: 1000 };

export function amountsOf(r: ResolvedResources): Amounts {
  return {
    vcpus: r.vcpus,
    memoryMiB: r.memoryMiB,
    diskMiB: r.diskMiB,
    egressMbps: r.network.egressMbps,
    ingressMbps: r.network.ingressMbps,
  };
}

/**
 * Admission control: a run holds a reservation from admission until it ends, and the reservations
 * never add up to more than the capacity. A request larger than the whole capacity is refused at once;
 * one that only does not fit now waits.
 */
export class Ledger {
  private readonly reservations = new Map<string, Amounts>();
  private readonly used: Record<(typeof KEYS)[number], number> = { vcpus: 0, memoryMiB: 0, diskMiB: 0, egressMbps: 0, ingressMbps: 0 };

  constructor(readonly capacity: Capacity) {}

  /** Throws CapacityExceededError naming the first resource that can never fit on this node. */
  checkFits(r: ResolvedResources): void {
    const want = amountsOf(r);
    for (const k of KEYS) {
      if (want[k] > this.capacity[k]) {
        throw new CapacityExceededError(
          `${FIELD[k]}: ${want[k]} exceeds this node's total capacity of ${this.capacity[k]}`,
          { field: FIELD[k] },
        );
      }
    }
  }

  /** Whether the resources would fit now, beside what is reserved. */
  fitsNow(r: ResolvedResources): boolean {
    const want = amountsOf(r);
    return KEYS.every((k) => this.used[k] + scaled(k, want[k]) <= scaled(k, this.capacity[k]));
  }

  /** Reserves the resources if they fit now; returns false (and reserves nothing) if they do not. */
  tryReserve(id: string, r: ResolvedResources): boolean {
    if (this.reservations.has(id)) throw new Error(`run ${id} already holds a reservation`);
    const want = amountsOf(r);
    for (const k of KEYS) {
      if (this.used[k] + scaled(k, want[k]) > scaled(k, this.capacity[k])) return false;
    }
    for (const k of KEYS) this.used[k] += scaled(k, want[k]);
    this.reservations.set(id, want);
    return true;
  }

  /** Frees a run's reservation; a second call for the same run does nothing. */
  release(id: string): void {
    const held = this.reservations.get(id);
    if (held === undefined) return;
    this.reservations.delete(id);
    for (const k of KEYS) this.used[k] -= scaled(k, held[k]);
  }

  holds(id: string): boolean {
    return this.reservations.has(id);
  }

  get count(): number {
    return this.reservations.size;
  }

  reserved(): Capacity {
    return Object.fromEntries(KEYS.map((k) => [k, this.used[k] / SCALE[k]])) as unknown as Capacity;
  }

  free(): Capacity {
    return Object.fromEntries(KEYS.map((k) => [k, (scaled(k, this.capacity[k]) - this.used[k]) / SCALE[k]])) as unknown as Capacity;
  }
}

function scaled(k: (typeof KEYS)[number], v: number): number {
  return Math.round(v * SCALE[k]);
}
