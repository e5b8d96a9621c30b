import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { VmeshClient } from '../../src/sdk/client.ts';
import type { Workload } from '../../src/spec/index.ts';
import { verifyReceipt } from '../../src/trust/receipt.ts';
import { startMeshDaemon, until, type TestDaemon } from '../helpers/mesh.ts';

const job = (extra: Partial<Workload> = {}): Workload => ({
  kind: 'function',
  source: { inline: 'export default (input) => { console.log("sum"); return { sum: input.xs.reduce((a, b) => a + b, 0) } }' },
  input: { xs: [1, 2, 3, 4] },
  ...extra,
});

describe('verification among nodes that do not trust each other', () => {
  let a: TestDaemon;
  const honest: TestDaemon[] = [];
  const liars: TestDaemon[] = [];
  let client: VmeshClient;
  before(async () => {
    a = await startMeshDaemon();
    const join = a.daemon.mesh!.addresses();
    for (let i = 0; i < 4; i++) honest.push(await startMeshDaemon({ join }));
    // Two colluding liars: started with the test-only flag, both change every result the same way and sign it.
    for (let i = 0; i < 2; i++) liars.push(await startMeshDaemon({ join }, undefined, { testing: { corruptResults: true } }));
    const all = [a, ...honest, ...liars];
    await until(() => a.daemon.mesh!.nodes().filter((n) => n.self || n.rtt !== undefined).length === all.length, 20_000, 'seven nodes seen and measured by A');
    client = new VmeshClient({ url: a.daemon.url, token: a.daemon.token });
  });
  after(async () => {
    await client?.close();
    for (const d of [a, ...honest, ...liars]) await d?.remove();
  });

  it('a liar is caught: a run on 7 nodes (5 honest, 2 colluding liars) takes the honest majority, and the liars lose reputation', async () => {
    const ids = new Set(liars.map((l) => l.daemon.node.id));
    const run = await client.run(job({ verify: { replicas: 7 } }));
    assert.equal(run.state, 'succeeded', run.reason);
    assert.deepEqual(run.result?.output, { sum: 10 }, 'the honest result won');
    assert.equal(run.result?.stdout.text, 'sum\n');
    const v = run.verification!;
    assert.equal(v.verdict, 'majority');
    assert.equal(v.runs.length, 7);
    assert.deepEqual(new Set(v.runs.filter((r) => !r.agreed).map((r) => r.node)), ids, 'exactly the liars dissent');
    assert.equal(new Set(v.runs.filter((r) => r.agreed).map((r) => r.resultHash)).size, 1);
    const receipt = await verifyReceipt(run.receipt!);
    assert.equal(receipt.resultHash, v.resultHash, 'the run carries the receipt of a replica that agreed');
    assert.ok(!ids.has(receipt.node), '!ids.has(receipt.node)');
    // Each replica is a run of its own on A, on its own node.
    for (const r of v.runs) assert.equal(a.daemon.node.getRun(r.run).nodeId, r.node);
    for (const l of liars) {
      await until(() => a.daemon.node.reputation.score(l.daemon.node.id) < 0.2, 5000, 'the liar below the least reputation');
      assert.equal(a.daemon.node.reputation.get(l.daemon.node.id).counts.mismatch, 1);
    }
    for (const h of honest) assert.ok(a.daemon.node.reputation.score(h.daemon.node.id) > 0.5, 'a.daemon.node.reputation.score(h.daemon.node.id) > 0.5');
    assert.match(await (await fetch(`${a.daemon.url}/metrics`)).text(), /^vmesh_verifications_total\{mode="replicas",verdict="majority"\} 1$/m);
  });

  it('then the liars receive no work: placement rejects them on reputation, and a run on 5 nodes is unanimous', async () => {
    const e = await client.explainPlacement(job());
    for (const l of liars) {
      const v = e.candidates.find((c) => c.node === l.daemon.node.id)!;
      assert.equal(v.eligible, false);
      assert.equal(v.filters.find((f) => !f.pass)?.filter, 'reputation');
    }
    const run = await client.run(job({ verify: { replicas: 5 } }));
    assert.equal(run.verification?.verdict, 'unanimous');
    const used = new Set(run.verification!.runs.map((r) => r.node));
    for (const l of liars) assert.ok(!used.has(l.daemon.node.id), '!used.has(l.daemon.node.id)');
    // Six replicas cannot be had without a liar: refused up front, naming the field.
    await assert.rejects(client.run(job({ verify: { replicas: 6 } })), /verify.replicas: 6 distinct nodes asked, 5 fit now/);
  });

  it('a single liar asked alone is caught by its receipt no more than by its result: only verification exposes it', async () => {
    // Its receipt is validly signed over its own lie, so the run succeeds on it; nothing but another node's result can show the lie.
    const liar = liars[0]!.daemon.node.id;
    const run = await client.run(job({ placement: { node: liar } }));
    assert.equal(run.state, 'succeeded');
    assert.deepEqual(run.result?.output, { dishonest: { sum: 10 } });
    assert.equal((await verifyReceipt(run.receipt!)).node, liar);
  });
});

