import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { CgroupVersion } from './cgroups.ts';

const run = promisify(execFile);

export type RuntimeName = 'runc' | 'crun';

export interface OciRuntime {
  name: RuntimeName;
  /** The binary, as found on PATH. */
  command: string;
  version: string;
}

/** The first line of `<runtime> --version`, or undefined when the runtime is not installed. */
export async function runtimeVersion(command: string, signal?: AbortSignal): Promise<string | undefined> {
  try {
    const { stdout } = await run(command, ['--version'], { timeout: 10_000, signal });
    return stdout.split('\n')[0]?.trim();
  } catch {
    return undefined;
  }
}

/**
 * Picks the OCI runtime: crun where cgroups are v2 (it refuses v1 and hybrid hosts), runc otherwise or
 * when crun is missing. `prefer` forces one.
 */
export async function findRuntime(cgroups: CgroupVersion, prefer?: RuntimeName, signal?: AbortSignal): Promise<OciRuntime | { missing: string }> {
  const order: RuntimeName[] = prefer !== undefined ? [prefer] : cgroups === 'v2' ? ['crun', 'runc'] : ['runc'];
  for (const name of order) {
    const version = await runtimeVersion(name, signal);
    if (version !== undefined) return { name, command: name, version };
  }
  const hint = cgroups === 'v1' ? 'apt-get install runc (crun needs cgroup v2)' : 'apt-get install crun (or runc)';
  return { missing: `no OCI runtime found (${order.join(', ')}): ${hint}` };
}
