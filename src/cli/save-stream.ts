import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { hashingTap } from '../util/hashing-tap.ts';

export interface SavedFile {
  file: string;
  bytes: number;
  /** sha256:<hex> of what was written. */
  blob: string;
}

/**
 * Writes a download to `target`: into a file beside it first and renamed only when whole, so that an
 * interrupted download never leaves a partial file under the name. The bytes are hashed on the way;
 * `expect` makes a download with another hash fail (and leaves nothing behind).
 */
export async function saveStream(body: Readable, target: string, o: { force?: boolean; expect?: string; tap?: NodeJS.ReadWriteStream } = {}): Promise<SavedFile> {
  const file = path.resolve(target);
  if (o.force !== true && existsSync(file)) {
    body.destroy(); // an unread response would hold its connection (and the process) open
    throw new Error(`${file} exists; pass --force to overwrite it`);
  }
  const temp = `${file}.${randomBytes(4).toString('hex')}.part`;
  const hash = hashingTap();
  try {
    await pipeline(body, hash.stream, ...(o.tap === undefined ? [] : [o.tap]), createWriteStream(temp, { mode: 0o644 }));
    const blob = hash.digest();
    if (o.expect !== undefined && blob !== o.expect) throw new Error(`the bytes that came hash to ${blob}, not ${o.expect}; nothing was written`);
    await fs.rename(temp, file);
    return { file, bytes: hash.bytes(), blob };
  } catch (err) {
    await fs.rm(temp, { force: true });
    throw err;
  }
}
