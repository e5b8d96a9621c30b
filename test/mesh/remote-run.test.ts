import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { multiaddr } from '@multiformats/multiaddr';
import { JsonFrames } from '../../src/mesh/frames.ts';
import { RUN_PROTOCOL } from '../../src/mesh/run-protocol.ts';
import { newRunId } from '../../src/node/run-id.ts';
import { ApiError, VmeshClient, type LogEvent } from '../../src/sdk/client.ts';
import type { Workload } from '../../src/spec/index.ts';
import { bareMeshHost, startMeshDaemon, until, type TestDaemon } from '../helpers/mesh.ts';
import { entriesOf, tarOf, writeOciLayout } from '../helpers/oci-image.ts';
import { hasCommand, skipUnless } from '../helpers/require.ts';
import { BUSYBOX, busyboxRootfs } from '../helpers/rootfs.ts';
import { tempDir } from '../helpers/tmp.ts';

const containerSkip =
  skipUnless('root', process.getuid?.() === 0, 'run the tests as root (containers need it)') ||
  skipUnless('runc', hasCommand('runc'), 'apt-get install runc') ||
  skipUnless('busybox', existsSync(BUSYBOX), 'apt-get install busybox-static');

/** How long A keeps a stream between runs (mesh.keepRunStreamsMs). */
const KEEP_MS = 1500;
const js = (code: string, extra: Partial<Workload> = {}): Workload => ({ kind: 'function', source: { inline: code }, ...extra });

