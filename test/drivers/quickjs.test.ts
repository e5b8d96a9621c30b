import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { QuickJsDriver } from '../../src/drivers/quickjs/driver.ts';
import { InvalidSourceError, type Workload } from '../../src/spec/index.ts';
import { tempDir } from '../helpers/tmp.ts';
import { driverCompliance, runCase } from './compliance.ts';

const fn = (extra: Partial<Workload> = {}): Workload => ({ kind: 'function', runtime: 'js', source: { inline: '' }, ...extra });
const js = (source: string) => Buffer.from(source, 'utf8');
const hello = readFileSync(new URL('../../examples/hello.js', import.meta.url));

driverCompliance('quickjs', (root) => new QuickJsDriver({ sandboxRoot: root, workers: 4 }), async () => ({
  hello: { workload: fn(), code: js('export default () => { console.log("hello, compliance"); return null; }'), stdout: 'hello, compliance\n' },
  stderr: { workload: fn(), code: js('export default () => { console.error("to stderr"); }'), stderr: 'to stderr\n' },
  exitCode: { workload: fn(), code: js('export default () => { throw new Error("boom"); }'), exitCode: 1 },
  spin: { workload: fn(), code: js('export default () => { for (;;) {} }') },
  memoryBomb: { workload: fn(), code: js('export default () => { const a = []; for (;;) a.push(new Uint8Array(4 << 20)); }') },
  flood: { workload: fn(), code: js('export default () => { const s = "x".repeat(65536); for (let i = 0; i < 40; i++) console.log(s); }') },
  numbered: (n) => ({ workload: fn({ input: { n } }), code: js('export default ({ n }) => { console.log(`run ${n}`); }'), stdout: `run ${n}\n` }),
}));

describe('quickjs driver', () => {
  const root = tempDir();
  const driver = new QuickJsDriver({ sandboxRoot: root.dir, workers: 2 });
  after(async () => {
    await driver.close();
    root.remove();
  });

  it('passes the JSON input and returns the JSON output', async () => {
    const { exit, stdout } = await runCase(driver, { workload: fn({ input: { name: 'world' } }), code: hello });
    assert.deepEqual(exit.output, { greeting: 'hello, world' });
    assert.equal(stdout.text, 'saying hello to world\n');
  });

  it('awaits an async function', async () => {
    const code = js('export default async (x) => { await null; return { doubled: x * 2 }; }');
    const { exit } = await runCase(driver, { workload: fn({ input: 21 }), code });
    assert.equal(exit.exitCode, 0, exit.reason);
    assert.deepEqual(exit.output, { doubled: 42 });
  });

  it('reports a throw with its message', async () => {
    const { exit } = await runCase(driver, { workload: fn(), code: js('export default () => { throw new TypeError("bad input"); }') });
    assert.equal(exit.exitCode, 1);
    assert.match(exit.reason ?? '', /TypeError: bad input/);
  });

  it('reports a syntax error as a failed run', async () => {
    const { exit } = await runCase(driver, { workload: fn(), code: js('export default () => {') });
    assert.equal(exit.exitCode, 1);
    assert.match(exit.reason ?? '', /SyntaxError/);
  });

  it('gives the function no host: no require, process, fetch or file system', async () => {
    const code = js('export default () => [typeof require, typeof process, typeof fetch, typeof std, typeof os, typeof globalThis.Deno]');
    const { exit } = await runCase(driver, { workload: fn(), code });
    assert.deepEqual(exit.output, ['undefined', 'undefined', 'undefined', 'undefined', 'undefined', 'undefined']);
  });

  it('refuses a module without the named export', async () => {
    const { exit } = await runCase(driver, { workload: fn({ entry: 'main' }), code: hello });
    assert.equal(exit.exitCode, 1);
    assert.match(exit.reason ?? '', /no function export named "main"/);
  });

  it('refuses a wasm module and text that is not utf8', async () => {
    await assert.rejects(runCase(driver, { workload: fn(), code: readFileSync(new URL('../../examples/hello.wasm', import.meta.url)) }), InvalidSourceError);
    await assert.rejects(runCase(driver, { workload: fn(), code: Uint8Array.from([0xff, 0xfe, 0x00]) }), /utf8/);
  });

  it('fails a function that awaits forever instead of hanging', async () => {
    const { exit } = await runCase(driver, { workload: fn(), code: js('export default () => new Promise(() => {})') });
    assert.equal(exit.exitCode, 1);
    assert.match(exit.reason ?? '', /never settle/);
  });
});
