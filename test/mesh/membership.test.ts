import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { FAST_MESH, startMeshDaemon, until, type TestDaemon } from '../helpers/mesh.ts';

describe('mesh membership on loopback', () => {
  const daemons: TestDaemon[] = [];
  after(async () => {
    for (const d of daemons) await d.remove();
  });

  it('three nodes given one bootstrap address find each other, with drivers and capacity', async () => {
    const first = await startMeshDaemon({ labels: { zone: 'a' }, location: { region: 'eu-west', latitude: 53.3, longitude: -6.3 } });
    daemons.push(first);
    const join = first.daemon.mesh!.addresses();
    assert.match(join[0]!, new RegExp(`/p2p/${first.daemon.node.id}$`));
    assert.match(first.daemon.node.id, /^12D3KooW/);
    daemons.push(await startMeshDaemon({ join }), await startMeshDaemon({ join }));
    const ids = daemons.map((d) => d.daemon.node.id);
    await until(() => daemons.every((d) => d.daemon.mesh!.nodes().length === 3), 10_000, 'every node to see the other two');
    for (const d of daemons) {
      const nodes = d.daemon.mesh!.nodes();
      assert.deepEqual(nodes.map((n) => n.id).sort(), [...ids].sort());
      for (const n of nodes.filter((x) => !x.self)) {
        assert.ok(n.advert.drivers.some((dr) => dr.name === 'wasm' && dr.available), 'drivers are advertised');
        assert.ok(n.advert.capacity.memoryMiB > 0 && n.advert.free.vcpus > 0, 'capacity is advertised');
      }
    }
    const seen = daemons[1]!.daemon.mesh!.nodes().find((n) => n.id === ids[0])!;
    assert.deepEqual(seen.advert.labels, { zone: 'a' });
    assert.equal(seen.advert.location?.region, 'eu-west');
    await until(() => daemons[1]!.daemon.mesh!.nodes().find((n) => n.id === ids[0])?.rtt !== undefined, 5000, 'a round-trip time');
  });

  it('a stopped node leaves within the TTL, and comes back with the same id', async () => {
    const [a, , c] = daemons as [TestDaemon, TestDaemon, TestDaemon];
    const id = c.daemon.node.id;
    await c.stop();
    const left = await until(() => !a.daemon.mesh!.nodes().some((n) => n.id === id), FAST_MESH.peerTtlMs + 3000, 'the stopped node to leave');
    assert.ok(left <= FAST_MESH.peerTtlMs + 1500, `left after ${Math.round(left)} ms`);
    const again = await startMeshDaemon({ join: a.daemon.mesh!.addresses() }, c.home);
    // Restarted on c's home: removing it must take that home too (c's own remove does; again's leaves a given home).
    daemons[2] = { ...again, remove: async () => (await again.remove(), await c.remove()) };
    assert.equal(again.daemon.node.id, id, 'identity.key keeps the id');
    await until(() => a.daemon.mesh!.nodes().some((n) => n.id === id), 10_000, 'the restarted node to rejoin');
  });

  it('a node with fewer than four peers that take adverts dials members it knows', async () => {
    // b and c: both joined through a, so neither keeps the other as a join peer (libp2p redials those itself).
    const [, b, c] = daemons as [TestDaemon, TestDaemon, TestDaemon];
    const [meshB, meshC] = [b.daemon.mesh!, c.daemon.mesh!];
    await until(() => meshB.host.getConnections(meshC.host.peerId).length > 0, 5000, 'b and c to be connected');
    await meshB.host.hangUp(meshC.host.peerId);
    assert.equal(meshB.host.getConnections(meshC.host.peerId).length, 0, 'cut');
    // A mesh of three: each node wants both others, and dials the one it lost within a ping round or two.
    const back = await until(() => meshB.host.getConnections(meshC.host.peerId).length > 0, 10 * FAST_MESH.pingIntervalMs, 'b and c to be connected again');
    assert.ok(back < 10 * FAST_MESH.pingIntervalMs, `connected again after ${Math.round(back)} ms`);
  });
});
