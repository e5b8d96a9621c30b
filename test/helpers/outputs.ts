import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { extract } from 'tar-stream';
import { BlobStore } from '../../src/blobs/blob-store.ts';
import type { OutputSink } from '../../src/outputs/pack.ts';
import { blobSink } from '../../src/outputs/sink.ts';

/** A real blob store for the archives of one test file, removed when the process ends. */
export function testOutputs(limits: { maxBytes?: number; inlineBytes?: number } = {}): { sink: OutputSink; blobs: BlobStore } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vmesh-outputs-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const blobs = new BlobStore(dir);
  return { blobs, sink: blobSink(blobs, { maxBytes: limits.maxBytes ?? 64 * 2 ** 20, inlineBytes: limits.inlineBytes ?? 2 ** 20 }) };
}

export interface TarEntry {
  name: string;
  type: string;
  mode: number;
  body: Buffer;
}

/** Every entry of a tar, in order, with its body. */
export async function tarEntries(tar: Buffer | string): Promise<TarEntry[]> {
  const bytes = typeof tar === 'string' ? readFileSync(tar) : tar;
  const out: TarEntry[] = [];
  const ex = extract();
  const done = new Promise<void>((resolve, reject) => {
    ex.on('entry', (header, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c: unknown) => void chunks.push(c as Buffer));
      stream.on('end', () => {
        out.push({ name: header.name, type: header.type ?? 'file', mode: header.mode ?? 0, body: Buffer.concat(chunks) });
        next();
      });
    });
    ex.on('finish', () => resolve());
    ex.on('error', reject);
  });
  ex.end(bytes);
  await done;
  return out;
}
