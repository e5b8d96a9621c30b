// The Firecracker and Cloud Hypervisor request builders, checked against the request schemas of the
// releases they were written for. The schemas below restate, field by field, what those releases
// document (Firecracker v1.16.1: src/firecracker/swagger/firecracker.yaml; Cloud Hypervisor v53.0:
// vmm/src/api/openapi/cloud-hypervisor.yaml) for the fields vmesh sends, with `additionalProperties:
// false` so that a misspelt or undocumented field fails here rather than as a 400 on a real host.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Type, { type TSchema } from 'typebox';
import {
  cloudHypervisorBootCalls,
  cloudHypervisorCmdline,
  cloudHypervisorRestoreCalls,
  cloudHypervisorSnapshotCalls,
  CLOUD_HYPERVISOR_PAUSE,
  CLOUD_HYPERVISOR_PING,
  CLOUD_HYPERVISOR_RESUME,
} from '../../src/drivers/cloud-hypervisor/requests.ts';
import {
  firecrackerBootArgs,
  firecrackerBootCalls,
  firecrackerId,
  firecrackerRestoreCalls,
  firecrackerSnapshotCalls,
  snapshotPathsIn,
  FIRECRACKER_DESCRIBE,
  FIRECRACKER_PAUSE,
  FIRECRACKER_RESUME,
} from '../../src/drivers/firecracker/requests.ts';
import { chrootDir, jailedSocket, jailerArgs, jailerVersion, jailOwnerProblem } from '../../src/drivers/firecracker/jailer.ts';
import { guestMac } from '../../src/drivers/vmm/api-vmm-driver.ts';
import { bandwidthLimiter } from '../../src/drivers/vmm/rate-limit.ts';
import type { ApiCall } from '../../src/drivers/vmm/unix-http.ts';
import { validator } from '../../src/spec/index.ts';

const closed = <P extends Record<string, TSchema>>(properties: P, required: Array<keyof P & string> = []) => {
  const props: Record<string, TSchema> = {};
  for (const [k, v] of Object.entries(properties)) props[k] = required.includes(k) ? v : Type.Optional(v);
  return Type.Object(props, { additionalProperties: false });
};
const int64 = Type.Integer({ minimum: 0 });
const TokenBucket = closed({ size: int64, one_time_burst: int64, refill_time: int64 }, ['size', 'refill_time']);
const RateLimiter = closed({ bandwidth: TokenBucket, ops: TokenBucket });

/** Firecracker v1.16.1: each path and method vmesh uses, with the body schema the swagger gives it. */
const FIRECRACKER: Record<string, TSchema | null> = {
  'GET /': null,
  'PUT /logger': closed({
    log_path: Type.String(),
    level: Type.Union(['Error', 'Warning', 'Info', 'Debug', 'Trace', 'Off'].map((l) => Type.Literal(l))),
    show_level: Type.Boolean(),
    show_log_origin: Type.Boolean(),
    module: Type.String(),
  }),
  'PUT /metrics': closed({ metrics_path: Type.String() }, ['metrics_path']),
  'PUT /machine-config': closed(
    {
      vcpu_count: Type.Integer({ minimum: 1, maximum: 32 }),
      mem_size_mib: Type.Integer(),
      smt: Type.Boolean(),
      track_dirty_pages: Type.Boolean(),
      huge_pages: Type.Union([Type.Literal('None'), Type.Literal('2M')]),
    },
    ['vcpu_count', 'mem_size_mib'],
  ),
  'PUT /boot-source': closed({ kernel_image_path: Type.String(), initrd_path: Type.String(), boot_args: Type.String() }, ['kernel_image_path']),
  'PUT /drives/outputs': closed(
    {
      drive_id: Type.Literal('outputs'),
      partuuid: Type.String(),
      is_root_device: Type.Boolean(),
      cache_type: Type.Union([Type.Literal('Unsafe'), Type.Literal('Writeback')]),
      is_read_only: Type.Boolean(),
      path_on_host: Type.String(),
      rate_limiter: RateLimiter,
      io_engine: Type.Union([Type.Literal('Sync'), Type.Literal('Async')]),
    },
    ['drive_id', 'is_root_device'],
  ),
  'PUT /network-interfaces/eth0': closed(
    {
      iface_id: Type.Literal('eth0'),
      host_dev_name: Type.String(),
      guest_mac: Type.String({ pattern: '^([0-9a-f]{2}:){5}[0-9a-f]{2}$' }),
      mtu: Type.Integer({ minimum: 68, maximum: 65535 }),
      rx_rate_limiter: RateLimiter,
      tx_rate_limiter: RateLimiter,
    },
    ['iface_id', 'host_dev_name'],
  ),
  'PUT /balloon': closed(
    { amount_mib: Type.Integer(), deflate_on_oom: Type.Boolean(), stats_polling_interval_s: Type.Integer(), free_page_hinting: Type.Boolean(), free_page_reporting: Type.Boolean() },
    ['amount_mib', 'deflate_on_oom'],
  ),
  'PUT /actions': closed({ action_type: Type.Union(['FlushMetrics', 'InstanceStart', 'SendCtrlAltDel'].map((a) => Type.Literal(a))) }, ['action_type']),
  'PATCH /vm': closed({ state: Type.Union([Type.Literal('Paused'), Type.Literal('Resumed')]) }, ['state']),
  'PUT /snapshot/create': closed({ mem_file_path: Type.String(), snapshot_path: Type.String(), snapshot_type: Type.Union([Type.Literal('Full'), Type.Literal('Diff')]) }, ['mem_file_path', 'snapshot_path']),
  'PUT /snapshot/load': closed(
    {
      snapshot_path: Type.String(),
      mem_file_path: Type.String(),
      mem_backend: closed({ backend_type: Type.Union([Type.Literal('File'), Type.Literal('Uffd')]), backend_path: Type.String() }, ['backend_type', 'backend_path']),
      enable_diff_snapshots: Type.Boolean(),
      track_dirty_pages: Type.Boolean(),
      resume_vm: Type.Boolean(),
      network_overrides: Type.Array(closed({ iface_id: Type.String(), host_dev_name: Type.String() }, ['iface_id', 'host_dev_name'])),
    },
    ['snapshot_path'],
  ),
};

