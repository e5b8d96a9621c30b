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
/** Fewer bytes came than were announced: the source ended early (a sender that broke off, or lied). */
export class BlobShortError extends BlobMismatchError {}

export class BlobHeldError extends VmeshError {
  readonly code = 'blob_held';
  readonly status = 409;
}

/** At most this share of a store may be pinned (kept copies): the rest stays a cache for this node's own use. */
export const MAX_PINNED_SHARE = 0.5;

/**
 * What a blob store holds, in memory: each blob's size in least-recently-used order, how many live runs
 * hold each one, and which are pinned until when (copies kept for other nodes). It decides what to evict
 * so that a new blob fits under `maxBytes`, never choosing a held blob or one pinned for a while yet.
 * Pure bookkeeping: the store does the file system work.
 */
export class BlobIndex {
  /** hash → size in bytes; iteration order is least recently used first. */
  private readonly sizes = new Map<string, number>();
  private readonly holds = new Map<string, number>();
  /** hash → until when (ms since the epoch) it must not be evicted. */
  private readonly pins = new Map<string, number>();
  private total = 0;

  constructor(
    readonly maxBytes: number,
    private readonly now: () => number = Date.now,
  ) {}

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
    this.pins.delete(hash);
    this.total -= size;
    return true;
  }

  /**
   * Keeps a blob this index has from eviction until `until` (a later pin extends it). Throws
   * BlobStoreFullError when the pinned blobs would pass MAX_PINNED_SHARE of the store.
   */
  pin(hash: string, until: number): void {
    const size = this.sizes.get(hash);
    if (size === undefined) throw new Error(`${hash} is not in the store`);
    if (!this.isPinned(hash)) this.assertPinRoom(size);
    this.pins.set(hash, Math.max(until, this.pins.get(hash) ?? 0));
  }

  /** Throws BlobStoreFullError unless `size` more bytes could be pinned. */
  assertPinRoom(size: number): void {
    const pinned = this.pinnedBytes();
    if (pinned + size > this.maxBytes * MAX_PINNED_SHARE) {
      throw new BlobStoreFullError(
        `this node keeps ${pinned} bytes of copies for other nodes already; ${size} more would pass half its blob store (limits.blobStoreBytes = ${this.maxBytes})`,
        { field: 'blob' },
      );
    }
  }

  /** Until when a blob is pinned, or undefined (never pinned, or its pin has run out). */
  pinnedUntil(hash: string): number | undefined {
    const until = this.pins.get(hash);
    if (until === undefined) return undefined;
    if (until > this.now()) return until;
    this.pins.delete(hash);
    return undefined;
  }

  isPinned(hash: string): boolean {
    return this.pinnedUntil(hash) !== undefined;
  }

  /** Every live pin, for saving. */
  pinned(): Array<[string, number]> {
    return [...this.pins.keys()].flatMap((h) => {
      const until = this.pinnedUntil(h);
      return until === undefined ? [] : [[h, until] as [string, number]];
    });
  }

  pinnedBytes(): number {
    let n = 0;
    for (const [hash] of this.pinned()) n += this.sizes.get(hash) ?? 0;
    return n;
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

  /** Bytes eviction may not take now: held by live runs or pinned. */
  private lockedBytes(): number {
    let n = 0;
    for (const [hash, size] of this.sizes) if (this.holds.has(hash) || this.isPinned(hash)) n += size;
    return n;
  }

  /** Throws unless a blob of `size` bytes could fit once every blob nobody holds were evicted. */
  assertRoom(size: number): void {
    if (size > this.maxBytes) {
      throw new BlobStoreFullError(`a blob of ${size} bytes is larger than this node's whole blob store (limits.blobStoreBytes = ${this.maxBytes})`, { field: 'blob' });
    }
    const locked = this.lockedBytes();
    if (locked + size > this.maxBytes) {
      const held = this.heldBytes();
      const pinned = locked - held;
      const why = pinned > 0 ? `live runs hold ${held} and copies kept for other nodes pin ${pinned}` : `live runs hold ${held}`;
      throw new BlobStoreFullError(
        `the blob store is full: ${why} of its ${this.maxBytes} bytes (limits.blobStoreBytes), so a blob of ${size} bytes does not fit until they end`,
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
      if (this.holds.has(hash) || this.isPinned(hash)) continue;
      victims.push(hash);
      total -= bytes;
    }
    for (const hash of victims) this.remove(hash);
    return victims;
  }
}
