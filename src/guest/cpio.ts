/**
 * A writer for the "newc" cpio format, the one the Linux kernel unpacks as an initramfs. Several archives
 * may be concatenated (compressed or not): the kernel unpacks them in order, later files replacing
 * earlier ones, which is how a run's inputs ride on top of the shared guest image.
 */

export type CpioEntry =
  | { type: 'dir'; name: string; mode?: number }
  | { type: 'file'; name: string; data: Uint8Array | string; mode?: number }
  | { type: 'symlink'; name: string; target: string };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

/** One archive with its TRAILER!!!; names are relative (no leading slash), as the kernel expects. */
export function cpioArchive(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  for (const e of entries) {
    const name = e.name.replace(/^\/+/, '');
    if (name === '' || name.split('/').includes('..')) throw new Error(`cpio: bad entry name ${JSON.stringify(e.name)}`);
    let mode: number;
    let body: Buffer;
    if (e.type === 'dir') {
      mode = S_IFDIR | (e.mode ?? 0o755);
      body = Buffer.alloc(0);
    } else if (e.type === 'file') {
      mode = S_IFREG | (e.mode ?? 0o644);
      body = typeof e.data === 'string' ? Buffer.from(e.data) : Buffer.from(e.data.buffer, e.data.byteOffset, e.data.byteLength);
    } else {
      mode = S_IFLNK | 0o777;
      body = Buffer.from(e.target);
    }
    parts.push(...record(name, mode, body, ino++, e.type === 'dir' ? 2 : 1));
  }
  parts.push(...record('TRAILER!!!', 0, Buffer.alloc(0), 0, 1));
  return Buffer.concat(parts);
}

function record(name: string, mode: number, body: Buffer, ino: number, nlink: number): Buffer[] {
  const nameBytes = Buffer.from(`${name}\0`);
  const hex = (n: number) => n.toString(16).padStart(8, '0');
  // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check
  const header = `070701${hex(ino)}${hex(mode)}${hex(0)}${hex(0)}${hex(nlink)}${hex(0)}${hex(body.byteLength)}${hex(0)}${hex(0)}${hex(0)}${hex(0)}${hex(nameBytes.byteLength)}${hex(0)}`;
  const head = Buffer.concat([Buffer.from(header, 'ascii'), nameBytes]);
  return [head, pad(head.byteLength), body, pad(body.byteLength)];
}

/** newc aligns both the header+name and the body to 4 bytes. */
function pad(length: number): Buffer {
  return Buffer.alloc((4 - (length % 4)) % 4);
}
