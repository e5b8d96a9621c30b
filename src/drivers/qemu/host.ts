import { promises as fs } from 'node:fs';
import path from 'node:path';

/** The host CPU's clock in kHz from /proc/cpuinfo (what TCG's guest TSC runs at), if it says. */
export async function hostTscKhz(): Promise<number | undefined> {
  const info = await fs.readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const mhz = Number(/^cpu MHz\s*:\s*([\d.]+)/m.exec(info)?.[1]);
  return mhz > 0 ? Math.round(mhz * 1000) : undefined;
}

/**
 * Kills the QEMU processes a previous node left under `sandboxRoot` (found by the pid file in each
 * `qemu-*` directory) and removes their directories. Only a QEMU started for that directory is killed,
 * checked against its command line, so a recycled pid is left alone. Returns how many were killed.
 */
export async function killLeftoverVms(sandboxRoot: string): Promise<number> {
  const entries = await fs.readdir(sandboxRoot).catch(() => [] as string[]);
  let killed = 0;
  for (const e of entries.filter((name) => name.startsWith('qemu-'))) {
    const dir = path.join(sandboxRoot, e);
    const pid = Number((await fs.readFile(path.join(dir, 'qemu.pid'), 'utf8').catch(() => '')).trim());
    const cmdline = pid > 0 ? await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '') : '';
    if (cmdline.includes('qemu-system') && cmdline.includes(dir)) {
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
