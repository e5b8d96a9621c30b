import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { startDaemon, type Daemon } from '../../src/daemon/daemon.ts';
import { loadConfig } from '../../src/node/config.ts';
import { ApiError, VmeshClient, type LogEvent } from '../../src/sdk/client.ts';
import type { Workload } from '../../src/spec/index.ts';
import { tarEntries } from '../helpers/outputs.ts';
import { tempDir } from '../helpers/tmp.ts';
import { watFixture } from '../helpers/wat.ts';

const hello = readFileSync(new URL('../../examples/hello.wasm', import.meta.url));
const helloJs = readFileSync(new URL('../../examples/hello.js', import.meta.url), 'utf8');
const wasm = (extra: Partial<Workload> = {}): Workload => ({ kind: 'function', source: { inline: hello.toString('base64'), encoding: 'base64' }, ...extra });
const js = (code: string, extra: Partial<Workload> = {}): Workload => ({ kind: 'function', source: { inline: code }, ...extra });

describe('HTTP API', () => {
  const tmp = tempDir('vmesh-api-');
  let daemon: Daemon;
  let client: VmeshClient;

  before(async () => {
    const config = loadConfig(tmp.dir, { api: { port: 0 }, mesh: { listen: ['/ip4/127.0.0.1/tcp/0'] }, logLevel: 'silent', workers: 2, limits: { outputBytes: 8192 } });
    daemon = await startDaemon(config, pino({ level: 'silent' }));
    client = new VmeshClient({ url: daemon.url, token: daemon.token });
  });
  after(async () => {
    await client.close();
    await daemon.close();
    tmp.remove();
  });

  /** A raw request, for what the typed client would never send. */
  async function raw(method: string, url: string, init: { body?: string; token?: string | null; type?: string } = {}) {
    const headers: Record<string, string> = {};
    if (init.token !== null) headers.authorization = `Bearer ${init.token ?? daemon.token}`;
    if (init.body !== undefined) headers['content-type'] = init.type ?? 'application/json';
    const res = await fetch(`${daemon.url}${url}`, { method, headers, body: init.body ?? null });
    const text = await res.text();
    let json: { error?: { code: string; message: string; field?: string } } & Record<string, unknown> = {};
    try {
      json = JSON.parse(text);
    } catch {
      /* not JSON */
    }
    return { status: res.status, json, text, headers: res.headers };
  }

  async function rejects(p: Promise<unknown>, status: number, code: string, field?: string) {
    await assert.rejects(p, (err: unknown) => {
      assert.ok(err instanceof ApiError, String(err));
      assert.equal(err.status, status, err.message);
      assert.equal(err.code, code, err.message);
      if (field !== undefined) assert.equal(err.field, field, err.message);
      return true;
    });
  }

  it('creates the token file with mode 0600 at first start', () => {
    const mode = statSync(path.join(tmp.dir, 'token')).mode & 0o777;
    assert.equal(mode, 0o600);
  });

  it('runs a wasm function and returns the finished run', async () => {
    const run = await client.run(wasm({ args: ['api'] }));
    assert.equal(run.state, 'succeeded');
    assert.equal(run.result?.stdout.text, 'hello, api\n');
    assert.equal(run.nodeId, daemon.node.id);
  });

  it('runs a js function with JSON input and output', async () => {
    const run = await client.run(js(helloJs, { input: { name: 'api' } }));
    assert.deepEqual(run.result?.output, { greeting: 'hello, api' });
  });

  it('returns at once with ?wait=false, then the run can be fetched and listed', async () => {
    const run = await client.run(wasm(), { wait: false });
    assert.notEqual(run.state, 'succeeded');
    const done = await daemon.node.waitFor(run.id);
    assert.equal((await client.getRun(run.id)).state, done.state);
    assert.ok((await client.listRuns({ limit: 5 })).some((r) => r.id === run.id), '(await client.listRuns({ limit: 5 })).some((r) => r.id === run.id)');
    assert.ok((await client.listRuns({ state: 'succeeded' })).every((r) => r.state === 'succeeded'), '(await client.listRuns({ state: \'succeeded\' })).every((r) => r.state === \'succeeded\')');
  });

  it('requires the bearer token on every /v1 call', async () => {
    for (const [method, url] of [['GET', '/v1/node'], ['GET', '/v1/runs'], ['POST', '/v1/runs'], ['GET', '/v1/drivers']] as const) {
      const none = await raw(method, url, { token: null });
      assert.equal(none.status, 401, `${method} ${url}`);
      assert.match(none.json.error!.message, /missing bearer token/);
      const wrong = await raw(method, url, { token: 'x'.repeat(43) });
      assert.equal(wrong.status, 401);
      assert.equal(wrong.json.error!.code, 'unauthorized');
    }
  });

  it('answers malformed JSON with 400 invalid_json', async () => {
    const res = await raw('POST', '/v1/runs', { body: '{"kind": "function", ' });
    assert.equal(res.status, 400);
    assert.equal(res.json.error!.code, 'invalid_json');
  });

  it('names the field of an invalid workload', async () => {
    await rejects(client.run({ kind: 'potato' } as unknown as Workload), 400, 'invalid_input', 'kind');
    await rejects(client.run(js('x', { resources: { memoryMiB: -1 } })), 400, 'invalid_input', 'resources.memoryMiB');
    await rejects(client.run(js('x', { resources: { timeoutMs: 0 } })), 400, 'invalid_input', 'resources.timeoutMs');
    await rejects(client.run(js('x', { env: { 'BAD-NAME': 'v' } })), 400, 'invalid_input', 'env.BAD-NAME');
    await rejects(client.run({ ...js('x'), extra: 1 } as unknown as Workload), 400, 'invalid_input', 'extra');
    const res = await raw('GET', '/v1/runs?limit=0');
    assert.equal(res.status, 400);
    assert.equal(res.json.error!.field, 'query.limit');
  });

  it('refuses what can never run here with 422 and a reason', async () => {
    await rejects(client.run(js('x', { resources: { memoryMiB: 4_000_000 } })), 422, 'capacity_exceeded', 'resources.memoryMiB');
    await rejects(client.run(js('not wasm at all', { runtime: 'wasm' })), 422, 'invalid_source', 'source');
    await rejects(client.run({ kind: 'unikernel', source: { inline: 'x' } }), 422, 'no_driver', 'kind');
  });

  it('ends a throwing function as failed, an endless loop as timeout, a memory bomb as oom, a flood truncated', async () => {
    const threw = await client.run(js('export default () => { throw new RangeError("out of range") }'));
    assert.equal(threw.state, 'failed');
    assert.match(threw.reason ?? '', /RangeError: out of range/);
    const spin = await client.run(js('export default () => { for (;;) {} }', { resources: { timeoutMs: 300 } }));
    assert.equal(spin.state, 'timeout');
    const bomb = await client.run(js('export default () => { const a = []; for (;;) a.push(new Uint8Array(4 << 20)); }', { resources: { memoryMiB: 8 } }));
    assert.equal(bomb.state, 'oom');
    const flood = await client.run(js('export default () => { for (let i = 0; i < 100; i++) console.log("y".repeat(1000)); }'));
    assert.equal(flood.state, 'succeeded');
    assert.equal(flood.result?.stdout.truncated, true);
    assert.equal(Buffer.byteLength(flood.result!.stdout.text), 8192);
    assert.equal(flood.result?.stdout.bytes, 100 * 1001);
  });

  it('returns declared outputs as a tar, whose ETag is the blob in the result', async () => {
    const code = await watFixture('write-file');
    const run = await client.run({ kind: 'function', source: { inline: Buffer.from(code).toString('base64'), encoding: 'base64' }, outputs: ['out.txt', 'nothing-here'] });
    assert.equal(run.state, 'succeeded', run.reason);
    const archive = run.result!.outputsArchive!;
    assert.deepEqual(run.result!.outputsSkipped, [{ path: 'nothing-here', reason: 'missing' }]);
    const res = await fetch(`${daemon.url}/v1/runs/${run.id}/outputs`, { headers: { authorization: `Bearer ${daemon.token}` } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/x-tar');
    assert.equal(res.headers.get('etag'), `"${archive.blob}"`);
    const tar = Buffer.from(await res.arrayBuffer());
    assert.equal(tar.byteLength, archive.bytes);
    assert.equal(`sha256:${createHash('sha256').update(tar).digest('hex')}`, archive.blob);
    assert.deepEqual((await tarEntries(tar)).map((e) => [e.name, e.body.toString()]), [['out.txt', 'result\n']]);
    // Through the SDK too.
    const chunks: Uint8Array[] = [];
    for await (const c of await client.outputs(run.id)) chunks.push(c);
    assert.deepEqual(Buffer.concat(chunks), tar);
  });

  it('answers 404 outputs_not_found for a run without outputs, and 401 without the token', async () => {
    const run = await client.run(wasm({ args: ['x'] }));
    await rejects(client.outputs(run.id), 404, 'outputs_not_found', 'id');
    await rejects(client.outputs('rnope'), 404, 'run_not_found');
    assert.equal((await raw('GET', `/v1/runs/${run.id}/outputs`, { token: null })).status, 401);
  });

  it('answers an unknown run id with 404 on every run route', async () => {
    await rejects(client.getRun('rnope'), 404, 'run_not_found', 'id');
    await rejects(client.cancel('rnope'), 404, 'run_not_found');
    const logs = await raw('GET', '/v1/runs/rnope/logs');
    assert.equal(logs.status, 404);
    const bad = await raw('GET', '/v1/runs/..%2F..%2Fetc');
    assert.equal(bad.status, 400);
  });

  it('cancels a running run, and refuses to cancel a finished one with 409', async () => {
    const run = await client.run(js('export default () => { for (;;) {} }', { resources: { timeoutMs: 30_000 } }), { wait: false });
    while ((await client.getRun(run.id)).state !== 'running') await new Promise((r) => setTimeout(r, 10));
    await client.cancel(run.id);
    const ended = await daemon.node.waitFor(run.id);
    assert.equal(ended.state, 'cancelled');
    await rejects(client.cancel(run.id), 409, 'run_finished');
  });

  it('streams the logs of a live run as server-sent events, ending with the final state', async () => {
    const code = 'export default () => { for (let i = 0; i < 3; i++) console.log(`line ${i}`); const t = Date.now(); while (Date.now() - t < 300) {} console.error("done"); }';
    const run = await client.run(js(code), { wait: false });
    const events: LogEvent[] = [];
    for await (const e of client.logs(run.id)) events.push(e);
    const out = events.filter((e) => e.event === 'stdout').map((e) => (e as { text: string }).text).join('');
    assert.equal(out, 'line 0\nline 1\nline 2\n');
    assert.ok(events.some((e) => e.event === 'stderr' && e.text === 'done\n'), 'events.some((e) => e.event === \'stderr\' && e.text === \'done\\n\')');
    const states = events.filter((e) => e.event === 'state').map((e) => (e as { state: string }).state);
    assert.deepEqual(states, ['queued', 'placed', 'starting', 'running', 'succeeded']);
    assert.deepEqual(events.at(-1), { event: 'end', state: 'succeeded' });
    const ids = events.flatMap((e) => ('id' in e ? [e.id] : []));
    assert.deepEqual(ids, [...ids].sort((a, b) => a - b), 'event ids increase');
    assert.equal(new Set(ids).size, ids.length, 'no event is repeated');
  });

  it('replays the logs of a finished run without following', async () => {
    const run = await client.run(wasm({ args: ['replay'] }));
    const events: LogEvent[] = [];
    for await (const e of client.logs(run.id, { follow: false })) events.push(e);
    const out = events.flatMap((e) => (e.event === 'stdout' ? [e.text] : [])).join('');
    assert.equal(out, 'hello, replay\n');
    assert.deepEqual(events.at(-1), { event: 'end', state: 'succeeded' });
  });

  /** Results come out before a run's resources are released: wait until nothing is held. */
  async function settledNode() {
    for (;;) {
      const node = await client.node();
      if (node.runs.active === 0 && node.runs.queued === 0) return node;
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  it('describes the node: capacity, free resources, drivers with versions', async () => {
    const node = await settledNode();
    assert.equal(node.id, daemon.node.id);
    assert.ok(node.capacity.vcpus >= 1, 'node.capacity.vcpus >= 1');
    assert.deepEqual(node.free, node.capacity);
    const names = node.drivers.map((d) => d.name);
    assert.deepEqual(names, ['firecracker', 'cloud-hypervisor', 'qemu', 'wasm', 'quickjs', 'oci', 'nanos']);
    for (const d of node.drivers) assert.ok(d.probe.available ? d.probe.version : d.probe.reason, `${d.name} says its version or why not`);
    // oci may lack runc here; Firecracker, Cloud Hypervisor and ops (for nanos) are binaries no Debian package has.
    const unavailable = node.drivers.filter((d) => !['oci', 'firecracker', 'cloud-hypervisor', 'nanos'].includes(d.name) && !d.probe.available);
    assert.deepEqual(unavailable.map((d) => `${d.name}: ${d.probe.reason}`), [], 'every other driver is available here');
    assert.equal(node.network.range, '10.89.0.0/16');
    assert.ok(node.network.available || node.network.reason, 'says whether sandboxes get networks, and why not');
    assert.deepEqual((await client.drivers()).map((d) => d.name), names);
  });

  it('serves health, Prometheus metrics, OpenAPI and its docs page without a token', async () => {
    assert.equal((await raw('GET', '/healthz', { token: null })).json.status, 'ok');
    const metrics = await raw('GET', '/metrics', { token: null });
    assert.match(metrics.headers.get('content-type') ?? '', /text\/plain/);
    assert.match(metrics.text, /vmesh_runs_ended_total\{driver="wasm",state="succeeded"\} \d+/);
    assert.match(metrics.text, /vmesh_capacity\{resource="vcpus"\}/);
    const spec = await raw('GET', '/openapi.json', { token: null });
    const paths = Object.keys((spec.json as { paths: object }).paths);
    for (const p of ['/v1/runs', '/v1/runs/{id}', '/v1/runs/{id}/cancel', '/v1/runs/{id}/logs', '/v1/node', '/v1/blobs', '/v1/blobs/{hash}', '/healthz', '/metrics']) {
      assert.ok(paths.includes(p), `openapi lacks ${p}`);
    }
    const docs = await fetch(`${daemon.url}/docs/`);
    assert.equal(docs.status, 200);
    assert.match(await docs.text(), /swagger/i);
  });

  it('stays healthy after all of the above, with its ledger whole', async () => {
    const last = await client.run(wasm({ args: ['still'] }));
    assert.equal(last.result?.stdout.text, 'hello, still\n');
    await daemon.node.settled(last.id);
    const node = await client.node();
    assert.deepEqual(node.free, node.capacity);
    assert.equal(node.runs.active, 0);
  });
});
