import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { startMeshDaemon, until, type TestDaemon } from '../helpers/mesh.ts';

/** Regular adverts a minute apart: what happens within a test is not the once-an-interval upkeep. */
const QUIET = { advertIntervalMs: 60_000, peerTtlMs: 180_000 };

describe('a node left without peers', () => {
  const daemons: TestDaemon[] = [];
  after(async () => {
    for (const d of daemons) await d.remove();
  });

  it('dials its join list again within seconds, not at the next advert interval', async () => {
    // a's address is known (its identity and port), but a is down when b starts: b's first dial fails.
    const first = await startMeshDaemon(QUIET);
    const address = first.daemon.mesh!.addresses()[0]!;
    const port = Number(/\/tcp\/(\d+)\//.exec(address)![1]);
    await first.stop();
    const b = await startMeshDaemon({ ...QUIET, join: [address] });
    daemons.push(b);
    await new Promise((r) => setTimeout(r, 2500));
    assert.equal(b.daemon.mesh!.host.getPeers().length, 0, 'b is alone while a is down');
    const a = await startMeshDaemon({ ...QUIET, listen: [`/ip4/127.0.0.1/tcp/${port}`] }, first.home);
    daemons.push(a);
    assert.equal(a.daemon.mesh!.addresses()[0], address, 'a is back at the same address');
    // b dials 1, 3 and 7 s after it started, and finds a at one of the later two.
    const took = await until(() => b.daemon.mesh!.membership.get(a.daemon.node.id) !== undefined, 15_000, 'b to join a');
    assert.ok(took < 8000, `b joined ${Math.round(took)} ms after a came back`);
  });
});
