import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, promises as fs } from 'node:fs';
import { Readable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { programHeaderBytes, programHeaders, PT_NOTE, x86ElfHeader } from '../util/elf.ts';

/** Larger than any kernel a distribution ships uncompressed (Debian's 6.1 is 63 MiB): a payload that unpacks past it is refused. */
export const MAX_VMLINUX_BYTES = 512 * 2 ** 20;

/** ELF note type XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit PVH entry point that QEMU, Cloud Hypervisor and Firecracker jump to. */
const PVH_ENTRY_NOTE = 18;

/** The compressions a bzImage's payload may use that this host can undo (by the payload's first bytes). */
const UNPACKERS: { name: string; magic: Buffer; tool?: string }[] = [
  { name: 'gzip', magic: Buffer.from([0x1f, 0x8b]) },
  { name: 'xz', magic: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), tool: 'xz' },
  { name: 'zstd', magic: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), tool: 'zstd' },
];

/** `bytes`: what the payload unpacked to; `size`: the file kept, its zero tails and section headers left out. */
export type Unpacked = { unpacked: true; bytes: number; size: number; compression: string } | { unpacked: false; reason: string };

/**
 * Writes the kernel inside a bzImage, uncompressed, to `target` — when it is an x86-64 ELF with a PVH
 * entry point, which QEMU boots directly. A bzImage first decompresses itself inside the guest, and
 * under TCG that is the slowest part of a boot (Debian's XZ kernel: 11 of the 15 s to the agent here).
 * Says why not, and writes nothing, when the image is not a bzImage, its payload uses a compression
 * without a decompressor on this host, or what it holds cannot be booted directly.
 *
 * Layout (the x86 boot protocol, Documentation/arch/x86/boot.rst): "HdrS" at 0x202; the payload at
 * `(setup_sects + 1) * 512 + payload_offset`, `payload_length` bytes; the kernel's build appends the
 * uncompressed size to every payload as 4 little-endian bytes.
 */
export async function unpackBzImage(bzImage: string, target: string, signal?: AbortSignal): Promise<Unpacked> {
  const image = await fs.readFile(bzImage);
  const payload = payloadOf(image);
  if (typeof payload === 'string') return { unpacked: false, reason: payload };
  const expected = payload.readUInt32LE(payload.byteLength - 4);
  const compressed = payload.subarray(0, payload.byteLength - 4);
  const how = UNPACKERS.find((u) => compressed.subarray(0, u.magic.byteLength).equals(u.magic));
  if (how === undefined) return { unpacked: false, reason: `its payload's compression (first bytes ${compressed.subarray(0, 4).toString('hex')}) is none of ${UNPACKERS.map((u) => u.name).join(', ')}` };
  if (expected > MAX_VMLINUX_BYTES) return { unpacked: false, reason: `it says it unpacks to ${expected} bytes, over ${MAX_VMLINUX_BYTES}` };
  const tmp = `${target}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    const written = await (how.tool === undefined ? gunzipTo(compressed, tmp, signal) : unpackWith(how.tool, compressed, tmp, signal));
    if (typeof written === 'string') return { unpacked: false, reason: written };
    if (written !== expected) return { unpacked: false, reason: `its ${how.name} payload unpacked to ${written} bytes, not the ${expected} its trailer says` };
    const problem = await pvhProblem(tmp);
    if (problem !== undefined) return { unpacked: false, reason: problem };
    const size = await trimForLoading(tmp);
    await fs.rename(tmp, target);
    return { unpacked: true, bytes: written, size, compression: how.name };
  } finally {
    await fs.rm(tmp, { force: true });
  }
}

/** Whether `head` (a file's first 0x206 bytes or more) starts an x86 boot image: the boot protocol's "HdrS" at 0x202. */
export function isBzImage(head: Buffer): boolean {
  return head.byteLength >= 0x206 && head.toString('latin1', 0x202, 0x206) === 'HdrS';
}

/** The compressed payload with its 4-byte size trailer, or why there is none. */
function payloadOf(image: Buffer): Buffer | string {
  if (image.byteLength < 0x250 || !isBzImage(image)) return 'it is not a bzImage (no "HdrS" at 0x202)';
  const version = image.readUInt16LE(0x206);
  if (version < 0x208) return `its boot protocol is ${version >> 8}.${version & 0xff}, older than 2.08, which first gave the payload's place`;
  const setupSectors = image[0x1f1] || 4;
  const start = (setupSectors + 1) * 512 + image.readUInt32LE(0x248);
  const length = image.readUInt32LE(0x24c);
  if (length <= 4 || start + length > image.byteLength) return `its payload (${length} bytes at ${start}) is not inside its ${image.byteLength} bytes`;
  return image.subarray(start, start + length);
}

function gunzipTo(compressed: Buffer, file: string, signal?: AbortSignal): Promise<number | string> {
  return countedPipeline(Readable.from([compressed]), createGunzip(), file, signal).catch((err: Error) => `gzip: ${err.message}`);
}

