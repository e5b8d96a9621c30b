// In test/vm: these run after every other test, alone, because guests booting under TCG load every core
// and would starve the timing-sensitive tests running beside them.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { SandboxRequest } from '../../src/drivers/driver.ts';
import { QemuDriver } from '../../src/drivers/qemu/driver.ts';
import { cpioArchive } from '../../src/guest/cpio.ts';
import { InvalidInputError, InvalidSourceError, type Workload } from '../../src/spec/index.ts';
import { tarEntries, testOutputs } from '../helpers/outputs.ts';
import { COUNTING, startCounting } from '../helpers/counting-guest.ts';
import { hasCommand, skipUnless } from '../helpers/require.ts';
import { BUSYBOX } from '../helpers/rootfs.ts';
import { tempDir } from '../helpers/tmp.ts';
import { driverCompliance, runCase, type Case } from '../drivers/compliance.ts';
import { guestCase, guestFixtures } from '../drivers/guest-cases.ts';

// Real QEMU (TCG on these hosts) booting the real default guest: Debian's kernel, fetched once with apt-get
// download into the shared guest cache, and busybox-static.
const skip =
  skipUnless('qemu', hasCommand('qemu-system-x86_64'), 'apt-get install qemu-system-x86') ||
  skipUnless('busybox', existsSync(BUSYBOX), 'apt-get install busybox-static') ||
  skipUnless('apt', hasCommand('apt-get', ['--version']) && hasCommand('dpkg-deb', ['--version']), 'a Debian host with apt-get and dpkg-deb (the guest kernel is fetched with apt-get download)');

const vm = guestCase;

// Several guests boot at once in one case: under TCG on two cores that takes a while.
const VM_RESOURCES = { memoryMiB: 96, vcpus: 1, timeoutMs: 180_000 };

driverCompliance(
  'qemu',
  (sandboxRoot) => new QemuDriver({ sandboxRoot }),
  guestFixtures,
  { skip, memoryBombMiB: 96, resources: VM_RESOURCES },
);

