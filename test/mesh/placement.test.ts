import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ApiError, VmeshClient } from '../../src/sdk/client.ts';
import type { Workload } from '../../src/spec/index.ts';
import { verifyReceipt } from '../../src/trust/receipt.ts';
import { startMeshDaemon, until, type TestDaemon } from '../helpers/mesh.ts';

const js = (code: string, extra: Partial<Workload> = {}): Workload => ({ kind: 'function', source: { inline: code }, ...extra });

describe('placement across a mesh', () => {
  let a: TestDaemon, b: TestDaemon, c: TestDaemon;
  let client: VmeshClient;
  before(async () => {
    const trust = { reportIntervalMs: 500 };
    a = await startMeshDaemon({ labels: { zone: 'a' } }, undefined, { trust });
    const join = a.daemon.mesh!.addresses();
    b = await startMeshDaemon({ join, labels: { zone: 'b' }, location: { region: 'eu-west' } }, undefined, { trust });
    c = await startMeshDaemon({ join, labels: { zone: 'c' } }, undefined, { capacity: { memoryMiB: 128 }, trust });
    await until(() => [a, b, c].every((d) => d.daemon.mesh!.nodes().filter((n) => n.rtt !== undefined || n.self).length === 3), 15_000, 'three nodes that measured each other');
    client = new VmeshClient({ url: a.daemon.url, token: a.daemon.token });
  });
  after(async () => {
    await client?.close();
    for (const d of [a, b, c]) await d?.remove();
  });

  it('a run without hints stays on the node asked (it is nearest to itself), with a receipt it signed', async () => {
    const run = await client.run(js('export default () => 7'));
    assert.equal(run.state, 'succeeded', run.reason);
    assert.equal(run.nodeId, a.daemon.node.id);
    assert.equal(run.placement?.node, a.daemon.node.id);
    const receipt = await verifyReceipt(run.receipt!);
    assert.equal(receipt.node, a.daemon.node.id);
    assert.equal(receipt.run, run.id);
    assert.equal(receipt.state, 'succeeded');
  });

  it('labels send a run to the node that has them; its receipt is signed by that node and checked by the requester', async () => {
    const run = await client.run(js('export default () => ({ where: "b" })', { placement: { labels: { zone: 'b' } } }));
    assert.equal(run.state, 'succeeded', run.reason);
    assert.equal(run.nodeId, b.daemon.node.id);
    assert.deepEqual(run.result?.output, { where: 'b' });
    const receipt = await verifyReceipt(run.receipt!);
    assert.equal(receipt.node, b.daemon.node.id);
    assert.equal(receipt.requester, a.daemon.node.id);
    assert.equal(b.daemon.node.getRun(run.id).state, 'succeeded', 'B ran it');
    assert.match(await (await fetch(`${a.daemon.url}/metrics`)).text(), /^vmesh_placements_total\{target="peer"\} [1-9]/m);
    // A saw B succeed: its reputation of B moved above a stranger's.
    await a.daemon.node.settled(run.id);
    const rep = a.daemon.node.reputation.get(b.daemon.node.id);
    assert.ok(rep.score > 0.5 && rep.counts.succeeded! >= 1, JSON.stringify(rep));
  });

  it('a node without room in all is never chosen; region hints are honoured', async () => {
    for (let i = 0; i < 4; i++) {
      const run = await client.run(js('export default () => 1', { resources: { memoryMiB: 200 }, placement: { excludeRegions: ['eu-west'] } }), { wait: false });
      assert.notEqual(run.nodeId, c.daemon.node.id, 'C has 128 MiB in all');
      assert.notEqual(run.nodeId, b.daemon.node.id, 'B is in an excluded region');
    }
    const run = await client.run(js('export default () => 1', { placement: { regions: ['eu-west'] } }));
    assert.equal(run.nodeId, b.daemon.node.id);
  });

  it('a dry run lists every node with every filter verdict and every score term, and creates nothing', async () => {
    const before = a.daemon.node.listRuns().length;
    const e = await client.explainPlacement(js('export default () => 1', { resources: { memoryMiB: 200 }, placement: { labels: { zone: 'b' } } }));
    assert.equal(e.chosen, b.daemon.node.id);
    assert.equal(e.candidates.length, 3);
    for (const v of e.candidates) assert.equal(v.filters.length, 8);
    const byNode = Object.fromEntries(e.candidates.map((v) => [v.node, v]));
    assert.equal(byNode[a.daemon.node.id]!.filters.find((f) => !f.pass)?.filter, 'labels');
    assert.equal(byNode[c.daemon.node.id]!.filters.find((f) => !f.pass)?.filter, 'labels');
    assert.ok(byNode[c.daemon.node.id]!.filters.find((f) => f.filter === 'capacity' && !f.pass), 'C fails capacity too');
    const chosen = byNode[b.daemon.node.id]!;
    assert.equal(chosen.rank, 1);
    assert.equal(chosen.rtt.source, 'measured');
    assert.ok(chosen.terms !== undefined && chosen.score! > 0, 'chosen.terms !== undefined && chosen.score! > 0');
    assert.match(e.summary, /^1 node of 3 fit; 2 lack the labels zone=b$/);
    assert.equal(a.daemon.node.listRuns().length, before, 'nothing was run');
  });

  it('?explain=true keeps the explanation with the run', async () => {
    const run = await client.run(js('export default () => 1'), { explain: true });
    assert.equal(run.placement?.explanation?.chosen, run.nodeId);
    assert.equal(run.placement?.explanation?.candidates.length, 3);
    assert.deepEqual(a.daemon.node.getRun(run.id).placement, run.placement, 'stored as returned');
  });

  it('signed reputation reports travel: A counts what B (which A trusts) saw of C, before A ever ran anything on C', async () => {
    const bClient = new VmeshClient({ url: b.daemon.url, token: b.daemon.token });
    try {
      for (let i = 0; i < 3; i++) assert.equal((await bClient.run(js('export default () => 1', { placement: { node: c.daemon.node.id } }))).state, 'succeeded');
    } finally {
      await bClient.close();
    }
    for (let i = 0; i < 3; i++) await client.run(js('export default () => 1', { placement: { node: b.daemon.node.id } }));
    const view = await until(
      async () => ((await client.nodes()).nodes.find((n) => n.id === c.daemon.node.id)?.reputation.reports.counted ?? 0) > 0,
      10_000,
      "B's report about C to reach A",
    ).then(() => client.nodes());
    const onC = view.nodes.find((n) => n.id === c.daemon.node.id)!.reputation;
    assert.equal(onC.local, 0.5, 'A has seen nothing of C itself');
    assert.ok(onC.score > 0.5 && onC.reports.good > 0, JSON.stringify(onC));
  });

  it('when no node has room free, the run waits in the queue of one that has it in all, its position visible where it was asked', async () => {
    const nodes = [a, b, c].map((d) => d.daemon.node.id);
    const vcpus = a.daemon.node.ledger.capacity.vcpus;
    const spin = (node: string) => js('export default () => { for (;;) {} }', { resources: { vcpus, memoryMiB: 64, timeoutMs: 5000 }, placement: { node } });
    const spinners = await Promise.all(nodes.map((n) => client.run(spin(n), { wait: false })));
    await until(async () => (await client.nodes()).nodes.every((n) => n.advert.free.vcpus < vcpus), 5000, 'every advert to show the vCPUs taken');
    const full = js('export default () => "at last"', { resources: { vcpus, memoryMiB: 64 } });
    const waiting = await client.run(full, { wait: false });
    assert.equal(waiting.placement?.queued, true, JSON.stringify(waiting.placement));
    assert.equal(waiting.state, 'queued');
    await until(async () => (await client.getRun(waiting.id)).queuePosition === 1, 5000, 'its queue position on A');
    const impatient = await client.run({ ...full, placement: { queueTimeoutMs: 300 } });
    assert.equal(impatient.state, 'failed');
    assert.match(impatient.reason ?? '', /waited 300 ms in the queue without room/);
    await until(async () => ['succeeded', 'failed'].includes((await client.getRun(waiting.id)).state), 15_000, 'the queued run to run');
    const done = await client.getRun(waiting.id);
    assert.equal(done.state, 'succeeded', done.reason);
    assert.equal(done.result?.output, 'at last');
    for (const s of spinners) await until(async () => (await client.getRun(s.id)).state === 'timeout', 10_000, 'the spinners to time out');
  });

  it('no node fits: 422 no_node_fits names what excluded how many nodes', async () => {
    await assert.rejects(
      client.run(js('export default () => 1', { resources: { memoryMiB: 4_000_000 } })),
      (err: ApiError) => {
        assert.equal(err.status, 422);
        assert.equal(err.code, 'no_node_fits');
        assert.match(err.message, /no node fits this function run: of 3 nodes, 3 have the driver but not 4000000 MiB memory in all; the most is \d+ MiB memory on /);
        return true;
      },
    );
    await assert.rejects(client.run(js('export default () => 1', { placement: { labels: { gpu: 'h100' } } })), /3 lack the labels gpu=h100/);
  });
});
