import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { buildWorkload, type RunOptions } from '../../src/cli/commands/run.ts';
import { tempDir } from '../helpers/tmp.ts';

describe('vmesh run: the workload built from a file', () => {
  const tmp = tempDir('vmesh-cli-build-');
  after(() => tmp.remove());
  const file = (name: string, bytes: string | Uint8Array) => {
    const p = path.join(tmp.dir, name);
    writeFileSync(p, bytes);
    return p;
  };
  const elf = new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0, 0xff, 0xfe, 0x80]);

  it('sends text as itself and bytes as base64, byte for byte', () => {
    assert.deepEqual(buildWorkload(file('f.js', 'export default () => 1;\n'), [], { kind: 'function' } as RunOptions).source, { inline: 'export default () => 1;\n' });
    const wasm = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]);
    assert.deepEqual(buildWorkload(file('m.wasm', wasm), [], { kind: 'function' } as RunOptions).source, { inline: Buffer.from(wasm).toString('base64'), encoding: 'base64' });
    const unikernel = buildWorkload(file('hello', elf), ['a', 'b c'], { kind: 'unikernel' } as RunOptions);
    assert.deepEqual(unikernel.source, { inline: Buffer.from(elf).toString('base64'), encoding: 'base64' }, 'an ELF is not mangled into UTF-8');
    assert.deepEqual(unikernel.args, ['a', 'b c']);
    assert.deepEqual(buildWorkload(file('blob.bin', elf), [], { kind: 'function' } as RunOptions).source, { inline: Buffer.from(elf).toString('base64'), encoding: 'base64' }, 'bytes that are not UTF-8 go as base64 for any kind');
  });
});
