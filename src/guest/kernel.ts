import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { extract } from 'tar-stream';
import { sha256File } from '../blobs/blob-store.ts';
import { run } from '../util/exec.ts';
import { EXTRA_MODULE_DEPENDENCIES, EXTRA_MODULES, GUEST_MODULES, loadOrder } from './modules.ts';
import { unpackBzImage } from './vmlinux.ts';

/** A guest kernel and the modules the agent loads, unpacked in the guest cache. */
export interface GuestKernel {
  /** `sha256:` of the package (or file) it came from: part of every image key built on it. */
  id: string;
  vmlinuz: string;
  /** The same kernel uncompressed, which QEMU boots directly (PVH), skipping the bzImage's own decompression; undefined where it could not be unpacked. */
  vmlinux?: string;
  modulesDir: string;
  /** Module names in load order. */
  modules: string[];
  /** EXTRA_MODULES with what they need, in load order (in `modulesDir` too; the agent loads none of them). */
  extraModules: string[];
  release: string;
}

interface KernelMeta {
  id: string;
  release: string;
  deb: string;
  modules: string[];
  extraModules?: string[];
}

export type Progress = (message: string) => void;

/**
 * Debian's `linux-image-amd64`: fetched once with `apt-get download`, its vmlinuz and the virtio modules
 * kept under `<cache>/kernels/<package sha256>/`. Later calls use the cached copy without asking apt.
 */
