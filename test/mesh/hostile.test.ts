import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import { ADVERT_TOPIC, sealAdvert } from '../../src/mesh/adverts.ts';
import { createMeshHost, type MeshHost } from '../../src/mesh/host.ts';
import { loadConfig } from '../../src/node/config.ts';
import { startMeshDaemon, until, type TestDaemon } from '../helpers/mesh.ts';
import { tempDir } from '../helpers/tmp.ts';

/** A bare libp2p peer speaking vmesh's transports, which publishes whatever the test gives it. */
async function rogue(): Promise<{ host: MeshHost; id: string }> {
  const key = await generateKeyPair('Ed25519');
  const tmp = tempDir('vmesh-rogue-');
  const config = loadConfig(tmp.dir, { mesh: { listen: ['/ip4/127.0.0.1/tcp/0'] } }).mesh;
  tmp.remove();
  const host = await createMeshHost(key, config, {});
  host.services.pubsub.subscribe(ADVERT_TOPIC);
  return { host, id: peerIdFromPrivateKey(key).toString() };
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

  async function banned(publish: (host: MeshHost) => Uint8Array | Promise<Uint8Array>, reason: RegExp): Promise<void> {
    const r = await rogue();
    rogues.push(r.host);
    // libp2p takes at most a few new connections per second from one address: all these peers are on loopback.
    await retry(() => r.host.dial(multiaddr(node.daemon.mesh!.addresses()[0]!)), 5000);
    const mesh = node.daemon.mesh!;
    await until(() => r.host.services.pubsub.getSubscribers(ADVERT_TOPIC).length > 0, 5000, 'the node to show its subscription');
    const data = await publish(r.host);
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
    // An advert about another node, signed by that node's key but published by the rogue.
    const other = await generateKeyPair('Ed25519');
    const otherId = peerIdFromPrivateKey(other).toString();
    await banned(async () => {
      const advert = { ...node.daemon.mesh!.advert(), node: otherId };
      return sealAdvert(other, advert);
    }, /signed by .* but published by/);
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
});