const ConsoleConfig = closed({ mode: Type.Union(['Off', 'Pty', 'Tty', 'File', 'Socket', 'Null'].map((m) => Type.Literal(m))), file: Type.String(), socket: Type.String() }, ['mode']);
/** Cloud Hypervisor v53.0: the paths vmesh uses and VmConfig's fields that it sends. */
const CLOUD_HYPERVISOR: Record<string, TSchema | null> = {
  'GET /api/v1/vmm.ping': null,
  'PUT /api/v1/vm.create': closed(
    {
      cpus: closed({ boot_vcpus: Type.Integer({ minimum: 1 }), max_vcpus: Type.Integer({ minimum: 1 }) }, ['boot_vcpus', 'max_vcpus']),
      memory: closed({ size: int64 }, ['size']),
      payload: closed({ firmware: Type.String(), kernel: Type.String(), cmdline: Type.String(), initramfs: Type.String() }),
      disks: Type.Array(closed({ path: Type.String(), readonly: Type.Boolean(), direct: Type.Boolean(), id: Type.String(), rate_limiter_config: RateLimiter })),
      net: Type.Array(closed({ tap: Type.String(), mac: Type.String({ pattern: '^([0-9a-f]{2}:){5}[0-9a-f]{2}$' }), id: Type.String(), mtu: Type.Integer(), rate_limiter_config: RateLimiter })),
      rng: closed({ src: Type.String(), id: Type.String() }, ['src']),
      serial: ConsoleConfig,
      console: ConsoleConfig,
    },
    ['payload'],
  ),
  'PUT /api/v1/vm.boot': null,
  'PUT /api/v1/vm.pause': null,
  'PUT /api/v1/vm.resume': null,
  'PUT /api/v1/vm.snapshot': closed({ destination_url: Type.String() }),
  'PUT /api/v1/vm.restore': closed({ source_url: Type.String(), prefault: Type.Boolean() }, ['source_url']),
};

/** Every call names a documented path and method, and its body (or its lack of one) matches that path's schema. */
function assertDocumented(api: Record<string, TSchema | null>, calls: readonly ApiCall[]): void {
  for (const call of calls) {
    const key = `${call.method} ${call.path}`;
    assert.ok(key in api, `${key} is a documented path and method`);
    const schema = api[key]!;
    if (schema === null) assert.equal(call.body, undefined, `${key} takes no body`);
    else validator(schema, key)(call.body);
  }
}

