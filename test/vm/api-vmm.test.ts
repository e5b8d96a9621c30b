// The Firecracker and Cloud Hypervisor drivers, run end to end against a stand-in VMM
// (test/fixtures/stand-in-vmm.mjs) because these hosts have neither binary nor a KVM that boots a guest.
// What is real here: the drivers' whole lifecycle (process, API socket, the documented requests in order,
// the console protocol, timeouts, refusals, cleanup, recovery) and, for Cloud Hypervisor, the guest: the
// default guest booted from the VmConfig the driver sent, with virtio on PCI, ending by power-off.
// What is not: the VMMs themselves. test/vm/vmm-binaries.test.ts runs the drivers against the real binaries
// wherever they and KVM are present.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, renameSync, statSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { CloudHypervisorDriver } from '../../src/drivers/cloud-hypervisor/driver.ts';
import type { SandboxRequest } from '../../src/drivers/driver.ts';
import { FirecrackerDriver, type FirecrackerOptions } from '../../src/drivers/firecracker/driver.ts';
import { runInSandbox } from '../../src/drivers/lifecycle.ts';
import { hostTscKhz } from '../../src/drivers/qemu/host.ts';
import type { ApiVmmDriver } from '../../src/drivers/vmm/api-vmm-driver.ts';
import { InvalidInputError, UnsupportedError, type ResolvedResources, type Workload } from '../../src/spec/index.ts';
import { tarEntries, testOutputs } from '../helpers/outputs.ts';
import { COUNTING, startCounting } from '../helpers/counting-guest.ts';
import { hasCommand, skipUnless } from '../helpers/require.ts';
import { BUSYBOX } from '../helpers/rootfs.ts';
import { tempDir } from '../helpers/tmp.ts';
import { leakTestNetworks } from '../helpers/leak-networks.ts';

const guestSkip =
  skipUnless('busybox', existsSync(BUSYBOX), 'apt-get install busybox-static') ||
  skipUnless('apt', hasCommand('apt-get', ['--version']) && hasCommand('dpkg-deb', ['--version']), 'a Debian host with apt-get and dpkg-deb (the guest kernel is fetched with apt-get download)');
const qemuSkip = guestSkip || skipUnless('qemu', hasCommand('qemu-system-x86_64'), 'apt-get install qemu-system-x86');

const STAND_IN = path.resolve('test/fixtures/stand-in-vmm.mjs');
const STAND_IN_JAILER = path.resolve('test/fixtures/stand-in-jailer.sh');
/** The jail's user and group in these tests: ids no account holds. */
const JAIL_ID = 64123;
const jailSkip =
  guestSkip ||
  skipUnless('root', process.getuid?.() === 0, 'run the tests as root (the jailer is started as root)') ||
  skipUnless('setpriv', hasCommand('setpriv', ['--version']), 'apt-get install util-linux') ||
  skipUnless('python3', hasCommand('python3', ['--version']), 'apt-get install python3 (the stand-in attaches taps with it)') ||
  skipUnless('iproute2', hasCommand('ip', ['-V']), 'apt-get install iproute2') ||
  skipUnless('nftables', hasCommand('nft', ['--version']), 'apt-get install nftables');

/** Whether a user that is neither owner nor group can run `file`: it and every directory above it open to others. */
function runnableByOthers(file: string): boolean {
  const real = realpathSync(file);
  if ((statSync(real).mode & 0o001) === 0) return false;
  for (let d = path.dirname(real); ; d = path.dirname(d)) {
    if ((statSync(d).mode & 0o001) === 0) return false;
    if (d === path.dirname(d)) return true;
  }
}
const { sink, blobs } = testOutputs();
let seq = 0;

interface Logged {
  pid: number;
  started?: string[];
  method?: string;
  path?: string;
  body?: Record<string, unknown>;
}

/** A directory with an executable `name` that runs the stand-in as that VMM, and the log of what it was asked. */
function standIn(flavor: 'firecracker' | 'cloud-hypervisor', body?: string) {
  const dir = tempDir(`vmesh-standin-${flavor}-`);
  const log = path.join(dir.dir, 'requests.jsonl');
  const binary = path.join(dir.dir, flavor);
  writeFileSync(binary, body ?? `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(STAND_IN)} ${flavor} ${JSON.stringify(log)} "$@"\n`, { mode: 0o755 });
  const kvm = path.join(dir.dir, 'kvm');
  writeFileSync(kvm, '');
  const kernel = path.join(dir.dir, 'vmlinux');
  writeFileSync(kernel, Buffer.concat([Buffer.from('\x7fELF', 'latin1'), Buffer.alloc(60)]));
  const entries = (): Logged[] => (existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Logged) : []);
  return { dir, binary, kvm, kernel, entries, requests: () => entries().filter((e) => e.path !== undefined) };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const vm = (script: string, extra: Partial<Workload> = {}): Workload => ({ kind: 'microvm', source: { guest: 'default' }, command: ['sh', '-c', script], ...extra });

