// A microVM captured on one node and continued on another, through the HTTP API and the SDK: two real
// nodes (their own homes, SQLite files and blob stores), real QEMU guests.
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { startDaemon, type Daemon } from '../../src/daemon/daemon.ts';
import { loadConfig } from '../../src/node/config.ts';
import { ApiError, VmeshClient } from '../../src/sdk/client.ts';
import { hasCommand, skipUnless } from '../helpers/require.ts';
import { BUSYBOX } from '../helpers/rootfs.ts';
import { tempDir } from '../helpers/tmp.ts';

const skip =
  skipUnless('qemu', hasCommand('qemu-system-x86_64'), 'apt-get install qemu-system-x86') ||
  skipUnless('busybox', existsSync(BUSYBOX), 'apt-get install busybox-static') ||
  skipUnless('apt', hasCommand('apt-get', ['--version']) && hasCommand('dpkg-deb', ['--version']), 'a Debian host with apt-get and dpkg-deb (the guest kernel is fetched with apt-get download)');

const COUNTER = 'i=0; while [ $i -lt 100000 ]; do i=$((i+1)); echo $i; sleep 0.1; done';

describe('microVM snapshots between two nodes', { skip }, () => {
  const homes = [tempDir('vmesh-snap-a-'), tempDir('vmesh-snap-b-')];
  const daemons: Daemon[] = [];
  const clients: VmeshClient[] = [];
  before(async () => {
    for (const home of homes) {
      const daemon = await startDaemon(loadConfig(home.dir, { api: { port: 0 }, mesh: { listen: ['/ip4/127.0.0.1/tcp/0'] }, logLevel: 'silent', workers: 1, capacity: { vcpus: 2, memoryMiB: 1024 } }), pino({ level: 'silent' }));
      daemons.push(daemon);
      clients.push(new VmeshClient({ url: daemon.url, token: daemon.token }));
    }
  });
  after(async () => {
    for (const c of clients) await c.close();
    for (const d of daemons) await d.close();
    for (const h of homes) h.remove();
  });

  /** The numbers a run has printed so far (complete lines only), from the node's stored log. */
  async function numbers(client: VmeshClient, id: string): Promise<number[]> {
    let text = '';
    for await (const e of client.logs(id, { follow: false })) if (e.event === 'stdout') text += e.text;
    return text.split('\n').slice(0, -1).map(Number);
  }
  async function until(client: VmeshClient, id: string, ok: (n: number[]) => boolean, what: string): Promise<number[]> {
    const deadline = Date.now() + 120_000;
    for (;;) {
      const n = await numbers(client, id);
      if (ok(n)) return n;
      assert.ok(Date.now() < deadline, `waited 120 s for ${what}; have ${n.length} numbers, run is ${(await client.getRun(id)).state}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it('pauses, resumes and snapshots a counting guest on node A; node B, given the blobs, continues it from its last number', async () => {
    const [a, b] = clients as [VmeshClient, VmeshClient];
    const { id } = await a.run({ kind: 'microvm', source: { guest: 'default' }, command: ['sh', '-c', COUNTER], resources: { memoryMiB: 128, vcpus: 1, timeoutMs: 300_000 } }, { wait: false });
    await until(a, id, (n) => n.length >= 5, 'the guest to count to 5');

    assert.equal((await a.pause(id)).state, 'paused');
    await pause(500);
    const frozen = (await numbers(a, id)).length;
    await pause(700);
    assert.equal((await numbers(a, id)).length, frozen, 'nothing is printed while paused');
    await assert.rejects(a.pause(id), (e: unknown) => e instanceof ApiError && e.status === 409 && e.code === 'run_state');
    assert.equal((await a.resume(id)).state, 'running');
    await until(a, id, (n) => n.length > frozen + 2, 'the guest to go on after resume');

    const info = await a.snapshot(id);
    assert.match(info.snapshot, /^sha256:[0-9a-f]{64}$/);
    assert.equal(info.run.state, 'paused');
    assert.deepEqual(Object.keys(info.files).sort(), ['disk.img', 'initrd', 'kernel', 'manifest.json', 'memory'].filter((f) => f !== 'disk.img'));
    await pause(600);
    const seen = await numbers(a, id);
    assert.deepEqual(seen, seen.map((_, i) => i + 1), 'the counter ran without gaps');
    const last = seen.at(-1)!;
    assert.equal((await a.cancel(id)).id, id);

    // Node B knows nothing of it until the blobs arrive (the mesh's blob pool will carry them; here, by hand).
    await assert.rejects(b.restore(info.snapshot, { wait: false }), (e: unknown) => e instanceof ApiError && e.status === 400 && e.field === 'source.snapshot');
    const nodeA = daemons[0]!.node;
    const nodeB = daemons[1]!.node;
    for (const hash of [info.snapshot, ...Object.values(info.files)]) await nodeB.blobs.put((await nodeA.blobs.get(hash))!);

    const restored = await b.restore(info.snapshot, { wait: false });
    assert.equal(restored.driver ?? 'qemu', 'qemu');
    const went = await until(b, restored.id, (n) => n.length >= 3, 'the restored guest to count on node B');
    assert.ok(went[0]! > last && went[0]! <= last + 2, `node B went on from ${last} with ${went.slice(0, 3).join(', ')}`);
    assert.deepEqual(went.slice(0, 3), [went[0], went[0]! + 1, went[0]! + 2]);
    assert.equal((await b.cancel(restored.id)).id, restored.id);
    await nodeB.settled(restored.id);
    await nodeA.settled(id);
    assert.equal((await b.getRun(restored.id)).state, 'cancelled');
    for (const d of daemons) {
      assert.deepEqual(readdirSync(path.join(d.node.config.home, 'sandboxes')), [], 'no sandbox left');
      const work = path.join(d.node.config.home, 'snapshot-work');
      assert.deepEqual(existsSync(work) ? readdirSync(work) : [], [], 'no snapshot working directory left');
    }
  });

  it('refuses what cannot be paused or captured, naming why', async () => {
    const [a] = clients as [VmeshClient];
    const done = await a.run({ kind: 'function', source: { inline: 'export default () => 1' } });
    await assert.rejects(a.pause(done.id), (e: unknown) => e instanceof ApiError && e.status === 409 && /not live/.test(e.message));
    await assert.rejects(a.snapshot('nosuchrun'), (e: unknown) => e instanceof ApiError && e.status === 404);
    const spin = await a.run({ kind: 'function', source: { inline: 'export default () => { for (;;) {} }' }, resources: { timeoutMs: 30_000 } }, { wait: false });
    await new Promise((r) => setTimeout(r, 300));
    await assert.rejects(a.snapshot(spin.id), (e: unknown) => e instanceof ApiError && e.status === 422 && e.code === 'unsupported' && /quickjs driver cannot snapshot/.test(e.message));
    await a.cancel(spin.id);
    await assert.rejects(a.restore(`sha256:${'0'.repeat(64)}`), (e: unknown) => e instanceof ApiError && e.field === 'source.snapshot');
    await assert.rejects(a.run({ kind: 'function', source: { snapshot: `sha256:${'0'.repeat(64)}` } }), (e: unknown) => e instanceof ApiError && e.field === 'source.snapshot');
  });
});
