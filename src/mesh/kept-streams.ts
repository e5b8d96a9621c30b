import type { Stream } from '@libp2p/interface';
import type { JsonFrames } from './frames.ts';

interface Kept {
  frames: JsonFrames<Stream>;
  timer: NodeJS.Timeout;
}

/**
 * A requester's streams between runs, by node, so that the next run to a node takes one instead of
 * opening a stream (HTTP's keep-alive, for `/vmesh/run/2`). Each is closed after `keepMs` unused, at most
 * `perNode` are kept per node, and one the node has closed meanwhile is never handed out.
 */
export class KeptStreams {
  private readonly byNode = new Map<string, Kept[]>();
  private closed = false;

  constructor(
    private readonly keepMs: number,
    private readonly perNode = 8,
  ) {}

  /** The most recently kept stream to `node` that is still open both ways, if any. */
  take(node: string): JsonFrames<Stream> | undefined {
    const kept = this.byNode.get(node) ?? [];
    for (let k = kept.pop(); k !== undefined; k = kept.pop()) {
      clearTimeout(k.timer);
      if (isOpen(k.frames.stream)) {
        if (kept.length === 0) this.byNode.delete(node);
        return k.frames;
      }
      k.frames.stream.abort(new Error('closed by the other node while kept'));
    }
    this.byNode.delete(node);
    return undefined;
  }

  /** A stream whose run is over: kept for the next run to `node`, or closed. */
  keep(node: string, frames: JsonFrames<Stream>): void {
    const kept = this.byNode.get(node) ?? [];
    if (this.closed || this.keepMs === 0 || kept.length >= this.perNode || !isOpen(frames.stream)) return close(frames.stream);
    const k: Kept = {
      frames,
      timer: setTimeout(() => {
        const at = kept.indexOf(k);
        if (at >= 0) kept.splice(at, 1);
        if (kept.length === 0 && this.byNode.get(node) === kept) this.byNode.delete(node);
        close(frames.stream);
      }, this.keepMs),
    };
    k.timer.unref();
    kept.push(k);
    this.byNode.set(node, kept);
  }

  /** How many streams are kept, over all nodes. */
  get size(): number {
    let n = 0;
    for (const kept of this.byNode.values()) n += kept.length;
    return n;
  }

  /** Closes every kept stream and keeps no more (the mesh is stopping). */
  closeAll(): void {
    this.closed = true;
    for (const kept of this.byNode.values()) {
      for (const k of kept) {
        clearTimeout(k.timer);
        close(k.frames.stream);
      }
    }
    this.byNode.clear();
  }
}

function isOpen(stream: Stream): boolean {
  return stream.status === 'open' && stream.writeStatus === 'writable' && stream.remoteWriteStatus === 'writable' && (stream.readStatus === 'readable' || stream.readStatus === 'paused');
}

function close(stream: Stream): void {
  stream.close().catch((err: Error) => stream.abort(err));
}
