import { readdirSync, readFileSync } from 'node:fs';
import v8 from 'node:v8';
import vm from 'node:vm';

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

export interface SettledMemory {
  rssMiB: number;
  /** How long after the call the reading was taken. */
  afterMs: number;
}

/**
 * Polls a process's RSS until it is at or under `targetMiB` or `maxMs` have passed, and returns the
 * lowest reading. V8 gives freed heap back to the OS only some tens of seconds after a load ends, so a
 * reading taken right after a load says little about what an idle process holds.
 */
export async function settledMemory(pid: number, { targetMiB, maxMs, stepMs = 2000 }: { targetMiB: number; maxMs: number; stepMs?: number }): Promise<SettledMemory> {
  const start = performance.now();
  let best: SettledMemory = { rssMiB: readMemory(pid).rssMiB, afterMs: 0 };
  while (best.rssMiB > targetMiB && performance.now() - start < maxMs) {
    await new Promise((resolve) => setTimeout(resolve, stepMs));
    const rssMiB = readMemory(pid).rssMiB;
    if (rssMiB < best.rssMiB) best = { rssMiB, afterMs: performance.now() - start };
  }
  return best;
}

function statusKiB(status: string, field: string): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status);
  if (match === null) throw new Error(`/proc status has no ${field} line`);
  return Number(match[1]);
}

/** CPU time (user + system) a process has used so far: all its threads, and its main thread alone. */
export interface CpuTimes {
  totalMs: number;
  mainThreadMs: number;
}

// /proc counts CPU time in USER_HZ ticks, which Linux fixes at 100 per second for user space.
const MS_PER_TICK = 10;

export function readCpu(pid: number): CpuTimes {
  return { totalMs: statCpuMs(`/proc/${pid}/stat`), mainThreadMs: statCpuMs(`/proc/${pid}/task/${pid}/stat`) };
}

function statCpuMs(file: string): number {
  const stat = readFileSync(file, 'utf8');
  // The command name (field 2) may hold spaces and parentheses: count fields from the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return (utime + stime) * MS_PER_TICK;
}

/** How many file descriptors a process holds open. */
export function openFds(pid: number | 'self' = 'self'): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** The 1-minute load average of the machine (Linux only): how busy it was around a measurement. */
export function loadAverage(): number {
  return Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
}

/**
 * CPU time the whole host has spent busy since boot, in core-seconds (/proc/stat's user, nice, system,
 * irq and softirq; not idle, iowait, steal, nor guest time, which user already holds). The difference
 * across a piece of work counts every process and the kernel's own share (network stacks, softirqs),
 * which per-process counters miss.
 */
export function hostBusySeconds(): number {
  const [user, nice, system, , , irq, softirq] = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  return (user! + nice! + system! + irq! + softirq!) / 100; // USER_HZ, 100 on every Linux this runs on
}

let gc: (() => void) | undefined;

/**
 * A full garbage collection of this process, for memory readings that mean something: without it, what a
 * previous benchmark allocated and dropped (a 256 MiB blob) is still in the RSS, or leaves it midway.
 */
export async function collectGarbage(): Promise<void> {
  if (gc === undefined) {
    v8.setFlagsFromString('--expose-gc');
    gc = vm.runInNewContext('gc') as () => void;
  }
  // Buffers' memory is given back by a sweeper after the collection: a moment, and a second one, see it gone.
  gc();
  await new Promise((resolve) => setTimeout(resolve, 100));
  gc();
}
