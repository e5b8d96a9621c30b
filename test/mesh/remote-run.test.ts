import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ApiError, VmeshClient, type LogEvent } from '../../src/sdk/client.ts';
import type { Workload } from '../../src/spec/index.ts';
import { startMeshDaemon, until, type TestDaemon } from '../helpers/mesh.ts';
import { entriesOf, tarOf, writeOciLayout } from '../helpers/oci-image.ts';
import { hasCommand, skipUnless } from '../helpers/require.ts';
import { BUSYBOX, busyboxRootfs } from '../helpers/rootfs.ts';
import { tempDir } from '../helpers/tmp.ts';

const containerSkip =
  skipUnless('root', process.getuid?.() === 0, 'run the tests as root (containers need it)') ||
  skipUnless('runc', hasCommand('runc'), 'apt-get install runc') ||
  skipUnless('busybox', existsSync(BUSYBOX), 'apt-get install busybox-static');

const js = (code: string, extra: Partial<Workload> = {}): Workload => ({ kind: 'function', source: { inline: code }, ...extra });

describe('remote runs on /vmesh/run/1', () => {
  let a: TestDaemon, b: TestDaemon, c: TestDaemon;
  let client: VmeshClient;
  before(async () => {
    a = await startMeshDaemon();
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

  it('finished runs leave no /vmesh/run/1 stream open on either side (libp2p caps them at 64 per connection)', async () => {
    for (let i = 0; i < 5; i++) await client.run(js('export default () => 1', { placement: { node: c.daemon.node.id } }));
    const open = () =>
      [a, c].flatMap((d) => d.daemon.mesh!.host.getConnections().flatMap((conn) => conn.streams.filter((s) => s.protocol === '/vmesh/run/1')));
    await until(() => open().length === 0, 5000, 'every run stream to close');
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
