import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { InvalidSourceError } from '../../../spec/index.ts';
import { isGzip } from './layout.ts';
import { applyLayer } from './unpack.ts';

/**
 * Opens an image archive (an OCI layout or a `docker save` as a tar, gzipped or not) into a temporary
 * directory, with the same path, link and size checks as a layer. `remove` deletes the directory.
 */
export async function openArchive(file: string, scratchRoot: string, maxBytes: number): Promise<{ dir: string; remove: () => Promise<void> }> {
  await fs.mkdir(scratchRoot, { recursive: true, mode: 0o700 });
  const dir = path.join(scratchRoot, `.archive-${randomBytes(6).toString('hex')}`);
  await fs.mkdir(dir, { mode: 0o700 });
  const remove = () => fs.rm(dir, { recursive: true, force: true });
  try {
    const gzip = await isGzip(file);
    await applyLayer(dir, file, gzip ? 'gzip' : 'none', { usedBytes: 0, maxBytes }, path.basename(file));
    return { dir, remove };
  } catch (err) {
    await remove();
    if (err instanceof InvalidSourceError) throw new InvalidSourceError(err.message.replace(/^source: layer /, 'source: archive '), { field: 'source' });
    throw err;
  }
}
