import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { LogEvent } from '../../src/sdk/client.ts';
import type { Workload } from '../../src/spec/index.ts';
import { until } from '../helpers/mesh.ts';
import { Hosts, hostsSkip, type Host } from './harness.ts';

const skip = hostsSkip();

/** Prints a line, then works for about `ms` of wall time, then returns where it ran. */
const slow = (ms: number): Workload => ({
  kind: 'function',
  source: { inline: `export default () => { console.log('started'); const end = Date.now() + ${ms}; while (Date.now() < end) {} return { done: true } }` },
  placement: { labels: { role: 'worker' } },
});

describe('failover: a run whose node is lost is placed again', { skip }, () => {
  let net: Hosts;
  let a: Host;
  before(async () => {
    net = await Hosts.create({
      tag: 'fov',
      subnet: '10.236.0',
      count: 4,
      config: {
        mesh: { advertIntervalMs: 500, peerTtlMs: 3000, pingIntervalMs: 300 },
        network: { range: '10.237.0.0/24' },
        placement: { heartbeatMs: 300, heartbeatTimeoutMs: 3000, backoffMs: 200, attempts: 3 },
      },
    });
    a = await net.start(0);
    await Promise.all([1, 2, 3].map((i) => net.start(i, [a.meshAddress], ['--label', 'role=worker'])));
    await until(async () => (await a.client.nodes()).nodes.filter((n) => n.self || n.rtt !== undefined).length === 4, 20_000, 'A to see and measure all four');
  });
  after(async () => {
    await net?.remove();
  });

  const hostOf = (id: string) => net.hosts.find((h) => h.id === id)!;

  it('killing the executing node mid-run: the run completes on another node, one outcome, both attempts in its history', async () => {
    const { id, nodeId: first } = await a.client.run(slow(4000), { wait: false });
    await until(async () => (await a.client.getRun(id)).state === 'running', 15_000, 'the run to be running');
    const victim = hostOf(first);
    assert.notEqual(victim.index, 0, 'placed on a worker');
    await net.kill(victim.index);
    const ended = await until(async () => ['succeeded', 'failed'].includes((await a.client.getRun(id)).state), 40_000, 'the run to end').then(() => a.client.getRun(id));
    assert.equal(ended.state, 'succeeded', ended.reason);
    assert.notEqual(ended.nodeId, first, 'it ended on another node');
    assert.deepEqual(ended.result?.output, { done: true });
    assert.equal(ended.attempts?.length, 2);
    assert.equal(ended.attempts![0]!.node, first);
    assert.equal(ended.attempts![0]!.outcome, 'lost');
    assert.equal(ended.attempts![1]!.node, ended.nodeId);
    assert.equal(ended.attempts![1]!.outcome, 'succeeded');
    // Exactly one outcome: the log stream has one terminal state, and the second node's receipt is the run's.
    const states: string[] = [];
    for await (const e of a.client.logs(id, { follow: false })) if ((e as LogEvent).event === 'state') states.push((e as { state: string }).state);
    assert.equal(states.filter((s) => ['succeeded', 'failed', 'cancelled', 'timeout', 'oom', 'lost'].includes(s)).length, 1, states.join(','));
    assert.equal(JSON.parse(ended.receipt!.payload).node, ended.nodeId);
    const rep = (await a.client.nodes()).nodes.find((n) => n.id === ended.nodeId)!.reputation;
    assert.ok(rep.counts.succeeded! >= 1, 'rep.counts.succeeded! >= 1');
  });

  it('a node that stops answering (its link cut) misses its heartbeats for 3 s, and the run moves on; the late node never ends it twice', async () => {
    const { id, nodeId: first } = await a.client.run(slow(5000), { wait: false });
    await until(async () => (await a.client.getRun(id)).state === 'running', 15_000, 'the run to be running');
    const silent = hostOf(first);
    await net.link(silent.index, false);
    try {
      await until(async () => ['succeeded', 'failed'].includes((await a.client.getRun(id)).state), 40_000, 'the run to end');
    } finally {
      await net.link(silent.index, true);
    }
    const ended = await a.client.getRun(id);
    assert.equal(ended.state, 'succeeded', ended.reason);
    assert.notEqual(ended.nodeId, first);
    assert.match(ended.attempts![0]!.reason ?? '', /no word from node .* for 3000 ms/);
    // The cut-off node's own run is over too (cancelled when it found its requester gone, or finished), and A's run stays as it ended.
    await until(async () => ['succeeded', 'cancelled', 'failed'].includes((await silent.client.getRun(id)).state), 30_000, 'the silent node to end its copy');
    await new Promise((r) => setTimeout(r, 1000));
    const again = await a.client.getRun(id);
    assert.equal(again.state, 'succeeded');
    assert.equal(again.nodeId, ended.nodeId);
    assert.deepEqual(again.attempts, ended.attempts);
  });
});
