import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { until } from '../helpers/mesh.ts';
import { Hosts, hostsSkip } from './harness.ts';

const skip = hostsSkip();
const TTL_MS = 3000;

describe('a mesh of five hosts in network namespaces', { skip }, () => {
  let net: Hosts;
  before(async () => {
    net = await Hosts.create({
      tag: 'msh',
      subnet: '10.230.0',
      count: 5,
      delayable: [4],
      config: { mesh: { advertIntervalMs: 500, peerTtlMs: TTL_MS, pingIntervalMs: 300 }, network: { range: '10.231.0.0/24' } },
    });
    const first = await net.start(0);
    await Promise.all([1, 2, 3, 4].map((i) => net.start(i, [first.meshAddress])));
  });
  after(async () => {
    await net?.remove();
  });

  it('five nodes given one bootstrap address form one mesh; each lists the other four with drivers and capacity', async (t) => {
    const ids = net.hosts.map((h) => h.id);
    const formed = await until(async () => (await Promise.all(net.hosts.map(async (h) => (await h.client.nodes()).nodes.length))).every((n) => n === 5), 15_000, 'every node to list five');
    t.diagnostic(`all five listed five nodes ${Math.round(formed)} ms after the last one answered`);
    for (const h of net.hosts) {
      const view = await h.client.nodes();
      assert.deepEqual(view.nodes.map((n) => n.id).sort(), [...ids].sort());
      for (const n of view.nodes.filter((x) => !x.self)) {
        assert.ok(n.advert.drivers.some((d) => d.name === 'wasm' && d.available), `${h.index} sees the drivers of ${n.id}`);
        assert.ok(n.advert.capacity.vcpus > 0 && n.advert.capacity.memoryMiB > 0, 'and its capacity');
        assert.ok(n.advert.addresses.some((a) => a.startsWith('/ip4/10.230.0.')), 'and its address on the host network');
      }
    }
  });

  it('a run submitted on A with placement.node = C executes on C and returns to A', async () => {
    const [a, , c] = net.hosts as [(typeof net.hosts)[0], unknown, (typeof net.hosts)[0]];
    const run = await a.client.run({ kind: 'function', source: { inline: 'export default () => { console.log("on C"); return 7 * 6 }' }, placement: { node: c.id } });
    assert.equal(run.state, 'succeeded', run.reason);
    assert.equal(run.nodeId, c.id);
    assert.equal(run.result?.output, 42);
    assert.equal(run.result?.stdout.text, 'on C\n');
    const onC = await c.client.getRun(run.id);
    assert.equal(onC.state, 'succeeded', 'C stored the run it executed');
  });

  it('80 ms of delay on a host shows in the RTT the others measure to it, within 20%', async (t) => {
    const far = net.hosts[4]!;
    await net.delay(4, 80);
    const observer = net.hosts[1]!;
    // The EWMA needs a few samples to forget the fast ones: wait for it to settle near the new value.
    await until(async () => {
      const rtt = (await observer.client.nodes()).nodes.find((n) => n.id === far.id)?.rtt;
      return rtt !== undefined && rtt.lastMs >= 80 && rtt.rttMs >= 70;
    }, 15_000, 'the delay to show');
    // Ten more samples (ping every 300 ms) leave under 6% of the old value in the EWMA.
    await new Promise((r) => setTimeout(r, 3000));
    // The delay shows in each observer's RTT to host 4; its RTT to an undelayed host stays far below.
    // A loaded machine only ever adds to a round trip, so each estimate is read five times, 400 ms
    // apart, and the lowest reading is the one judged.
    const readings = new Map<number, { far: number; near: number }>();
    for (let round = 0; round < 5; round++) {
      for (const h of net.hosts.slice(0, 4)) {
        const view = (await h.client.nodes()).nodes;
        const far = view.find((n) => n.id === net.hosts[4]!.id)?.rtt?.rttMs ?? Infinity;
        const near = view.find((n) => n.id === net.hosts[(h.index + 1) % 4]!.id)?.rtt?.rttMs ?? Infinity;
        const held = readings.get(h.index);
        readings.set(h.index, { far: Math.min(far, held?.far ?? Infinity), near: Math.min(near, held?.near ?? Infinity) });
      }
      await new Promise((r) => setTimeout(r, 400));
    }
    for (const [index, { far, near }] of readings) {
      t.diagnostic(`host ${index}: ${far.toFixed(1)} ms to host 4, ${near.toFixed(1)} ms to host ${(index + 1) % 4} (lowest of 5 readings)`);
      assert.ok(Math.abs(far - 80) <= 16, `host ${index} measures ${far.toFixed(1)} ms to host 4 (80 ms ± 20%)`);
      assert.ok(near < far / 2, `host ${index} measures the undelayed host ${(index + 1) % 4} as near (${near.toFixed(1)} ms)`);
    }
  });

  it('a killed node leaves every membership within the TTL; restarted, it rejoins with the same id', async (t) => {
    const victim = net.hosts[3]!;
    const id = victim.id;
    await net.kill(3);
    const others = net.hosts.filter((h) => h.index !== 3);
    const took = await until(
      async () => (await Promise.all(others.map(async (h) => (await h.client.nodes()).nodes.some((n) => n.id === id)))).every((seen) => !seen),
      TTL_MS + 5000,
      'every node to drop the killed one',
    );
    assert.ok(took <= TTL_MS + 2000, `dropped after ${Math.round(took)} ms (TTL ${TTL_MS} ms)`);
    t.diagnostic(`every node dropped the killed one ${Math.round(took)} ms after the kill (TTL ${TTL_MS} ms)`);
    const again = await net.start(3, [net.hosts[0]!.meshAddress]);
    assert.equal(again.id, id, 'the same identity after a restart');
    await until(async () => (await Promise.all(others.map(async (h) => (await h.client.nodes()).nodes.some((n) => n.id === id)))).every(Boolean), 15_000, 'every node to list it again');
  });

  it('a cut link drops the host from the others; restored, it comes back', async () => {
    const cut = net.hosts[2]!;
    await net.link(2, false);
    const observer = net.hosts[0]!;
    await until(async () => !(await observer.client.nodes()).nodes.some((n) => n.id === cut.id), TTL_MS + 5000, 'the cut host to leave');
    await net.link(2, true);
    await until(async () => (await observer.client.nodes()).nodes.some((n) => n.id === cut.id), 20_000, 'the cut host to return');
  });
});
