import { readFileSync } from 'node:fs';

export interface MemoryReading {
  /** Resident set size now. */
  rssMiB: number;
  /** The highest resident set size the process has had (VmHWM). */
  peakMiB: number;
}

/** Reads a process's resident memory from /proc (Linux only). */
export function readMemory(pid: number): MemoryReading {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return { rssMiB: statusKiB(status, 'VmRSS') / 1024, peakMiB: statusKiB(status, 'VmHWM') / 1024 };
}

function statusKiB(status: string, field: string): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status);
  if (match === null) throw new Error(`/proc status has no ${field} line`);
  return Number(match[1]);
}
