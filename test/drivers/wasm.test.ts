import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, it, after } from 'node:test';
import fc from 'fast-check';
import { WasmDriver } from '../../src/drivers/wasm/driver.ts';
import { limitModuleMemory } from '../../src/drivers/wasm/module-limits.ts';
import { InvalidInputError, InvalidSourceError, type Workload } from '../../src/spec/index.ts';
import { tempDir } from '../helpers/tmp.ts';
import { wat, watFixture } from '../helpers/wat.ts';
import { driverCompliance, runCase, type Case } from './compliance.ts';

const fn = (extra: Partial<Workload> = {}): Workload => ({ kind: 'function', runtime: 'wasm', source: { inline: '' }, ...extra });
const hello = readFileSync(new URL('../../examples/hello.wasm', import.meta.url));

driverCompliance('wasm', (root) => new WasmDriver({ sandboxRoot: root, workers: 4 }), async () => ({
  hello: { workload: fn({ args: ['compliance'] }), code: hello, stdout: 'hello, compliance\n' },
  stderr: { workload: fn(), code: await watFixture('stderr'), stderr: 'to stderr\n' },
  exitCode: { workload: fn(), code: await watFixture('exit3'), exitCode: 3 },
  spin: { workload: fn(), code: await watFixture('loop') },
  memoryBomb: { workload: fn(), code: await watFixture('membomb') },
  flood: { workload: fn(), code: await watFixture('flood') },
  numbered: (n) => ({ workload: fn({ args: [`run${n}`] }), code: hello, stdout: `hello, run${n}\n` }),
}));

describe('wasm driver', () => {
  const root = tempDir();
  const driver = new WasmDriver({ sandboxRoot: root.dir, workers: 2 });
  after(async () => {
    await driver.close();
    root.remove();
  });
  const run = (c: Case, opts?: Parameters<typeof runCase>[2]) => runCase(driver, c, opts);

  it('feeds stdin to the module', async () => {
    const { stdout } = await run({ workload: fn({ stdin: 'piped through\n' }), code: await watFixture('cat') });
    assert.equal(stdout.text, 'piped through\n');
  });

  it('returns declared output files from the scratch directory', async () => {
    const { exit } = await run({ workload: fn({ outputs: ['out.txt', 'missing.txt'] }), code: await watFixture('write-file') });
    assert.equal(exit.exitCode, 0, exit.reason);
    assert.equal(exit.outputs.files.length, 1);
    assert.equal(exit.outputs.files[0]!.path, 'out.txt');
    assert.equal(Buffer.from(exit.outputs.files[0]!.contentBase64!, 'base64').toString(), 'result\n');
    assert.match(exit.outputs.files[0]!.sha256, /^sha256:[0-9a-f]{64}$/);
  });

  it('caps scratch writes at diskMiB (ENOSPC inside the guest)', async () => {
    // diskMiB 0: the 7-byte write fails, so the file stays empty.
    const { exit } = await run({ workload: fn({ outputs: ['out.txt'] }), code: await watFixture('write-file') }, { resources: { diskMiB: 0 } });
    assert.equal(exit.outputs.files[0]?.bytes, 0);
  });

  it('refuses bytes that are not a wasm module', async () => {
    await assert.rejects(run({ workload: fn(), code: Buffer.from('#!/bin/sh\necho hi\n') }), InvalidSourceError);
  });

  it('refuses a module whose minimum memory is over the limit, naming the field', async () => {
    const big = await wat('(module (memory (export "memory") 512) (func (export "_start")))');
    await assert.rejects(run({ workload: fn(), code: big }, { resources: { memoryMiB: 16 } }), (err: unknown) => {
      assert.ok(err instanceof InvalidInputError, 'err instanceof InvalidInputError');
      assert.equal(err.field, 'resources.memoryMiB');
      return true;
    });
  });

  it('refuses a module that imports its memory', async () => {
    const imported = await wat('(module (import "env" "memory" (memory 1)) (func (export "_start")))');
    await assert.rejects(run({ workload: fn(), code: imported }), /imports its memory/);
  });

  it('refuses an entry the module does not export', async () => {
    await assert.rejects(run({ workload: fn({ entry: 'nope' }), code: hello }), /no export named "nope"/);
  });

  it('reports a trap as a crash with the reason', async () => {
    const trap = await wat('(module (memory (export "memory") 1) (func (export "_start") unreachable))');
    const { exit } = await run({ workload: fn(), code: trap });
    assert.equal(exit.outcome, 'crashed');
    assert.match(exit.reason ?? '', /unreachable/);
  });
});

