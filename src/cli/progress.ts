import { Transform } from 'node:stream';

const MiB = 2 ** 20;

/**
 * A pass-through stream that shows how many bytes have gone by on one stderr line, at most ten times a
 * second, and only when stderr is a terminal (scripts and --json get no such noise). `end()` clears it.
 */
export function byteProgress(label: string, total?: number): { stream: Transform; end(): void } {
  const show = process.stderr.isTTY === true;
  let bytes = 0;
  let shownAt = 0;
  const draw = () => {
    const of = total === undefined ? '' : ` of ${(total / MiB).toFixed(1)} MiB (${total === 0 ? 100 : Math.floor((bytes / total) * 100)}%)`;
    process.stderr.write(`\r\x1b[2K${label}: ${(bytes / MiB).toFixed(1)} MiB${of}`);
  };
  const stream = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      bytes += chunk.byteLength;
      const now = performance.now();
      if (show && now - shownAt >= 100) {
        shownAt = now;
        draw();
      }
      done(null, chunk);
    },
  });
  return { stream, end: () => show && shownAt > 0 && process.stderr.write('\r\x1b[2K') };
}
