import { promises as fs } from 'node:fs';
import { InvalidInputError } from '../../spec/index.ts';

/** The largest kernel and initramfs a user may hand a microVM. */
export const MAX_KERNEL_BYTES = 64 * 2 ** 20;
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

/** A Linux x86 boot image (bzImage): the boot protocol's "HdrS" magic at 0x202 (Documentation/arch/x86/boot.rst). */
export async function checkKernel(file: string): Promise<void> {
  const { data, size } = await head(file, 0x206);
  if (size > MAX_KERNEL_BYTES) throw new InvalidInputError(`source.kernel: ${size} bytes is over the ${MAX_KERNEL_BYTES}-byte limit`, { field: 'source.kernel' });
  if (data.byteLength < 0x206 || data.toString('latin1', 0x202, 0x206) !== 'HdrS') {
    throw new InvalidInputError('source.kernel: not a Linux kernel image (a bzImage has "HdrS" at offset 0x202; Debian\'s /boot/vmlinuz-* is one)', { field: 'source.kernel' });
  }
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
