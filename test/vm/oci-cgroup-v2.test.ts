// crun on a pure cgroup v2 kernel, proven on a host that has neither (cgroup v1 hybrid here, where crun
// refuses): a QEMU guest mounts the host's root file system read-only over virtio-9p, mounts nothing of
// cgroup v1 and cgroup2 at /sys/fs/cgroup, switches to the host's root and runs test/vm/guest/oci-cgroup-v2.mjs,
// which drives the OCI driver (with crun, as it picks on cgroup v2) and prints what it saw on the console.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { before, describe, it } from 'node:test';
import { hostTscKhz } from '../../src/drivers/qemu/host.ts';
import { cpioArchive, type CpioEntry } from '../../src/guest/cpio.ts';
import { defaultGuestCache } from '../../src/guest/image.ts';
import { debianKernel } from '../../src/guest/kernel.ts';
import { hasCommand, skipUnless } from '../helpers/require.ts';
import { BUSYBOX, busyboxRootfs } from '../helpers/rootfs.ts';
import { tempDir } from '../helpers/tmp.ts';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const GUEST_SCRIPT = 'test/vm/guest/oci-cgroup-v2.mjs';
/** A whole boot and run under TCG took 26 s on an idle 2-core host; the cap leaves room for a busy one. */
const BOOT_TIMEOUT_MS = 300_000;

const skip =
  skipUnless('root', process.getuid?.() === 0, 'run the tests as root (containers and QEMU shares need it)') ||
  skipUnless('qemu', hasCommand('qemu-system-x86_64'), 'apt-get install qemu-system-x86') ||
  skipUnless('busybox', existsSync(BUSYBOX), 'apt-get install busybox-static') ||
  skipUnless('crun', hasCommand('crun'), 'apt-get install crun') ||
  skipUnless('apt', hasCommand('apt-get', ['--version']) && hasCommand('dpkg-deb', ['--version']), 'a Debian host with apt-get and dpkg-deb (the guest kernel is fetched with apt-get download)');

/** dist/ as new as src/ (what `npm run build` leaves): the guest runs the compiled driver, tsx would take minutes under TCG. */
function distProblem(): string | undefined {
  const stamp = path.join(REPO, 'dist', '.stamp');
  if (!existsSync(stamp)) return 'dist/ is not built: run `npm run build` (npm test does)';
  const built = statSync(stamp).mtimeMs;
  const src = path.join(REPO, 'src');
  const newer = (readdirSync(src, { recursive: true }) as string[]).find((rel) => statSync(path.join(src, rel)).mtimeMs > built);
  return newer === undefined ? undefined : `src/${newer} is newer than dist/: run \`npm run build\` (npm test does)`;
}

/** The guest's /init: modules, the host's root over 9p, a tmpfs /run, cgroup2 alone, then the host's root as its own. */
function initScript(modules: string[], rootfs: string): string {
  const run = [
    `cd ${REPO}`,
    'PATH=/run/vmesh-bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin; export PATH',
    `${process.execPath} ${GUEST_SCRIPT} ${rootfs} /run/v2work`,
    'echo "@guest:done $?"',
    '/bin/busybox poweroff -f',
  ].join('; ');
  return `#!/bin/busybox sh
/bin/busybox mkdir -p /bin /proc /sys /dev /host
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in ${modules.join(' ')}; do insmod /lib/modules/$m.ko 2>/dev/null; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose host /host || { echo "@guest:failed no 9p share"; poweroff -f; }
mount -t tmpfs tmpfs /host/run && mkdir -p /host/run/v2work /host/run/vmesh-bin
mount --rbind /dev /host/dev; mount -t proc proc /host/proc; mount -t sysfs sysfs /host/sys
mount -t cgroup2 cgroup2 /host/sys/fs/cgroup || { echo "@guest:failed no cgroup2"; poweroff -f; }
echo "@guest:cgroup $(cat /host/sys/fs/cgroup/cgroup.controllers)"
# crun re-executes itself from a sealed in-memory copy of its binary, which it cannot make of a file on 9p.
cp /host/usr/bin/crun /host/run/vmesh-bin/crun
# switch_root, not chroot: the kernel refuses a new user namespace to a chrooted process.
exec switch_root /host /bin/sh -c '${run}'
`;
}

/** One `@case` line of the guest script, as it printed it. */
interface Reported {
  name: string;
  available?: boolean;
  details?: Record<string, string>;
  version?: string;
  outcome?: string;
  exitCode?: number | null;
  reason?: string;
  stdout?: string;
  stderr?: string;
  usage?: { memoryPeakBytes?: number; cpuMs?: number };
  limits?: Record<string, string | null>;
  cpuMs?: number;
  wallMs?: number;
  cgroups?: string[];
  mounts?: number;
}

interface GuestRun {
  cases: Map<string, Reported>;
  console: string;
}

