import { createHash } from 'node:crypto';
import { Transform } from 'node:stream';

/** A pass-through stream that hashes (sha256) and counts what flows through it, for a pipeline. */
export interface HashingTap {
  stream: Transform;
  /** Bytes seen so far. */
  bytes(): number;
  /** `sha256:<hex>` of everything seen; call once, after the pipeline has finished. */
  digest(): string;
}

export function hashingTap(): HashingTap {
  const hash = createHash('sha256');
  let bytes = 0;
  const stream = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      hash.update(chunk);
      bytes += chunk.byteLength;
      done(null, chunk);
    },
  });
  return { stream, bytes: () => bytes, digest: () => `sha256:${hash.digest('hex')}` };
}
