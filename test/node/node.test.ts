import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { VmeshNode } from '../../src/node/node.ts';
import { Store } from '../../src/store/store.ts';
import { isVmeshError, type VmeshError } from '../../src/spec/index.ts';
import { startTestNode } from '../helpers/node.ts';

const hello = readFileSync(new URL('../../examples/hello.wasm', import.meta.url));
const wasm = (extra: object = {}) => ({ kind: 'function', source: { inline: hello.toString('base64'), encoding: 'base64' }, ...extra });
const js = (code: string, extra: object = {}) => ({ kind: 'function', source: { inline: code }, ...extra });
const SPIN = 'export default () => { for (;;) {} }';

function rejectsWith(code: string, field?: string) {
  return (err: unknown) => {
    assert.ok(isVmeshError(err), `expected a VmeshError, got ${String(err)}`);
    assert.equal((err as VmeshError).code, code, (err as Error).message);
    if (field !== undefined) assert.equal((err as VmeshError).field, field, (err as Error).message);
    return true;
  };
}

describe('node', () => {
  let node: VmeshNode;
  let home: string;
  let remove: () => Promise<void>;
  before(async () => ({ node, home, remove } = await startTestNode({ capacity: { vcpus: 1, memoryMiB: 512 }, executor: { queueTimeoutMs: 2500 } })));
  after(() => remove());

  it('runs a wasm function to success and stores the run with its result', async () => {
    const queued = await node.submit(wasm({ args: ['node'] }));
    assert.ok(['queued', 'placed', 'starting', 'running'].includes(queued.state), queued.state);
    const run = await node.waitFor(queued.id);
    assert.equal(run.state, 'succeeded');
    assert.equal(run.driver, 'wasm');
    assert.equal(run.result?.stdout.text, 'hello, node\n');
    assert.ok(run.startedAt && run.endedAt, 'run.startedAt && run.endedAt');
    const events = node.store.eventsAfter(run.id).filter((e) => e.type === 'state').map((e) => JSON.parse(e.data.toString()).state);
    assert.deepEqual(events, ['queued', 'placed', 'starting', 'running', 'succeeded']);
    await node.settled(run.id); // the result comes out first; the reservation is released after cleanup
    assert.deepEqual(node.ledger.free(), node.ledger.capacity, 'reservation released');
  });

  it('keeps the code once in the blob store instead of inside the stored spec', async () => {
    const run = await node.waitFor((await node.submit(wasm())).id);
    const spec = node.getRecord(run.id).spec;
    assert.ok('blob' in spec.source, '\'blob\' in spec.source');
    assert.deepEqual(await node.blobs.get((spec.source as { blob: string }).blob), hello);
  });

  it('queues runs that do not fit now and starts them when room frees, in order', async () => {
    const big = (await node.submit(js(SPIN, { resources: { vcpus: 1, timeoutMs: 400 } }))).id;
    const next = await node.submit(js('export default () => 7', { resources: { vcpus: 0.5 } }));
    assert.equal(next.state, 'queued');
    assert.equal(next.queuePosition, 1);
    const done = await node.waitFor(next.id);
    assert.equal(done.state, 'succeeded');
    assert.equal((await node.waitFor(big)).state, 'timeout');
    assert.ok(done.result!.timings.queuedMs > 0, 'done.result!.timings.queuedMs > 0');
  });

  it('cancels a queued run at once and a running one by stopping its sandbox', async () => {
    const running = (await node.submit(js(SPIN, { resources: { vcpus: 1, timeoutMs: 20_000 } }))).id;
    const queued = (await node.submit(js('export default () => 1', { resources: { vcpus: 1 } }))).id;
    assert.equal(node.cancel(queued).state, 'cancelled');
    while (node.getRun(running).state !== 'running') await new Promise((r) => setTimeout(r, 10));
    node.cancel(running);
    const ended = await node.waitFor(running);
    assert.equal(ended.state, 'cancelled');
    assert.equal(ended.reason, 'cancelled by request');
    assert.throws(() => node.cancel(running), rejectsWith('run_finished'));
    await node.settled(running);
    assert.deepEqual(node.ledger.free(), node.ledger.capacity);
  });

  it('fails a run that waits in the queue past queueTimeoutMs, saying what is free', async () => {
    const hog = (await node.submit(js(SPIN, { resources: { vcpus: 1, timeoutMs: 5000 } }))).id;
    const starved = await node.waitFor((await node.submit(js('export default () => 1', { resources: { vcpus: 1 } }))).id);
    assert.equal(starved.state, 'failed');
    assert.match(starved.reason ?? '', /waited 2500 ms in the queue/);
    node.cancel(hog);
    await node.waitFor(hog);
  });

  it('ends runs as timeout, oom and failed with reasons', async () => {
    // Results come out before cleanup: wait for each run to be settled so that the next test starts clean.
    const finish = async (w: Parameters<typeof node.submit>[0]) => {
      const { id } = await node.submit(w);
      const run = await node.waitFor(id);
      await node.settled(id);
      return run;
    };
    const timeout = await finish(js(SPIN, { resources: { timeoutMs: 200 } }));
    assert.equal(timeout.state, 'timeout');
    const oom = await finish(js('export default () => { const a = []; for (;;) a.push(new Uint8Array(4 << 20)); }', { resources: { memoryMiB: 8 } }));
    assert.equal(oom.state, 'oom');
    const threw = await finish(js('export default () => { throw new Error("nope") }'));
    assert.equal(threw.state, 'failed');
    assert.match(threw.reason ?? '', /Error: nope/);
  });

  it('refuses bad input before creating anything, naming the field', async () => {
    const before = node.listRuns({ limit: 1000 }).length;
    await assert.rejects(node.submit({ kind: 'potato', source: { inline: 'x' } }), rejectsWith('invalid_input', 'kind'));
    await assert.rejects(node.submit(js('export default 1', { resources: { memoryMiB: -5 } })), rejectsWith('invalid_input', 'resources.memoryMiB'));
    await assert.rejects(node.submit(js('export default 1', { resources: { memoryMiB: 10_000_000 } })), rejectsWith('invalid_input', 'resources.memoryMiB'));
    await assert.rejects(node.submit(js('export default 1', { resources: { memoryMiB: 100_000 } })), rejectsWith('capacity_exceeded', 'resources.memoryMiB'));
    await assert.rejects(node.submit(js('export default 1', { surprise: true })), rejectsWith('invalid_input', 'surprise'));
    await assert.rejects(node.submit({ kind: 'function' }), rejectsWith('invalid_input', 'source'));
    await assert.rejects(node.submit(js('not wasm', { runtime: 'wasm' })), rejectsWith('invalid_source', 'source'));
    await assert.rejects(node.submit({ kind: 'unikernel', source: { inline: 'x' } }), rejectsWith('no_driver', 'kind'));
    await assert.rejects(node.submit(js('x', { isolation: 'vm' })), rejectsWith('no_driver'));
    await assert.rejects(node.submit(js('x', { driver: 'warp-drive' })), rejectsWith('no_driver', 'driver'));
    await assert.rejects(node.submit(js('x', { driver: 'firecracker' })), rejectsWith('no_driver', 'driver'));
    await assert.rejects(node.submit({ kind: 'function', source: { inline: '!!', encoding: 'base64' } }), rejectsWith('invalid_input', 'source.inline'));
    await assert.rejects(node.submit({ kind: 'function', source: { blob: `sha256:${'0'.repeat(64)}` } }), rejectsWith('invalid_input', 'source.blob'));
    await assert.rejects(node.submit({ kind: 'microvm', source: { kernel: '/boot/vmlinuz' } }), rejectsWith('invalid_input', 'source.kernel'));
    await assert.rejects(node.submit({ kind: 'microvm', source: { kernel: 'k', append: 'a\nb' } }), rejectsWith('invalid_input', 'source.append'));
    await assert.rejects(node.submit({ kind: 'microvm', source: { snapshot: 'sha256:nothex' } }), rejectsWith('invalid_input', 'source.snapshot'));
    await assert.rejects(node.submit({ kind: 'function', source: { inline: 'x', surprise: 1 } }), rejectsWith('invalid_input', 'source.surprise'));
    await assert.rejects(node.submit({ kind: 'function', source: { inline: 'x', encoding: 'rot13' } }), /source\.encoding: must be one of "utf8", "base64"/);
    assert.equal(node.listRuns({ limit: 1000 }).length, before, 'no run was created');
    assert.deepEqual(readdirSync(path.join(home, 'sandboxes')), []);
  });

  it('refuses bad input files, naming the input and what was expected', async () => {
    const before = node.listRuns({ limit: 1000 }).length;
    const withInputs = (inputs: unknown[], extra: object = {}) => node.submit(js('export default 1', { inputs, ...extra }));
    await assert.rejects(withInputs([{ path: '../etc/passwd', inline: 'x' }]), rejectsWith('invalid_input', 'inputs[0].path'));
    await assert.rejects(withInputs([{ path: '/abs', inline: 'x' }]), rejectsWith('invalid_input', 'inputs[0].path'));
    await assert.rejects(withInputs([{ path: 'a//b', inline: 'x' }]), /inputs\[0\]\.path: "a\/\/b" is not a plain relative path/);
    await assert.rejects(withInputs([{ path: 'a/./b', inline: 'x' }]), rejectsWith('invalid_input', 'inputs[0].path'));
    await assert.rejects(withInputs([{ path: 'a', inline: 'x' }, { path: 'a/b', inline: 'y' }]), /inputs\[1\]\.path: "a\/b" clashes with inputs\[0\]\.path "a"/);
    await assert.rejects(withInputs([{ path: 'a', inline: 'x' }, { path: 'a', inline: 'y' }]), rejectsWith('invalid_input', 'inputs[1].path'));
    await assert.rejects(withInputs([{ path: 'a', blob: `sha256:${'0'.repeat(64)}` }]), rejectsWith('invalid_input', 'inputs[0].blob'));
    await assert.rejects(withInputs([{ path: 'a', inline: '!!', encoding: 'base64' }]), rejectsWith('invalid_input', 'inputs[0].inline'));
    await assert.rejects(withInputs([{ path: 'a', inline: 'x'.repeat(2 * 2 ** 20) }], { resources: { diskMiB: 1 } }), rejectsWith('invalid_input', 'resources.diskMiB'));
    await assert.rejects(withInputs([{ path: 'a', inline: 'x', mode: 7 }]), rejectsWith('invalid_input', 'inputs[0].mode'));
    await assert.rejects(withInputs([{ path: 'a' }]), /inputs\[0\]: give exactly one of inline/);
    await assert.rejects(withInputs([{ path: 'a', inline: 'x', blob: `sha256:${'0'.repeat(64)}` }]), rejectsWith('invalid_input', 'inputs[0]'));
    await assert.rejects(withInputs([{ path: 'a', inline: 'x' }]), /inputs: the quickjs driver takes no input files/);
    assert.equal(node.listRuns({ limit: 1000 }).length, before, 'no run was created');
  });

  it('refuses disk I/O limits for a driver without a virtual disk, and limits out of range', async () => {
    const before = node.listRuns({ limit: 1000 }).length;
    await assert.rejects(node.submit(js('export default 1', { resources: { disk: { bps: 2 ** 20 } } })), /resources\.disk: the quickjs driver has no virtual disk to throttle/);
    await assert.rejects(node.submit(js('export default 1', { resources: { disk: { bps: 10 } } })), rejectsWith('invalid_input', 'resources.disk.bps'));
    await assert.rejects(node.submit(js('export default 1', { resources: { disk: { iops: 1.5 } } })), rejectsWith('invalid_input', 'resources.disk.iops'));
    await assert.rejects(node.submit(js('export default 1', { resources: { disk: { bandwidth: 1 } } })), rejectsWith('invalid_input', 'resources.disk.bandwidth'));
    assert.equal(node.listRuns({ limit: 1000 }).length, before, 'no run was created');
  });

  it('runs code from a blob it holds', async () => {
    const hash = await node.blobs.put(hello);
    const run = await node.waitFor((await node.submit({ kind: 'function', source: { blob: hash }, args: ['blob'] })).id);
    assert.equal(run.result?.stdout.text, 'hello, blob\n');
  });
});

