import { randomBytes } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { InvalidInputError } from '../../../spec/index.ts';
import { openArchive } from './archive.ts';
import { readImage, type ImageConfig } from './layout.ts';
import type { IdMap } from '../user-namespace.ts';
import { applyLayer, claimUnowned, type UnpackBudget } from './unpack.ts';

export interface UnpackedImage {
  /** The merged, read-only root file system. */
  rootfs: string;
  config: ImageConfig;
  bytes: number;
}

interface Meta {
  bytes: number;
  config: ImageConfig;
}

const MAX_RESOLVED = 1024;

/** inode:size:mtime of the file that names an image's manifest (OCI index.json or docker manifest.json). */
async function indexIdentity(imageDir: string): Promise<string | undefined> {
  for (const name of ['index.json', 'manifest.json']) {
    const st = await fs.stat(path.join(imageDir, name)).catch(() => undefined);
    if (st !== undefined) return `${name}:${st.ino}:${st.size}:${st.mtimeMs}`;
  }
  return undefined;
}

function checkSize(unpacked: UnpackedImage, maxBytes: number): UnpackedImage {
  if (unpacked.bytes > maxBytes) {
    throw new InvalidInputError(
      `resources.diskMiB: the image unpacks to ${Math.ceil(unpacked.bytes / 2 ** 20)} MiB, more than the ${Math.floor(maxBytes / 2 ** 20)} MiB requested`,
      { field: 'resources.diskMiB' },
    );
  }
  return unpacked;
}

/**
 * Unpacked images, one directory per manifest digest, shared by every later run of the same image.
 * With `owners` (containers in a user namespace), files belong to the owners their layers name, shifted
 * into that range, and the directory's name carries the range. An image is unpacked into a temporary directory and renamed into place only when every layer applied
 * cleanly, so a bad or oversized image leaves nothing behind.
 */
export class ImageCache {
  private readonly inFlight = new Map<string, Promise<UnpackedImage>>();
  /** Image archives already opened: `path:size:mtime` → the image's directory in the cache. */
  private readonly archives = new Map<string, string>();
  /**
   * Image directories already resolved, by their index file's identity (inode, size, mtime): a warm run
   * of an unchanged layout costs one stat instead of reading and hashing its manifest and config again.
   */
  private readonly resolved = new Map<string, { identity: string; image: UnpackedImage }>();

  constructor(
    readonly root: string,
    readonly owners?: IdMap,
  ) {}

  async ensure(imageDir: string, maxBytes: number): Promise<UnpackedImage> {
    const identity = await indexIdentity(imageDir);
    const known = identity === undefined ? undefined : this.resolved.get(imageDir);
    if (known !== undefined && known.identity === identity) return checkSize(known.image, maxBytes);
    const image = await readImage(imageDir);
    const hex = image.key.replace(/^sha256:/, '') + (this.owners === undefined ? '' : `-ids-${this.owners.hostId}-${this.owners.size}`);
    const dir = path.join(this.root, hex);
    let pending = this.inFlight.get(hex);
    if (pending === undefined) {
      pending = this.load(dir).then((cached) => cached ?? this.unpack(dir, image.layers, image.config, maxBytes));
      this.inFlight.set(hex, pending);
      pending.finally(() => this.inFlight.delete(hex)).catch(() => {});
    }
    const unpacked = await pending;
    if (identity !== undefined) {
      if (this.resolved.size >= MAX_RESOLVED) this.resolved.clear();
      this.resolved.set(imageDir, { identity, image: unpacked });
    }
    return checkSize(unpacked, maxBytes);
  }

  /**
   * The image in an archive file. An archive is opened (extracted to a temporary directory) only the
   * first time it is seen; later runs of the same unchanged file go straight to the cache. A file whose
   * content hash is known (a blob) is known by it: its mtime moves each time the blob store uses it.
   */
  async ensureArchive(file: string, maxBytes: number, contentHash?: string): Promise<UnpackedImage> {
    let id = contentHash;
    if (id === undefined) {
      const stat = await fs.stat(file);
      id = `${file}:${stat.size}:${stat.mtimeMs}`;
    }
    const known = this.archives.get(id);
    const cached = known === undefined ? undefined : await this.load(known);
    if (cached !== undefined && cached.bytes <= maxBytes) return cached;
    const archive = await openArchive(file, this.root, maxBytes);
    try {
      const image = await this.ensure(archive.dir, maxBytes);
      this.archives.set(id, path.dirname(image.rootfs));
      return image;
    } finally {
      await archive.remove();
    }
  }

  private async load(dir: string): Promise<UnpackedImage | undefined> {
    try {
      const meta = JSON.parse(await fs.readFile(path.join(dir, 'meta.json'), 'utf8')) as Meta;
      return { rootfs: path.join(dir, 'rootfs'), config: meta.config, bytes: meta.bytes };
    } catch {
      return undefined;
    }
  }

  private async unpack(dir: string, layers: Awaited<ReturnType<typeof readImage>>['layers'], config: ImageConfig, maxBytes: number): Promise<UnpackedImage> {
    await fs.mkdir(this.root, { recursive: true, mode: 0o700 });
    const tmp = path.join(this.root, `.unpacking-${path.basename(dir)}-${randomBytes(4).toString('hex')}`);
    try {
      await fs.mkdir(path.join(tmp, 'rootfs'), { recursive: true, mode: 0o755 });
      const budget: UnpackBudget = { usedBytes: 0, maxBytes };
      for (const [i, layer] of layers.entries()) {
        await applyLayer(path.join(tmp, 'rootfs'), layer.file, layer.compression, budget, layer.digest ?? `#${i + 1}`, {
          ...(layer.digest === undefined ? {} : { digest: layer.digest }),
          ...(this.owners === undefined ? {} : { owners: this.owners }),
        });
      }
      if (this.owners !== undefined) await claimUnowned(path.join(tmp, 'rootfs'), this.owners);
      const meta: Meta = { bytes: budget.usedBytes, config };
      await fs.writeFile(path.join(tmp, 'meta.json'), JSON.stringify(meta));
      if (existsSync(dir)) await fs.rm(tmp, { recursive: true, force: true });
      else await fs.rename(tmp, dir);
      return { rootfs: path.join(dir, 'rootfs'), config, bytes: meta.bytes };
    } catch (err) {
      await fs.rm(tmp, { recursive: true, force: true });
      throw err;
    }
  }

  /** Removes unpacks a crashed process left half done. */
  async removeIncomplete(): Promise<void> {
    const entries = await fs.readdir(this.root).catch(() => [] as string[]);
    for (const e of entries.filter((n) => n.startsWith('.unpacking-') || n.startsWith('.archive-'))) await fs.rm(path.join(this.root, e), { recursive: true, force: true });
  }
}
