import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { multiaddr } from '@multiformats/multiaddr';
import { sha256 } from '../../src/blobs/blob-store.ts';
import { BLOB_PROTOCOL } from '../../src/mesh/blob-exchange.ts';
import { JsonFrames } from '../../src/mesh/frames.ts';
import type { MeshHost } from '../../src/mesh/host.ts';
import { bareMeshHost, startMeshDaemon, until, type TestDaemon } from '../helpers/mesh.ts';

/** How many blobs a node fetched from others, by the way their bytes came. */
async function fetchesOf(d: TestDaemon): Promise<Array<{ via: string; n: number }>> {
  return (await d.daemon.node.metrics.blobFetches.get()).values.map((v) => ({ via: String(v.labels.via), n: v.value }));
}

describe('blob pool', () => {
  const daemons: TestDaemon[] = [];
  let liar: MeshHost | undefined;
  after(async () => {
    await liar?.stop();
    for (const d of daemons) await d.remove();
  });

  it('a blob held only by D is found through the DHT and fetched by B, byte for byte', async () => {
    const a = await startMeshDaemon();
    daemons.push(a);
    const join = a.daemon.mesh!.addresses();
    const [b, c, d] = [await startMeshDaemon({ join }), await startMeshDaemon({ join }), await startMeshDaemon({ join })];
    daemons.push(b, c, d);
    await until(() => daemons.every((x) => x.daemon.mesh!.nodes().length === 4), 10_000, 'four nodes');
    const bytes = randomBytes(3 * 2 ** 20 + 17);
    const hash = await d.daemon.node.blobs.put(bytes);
    assert.equal(await b.daemon.node.blobs.has(hash), false);
    // The provider record is placed in the background; B looks until it finds it.
    let from: string | undefined;
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        from = await b.daemon.mesh!.blobs.fetch(hash);
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    assert.equal(from, d.daemon.node.id, 'the provider was D');
    assert.deepEqual(await fetchesOf(b), [{ via: 'lane', n: 1 }], 'the bytes came over D\'s blob lane');
    const got = await b.daemon.node.blobs.get(hash);
    assert.ok(got !== undefined && got.equals(bytes), 'got !== undefined && got.equals(bytes)');
    assert.equal(await c.daemon.node.blobs.has(hash), false, 'nobody else was sent it');
    const open = () => [b, d].flatMap((x) => x.daemon.mesh!.host.getConnections().flatMap((conn) => conn.streams.filter((s) => s.protocol === '/vmesh/blob/2')));
    await until(() => open().length === 0, 5000, 'the blob streams to close');
  });

  it('bytes that are not the blob asked for are thrown away and their sender banned', async () => {
    const b = daemons[1]!;
    liar = await bareMeshHost();
    // It answers every request with the right header and the wrong bytes.
    await liar.handle(BLOB_PROTOCOL, async (stream) => {
      const frames = new JsonFrames(stream, 1024, 1024);
      await frames.write({ ok: true, size: 5 });
      await frames.writeChunk(new TextEncoder().encode('lies!'));
      await stream.close();
    });
    await liar.dial(multiaddr(b.daemon.mesh!.addresses()[0]!));
    // B answers over the liar's connection (the liar listens nowhere): wait until B has it too.
    await until(() => b.daemon.mesh!.host.getConnections(liar!.peerId).length > 0, 5000, 'B to see the liar\'s connection');
    const hash = sha256(new TextEncoder().encode('truth'));
    await assert.rejects(b.daemon.mesh!.blobs.fetch(hash, { hints: [liar.peerId] }), { code: 'blob_unavailable' });
    assert.equal(await b.daemon.node.blobs.has(hash), false);
    assert.deepEqual(readdirSync(path.join(b.daemon.node.blobs.root, 'incoming')), [], 'no partial file left');
    const ban = b.daemon.mesh!.guard.list().find((x) => x.peer === liar!.peerId.toString());
    assert.match(ban?.reason ?? '', /\/vmesh\/blob\/2: the bytes that came hash to sha256:[0-9a-f]{64}, not sha256:/);
  });
});
