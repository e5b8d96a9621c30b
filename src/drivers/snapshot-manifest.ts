// The manifest every driver's snapshot directory holds, and the files it lists: read and checked the same
// way by each driver that loads one.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { InvalidInputError } from '../spec/index.ts';

export const MANIFEST_FILE = 'manifest.json';

/** A snapshot that cannot be loaded here, and why: the request's `snapshot` is what is wrong. */
export function snapshotRefused(why: string): InvalidInputError {
  return new InvalidInputError(`snapshot: ${why}`, { field: 'snapshot' });
}

/**
 * The parsed manifest of the snapshot in `dir`; refuses a missing one, or one that is not a JSON object.
 * Its fields are unchecked: the driver checks each one it uses.
 */
export async function readManifest<T extends object>(dir: string): Promise<T> {
  const text = await fs.readFile(path.join(dir, MANIFEST_FILE), 'utf8').catch(() => undefined);
  if (text === undefined) throw snapshotRefused(`no ${MANIFEST_FILE} in ${dir}`);
  let manifest: unknown;
  try {
    manifest = JSON.parse(text);
  } catch {
    throw snapshotRefused(`${MANIFEST_FILE} is not JSON`);
  }
  if (manifest === null || typeof manifest !== 'object' || Array.isArray(manifest)) throw snapshotRefused(`${MANIFEST_FILE} is not an object`);
  return manifest as T;
}

/**
 * Checks that every file the manifest lists (name → bytes) is a plain file in `dir` of that size, so that
 * a truncated or changed copy is refused, not loaded. Every name is checked first: one that would lead
 * outside the directory is refused before any file is looked at.
 */
export async function checkSnapshotFiles(dir: string, files: Record<string, number>): Promise<void> {
  const outside = Object.keys(files).find((name) => name !== path.basename(name) || name.startsWith('.'));
  if (outside !== undefined) throw snapshotRefused(`it names a file ${JSON.stringify(outside)} outside its directory`);
  for (const [name, bytes] of Object.entries(files)) {
    const st = await fs.lstat(path.join(dir, name)).catch(() => undefined);
    if (st === undefined || !st.isFile() || st.size !== bytes) {
      throw snapshotRefused(`${name} is ${st === undefined ? 'missing' : !st.isFile() ? 'not a plain file' : `${st.size} bytes, not the ${bytes} recorded`} (truncated or changed)`);
    }
  }
}