function request(workload: Workload, resources: Partial<ResolvedResources> = {}): SandboxRequest {
  return {
    runId: `standin${++seq}`,
    workload,
    code: new Uint8Array(0),
    resources: { vcpus: 1, memoryMiB: 128, diskMiB: 8, timeoutMs: 120_000, network: { egressMbps: 0, ingressMbps: 0 }, ...resources },
    outputCapBytes: 65536,
    outputs: sink,
  };
}

async function run(driver: ApiVmmDriver, req: SandboxRequest) {
  const out: string[] = [];
  await driver.validate(req);
  const exit = await runInSandbox(driver, req, { write: (_s, d) => void out.push(Buffer.from(d).toString()), total() {} });
  return { exit, stdout: out.join('') };
}

/** `driver.recover()` kills `orphan`, and only it (killed here should it not be, so that nothing outlives a failure). */
async function killsOrphan(driver: ApiVmmDriver, orphan: ChildProcess): Promise<void> {
  const gone = new Promise((resolve) => orphan.once('exit', resolve));
  try {
    assert.equal(await driver.recover(), 1);
    await gone;
  } finally {
    if (orphan.exitCode === null && orphan.signalCode === null) orphan.kill('SIGKILL');
  }
}

/** Starts a guest that never ends (98 MiB: the stand-in Firecracker's), snapshots it into `snapshot`, and ends it. */
async function snapshotOfSleeper(driver: ApiVmmDriver, snapshot: string) {
  const prepared = await driver.prepare(request(vm('sleep 1000', { outputs: ['r'] }), { memoryMiB: 98 }));
  try {
    const sandbox = await driver.start(prepared, { write() {}, total() {} });
    const manifest = await driver.snapshot(sandbox, snapshot);
    await driver.stop(sandbox, 'cancelled');
    await driver.wait(sandbox);
    return manifest;
  } finally {
    await driver.cleanup(prepared);
  }
}