export async function debianKernel(cacheDir: string, opts: { signal?: AbortSignal; progress?: Progress; refresh?: boolean } = {}): Promise<GuestKernel> {
  const root = path.join(cacheDir, 'kernels');
  const pointer = path.join(root, 'debian-current.json');
  const current = opts.refresh ? undefined : await readMeta(pointer);
  if (current !== undefined) {
    const cached = await loadKernel(root, current.id);
    if (cached !== undefined) return withDirectBoot(cached, opts);
  }
  await fs.mkdir(root, { recursive: true });
  const work = path.join(root, `.download-${randomBytes(4).toString('hex')}`);
  await fs.mkdir(work);
  try {
    const say = opts.progress ?? (() => {});
    say('guest kernel: asking apt for linux-image-amd64');
    const common = { cwd: work, timeoutMs: 10 * 60_000, ...(opts.signal ? { signal: opts.signal } : {}) };
    await run('apt-get', ['download', 'linux-image-amd64'], common);
    const meta = (await fs.readdir(work)).find((f) => f.startsWith('linux-image-amd64_') && f.endsWith('.deb'));
    if (meta === undefined) throw new Error('guest kernel: apt-get download linux-image-amd64 produced no package');
    const { stdout: depends } = await run('dpkg-deb', ['-f', path.join(work, meta), 'Depends'], common);
    const pkg = /linux-image-\d[^\s,()]*/.exec(depends)?.[0];
    if (pkg === undefined) throw new Error(`guest kernel: linux-image-amd64 depends on no kernel package (${depends.trim()})`);
    say(`guest kernel: downloading ${pkg}`);
    await run('apt-get', ['download', pkg], common);
    const deb = (await fs.readdir(work)).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
    if (deb === undefined) throw new Error(`guest kernel: apt-get download ${pkg} produced no package`);
    const id = await sha256File(path.join(work, deb));
    say(`guest kernel: extracting ${deb}`);
    const out = path.join(work, 'out');
    const release = await extractKernel(path.join(work, deb), out, opts.signal);
    const modules = await loadOrder(path.join(out, 'modules'), GUEST_MODULES);
    const extraModules = await loadOrder(path.join(out, 'modules'), EXTRA_MODULES);
    const kernelMeta: KernelMeta = { id, release, deb, modules, extraModules };
    await fs.writeFile(path.join(out, 'meta.json'), JSON.stringify(kernelMeta));
    const target = path.join(root, id.replace('sha256:', ''));
    // The same package unpacked before a module joined GUEST_MODULES is replaced.
    if ((await loadKernel(root, id)) === undefined) await fs.rm(target, { recursive: true, force: true });
    await fs.rename(out, target).catch(async (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST') throw err; // another process got there first
    });
    await fs.writeFile(`${pointer}.tmp`, JSON.stringify(kernelMeta));
    await fs.rename(`${pointer}.tmp`, pointer);
    say(`guest kernel: ${release} ready`);
    return withDirectBoot((await loadKernel(root, id))!, opts);
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
}

/**
 * The kernel with `vmlinux` beside its vmlinuz, unpacked once into the cache (a kernel cached before
 * this step gets it on its next use). Where it cannot be unpacked (no xz here), the compressed kernel
 * boots as before, only slower under TCG: progress says why.
 */
async function withDirectBoot(kernel: GuestKernel, opts: { signal?: AbortSignal; progress?: Progress }): Promise<GuestKernel> {
  const vmlinux = path.join(path.dirname(kernel.vmlinuz), 'vmlinux');
  if (await fs.stat(vmlinux).then((s) => s.isFile(), () => false)) return { ...kernel, vmlinux };
  opts.progress?.('guest kernel: unpacking it for a direct boot');
  const result = await unpackBzImage(kernel.vmlinuz, vmlinux, opts.signal);
  if (!result.unpacked) {
    opts.progress?.(`guest kernel: booting it compressed, as it could not be unpacked: ${result.reason}`);
    return kernel;
  }
  opts.progress?.(`guest kernel: unpacked (${result.compression}, ${(result.bytes / 2 ** 20).toFixed(0)} MiB, ${(result.size / 2 ** 20).toFixed(0)} MiB to load)`);
  return { ...kernel, vmlinux };
}

async function readMeta(file: string): Promise<KernelMeta | undefined> {
  try {
    return JSON.parse(await fs.readFile(file, 'utf8')) as KernelMeta;
  } catch {
    return undefined;
  }
}

async function loadKernel(root: string, id: string): Promise<GuestKernel | undefined> {
  const dir = path.join(root, id.replace('sha256:', ''));
  const meta = await readMeta(path.join(dir, 'meta.json'));
  // A kernel cached before a module joined GUEST_MODULES or EXTRA_MODULES lacks it: fetched and extracted again.
  const extra = meta?.extraModules ?? [];
  if (meta === undefined || !GUEST_MODULES.every((m) => meta.modules.includes(m)) || !EXTRA_MODULES.every((m) => extra.includes(m))) return undefined;
  return { id: meta.id, vmlinuz: path.join(dir, 'vmlinuz'), modulesDir: path.join(dir, 'modules'), modules: meta.modules, extraModules: extra, release: meta.release };
}

/** Streams the package's file tree and keeps boot/vmlinuz-* and the wanted modules; returns the kernel release. */
async function extractKernel(deb: string, out: string, signal?: AbortSignal): Promise<string> {
  await fs.mkdir(path.join(out, 'modules'), { recursive: true });
  const wanted = new Set<string>([...GUEST_MODULES, ...EXTRA_MODULES, ...EXTRA_MODULE_DEPENDENCIES]);
  const child = spawn('dpkg-deb', ['--fsys-tarfile', deb], { stdio: ['ignore', 'pipe', 'pipe'], ...(signal ? { signal } : {}) });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('close', resolve));
  const tar = extract();
  const feeding = pipeline(child.stdout, tar);
  let release: string | undefined;
  for await (const entry of tar) {
    const name = entry.header.name.replace(/^\.\//, '');
    const vmlinuz = /^boot\/vmlinuz-(.+)$/.exec(name);
    const module = /^(?:usr\/)?lib\/modules\/[^/]+\/kernel\/.*\/([A-Za-z0-9_-]+)\.ko$/.exec(name);
    let target: string | undefined;
    if (vmlinuz !== null && entry.header.type === 'file') {
      release = vmlinuz[1];
      target = path.join(out, 'vmlinuz');
    } else if (module !== null && wanted.has(module[1]!.replace(/-/g, '_')) && entry.header.type === 'file') {
      target = path.join(out, 'modules', `${module[1]!.replace(/-/g, '_')}.ko`);
    }
    if (target === undefined) entry.resume();
    else await pipeline(entry, createWriteStream(target, { mode: 0o644 }));
  }
  await feeding;
  const code = await exited;
  if (code !== 0) throw new Error(`guest kernel: dpkg-deb --fsys-tarfile ${deb} failed (exit ${code}): ${stderr.trim()}`);
  if (release === undefined) throw new Error(`guest kernel: ${deb} holds no boot/vmlinuz-*`);
  return release;
}
