import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { after, before, describe, it } from 'node:test';
import { multiaddr } from '@multiformats/multiaddr';
import { JsonFrames } from '../../src/mesh/frames.ts';
import type { MeshHost } from '../../src/mesh/host.ts';
import { KEEP_PROTOCOL } from '../../src/mesh/keep-protocol.ts';
import { ApiError, VmeshClient } from '../../src/sdk/client.ts';
import type { Workload } from '../../src/spec/index.ts';
import { bareMeshHost, startMeshDaemon, until, type TestDaemon } from '../helpers/mesh.ts';
import { watFixture } from '../helpers/wat.ts';

describe('outputs kept on more than one node (outputs.replicas)', () => {
  const daemons: TestDaemon[] = [];
  const strangers: MeshHost[] = [];
  let code: string;
  let client: VmeshClient;
  const ids = () => daemons.map((d) => d.daemon.node.id);
  const holders = async (blob: string) => {
    const held = await Promise.all(daemons.map(async (d) => ((await d.daemon.node.blobs.has(blob)) ? d.daemon.node.id : undefined)));
    return held.filter((id) => id !== undefined).sort();
  };
  /** A function that writes `text` into out.txt and declares it as its output. */
  const writes = (text: string, outputs: Partial<{ replicas: number }>, extra: Partial<Workload> = {}): Workload => ({
    kind: 'function',
    source: { inline: code, encoding: 'base64' },
    args: [text],
    outputs: { paths: ['out.txt'], ...outputs },
    ...extra,
  });

  before(async () => {
    code = Buffer.from(await watFixture('write-arg')).toString('base64');
    const a = await startMeshDaemon();
    daemons.push(a);
    const join = a.daemon.mesh!.addresses();
    for (let i = 0; i < 3; i++) daemons.push(await startMeshDaemon({ join }));
    await until(() => daemons.every((x) => x.daemon.mesh!.nodes().length === 4), 15_000, 'four nodes');
    client = new VmeshClient({ url: a.daemon.url, token: a.daemon.token });
  });
  after(async () => {
    await client?.close();
    for (const s of strangers) await s.stop();
    for (const d of daemons) await d.remove();
  });

  it('a run on A with replicas 3 ends with its archive on A and two other nodes, which serve it once A has lost it', async () => {
    const run = await client.run(writes('kept thrice', { replicas: 3 }));
    assert.equal(run.state, 'succeeded', run.reason);
    const archive = run.result!.outputsArchive!;
    const copies = archive.copies!;
    assert.equal(copies.wanted, 3);
    assert.equal(copies.missing, undefined);
    assert.equal(copies.nodes[0], ids()[0], 'the executing node first');
    assert.equal(new Set(copies.nodes).size, 3);
    assert.deepEqual(await holders(archive.blob), [...copies.nodes].sort(), 'exactly the nodes named hold it, no more');
    // The keepers pinned their copies against eviction (mesh.keepCopiesForMs, 7 days by default); A's own is its cache.
    for (const d of daemons) {
      const entry = (await d.daemon.node.blobs.entries()).find((e) => e.hash === archive.blob);
      if (entry === undefined || d.daemon.node.id === ids()[0]) continue;
      assert.ok(Date.parse(entry.pinnedUntil ?? '') > Date.now() + 6 * 86_400_000, `${d.daemon.node.id} pinned its copy until ${entry.pinnedUntil}`);
    }

    assert.equal(await daemons[0]!.daemon.node.blobs.remove(archive.blob), true);
    const tar = await buffer(Readable.fromWeb(await client.outputs(run.id)));
    assert.equal(tar.byteLength, archive.bytes);
    assert.ok(tar.includes(Buffer.from('kept thrice')), 'A fetched the archive back from a node that kept a copy');
  });

  it('a run sent from A to B keeps its copies from B, and A sees where they went', async () => {
    const b = ids()[1]!;
    const run = await client.run(writes('sent to B', { replicas: 2 }, { placement: { node: b } }));
    assert.equal(run.state, 'succeeded', run.reason);
    assert.equal(run.nodeId, b);
    const copies = run.result!.outputsArchive!.copies!;
    assert.equal(copies.nodes.length, 2);
    assert.equal(copies.nodes[0], b);
    assert.deepEqual(await holders(run.result!.outputsArchive!.blob), [...copies.nodes].sort());
  });

  it('more copies than the mesh has nodes: every node keeps one, and the result says what is missing', async () => {
    const run = await client.run(writes('too many', { replicas: 6 }));
    assert.equal(run.state, 'succeeded', run.reason);
    const copies = run.result!.outputsArchive!.copies!;
    assert.deepEqual([...copies.nodes].sort(), [...ids()].sort());
    assert.match(copies.missing ?? '', /asked 3 other nodes and 3 took a copy: 4 of the 6 wanted/);
  });

  it('refuses replicas out of range, naming the field', async () => {
    for (const replicas of [0, 9, 1.5]) {
      await assert.rejects(client.run(writes('x', { replicas })), (err: unknown) => {
        assert.ok(err instanceof ApiError, 'err instanceof ApiError');
        assert.equal(err.status, 400);
        assert.equal(err.field, 'outputs.replicas', err.message);
        return true;
      });
    }
  });

  it('a peer that is no member of the mesh is refused, and one that breaks the protocol is banned', async () => {
    const a = daemons[0]!.daemon;
    const run = await client.run(writes('strangers', {}));
    const blob = run.result!.outputsArchive!.blob;
    assert.equal(run.result!.outputsArchive!.copies, undefined, 'one copy asked: nothing to say');

    const stranger = await bareMeshHost();
    strangers.push(stranger);
    await stranger.dial(multiaddr(a.mesh!.addresses()[0]!));
    const stream = await stranger.dialProtocol(a.mesh!.host.peerId, KEEP_PROTOCOL);
    const frames = new JsonFrames(stream, 1024);
    await frames.write({ hash: blob, size: 10 });
    const answer = (await frames.read((v) => v)) as { ok: boolean; code?: string };
    assert.deepEqual([answer.ok, answer.code], [false, 'not_a_member']);

    const rogue = await bareMeshHost();
    strangers.push(rogue);
    await rogue.dial(multiaddr(a.mesh!.addresses()[0]!));
    const bad = new JsonFrames(await rogue.dialProtocol(a.mesh!.host.peerId, KEEP_PROTOCOL), 4096);
    await bad.write({ hash: blob, size: 10, padding: 'x'.repeat(2000) });
    await until(() => a.mesh!.guard.isBanned(rogue.peerId.toString()), 5000, 'A to ban the rogue');
    assert.match(a.mesh!.guard.list().find((o) => o.peer === rogue.peerId.toString())!.reason, /\/vmesh\/keep\/1: a frame over 1024 bytes/);
  });
});

describe('outputs.replicas on a node in no mesh', () => {
  let node: TestDaemon;
  after(async () => node?.remove());

  it('runs, keeps its one copy, and says why there are no more', async () => {
    node = await startMeshDaemon({ enabled: false });
    const code = Buffer.from(await watFixture('write-arg')).toString('base64');
    const run = await node.daemon.node.submit({ kind: 'function', source: { inline: code, encoding: 'base64' }, args: ['alone'], outputs: { paths: ['out.txt'], replicas: 2 } });
    await node.daemon.node.waitFor(run.id);
    const done = node.daemon.node.getRun(run.id);
    assert.equal(done.state, 'succeeded', done.reason);
    assert.deepEqual(done.result!.outputsArchive!.copies, { wanted: 2, nodes: [node.daemon.node.id], missing: 'this node is in no mesh (started with --no-mesh)' });
  });
});
