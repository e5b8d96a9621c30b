import { lstatSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { entriesOf, writeOciLayout } from '../../test/helpers/oci-image.ts';
import { busyboxRootfs } from '../../test/helpers/rootfs.ts';
import type { ImageInfo } from './common.ts';

/** Name of the image under the node's file root: what `source.file` names. */
export const IMAGE_NAME = 'busybox';
const FILE_ROOT = 'images';

/**
 * Everything both ways run from, in one temporary directory: a busybox root file system (the bare
 * bundle's root), and a node home whose file root holds an OCI image layout of that root file system.
 */
export interface Fixture {
  dir: string;
  rootfs: string;
  /** The node's home: config.json serves `images/` as a file root, with the image at images/busybox. */
  home: string;
  image: ImageInfo;
  remove(): void;
}

export async function createFixture(): Promise<Fixture> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vmesh-bench-containers-'));
  try {
    const rootfs = busyboxRootfs(path.join(dir, 'rootfs'));
    const home = path.join(dir, 'home');
    const layout = path.join(home, FILE_ROOT, IMAGE_NAME);
    const entries = entriesOf(rootfs);
    await writeOciLayout(layout, [entries], {});
    writeFileSync(path.join(home, 'config.json'), JSON.stringify({ fileRoots: [FILE_ROOT] }));
    const image: ImageInfo = { entries: entries.length, rootfsBytes: fileBytes(rootfs), layoutBytes: fileBytes(path.join(layout, 'blobs')) };
    return { dir, rootfs, home, image, remove: () => rmSync(dir, { recursive: true, force: true }) };
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/** Bytes of the regular files under `dir` (symlinks not followed). */
function fileBytes(dir: string): number {
  let total = 0;
  for (const name of readdirSync(dir)) {
    const file = path.join(dir, name);
    const st = lstatSync(file);
    if (st.isDirectory()) total += fileBytes(file);
    else if (st.isFile()) total += st.size;
  }
  return total;
}
