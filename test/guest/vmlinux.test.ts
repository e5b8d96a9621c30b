import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { pvhProblem, unpackBzImage } from '../../src/guest/vmlinux.ts';
import { hasCommand, skipUnless } from '../helpers/require.ts';
import { tempDir } from '../helpers/tmp.ts';

/**
 * A little-endian x86-64 ELF laid out like a kernel: a note segment holding `notes`, a loadable segment
 * of code that ends in zeros (its .bss), then section headers.
 */
function elf(notes: { name: string; type: number; desc: Buffer }[], machine = 62): Buffer {
  const align4 = (b: Buffer) => Buffer.concat([b, Buffer.alloc((4 - (b.byteLength % 4)) % 4)]);
  const body = Buffer.concat(
    notes.map((n) => {
      const name = Buffer.from(`${n.name}\0`);
      const head = Buffer.alloc(12);
      head.writeUInt32LE(name.byteLength, 0);
      head.writeUInt32LE(n.desc.byteLength, 4);
      head.writeUInt32LE(n.type, 8);
      return Buffer.concat([head, align4(name), align4(n.desc)]);
    }),
  );
  const load = Buffer.concat([Buffer.alloc(1000, 0x90), Buffer.alloc(3000)]);
  const notesAt = 64 + 2 * 56;
  const loadAt = notesAt + body.byteLength;
  const sectionsAt = loadAt + load.byteLength;
  const header = Buffer.alloc(64);
  header.write('\x7fELF', 0, 'latin1');
  header[4] = 2; // 64-bit
  header[5] = 1; // little-endian
  header[6] = 1;
  header.writeUInt16LE(2, 16); // ET_EXEC
  header.writeUInt16LE(machine, 18);
  header.writeBigUInt64LE(64n, 32); // e_phoff
  header.writeBigUInt64LE(BigInt(sectionsAt), 40); // e_shoff
  header.writeUInt16LE(64, 52);
  header.writeUInt16LE(56, 54);
  header.writeUInt16LE(2, 56); // e_phnum
  header.writeUInt16LE(64, 58);
  header.writeUInt16LE(3, 60); // e_shnum
  header.writeUInt16LE(2, 62);
  const segment = (type: number, offset: number, size: number, memory = size) => {
    const phdr = Buffer.alloc(56);
    phdr.writeUInt32LE(type, 0);
    phdr.writeBigUInt64LE(BigInt(offset), 8);
    phdr.writeBigUInt64LE(BigInt(size), 32);
    phdr.writeBigUInt64LE(BigInt(memory), 40);
    return phdr;
  };
  return Buffer.concat([header, segment(4, notesAt, body.byteLength), segment(1, loadAt, load.byteLength, load.byteLength + 8192), body, load, Buffer.alloc(3 * 64, 0x11)]);
}

const PVH = { name: 'Xen', type: 18, desc: Buffer.from([0, 0, 0, 1]) };
const OTHER = { name: 'GNU', type: 3, desc: Buffer.alloc(20, 7) };

/** A bzImage as the boot protocol lays it out: 4 setup sectors after the boot sector, then the payload at `payload_offset`. */
function bzImage(compressed: Buffer, size: number, opts: { version?: number } = {}): Buffer {
  const setup = Buffer.alloc(5 * 512);
  setup[0x1f1] = 4;
  setup.write('HdrS', 0x202, 'latin1');
  setup.writeUInt16LE(opts.version ?? 0x020f, 0x206);
  const offset = 100;
  const trailer = Buffer.alloc(4);
  trailer.writeUInt32LE(size);
  setup.writeUInt32LE(offset, 0x248);
  setup.writeUInt32LE(compressed.byteLength + 4, 0x24c);
  return Buffer.concat([setup, Buffer.alloc(offset, 0xcc), compressed, trailer, Buffer.alloc(64)]);
}