describe('wasm memory limit rewriting', () => {
  it('caps any declared maximum at the limit and keeps the module valid', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: 64 }), fc.option(fc.integer({ min: 64, max: 65536 })), fc.integer({ min: 64, max: 4096 }), async (min, max, cap) => {
        const decl = max === null ? `${min}` : `${min} ${max}`;
        const bytes = await wat(`(module (memory (export "memory") ${decl}) (func (export "_start")))`);
        const limited = limitModuleMemory(bytes, cap);
        assert.ok(WebAssembly.validate(limited), 'WebAssembly.validate(limited)');
        const instance = await WebAssembly.instantiate(await WebAssembly.compile(limited));
        const memory = instance.exports.memory as WebAssembly.Memory;
        const allowed = Math.min(max ?? cap, cap);
        assert.equal(memory.grow(0), min);
        if (allowed > min) assert.equal(memory.grow(allowed - min), min);
        assert.throws(() => memory.grow(1), RangeError);
      }),
      { numRuns: 40 },
    );
  });
});

describe('wasm driver descriptors', () => {
  it('leaves no file descriptor open after runs, even when the guest leaves its files open', async () => {
    const root = tempDir();
    const driver = new WasmDriver({ sandboxRoot: root.dir, workers: 1 });
    const openFds = () => readdirSync('/proc/self/fd').length;
    try {
      const writer = { workload: fn(), code: await watFixture('write-file-keep-open') };
      await runCase(driver, writer); // boots the worker
      const before = openFds();
      for (let i = 0; i < 30; i++) {
        await runCase(driver, writer);
        await runCase(driver, { workload: fn({ args: ['fd'] }), code: hello });
      }
      assert.equal(openFds(), before, 'descriptors open after 60 runs');
    } finally {
      await driver.close();
      root.remove();
    }
  });
});

describe('wasm sandbox file system', () => {
  const root = tempDir();
  const driver = new WasmDriver({ sandboxRoot: root.dir, workers: 1 });
  after(async () => {
    await driver.close();
    root.remove();
  });
  const attempt = async (target: string, file: string) => runCase(driver, { workload: fn({ args: [target, file] }), code: await watFixture('escape') });

  it('reads a file the guest put in its own scratch directory (the fixture itself works)', async () => {
    const { exit, stdout } = await attempt('-', 'missing');
    assert.equal(exit.exitCode, 44, 'ENOENT for a file that is not there');
    assert.equal(stdout.text, '');
  });

  it('cannot climb out of its scratch directory with ..', async () => {
    const { exit, stdout } = await attempt('-', '../../../../../../etc/hostname');
    assert.notEqual(exit.exitCode, 0);
    assert.equal(stdout.text, '');
  });

  it('sees its scratch directory as / (an absolute path does not reach the host)', async () => {
    const { exit, stdout } = await attempt('-', '/etc/hostname');
    assert.notEqual(exit.exitCode, 0);
    assert.equal(stdout.text, '');
  });

  it('cannot make a symlink, so it cannot read the host through one (node:wasi would follow ../ links out)', async () => {
    for (const target of ['/etc', '../../../../../../etc', 'inside']) {
      const { exit, stdout } = await attempt(target, 'link/hostname');
      assert.equal(exit.exitCode, 200 + 58, `path_symlink to ${target} must fail with ENOTSUP`);
      assert.equal(stdout.text, '');
    }
  });
});
