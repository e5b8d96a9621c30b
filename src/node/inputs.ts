import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { BlobStore } from '../blobs/blob-store.ts';
import type { SandboxInput } from '../drivers/driver.ts';
import { InvalidInputError, MAX_INLINE_BYTES, type InputFile } from '../spec/index.ts';
import { decodeInline } from './source.ts';

/**
 * Checks a workload's input files and finds their bytes: inline ones decoded, blob ones located in the
 * store (used in place, never read into memory). Refuses with the offending field named: a path that
 * is not plain (`a//b`, `./a`, `a/`), two inputs at the same path or one inside another, a blob this
 * node does not hold, more inline bytes than a request may carry, more bytes in all than the run's disk.
 */
export async function resolveInputs(inputs: readonly InputFile[] | undefined, blobs: BlobStore, diskMiB: number): Promise<SandboxInput[]> {
  if (inputs === undefined || inputs.length === 0) return [];
  const resolved: SandboxInput[] = [];
  const seen = new Map<string, number>();
  let inlineBytes = 0;
  let total = 0;
  for (const [i, input] of inputs.entries()) {
    const field = `inputs[${i}]`;
    if (path.posix.normalize(input.path) !== input.path || input.path.endsWith('/') || input.path === '.') {
      throw new InvalidInputError(`${field}.path: ${JSON.stringify(input.path)} is not a plain relative path (like "data/table.csv")`, { field: `${field}.path` });
    }
    for (const [other, j] of seen) {
      if (other === input.path || other.startsWith(`${input.path}/`) || input.path.startsWith(`${other}/`)) {
        throw new InvalidInputError(`${field}.path: ${JSON.stringify(input.path)} clashes with inputs[${j}].path ${JSON.stringify(other)}`, { field: `${field}.path` });
      }
    }
    seen.set(input.path, i);
    if ((input.inline === undefined) === (input.blob === undefined)) {
      throw new InvalidInputError(`${field}: give exactly one of inline (the bytes) and blob (a sha256 hash in the blob store)`, { field });
    }
    if (input.inline !== undefined) {
      const data = decodeInline(input.inline, input.encoding, `${field}.inline`);
      inlineBytes += data.byteLength;
      if (inlineBytes > MAX_INLINE_BYTES) {
        throw new InvalidInputError(`${field}.inline: the inline inputs pass the ${MAX_INLINE_BYTES}-byte limit; put large inputs in the blob store`, { field: `${field}.inline` });
      }
      total += data.byteLength;
      resolved.push({ path: input.path, bytes: data.byteLength, data });
    } else {
      const blob = input.blob!;
      const file = await blobs.fileOf(blob);
      if (file === undefined) throw new InvalidInputError(`${field}.blob: this node holds no blob ${blob}`, { field: `${field}.blob` });
      const { size } = await fs.stat(file);
      total += size;
      resolved.push({ path: input.path, bytes: size, file, hash: blob });
    }
  }
  if (total > diskMiB * 2 ** 20) {
    throw new InvalidInputError(`resources.diskMiB: the input files take ${Math.ceil(total / 2 ** 20)} MiB, more than the ${diskMiB} MiB disk of the run`, {
      field: 'resources.diskMiB',
    });
  }
  return resolved;
}

/** The inputs as the store keeps them in a run's spec: inline bytes moved into the blob store, by hash. */
export async function storedInputs(inputs: readonly SandboxInput[], blobs: BlobStore): Promise<InputFile[]> {
  const stored: InputFile[] = [];
  for (const input of inputs) {
    stored.push({ path: input.path, blob: input.hash ?? (await blobs.put(input.data!)) });
  }
  return stored;
}
