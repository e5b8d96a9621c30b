import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { collectOutputs } from '../../src/drivers/outputs.ts';
import { tempDir } from '../helpers/tmp.ts';

describe('output collection', () => {
  const tmp = tempDir();
  after(() => tmp.remove());
  const scratch = path.join(tmp.dir, 'scratch');
  const outside = path.join(tmp.dir, 'secret.txt');
  mkdirSync(path.join(scratch, 'sub'), { recursive: true });
  writeFileSync(outside, 'host secret');
  writeFileSync(path.join(scratch, 'ok.txt'), 'fine');
  writeFileSync(path.join(scratch, 'sub', 'deep.txt'), 'deeper');
  writeFileSync(path.join(scratch, 'big.bin'), Buffer.alloc(10_000, 7));
  symlinkSync(outside, path.join(scratch, 'link.txt'));
  symlinkSync(tmp.dir, path.join(scratch, 'linkdir'));
  execFileSync('mkfifo', [path.join(scratch, 'pipe')]);

  it('returns regular files inside the scratch directory, inline when small', async () => {
    const files = await collectOutputs(scratch, ['ok.txt', 'sub/deep.txt', 'big.bin'], { inlineBytes: 1000 });
    assert.deepEqual(files.map((f) => [f.path, f.bytes]), [['ok.txt', 4], ['sub/deep.txt', 6], ['big.bin', 10_000]]);
    assert.equal(Buffer.from(files[0]!.contentBase64!, 'base64').toString(), 'fine');
    assert.equal(files[2]!.contentBase64, undefined, 'over the inline cap: size and hash only');
    assert.match(files[2]!.sha256, /^sha256:[0-9a-f]{64}$/);
  });

  it('never reads through a symlink, out of the directory, or from a fifo', async () => {
    const files = await collectOutputs(scratch, ['link.txt', 'linkdir/secret.txt', '../secret.txt', 'pipe', 'sub', 'missing'], { inlineBytes: 1000 });
    assert.deepEqual(files, []);
  });
});