/** Runs `tool -dc` on the payload, its output to `file`; a missing tool is a reason, not an error. */
async function unpackWith(tool: string, compressed: Buffer, file: string, signal?: AbortSignal): Promise<number | string> {
  const child = spawn(tool, ['-dc'], { stdio: ['pipe', 'pipe', 'pipe'], ...(signal ? { signal } : {}) });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-512)));
  const started = new Promise<string | undefined>((resolve) => {
    child.once('spawn', () => resolve(undefined));
    child.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ENOENT' ? `${tool} is not installed (apt-get install ${tool === 'xz' ? 'xz-utils' : tool})` : `${tool}: ${err.message}`));
  });
  const missing = await started;
  if (missing !== undefined) return missing;
  const exited = new Promise<number | null>((resolve) => child.once('close', resolve));
  child.stdin.on('error', () => undefined); // a tool that stops reading early says why in its exit code
  child.stdin.end(compressed);
  try {
    const bytes = await countedPipeline(child.stdout, undefined, file, signal);
    const code = await exited;
    return code === 0 ? bytes : `${tool} -dc exited with ${code}: ${stderr.trim()}`;
  } catch (err) {
    child.kill('SIGKILL');
    await exited;
    return `${tool}: ${(err as Error).message}`;
  }
}

/** Pipes `source` (through `transform`) into `file`, failing past MAX_VMLINUX_BYTES; resolves to the bytes written. */
async function countedPipeline(source: Readable, transform: Transform | undefined, file: string, signal?: AbortSignal): Promise<number> {
  let bytes = 0;
  const count = async function* (chunks: AsyncIterable<Buffer>) {
    for await (const chunk of chunks) {
      bytes += chunk.byteLength;
      if (bytes > MAX_VMLINUX_BYTES) throw new Error(`unpacked past ${MAX_VMLINUX_BYTES} bytes`);
      yield chunk;
    }
  };
  const out = createWriteStream(file, { mode: 0o644 });
  const options = signal === undefined ? {} : { signal };
  await (transform === undefined ? pipeline(source, count, out, options) : pipeline(source, transform, count, out, options));
  return bytes;
}

/**
 * Leaves out of an ELF kernel what a loader need not read: the zeros that end a loadable segment (its
 * .bss and .brk: 22 of Debian's 63 MiB), which the loader fills in from the segment's memory size
 * anyway, and the section headers, which only debuggers read. QEMU keeps a copy of what it loads for a
 * reset, so this is memory each VMM does not hold. Returns the file's new size.
 */
async function trimForLoading(file: string): Promise<number> {
  const handle = await fs.open(file, 'r+');
  try {
    const read = async (offset: number, length: number): Promise<Buffer> => (await handle.read(Buffer.alloc(length), 0, length, offset)).buffer;
    const header = await read(0, 64);
    const phoff = Number(header.readBigUInt64LE(32));
    const phentsize = header.readUInt16LE(54);
    const headers = await read(phoff, phentsize * header.readUInt16LE(56));
    let end = phoff + headers.byteLength;
    for (let i = 0; i < headers.byteLength; i += phentsize) {
      const offset = Number(headers.readBigUInt64LE(i + 8));
      let size = Number(headers.readBigUInt64LE(i + 32));
      if (headers.readUInt32LE(i) === 1) {
        size = await nonZeroLength(read, offset, size);
        headers.writeBigUInt64LE(BigInt(size), i + 32); // p_filesz; p_memsz stays
      }
      if (size > 0) end = Math.max(end, offset + size);
    }
    header.writeBigUInt64LE(0n, 40); // e_shoff
    header.writeUInt16LE(0, 60); // e_shnum
    header.writeUInt16LE(0, 62); // e_shstrndx
    await handle.write(headers, 0, headers.byteLength, phoff);
    await handle.write(header, 0, 64, 0);
    await handle.truncate(end);
    return end;
  } finally {
    await handle.close();
  }
}

/** The length of `size` bytes at `offset` without the zeros that end them. */
async function nonZeroLength(read: (offset: number, length: number) => Promise<Buffer>, offset: number, size: number): Promise<number> {
  const chunk = 1 << 20;
  for (let end = size; end > 0; ) {
    const start = Math.max(0, end - chunk);
    const data = await read(offset + start, end - start);
    for (let i = data.byteLength - 1; i >= 0; i--) if (data[i] !== 0) return start + i + 1;
    end = start;
  }
  return 0;
}

/** Why `file` cannot be booted directly: not a 64-bit x86 ELF, or no PVH entry note; undefined when it can. */
export async function pvhProblem(file: string): Promise<string | undefined> {
  const handle = await fs.open(file, 'r');
  try {
    const read = async (offset: number, length: number): Promise<Buffer> => {
      const { buffer, bytesRead } = await handle.read(Buffer.alloc(length), 0, length, offset);
      return buffer.subarray(0, bytesRead);
    };
    const header = x86ElfHeader(await read(0, 64));
    if (typeof header === 'string') return header;
    for (const segment of programHeaders(header, await read(header.phoff, programHeaderBytes(header)))) {
      if (segment.type !== PT_NOTE) continue;
      if (segment.fileSize > 1 << 20) return 'an ELF note segment is over 1 MiB';
      if (hasPvhNote(await read(segment.offset, segment.fileSize))) return undefined;
    }
    return 'its ELF has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY; a kernel built without CONFIG_PVH)';
  } finally {
    await handle.close();
  }
}

function hasPvhNote(notes: Buffer): boolean {
  const align4 = (n: number) => (n + 3) & ~3;
  for (let at = 0; at + 12 <= notes.byteLength; ) {
    const nameSize = notes.readUInt32LE(at);
    const descSize = notes.readUInt32LE(at + 4);
    const type = notes.readUInt32LE(at + 8);
    const name = notes.toString('latin1', at + 12, at + 12 + nameSize).replace(/\0+$/, '');
    if (name === 'Xen' && type === PVH_ENTRY_NOTE && descSize >= 4) return true;
    at += 12 + align4(nameSize) + align4(descSize);
  }
  return false;
}