const machine = { vcpus: 2, memoryMiB: 256, kernel: '/srv/vmlinux', initrd: 'initrd.cpio', bootArgs: firecrackerBootArgs(), logFile: 'firecracker.log', metricsFile: 'metrics.json' };

describe('Firecracker requests (v1.16.1 API)', () => {
  it('configures logger, metrics, machine, boot source, balloon and starts the instance, in that order', () => {
    const calls = firecrackerBootCalls(machine);
    assertDocumented(FIRECRACKER, calls);
    assert.deepEqual(calls.map((c) => c.path), ['/logger', '/metrics', '/machine-config', '/boot-source', '/balloon', '/actions']);
    assert.deepEqual(calls[2]!.body, { vcpu_count: 2, mem_size_mib: 256, smt: false, track_dirty_pages: false });
    assert.deepEqual(calls.at(-1)!.body, { action_type: 'InstanceStart' });
    assert.match(String((calls[3]!.body as { boot_args: string }).boot_args), /console=ttyS0.*reboot=k/);
  });

  it('adds the outputs drive and a NIC whose rx limiter is the ingress channel and tx the egress one', () => {
    const calls = firecrackerBootCalls({ ...machine, outputsDisk: 'outputs.img', network: { tap: 'tap0', mac: guestMac('r1'), egressMbps: 8, ingressMbps: 40 } });
    assertDocumented(FIRECRACKER, calls);
    const nic = calls.find((c) => c.path === '/network-interfaces/eth0')!.body as { rx_rate_limiter: { bandwidth: { size: number; refill_time: number } }; tx_rate_limiter: { bandwidth: { size: number; refill_time: number } } };
    const rate = (b: { size: number; refill_time: number }) => (b.size * 8 * 1000) / b.refill_time / 1e6;
    assert.equal(rate(nic.tx_rate_limiter.bandwidth), 8, 'tx at the egress rate, in Mbit/s');
    assert.equal(rate(nic.rx_rate_limiter.bandwidth), 40, 'rx at the ingress rate');
    const drive = calls.find((c) => c.path === '/drives/outputs')!.body;
    assert.deepEqual(drive, { drive_id: 'outputs', path_on_host: 'outputs.img', is_root_device: false, is_read_only: false });
    assert.ok(calls.findIndex((c) => c.path === '/actions') === calls.length - 1, 'InstanceStart comes last');
  });

  it('holds the outputs drive to the run\'s disk I/O limits', () => {
    const calls = firecrackerBootCalls({ ...machine, outputsDisk: 'outputs.img', disk: { bps: 10 * 2 ** 20, iops: 500 } });
    assertDocumented(FIRECRACKER, calls);
    const drive = calls.find((c) => c.path === '/drives/outputs')!.body as { rate_limiter: unknown };
    assert.deepEqual(drive.rate_limiter, { bandwidth: { size: 2_097_152, refill_time: 200 }, ops: { size: 100, refill_time: 200 } });
  });

  it('leaves a direction without a channel unlimited, and pauses and resumes through PATCH /vm', () => {
    const calls = firecrackerBootCalls({ ...machine, network: { tap: 'tap0', mac: guestMac('r2'), egressMbps: 0, ingressMbps: 5 } });
    assertDocumented(FIRECRACKER, calls);
    const nic = calls.find((c) => c.path === '/network-interfaces/eth0')!.body as Record<string, unknown>;
    assert.equal(nic.tx_rate_limiter, undefined, 'no tx limiter without an egress channel');
    assertDocumented(FIRECRACKER, [FIRECRACKER_PAUSE, FIRECRACKER_RESUME, FIRECRACKER_DESCRIBE]);
  });

  it('takes a full snapshot into a directory and loads one from a file, resuming it', () => {
    const taken = firecrackerSnapshotCalls(snapshotPathsIn('/snaps/a'));
    const loaded = firecrackerRestoreCalls(snapshotPathsIn('/snaps/a'));
    assertDocumented(FIRECRACKER, [...taken, ...loaded]);
    assert.deepEqual(taken[0]!.body, { snapshot_type: 'Full', snapshot_path: '/snaps/a/vmstate', mem_file_path: '/snaps/a/memory' });
    // mem_backend, not the deprecated mem_file_path; exactly one of the two may be given.
    assert.deepEqual(loaded[0]!.body, { snapshot_path: '/snaps/a/vmstate', mem_backend: { backend_type: 'File', backend_path: '/snaps/a/memory' }, resume_vm: true });
  });

  it('refuses more vCPUs than the schema allows, and makes --id from any run id', () => {
    assert.throws(() => assertDocumented(FIRECRACKER, firecrackerBootCalls({ ...machine, vcpus: 33 })), /vcpu_count/);
    assert.equal(firecrackerId('r_abc.DEF'), 'r-abc-DEF');
    assert.match(firecrackerId('x'.repeat(100)), /^x{64}$/);
  });

  it('fails this check for a field the API does not document', () => {
    const calls = firecrackerBootCalls(machine);
    const typo = { ...calls[2]!, body: { ...(calls[2]!.body as object), vcpus: 2 } };
    assert.throws(() => assertDocumented(FIRECRACKER, [typo]), /machine-config/);
  });
});

