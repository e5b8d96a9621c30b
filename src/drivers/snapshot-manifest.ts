// The manifest every driver's snapshot directory holds: read the same way by each driver that loads one.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { InvalidInputError } from '../spec/index.ts';

export const MANIFEST_FILE = 'manifest.json';

/** A snapshot that cannot be loaded here, and why: the request's `snapshot` is what is wrong. */
export function snapshotRefused(why: string): InvalidInputError {
  return new InvalidInputError(`snapshot: ${why}`, { field: 'snapshot' });
}

/** The parsed manifest of the snapshot in `dir`, for the driver to check; refuses a missing or malformed one. */
export async function readManifest<T extends object>(dir: string): Promise<Partial<T>> {
  const text = await fs.readFile(path.join(dir, MANIFEST_FILE), 'utf8').catch(() => undefined);
  if (text === undefined) throw snapshotRefused(`no ${MANIFEST_FILE} in ${dir}`);
  let manifest: unknown;
  try {
    manifest = JSON.parse(text);
  } catch {
    throw snapshotRefused(`${MANIFEST_FILE} is not JSON`);
  }
  if (manifest === null || typeof manifest !== 'object' || Array.isArray(manifest)) throw snapshotRefused(`${MANIFEST_FILE} is not an object`);
  return manifest as Partial<T>;
}
