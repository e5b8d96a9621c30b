import { promises as fs } from 'node:fs';
import path from 'node:path';

/** Where a driver keeps its VMs: directories `<prefix>*` under the sandbox root, each with a pid file. */
export interface VmDirectories {
  sandboxRoot: string;
  /** The directory name prefix, e.g. `qemu-`. */
  prefix: string;
  /** The pid file's name inside each directory. */
  pidFile: string;
  /** A word the VMM's command line holds (its binary's name), so that a recycled pid is left alone. */
  binary: string;
  /**
   * Runs of whole arguments (joined by NUL) that, besides the directory's path, show that a command line
   * was started for that directory (a jailed Firecracker's names only its id), given the directory's name.
   */
  marks?: (dirName: string) => string[];
}

/**
 * Kills the VMM processes a previous node left (found by the pid file in each of the driver's directories)
 * and removes their directories. Only a process started for that directory is killed, checked against
 * its command line (which names the directory's files). Returns how many were killed.
 */
export async function killLeftoverVms(where: VmDirectories): Promise<number> {
  const entries = await fs.readdir(where.sandboxRoot).catch(() => [] as string[]);
  let killed = 0;
  for (const e of entries.filter((name) => name.startsWith(where.prefix))) {
    const dir = path.join(where.sandboxRoot, e);
    const pid = Number((await fs.readFile(path.join(dir, where.pidFile), 'utf8').catch(() => '')).trim());
    const cmdline = pid > 0 ? await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '') : '';
    const args = `\0${cmdline}`;
    if (cmdline.includes(where.binary) && (cmdline.includes(dir) || (where.marks?.(e) ?? []).some((m) => args.includes(`\0${m}\0`)))) {
      try {
        process.kill(pid, 'SIGKILL');
        killed++;
      } catch {
        /* already gone */
      }
    }
    await fs.rm(dir, { recursive: true, force: true });
  }
  return killed;
}