describe('Firecracker\'s jailer (v1.16.1, docs/jailer.md)', () => {
  const launch = { id: 'r0abc-1', execFile: '/opt/fc/firecracker', uid: 123, gid: 100, chrootBase: '/var/vmesh/s/jail', firecrackerArgs: ['--api-sock', '/run/firecracker.socket'] };

  it('builds the documented command line: id, exec file, uid, gid, chroot base, netns, then Firecracker\'s own after --', () => {
    assert.deepEqual(jailerArgs(launch), ['--id', 'r0abc-1', '--exec-file', '/opt/fc/firecracker', '--uid', '123', '--gid', '100', '--chroot-base-dir', '/var/vmesh/s/jail', '--', '--api-sock', '/run/firecracker.socket']);
    assert.deepEqual(jailerArgs({ ...launch, netns: '/run/netns/vmesh-r0abc' }).slice(10, 13), ['--netns', '/run/netns/vmesh-r0abc', '--']);
    assert.ok(!jailerArgs(launch).some((a) => a.startsWith('--cgroup') || a === '--daemonize' || a === '--new-pid-ns'), 'no cgroup, and the pid stays Firecracker\'s');
  });

  it('names the chroot <base>/<exec file name>/<id>/root and the socket inside it', () => {
    assert.equal(chrootDir('/var/vmesh/s/jail', '/opt/fc/firecracker-v1.16.1-x86_64', 'r0abc-1'), '/var/vmesh/s/jail/firecracker-v1.16.1-x86_64/r0abc-1/root');
    assert.equal(jailedSocket('/j/root'), '/j/root/run/firecracker.socket');
  });

  it('refuses what the jailer refuses: an id that is not 1 to 64 letters, digits and hyphens, relative paths, root as the jail\'s user', () => {
    for (const id of ['', 'a_b', 'a'.repeat(65), 'a/b']) assert.throws(() => jailerArgs({ ...launch, id }), /jailer id .*: expected 1 to 64 letters, digits and hyphens/, id);
    assert.doesNotThrow(() => jailerArgs({ ...launch, id: 'a'.repeat(64) }));
    assert.throws(() => jailerArgs({ ...launch, execFile: 'firecracker' }), /must be absolute/);
    assert.match(jailOwnerProblem({ uid: 0, gid: 100 }) ?? '', /jailer\.uid: expected an unprivileged id/);
    assert.match(jailOwnerProblem({ uid: 123, gid: 1.5 }) ?? '', /jailer\.gid: expected an unprivileged id/);
    assert.equal(jailOwnerProblem({ uid: 123, gid: 100 }), undefined);
    assert.match(jailOwnerProblem({ uid: 123, gid: 100, ids: 0 }) ?? '', /jailer\.ids: expected 1 to 65536, got 0/);
    assert.match(jailOwnerProblem({ uid: 2 ** 32 - 10, gid: 100, ids: 256 }) ?? '', /jailer\.uid: expected an unprivileged id \(1 to 4294967039 with 256 ids\)/);
  });

  it('reads the release from `jailer --version`', () => {
    assert.equal(jailerVersion('Jailer v1.16.1\n\n'), '1.16.1');
    assert.equal(jailerVersion('Firecracker v1.16.1\n'), undefined);
  });
});

