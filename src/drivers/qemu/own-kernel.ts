// A microVM from the user's own kernel and initramfs: what is checked before QEMU starts, and how its end is read.
import { promises as fs } from 'node:fs';
import { isBzImage, pvhProblem } from '../../guest/vmlinux.ts';
import { InvalidInputError } from '../../spec/index.ts';
import type { SandboxExit, SandboxRequest } from '../driver.ts';

/** The largest kernel and initramfs a user may hand a microVM (an uncompressed kernel: Debian's 6.1 is 63 MiB). */
export const MAX_KERNEL_BYTES = 128 * 2 ** 20;
export const MAX_INITRD_BYTES = 512 * 2 ** 20;

async function head(file: string, bytes: number): Promise<{ data: Buffer; size: number }> {
  const handle = await fs.open(file, 'r');
  try {
    const { size } = await handle.stat();
    const data = Buffer.alloc(Math.min(bytes, size));
    await handle.read(data, 0, data.byteLength, 0);
    return { data, size };
  } finally {
    await handle.close();
  }
}

/**
 * A Linux x86 kernel QEMU boots: a bzImage (the boot protocol's "HdrS" magic at 0x202,
 * Documentation/arch/x86/boot.rst), or an uncompressed vmlinux with a PVH entry point.
 */
export async function checkKernel(file: string): Promise<void> {
  const { data, size } = await head(file, 0x206);
  if (size > MAX_KERNEL_BYTES) throw new InvalidInputError(`source.kernel: ${size} bytes is over the ${MAX_KERNEL_BYTES}-byte limit`, { field: 'source.kernel' });
  if (isBzImage(data)) return;
  if (data.toString('latin1', 0, 4) === '\x7fELF') {
    const problem = await pvhProblem(file);
    if (problem === undefined) return;
    throw new InvalidInputError(`source.kernel: an ELF kernel QEMU cannot boot: ${problem}`, { field: 'source.kernel' });
  }
  throw new InvalidInputError(
    'source.kernel: not a Linux kernel image (expected a bzImage, with "HdrS" at offset 0x202 like Debian\'s /boot/vmlinuz-*, or an uncompressed vmlinux with a PVH entry note)',
    { field: 'source.kernel' },
  );
}

const INITRD_MAGIC: Array<[string, Buffer]> = [
  ['cpio (newc)', Buffer.from('070701')],
  ['cpio (newc with checksums)', Buffer.from('070702')],
  ['gzip', Buffer.from([0x1f, 0x8b])],
  ['zstd', Buffer.from([0x28, 0xb5, 0x2f, 0xfd])],
  ['xz', Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])],
  ['lz4', Buffer.from([0x02, 0x21, 0x4c, 0x18])],
  ['bzip2', Buffer.from('BZh')],
];

/** An initramfs the kernel can unpack: a newc cpio archive, or one compressed with a format it knows. */
export async function checkInitrd(file: string): Promise<void> {
  const { data, size } = await head(file, 8);
  if (size > MAX_INITRD_BYTES) throw new InvalidInputError(`source.initrd: ${size} bytes is over the ${MAX_INITRD_BYTES}-byte limit`, { field: 'source.initrd' });
  if (!INITRD_MAGIC.some(([, magic]) => data.subarray(0, magic.byteLength).equals(magic))) {
    throw new InvalidInputError(`source.initrd: not an initramfs (expected ${INITRD_MAGIC.map(([name]) => name).join(', ')})`, { field: 'source.initrd' });
  }
}

/** A user's own kernel may be smaller than the default guest; below this QEMU's own firmware does not fit. */
export const MIN_OWN_KERNEL_MEMORY_MIB = 16;

/**
 * Checks a request for the user's own kernel (`source.kernel`): a real bzImage and initramfs, a root disk
 * that fits the run's disk, and nothing that needs vmesh's agent inside the guest (command, stdin, inputs,
 * outputs). A network it may have: its init sets it up from the kernel arguments (see the driver).
 */
export async function validateOwnKernel(request: SandboxRequest, files: { kernel: string; initrd?: string; rootfs?: string }): Promise<void> {
  const w = request.workload;
  for (const [field, given] of [['command', w.command], ['args', w.args], ['stdin', w.stdin], ['outputs', w.outputs], ['inputs', request.inputs]] as const) {
    if (given !== undefined && (!Array.isArray(given) || given.length > 0)) {
      throw new InvalidInputError(`${field}: a microvm with its own kernel runs what its initramfs runs; ${field} needs the default guest's agent (source { "guest": "default" })`, { field });
    }
  }
  if (request.resources.memoryMiB < MIN_OWN_KERNEL_MEMORY_MIB) {
    throw new InvalidInputError(`resources.memoryMiB: a microvm needs at least ${MIN_OWN_KERNEL_MEMORY_MIB} MiB`, { field: 'resources.memoryMiB' });
  }
  await checkKernel(files.kernel);
  if (files.initrd !== undefined) await checkInitrd(files.initrd);
  if (files.rootfs !== undefined) await checkRootDisk(files.rootfs, request.resources.diskMiB);
}

/**
 * A root disk the run can afford: what the guest writes to it lands in a copy-on-write layer in the
 * sandbox's directory, which can grow to the image's size, so the image must fit in the run's `diskMiB`.
 */
async function checkRootDisk(file: string, diskMiB: number): Promise<void> {
  const { size } = await fs.stat(file);
  if (size === 0) throw new InvalidInputError('source.rootfs: the disk image is empty', { field: 'source.rootfs' });
  if (size > diskMiB * 2 ** 20) {
    throw new InvalidInputError(`source.rootfs: the disk image is ${Math.ceil(size / 2 ** 20)} MiB; what the guest writes to it may grow as large, so resources.diskMiB must be at least that (it is ${diskMiB})`, {
      field: 'source.rootfs',
    });
  }
}

/**
 * How a user's own kernel ended, from the end of its console and QEMU's exit: powering off (QEMU exits 0
 * under `-no-reboot` with `reboot=t`) is success, a panic (which `panic=-1` also turns into a reboot) is
 * a crash, and so is QEMU failing.
 */
export function ownKernelExit(consoleTail: string, qemuErrors: string, code: number | null, base: Pick<SandboxExit, 'outputs' | 'usage'>): SandboxExit {
  const panic = /Kernel panic[^\n]*/.exec(consoleTail)?.[0];
  if (panic !== undefined) return { ...base, outcome: 'crashed', exitCode: null, reason: `the guest kernel panicked: ${panic.trim()}` };
  if (code !== 0) return { ...base, outcome: 'crashed', exitCode: null, reason: `qemu exited with ${code}${qemuErrors.trim() ? `: ${qemuErrors.trim()}` : ''}` };
  return { ...base, outcome: 'exited', exitCode: 0 };
}
