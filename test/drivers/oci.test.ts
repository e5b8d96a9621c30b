import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { OciDriver } from '../../src/drivers/oci/driver.ts';
import { defaultRootsDir } from '../../src/drivers/oci/user-namespace.ts';
import { InvalidInputError, type Workload } from '../../src/spec/index.ts';
import { hasCommand, required, skipUnless, userNamespacesAllowed } from '../helpers/require.ts';
import { BUSYBOX, busyboxRootfs } from '../helpers/rootfs.ts';
import { testOutputs } from '../helpers/outputs.ts';
import { tempDir } from '../helpers/tmp.ts';
import { driverCompliance, runCase, type Case } from './compliance.ts';

const skip =
  skipUnless('root', process.getuid?.() === 0, 'run the tests as root (containers need it)') ||
  skipUnless('runc', hasCommand('runc'), 'apt-get install runc') ||
  skipUnless('busybox', existsSync(BUSYBOX), 'apt-get install busybox-static');

const images = tempDir('vmesh-rootfs-');
after(() => images.remove());
const rootfs = skip ? '' : busyboxRootfs(path.join(images.dir, 'busybox'));
const sh = (script: string, extra: Partial<Workload> = {}): Case => ({
  workload: { kind: 'container', source: { file: 'busybox' }, command: ['sh', '-c', script], ...extra },
  code: new Uint8Array(0),
});
// The node resolves source.file to a directory; the driver gets its real path.
const withDir = (c: Case) => ({ ...c, sourceDir: rootfs });

// runc's state lives beside the sandbox root (the compliance suite checks that the root is left empty), and goes with the file.
const stateDirs: string[] = [];
after(() => {
  for (const dir of stateDirs) rmSync(dir, { recursive: true, force: true });
});
const make = (root: string) => {
  const stateDir = path.join(root, '..', `${path.basename(root)}-state`);
  stateDirs.push(stateDir);
  return new OciDriver({ sandboxRoot: root, stateDir });
};

driverCompliance(
  'oci (runc)',
  make,
  async () => ({
    hello: { ...withDir(sh('echo hello, compliance')), stdout: 'hello, compliance\n' },
    stderr: { ...withDir(sh('echo to stderr >&2')), stderr: 'to stderr\n' },
    exitCode: { ...withDir(sh('exit 3')), exitCode: 3 },
    spin: withDir(sh('while :; do :; done')),
    memoryBomb: withDir(sh('a=xxxxxxxxxxxxxxxx; while :; do a=$a$a; done')),
    flood: withDir(sh('yes xxxxxxxxxxxxxxx | head -c 1000000')),
    numbered: (n) => ({ ...withDir(sh(`echo run ${n}`)), stdout: `run ${n}\n` }),
  }),
  { skip },
);