describe('unpacking a bzImage for a direct (PVH) boot', () => {
  const tmp = tempDir('vmesh-vmlinux-');
  after(() => tmp.remove());
  const write = (name: string, data: Buffer) => {
    const file = path.join(tmp.dir, name);
    writeFileSync(file, data);
    return file;
  };
  const leftovers = (target: string) => readdirSync(tmp.dir).filter((f) => f.startsWith(`${path.basename(target)}.`));

  it('unpacks a gzip payload to the ELF it holds, when that has a PVH entry note', async () => {
    const kernel = elf([OTHER, PVH]);
    const target = path.join(tmp.dir, 'gzip.vmlinux');
    const result = await unpackBzImage(write('gzip.bz', bzImage(gzipSync(kernel), kernel.byteLength)), target);
    // Kept without the zeros that end its loadable segment and without its section headers: 3000 + 192 bytes fewer.
    const size = kernel.byteLength - 3000 - 3 * 64;
    assert.deepEqual(result, { unpacked: true, bytes: kernel.byteLength, size, compression: 'gzip' });
    const kept = readFileSync(target);
    assert.equal(kept.byteLength, size);
    assert.ok(kept.subarray(64).equals(Buffer.concat([kernel.subarray(64, 64 + 56 + 32), Buffer.from([0xe8, 0x03, 0, 0, 0, 0, 0, 0]), kernel.subarray(64 + 56 + 40, size)])), 'the same bytes, but the load segment\'s file size (1000)');
    assert.equal(kept.readBigUInt64LE(64 + 56 + 40), BigInt(4000 + 8192), 'its memory size is kept');
    assert.deepEqual([kept.readBigUInt64LE(40), kept.readUInt16LE(60)], [0n, 0], 'no section headers');
    assert.equal(await pvhProblem(target), undefined, 'it is still a PVH kernel');
    assert.deepEqual(leftovers(target), [], 'no temporary file is left');
  });

  it('unpacks an xz payload with the xz tool', { skip: skipUnless('xz', hasCommand('xz'), 'apt-get install xz-utils') }, async () => {
    const kernel = elf([PVH]);
    const compressed = execFileSync('xz', ['-c', '--check=crc32'], { input: kernel });
    const target = path.join(tmp.dir, 'xz.vmlinux');
    const result = await unpackBzImage(write('xz.bz', bzImage(compressed, kernel.byteLength)), target);
    assert.deepEqual(result, { unpacked: true, bytes: kernel.byteLength, size: kernel.byteLength - 3000 - 3 * 64, compression: 'xz' });
    assert.ok(readFileSync(target).subarray(176, 1000).equals(kernel.subarray(176, 1000)), 'what it holds is the ELF that was packed');
  });

  it('says why, and writes nothing, for what it cannot boot directly or cannot unpack', async () => {
    const kernel = elf([PVH]);
    const cases: [string, Buffer, RegExp][] = [
      ['no-pvh', bzImage(gzipSync(elf([OTHER])), elf([OTHER]).byteLength), /no PVH entry note/],
      ['arm', bzImage(gzipSync(elf([PVH], 183)), kernel.byteLength), /not a little-endian 64-bit x86 ELF/],
      ['not-elf', bzImage(gzipSync(Buffer.alloc(5000, 1)), 5000), /not an ELF file/],
      ['short-trailer', bzImage(gzipSync(kernel), kernel.byteLength + 1), new RegExp(`unpacked to ${kernel.byteLength} bytes, not the ${kernel.byteLength + 1} its trailer says`)],
      ['huge', bzImage(gzipSync(kernel), 2 ** 31), /it says it unpacks to 2147483648 bytes, over 536870912/],
      ['lz4', bzImage(Buffer.from([0x02, 0x21, 0x4c, 0x18, 1, 2, 3]), 100), /compression \(first bytes 02214c18\) is none of gzip, xz, zstd/],
      ['corrupt', bzImage(Buffer.concat([gzipSync(kernel).subarray(0, 40), Buffer.alloc(40)]), kernel.byteLength), /^gzip: /],
      ['old-protocol', bzImage(gzipSync(kernel), kernel.byteLength, { version: 0x0206 }), /boot protocol is 2\.6, older than 2\.08/],
      ['not-bzimage', Buffer.from('MZ, and nothing a kernel has'.repeat(40)), /not a bzImage/],
    ];
    for (const [name, image, reason] of cases) {
      const target = path.join(tmp.dir, `${name}.vmlinux`);
      const result = await unpackBzImage(write(`${name}.bz`, image), target);
      assert.equal(result.unpacked, false, name);
      assert.match(!result.unpacked ? result.reason : '', reason, name);
      assert.equal(existsSync(target), false, `${name}: nothing written`);
      assert.deepEqual(leftovers(target), [], `${name}: no temporary file is left`);
    }
  });

  it('tells a PVH kernel from a program and from a truncated ELF', async () => {
    assert.equal(await pvhProblem(write('pvh.elf', elf([OTHER, PVH]))), undefined);
    assert.match((await pvhProblem(write('no-pvh.elf', elf([OTHER])))) ?? '', /no PVH entry note/);
    assert.match((await pvhProblem(write('short.elf', elf([PVH]).subarray(0, 40)))) ?? '', /not an ELF file/);
    if (existsSync('/bin/busybox')) assert.match((await pvhProblem('/bin/busybox')) ?? '', /no PVH entry note/);
  });
});