describe('node file sources', () => {
  it('reads files only under its file roots, never through a symlink out of them', async () => {
    const { node, home, remove } = await startTestNode({ fileRoots: ['files'] });
    try {
      const files = path.join(home, 'files');
      mkdirSync(files);
      writeFileSync(path.join(files, 'ok.js'), 'export default () => "from a file"');
      writeFileSync(path.join(home, 'secret.js'), 'export default () => "secret"');
      symlinkSync(path.join(home, 'secret.js'), path.join(files, 'link.js'));
      const run = await node.waitFor((await node.submit({ kind: 'function', source: { file: 'ok.js' } })).id);
      assert.equal(run.result?.output, 'from a file');
      for (const file of ['../secret.js', 'link.js', path.join(home, 'secret.js'), 'missing.js']) {
        await assert.rejects(node.submit({ kind: 'function', source: { file } }), rejectsWith('invalid_input', 'source.file'), file);
      }
    } finally {
      await remove();
    }
  });
});

describe('node restart', () => {
  it('reconciles at start: live runs become lost with the state they were in; nothing stays running', async () => {
    const a = await startTestNode();
    const home = a.home;
    const done = await a.node.waitFor((await a.node.submit(wasm())).id);
    await a.node.stop();
    // What a kill -9 leaves: a run the store still thinks is running, and its scratch directory.
    const store = new Store(path.join(home, 'vmesh.db'));
    store.insertRun({ ...store.getRun(done.id)!, id: 'rcrashed', state: 'running', result: undefined });
    store.close();
    mkdirSync(path.join(home, 'sandboxes', 'wasm-rcrashed-abc'));
    const b = await startTestNode({}, home);
    try {
      const lost = b.node.getRun('rcrashed');
      assert.equal(lost.state, 'lost');
      assert.match(lost.reason ?? '', /stopped while this run was running/);
      assert.equal(b.node.getRun(done.id).state, 'succeeded');
      assert.deepEqual(b.node.reconciled.lost, ['rcrashed']);
      assert.deepEqual(readdirSync(path.join(home, 'sandboxes')), []);
      assert.deepEqual(b.node.ledger.free(), b.node.ledger.capacity);
    } finally {
      await b.node.stop();
      rmSync(home, { recursive: true, force: true }); // a's home: a itself was stopped, not removed
    }
  });
});