describe('spot checks: new and little-trusted nodes are checked, and a lie never wins', () => {
  let a: TestDaemon;
  const workers: TestDaemon[] = [];
  let client: VmeshClient;
  before(async () => {
    a = await startMeshDaemon();
    const join = a.daemon.mesh!.addresses();
    for (let i = 0; i < 2; i++) workers.push(await startMeshDaemon({ join, labels: { role: 'worker' } }));
    workers.push(await startMeshDaemon({ join, labels: { role: 'worker' } }, undefined, { testing: { corruptResults: true } }));
    await until(() => a.daemon.mesh!.nodes().filter((n) => n.self || n.rtt !== undefined).length === 4, 20_000, 'four nodes seen and measured by A');
    client = new VmeshClient({ url: a.daemon.url, token: a.daemon.token });
  });
  after(async () => {
    await client?.close();
    for (const d of [a, ...workers]) await d?.remove();
  });

  it('a run on a new node is always checked on a second; a disagreement is settled by a third; the lie never wins and the liar falls', async () => {
    const liar = workers[2]!.daemon.node.id;
    // Scores by the tie-break alone (every weight 0), so that any worker may be chosen first whatever its record.
    const work = job({ verify: { spotCheck: true }, placement: { labels: { role: 'worker' }, weights: { resources: 0, proximity: 0, reputation: 0, load: 0 } } });
    const seen: string[] = [];
    for (let i = 0; i < 30 && a.daemon.node.reputation.score(liar) >= 0.2; i++) {
      const run = await client.run(work);
      assert.equal(run.state, 'succeeded', run.reason);
      assert.deepEqual(run.result?.output, { sum: 10 }, 'the lie never wins');
      const v = run.verification!;
      assert.equal(v.mode, 'spot-check');
      if (i === 0) assert.equal(v.rate, 1, 'the first node chosen was new: always checked');
      assert.ok(v.rate! >= 0.05 && v.rate! <= 1, String(v.rate));
      if (v.runs.some((r) => r.node === liar)) {
        assert.equal(v.replicas, 3, 'the disagreement of two was settled by a third');
        assert.equal(v.verdict, 'majority');
        assert.equal(v.runs.find((r) => r.node === liar)?.agreed, false);
      } else assert.equal(v.verdict, 'unanimous');
      seen.push(`${v.replicas}:${v.verdict}`);
    }
    assert.ok(a.daemon.node.reputation.score(liar) < 0.2, `the liar was caught within 30 runs (${seen.join(', ')})`);
    const e = await client.explainPlacement(work);
    assert.equal(e.candidates.find((c) => c.node === liar)?.filters.find((f) => !f.pass)?.filter, 'reputation');
    await assert.rejects(client.run(job({ verify: { replicas: 2, spotCheck: true } })), /verify: give either replicas/);
  });
});
