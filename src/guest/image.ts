import { createHash, randomBytes } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import { AGENT_SCRIPT } from './agent.ts';
import { cpioArchive, type CpioEntry } from './cpio.ts';
import { debianKernel, type Progress } from './kernel.ts';

const gzipAsync = promisify(gzip);

/** Bumped when the layout of the image changes, so that old cached images are not reused. */
const IMAGE_FORMAT = 2;

export const DEFAULT_BUSYBOX = '/bin/busybox';

/** Where guest kernels and images are cached for this user: `$XDG_CACHE_HOME/vmesh/guest`, else `~/.cache/vmesh/guest`. */
export function defaultGuestCache(): string {
  return path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'vmesh', 'guest');
}

/** The default vmesh guest: a kernel and an initramfs with busybox, the virtio modules and the agent. */
export interface GuestImage {
  /** `sha256:` over everything that went into it. */
  key: string;
  /** The kernel as Debian ships it, a bzImage. */
  kernel: string;
  /**
   * The same kernel unpacked, booted directly through its PVH entry point (undefined where it could not
   * be unpacked): it skips the bzImage's own decompression, which is slow under TCG, and costs the VMM
   * the memory of its copy of what it loads (39 MiB here against the bzImage's 8).
   */
  vmlinux?: string;
  initrd: string;
  /** Modules the agent loads, in order (written into each run's archive). */
  modules: string[];
  kernelRelease: string;
}

export interface GuestImageOptions {
  /** Shared by every node of this user: images are content-addressed, so sharing is safe. */
  cacheDir: string;
  busybox?: string;
  signal?: AbortSignal;
  progress?: Progress;
  /** Ask apt for the current kernel package again instead of using the one cached last. */
  refresh?: boolean;
}

/**
 * The default guest image, built on first use and cached by the hash of its inputs (kernel package,
 * busybox binary, agent script, module files, format): rebuilt only when one of them changes.
 */
export async function ensureGuestImage(opts: GuestImageOptions): Promise<GuestImage> {
  const kernel = await debianKernel(opts.cacheDir, {
    ...(opts.signal ? { signal: opts.signal } : {}),
    ...(opts.progress ? { progress: opts.progress } : {}),
    ...(opts.refresh ? { refresh: true } : {}),
  });
  const busyboxPath = opts.busybox ?? DEFAULT_BUSYBOX;
  const busybox = await fs.readFile(busyboxPath).catch(() => {
    throw new Error(`guest image: no static busybox at ${busyboxPath} (apt-get install busybox-static)`);
  });
  const modules = await Promise.all(kernel.modules.map(async (m) => ({ name: m, data: await fs.readFile(path.join(kernel.modulesDir, `${m}.ko`)) })));
  const hash = createHash('sha256').update(`vmesh-guest-image:${IMAGE_FORMAT}\0${kernel.id}\0`).update(busybox).update(AGENT_SCRIPT);
  for (const m of modules) hash.update(`\0${m.name}\0`).update(m.data);
  const key = `sha256:${hash.digest('hex')}`;
  const dir = path.join(opts.cacheDir, 'images', key.replace('sha256:', ''));
  const image: GuestImage = { key, kernel: kernel.vmlinuz, ...(kernel.vmlinux === undefined ? {} : { vmlinux: kernel.vmlinux }), initrd: path.join(dir, 'initrd.cpio.gz'), modules: kernel.modules, kernelRelease: kernel.release };
  if (existsSync(path.join(dir, 'meta.json'))) return image;

  opts.progress?.(`guest image: building ${key.slice(0, 19)}… (busybox, ${modules.length} modules, agent)`);
  const entries: CpioEntry[] = [
    { type: 'dir', name: 'bin' },
    { type: 'file', name: 'bin/busybox', data: busybox, mode: 0o755 },
    { type: 'file', name: 'init', data: AGENT_SCRIPT, mode: 0o755 },
    { type: 'dir', name: 'lib' },
    { type: 'dir', name: 'lib/modules' },
    ...modules.map((m): CpioEntry => ({ type: 'file', name: `lib/modules/${m.name}.ko`, data: m.data })),
  ];
  const packed = await gzipAsync(cpioArchive(entries), { level: 6 });
  // The kernel takes an uncompressed archive after a compressed one only at a 4-byte aligned offset, and
  // skips zeros between archives: pad, so that a run's archive can simply be appended.
  const initrd = Buffer.concat([packed, Buffer.alloc((512 - (packed.byteLength % 512)) % 512)]);
  await fs.mkdir(path.dirname(dir), { recursive: true });
  const tmp = `${dir}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await fs.mkdir(tmp);
    await fs.writeFile(path.join(tmp, 'initrd.cpio.gz'), initrd);
    await fs.writeFile(path.join(tmp, 'meta.json'), JSON.stringify({ key, kernel: kernel.id, kernelRelease: kernel.release, modules: kernel.modules, format: IMAGE_FORMAT }));
    await fs.rename(tmp, dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST') throw err;
    });
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
  opts.progress?.(`guest image: ${key.slice(0, 19)}… ready (${(initrd.byteLength / 2 ** 20).toFixed(1)} MiB initramfs)`);
  return image;
}