async function bootGuest(dir: string, rootfs: string): Promise<GuestRun> {
  const kernel = await debianKernel(defaultGuestCache());
  const modules = [...new Set([...kernel.modules, ...kernel.extraModules])];
  const entries: CpioEntry[] = [
    { type: 'dir', name: 'bin' },
    { type: 'file', name: 'bin/busybox', data: readFileSync(BUSYBOX), mode: 0o755 },
    { type: 'file', name: 'init', data: initScript(modules, rootfs), mode: 0o755 },
    { type: 'dir', name: 'lib' },
    { type: 'dir', name: 'lib/modules' },
    ...modules.map((m): CpioEntry => ({ type: 'file', name: `lib/modules/${m}.ko`, data: readFileSync(path.join(kernel.modulesDir, `${m}.ko`)) })),
  ];
  const initrd = path.join(dir, 'initrd.gz');
  writeFileSync(initrd, gzipSync(cpioArchive(entries)));
  const tsc = await hostTscKhz();
  const args = [
    '-M', 'microvm,accel=tcg', '-cpu', 'max', '-smp', '2', '-m', '1024M',
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot', '-serial', 'stdio',
    '-kernel', kernel.vmlinux ?? kernel.vmlinuz, '-initrd', initrd,
    '-append', `console=ttyS0 reboot=t panic=-1 quiet${tsc === undefined ? '' : ` tsc_early_khz=${tsc}`}`,
    // The host's root, read-only: the guest writes only its own tmpfs.
    '-fsdev', 'local,id=host,path=/,security_model=passthrough,readonly=on,multidevs=remap',
    '-device', 'virtio-9p-device,fsdev=host,mount_tag=host',
  ];
  const qemu = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let console = '';
  qemu.stdout.on('data', (d: Buffer) => (console += d.toString()));
  qemu.stderr.on('data', (d: Buffer) => (console += d.toString()));
  const timer = setTimeout(() => qemu.kill('SIGKILL'), BOOT_TIMEOUT_MS);
  await new Promise((resolve) => qemu.once('close', resolve));
  clearTimeout(timer);
  const cases = new Map<string, Reported>();
  for (const line of console.split(/\r?\n/)) {
    const m = /^@case (\{.*\})$/.exec(line);
    if (m !== null) {
      const c = JSON.parse(m[1]!) as Reported;
      cases.set(c.name, c);
    }
  }
  return { cases, console };
}

describe('the OCI driver with crun on a pure cgroup v2 kernel (a QEMU guest, TCG)', { skip }, () => {
  let guest: GuestRun;
  const of = (name: string) => {
    const c = guest.cases.get(name);
    assert.ok(c !== undefined, `the guest reported no "${name}" case; its console ended:\n${guest.console.split('\n').slice(-30).join('\n')}`);
    return c;
  };

  before(async () => {
    const stale = distProblem();
    if (stale !== undefined) throw new Error(stale);
    const tmp = tempDir('vmesh-cgroup-v2-');
    try {
      guest = await bootGuest(tmp.dir, busyboxRootfs(path.join(tmp.dir, 'busybox')));
    } finally {
      tmp.remove();
    }
  });

  it('finds cgroup v2 and crun there, and runs a container in a cgroup of its own', () => {
    assert.equal(guest.cases.get('error'), undefined, JSON.stringify(guest.cases.get('error')));
    const probe = of('probe');
    assert.equal(probe.available, true, JSON.stringify(probe));
    assert.deepEqual([probe.details?.['runtime'], probe.details?.['cgroups']], ['crun', 'v2']);
    assert.match(probe.version ?? '', /^crun version /);
    const hello = of('hello');
    assert.deepEqual([hello.outcome, hello.exitCode, hello.stderr], ['exited', 0, '']);
    assert.equal(hello.stdout, 'hello from crun\n0::/vmesh-v2test/vmesh-v2case1/container\n', 'its only cgroup line is the v2 one, under vmesh\'s');
  });

  it('writes the run\'s limits into the container\'s cgroup: memory without swap, pids, a CPU quota', () => {
    const held = of('limits');
    assert.equal(held.exitCode, 0);
    assert.deepEqual(held.limits, { 'memory.max': String(48 * 2 ** 20), 'memory.swap.max': '0', 'pids.max': '256', 'cpu.max': '50000 100000' });
  });

  it('ends a memory bomb as oom, from the OOM kills its parent cgroup counted after crun removed the container\'s', () => {
    const bomb = of('memory');
    assert.equal(bomb.outcome, 'oom', JSON.stringify(bomb));
    assert.match(bomb.reason ?? '', /memory limit of 32 MiB reached/);
    const peak = bomb.usage?.memoryPeakBytes ?? 0;
    assert.ok(peak >= 30 * 2 ** 20 && peak <= 33 * 2 ** 20, `peak ${peak} bytes`);
  });

  it('stops a fork bomb at the pids limit', () => {
    const forks = of('pids');
    assert.equal(forks.outcome, 'exited');
    assert.notEqual(forks.exitCode, 0);
    assert.match(forks.stderr ?? '', /can't fork/);
    assert.equal(forks.stdout, '');
  });

  it('holds a spinning container to its CPU quota (a quarter of a CPU)', () => {
    const spin = of('cpu');
    assert.equal(spin.exitCode, 0);
    const [cpuMs, wallMs] = [spin.cpuMs ?? 0, spin.wallMs ?? 0];
    // As on the host (test/drivers/oci.test.ts): at most a quarter of the wall time, plus two periods' quota.
    assert.ok(cpuMs > 100, `it did work: ${cpuMs} ms of CPU`);
    assert.ok(cpuMs <= 0.25 * wallMs + 50, `used ${cpuMs} ms of CPU in ${wallMs} ms`);
  });

  it('leaves no cgroup or mount behind once the driver is closed', () => {
    assert.deepEqual(of('left'), { name: 'left', cgroups: [], mounts: 0 });
    assert.match(guest.console, /@guest:done 0/);
  });
});
