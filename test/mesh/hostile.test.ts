import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { generateKeyPair } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { multiaddr } from '@multiformats/multiaddr';
import { ADVERT_TOPIC, sealAdvert } from '../../src/mesh/adverts.ts';
import { BLOB_PROTOCOL } from '../../src/mesh/blob-exchange.ts';
import { JsonFrames } from '../../src/mesh/frames.ts';
import { ADVERT_FORMAT } from '../../src/spec/index.ts';
import { seal } from '../../src/trust/envelope.ts';
import type { MeshHost } from '../../src/mesh/host.ts';
import { bareMeshHost, startMeshDaemon, until, type TestDaemon } from '../helpers/mesh.ts';

/** A stranger that publishes whatever the test gives it. */
async function rogue(): Promise<{ host: MeshHost; key: PrivateKey; id: string }> {
  const key = await generateKeyPair('Ed25519');
  const host = await bareMeshHost(key);
  host.services.pubsub.subscribe(ADVERT_TOPIC);
  return { host, key, id: host.peerId.toString() };
}

/** One length-prefixed frame (unsigned varint length, then the bytes). */
function frame(bytes: Uint8Array): Uint8Array {
  const len: number[] = [];
  let n = bytes.byteLength;
  do {
    len.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
    n >>>= 7;
  } while (n > 0);
  return Uint8Array.from([...len, ...bytes]);
}

async function retry<T>(fn: () => Promise<T>, ms: number): Promise<T> {
  const deadline = performance.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (performance.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

describe('hostile peers', () => {
  let node: TestDaemon;
  const rogues: MeshHost[] = [];
  after(async () => {
    for (const r of rogues) await r.stop();
    await node?.remove();
  });

  async function banned(publish: (host: MeshHost, key: PrivateKey) => Uint8Array | Promise<Uint8Array>, reason: RegExp): Promise<void> {
    const r = await rogue();
    rogues.push(r.host);
    // libp2p takes at most a few new connections per second from one address: all these peers are on loopback.
    await retry(() => r.host.dial(multiaddr(node.daemon.mesh!.addresses()[0]!)), 5000);
    const mesh = node.daemon.mesh!;
    await until(() => r.host.services.pubsub.getSubscribers(ADVERT_TOPIC).length > 0, 5000, 'the node to show its subscription');
    const data = await publish(r.host, r.key);
    await r.host.services.pubsub.publish(ADVERT_TOPIC, data);
    await until(() => mesh.guard.list().some((b) => b.peer === r.id), 5000, 'the rogue to be banned');
    const offence = mesh.guard.list().find((b) => b.peer === r.id)!;
    assert.match(offence.reason, reason);
    await until(() => r.host.getConnections().length === 0, 5000, 'the rogue to be disconnected');
    // A banned peer that dials again is cut off as soon as the node learns who it is.
    await r.host.dial(multiaddr(mesh.addresses()[0]!)).catch(() => undefined);
    await until(() => mesh.host.getConnections(r.host.peerId).length === 0 && r.host.getConnections().length === 0, 5000, 'the second connection to be refused');
    assert.equal(mesh.nodes().some((n) => n.id === r.id), false, 'nothing it said entered the membership');
  }

  it('disconnects and refuses a peer that publishes garbage, a forged advert or an oversized one', async () => {
    node = await startMeshDaemon();
    await banned(() => new TextEncoder().encode('not json at all'), /bad advert: envelope: not JSON/);
    // An advert that claims to come from the node itself, signed with the rogue's own key.
    await banned(async (host, key) => {
      const advert = { ...node.daemon.mesh!.advert(), addresses: [`/ip4/127.0.0.1/tcp/9/p2p/${host.peerId.toString()}`] };
      return new TextEncoder().encode(JSON.stringify(await seal(key, host.peerId.toString(), ADVERT_FORMAT, advert)));
    }, /advert\.node: .* is not its signer/);
    // A signature that does not match the payload.
    await banned(async (host) => {
      const advert = { ...node.daemon.mesh!.advert(), node: host.peerId.toString() };
      const sealed = JSON.parse(new TextDecoder().decode(await sealAdvert((await generateKeyPair('Ed25519')), advert))) as { signer: string };
      sealed.signer = host.peerId.toString();
      return new TextEncoder().encode(JSON.stringify(sealed));
    }, /signature: does not verify/);
    await banned(() => new TextEncoder().encode(JSON.stringify({ signer: 'x', payload: 'y'.repeat(40_000), signature: '' })), /more than the 32768 allowed/);
    // The node still works: its own view and its API are fine.
    assert.equal(node.daemon.mesh!.nodes()[0]!.self, true);
    assert.equal(node.daemon.mesh!.guard.list().length, 4);
  });

  it('disconnects and refuses a peer that sends oversized or malformed frames on a request protocol', async () => {
    const mesh = node.daemon.mesh!;
    const cases: Array<[Uint8Array, RegExp]> = [
      [frame(new Uint8Array(300_000)), /\/vmesh\/blob\/2: a frame over 1024 bytes/],
      [frame(new Uint8Array(2000).fill(0x20)), /a frame of 2000 bytes where at most 1024 belong/],
      [frame(new TextEncoder().encode('{"hash": ')), /a frame that is not JSON/],
      [frame(new TextEncoder().encode('{"hash": "md5:abc"}')), /request\.hash: must match pattern/],
    ];
    for (const [bytes, reason] of cases) {
      const r = await rogue();
      rogues.push(r.host);
      await retry(() => r.host.dial(multiaddr(mesh.addresses()[0]!)), 5000);
      const stream = await r.host.dialProtocol(mesh.host.peerId, BLOB_PROTOCOL);
      stream.send(bytes);
      await until(() => mesh.guard.list().some((b) => b.peer === r.id), 5000, `a ban for ${reason}`);
      assert.match(mesh.guard.list().find((b) => b.peer === r.id)!.reason, reason);
      await until(() => r.host.getConnections().length === 0, 5000, 'the rogue to be disconnected');
    }
    // An honest client still gets an answer.
    const honest = await rogue();
    rogues.push(honest.host);
    await retry(() => honest.host.dial(multiaddr(mesh.addresses()[0]!)), 5000);
    const frames = new JsonFrames(await honest.host.dialProtocol(mesh.host.peerId, BLOB_PROTOCOL), 1024);
    await frames.write({ hash: `sha256:${'0'.repeat(64)}` });
    const answer = (await frames.read((v) => v)) as { ok: boolean; code: string };
    assert.deepEqual([answer.ok, answer.code], [false, 'not_found']);
  });
});
