import { statfsSync } from 'node:fs';
import os from 'node:os';
import type { Capacity } from './ledger.ts';

/** Memory kept back for the host and the node agent itself. */
const HOST_RESERVE_MiB = 512;
/** Bandwidth a node declares when the operator has not said (a 1 Gbit/s NIC). */
const DEFAULT_LINK_Mbps = 1000;

/** Reads what this host can hand out; any field can be overridden by the node's configuration. */
export function hostCapacity(home: string, overrides: Partial<Capacity> = {}): Capacity {
  const memoryMiB = Math.max(64, Math.floor(os.totalmem() / 2 ** 20) - HOST_RESERVE_MiB);
  let diskMiB = 10 * 1024;
  try {
    const fs = statfsSync(home);
    diskMiB = Math.floor((fs.bavail * fs.bsize) / 2 ** 20);
  } catch {
    /* keep the default: the home may not exist yet */
  }
  return {
    vcpus: os.availableParallelism(),
    memoryMiB,
    diskMiB,
    egressMbps: DEFAULT_LINK_Mbps,
    ingressMbps: DEFAULT_LINK_Mbps,
    ...overrides,
  };
}
