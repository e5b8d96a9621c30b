import { promises as fs } from 'node:fs';

/** The host CPU's clock in kHz from /proc/cpuinfo (what TCG's guest TSC runs at), if it says. */
export async function hostTscKhz(): Promise<number | undefined> {
  const info = await fs.readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const mhz = Number(/^cpu MHz\s*:\s*([\d.]+)/m.exec(info)?.[1]);
  return mhz > 0 ? Math.round(mhz * 1000) : undefined;
}