describe('firecracker driver, against a stand-in VMM', { skip: guestSkip }, () => {
  const fc = standIn('firecracker');
  const root = tempDir('vmesh-fc-');
  const make = (o: Partial<FirecrackerOptions> = {}) => new FirecrackerDriver({ sandboxRoot: root.dir, binary: fc.binary, kvmDevice: fc.kvm, kernel: fc.kernel, apiTimeoutMs: 10_000, ...o });
  const driver = make();
  after(async () => {
    await driver.close();
    root.remove();
    fc.dir.remove();
  });

  it('is available only with the binary, KVM and an uncompressed kernel, and says which is missing', async () => {
    assert.deepEqual(await driver.probe(), { available: true, version: '1.16.1', details: { api: 'written against v1.16.1' } });
    assert.match((await make({ binary: path.join(fc.dir.dir, 'nope') }).probe()).reason ?? '', /not found \(a release binary of Firecracker v1\.16\.1/);
    assert.match((await make({ kvmDevice: path.join(fc.dir.dir, 'no-kvm') }).probe()).reason ?? '', /needs KVM and .*no-kvm is not there/);
    const { kernel: _k, ...noKernel } = { binary: fc.binary, kvmDevice: fc.kvm, kernel: undefined };
    assert.match((await new FirecrackerDriver({ sandboxRoot: root.dir, ...noKernel }).probe()).reason ?? '', /no guest kernel: set drivers\.firecracker\.kernel/);
    const bzImage = path.join(fc.dir.dir, 'bzImage');
    writeFileSync(bzImage, Buffer.alloc(1024));
    assert.match((await make({ kernel: bzImage }).probe()).reason ?? '', /is not an ELF vmlinux/);
  });

  it('boots through the documented requests in order, streams the guest\'s output and leaves nothing behind', async () => {
    const { exit, stdout } = await run(driver, request(vm('echo hi', { outputs: ['r'] }), { vcpus: 2, memoryMiB: 160 }));
    assert.equal(exit.outcome, 'exited', exit.reason);
    assert.equal(exit.exitCode, 0);
    assert.equal(stdout, 'hello from the stand-in firecracker\n');
    const calls = fc.requests();
    const boot = calls.filter((c) => c.path !== '/');
    assert.deepEqual(boot.map((c) => `${c.method} ${c.path}`), ['PUT /logger', 'PUT /metrics', 'PUT /machine-config', 'PUT /boot-source', 'PUT /drives/outputs', 'PUT /balloon', 'PUT /actions']);
    assert.deepEqual(boot[2]!.body, { vcpu_count: 2, mem_size_mib: 160, smt: false, track_dirty_pages: false });
    assert.deepEqual(boot[3]!.body, { kernel_image_path: fc.kernel, initrd_path: 'initrd.cpio', boot_args: 'console=ttyS0 reboot=k panic=1 pci=off quiet loglevel=1' });
    const started = fc.entries().find((e) => e.started)!;
    assert.equal(alive(started.pid), false, 'the VMM process is gone');
    assert.deepEqual(readdirSync(root.dir), [], 'no sandbox directory is left');
    assert.equal(driver.liveSandboxes(), 0);
  });

  it('fails a run whose machine the VMM refuses, with its fault message, and kills the VMM', async () => {
    const before = fc.entries().length;
    await assert.rejects(run(driver, request(vm('true'), { memoryMiB: 97 })), /PUT \/machine-config was refused \(400\): Invalid memory size \(stand-in refusal\)/);
    const started = fc.entries().slice(before).find((e) => e.started)!;
    assert.equal(alive(started.pid), false, 'the refused VMM was killed');
    assert.deepEqual(readdirSync(root.dir), []);
    assert.equal(driver.liveSandboxes(), 0);
  });

  it('stops a guest that never ends at its timeout, and pauses and resumes through PATCH /vm', async () => {
    const { exit } = await run(driver, request(vm('sleep 1000'), { memoryMiB: 98, timeoutMs: 400 }));
    assert.equal(exit.outcome, 'timeout');
    assert.match(exit.reason ?? '', /400 ms/);
    assert.deepEqual(readdirSync(root.dir), []);

    const req = request(vm('sleep 1000'), { memoryMiB: 98 });
    const prepared = await driver.prepare(req);
    try {
      const sandbox = await driver.start(prepared, { write() {}, total() {} });
      await driver.pause(sandbox);
      await driver.resume(sandbox);
      await driver.stop(sandbox, 'cancelled');
      assert.equal((await driver.wait(sandbox)).outcome, 'cancelled');
    } finally {
      await driver.cleanup(prepared);
    }
    assert.deepEqual(fc.requests().slice(-2).map((c) => [c.method, c.path, c.body]), [['PATCH', '/vm', { state: 'Paused' }], ['PATCH', '/vm', { state: 'Resumed' }]]);
    assert.deepEqual(readdirSync(root.dir), []);
  });

  it('snapshots a running guest by PATCH /vm and PUT /snapshot/create, and a new Firecracker goes on from it after PUT /snapshot/load', async () => {
    const scratch = tempDir('vmesh-fc-snap-');
    try {
      const snapshot = path.join(scratch.dir, 'snap');
      const manifest = await snapshotOfSleeper(driver, snapshot);
      assert.deepEqual([manifest.driver, manifest.vmmVersion, manifest.vcpus, manifest.memoryMiB, manifest.outputs], ['firecracker', '1.16.1', 1, 98, ['r']]);
      assert.deepEqual(Object.keys(manifest.files).sort(), ['initrd.cpio', 'memory', 'outputs.img', 'vmstate']);
      assert.deepEqual(fc.requests().slice(-2).map((c) => [c.method, c.path, c.body]), [
        ['PATCH', '/vm', { state: 'Paused' }],
        ['PUT', '/snapshot/create', { snapshot_type: 'Full', snapshot_path: `${snapshot}/vmstate`, mem_file_path: `${snapshot}/memory` }],
      ]);
      assert.deepEqual(readdirSync(snapshot).sort(), ['initrd.cpio', 'manifest.json', 'memory', 'outputs.img', 'vmstate']);

      // A new Firecracker is told nothing but where the snapshot is; the guest it loads goes on and ends.
      const before = fc.entries().length;
      const { exit, stdout } = await run(driver, { ...request(vm('true')), restoreFrom: snapshot });
      assert.equal(exit.outcome, 'exited', exit.reason);
      assert.equal(stdout, 'restored by the stand-in firecracker with 98 MiB\n');
      const restoring = fc.entries().slice(before).filter((e) => e.method !== undefined && e.path !== '/');
      assert.deepEqual(restoring.map((e) => [e.method, e.path, e.body]), [
        ['PUT', '/snapshot/load', { snapshot_path: `${snapshot}/vmstate`, mem_backend: { backend_type: 'File', backend_path: `${snapshot}/memory` }, resume_vm: true }],
      ]);

      // A snapshot that is truncated, or from another Firecracker or driver, is refused before anything starts.
      const bad = () => driver.validate({ ...request(vm('true')), restoreFrom: snapshot });
      const written = JSON.parse(readFileSync(path.join(snapshot, 'manifest.json'), 'utf8')) as Record<string, unknown>;
      truncateSync(path.join(snapshot, 'memory'), 100);
      await assert.rejects(bad(), (e: unknown) => e instanceof InvalidInputError && e.field === 'snapshot' && /memory is 100 bytes, not the 65536 recorded \(truncated or changed\)/.test(e.message));
      writeFileSync(path.join(snapshot, 'manifest.json'), JSON.stringify({ ...written, vmmVersion: '1.15.0' }));
      await assert.rejects(bad(), /snapshot: it was taken with firecracker 1\.15\.0; this node has 1\.16\.1/);
      writeFileSync(path.join(snapshot, 'manifest.json'), JSON.stringify({ ...written, driver: 'cloud-hypervisor' }));
      await assert.rejects(bad(), /snapshot: it was taken by the "cloud-hypervisor" driver, not firecracker/);
      writeFileSync(path.join(snapshot, 'manifest.json'), JSON.stringify({ ...written, files: { ...(written.files as object), '../memory': 100 } }));
      await assert.rejects(bad(), /snapshot: it names a file "\.\.\/memory" outside its directory/);
      assert.deepEqual(readdirSync(root.dir), [], 'no sandbox directory is left');
      assert.equal(driver.liveSandboxes(), 0);
    } finally {
      scratch.remove();
    }
  });

  it('says what the VMM printed when it dies before its API answers', async () => {
    const broken = standIn('firecracker', '#!/bin/sh\n[ "$1" = --version ] && { echo "Firecracker v1.16.1"; exit 0; }\necho "Could not open /dev/kvm: Permission denied" >&2\nexit 1\n');
    const d = new FirecrackerDriver({ sandboxRoot: root.dir, binary: broken.binary, kvmDevice: broken.kvm, kernel: broken.kernel });
    try {
      assert.equal((await d.probe()).available, true);
      await assert.rejects(run(d, request(vm('true'))), /firecracker exited before its API answered: Could not open \/dev\/kvm: Permission denied/);
      assert.deepEqual(readdirSync(root.dir), []);
    } finally {
      broken.dir.remove();
    }
  });

  it('refuses what it cannot run before anything is made', async () => {
    await assert.rejects(driver.validate(request(vm('true'), { vcpus: 33 })), (e: unknown) => e instanceof InvalidInputError && e.field === 'resources.vcpus');
    await assert.rejects(driver.validate({ ...request(vm('true')), kernel: { kernel: fc.kernel } }), (e: unknown) => e instanceof UnsupportedError && /--driver qemu/.test(e.message));
    await assert.rejects(driver.validate({ ...request(vm('true')), restoreFrom: root.dir }), (e: unknown) => e instanceof InvalidInputError && e.field === 'snapshot' && /no manifest\.json/.test(e.message));
    await assert.rejects(driver.validate(request(vm('true'), { memoryMiB: 32 })), (e: unknown) => e instanceof InvalidInputError && e.field === 'resources.memoryMiB');
    assert.deepEqual(readdirSync(root.dir), []);
  });

  it('kills the VMMs a crashed node left, found by their pid files', async () => {
    const left = path.join(root.dir, 'firecracker-crashed-abc');
    mkdirSync(left);
    const { spawn } = await import('node:child_process');
    const orphan = spawn(fc.binary, ['--api-sock', path.join(left, 'api.sock')], { stdio: 'ignore', detached: true });
    writeFileSync(path.join(left, 'vmm.pid'), `${orphan.pid}\n`);
    await new Promise((r) => setTimeout(r, 300));
    await killsOrphan(driver, orphan);
    assert.deepEqual(readdirSync(root.dir), []);
  });
});

describe('firecracker driver under a stand-in jailer', { skip: jailSkip }, () => {
  // The stand-in Firecracker runs as the jail's user, so everything it runs must be reachable by that user.
  const fc = standIn('firecracker');
  chmodSync(fc.dir.dir, 0o755);
  const script = path.join(fc.dir.dir, 'stand-in-vmm.mjs');
  copyFileSync(STAND_IN, script);
  const log = path.join(fc.dir.dir, 'requests.jsonl');
  writeFileSync(log, '', { mode: 0o666 });
  chmodSync(log, 0o666);
  // Node where the jail's user can run it: where it is, or (installed under a private home) a copy here.
  let node = process.execPath;
  if (!runnableByOthers(node)) {
    node = path.join(fc.dir.dir, 'node');
    copyFileSync(process.execPath, node);
    chmodSync(node, 0o755);
  }
  writeFileSync(fc.binary, `#!/bin/sh\nexec ${JSON.stringify(node)} ${JSON.stringify(script)} firecracker ${JSON.stringify(log)} "$@"\n`, { mode: 0o755 });
  chmodSync(fc.kernel, 0o644);
  const root = tempDir('vmesh-fc-jail-');
  const jailer = { binary: STAND_IN_JAILER, uid: JAIL_ID, gid: JAIL_ID };
  const make = (o: Partial<FirecrackerOptions> = {}) => new FirecrackerDriver({ sandboxRoot: root.dir, binary: fc.binary, kvmDevice: fc.kvm, kernel: fc.kernel, apiTimeoutMs: 10_000, jailer, ...o });
  const driver = make();
  after(async () => {
    await driver.close();
    root.remove();
    fc.dir.remove();
  });
  const started = (from: number) => fc.entries().slice(from).filter((e) => e.started) as (Logged & { uid: number; gid: number; chroot?: string })[];

  it('is available only with a jailer of Firecracker\'s release and an unprivileged user, and says which is missing', async () => {
    assert.deepEqual(await driver.probe(), { available: true, version: '1.16.1', details: { api: 'written against v1.16.1', jailer: 'uid 64123–64378, gid 64123–64378' } });
    assert.match((await make({ jailer: { ...jailer, binary: path.join(fc.dir.dir, 'no-jailer') } }).probe()).reason ?? '', /the jailer .*no-jailer was not found/);
    const old = path.join(fc.dir.dir, 'old-jailer');
    writeFileSync(old, '#!/bin/sh\necho "Jailer v1.15.0"\n', { mode: 0o755 });
    assert.match((await make({ jailer: { ...jailer, binary: old } }).probe()).reason ?? '', /is v1\.15\.0, not v1\.16\.1 like firecracker: use the two binaries of one release/);
    assert.match((await make({ jailer: { ...jailer, uid: 0 } }).probe()).reason ?? '', /drivers\.firecracker\.jailer\.uid: expected an unprivileged id/);
    // Jails are built only where no one but root can swap the directories under them.
    const open = tempDir('vmesh-fc-jail-open-');
    try {
      chmodSync(open.dir, 0o777);
      const careless = make({ sandboxRoot: path.join(open.dir, 'sandboxes') });
      assert.match((await careless.probe()).reason ?? '', /vmesh-fc-jail-open-\w+ is not root's alone \(owner 0, mode 777\): jails are built only under directories that only root can change/);
      await assert.rejects(run(careless, request(vm('true'))), /is not root's alone/);
      assert.equal(existsSync(path.join(open.dir, 'sandboxes')) ? readdirSync(path.join(open.dir, 'sandboxes')).length : 0, 0, 'no sandbox is left');
    } finally {
      open.remove();
    }
  });

  it('boots a jailed Firecracker as the jail\'s user, every file it opens inside its chroot, and leaves nothing behind', async () => {
    const before = fc.entries().length;
    const req = request(vm('echo hi', { outputs: ['r'] }));
    const { exit, stdout } = await run(driver, req);
    assert.equal(exit.outcome, 'exited', exit.reason);
    assert.equal(stdout, 'hello from the stand-in firecracker\n');
    const vmm = started(before)[0]!;
    assert.deepEqual([vmm.uid, vmm.gid], [JAIL_ID, JAIL_ID], 'Firecracker ran as the jail\'s user');
    assert.match(vmm.chroot ?? '', new RegExp(`^${root.dir}/firecracker-${req.runId}-\\w{6}/jail/firecracker/${req.runId}/root$`));
    assert.deepEqual(vmm.started!.slice(0, 2), ['--id', req.runId], 'the jailer execs Firecracker with its id first');
    assert.deepEqual(vmm.started!.slice(-2), ['--api-sock', '/run/firecracker.socket']);
    const calls = fc.entries().slice(before).filter((c) => c.path !== undefined && c.path !== '/');
    assert.deepEqual(calls.map((c) => `${c.method} ${c.path}`), ['PUT /logger', 'PUT /metrics', 'PUT /machine-config', 'PUT /boot-source', 'PUT /drives/outputs', 'PUT /balloon', 'PUT /actions']);
    // Names inside the chroot; the stand-in opened each as the jail's user (read, or read-write for the drive and logs).
    assert.deepEqual(calls[3]!.body, { kernel_image_path: 'vmlinux', initrd_path: 'initrd.cpio', boot_args: 'console=ttyS0 reboot=k panic=1 pci=off quiet loglevel=1' });
    assert.equal((calls[4]!.body as { path_on_host: string }).path_on_host, 'outputs.img');
    assert.equal(alive(vmm.pid), false);
    assert.deepEqual(readdirSync(root.dir), [], 'no sandbox directory, so no chroot, is left');
    assert.equal(driver.liveSandboxes(), 0);
    assert.equal(statSync(fc.kernel).uid, 0, 'the operator\'s kernel is still root\'s');
  });

  it('copies a kernel that the jail\'s user cannot read, and gives the copy; links what a symbolic link names', async () => {
    const secret = path.join(fc.dir.dir, 'vmlinux-0600');
    copyFileSync(fc.kernel, secret);
    chmodSync(secret, 0o600);
    const { exit } = await run(make({ kernel: secret }), request(vm('true')));
    assert.equal(exit.outcome, 'exited', exit.reason);
    assert.equal(statSync(secret).uid, 0);
    assert.equal(statSync(secret).mode & 0o777, 0o600);
    const linked = path.join(fc.dir.dir, 'vmlinux-current');
    symlinkSync('vmlinux', linked);
    const again = await run(make({ kernel: linked }), request(vm('true')));
    assert.equal(again.exit.outcome, 'exited', again.exit.reason);
  });

  it('gives each live jail a user of its own, and takes it back when the VM ends or its jailer fails', async () => {
    const before = fc.entries().length;
    const prepared = [await driver.prepare(request(vm('sleep 1000'), { memoryMiB: 98 })), await driver.prepare(request(vm('sleep 1000'), { memoryMiB: 98 }))];
    try {
      for (const p of prepared) await driver.stop(await driver.start(p, { write() {}, total() {} }), 'cancelled');
    } finally {
      for (const p of prepared) await driver.cleanup(p);
    }
    assert.deepEqual(started(before).map((e) => [e.uid, e.gid]), [[JAIL_ID, JAIL_ID], [JAIL_ID + 1, JAIL_ID + 1]]);

    const refusing = path.join(fc.dir.dir, 'refusing-jailer');
    writeFileSync(refusing, '#!/bin/sh\n[ "$1" = --version ] && { echo "Jailer v1.16.1"; exit 0; }\necho "Jailer error: Failed to create cgroup (stand-in)" >&2\nexit 1\n', { mode: 0o755 });
    await assert.rejects(run(make({ jailer: { ...jailer, binary: refusing } }), request(vm('true'))), /firecracker exited before its API answered: Jailer error: Failed to create cgroup \(stand-in\)/);
    assert.deepEqual(readdirSync(root.dir), [], 'the failed jail\'s directory is gone');

    const next = fc.entries().length;
    assert.equal((await run(driver, request(vm('true')))).exit.outcome, 'exited');
    assert.deepEqual(started(next).map((e) => e.uid), [JAIL_ID], 'the first user is free again');
  });

  it('snapshots inside the chroot, moves the snapshot out as root\'s, and a new jailed Firecracker goes on from it', async () => {
    const scratch = tempDir('vmesh-fc-jail-snap-');
    try {
      const snapshot = path.join(scratch.dir, 'snap');
      const manifest = await snapshotOfSleeper(driver, snapshot);
      assert.deepEqual(Object.keys(manifest.files).sort(), ['initrd.cpio', 'memory', 'outputs.img', 'vmstate']);
      assert.deepEqual(fc.requests().slice(-1).map((c) => [c.method, c.path, c.body]), [['PUT', '/snapshot/create', { snapshot_type: 'Full', snapshot_path: 'vmstate', mem_file_path: 'memory' }]]);
      for (const f of ['vmstate', 'memory']) {
        const st = statSync(path.join(snapshot, f));
        assert.deepEqual([st.uid, st.mode & 0o777], [0, 0o600], `${f} is root's again`);
      }
      const before = fc.entries().length;
      const { exit, stdout } = await run(driver, { ...request(vm('true')), restoreFrom: snapshot });
      assert.equal(exit.outcome, 'exited', exit.reason);
      assert.equal(stdout, 'restored by the stand-in firecracker with 98 MiB\n');
      const loading = fc.entries().slice(before).filter((e) => e.method !== undefined && e.path !== '/');
      assert.deepEqual(loading.map((e) => [e.path, e.body]), [['/snapshot/load', { snapshot_path: 'restore-vmstate', mem_backend: { backend_type: 'File', backend_path: 'restore-memory' }, resume_vm: true }]]);
      assert.equal(statSync(path.join(snapshot, 'memory')).uid, 0, 'the restore used a copy: the snapshot stays root\'s');
      assert.deepEqual(readdirSync(root.dir), []);
    } finally {
      scratch.remove();
    }
  });

  it('takes no link out of a jail: a snapshot file that is a symbolic or a hard link is refused, and what it names is untouched', async () => {
    const canary = path.join(fc.dir.dir, 'canary');
    writeFileSync(canary, 'host file');
    chmodSync(canary, 0o644);
    chownSync(canary, JAIL_ID + 77, JAIL_ID + 77);
    // 99 MiB: the stand-in leaves a symbolic link to the canary as its memory file; 100 MiB: a hard link to the initramfs.
    for (const memoryMiB of [99, 100]) {
      const scratch = tempDir('vmesh-fc-jail-hostile-');
      try {
        const prepared = await driver.prepare(request(vm('sleep 1000'), { memoryMiB }));
        try {
          const sandbox = await driver.start(prepared, { write() {}, total() {} });
          await assert.rejects(driver.snapshot(sandbox, path.join(scratch.dir, 'snap')), /the jail's memory is not a plain file of the jail's own \(a link put in its place\?\)/);
          await driver.stop(sandbox, 'cancelled');
          await driver.wait(sandbox);
          assert.equal(existsSync(path.join(scratch.dir, 'snap', 'memory')), false, `${memoryMiB} MiB: nothing was taken as the memory`);
          assert.equal(statSync(path.join(prepared.dir, 'initrd.cpio')).uid, JAIL_ID, `${memoryMiB} MiB: the initramfs is still the jail's`);
        } finally {
          await driver.cleanup(prepared);
        }
      } finally {
        scratch.remove();
      }
    }
    const st = statSync(canary);
    assert.deepEqual([st.uid, st.mode & 0o777, readFileSync(canary, 'utf8')], [JAIL_ID + 77, 0o644, 'host file']);
    assert.deepEqual(readdirSync(root.dir), []);
  });

  it('speaks to a running jailed VM only through the socket its Firecracker made', async () => {
    const req = request(vm('sleep 1000'), { memoryMiB: 98 });
    const prepared = await driver.prepare(req);
    try {
      const sandbox = await driver.start(prepared, { write() {}, total() {} });
      await driver.pause(sandbox);
      const [dir] = readdirSync(root.dir).filter((n) => n.startsWith(`firecracker-${req.runId}-`));
      const socket = path.join(root.dir, dir!, 'jail/firecracker', req.runId, 'root/run/firecracker.socket');
      renameSync(socket, `${socket}.moved`);
      symlinkSync(`${socket}.moved`, socket);
      await assert.rejects(driver.resume(sandbox), /the jail's API socket is not the one its Firecracker made/);
      await driver.stop(sandbox, 'cancelled');
      await driver.wait(sandbox);
    } finally {
      await driver.cleanup(prepared);
    }
    assert.deepEqual(readdirSync(root.dir), []);
  });

  it('joins the sandbox\'s network namespace through --netns and opens a tap made the jail user\'s; nothing is left', async () => {
    const leases = tempDir('vmesh-fc-jail-net-');
    const { networks, counts, close } = leakTestNetworks(leases.dir, '10.226.0.0/24', 'vjail');
    const d = make({ networks });
    try {
      const before = fc.entries().length;
      const { exit } = await run(d, request(vm('true', { network: { egress: 'internet' } }), { network: { egressMbps: 0, ingressMbps: 5 } }));
      assert.equal(exit.outcome, 'exited', exit.reason);
      const nic = fc.entries().slice(before).find((e) => e.path?.startsWith('/network-interfaces/'));
      assert.equal(nic?.body?.host_dev_name, 'tap0', 'the stand-in attached the tap, which exists only in the sandbox\'s namespace, as the jail\'s user');
      assert.deepEqual(counts(), { interfaces: 0, namespaces: 0, leases: 0 });
      assert.deepEqual(readdirSync(root.dir).filter((n) => n.startsWith('firecracker-')), []);
    } finally {
      await d.close();
      await close();
      leases.remove();
    }
  });

  it('kills a jailed Firecracker a crashed node left, known by its --id', async () => {
    const left = path.join(root.dir, 'firecracker-rcrashed0000-abcdef');
    mkdirSync(path.join(left, 'jail'), { recursive: true });
    const { spawn } = await import('node:child_process');
    const args = ['--id', 'rcrashed0000', '--exec-file', fc.binary, '--uid', String(JAIL_ID), '--gid', String(JAIL_ID), '--chroot-base-dir', path.join(left, 'jail'), '--', '--api-sock', '/run/firecracker.socket'];
    const orphan = spawn(STAND_IN_JAILER, args, { stdio: 'ignore', detached: true });
    writeFileSync(path.join(left, 'vmm.pid'), `${orphan.pid}\n`);
    const socket = path.join(left, 'jail/firecracker/rcrashed0000/root/run/firecracker.socket');
    for (let i = 0; i < 100 && !existsSync(socket); i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(existsSync(socket), 'the orphan is up');
    assert.ok(!readFileSync(`/proc/${orphan.pid}/cmdline`, 'utf8').includes(left), 'its command line does not name its directory');
    await killsOrphan(driver, orphan);
    assert.deepEqual(readdirSync(root.dir), []);
  });
});

describe('cloud-hypervisor driver, against a stand-in that boots its VmConfig in QEMU', { skip: qemuSkip }, () => {
  const ch = standIn('cloud-hypervisor');
  const root = tempDir('vmesh-ch-');
  const driver = new CloudHypervisorDriver({ sandboxRoot: root.dir, binary: ch.binary, kvmDevice: ch.kvm, apiTimeoutMs: 10_000 });
  after(async () => {
    await driver.close();
    root.remove();
    ch.dir.remove();
  });

  it('runs a command in the default guest on virtio-pci, returns its output file, and the guest ends by powering off', async () => {
    const tsc = await hostTscKhz();
    if (tsc !== undefined) process.env.STAND_IN_APPEND = `tsc_early_khz=${tsc}`; // TCG, as the qemu driver does
    assert.deepEqual(await driver.probe(), { available: true, version: '53.0', details: { api: 'written against v53.0' } });
    const { exit, stdout } = await run(driver, request(vm('echo pci; ls /sys/bus/pci/drivers | grep -c virtio; echo made > /out/r.txt; exit 3', { outputs: ['r.txt'] }), { memoryMiB: 192 }));
    assert.equal(exit.outcome, 'exited', exit.reason);
    assert.equal(exit.exitCode, 3);
    assert.equal(stdout.split('\n')[0], 'pci');
    assert.ok(Number(stdout.split('\n')[1]) >= 1, `virtio_pci drives the guest's devices (${JSON.stringify(stdout)})`);
    const entries = await tarEntries((await blobs.fileOf(exit.outputs.archive!.blob))!);
    assert.deepEqual(entries.map((e) => [e.name, e.body.toString()]), [['r.txt', 'made\n']]);
    const calls = ch.requests().filter((c) => c.path !== '/api/v1/vmm.ping');
    assert.deepEqual(calls.map((c) => `${c.method} ${c.path}`), ['PUT /api/v1/vm.create', 'PUT /api/v1/vm.boot']);
    assert.equal((calls[0]!.body as { memory: { size: number } }).memory.size, 192 * 2 ** 20);
    assert.deepEqual(readdirSync(root.dir), []);
    assert.equal(driver.liveSandboxes(), 0);
  });

  it('pauses a guest by vm.pause, snapshots it by vm.snapshot, and a new Cloud Hypervisor goes on counting from it after vm.restore', async () => {
    const scratch = tempDir('vmesh-ch-snap-');
    const counter = (extra: Partial<SandboxRequest> = {}) => startCounting(driver, { ...request(vm(COUNTING, { outputs: ['n'] }), { memoryMiB: 192 }), ...extra });
    const settle = () => new Promise((r) => setTimeout(r, 600));
    try {
      const first = await counter();
      await first.until((n) => n.length >= 3, 'the guest to count to 3');
      const snapshot = path.join(scratch.dir, 'snap');
      const manifest = await driver.snapshot(first.running, snapshot);
      assert.deepEqual([manifest.driver, manifest.memoryMiB, manifest.outputs], ['cloud-hypervisor', 192, ['n']]);
      await settle();
      const seen = first.numbers();
      await settle();
      assert.equal(first.numbers().length, seen.length, 'the snapshot left the guest paused');
      assert.deepEqual(seen, seen.map((_, i) => i + 1), 'the counter had no gaps');
      assert.equal((await first.end()).outcome, 'cancelled');
      const taken = ch.requests().filter((c) => c.path !== '/api/v1/vmm.ping').slice(-2);
      assert.deepEqual(taken.map((c) => [c.method, c.path, c.body]), [['PUT', '/api/v1/vm.pause', undefined], ['PUT', '/api/v1/vm.snapshot', { destination_url: `file://${snapshot}` }]]);
      // The stand-in's files (as Cloud Hypervisor names its own) and vmesh's.
      assert.deepEqual(readdirSync(snapshot).sort(), ['config.json', 'initrd.cpio', 'manifest.json', 'memory-ranges', 'outputs.img', 'state.json']);

      const before = ch.entries().length;
      const second = await counter({ restoreFrom: snapshot });
      await second.until((n) => n.length >= 3, 'the restored guest to count');
      const restored = second.numbers();
      const last = seen.at(-1)!;
      assert.ok(restored[0]! > last && restored[0]! <= last + 2, `the restored guest went on from ${last} with ${restored.slice(0, 3).join(', ')}`);
      assert.equal((await second.end()).outcome, 'cancelled');
      const restoring = ch.entries().slice(before).filter((e) => e.method !== undefined && e.path !== '/api/v1/vmm.ping');
      assert.deepEqual(restoring.map((e) => [e.method, e.path, e.body]), [['PUT', '/api/v1/vm.restore', { source_url: `file://${snapshot}`, prefault: false }], ['PUT', '/api/v1/vm.resume', undefined]]);
      assert.deepEqual(readdirSync(root.dir), [], 'no sandbox directory is left');
      assert.equal(driver.liveSandboxes(), 0);
    } finally {
      scratch.remove();
    }
  });

  it('fails a run whose VM the VMM refuses, with what it said, and leaves nothing', async () => {
    await assert.rejects(run(driver, request(vm('true'), { memoryMiB: 97 })), /PUT \/api\/v1\/vm\.create was refused \(400\): Error creating VM: invalid memory size/);
    const started = ch.entries().filter((e) => e.started).at(-1)!;
    assert.equal(alive(started.pid), false);
    assert.deepEqual(readdirSync(root.dir), []);
  });
});
