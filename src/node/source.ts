import { promises as fs, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import type { BlobStore } from '../blobs/blob-store.ts';
import { InvalidInputError, MAX_INLINE_BYTES, type Source } from '../spec/index.ts';

export interface SourceContext {
  blobs: BlobStore;
  /** Directories a `source.file` may name a file under. */
  fileRoots: readonly string[];
}

export interface ResolvedSource {
  /** The code as bytes (empty when the source is a directory). */
  code: Uint8Array;
  /** The real path of a directory source (a container rootfs or OCI image layout). */
  dir?: string;
  /** The real path of a file source that is used in place, not read (an image archive). */
  path?: string;
  /** A microVM's own kernel, initramfs and root disk: their real paths. */
  kernel?: string;
  initrd?: string;
  rootfs?: string;
}

/** The workload's code: inline text, a file or directory under a file root, or a blob. */
export async function resolveSource(source: Source, ctx: SourceContext, opts: { inPlace?: boolean } = {}): Promise<ResolvedSource> {
  if ('file' in source) return readUnderRoots(source.file, ctx.fileRoots, opts.inPlace ?? false);
  if ('guest' in source || 'snapshot' in source) return { code: new Uint8Array(0) }; // the driver supplies the image, or the snapshot does
  if ('kernel' in source) {
    // Used in place: the driver hands both files to the hypervisor after checking what they are.
    const kernel = await readUnderRoots(source.kernel, ctx.fileRoots, true, 'source.kernel');
    const initrd = source.initrd === undefined ? undefined : await readUnderRoots(source.initrd, ctx.fileRoots, true, 'source.initrd');
    if (kernel.path === undefined) throw new InvalidInputError('source.kernel: names a directory, not a kernel file', { field: 'source.kernel' });
    if (initrd !== undefined && initrd.path === undefined) throw new InvalidInputError('source.initrd: names a directory, not an initramfs file', { field: 'source.initrd' });
    const rootfs = source.rootfs === undefined ? undefined : await readUnderRoots(source.rootfs, ctx.fileRoots, true, 'source.rootfs');
    if (rootfs !== undefined && rootfs.path === undefined) throw new InvalidInputError('source.rootfs: names a directory, not a disk image file', { field: 'source.rootfs' });
    return { code: new Uint8Array(0), kernel: kernel.path, ...(initrd?.path === undefined ? {} : { initrd: initrd.path }), ...(rootfs?.path === undefined ? {} : { rootfs: rootfs.path }) };
  }
  // An image archive in the blob store is used where it lies, like one under a file root.
  if ('blob' in source && opts.inPlace === true) {
    const file = await ctx.blobs.fileOf(source.blob);
    if (file === undefined) throw new InvalidInputError(`source.blob: this node holds no blob ${source.blob}`, { field: 'source.blob' });
    return { code: new Uint8Array(0), path: file };
  }
  return { code: await resolveBytes(source, ctx) };
}

async function resolveBytes(source: Extract<Source, { inline: string } | { blob: string }>, ctx: SourceContext): Promise<Uint8Array> {
  if ('inline' in source) {
    const bytes = decodeInline(source.inline, source.encoding, 'source.inline');
    if (bytes.byteLength > MAX_INLINE_BYTES) {
      throw new InvalidInputError(`source.inline: ${bytes.byteLength} bytes is over the ${MAX_INLINE_BYTES}-byte limit; put it in the blob store`, { field: 'source.inline' });
    }
    return bytes;
  }
  const bytes = await ctx.blobs.get(source.blob);
  if (bytes === undefined) throw new InvalidInputError(`source.blob: this node holds no blob ${source.blob}`, { field: 'source.blob' });
  return bytes;
}

/** Inline bytes as a request carries them: utf8 text, or base64 when `encoding` says so. */
export function decodeInline(text: string, encoding: 'utf8' | 'base64' | undefined, field: string): Buffer {
  if (encoding !== 'base64') return Buffer.from(text, 'utf8');
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
    throw new InvalidInputError(`${field}: not valid base64 (encoding is "base64")`, { field });
  }
  return Buffer.from(text, 'base64');
}

/**
 * Reads a file, or names a directory, that must resolve (symlinks included) to a path inside one of
 * `roots`.
 */
async function readUnderRoots(file: string, roots: readonly string[], inPlace: boolean, field = 'source.file'): Promise<ResolvedSource> {
  if (roots.length === 0) {
    throw new InvalidInputError(`${field}: this node serves no file roots (set fileRoots in config.json); send the source inline or as a blob`, { field });
  }
  // Resolved with plain system calls: each async one waited 0.1 to 0.5 ms for libuv's thread pool here,
  // three of them on every run's path.
  const realpath = (p: string) => {
    try {
      return realpathSync.native(p);
    } catch {
      return undefined;
    }
  };
  for (const root of roots) {
    const realRoot = realpath(root);
    if (realRoot === undefined) continue;
    const real = realpath(path.resolve(realRoot, file));
    if (real === undefined || !real.startsWith(realRoot + path.sep)) continue;
    const stat = statSync(real);
    if (stat.isDirectory()) return { code: new Uint8Array(0), dir: real };
    if (!stat.isFile()) continue;
    if (inPlace) return { code: new Uint8Array(0), path: real };
    if (stat.size > MAX_INLINE_BYTES) {
      throw new InvalidInputError(`source.file: ${stat.size} bytes is over the ${MAX_INLINE_BYTES}-byte limit`, { field: 'source.file' });
    }
    return { code: await fs.readFile(real) };
  }
  throw new InvalidInputError(`${field}: ${JSON.stringify(file)} is not a file or directory under the node's file roots`, { field });
}