describe('qemu driver', { skip }, () => {
  const root = tempDir('vmesh-qemu-');
  const driver = new QemuDriver({ sandboxRoot: root.dir });
  const { sink, blobs } = testOutputs();
  before(async () => {
    assert.equal((await driver.probe()).available, true);
  });
  after(async () => {
    await driver.close();
    root.remove();
  });
  const run = (c: Case, resources: object = {}) => runCase(driver, c, { resources: { ...VM_RESOURCES, ...resources } });

  it('runs a command in the guest with its env, stdin, workdir and read-only input files, sees the memory it was given, and returns an output directory as a tar', async () => {
    const script =
      'read line; echo "$line $GREETING $(pwd)"; grep MemTotal /proc/meminfo; mkdir -p /out/report; echo one > /out/report/a.txt; ln -s /etc/passwd /out/report/pw; cat /in/d/x.txt; (echo y >> /in/d/x.txt) 2>/dev/null || echo refused';
    const c = vm(script, { env: { GREETING: "it's me" }, stdin: 'from stdin\n', workdir: '/tmp', outputs: ['report'] });
    const { runInSandbox } = await import('../../src/drivers/lifecycle.ts');
    const chunks: string[] = [];
    const exit = await runInSandbox(
      driver,
      {
        runId: 'qemu1',
        workload: c.workload,
        code: c.code,
        resources: { vcpus: 1, memoryMiB: 128, diskMiB: 8, timeoutMs: 120_000, network: { egressMbps: 0, ingressMbps: 0 } },
        outputCapBytes: 65536,
        outputs: sink,
        inputs: [{ path: 'd/x.txt', bytes: 6, data: Buffer.from('input\n') }],
      },
      { write: (_s, d) => void chunks.push(Buffer.from(d).toString()), total() {} },
    );
    assert.equal(exit.outcome, 'exited', exit.reason);
    assert.equal(exit.exitCode, 0);
    const [first, mem, input, write] = chunks.join('').split('\n');
    assert.deepEqual([input, write], ['input', 'refused'], 'the input file is there and read-only');
    assert.equal(first, "from stdin it's me /tmp");
    const kib = Number(/MemTotal:\s+(\d+) kB/.exec(mem ?? '')?.[1]);
    assert.ok(kib > 0.6 * 128 * 1024 && kib <= 128 * 1024, `the guest sees ${kib} KiB of its 128 MiB`);
    assert.deepEqual(exit.outputs.files.map((f) => f.path), ['report/a.txt']);
    assert.deepEqual(exit.outputs.skipped, [{ path: 'report/pw', reason: 'a symlink (never followed)' }]);
    const entries = await tarEntries((await blobs.fileOf(exit.outputs.archive!.blob))!);
    assert.deepEqual(entries.map((e) => [e.name, e.body.toString()]), [['report/', ''], ['report/a.txt', 'one\n']]);
  });

  it('holds the guest\'s disk to resources.disk (QEMU block throttling), measured beside an unthrottled run', async () => {
    // 4 MiB written with O_DIRECT onto the outputs disk, timed by the guest's own clock.
    const script = 'a=$(cut -d" " -f1 /proc/uptime); dd if=/dev/zero of=/dev/vda bs=64k count=64 oflag=direct 2>/dev/null; b=$(cut -d" " -f1 /proc/uptime); echo "$a $b"';
    const elapsed = async (disk?: { bps: number }) => {
      const { exit, stdout } = await run(vm(script, { outputs: ['none'] }), { diskMiB: 8, ...(disk === undefined ? {} : { disk }) });
      assert.equal(exit.exitCode, 0, exit.reason);
      const [a, b] = stdout.text.trim().split(' ').map(Number);
      return b! - a!;
    };
    const free = await elapsed();
    const held = await elapsed({ bps: 2 ** 20 });
    console.log(`# 4 MiB onto the guest's disk: ${free.toFixed(2)} s unthrottled, ${held.toFixed(2)} s at 1 MiB/s`);
    assert.ok(held > 4 * 0.85 && held < 4 * 1.15, `at 1 MiB/s, 4 MiB took ${held} s (expected 4 s within 15%)`);
    assert.ok(free < held / 2, `unthrottled it took ${free} s`);
  });

  it('refuses what it cannot run before anything is created', async () => {
    await assert.rejects(run({ ...vm(''), workload: { kind: 'microvm', source: { guest: 'default' } } }), (e: unknown) => e instanceof InvalidInputError && e.field === 'command');
    await assert.rejects(run(vm('true'), { memoryMiB: 32 }), (e: unknown) => e instanceof InvalidInputError && e.field === 'resources.memoryMiB');
    await assert.rejects(run({ ...vm('true'), workload: { kind: 'microvm', source: { inline: 'x' }, command: ['true'] } }), (e: unknown) => e instanceof InvalidSourceError && e.field === 'source');
    assert.deepEqual(readdirSync(root.dir), []);
  });

  it('is unavailable, saying why, when VMESH_QEMU_ACCEL names no accelerator', async () => {
    process.env.VMESH_QEMU_ACCEL = 'warp';
    try {
      const probe = await new QemuDriver({ sandboxRoot: root.dir }).probe();
      assert.equal(probe.available, false);
      assert.equal(probe.reason, 'VMESH_QEMU_ACCEL is "warp"; expected kvm, tcg or auto');
    } finally {
      delete process.env.VMESH_QEMU_ACCEL;
    }
  });

  it('chooses its accelerator by booting a guest under KVM once, keeps the verdict per host, and says so', async () => {
    const none = new QemuDriver({ sandboxRoot: root.dir, kvmDevice: path.join(root.dir, 'no-kvm') });
    assert.deepEqual((await none.probe()).details, { accel: 'tcg', machine: 'microvm', kvm: `no usable ${path.join(root.dir, 'no-kvm')}` });
    // A KVM device that opens: whether a guest boots under it is for the probe to find out (here, with no real
    // KVM, QEMU refuses; on a host with a working KVM it boots and the driver takes KVM).
    const scratch = tempDir('vmesh-kvm-');
    try {
      const kvmDevice = path.join(scratch.dir, 'kvm');
      writeFileSync(kvmDevice, '');
      const options = { sandboxRoot: root.dir, kvmDevice, kvmVerdictFile: path.join(scratch.dir, 'verdict.json'), kvmProbeTimeoutMs: 20_000 };
      const first = new QemuDriver(options);
      assert.match(String((await first.probe()).details?.kvm), /^not probed yet/);
      const { exit, stdout } = await runCase(first, vm('echo after the probe'), { resources: VM_RESOURCES });
      assert.equal(exit.exitCode, 0, exit.reason);
      assert.equal(stdout.text, 'after the probe\n');
      const verdict = JSON.parse(readFileSync(options.kvmVerdictFile, 'utf8')) as { boots: boolean; reason: string; key: string };
      const hasKvm = existsSync('/dev/kvm');
      if (!hasKvm) assert.equal(verdict.boots, false, verdict.reason);
      assert.match(verdict.reason, verdict.boots ? /booted under KVM and reported in \d+ ms/ : /QEMU could not boot a guest under KVM|did not report within/);
      assert.deepEqual(first.status().details, { accel: verdict.boots ? 'kvm' : 'tcg', machine: 'microvm', kvm: verdict.reason });
      // Another driver (a restarted node) takes the verdict as it is.
      const second = new QemuDriver(options);
      assert.deepEqual((await second.probe()).details, first.status().details);
      assert.deepEqual(readdirSync(root.dir), [], 'the probe left nothing');
    } finally {
      scratch.remove();
    }
  });

  it('a guest killed from outside (kill -9 of QEMU) ends crashed, and everything is freed', async () => {
    const { runInSandbox } = await import('../../src/drivers/lifecycle.ts');
    const c = vm('sleep 600');
    const request = { runId: 'qemukill', workload: c.workload, code: c.code, resources: { vcpus: 1, memoryMiB: 96, diskMiB: 4, timeoutMs: 120_000, network: { egressMbps: 0, ingressMbps: 0 } }, outputCapBytes: 1024, outputs: sink };
    const exit = await runInSandbox(driver, request, { write() {}, total() {} }, undefined, {
      onRunning: () => {
        setTimeout(() => {
          const pidFile = readdirSync(root.dir).map((d) => `${root.dir}/${d}/qemu.pid`).find(existsSync);
          if (pidFile) process.kill(Number(readFileSync(pidFile, 'utf8')), 'SIGKILL');
        }, 1500);
      },
    });
    assert.equal(exit.outcome, 'crashed');
    assert.match(exit.reason ?? '', /without reporting an exit code/);
    assert.equal(driver.liveSandboxes(), 0);
    assert.deepEqual(readdirSync(root.dir), []);
  });
});

