import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { InvalidInputError } from '../spec/index.ts';

const HASH = /^sha256:([0-9a-f]{64})$/;

export function sha256(bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** `sha256:<hex>` of a file, read as a stream. */
export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return `sha256:${hash.digest('hex')}`;
}

/**
 * Content-addressed bytes on local disk: `<root>/sha256/<hex>`. Writes go to `<root>/incoming` and are
 * renamed into place (`tempPath` + `adopt`), so a reader never sees a partial blob; reads re-check the hash.
 */
export class BlobStore {
  /** Hashes known to be on disk already: a repeated put costs no system call. */
  private readonly known = new Set<string>();
  /** Told of every blob that enters the store (the mesh announces it as a provider). */
  private readonly listeners: Array<(hash: string) => void> = [];

  constructor(readonly root: string) {}

  private pathOf(hash: string): string {
    const m = HASH.exec(hash);
    if (m === null) throw new InvalidInputError(`blob: ${JSON.stringify(hash)} is not a sha256:<64 hex> hash`, { field: 'blob' });
    return path.join(this.root, 'sha256', m[1]!);
  }

  /** Stores bytes and returns their hash; `knownHash` (trusted: computed by the caller) skips rehashing. */
  async put(bytes: Uint8Array, knownHash?: string): Promise<string> {
    const hash = knownHash ?? sha256(bytes);
    if (this.known.has(hash) || (await this.has(hash))) {
      this.known.add(hash);
      return hash;
    }
    const tmp = await this.tempPath();
    try {
      await fs.writeFile(tmp, bytes, { mode: 0o600 });
      return await this.adopt(tmp, hash);
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
  }

  /**
   * A fresh path in this store's filesystem for a blob being written (mode 0600); pass it to `adopt` when
   * done. Writes go there and are renamed into place, so a reader never sees a partial blob.
   */
  async tempPath(): Promise<string> {
    const dir = path.join(this.root, 'incoming');
    await fs.mkdir(dir, { recursive: true });
    return path.join(dir, `${randomBytes(8).toString('hex')}.tmp`);
  }

  /** Drops what a crashed process left half-written; call once at start, before any write. */
  async clearIncoming(): Promise<void> {
    await fs.rm(path.join(this.root, 'incoming'), { recursive: true, force: true });
  }

  /** Moves a finished file (from `tempPath`) into the store under `hash`, which the caller computed while writing it. */
  async adopt(file: string, hash: string): Promise<string> {
    const target = this.pathOf(hash);
    if (this.known.has(hash) || (await this.has(hash))) {
      await fs.rm(file, { force: true });
    } else {
      await fs.mkdir(path.dirname(target), { recursive: true });
      await fs.rename(file, target);
      for (const l of this.listeners) l(hash);
    }
    this.known.add(hash);
    return hash;
  }

  onAdded(listener: (hash: string) => void): void {
    this.listeners.push(listener);
  }

  /** Every blob held, by hash. */
  async list(): Promise<string[]> {
    const names = await fs.readdir(path.join(this.root, 'sha256')).catch(() => [] as string[]);
    return names.filter((n) => /^[0-9a-f]{64}$/.test(n)).map((n) => `sha256:${n}`);
  }

  /** The path of a blob this store holds (for streaming it out), or undefined. */
  async fileOf(hash: string): Promise<string | undefined> {
    const file = this.pathOf(hash);
    return (await this.has(hash)) ? file : undefined;
  }

  /** The blob's bytes, or undefined when this store does not hold it (or holds a corrupted copy). */
  async get(hash: string): Promise<Buffer | undefined> {
    const file = this.pathOf(hash);
    let bytes: Buffer;
    try {
      bytes = await fs.readFile(file);
    } catch {
      return undefined;
    }
    if (sha256(bytes) !== hash) {
      this.known.delete(hash);
      await fs.rm(file, { force: true });
      return undefined;
    }
    return bytes;
  }

  async has(hash: string): Promise<boolean> {
    try {
      await fs.access(this.pathOf(hash));
      return true;
    } catch {
      return false;
    }
  }
}
