import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { generateKeyPair } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { multiaddr } from '@multiformats/multiaddr';
import { ADVERT_TOPIC, sealAdvert } from '../../src/mesh/adverts.ts';
import { JsonFrames } from '../../src/mesh/frames.ts';
import type { MeshHost } from '../../src/mesh/host.ts';
import { RUN_PROTOCOL } from '../../src/mesh/run-protocol.ts';
import { VmeshClient } from '../../src/sdk/client.ts';
import { ADVERT_FORMAT, type Run, type Workload } from '../../src/spec/index.ts';
import { canonicalHash } from '../../src/trust/canonical.ts';
import { signReceipt } from '../../src/trust/receipt.ts';
import { EnvelopeSigner } from '../../src/trust/signer.ts';
import { bareMeshHost, startMeshDaemon, until, type TestDaemon } from '../helpers/mesh.ts';

type Forgery = (run: Run, workload: Workload, own: EnvelopeSigner, stranger: EnvelopeSigner) => Run;

/**
 * A member of the mesh that executes nothing: it advertises a quickjs driver like any node, accepts every
 * run, and sends back a result it made up, with whatever receipt the test's forgery gives it.
 */
async function lyingExecutor(node: TestDaemon, forge: { current: Forgery }): Promise<{ host: MeshHost; id: string }> {
  const key: PrivateKey = await generateKeyPair('Ed25519');
  const host = await bareMeshHost(key);
  const id = host.peerId.toString();
  const own = new EnvelopeSigner(key, id);
  const otherKey = await generateKeyPair('Ed25519');
  const stranger = new EnvelopeSigner(otherKey, 'unused');
  await host.handle(RUN_PROTOCOL, async (stream) => {
    const frames = new JsonFrames(stream, 2 * 2 ** 20);
    const request = (await frames.read((v) => v)) as { id: string; workload: Workload };
    const now = new Date().toISOString();
    const resources = { vcpus: 0.1, memoryMiB: 64, diskMiB: 16, timeoutMs: 30_000, network: { egressMbps: 0, ingressMbps: 0 } };
    const accepted: Run = { id: request.id, state: 'queued', kind: 'function', nodeId: id, resources, createdAt: now, updatedAt: now };
    await frames.write({ type: 'accepted', run: accepted });
    const result = {
      exitCode: 0,
      stdout: { text: 'made up\n', bytes: 8, truncated: false },
      stderr: { text: '', bytes: 0, truncated: false },
      output: 42,
      outputs: [],
      timings: { queuedMs: 0, startMs: 0, runMs: 0, totalMs: 0 },
      usage: {},
    };
    const ended: Run = { ...accepted, state: 'succeeded', driver: 'quickjs', startedAt: now, endedAt: now, result };
    await frames.write({ type: 'end', run: forge.current(ended, request.workload, own, stranger) });
    await stream.close();
  });
  host.services.pubsub.subscribe(ADVERT_TOPIC);
  await host.dial(multiaddr(node.daemon.mesh!.addresses()[0]!));
  await until(() => host.services.pubsub.getSubscribers(ADVERT_TOPIC).length > 0, 5000, 'the node to show its subscription');
  const amounts = { vcpus: 8, memoryMiB: 16_384, diskMiB: 100_000, egressMbps: 1000, ingressMbps: 1000 };
  let seq = Date.now();
  const advertise = async () =>
    host.services.pubsub.publish(
      ADVERT_TOPIC,
      await sealAdvert(key, {
        format: ADVERT_FORMAT,
        node: id,
        seq: seq++,
        issuedAt: new Date().toISOString(),
        version: 'liar',
        addresses: host.getMultiaddrs().map((a) => a.toString()),
        drivers: [{ name: 'quickjs', kinds: ['function'], isolation: 'language', available: true }],
        capacity: amounts,
        free: amounts,
        runs: { queued: 0, active: 0 },
        labels: {},
      }),
    );
  await until(async () => (await advertise().then(() => node.daemon.mesh!.membership.get(id) !== undefined)), 10_000, 'the liar to join the membership');
  return { host, id };
}

describe('a node that sends back results its receipt does not cover', () => {
  let a: TestDaemon;
  let liar: { host: MeshHost; id: string };
  let client: VmeshClient;
  const forge: { current: Forgery } = { current: (run) => run };
  before(async () => {
    a = await startMeshDaemon();
    liar = await lyingExecutor(a, forge);
    client = new VmeshClient({ url: a.daemon.url, token: a.daemon.token });
  });
  after(async () => {
    await client?.close();
    await liar?.host.stop();
    await a?.remove();
  });

  const cases: Array<[string, Forgery, RegExp]> = [
    ['no receipt at all', (run) => run, /it has no receipt/],
    ['a receipt signed by another key', (run, w, _own, stranger) => ({ ...run, receipt: { ...signReceipt(stranger, run, { specHash: canonicalHash(w), inputs: [] }), signer: run.nodeId } }), /signature: does not verify/],
    ['its own receipt, for another spec', (run, _w, own) => ({ ...run, receipt: signReceipt(own, run, { specHash: canonicalHash({ other: true }), inputs: [] }) }), /receipt.specHash/],
    [
      'its own receipt over another result',
      (run, w, own) => ({ ...run, receipt: signReceipt(own, { ...run, result: { ...run.result!, output: 41 } }, { specHash: canonicalHash(w), inputs: [] }) }),
      /receipt.resultHash: does not match/,
    ],
  ];

  for (const [name, forgery, why] of cases) {
    it(`${name}: the run fails without the made-up result, and the node is marked bad_receipt`, async () => {
      forge.current = forgery;
      const before = a.daemon.node.reputation.get(liar.id).counts.bad_receipt ?? 0;
      const run = await client.run({ kind: 'function', source: { inline: 'export default () => 42' }, placement: { node: liar.id } });
      assert.equal(run.state, 'failed');
      assert.match(run.reason ?? '', /sent back a run whose receipt does not check/);
      assert.match(run.reason ?? '', why);
      assert.equal(run.result, undefined, 'the made-up result is not kept');
      await a.daemon.node.settled(run.id);
      assert.equal(a.daemon.node.reputation.get(liar.id).counts.bad_receipt, before + 1);
    });
  }

  it('a correct receipt over its made-up result is accepted: a signature proves who said it, not that it is true', async () => {
    forge.current = (run, w, own) => ({ ...run, receipt: signReceipt(own, run, { specHash: canonicalHash(w), inputs: [] }) });
    const run = await client.run({ kind: 'function', source: { inline: 'export default () => 42' }, placement: { node: liar.id } });
    assert.equal(run.state, 'succeeded', run.reason);
    assert.equal(run.result?.stdout.text, 'made up\n');
    assert.ok(a.daemon.node.reputation.score(liar.id) < 0.2, 'four bad receipts already keep it from work');
    const metrics = await (await fetch(`${a.daemon.url}/metrics`)).text();
    assert.match(metrics, /^vmesh_receipts_refused_total 4$/m);
  });
});
