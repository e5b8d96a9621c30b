import { existsSync, promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';

const ROOT = '/sys/fs/cgroup';

/**
 * `v2` when /sys/fs/cgroup is the unified hierarchy; `v1` otherwise (including "hybrid" hosts, where a
 * v2 mount exists beside the v1 controllers but holds none of them).
 */
export type CgroupVersion = 'v1' | 'v2';

export function cgroupVersion(root = ROOT): CgroupVersion {
  return existsSync(path.join(root, 'cgroup.controllers')) ? 'v2' : 'v1';
}

/** What a container's cgroup recorded, read before the runtime deletes it. */
export interface CgroupStats {
  /** Processes the kernel's OOM killer ended inside the cgroup. */
  oomKills: number;
  memoryPeakBytes?: number;
  cpuMs?: number;
}

/** Reads a container's cgroup (`cgroupsPath` as given to the runtime, e.g. `/vmesh/<id>`). Missing files count as unknown. */
export async function readCgroupStats(version: CgroupVersion, cgroupsPath: string, root = ROOT): Promise<CgroupStats> {
  const rel = cgroupsPath.replace(/^\/+/, '');
  // Read synchronously: three small files of a kernel file system, between a container's end and its
  // result (three async reads waited 0.7 ms for the thread pool here).
  const read = (...parts: string[]) => {
    try {
      return readFileSync(path.join(root, ...parts), 'utf8');
    } catch {
      return undefined;
    }
  };
  const stats: CgroupStats = { oomKills: 0 };
  if (version === 'v2') {
    const [events, peak, cpu] = [read(rel, 'memory.events'), read(rel, 'memory.peak'), read(rel, 'cpu.stat')];
    stats.oomKills = field(events, 'oom_kill') ?? 0;
    if (peak !== undefined) stats.memoryPeakBytes = Number(peak.trim());
    const usec = field(cpu, 'usage_usec');
    if (usec !== undefined) stats.cpuMs = usec / 1000;
    return stats;
  }
  const [oom, peak, cpuNs] = [read('memory', rel, 'memory.oom_control'), read('memory', rel, 'memory.max_usage_in_bytes'), read('cpuacct', rel, 'cpuacct.usage')];
  stats.oomKills = field(oom, 'oom_kill') ?? 0;
  if (peak !== undefined) stats.memoryPeakBytes = Number(peak.trim());
  if (cpuNs !== undefined) stats.cpuMs = Number(cpuNs.trim()) / 1e6;
  return stats;
}

/** The names of the cgroups directly under `parent` (v1: as the pids hierarchy has them). */
export async function childCgroups(version: CgroupVersion, parent: string, root = ROOT): Promise<string[]> {
  const rel = parent.replace(/^\/+/, '');
  const dir = version === 'v2' ? path.join(root, rel) : path.join(root, 'pids', rel);
  const entries = await fs.readdir(dir, { withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isDirectory()).map((e) => e.name);
}

/** The processes in a container's cgroup (v1: from the pids hierarchy, where runc always puts them). */
export async function cgroupProcesses(version: CgroupVersion, cgroupsPath: string, root = ROOT): Promise<number[]> {
  const rel = cgroupsPath.replace(/^\/+/, '');
  const file = version === 'v2' ? path.join(root, rel, 'cgroup.procs') : path.join(root, 'pids', rel, 'cgroup.procs');
  const text = await fs.readFile(file, 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean).map(Number);
}

/**
 * Kills every process left in a container's cgroup, until it is empty: the last line of defence against
 * a container that outlived its runtime (a kill that raced the container's creation, a runtime that died).
 */
export async function killCgroup(version: CgroupVersion, cgroupsPath: string, root = ROOT): Promise<number> {
  let killed = 0;
  for (let round = 0; round < 50; round++) {
    const pids = await cgroupProcesses(version, cgroupsPath, root);
    if (pids.length === 0) return killed;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
        killed++;
      } catch {
        /* already gone */
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return killed;
}

/**
 * Removes a container's cgroup directories in every hierarchy, in case the runtime could not (its
 * processes were still exiting when it tried). A cgroup can only be removed once empty: retries for a
 * short while. Returns the directories that are still there.
 */
export async function removeCgroup(version: CgroupVersion, cgroupsPath: string, root = ROOT): Promise<string[]> {
  const rel = cgroupsPath.replace(/^\/+/, '');
  const hierarchies = version === 'v2' ? [root] : (await fs.readdir(root).catch(() => [] as string[])).map((h) => path.join(root, h));
  const left: string[] = [];
  for (const h of hierarchies) {
    const dir = path.join(h, rel);
    for (let attempt = 0; existsSync(dir); attempt++) {
      try {
        await fs.rmdir(dir);
      } catch {
        if (attempt >= 20) {
          left.push(dir);
          break;
        }
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
    }
  }
  return left;
}

/** `name value` lines (memory.events, memory.oom_control, cpu.stat). */
function field(text: string | undefined, name: string): number | undefined {
  const m = text === undefined ? null : new RegExp(`^${name} (\\d+)$`, 'm').exec(text);
  return m === null ? undefined : Number(m[1]);
}
