import type { CapturedStream } from '../spec/index.ts';

/**
 * Keeps the first `capBytes` bytes of a stream and counts the rest. A flood costs a counter, not memory.
 */
export class CappedStream {
  private readonly chunks: Buffer[] = [];
  private kept = 0;
  private total = 0;

  constructor(readonly capBytes: number) {}

  /** Appends a chunk; returns the part that was kept (empty once the cap is reached). */
  append(chunk: Uint8Array): Uint8Array {
    this.total += chunk.byteLength;
    const room = this.capBytes - this.kept;
    if (room <= 0) return new Uint8Array(0);
    const part = chunk.byteLength <= room ? chunk : chunk.subarray(0, room);
    this.chunks.push(Buffer.from(part));
    this.kept += part.byteLength;
    return part;
  }

  /** Records bytes the producer counted but never sent (it stopped sending at the cap). */
  noteTotal(total: number): void {
    if (total > this.total) this.total = total;
  }

  get bytes(): number {
    return this.total;
  }

  get truncated(): boolean {
    return this.total > this.kept;
  }

  toJSON(): CapturedStream {
    return { text: Buffer.concat(this.chunks).toString('utf8'), bytes: this.total, truncated: this.truncated };
  }
}
