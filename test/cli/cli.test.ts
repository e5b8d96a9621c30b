import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import type { Run } from '../../src/spec/index.ts';
import { hasCommand, skipUnless } from '../helpers/require.ts';
import { BUSYBOX, busyboxRootfs } from '../helpers/rootfs.ts';
import { tempDir } from '../helpers/tmp.ts';
import { watFixture } from '../helpers/wat.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = path.join(ROOT, 'bin', 'vmesh.js');
const SPIN_JS = path.join(ROOT, 'test', 'fixtures', 'spin.js');

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real `vmesh` command (a new process, as a user would). */
function vmesh(home: string, args: string[], opts: { input?: string; env?: Record<string, string> } = {}): Promise<Result> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [BIN, '--home', home, ...args], { cwd: ROOT, env: { ...process.env, VMESH_HOME: '', ...opts.env }, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

const json = <T>(r: Result): T => JSON.parse(r.stdout) as T;
const execFileAsync = promisify(execFile);
const containerSkip =
  skipUnless('root', process.getuid?.() === 0, 'run the tests as root (containers need it)') ||
  skipUnless('runc', hasCommand('runc'), 'apt-get install runc') ||
  skipUnless('busybox', existsSync(BUSYBOX), 'apt-get install busybox-static');

describe('vmesh CLI against a real detached node', () => {
  const tmp = tempDir('vmesh-cli-');
  const home = tmp.dir;

  before(async () => {
    writeFileSync(path.join(home, 'config.json'), JSON.stringify({ fileRoots: ['images'] }));
    if (!containerSkip) busyboxRootfs(path.join(home, 'images', 'busybox'));
    const up = await vmesh(home, ['--json', 'up', '--detach', '--port', '0', '--listen', '/ip4/127.0.0.1/tcp/0', '--workers', '2']);
    assert.equal(up.code, 0, up.stderr);
    assert.equal(json<{ status: string }>(up).status, 'started');
  });
  after(async () => {
    await vmesh(home, ['down']);
    tmp.remove();
  });

  it('lists the mesh with vmesh nodes: this node, its drivers and its join address', async () => {
    const r = await vmesh(home, ['--json', 'nodes']);
    assert.equal(r.code, 0, r.stderr);
    const view = json<{ self: string; mesh: { enabled: boolean; addresses: string[] }; nodes: Array<{ id: string; self: boolean; advert: { drivers: Array<{ name: string }> } }> }>(r);
    assert.match(view.self, /^12D3KooW/);
    assert.equal(view.mesh.enabled, true);
    assert.match(view.mesh.addresses[0]!, new RegExp(`^/ip4/127\\.0\\.0\\.1/tcp/\\d+/p2p/${view.self}$`));
    assert.deepEqual(view.nodes.map((n) => [n.id, n.self]), [[view.self, true]]);
    assert.ok(view.nodes[0]!.advert.drivers.some((d) => d.name === 'wasm'), 'view.nodes[0]!.advert.drivers.some((d) => d.name === \'wasm\')');
    const human = await vmesh(home, ['nodes']);
    assert.match(human.stdout, new RegExp(`${view.self} \\(this node\\)`));
    assert.match(human.stdout, /join this node with: vmesh up --join \/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\//);
  });

  it('runs the wasm example with an argument after --', async () => {
    const r = await vmesh(home, ['run', 'examples/hello.wasm', '--', 'world']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'hello, world\n');
  });

  it('runs the js example with --input and prints its JSON output', async () => {
    const r = await vmesh(home, ['run', 'examples/hello.js', '--input', '{"name":"world"}']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'saying hello to world\n{\n  "greeting": "hello, world"\n}\n');
  });

  it('reads the code from stdin with -, and prints the run as JSON with --json', async () => {
    const r = await vmesh(home, ['--json', 'run', '-', '--runtime', 'js'], { input: 'export default () => 6 * 7' });
    assert.equal(r.code, 0, r.stderr);
    const run = json<Run>(r);
    assert.equal(run.state, 'succeeded');
    assert.equal(run.result?.output, 42);
  });

  it('exits 124 on timeout, 137 on oom, and passes a failing exit code through', async () => {
    const spin = await vmesh(home, ['run', SPIN_JS, '--timeout', '300ms']);
    assert.equal(spin.code, 124);
    assert.match(spin.stderr, /timeout: .*300 ms timeout/);
    const bomb = await vmesh(home, ['run', '-', '--runtime', 'js', '--memory', '8'], { input: 'export default () => { const a = []; for (;;) a.push(new Uint8Array(4 << 20)); }' });
    assert.equal(bomb.code, 137, bomb.stderr);
    const threw = await vmesh(home, ['run', '-', '--runtime', 'js'], { input: 'export default () => { throw new Error("no") }' });
    assert.equal(threw.code, 1);
    assert.match(threw.stderr, /failed: the function threw Error: no/);
  });

  it('exits 2 with the field named on bad input, and on bad flags', async () => {
    const r = await vmesh(home, ['run', 'examples/hello.js', '--memory', '0']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /resources\.memoryMiB: must be >= 1/);
    const flag = await vmesh(home, ['run', 'examples/hello.js', '--timeout', 'soon']);
    assert.equal(flag.code, 2);
    assert.match(flag.stderr, /expected a duration/);
    const missing = await vmesh(home, ['run', 'no-such-file.wasm']);
    assert.equal(missing.code, 2);
  });

  it('detaches, lists with ps, follows logs, and cancels', async () => {
    const started = await vmesh(home, ['run', SPIN_JS, '--detach', '--timeout', '30s', '--name', 'spinner']);
    assert.equal(started.code, 0, started.stderr);
    const id = started.stdout.trim();
    assert.match(id, /^r[0-9a-z]{9}[0-9a-f]{12}$/);
    const ps = json<Run[]>(await vmesh(home, ['--json', 'ps', '--limit', '50']));
    assert.equal(ps.find((r) => r.id === id)?.name, 'spinner');
    const table = await vmesh(home, ['ps']);
    assert.match(table.stdout, /^ID\s+STATE\s+DRIVER\s+NAME\s+AGE\s+TIME$/m);
    const follow = vmesh(home, ['logs', '-f', id]);
    const cancel = await vmesh(home, ['cancel', id]);
    assert.equal(cancel.code, 0, cancel.stderr);
    const logs = await follow;
    assert.equal(logs.code, 0, logs.stderr);
    assert.match(logs.stdout, /spinning/);
    assert.match(logs.stderr, /cancelled: cancelled by request/);
    const again = await vmesh(home, ['cancel', id]);
    assert.equal(again.code, 5);
    assert.match(again.stderr, /already ended \(cancelled\)/);
  });

  it('streams a run\'s output while it runs, and Ctrl-C cancels it (exit 130)', async () => {
    const child = spawn(process.execPath, [BIN, '--home', home, 'run', SPIN_JS, '--timeout', '60s'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await new Promise<void>((resolve) => child.stdout.on('data', (d: Buffer) => ((stdout += d.toString()), stdout.includes('spinning') && resolve())));
    child.kill('SIGINT'); // the run never ends by itself: its output arrived while it was running
    assert.equal(await exited, 130);
    assert.match(stderr, /cancelling run r[0-9a-z]+/);
    assert.match(stderr, /cancelled: cancelled by request/);
  });

  it('runs a container from a root file system directory, passing its exit code through', { skip: containerSkip }, async () => {
    const r = await vmesh(home, ['run', '--kind', 'container', path.join(home, 'images', 'busybox'), '--', 'sh', '-c', 'echo from a container; exit 3']);
    assert.equal(r.stdout, 'from a container\n');
    assert.equal(r.code, 3, r.stderr);
    const outside = await vmesh(home, ['run', '--kind', 'container', ROOT, '--', 'sh']);
    assert.equal(outside.code, 2);
    assert.match(outside.stderr, /source\.file: .* is not a file or directory under the node's file roots/);
  });

  it('returns a container\'s output directory as a tar that `vmesh outputs` downloads', { skip: containerSkip }, async () => {
    const script = 'mkdir -p /out/report && echo one > /out/report/a.txt && echo two > /out/report/b.txt && ln -s /etc/passwd /out/report/pw';
    const r = await vmesh(home, ['--json', 'run', '--kind', 'container', path.join(home, 'images', 'busybox'), '--output', 'report', '--', 'sh', '-c', script]);
    assert.equal(r.code, 0, r.stderr);
    const run = json<Run>(r);
    assert.deepEqual(run.result!.outputsSkipped, [{ path: 'report/pw', reason: 'a symlink (never followed)' }]);
    const file = path.join(home, 'report.tar');
    const got = await vmesh(home, ['--json', 'outputs', run.id, '-o', file]);
    assert.equal(got.code, 0, got.stderr);
    assert.deepEqual(json(got), { file, bytes: run.result!.outputsArchive!.bytes, blob: run.result!.outputsArchive!.blob });
    const { stdout } = await execFileAsync('tar', ['-tvf', file]);
    assert.deepEqual(stdout.trim().split('\n').map((l) => l.split(/\s+/).at(-1)), ['report/', 'report/a.txt', 'report/b.txt']);
    const again = await vmesh(home, ['outputs', run.id, '-o', file]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /exists; pass --force/);
    const none = await vmesh(home, ['outputs', 'rnope', '-o', '-']);
    assert.equal(none.code, 4, none.stderr);
  });

  it('puts, lists, gets and removes blobs with vmesh blob, checking what it writes', async () => {
    const file = path.join(home, 'random.bin');
    const bytes = randomBytes(300_000);
    writeFileSync(file, bytes);
    const put = await vmesh(home, ['blob', 'put', file]);
    assert.equal(put.code, 0, put.stderr);
    const hash = put.stdout.trim();
    assert.equal(hash, `sha256:${createHash('sha256').update(bytes).digest('hex')}`);
    const piped = json<{ blob: string; bytes: number; created: boolean }>(await vmesh(home, ['--json', 'blob', 'put', '-'], { input: 'piped text\n' }));
    assert.deepEqual(piped, { blob: `sha256:${createHash('sha256').update('piped text\n').digest('hex')}`, bytes: 11, created: true });

    const list = json<{ blobs: Array<{ hash: string; bytes: number }> }>(await vmesh(home, ['--json', 'blob', 'ls']));
    assert.deepEqual(list.blobs.slice(0, 2).map((b) => [b.hash, b.bytes]), [[piped.blob, 11], [hash, 300_000]]);
    assert.match((await vmesh(home, ['blob', 'ls'])).stdout, /^BLOB\s+SIZE\s+HELD\s+KEPT FOR OTHERS UNTIL$[\s\S]*\d+ blobs, [\d.]+ MiB of 65536\.0 MiB/m);

    const out = path.join(home, 'copy.bin');
    const got = await vmesh(home, ['--json', 'blob', 'get', hash, '-o', out]);
    assert.equal(got.code, 0, got.stderr);
    assert.deepEqual(json<{ file: string; bytes: number; blob: string }>(got), { file: out, bytes: 300_000, blob: hash });
    assert.ok(readFileSync(out).equals(bytes), 'readFileSync(out).equals(bytes)');
    assert.equal((await vmesh(home, ['blob', 'get', piped.blob])).stdout, 'piped text\n', 'to stdout by default');
    assert.match((await vmesh(home, ['blob', 'get', hash, '-o', out])).stderr, /exists; pass --force/);

    const rm = await vmesh(home, ['blob', 'rm', hash, piped.blob]);
    assert.equal(rm.code, 0, rm.stderr);
    const gone = await vmesh(home, ['blob', 'get', hash, '--local']);
    assert.equal(gone.code, 4, gone.stderr);
    assert.match(gone.stderr, /does not hold sha256:/);
    const bad = await vmesh(home, ['blob', 'get', 'sha256:xyz']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /hash/);
    assert.equal((await vmesh(home, ['blob', 'put', path.join(home, 'no-such-file')])).code, 2);
    assert.deepEqual(readdirSync(home).filter((f) => f.endsWith('.part')), [], 'no partial download left');
  });

  it('keeps outputs on as many nodes as it can with --replicas, and says how many', async () => {
    const module = path.join(home, 'write-arg.wasm');
    writeFileSync(module, await watFixture('write-arg'));
    const r = await vmesh(home, ['run', module, '--output', 'out.txt', '--replicas', '2', '--', 'kept']);
    assert.equal(r.code, 0, r.stderr);
    // A mesh of one: nobody else to keep a copy.
    assert.match(r.stderr, /vmesh: outputs kept on 1 of 2 nodes: 12D3KooW\w+ \(asked 0 other nodes and 0 took a copy: 1 of the 2 wanted\)/);
    const bad = await vmesh(home, ['run', module, '--output', 'out.txt', '--replicas', '9', '--', 'x']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /outputs\.replicas: must be <= 8/);
  });

  it('prints a run\'s signed receipt, which `vmesh receipt verify` checks offline and refuses with one byte changed', async () => {
    const run = json<Run>(await vmesh(home, ['--json', 'run', 'examples/hello.js', '--input', '{"name":"receipt"}']));
    const file = path.join(home, `${run.id}.receipt.json`);
    const saved = await vmesh(home, ['receipt', run.id, '-o', file]);
    assert.equal(saved.code, 0, saved.stderr);
    const ok = await vmesh(home, ['receipt', 'verify', file]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, new RegExp(`^valid: signed by node ${run.nodeId}\n`));
    assert.match(ok.stdout, new RegExp(`run ${run.id} succeeded on quickjs`));
    const text = readFileSync(file, 'utf8');
    const at = text.indexOf('succeeded');
    writeFileSync(file, `${text.slice(0, at)}S${text.slice(at + 1)}`);
    const bad = await vmesh(home, ['--json', 'receipt', 'verify', file]);
    assert.equal(bad.code, 1);
    assert.equal(json<{ valid: boolean }>(bad).valid, false);
    const missing = await vmesh(home, ['receipt', 'verify', path.join(home, 'nope.json')]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /cannot read/);
  });

  it('--dry-run explains placement without running; an impossible request exits 5 and says why', async () => {
    const before = json<Run[]>(await vmesh(home, ['--json', 'ps'])).length;
    const dry = await vmesh(home, ['run', '--dry-run', 'examples/hello.js']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /^placement: 1 node of 1 fit\nchosen: \S+ \(spread, weights resources 1 proximity 2 reputation 2 load 1, least reputation 0.2\)\nRANK +NODE/);
    const none = await vmesh(home, ['--json', 'run', '--dry-run', '--label', 'gpu=h100', 'examples/hello.js']);
    assert.equal(none.code, 5);
    const e = json<{ chosen: string | null; summary: string; candidates: Array<{ filters: Array<{ filter: string; pass: boolean }> }> }>(none);
    assert.equal(e.chosen, null);
    assert.equal(e.summary, 'no node fits this function run: of 1 node, 1 lacks the labels gpu=h100');
    assert.equal(e.candidates[0]!.filters.length, 8);
    assert.equal(json<Run[]>(await vmesh(home, ['--json', 'ps'])).length, before, 'a dry run runs nothing');
    const explained = await vmesh(home, ['run', '--explain', 'examples/hello.js', '--input', '{"name":"x"}']);
    assert.equal(explained.code, 0, explained.stderr);
    assert.match(explained.stderr, /^placement: 1 node of 1 fit\nchosen: /m);
  });

  it('exits 4 for an unknown run and 3 when no node answers', async () => {
    assert.equal((await vmesh(home, ['logs', 'rnothing'])).code, 4);
    const away = await vmesh(home, ['node', '--api', 'http://127.0.0.1:9']);
    assert.equal(away.code, 3);
    assert.match(away.stderr, /no vmesh node answers at http:\/\/127\.0\.0\.1:9/);
  });

  it('shows the node and its drivers, for humans and as JSON', async () => {
    const node = await vmesh(home, ['node']);
    assert.match(node.stdout, /^capacity\s+\d+ vcpus/m);
    type Report = { drivers: Array<{ name: string; probe: { available: boolean } }>; choices: Array<{ kind: string; driver?: string; passedOver: Array<{ driver: string }> }> };
    const { drivers, choices } = json<Report>(await vmesh(home, ['--json', 'drivers']));
    // drivers.preference (firecracker, cloud-hypervisor, qemu by default) first, the rest in their own order.
    assert.deepEqual(drivers.map((d) => d.name), ['firecracker', 'cloud-hypervisor', 'qemu', 'wasm', 'quickjs', 'oci', 'nanos']);
    assert.deepEqual(drivers.slice(3, 5).map((d) => d.probe.available), [true, true]);
    assert.equal(choices.find((c) => c.kind === 'function')?.driver, 'wasm', 'a function goes to wasm first');
    const microvm = choices.find((c) => c.kind === 'microvm')!;
    const usable = drivers.filter((d) => d.probe.available).map((d) => d.name);
    // Whichever microVM driver this host can run first is the choice, and every one before it is explained.
    assert.equal(microvm.driver, ['firecracker', 'cloud-hypervisor', 'qemu'].find((n) => usable.includes(n)));
    assert.deepEqual(microvm.passedOver.map((p) => p.driver), ['firecracker', 'cloud-hypervisor', 'qemu'].slice(0, microvm.passedOver.length));
    const table = await vmesh(home, ['drivers']);
    assert.match(table.stdout, /^wasm\s+function\s+language\s+yes/m);
    assert.match(table.stdout, /^function runs go to wasm$/m);
    assert.match(table.stdout, /^microvm runs go to /m);
    const unikernel = choices.find((c) => c.kind === 'unikernel')!;
    assert.equal(unikernel.driver ?? unikernel.passedOver[0]!.driver, 'nanos', 'a unikernel goes to nanos, or nanos says why not');
  });
});

describe('vmesh after kill -9 of the node', () => {
  it('marks the interrupted run lost on the next `vmesh up`, frees the ledger, and runs again', async () => {
    const tmp = tempDir('vmesh-crash-');
    const home = tmp.dir;
    try {
      assert.equal((await vmesh(home, ['up', '-d', '--port', '0', '--listen', '/ip4/127.0.0.1/tcp/0'])).code, 0);
      const id = (await vmesh(home, ['run', SPIN_JS, '--detach', '--timeout', '60s'])).stdout.trim();
      for (let i = 0; i < 200; i++) {
        const runs = json<Run[]>(await vmesh(home, ['--json', 'ps', '--limit', '1']));
        if (runs[0]?.state === 'running') break;
        await new Promise((r) => setTimeout(r, 50));
      }
      const { pid } = JSON.parse(readFileSync(path.join(home, 'node.json'), 'utf8')) as { pid: number };
      process.kill(pid, 'SIGKILL');
      while (isAlive(pid)) await new Promise((r) => setTimeout(r, 20));
      assert.ok(readdirSync(path.join(home, 'sandboxes')).length > 0, 'the kill left a sandbox directory behind');

      const up = await vmesh(home, ['up', '-d', '--port', '0', '--listen', '/ip4/127.0.0.1/tcp/0']);
      assert.equal(up.code, 0, up.stderr);
      const lost = json<Run[]>(await vmesh(home, ['--json', 'ps'])).find((r) => r.id === id);
      assert.equal(lost?.state, 'lost');
      assert.match(lost?.reason ?? '', /stopped while this run was running/);
      assert.deepEqual(readdirSync(path.join(home, 'sandboxes')), []);
      const node = json<{ capacity: object; free: object }>(await vmesh(home, ['--json', 'node']));
      assert.deepEqual(node.free, node.capacity);
      const r = await vmesh(home, ['run', 'examples/hello.wasm', '--', 'again']);
      assert.equal(r.stdout, 'hello, again\n');
      assert.equal((await vmesh(home, ['down'])).code, 0);
      assert.equal(existsSync(path.join(home, 'node.json')), false);
    } finally {
      await vmesh(home, ['down']);
      tmp.remove();
    }
  });
});

describe('vmesh after kill -9 of a node running a networked container', { skip: containerSkip || skipUnless('nftables', hasCommand('nft', ['--version']), 'apt-get install nftables') }, () => {
  it('the next `vmesh up` kills the container, removes its cgroup, network and mounts, and marks the run lost', async () => {
    const tmp = tempDir('vmesh-crash-oci-');
    const home = tmp.dir;
    try {
      writeFileSync(path.join(home, 'config.json'), JSON.stringify({ fileRoots: ['images'], network: { range: '10.218.0.0/24' } }));
      busyboxRootfs(path.join(home, 'images', 'busybox'));
      assert.equal((await vmesh(home, ['up', '-d', '--port', '0', '--listen', '/ip4/127.0.0.1/tcp/0'])).code, 0);
      const nodeId = json<{ id: string }>(await vmesh(home, ['--json', 'node'])).id;
      const { shortTag } = await import('../../src/util/names.ts');
      const tag = shortTag(nodeId);
      // A container that spins, with a network and an output mount: everything the crash can leave.
      const submitted = await fetch(`${JSON.parse(readFileSync(path.join(home, 'node.json'), 'utf8')).url}/v1/runs?wait=false`, {
        method: 'POST',
        headers: { authorization: `Bearer ${readFileSync(path.join(home, 'token'), 'utf8').trim()}`, 'content-type': 'application/json' },
        body: JSON.stringify({ kind: 'container', source: { file: 'busybox' }, command: ['sh', '-c', 'while :; do :; done'], network: { egress: 'internet' }, outputs: ['x'], resources: { timeoutMs: 120_000 } }),
      });
      const { id } = (await submitted.json()) as { id: string };
      for (let i = 0; i < 200; i++) {
        if (json<Run[]>(await vmesh(home, ['--json', 'ps', '--limit', '1']))[0]?.state === 'running') break;
        await new Promise((r) => setTimeout(r, 50));
      }
      const cgroup = `/sys/fs/cgroup/pids/vmesh/${tag}/vmesh-${id}`;
      const procsIn = () => (existsSync(cgroup) ? readFileSync(path.join(cgroup, 'cgroup.procs'), 'utf8').trim().split('\n').filter(Boolean).length : 0);
      const netns = () => (existsSync('/run/netns') ? readdirSync('/run/netns').filter((n) => n.startsWith(`vmesh-${tag}-`)).length : 0);
      // Under the node's home, or in the tmpfs its container bundles are made in (the tmpfs itself aside).
      const { defaultRootsDir } = await import('../../src/drivers/oci/user-namespace.ts');
      const bundles = `${defaultRootsDir(path.join(home, 'sandboxes'))}.bundles/`;
      const mounts = () => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(home) || (l.split(' ')[4] ?? '').startsWith(bundles)).length;
      assert.ok(procsIn() > 0, 'the container runs');
      assert.equal(netns(), 1);
      assert.equal(mounts(), 1);

      const { pid } = JSON.parse(readFileSync(path.join(home, 'node.json'), 'utf8')) as { pid: number };
      process.kill(pid, 'SIGKILL');
      while (isAlive(pid)) await new Promise((r) => setTimeout(r, 20));
      assert.ok(procsIn() > 0, 'the container outlived its node');

      assert.equal((await vmesh(home, ['up', '-d', '--port', '0', '--listen', '/ip4/127.0.0.1/tcp/0'])).code, 0);
      const lost = json<Run[]>(await vmesh(home, ['--json', 'ps'])).find((r) => r.id === id);
      assert.equal(lost?.state, 'lost');
      assert.equal(procsIn(), 0, 'no process of the container is left');
      assert.equal(existsSync(cgroup), false, 'its cgroup is gone');
      assert.equal(netns(), 0, 'its network namespace is gone');
      assert.equal(mounts(), 0, 'its output mount is gone');
      const { stdout: links } = await execFileAsync('ip', ['-o', 'link', 'show']);
      assert.doesNotMatch(links, new RegExp(`v${tag}`), 'its veth is gone');
    } finally {
      await vmesh(home, ['down']);
      tmp.remove();
    }
  });
});

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