describe('oci driver', { skip }, () => {
  const root = tempDir('vmesh-oci-');
  const stateDir = path.join(root.dir, 'state');
  const sandboxes = path.join(root.dir, 'sandboxes');
  let driver: OciDriver;
  before(async () => {
    driver = new OciDriver({ sandboxRoot: sandboxes, stateDir });
    assert.equal((await driver.probe()).available, true);
  });
  after(async () => {
    await driver.close();
    root.remove();
  });
  const run = (c: Case, opts?: Parameters<typeof runCase>[2]) => runCase(driver, withDir(c), opts);

  it('gives the container its own writable root over a directory that stays untouched, one capability and no network', async () => {
    // The directory's files belong to host root, which the container's user namespace does not map
    // (they show as nobody's): its root may write its own root directory, /tmp and /out, not /etc.
    const script = 'echo new > /made; cat /made; echo changed > /etc/motd || true; grep CapEff /proc/self/status; ls /sys/class/net; hostname';
    const { exit, stdout, stderr } = await run(sh(script));
    assert.equal(exit.exitCode, 0);
    const lines = stdout.text.trim().split('\n');
    assert.deepEqual(lines.slice(0, 3), ['new', 'CapEff:\t0000000000000400', 'lo'], 'CAP_NET_BIND_SERVICE (bit 10) only; loopback only');
    assert.match(stderr.text, /can't create \/etc\/motd: Permission denied/);
    assert.match(lines[3]!, /^compliance\d+$/, 'its own hostname');
    assert.ok(!existsSync(path.join(rootfs, 'made')) && !existsSync(path.join(rootfs, 'etc', 'motd')), 'the shared root is as it was');
    const next = await run(sh('ls /made 2>&1; ls /bin/vi'));
    assert.equal(next.stdout.text, 'ls: /made: No such file or directory\n/bin/vi\n', 'the next run starts from the directory');
  });

  it('with readOnlyRoot, can write only /tmp and /out', async () => {
    const { exit, stdout } = await run(sh('touch /x 2>/dev/null && echo root-writable; echo ok > /tmp/t && cat /tmp/t; echo o > /out/o && cat /out/o', { readOnlyRoot: true }));
    assert.equal(exit.exitCode, 0);
    assert.equal(stdout.text, 'ok\no\n');
  });

  it('caps what the container writes anywhere at diskMiB', async () => {
    const { stdout } = await run(sh('dd if=/dev/zero of=/big bs=1M count=8 2>/dev/null || echo full; dd if=/dev/zero of=/tmp/big bs=1M count=8 2>/dev/null || echo full'), { resources: { diskMiB: 2 } });
    assert.equal(stdout.text, 'full\nfull\n');
  });

  it('mounts input files read-only at /in, even for the container\'s root', async () => {
    const inputs = [
      { path: 'table.csv', bytes: 4, data: Buffer.from('a,b\n') },
      { path: 'deep/er/note.txt', bytes: 3, data: Buffer.from('hi\n') },
    ];
    const { exit, stdout, stderr } = await run({ ...sh('cat /in/table.csv /in/deep/er/note.txt; echo x >> /in/table.csv; chmod 666 /in/table.csv; rm /in/deep/er/note.txt; mount -o remount,rw /in; cat /in/table.csv'), inputs });
    assert.equal(exit.exitCode, 0);
    assert.equal(stdout.text, 'a,b\nhi\na,b\n');
    // The file is 0444 and root holds no CAP_DAC_OVERRIDE, so the write is refused before the mount's turn.
    assert.match(stderr.text, /can't create \/in\/table.csv: Permission denied/);
    assert.equal(stderr.text.match(/Read-only file system/g)?.length, 2, stderr.text);
    assert.match(stderr.text, /mount: permission denied|Operation not permitted/);
  });

  it('cannot make user namespaces or reach other kernel surfaces an unprivileged process could (seccomp)', async () => {
    const { exit, stdout, stderr } = await run(sh('unshare -U true && echo userns-made; unshare -n true && echo netns-made; echo done'));
    assert.equal(exit.exitCode, 0);
    assert.equal(stdout.text, 'done\n', 'neither namespace was made');
    assert.match(stderr.text, /unshare\(0x10000000\): Operation not permitted/);
  });

  it('stops a fork bomb at the pids limit', async () => {
    const { exit, stdout, stderr } = await run(sh('for i in $(seq 1 400); do sleep 30 & done; echo unreachable'), { resources: { timeoutMs: 20_000 } });
    assert.equal(exit.outcome, 'exited');
    assert.notEqual(exit.exitCode, 0);
    assert.match(stderr.text, /can't fork/);
    assert.equal(stdout.text, '');
  });

  it('holds a spinning container to its CPU quota', async () => {
    const started = performance.now();
    const { exit } = await run(sh('i=0; while [ $i -lt 150000 ]; do i=$((i+1)); done'), { resources: { vcpus: 0.25, timeoutMs: 60_000 } });
    const wallMs = performance.now() - started;
    assert.equal(exit.exitCode, 0);
    const cpuMs = exit.usage.cpuMs!;
    // CPU time over wall time is the share it got: a quarter of a CPU, never more (less when the host is busy).
    // The quota is counted per 100 ms period, so a run that starts and ends mid-period may use up to two
    // periods' quota (2 x 25 ms) beyond its share; without a quota the share would be near 1.
    assert.ok(cpuMs > 100, `it did work: ${cpuMs} ms of CPU`);
    assert.ok(cpuMs <= 0.25 * wallMs + 50, `used ${cpuMs.toFixed(0)} ms of CPU in ${wallMs.toFixed(0)} ms: a share of ${(cpuMs / wallMs).toFixed(2)}`);
  });

  it('feeds stdin, sets env and workdir, and returns files written to /out', async () => {
    const c = sh('read line; echo "$line $GREETING $(pwd)" > /out/result.txt', { env: { GREETING: 'hi' }, workdir: '/tmp', stdin: 'from stdin\n', outputs: ['result.txt'] });
    const { exit } = await run(c);
    assert.equal(exit.exitCode, 0);
    assert.equal(Buffer.from(exit.outputs.files[0]!.contentBase64!, 'base64').toString(), 'from stdin hi /tmp\n');
  });

  it('caps /out at diskMiB', async () => {
    const { exit } = await run(sh('dd if=/dev/zero of=/out/big bs=1M count=8 2>/dev/null; echo $?', { outputs: ['big'] }), { resources: { diskMiB: 2 } });
    assert.ok(exit.outputs.files[0]!.bytes <= 2 * 2 ** 20, `wrote ${exit.outputs.files[0]!.bytes} bytes`);
  });

  it('refuses a missing command, a program that does not exist, and a missing root file system', async () => {
    await assert.rejects(run({ ...sh(''), workload: { kind: 'container', source: { file: 'busybox' } } }), (e: unknown) => e instanceof InvalidInputError && e.field === 'command');
    await assert.rejects(run({ ...sh(''), workload: { kind: 'container', source: { file: 'busybox' }, command: ['/bin/nope'] } }), /"\/bin\/nope" does not exist/);
    await assert.rejects(runCase(driver, sh('true')), /needs a root file system/);
  });

  it('leaves no container, cgroup, mount or directory behind', async () => {
    await run(sh('echo x > /out/f', { outputs: ['f'] }));
    await run(sh('while :; do :; done'), { resources: { timeoutMs: 200 } });
    assert.equal(driver.liveSandboxes(), 0);
    assert.deepEqual(leftovers(driver, sandboxes), { files: [], mounts: [] }, 'no bundle, input directory or mount left');
    assert.deepEqual(readdirSync(stateDir), [], 'no container in the runtime state');
    const cgroups = ['/sys/fs/cgroup/memory/vmesh', '/sys/fs/cgroup/vmesh'].filter(existsSync).flatMap((d) => readdirSync(d).filter((e) => e.startsWith('vmesh-compliance')));
    assert.deepEqual(cgroups, []);
  });

  it('pauses and resumes a container (the cgroup freezer), and a paused one can still be stopped', async () => {
    const c = withDir(sh('i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done'));
    const request = { runId: 'pausable1', workload: c.workload, code: c.code, sourceDir: rootfs, resources: { vcpus: 0.5, memoryMiB: 32, diskMiB: 1, timeoutMs: 60_000, network: { egressMbps: 0, ingressMbps: 0 } }, outputCapBytes: 1 << 20, outputs: testOutputs().sink };
    const prepared = await driver.prepare(request);
    let text = '';
    const running = await driver.start(prepared, { write: (_s, d) => void (text += Buffer.from(d).toString()), total() {} });
    const lines = () => text.split('\n').length;
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    while (lines() < 5) await sleep(20);
    await driver.pause(running);
    await sleep(200);
    const frozen = lines();
    await sleep(400);
    assert.equal(lines(), frozen, 'a frozen container prints nothing');
    await driver.resume(running);
    while (lines() < frozen + 3) await sleep(20);
    await driver.pause(running);
    await driver.stop(running, 'cancelled');
    const exit = await driver.wait(running);
    assert.equal(exit.outcome, 'cancelled');
    await driver.cleanup(prepared);
    assert.equal(driver.liveSandboxes(), 0);
  });

  it('recovers after a crash: a new driver on the same state removes the old containers and mounts', async () => {
    const c = withDir(sh('sleep 60', { outputs: ['x'] }));
    const prepared = await driver.prepare({ runId: 'crashed1', workload: c.workload, code: c.code, sourceDir: rootfs, resources: { vcpus: 0.1, memoryMiB: 32, diskMiB: 1, timeoutMs: 60_000, network: { egressMbps: 0, ingressMbps: 0 } }, outputCapBytes: 1024, outputs: testOutputs().sink });
    const running = await driver.start(prepared, { write() {}, total() {} });
    await new Promise((r) => setTimeout(r, 300));
    // The "crash": a new driver that knows nothing of it, on the same directories.
    const after = new OciDriver({ sandboxRoot: sandboxes, stateDir });
    await after.probe();
    assert.equal(await after.recover(), 1);
    assert.deepEqual(readdirSync(stateDir), []);
    const exit = await driver.wait(running);
    assert.notEqual(exit.exitCode, 0, 'the container was killed');
    await driver.cleanup(prepared);
  });
});

describe('a writable layer by copy, where overlayfs is not available, made with util-linux instead of busybox', { skip }, () => {
  const root = tempDir('vmesh-oci-copy-');
  const stateDir = path.join(root.dir, 'state');
  const sandboxes = path.join(root.dir, 'sandboxes');
  const driver = new OciDriver({ sandboxRoot: sandboxes, stateDir, writableLayer: 'copy', launchTools: 'util-linux' });
  before(async () => assert.equal((await driver.probe()).available, true));
  after(async () => {
    await driver.close();
    root.remove();
  });

  it('gives each container a copy of the root to write, capped at diskMiB, and removes it', async () => {
    const { exit, stdout } = await runCase(driver, withDir(sh('echo new > /made; cat /made; echo o > /out/o; ls -ld /tmp', { outputs: ['o'] })), { resources: { diskMiB: 8 } });
    assert.equal(exit.exitCode, 0);
    assert.match(stdout.text, /^new\ndrwxrwxrwt /);
    assert.equal(exit.outputs.files[0]!.path, 'o');
    assert.ok(!existsSync(path.join(rootfs, 'made')), 'the shared root is as it was');
    const tooSmall = await runCase(driver, withDir(sh('echo unreachable')), { resources: { diskMiB: 1 } });
    assert.equal(tooSmall.exit.outcome, 'crashed');
    assert.match(tooSmall.exit.reason!, /^the container's file system could not be made: cp: .*No space left on device/);
    assert.equal(tooSmall.stdout.text, '');
    assert.deepEqual(leftovers(driver, sandboxes), { files: [], mounts: [] }, 'no bundle, input directory or mount left');
  });
});

describe('containers from OCI images', { skip }, () => {
  const root = tempDir('vmesh-oci-image-');
  const driver = new OciDriver({ sandboxRoot: path.join(root.dir, 'sandboxes'), stateDir: path.join(root.dir, 'state'), imageRoot: path.join(root.dir, 'images') });
  const layout = path.join(root.dir, 'layout');
  before(async () => {
    assert.equal((await driver.probe()).available, true);
    const { entriesOf, writeOciLayout } = await import('../helpers/oci-image.ts');
    await writeOciLayout(layout, [entriesOf(rootfs)], { Entrypoint: ['/bin/sh', '-c'], Cmd: ['echo "$GREETING from $(pwd)"'], Env: ['GREETING=hi', 'PATH=/bin'], WorkingDir: '/etc' });
  });
  after(async () => {
    await driver.close();
    root.remove();
  });
  const image = (extra: Partial<Workload> = {}): Case => ({ workload: { kind: 'container', source: { file: 'layout' }, ...extra }, code: new Uint8Array(0), sourceDir: layout });

  it('runs the image\'s entrypoint and cmd with its env and working directory', async () => {
    const { exit, stdout } = await runCase(driver, image(), { resources: { diskMiB: 64 } });
    assert.equal(exit.exitCode, 0);
    assert.equal(stdout.text, 'hi from /etc\n');
  });

  it('gives each container a writable layer over the image: what it changes and deletes stays in it', async () => {
    const script = 'echo changed > /etc/motd; rm /bin/vi; cat /etc/motd; ls /bin/vi 2>&1 || true';
    const { exit, stdout, stderr } = await runCase(driver, image({ command: ['sh', '-c', script] }), { resources: { diskMiB: 64 } });
    assert.equal(exit.exitCode, 0, stderr.text);
    assert.equal(stdout.text, 'changed\nls: /bin/vi: No such file or directory\n');
    const next = await runCase(driver, image({ command: ['sh', '-c', 'ls /etc/motd 2>&1; ls /bin/vi'] }), { resources: { diskMiB: 64 } });
    assert.equal(next.stdout.text, 'ls: /etc/motd: No such file or directory\n/bin/vi\n', 'the next run starts from the image');
  });

  it('replaces the cmd with args, and the whole command with command; env adds to the image\'s', async () => {
    const withArgs = await runCase(driver, image({ args: ['echo "$GREETING $EXTRA"'], env: { EXTRA: 'there' } }), { resources: { diskMiB: 64 } });
    assert.equal(withArgs.stdout.text, 'hi there\n');
    const withCommand = await runCase(driver, image({ command: ['echo', 'plain'] }), { resources: { diskMiB: 64 } });
    assert.equal(withCommand.stdout.text, 'plain\n');
  });

  it('refuses an image larger than diskMiB before anything runs', async () => {
    await assert.rejects(runCase(driver, image(), { resources: { diskMiB: 1 } }), /diskMiB/);
    assert.equal(driver.liveSandboxes(), 0);
  });
});

describe('containers through a node', { skip }, () => {
  it('runs a container from a root file system under the node\'s file roots and frees everything', async () => {
    const { startTestNode } = await import('../helpers/node.ts');
    const { node, home, remove } = await startTestNode({ fileRoots: ['images'] });
    try {
      busyboxRootfs(path.join(home, 'images', 'busybox'));
      const oci = node.registry.list().find((d) => d.name === 'oci');
      assert.equal(oci?.probe.available, true, oci?.probe.reason);
      const queued = await node.submit({ kind: 'container', source: { file: 'busybox' }, command: ['sh', '-c', 'echo from a container; exit 4'] });
      const run = await node.waitFor(queued.id);
      assert.equal(run.driver, 'oci');
      assert.equal(run.state, 'failed');
      assert.equal(run.result?.exitCode, 4);
      assert.equal(run.result?.stdout.text, 'from a container\n');
      await assert.rejects(node.submit({ kind: 'container', source: { file: 'busybox' }, command: ['nope'] }), /"nope" does not exist/);
      await node.settled(run.id);
      // Input files, inline and from the blob store, read-only under /in; the stored spec keeps only their hashes.
      const blob = await node.blobs.put(Buffer.from('from a blob\n'));
      const inputs = [{ path: 'data/inline.txt', inline: 'aW5saW5lCg==', encoding: 'base64' as const }, { path: 'blob.txt', blob }];
      const withInputs = await node.waitFor((await node.submit({ kind: 'container', source: { file: 'busybox' }, command: ['cat', '/in/data/inline.txt', '/in/blob.txt'], inputs })).id);
      assert.equal(withInputs.result?.stdout.text, 'inline\nfrom a blob\n', withInputs.reason);
      assert.deepEqual(node.getRecord(withInputs.id).spec.inputs, [{ path: 'data/inline.txt', blob: await node.blobs.put(Buffer.from('inline\n')) }, { path: 'blob.txt', blob }]);
      await node.settled(withInputs.id);
      // The same root file system as an OCI layout in a tar archive (what `skopeo copy … oci-archive:` makes).
      const { entriesOf, tarOf, writeOciLayout } = await import('../helpers/oci-image.ts');
      const layoutDir = path.join(home, 'layout');
      await writeOciLayout(layoutDir, [entriesOf(path.join(home, 'images', 'busybox'))], { Cmd: ['sh', '-c', 'echo from an archive'] });
      (await import('node:fs')).writeFileSync(path.join(home, 'images', 'busybox.tar'), await tarOf(entriesOf(layoutDir)));
      const fromArchive = await node.waitFor((await node.submit({ kind: 'container', source: { file: 'busybox.tar' }, resources: { diskMiB: 64 } })).id);
      assert.equal(fromArchive.result?.stdout.text, 'from an archive\n', fromArchive.reason);
      await node.settled(fromArchive.id);
      assert.deepEqual(node.ledger.free(), node.ledger.capacity);
    } finally {
      await remove();
    }
  });
});

describe('containers leave nothing behind', { skip }, () => {
  it('after 50 sequential and 10 concurrent runs with timeouts and cancels: same processes, mounts, cgroups, namespaces and directories', async () => {
    const root = tempDir('vmesh-oci-leak-');
    const sandboxes = path.join(root.dir, 'sandboxes');
    const stateDir = path.join(root.dir, 'state');
    const { execFileSync } = await import('node:child_process');
    const withNetworks = hasCommand('nft', ['--version']);
    const { leakTestNetworks } = await import('../helpers/leak-networks.ts');
    const { networks, counts, close } = leakTestNetworks(root.dir, '10.217.0.0/24', 'vleak');
    const driver = new OciDriver({ sandboxRoot: sandboxes, stateDir, cgroupParent: '/vmesh/leaktest', ...(withNetworks ? { networks } : {}) });
    const users = String((await driver.probe()).details?.userNamespace);
    if (userNamespacesAllowed() || required('userns')) assert.match(users, /^container ids/, 'each container in a user namespace of its own');
    const roots = defaultRootsDir(sandboxes);
    const snapshot = () => ({
      processes: readdirSync('/proc').filter((p) => /^\d+$/.test(p) && readFileSafe(`/proc/${p}/cmdline`).includes(stateDir)).length,
      children: execFileSync('ps', ['-o', 'pid=', '--ppid', String(process.pid)], { encoding: 'utf8' }).trim().split('\n').filter(Boolean).length,
      mounts: readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(root.dir)).length,
      cgroups: ['/sys/fs/cgroup/memory/vmesh/leaktest', '/sys/fs/cgroup/pids/vmesh/leaktest', '/sys/fs/cgroup/vmesh/leaktest'].filter(existsSync).flatMap((d) => readdirSync(d).filter((e) => e.startsWith('vmesh-'))).length,
      ...counts(),
      sandboxes: existsSync(sandboxes) ? readdirSync(sandboxes).length : 0,
      bundles: existsSync(driver.bundlesDir) ? readdirSync(driver.bundlesDir).length : 0,
      bundleMounts: readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(driver.bundlesDir)).length,
      roots: existsSync(roots) ? readdirSync(roots).length : 0,
      containers: existsSync(stateDir) ? readdirSync(stateDir).length : 0,
    });
    let seq = 0;
    const once = (kind: number) => {
      const id = `leak${++seq}`;
      const network = withNetworks ? { network: { egress: 'internet' as const } } : {};
      const c = withDir(kind === 0 ? sh('echo ok > /out/r', { outputs: ['r'], ...network }) : sh('while :; do :; done', kind === 2 ? network : {}));
      const controller = new AbortController();
      if (kind === 2) setTimeout(() => controller.abort(), 150);
      return runCaseWithId(driver, c, id, { resources: { timeoutMs: kind === 1 ? 150 : 10_000 }, signal: controller.signal });
    };
    try {
      await once(0); // first run: the cgroup parent and state directory exist from here on
      const before = snapshot();
      for (let i = 0; i < 50; i++) await once(i % 3);
      await Promise.all(Array.from({ length: 10 }, (_, i) => once(i % 3)));
      assert.deepEqual(snapshot(), before);
      assert.equal(driver.liveSandboxes(), 0);
    } finally {
      await driver.close();
      await close();
      root.remove();
    }
  });
});

/** What a driver left of its containers: files in the sandbox root and its bundle area, and mounts under either (the area's own aside). */
function leftovers(driver: OciDriver, sandboxes: string): { files: string[]; mounts: string[] } {
  const list = (dir: string) => (existsSync(dir) ? readdirSync(dir).map((e) => path.join(dir, e)) : []);
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m.startsWith(`${sandboxes}/`) || m === sandboxes || m.startsWith(`${driver.bundlesDir}/`));
  return { files: [...list(sandboxes), ...list(driver.bundlesDir)], mounts };
}

function readFileSafe(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** runCase with a run id of the test's choosing (so its cgroups can be recognised). */
async function runCaseWithId(driver: OciDriver, c: Case, id: string, opts: Parameters<typeof runCase>[2]) {
  const { runInSandbox } = await import('../../src/drivers/lifecycle.ts');
  const request = { runId: id, workload: c.workload, code: c.code, sourceDir: rootfs, resources: { vcpus: 0.1, memoryMiB: 32, diskMiB: 4, timeoutMs: 10_000, network: { egressMbps: 0, ingressMbps: 0 }, ...opts?.resources }, outputCapBytes: 4096, outputs: testOutputs().sink };
  return runInSandbox(driver, request, { write() {}, total() {} }, opts?.signal).catch((err: unknown) => err);
}

describe('container networks through a node', { skip: skip || skipUnless('nftables', hasCommand('nft', ['--version']), 'apt-get install nftables') }, () => {
  it('gives a container exactly the egress it asks for, and removes its network after the run', async () => {
    const { startTestNode } = await import('../helpers/node.ts');
    const { createWorld } = await import('../helpers/world.ts');
    const world = await createWorld('vmtest-oci-world', { host: '10.215.0.1', address: '10.215.0.2' }, [7201, 7202], { dnsAnswer: '10.9.8.7' });
    const { node, home, remove } = await startTestNode({ fileRoots: ['images'], network: { range: '10.216.0.0/24', dns: [world.address] } });
    try {
      busyboxRootfs(path.join(home, 'images', 'busybox'));
      const probe = (port: number) => `nc -w 2 ${world.address} ${port} </dev/null || echo unreachable`;
      const container = async (egress: unknown, port: number) => {
        const run = await node.waitFor((await node.submit({ kind: 'container', source: { file: 'busybox' }, command: ['sh', '-c', probe(port)], network: { egress } })).id);
        await node.settled(run.id);
        assert.equal(run.state, 'succeeded', `${run.reason}: ${run.result?.stderr.text}`);
        return run.result!.stdout.text.trim();
      };
      assert.equal(await container('none', 7201), 'unreachable');
      assert.equal(await container('internet', 7201), world.host, 'reached the world, behind the host address');
      assert.equal(await container([{ cidr: `${world.address}/32`, ports: [7202] }], 7202), world.host);
      assert.equal(await container([{ cidr: `${world.address}/32`, ports: [7202] }], 7201), 'unreachable');
      // Names resolve through the node's name servers (network.dns), for a container with egress only.
      const lookup = async (egress: unknown) => {
        const script = 'cat /etc/resolv.conf 2>&1 | grep -v "^#"; nslookup vmesh.example 2>&1 | grep -A1 "^Name:" | tail -1';
        const run = await node.waitFor((await node.submit({ kind: 'container', source: { file: 'busybox' }, command: ['sh', '-c', script], network: { egress } })).id);
        await node.settled(run.id);
        return run.result!.stdout.text;
      };
      assert.equal(await lookup('internet'), `nameserver ${world.address}\nAddress: 10.9.8.7\n`);
      assert.match(await lookup('none'), /^cat: can't open '\/etc\/resolv.conf': No such file or directory\n/, 'no network, no name servers');
      const { readdirSync: ls } = await import('node:fs');
      const { shortTag } = await import('../../src/util/names.ts');
      const prefix = `vmesh-${shortTag(node.id)}-`;
      assert.deepEqual(ls('/run/netns').filter((n) => n.startsWith(prefix)), [], "none of this node's sandbox namespaces is left");
    } finally {
      await remove();
      await world.remove();
    }
  });
});

describe('published container ports', { skip: skip || skipUnless('nftables', hasCommand('nft', ['--version']), 'apt-get install nftables') }, () => {
  it('reports the host port of a published port while the container runs, and serves through it', async () => {
    const { startTestNode } = await import('../helpers/node.ts');
    const { createWorld } = await import('../helpers/world.ts');
    const world = await createWorld('vmtest-port-world', { host: '10.219.0.1', address: '10.219.0.2' }, [7301, 7302]);
    const { node, home, remove } = await startTestNode({ fileRoots: ['images'], network: { range: '10.220.0.0/24' } });
    try {
      busyboxRootfs(path.join(home, 'images', 'busybox'));
      const queued = await node.submit({ kind: 'container', source: { file: 'busybox' }, command: ['sh', '-c', 'echo served | nc -l -p 8080'], network: { ports: [{ guest: 8080 }] } });
      let published: number | undefined;
      for (let i = 0; i < 200 && published === undefined; i++) {
        published = node.getRun(queued.id).network?.ports[0]?.host;
        if (published === undefined) await new Promise((r) => setTimeout(r, 20));
      }
      assert.ok(published !== undefined, 'the run reports its host port');
      const { execFile } = await import('node:child_process');
      const reply = await new Promise<string>((resolve) => {
        const attempt = (n: number) =>
          execFile('ip', ['netns', 'exec', world.netns, 'busybox', 'nc', '-w', '2', world.host, String(published)], (err, stdout) =>
            stdout.includes('served') || n === 0 ? resolve(stdout.trim()) : setTimeout(() => attempt(n - 1), 100),
          );
        attempt(20);
      });
      assert.equal(reply, 'served');
      const run = await node.waitFor(queued.id);
      assert.equal(run.state, 'succeeded', run.reason);
      assert.deepEqual(run.network?.ports, [{ guest: 8080, host: published, protocol: 'tcp' }]);
    } finally {
      await remove();
      await world.remove();
    }
  });
});
