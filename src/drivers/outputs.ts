import { createHash } from 'node:crypto';
import { constants, promises as fs } from 'node:fs';
import path from 'node:path';
import type { OutputFile } from '../spec/index.ts';

export interface OutputLimits {
  /** Files up to this size come back inline (base64); larger ones only by size and hash. */
  inlineBytes: number;
}

/**
 * Reads the declared output files of a finished sandbox from its scratch directory. A path that leaves
 * the directory, goes through a symlink, or is not a regular file is skipped: a workload cannot make
 * the node read anything outside its own sandbox.
 */
export async function collectOutputs(root: string, declared: readonly string[], limits: OutputLimits): Promise<OutputFile[]> {
  if (declared.length === 0) return [];
  const realRoot = await fs.realpath(root);
  const files: OutputFile[] = [];
  for (const rel of declared) {
    const file = await readOutput(realRoot, rel, limits);
    if (file !== undefined) files.push(file);
  }
  return files;
}

async function readOutput(realRoot: string, rel: string, limits: OutputLimits): Promise<OutputFile | undefined> {
  const target = path.resolve(realRoot, rel);
  if (!target.startsWith(realRoot + path.sep)) return undefined;
  let realDir: string;
  try {
    realDir = await fs.realpath(path.dirname(target));
  } catch {
    return undefined;
  }
  if (realDir !== path.dirname(target)) return undefined; // a symlinked directory on the way
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(target, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return undefined; // missing, or the last component is a symlink
  }
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) return undefined;
    const hash = createHash('sha256');
    const kept: Buffer[] = [];
    let bytes = 0;
    for await (const chunk of handle.createReadStream({ autoClose: false }) as AsyncIterable<Buffer>) {
      hash.update(chunk);
      bytes += chunk.byteLength;
      if (bytes <= limits.inlineBytes) kept.push(chunk);
    }
    const file: OutputFile = { path: rel, bytes, sha256: `sha256:${hash.digest('hex')}` };
    if (bytes <= limits.inlineBytes) file.contentBase64 = Buffer.concat(kept).toString('base64');
    return file;
  } finally {
    await handle.close();
  }
}