describe('qemu with the user\'s own kernel and initramfs', { skip }, () => {
  const root = tempDir('vmesh-qemu-own-');
  const driver = new QemuDriver({ sandboxRoot: path.join(root.dir, 'sandboxes') });
  let kernel = '';
  /** An initramfs of its own: a static busybox and an /init script, with no vmesh agent. */
  const initrd = (name: string, script: string) => {
    const file = path.join(root.dir, name);
    writeFileSync(file, cpioArchive([{ type: 'dir', name: 'bin' }, { type: 'file', name: 'bin/busybox', data: readFileSync(BUSYBOX), mode: 0o755 }, { type: 'file', name: 'init', data: `#!/bin/busybox sh\n${script}\n`, mode: 0o755 }]));
    return file;
  };
  const own = (files: { kernel: string; initrd?: string; rootfs?: string }, extra: Partial<Workload> = {}, diskMiB = 4): SandboxRequest => ({
    runId: `own${Math.random().toString(36).slice(2, 8)}`,
    workload: { kind: 'microvm', source: { kernel: 'k', initrd: 'i' }, ...extra },
    code: new Uint8Array(0),
    kernel: files,
    resources: { vcpus: 1, memoryMiB: 96, diskMiB, timeoutMs: 120_000, network: { egressMbps: 0, ingressMbps: 0 } },
    outputCapBytes: 65536,
    outputs: testOutputs().sink,
  });
  let bzImage = '';
  let modulesDir = '';
  let blockModules: string[] = [];
  before(async () => {
    assert.equal((await driver.probe()).available, true);
    const { defaultGuestCache, ensureGuestImage } = await import('../../src/guest/image.ts');
    const image = await ensureGuestImage({ cacheDir: defaultGuestCache() });
    kernel = image.vmlinux ?? image.kernel;
    const { debianKernel } = await import('../../src/guest/kernel.ts');
    const k = await debianKernel(defaultGuestCache());
    bzImage = k.vmlinuz;
    modulesDir = k.modulesDir;
    blockModules = k.modules.filter((m) => ['virtio', 'virtio_ring', 'virtio_mmio', 'virtio_blk'].includes(m));
  });
  after(async () => {
    await driver.close();
    root.remove();
  });

  it('boots it (an uncompressed PVH vmlinux, and a bzImage), returns its console as stdout, and ends when it powers off; a panic ends it crashed', async () => {
    if (hasCommand('xz')) assert.notEqual(kernel, bzImage, 'the default guest boots the kernel unpacked (xz is here)');
    const { runInSandbox } = await import('../../src/drivers/lifecycle.ts');
    let out = '';
    const io = { write: (_s: string, d: Uint8Array) => void (out += Buffer.from(d).toString()), total() {} };
    const ok = own({ kernel, initrd: initrd('ok.cpio', '/bin/busybox echo hello from my own kernel; /bin/busybox reboot -f') });
    await driver.validate(ok);
    const exit = await runInSandbox(driver, ok, io);
    assert.equal(exit.outcome, 'exited', exit.reason);
    assert.equal(exit.exitCode, 0);
    assert.match(out, /hello from my own kernel/);
    const panics = own({ kernel: bzImage, initrd: initrd('panic.cpio', 'exit 3') });
    await driver.validate(panics);
    const crashed = await runInSandbox(driver, panics, { write() {}, total() {} });
    assert.equal(crashed.outcome, 'crashed');
    assert.match(crashed.reason!, /^the guest kernel panicked: Kernel panic - not syncing: Attempted to kill init/);
    assert.equal(driver.liveSandboxes(), 0);
  });

  it('attaches a root disk of its own as /dev/vda: the guest reads and writes it, and the image file stays as it was', async () => {
    const { runInSandbox } = await import('../../src/drivers/lifecycle.ts');
    const { sha256File } = await import('../../src/blobs/blob-store.ts');
    // A raw disk (the guest's kernel would mount a file system on it; this one reads and writes blocks).
    const disk = path.join(root.dir, 'root.img');
    writeFileSync(disk, Buffer.concat([Buffer.from('hello from the root disk\n'), Buffer.alloc(2 ** 20)]));
    const before = await sha256File(disk);
    const modules = blockModules.map((m) => ({ type: 'file' as const, name: `lib/modules/${m}.ko`, data: readFileSync(path.join(modulesDir, `${m}.ko`)) }));
    const script = [
      '/bin/busybox mkdir -p /dev && /bin/busybox mount -t devtmpfs devtmpfs /dev',
      `for m in ${blockModules.join(' ')}; do /bin/busybox insmod /lib/modules/$m.ko; done`,
      '/bin/busybox head -c 25 /dev/vda',
      'echo "written by the guest" | /bin/busybox dd of=/dev/vda bs=512 seek=8 conv=notrunc 2>/dev/null',
      '/bin/busybox dd if=/dev/vda bs=512 skip=8 count=1 2>/dev/null | /bin/busybox head -n 1',
      '/bin/busybox reboot -f',
    ].join('\n');
    const file = path.join(root.dir, 'disk.cpio');
    writeFileSync(file, cpioArchive([{ type: 'dir', name: 'bin' }, { type: 'file', name: 'bin/busybox', data: readFileSync(BUSYBOX), mode: 0o755 }, { type: 'dir', name: 'lib' }, { type: 'dir', name: 'lib/modules' }, ...modules, { type: 'file', name: 'init', data: `#!/bin/busybox sh\n${script}\n`, mode: 0o755 }]));
    let out = '';
    const io = { write: (_s: string, d: Uint8Array) => void (out += Buffer.from(d).toString()), total() {} };
    const request = own({ kernel, initrd: file, rootfs: disk }, {}, 2);
    await driver.validate(request);
    const exit = await runInSandbox(driver, request, io);
    assert.equal(exit.outcome, 'exited', exit.reason);
    assert.match(out, /hello from the root disk\r?\nwritten by the guest/);
    assert.equal(await sha256File(disk), before, 'the image file was not written');
    // What the guest writes can grow to the image's size: the run's disk must hold that much.
    await assert.rejects(driver.validate(own({ kernel, initrd: file, rootfs: disk }, {}, 1)), (e: unknown) => e instanceof InvalidInputError && e.field === 'source.rootfs' && /resources.diskMiB must be at least that \(it is 1\)/.test(e.message));
    assert.equal(driver.liveSandboxes(), 0);
  });

  it('refuses a kernel that is not a kernel, an initrd that is not an initramfs, and what needs the agent', async () => {
    const notKernel = path.join(root.dir, 'not-a-kernel');
    writeFileSync(notKernel, 'MZ but nothing more'.repeat(100));
    const notCpio = path.join(root.dir, 'not-a-cpio');
    writeFileSync(notCpio, 'plain text, not an archive');
    const good = initrd('good.cpio', 'true');
    const field = (name: string, pattern: RegExp) => (e: unknown) => e instanceof InvalidInputError && e.field === name && pattern.test(e.message);
    await assert.rejects(driver.validate(own({ kernel: notKernel, initrd: good })), field('source.kernel', /not a Linux kernel image/));
    // An ELF, but a program, not a kernel with a PVH entry point.
    await assert.rejects(driver.validate(own({ kernel: '/bin/busybox', initrd: good })), field('source.kernel', /an ELF kernel QEMU cannot boot: its ELF has no PVH entry note/));
    await assert.rejects(driver.validate(own({ kernel, initrd: notCpio })), field('source.initrd', /not an initramfs \(expected cpio \(newc\)/));
    await assert.rejects(driver.validate(own({ kernel, initrd: good }, { command: ['sh'] })), field('command', /needs the default guest's agent/));
    await assert.rejects(driver.validate(own({ kernel, initrd: good }, { outputs: ['x'] })), field('outputs', /needs the default guest's agent/));
    assert.deepEqual(existsSync(path.join(root.dir, 'sandboxes')) ? readdirSync(path.join(root.dir, 'sandboxes')) : [], [], 'nothing was created');
  });
});

describe('qemu after a node crash', { skip }, () => {
  it('a new driver on the same sandbox root kills the VM the old one left (found by its pid file) and removes its directory', async () => {
    const root = tempDir('vmesh-qemu-crash-');
    const before = new QemuDriver({ sandboxRoot: root.dir });
    const after = new QemuDriver({ sandboxRoot: root.dir });
    try {
      assert.equal((await before.probe()).available, true);
      const c = vm('sleep 600');
      const request: SandboxRequest = { runId: 'qemucrash', workload: c.workload, code: c.code, resources: { vcpus: 1, memoryMiB: 96, diskMiB: 4, timeoutMs: 120_000, network: { egressMbps: 0, ingressMbps: 0 } }, outputCapBytes: 1024, outputs: testOutputs().sink };
      const prepared = await before.prepare(request);
      const running = await before.start(prepared, { write() {}, total() {} });
      const [dir] = readdirSync(root.dir);
      const pidFile = path.join(root.dir, dir!, 'qemu.pid');
      while (!existsSync(pidFile)) await new Promise((r) => setTimeout(r, 20));
      const pid = Number(readFileSync(pidFile, 'utf8'));
      // The "crash": a driver that knows nothing of the VM, as a restarted node has.
      await after.probe();
      assert.equal(await after.recover(), 1);
      assert.deepEqual(readdirSync(root.dir), []);
      const exit = await before.wait(running);
      assert.equal(exit.outcome, 'crashed', 'the VM was killed');
      assert.ok(!existsSync(`/proc/${pid}`) || readFileSync(`/proc/${pid}/status`, 'utf8').includes('State:\tZ'), 'no QEMU left');
      await before.cleanup(prepared);
    } finally {
      root.remove();
    }
  });
});

describe('qemu pause, resume, snapshot and restore', { skip }, () => {
  const root = tempDir('vmesh-qemu-snap-');
  const sandboxes = path.join(root.dir, 'sandboxes');
  const driver = new QemuDriver({ sandboxRoot: sandboxes });
  const { sink } = testOutputs();
  before(async () => assert.equal((await driver.probe()).available, true));
  after(async () => {
    await driver.close();
    root.remove();
  });

  /** A sandbox whose stdout lines are collected as numbers, started through the driver's own steps. */
  function counter(runId: string, extra: Partial<SandboxRequest> = {}) {
    const c = vm(COUNTING, { outputs: ['n'] });
    return startCounting(driver, { runId, workload: c.workload, code: c.code, resources: { vcpus: 1, memoryMiB: 128, diskMiB: 4, timeoutMs: 120_000, network: { egressMbps: 0, ingressMbps: 0 } }, outputCapBytes: 1 << 20, outputs: sink, ...extra });
  }
  const settle = () => new Promise((r) => setTimeout(r, 600));

  it('pauses and resumes a guest, and a snapshot of it continues counting from where it stopped, in a new QEMU', async () => {
    const first = await counter('snapsource');
    await first.until((n) => n.length >= 5, 'the guest to count to 5');
    await driver.pause(first.running);
    await settle();
    const paused = first.numbers().length;
    await settle();
    assert.equal(first.numbers().length, paused, 'nothing is printed while paused');
    await driver.resume(first.running);
    await first.until((n) => n.length > paused + 2, 'the guest to go on after resume');

    const snapshot = path.join(root.dir, 'snapshot');
    const manifest = await driver.snapshot(first.running, snapshot);
    assert.equal(manifest.memoryMiB, 128);
    await settle();
    const seen = first.numbers();
    const last = seen.at(-1)!;
    await settle();
    assert.equal(first.numbers().length, seen.length, 'the snapshot left the guest paused');
    assert.deepEqual(seen, seen.map((_, i) => i + 1), 'the counter had no gaps');
    assert.equal((await first.end()).outcome, 'cancelled');

    // The snapshot outlives its source: a new QEMU loads it and the guest goes on from its last value.
    const second = await counter('snaprestore', { restoreFrom: snapshot });
    await second.until((n) => n.length >= 3, 'the restored guest to count');
    const restored = second.numbers();
    assert.ok(restored[0]! > last && restored[0]! <= last + 2, `the restored guest went on from ${last} with ${restored.slice(0, 3).join(', ')}`);
    assert.deepEqual(restored.slice(0, 3), [restored[0], restored[0]! + 1, restored[0]! + 2]);
    assert.equal((await second.end()).outcome, 'cancelled');
    assert.equal(driver.liveSandboxes(), 0);
    assert.deepEqual(readdirSync(sandboxes), []);

    // A snapshot that is truncated, or from another QEMU, is refused before anything starts.
    const c = vm('true');
    const bad = (restoreFrom: string): SandboxRequest => ({ runId: 'snapbad', workload: c.workload, code: c.code, resources: { vcpus: 1, memoryMiB: 128, diskMiB: 4, timeoutMs: 10_000, network: { egressMbps: 0, ingressMbps: 0 } }, outputCapBytes: 1024, outputs: sink, restoreFrom });
    truncateSync(path.join(snapshot, 'memory'), 4096);
    await assert.rejects(driver.validate(bad(snapshot)), (e: unknown) => e instanceof InvalidInputError && e.field === 'snapshot' && /memory is 4096 bytes, not the \d+ recorded \(truncated or changed\)/.test(e.message));
    writeFileSync(path.join(snapshot, 'manifest.json'), JSON.stringify({ ...manifest, qemuVersion: '1.0.0' }));
    await assert.rejects(driver.validate(bad(snapshot)), /snapshot: it was taken with QEMU 1\.0\.0; this node has /);
    writeFileSync(path.join(snapshot, 'manifest.json'), JSON.stringify({ ...manifest, files: { ...manifest.files, '../etc/passwd': 1 } }));
    await assert.rejects(driver.validate(bad(snapshot)), (e: unknown) => e instanceof InvalidInputError && e.field === 'snapshot' && /it lists a file "\.\.\/etc\/passwd" that a QEMU snapshot does not hold/.test(e.message));
    await assert.rejects(driver.validate(bad(root.dir)), /snapshot: no manifest\.json/);
    assert.deepEqual(readdirSync(sandboxes), []);
  });
});
