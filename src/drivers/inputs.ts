import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { SandboxInput } from './driver.ts';

/**
 * Writes a run's input files under `dir` (a directory the driver made, empty), each read-only (0444) in
 * directories of 0755. The node has already checked the paths: plain, relative, no two clashing.
 */
export async function placeInputs(dir: string, inputs: readonly SandboxInput[]): Promise<void> {
  for (const input of inputs) {
    const target = path.join(dir, input.path);
    await fs.mkdir(path.dirname(target), { recursive: true, mode: 0o755 });
    if (input.data !== undefined) await fs.writeFile(target, input.data, { mode: 0o444, flag: 'wx' });
    else await fs.copyFile(input.file!, target, fs.constants.COPYFILE_EXCL);
    await fs.chmod(target, 0o444);
  }
}