describe('Cloud Hypervisor requests (v53.0 API)', () => {
  const ch = { vcpus: 2, memoryMiB: 512, kernel: '/cache/vmlinuz', initramfs: '/sb/initrd.cpio', cmdline: cloudHypervisorCmdline() };

  it('creates the VM (vCPUs, memory in bytes, kernel, initramfs, serial on the tty) and boots it', () => {
    const calls = cloudHypervisorBootCalls(ch);
    assertDocumented(CLOUD_HYPERVISOR, calls);
    assert.deepEqual(calls.map((c) => c.path), ['/api/v1/vm.create', '/api/v1/vm.boot']);
    const config = calls[0]!.body as { memory: { size: number }; cpus: { boot_vcpus: number }; serial: { mode: string }; payload: { cmdline: string } };
    assert.equal(config.memory.size, 512 * 2 ** 20);
    assert.equal(config.cpus.boot_vcpus, 2);
    assert.equal(config.serial.mode, 'Tty');
    assert.match(config.payload.cmdline, /console=ttyS0/);
    assert.doesNotMatch(config.payload.cmdline, /panic=-1|panic=1\b/, 'a panic must not reboot: Cloud Hypervisor would run the command again');
  });

  it('holds the outputs disk to the run\'s disk I/O limits', () => {
    const calls = cloudHypervisorBootCalls({ ...ch, outputsDisk: '/sb/outputs.img', disk: { iops: 1000 } });
    assertDocumented(CLOUD_HYPERVISOR, calls);
    assert.deepEqual((calls[0]!.body as { disks: Array<{ rate_limiter_config: unknown }> }).disks[0]!.rate_limiter_config, { ops: { size: 200, refill_time: 200 } });
  });

  it('adds the outputs disk, and one NIC limiter only when both directions have a channel', () => {
    const both = cloudHypervisorBootCalls({ ...ch, outputsDisk: '/sb/outputs.img', network: { tap: 'tap0', mac: guestMac('r3'), egressMbps: 10, ingressMbps: 20 } });
    assertDocumented(CLOUD_HYPERVISOR, both);
    const config = both[0]!.body as { disks: unknown[]; net: Array<{ rate_limiter_config?: unknown }> };
    assert.deepEqual(config.disks, [{ id: 'outputs', path: '/sb/outputs.img', readonly: false }]);
    assert.deepEqual(config.net[0]!.rate_limiter_config, bandwidthLimiter(20));
    const one = cloudHypervisorBootCalls({ ...ch, network: { tap: 'tap0', mac: guestMac('r3'), egressMbps: 10, ingressMbps: 0 } });
    assertDocumented(CLOUD_HYPERVISOR, one);
    assert.equal((one[0]!.body as { net: Array<{ rate_limiter_config?: unknown }> }).net[0]!.rate_limiter_config, undefined);
    assertDocumented(CLOUD_HYPERVISOR, [CLOUD_HYPERVISOR_PING, CLOUD_HYPERVISOR_PAUSE, CLOUD_HYPERVISOR_RESUME]);
  });

  it('snapshots into a file:// directory, and restores from one and then resumes (a restored VM starts paused)', () => {
    const taken = cloudHypervisorSnapshotCalls('/snaps/b');
    const restored = cloudHypervisorRestoreCalls('/snaps/b');
    assertDocumented(CLOUD_HYPERVISOR, [...taken, ...restored]);
    assert.deepEqual(taken, [{ method: 'PUT', path: '/api/v1/vm.snapshot', body: { destination_url: 'file:///snaps/b' } }]);
    assert.deepEqual(restored.map((c) => c.path), ['/api/v1/vm.restore', '/api/v1/vm.resume']);
    assert.deepEqual(restored[0]!.body, { source_url: 'file:///snaps/b', prefault: false });
  });
});

describe('the shared VMM pieces', () => {
  it('turns a bandwidth channel into a token bucket of the same rate, refilled every 200 ms', () => {
    assert.equal(bandwidthLimiter(0), undefined);
    assert.deepEqual(bandwidthLimiter(8), { bandwidth: { size: 200_000, refill_time: 200 } });
    assert.deepEqual(bandwidthLimiter(1000), { bandwidth: { size: 25_000_000, refill_time: 200 } });
  });

  it('gives each run a stable, locally administered unicast MAC', () => {
    assert.equal(guestMac('r1'), guestMac('r1'));
    assert.notEqual(guestMac('r1'), guestMac('r2'));
    const first = parseInt(guestMac('r1').slice(0, 2), 16);
    assert.equal(first & 0b11, 0b10, 'locally administered, not multicast');
  });
});
