// Moving, linking and sparse-copying files: in place within a filesystem, by a copy across two (tmpfs at
// /dev/shm beside the temp directory's, where the host has it there).
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, openSync, closeSync, ftruncateSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { copySparse, linkOrCopy, moveFile } from '../../src/util/files.ts';

const here = mkdtempSync(path.join(os.tmpdir(), 'vmesh-files-'));
const shm = existsSync('/dev/shm') ? mkdtempSync('/dev/shm/vmesh-files-') : undefined;
const elsewhere = shm !== undefined && statSync(shm).dev !== statSync(here).dev ? shm : undefined;
after(() => {
  rmSync(here, { recursive: true, force: true });
  if (shm !== undefined) rmSync(shm, { recursive: true, force: true });
});

/** A 64 MiB file that holds one byte at its end: a hole before it. */
function sparseFile(dir: string, name: string): string {
  const file = path.join(dir, name);
  const fd = openSync(file, 'w');
  ftruncateSync(fd, 64 * 2 ** 20 - 1);
  writeSync(fd, 'x', 64 * 2 ** 20 - 1);
  closeSync(fd);
  return file;
}

describe('file moves, links and copies', () => {
  it('copies a sparse file with its holes kept', async () => {
    const from = sparseFile(here, 'disk');
    await copySparse(from, path.join(here, 'disk-copy'));
    const copy = statSync(path.join(here, 'disk-copy'));
    assert.equal(copy.size, 64 * 2 ** 20);
    assert.ok(copy.blocks * 512 < 2 ** 20, `the copy holds ${copy.blocks * 512} bytes on disk, not 64 MiB`);
  });

  it('within a filesystem, moves by rename and links the same file', async () => {
    writeFileSync(path.join(here, 'a'), 'one');
    const inode = statSync(path.join(here, 'a')).ino;
    await moveFile(path.join(here, 'a'), path.join(here, 'b'));
    assert.equal(existsSync(path.join(here, 'a')), false);
    assert.equal(statSync(path.join(here, 'b')).ino, inode, 'renamed, not copied');
    await linkOrCopy(path.join(here, 'b'), path.join(here, 'c'));
    assert.equal(statSync(path.join(here, 'c')).ino, inode, 'linked');
    await assert.rejects(moveFile(path.join(here, 'missing'), path.join(here, 'd')), { code: 'ENOENT' });
  });

  it('across filesystems, moves and links by a sparse copy (the original moved away, or kept)', { skip: elsewhere === undefined ? 'no second filesystem at /dev/shm' : false }, async () => {
    const moved = sparseFile(elsewhere!, 'moved');
    await moveFile(moved, path.join(here, 'moved'));
    assert.equal(existsSync(moved), false, 'the original is gone');
    assert.equal(readFileSync(path.join(here, 'moved')).at(-1), 'x'.charCodeAt(0));
    assert.ok(statSync(path.join(here, 'moved')).blocks * 512 < 2 ** 20, 'still sparse');
    const linked = sparseFile(elsewhere!, 'linked');
    await linkOrCopy(linked, path.join(here, 'linked'));
    assert.equal(existsSync(linked), true, 'the original stays');
    assert.notEqual(statSync(path.join(here, 'linked')).ino, statSync(linked).ino);
  });
});
