import { VmeshError } from '../spec/index.ts';

/** The blob store cannot take a blob: it is larger than the store, or what live runs hold leaves no room. */
export class BlobStoreFullError extends VmeshError {
  readonly code = 'blob_store_full';
  readonly status = 507;
}

/** More bytes came than a blob may have (the node's `limits.blobBytes`, or what the sender announced). */
export class BlobTooLargeError extends VmeshError {
  readonly code = 'blob_too_large';
  readonly status = 413;
}

/** The bytes that came are not the blob they were said to be (another hash, or another size). */
export class BlobMismatchError extends VmeshError {
  readonly code = 'blob_mismatch';
  readonly status = 400;
}

/** A blob held by a live run cannot be removed. */
export class BlobHeldError extends VmeshError {
  readonly code = 'blob_held';
  readonly status = 409;
}

/**
 * What a blob store holds, in memory: each blob's size in least-recently-used order, and how many live
 * runs hold each one. It decides what to evict so that a new blob fits under `maxBytes`, never choosing
 * a held blob. Pure bookkeeping: the store does the file system work.
 */
export class BlobIndex {
  /** hash → size in bytes; iteration order is least recently used first. */
  private readonly sizes = new Map<string, number>();
  private readonly holds = new Map<string, number>();
  private total = 0;

  constructor(readonly maxBytes: number) {}

  get bytes(): number {
    return this.total;
  }

  get count(): number {
    return this.sizes.size;
  }

  has(hash: string): boolean {
    return this.sizes.has(hash);
  }

  sizeOf(hash: string): number | undefined {
    return this.sizes.get(hash);
  }

  /** Records a blob as the most recently used one. */
  add(hash: string, size: number): void {
    this.remove(hash);
    this.sizes.set(hash, size);
    this.total += size;
  }

  /** Marks a blob as just used; false when the index does not hold it. */
  touch(hash: string): boolean {
    const size = this.sizes.get(hash);
    if (size === undefined) return false;
    this.sizes.delete(hash);
    this.sizes.set(hash, size);
    return true;
  }

  remove(hash: string): boolean {
    const size = this.sizes.get(hash);
    if (size === undefined) return false;
    this.sizes.delete(hash);
    this.total -= size;
    return true;
  }

  /** Every blob, least recently used first. */
  hashes(): string[] {
    return [...this.sizes.keys()];
  }

  /**
   * Keeps `hashes` from eviction until the returned function is called (once per hold; calling it again
   * does nothing). Blobs not held yet count too: a run may hold what it is about to fetch.
   */
  hold(hashes: Iterable<string>): () => void {
    const held = [...new Set(hashes)];
    for (const h of held) this.holds.set(h, (this.holds.get(h) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const h of held) {
        const n = (this.holds.get(h) ?? 1) - 1;
        if (n === 0) this.holds.delete(h);
        else this.holds.set(h, n);
      }
    };
  }

  isHeld(hash: string): boolean {
    return this.holds.has(hash);
  }

  /** Bytes of blobs present and held by live runs. */
  heldBytes(): number {
    let n = 0;
    for (const [hash, size] of this.sizes) if (this.holds.has(hash)) n += size;
    return n;
  }

  /** Throws unless a blob of `size` bytes could fit once every blob nobody holds were evicted. */
  assertRoom(size: number): void {
    if (size > this.maxBytes) {
      throw new BlobStoreFullError(`a blob of ${size} bytes is larger than this node's whole blob store (limits.blobStoreBytes = ${this.maxBytes})`, { field: 'blob' });
    }
    const held = this.heldBytes();
    if (held + size > this.maxBytes) {
      throw new BlobStoreFullError(
        `the blob store is full: live runs hold ${held} of its ${this.maxBytes} bytes (limits.blobStoreBytes), so a blob of ${size} bytes does not fit until they end`,
        { field: 'blob' },
      );
    }
  }

  /**
   * Takes out of the index, least recently used first, the blobs to delete so that `size` more bytes
   * fit, and returns them; throws (and takes nothing) when held blobs leave no room.
   */
  evictFor(size: number): string[] {
    this.assertRoom(size);
    const victims: string[] = [];
    let total = this.total;
    for (const [hash, bytes] of this.sizes) {
      if (total + size <= this.maxBytes) break;
      if (this.holds.has(hash)) continue;
      victims.push(hash);
      total -= bytes;
    }
    for (const hash of victims) this.remove(hash);
    return victims;
  }
}