describe(`remote runs on ${RUN_PROTOCOL}`, () => {
  let a: TestDaemon, b: TestDaemon, c: TestDaemon;
  let client: VmeshClient;
  before(async () => {
    a = await startMeshDaemon({ keepRunStreamsMs: KEEP_MS });
    const join = a.daemon.mesh!.addresses();
    [b, c] = [await startMeshDaemon({ join }), await startMeshDaemon({ join })];
    await until(() => [a, b, c].every((d) => d.daemon.mesh!.nodes().length === 3), 10_000, 'three nodes');
    client = new VmeshClient({ url: a.daemon.url, token: a.daemon.token });
  });
  after(async () => {
    await client?.close();
    for (const d of [a, b, c]) await d?.remove();
  });

  it('a run submitted on A with placement.node = C executes on C; logs and result come back to A', async () => {
    const target = c.daemon.node.id;
    const code = 'export default (input) => { for (let i = 0; i < 3; i++) console.log(`line ${i}`); return { doubled: input.n * 2 } }';
    const run = await client.run(js(code, { input: { n: 21 }, placement: { node: target } }));
    assert.equal(run.state, 'succeeded', run.reason);
    assert.equal(run.nodeId, target);
    assert.deepEqual(run.result?.output, { doubled: 42 });
    assert.equal(run.result?.stdout.text, 'line 0\nline 1\nline 2\n');
    assert.equal(run.driver, 'quickjs');
    // Both stores hold it under the same id: C as the node that ran it, A as the node that asked.
    const onC = c.daemon.node.getRun(run.id);
    assert.equal(onC.state, 'succeeded');
    assert.equal(onC.nodeId, target);
    assert.equal(b.daemon.node.listRuns().length, 0, 'B was not involved');
    const logs: LogEvent[] = [];
    for await (const e of client.logs(run.id, { follow: false })) logs.push(e);
    const text = logs.map((e) => (e.event === 'stdout' ? e.text : '')).join('');
    assert.equal(text, 'line 0\nline 1\nline 2\n', 'the log events were streamed to A and stored there');
    assert.deepEqual(
      logs.filter((e) => e.event === 'state').map((e) => (e as { state: string }).state),
      ['queued', 'placed', 'starting', 'running', 'succeeded'],
    );
  });

  const runStreams = (d: TestDaemon) => d.daemon.mesh!.host.getConnections().flatMap((conn) => conn.streams.filter((s) => s.protocol === RUN_PROTOCOL));

  it('runs to one node one after another take one stream, which closes once unused for mesh.keepRunStreamsMs', async () => {
    const target = c.daemon.node.id;
    await until(() => runStreams(a).length === 0, 5000, 'streams of earlier tests to close');
    const seen = new Set<string>();
    for (let i = 0; i < 5; i++) {
      const run = await client.run(js(`export default () => ${i}`, { placement: { node: target } }));
      assert.equal(run.result?.output, i);
      for (const s of runStreams(a)) seen.add(s.id);
    }
    assert.equal(seen.size, 1, `one stream carried all five runs (saw ${[...seen].join(', ')})`);
    // libp2p caps streams at 64 per connection: kept ones must not pile up.
    const took = await until(() => runStreams(a).length === 0 && runStreams(c).length === 0, 10_000, 'the kept stream to close on both sides');
    assert.ok(took >= KEEP_MS / 2, `closed after ${Math.round(took)} ms, not before it had been unused for a while`);
  });

  it('concurrent runs to one node open a stream each, and the next ones take the kept streams', async () => {
    const target = c.daemon.node.id;
    const batch = async () => {
      const runs = await Promise.all([0, 1, 2, 3].map((i) => client.run(js(`export default () => ${i}`, { placement: { node: target } }))));
      assert.deepEqual(runs.map((r) => r.result?.output), [0, 1, 2, 3]);
      return new Set(runStreams(a).map((s) => s.id));
    };
    const first = await batch();
    assert.ok(first.size >= 1 && first.size <= 4, `kept ${first.size} streams after 4 concurrent runs`);
    const second = await batch();
    assert.ok([...first].some((id) => second.has(id)), 'the second batch took streams the first had kept');
  });

  it('a kept stream the executing node closed is not used: the run goes on a new stream', async () => {
    const target = c.daemon.node.id;
    await until(() => runStreams(a).length === 0, 5000, 'streams of earlier tests to close');
    await client.run(js('export default () => 1', { placement: { node: target } }));
    const kept = runStreams(a);
    assert.equal(kept.length, 1, 'one stream kept after the run');
    // C drops its side without a word (as a restarted node would): A finds out only when it writes.
    for (const s of runStreams(c)) s.abort(new Error('dropped by the test'));
    const run = await client.run(js('export default () => 2', { placement: { node: target } }));
    assert.equal(run.state, 'succeeded', run.reason);
    assert.equal(run.result?.output, 2);
    assert.ok(!runStreams(a).some((s) => s.id === kept[0]!.id), 'the dropped stream is gone');
  });

  /** A bare libp2p host, not a member, with a run stream open to `d`. */
  async function strangerTo(d: TestDaemon) {
    const stranger = await bareMeshHost();
    const mesh = d.daemon.mesh!;
    await stranger.dial(multiaddr(mesh.addresses()[0]!));
    return { stranger, mesh, frames: new JsonFrames(await stranger.dialProtocol(mesh.host.peerId, RUN_PROTOCOL), 2 ** 20) };
  }

  it('a stream carries runs one after another; a late cancel between them is ignored, a run over a live one is a protocol offence', async () => {
    const { stranger, mesh, frames } = await strangerTo(c);
    try {
      const read = async () => (await frames.read((v) => v)) as { type: string; run?: { id: string; state: string; result?: { output: unknown } } };
      const runUntilEnd = async (id: string, code: string) => {
        await frames.write({ type: 'run', id, workload: js(code) });
        for (let f = await read(); ; f = await read()) if (f.type === 'end') return f.run!;
      };
      const first = await runUntilEnd(newRunId(), 'export default () => "first"');
      assert.deepEqual([first.state, first.result?.output], ['succeeded', 'first']);
      await frames.write({ type: 'cancel', reason: 'too late' });
      const second = await runUntilEnd(newRunId(), 'export default () => "second"');
      assert.deepEqual([second.state, second.result?.output], ['succeeded', 'second'], 'the cancel between runs touched nothing');
      const live = newRunId();
      await frames.write({ type: 'run', id: live, workload: js('export default () => { for (;;) {} }', { resources: { timeoutMs: 60_000 } }) });
      assert.equal((await read()).type, 'accepted');
      await frames.write({ type: 'run', id: newRunId(), workload: js('export default () => 3') });
      await until(() => mesh.guard.list().some((b) => b.peer === stranger.peerId.toString()), 5000, 'the stranger to be refused');
      assert.match(mesh.guard.list().find((b) => b.peer === stranger.peerId.toString())!.reason, /sent run r\w+ while run r\w+ was live on the same stream/);
      assert.equal((await c.daemon.node.waitFor(live)).state, 'cancelled', 'the live run was cancelled with its stream');
    } finally {
      await stranger.stop();
    }
  });

  it('a short run sends its end alone; a longer one sends its state changes first, together and in order', async () => {
    // A node that holds state changes for a second: a run that takes less sends only its end however busy
    // the host is (at the default 20 ms, five trivial runs in a row took longer during a full test run).
    const d = await startMeshDaemon({ stateBatchMs: 1000 });
    const { stranger, frames } = await strangerTo(d);
    try {
      const framesOf = async (code: string) => {
        await frames.write({ type: 'run', id: newRunId(), workload: js(code) });
        const seen: string[] = [];
        for (;;) {
          const f = (await frames.read((v) => v)) as { type: string; state?: string };
          seen.push(f.type === 'state' ? f.state! : f.type);
          if (f.type === 'end') return seen;
        }
      };
      const order = ['queued', 'placed', 'starting', 'running'];
      /** Whatever state changes were sent came in order, each after the one before it, between accepted and end. */
      const inOrder = (seen: string[]) => {
        assert.deepEqual([seen[0], seen.at(-1)], ['accepted', 'end'], seen.join(', '));
        const states = seen.slice(1, -1);
        if (states.length > 0) assert.deepEqual(states, order.slice(order.indexOf(states[0]!), order.indexOf(states[0]!) + states.length), seen.join(', '));
        return states;
      };
      // Ended within stateBatchMs: the requester walks through the states itself (the first test sees them on A).
      // The node's first run boots its function worker, which can take more than a second on a busy host.
      inOrder(await framesOf('export default () => 0'));
      assert.deepEqual(inOrder(await framesOf('export default () => 1')), [], 'a trivial run sent only accepted and end');
      const longer = inOrder(await framesOf('export default () => { const t = Date.now(); while (Date.now() - t < 2000); return 1 }'));
      assert.equal(longer.at(-1), 'running', 'the run was running for 2 s: that was sent before its end');
    } finally {
      await stranger.stop();
      await d.remove();
    }
  });

  it('a source over 256 KiB goes by blob: C fetches it from A', async () => {
    const padding = `/*${'x'.repeat(300 * 1024)}*/`;
    const run = await client.run(js(`${padding}\nexport default () => 'big'`, { placement: { node: c.daemon.node.id } }));
    assert.equal(run.state, 'succeeded', run.reason);
    assert.equal(run.result?.output, 'big');
  });

  it('cancel on A stops the run on C', async () => {
    const run = await client.run(js('export default () => { for (;;) {} }', { resources: { timeoutMs: 60_000 }, placement: { node: c.daemon.node.id } }), { wait: false });
    await until(() => c.daemon.node.listRuns().some((r) => r.id === run.id && r.state === 'running'), 10_000, 'the run to start on C');
    await client.cancel(run.id);
    const ended = await a.daemon.node.waitFor(run.id);
    assert.equal(ended.state, 'cancelled');
    assert.equal((await c.daemon.node.waitFor(run.id)).state, 'cancelled');
  });

  it('refusals name the field: an unknown node, and a run the target cannot take', async () => {
    await assert.rejects(client.run(js('export default () => 1', { placement: { node: '12D3KooWNotAMemberOfThisMeshAtAll1111111111111' } })), (err: ApiError) => {
      assert.equal(err.status, 400);
      assert.equal(err.field, 'placement.node');
      assert.match(err.message, /no node .* in this node's view of the mesh/);
      return true;
    });
    await assert.rejects(client.run(js('export default () => 1', { driver: 'nope', placement: { node: c.daemon.node.id } })), (err: ApiError) => {
      assert.equal(err.code, 'no_driver');
      assert.equal(err.field, 'driver');
      assert.match(err.message, new RegExp(`^node ${c.daemon.node.id}: driver: this node has no driver named "nope"`));
      return true;
    });
    assert.equal(a.daemon.node.listRuns().filter((r) => r.state === 'queued').length, 0, 'nothing half-created on A');
  });

  it('a container image travels as a blob: put on A, run on A and on B, which fetches it from A', { skip: containerSkip }, async () => {
    const tmp = tempDir('vmesh-image-blob-');
    try {
      const layout = path.join(tmp.dir, 'layout');
      await writeOciLayout(layout, [entriesOf(busyboxRootfs(path.join(tmp.dir, 'rootfs')))], { Entrypoint: ['/bin/sh', '-c', 'echo "from a blob image: $0"'] });
      const { blob } = await client.putBlob(await tarOf(entriesOf(layout)));
      const image = (extra: Partial<Workload>): Workload => ({ kind: 'container', source: { blob }, args: ['x'], ...extra });
      const here = await client.run(image({}));
      assert.equal(here.state, 'succeeded', here.reason);
      assert.equal(here.result?.stdout.text, 'from a blob image: x\n');
      assert.equal(await b.daemon.node.blobs.has(blob), false);
      const there = await client.run(image({ placement: { node: b.daemon.node.id } }));
      assert.equal(there.state, 'succeeded', there.reason);
      assert.equal(there.nodeId, b.daemon.node.id);
      assert.equal(there.result?.stdout.text, 'from a blob image: x\n');
      assert.equal(await b.daemon.node.blobs.has(blob), true, 'B fetched the image from A');
      const notAnImage = await client.putBlob(Buffer.from('not a tar'));
      const runs = a.daemon.node.listRuns().length;
      await assert.rejects(client.run(image({ source: { blob: notAnImage.blob } })), (err: ApiError) => {
        assert.deepEqual([err.status, err.code, err.field], [422, 'invalid_source', 'source']);
        assert.match(err.message, /is not a readable tar/);
        return true;
      });
      assert.equal(a.daemon.node.listRuns().length, runs, 'a blob that is not an image makes no run');
    } finally {
      tmp.remove();
    }
  });

  it('when the requesting node goes away, the executing node cancels the run', async () => {
    const requester = await startMeshDaemon({ join: a.daemon.mesh!.addresses() });
    await until(() => requester.daemon.mesh!.nodes().length === 4, 10_000, 'the requester to see the mesh');
    const run = await requester.daemon.node.submitValid(js('export default () => { for (;;) {} }', { resources: { timeoutMs: 60_000 }, placement: { node: b.daemon.node.id } }));
    await until(() => b.daemon.node.listRuns().some((r) => r.id === run.id && r.state === 'running'), 10_000, 'the run to start on B');
    await requester.daemon.mesh!.stop(); // the requester vanishes from the network without a word
    const onB = await b.daemon.node.waitFor(run.id);
    assert.equal(onB.state, 'cancelled');
    await requester.remove();
  });
});
