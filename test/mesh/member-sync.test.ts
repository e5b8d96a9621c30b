import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { multiaddr } from '@multiformats/multiaddr';
import { sealAdvert } from '../../src/mesh/adverts.ts';
import { JsonFrames } from '../../src/mesh/frames.ts';
import type { MeshHost } from '../../src/mesh/host.ts';
import { MEMBERS_PROTOCOL } from '../../src/mesh/member-sync.ts';
import { bareMeshHost, startMeshDaemon, until, type TestDaemon } from '../helpers/mesh.ts';

/** Regular adverts a minute apart: within a test, a node's advert reaches another only when it joins. */
const QUIET = { advertIntervalMs: 60_000, peerTtlMs: 180_000 };

describe('a node that joins takes the adverts its join peer holds (/vmesh/members/1)', () => {
  const daemons: TestDaemon[] = [];
  const strangers: MeshHost[] = [];
  after(async () => {
    for (const s of strangers) await s.stop();
    for (const d of daemons) await d.remove();
  });

  it('knows the whole mesh at once, without waiting for anyone to advertise again', async () => {
    const a = await startMeshDaemon(QUIET);
    daemons.push(a);
    const join = a.daemon.mesh!.addresses();
    const b = await startMeshDaemon({ ...QUIET, join });
    daemons.push(b);
    await until(() => a.daemon.mesh!.membership.size === 1 && b.daemon.mesh!.membership.size === 1, 10_000, 'a and b to know each other');
    const c = await startMeshDaemon({ ...QUIET, join });
    daemons.push(c);
    const all = daemons.map((d) => d.daemon.node.id).sort();
    // Neither a nor b advertises again within the minute: c can only have their adverts from a's table.
    await until(() => c.daemon.mesh!.nodes().length === 3, 10_000, 'c to list a and b');
    assert.deepEqual(c.daemon.mesh!.nodes().map((n) => n.id).sort(), all);
    const bSeenByC = c.daemon.mesh!.membership.get(b.daemon.node.id)!;
    assert.ok(bSeenByC.lastAdvertAt < bSeenByC.firstSeenAt, 'b\'s advert is dated when b sent it, not when c was handed it');
    // And c's own advert, sent once it knew a subscriber, reaches the others.
    await until(() => daemons.every((d) => d.daemon.mesh!.nodes().length === 3), 10_000, 'a and b to list c');
  });

  it('refuses and disconnects a peer that hands on an advert its signer did not make', async () => {
    const node = daemons[0]!;
    const mesh = node.daemon.mesh!;
    const key = await generateKeyPair('Ed25519');
    const liar = await bareMeshHost(key);
    strangers.push(liar);
    // Another node's advert with the liar's signature: it does not check for the node it names.
    const forged = await sealAdvert(key, { ...mesh.advert(), node: daemons[1]!.daemon.node.id });
    await liar.handle(MEMBERS_PROTOCOL, async (stream) => {
      const frames = new JsonFrames(stream, 1 << 16);
      await frames.write({ count: 1 });
      await frames.write({ ageMs: 0, advert: new TextDecoder().decode(forged) });
      await stream.close();
    });
    // The node has asked a peer within the last advert interval (a minute): a fresh node asks the liar.
    const fresh = await startMeshDaemon({ ...QUIET, join: [] });
    daemons.push(fresh);
    await liar.dial(multiaddr(fresh.daemon.mesh!.addresses()[0]!));
    await until(() => fresh.daemon.mesh!.guard.list().some((o) => o.peer === liar.peerId.toString()), 5000, 'the liar to be refused');
    assert.match(fresh.daemon.mesh!.guard.list()[0]!.reason, /\/vmesh\/members\/1: handed on a bad advert: envelope\.signature: does not verify/);
    await until(() => liar.getConnections().length === 0, 5000, 'the liar to be disconnected');
    assert.equal(fresh.daemon.mesh!.membership.size, 0, 'nothing the liar handed on was taken');
  });
});
