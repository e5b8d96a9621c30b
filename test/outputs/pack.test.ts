import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { packOutputs } from '../../src/outputs/pack.ts';
import { tarEntries, testOutputs } from '../helpers/outputs.ts';
import { tempDir } from '../helpers/tmp.ts';

describe('output archives', () => {
  const tmp = tempDir();
  after(() => tmp.remove());
  const scratch = path.join(tmp.dir, 'scratch');
  const outside = path.join(tmp.dir, 'secret.txt');
  mkdirSync(path.join(scratch, 'sub', 'deeper'), { recursive: true });
  writeFileSync(outside, 'host secret');
  writeFileSync(path.join(scratch, 'ok.txt'), 'fine');
  writeFileSync(path.join(scratch, 'sub', 'a.txt'), 'aaa');
  writeFileSync(path.join(scratch, 'sub', 'deeper', 'b.txt'), 'bbbb');
  writeFileSync(path.join(scratch, 'big.bin'), Buffer.alloc(10_000, 7));
  symlinkSync(outside, path.join(scratch, 'link.txt'));
  symlinkSync(outside, path.join(scratch, 'sub', 'sneaky.txt'));
  symlinkSync(tmp.dir, path.join(scratch, 'linkdir'));
  execFileSync('mkfifo', [path.join(scratch, 'pipe')]);

  const { sink, blobs } = testOutputs({ inlineBytes: 1000 });
  const archive = async (hash: string) => tarEntries((await blobs.fileOf(hash))!);

  it('packs declared files and whole directories into one tar in the blob store, inlining small files', async () => {
    const got = await packOutputs(scratch, ['ok.txt', 'sub', 'big.bin'], sink);
    assert.deepEqual(
      got.files.map((f) => [f.path, f.bytes, f.contentBase64 !== undefined]),
      [['ok.txt', 4, true], ['sub/a.txt', 3, true], ['sub/deeper/b.txt', 4, true], ['big.bin', 10_000, false]],
    );
    assert.equal(got.archive?.truncated, false);
    const entries = await archive(got.archive!.blob);
    assert.deepEqual(entries.map((e) => `${e.type} ${e.name}`), ['file ok.txt', 'directory sub/', 'file sub/a.txt', 'directory sub/deeper/', 'file sub/deeper/b.txt', 'file big.bin']);
    assert.deepEqual(entries.at(-1)!.body, Buffer.alloc(10_000, 7), 'a file over the inline budget is whole in the archive');
    assert.equal(got.archive!.entries, 6);
    assert.deepEqual(got.skipped, [{ path: 'sub/sneaky.txt', reason: 'a symlink (never followed)' }]);
  });

  it('never reads through a symlink, out of the directory, or from a fifo, and says why each was left out', async () => {
    const got = await packOutputs(scratch, ['link.txt', 'linkdir/secret.txt', '../secret.txt', 'pipe', 'missing'], sink);
    assert.deepEqual(got.files, []);
    assert.deepEqual(got.skipped, [
      { path: 'link.txt', reason: 'a symlink (never followed)' },
      { path: 'linkdir/secret.txt', reason: 'under a symlinked directory (never followed)' },
      { path: '../secret.txt', reason: 'outside the sandbox scratch directory' },
      { path: 'pipe', reason: 'not a regular file or directory' },
      { path: 'missing', reason: 'missing' },
    ]);
    assert.deepEqual(await archive(got.archive!.blob), [], 'an empty (but valid) tar');
  });

  it('leaves out what does not fit under the size cap, marks the archive truncated, and keeps no temp file', async () => {
    const small = testOutputs({ maxBytes: 4096, inlineBytes: 0 });
    const got = await packOutputs(scratch, ['ok.txt', 'big.bin', 'sub/a.txt'], small.sink);
    assert.deepEqual(got.files.map((f) => f.path), ['ok.txt', 'sub/a.txt'], 'smaller files after the big one still go in');
    assert.deepEqual(got.skipped, [{ path: 'big.bin', reason: 'over the 4096-byte outputs cap' }]);
    assert.equal(got.archive!.truncated, true);
    assert.ok(got.archive!.bytes <= 4096, `${got.archive!.bytes} bytes`);
    assert.equal(got.files[0]!.contentBase64, undefined, 'no inline budget');
    assert.deepEqual(readdirSync(path.join(small.blobs.root, 'incoming')), []);
  });

  it('is deterministic: the same files written at another time give the same blob', async () => {
    const a = await packOutputs(scratch, ['sub/a.txt'], sink);
    utimesSync(path.join(scratch, 'sub', 'a.txt'), new Date(2001, 1, 1), new Date(2001, 1, 1));
    const b = await packOutputs(scratch, ['sub/a.txt'], sink);
    assert.equal(a.archive!.blob, b.archive!.blob);
    assert.match(a.archive!.blob, /^sha256:[0-9a-f]{64}$/);
  });
});
