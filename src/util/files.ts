// Moving, linking and copying files the way sandboxes need: disks stay sparse, and what cannot be done
// in place across filesystems (EXDEV) is done by a copy.
import { promises as fs } from 'node:fs';
import { run } from './exec.ts';

/** Copies a file, keeping its holes (a raw disk of gigabytes that holds megabytes stays that small). */
export async function copySparse(from: string, to: string): Promise<void> {
  await run('cp', ['--sparse=always', from, to]);
}

/** Renames a file; across filesystems, copies it and removes the original. */
export async function moveFile(from: string, to: string): Promise<void> {
  if (await inPlace(() => fs.rename(from, to))) return;
  await copySparse(from, to);
  await fs.rm(from, { force: true });
}

/** Hard-links a file; across filesystems, copies it. */
export async function linkOrCopy(from: string, to: string): Promise<void> {
  if (!(await inPlace(() => fs.link(from, to)))) await copySparse(from, to);
}

/** Runs an operation that only works within one filesystem: false when it crossed one (EXDEV). */
async function inPlace(op: () => Promise<void>): Promise<boolean> {
  try {
    await op();
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EXDEV') return false;
    throw err;
  }
}
