// The Nanos driver's parts that need no ops: the program check, the config ops is handed (against the
// config ops 0.1.46 reads, restated from types/config.go with its keys closed, as ops decodes with
// DisallowUnknownFields), the QEMU command line and how an exit status reads, and what is refused
// before anything is built. The driver against a real ops is in test/vm/nanos.test.ts.
import assert from 'node:assert/strict';
import { chmodSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import Type, { type TSchema } from 'typebox';
import { Compile } from 'typebox/compile';
import type { SandboxRequest } from '../../src/drivers/driver.ts';
import { unikernelArgs, unikernelExit } from '../../src/drivers/nanos/command-line.ts';
import { NanosDriver } from '../../src/drivers/nanos/driver.ts';
import { netmaskOf, opsConfig } from '../../src/drivers/nanos/ops-config.ts';
import type { SandboxNetwork } from '../../src/net/sandbox-network.ts';
import { checkProgram } from '../../src/drivers/nanos/program.ts';
import { NO_OUTPUTS } from '../../src/outputs/pack.ts';
import type { ResolvedResources, Workload } from '../../src/spec/index.ts';
import { testOutputs } from '../helpers/outputs.ts';
import { BUSYBOX } from '../helpers/rootfs.ts';
import { tempDir } from '../helpers/tmp.ts';

/**
 * A minimal 64-bit ELF: its header, a PT_LOAD, a PT_INTERP naming `interp` when given, a PT_DYNAMIC
 * with the tags `dynamic` when given, and a section header table with one SHT_DYNAMIC section holding
 * the tags `sectionDynamic` when given.
 */
function elf(o: { machine?: number; type?: number; interp?: string; dynamic?: number[]; sectionDynamic?: number[]; cut?: boolean } = {}): Uint8Array {
  const ph = 56;
  const headers = [1, ...(o.interp === undefined ? [] : [3]), ...(o.dynamic === undefined ? [] : [2])];
  const interp = Buffer.from(`${o.interp ?? ''}\0`);
  const table = (tags: number[]) => {
    const t = Buffer.alloc(16 * (tags.length + 1));
    tags.forEach((tag, i) => t.writeBigInt64LE(BigInt(tag), 16 * i));
    return t;
  };
  const parts: Buffer[] = [Buffer.alloc(64 + ph * headers.length)];
  const place = (b: Buffer) => {
    const at = parts.reduce((n, p) => n + p.byteLength, 0);
    parts.push(b);
    return at;
  };
  const head = parts[0]!;
  head.write('\x7fELF', 0, 'latin1');
  [head[4], head[5], head[6]] = [2, 1, 1];
  head.writeUInt16LE(o.type ?? 2, 16);
  head.writeUInt16LE(o.machine ?? 62, 18);
  head.writeBigUInt64LE(64n, 32);
  head.writeUInt16LE(ph, 54);
  head.writeUInt16LE(headers.length, 56);
  headers.forEach((type, i) => {
    const at = 64 + ph * i;
    head.writeUInt32LE(type, at);
    const body = type === 3 ? interp : type === 2 ? table(o.dynamic!) : undefined;
    if (body !== undefined) {
      head.writeBigUInt64LE(BigInt(place(body)), at + 8);
      head.writeBigUInt64LE(BigInt(body.byteLength), at + 32);
    }
  });
  if (o.sectionDynamic !== undefined) {
    const body = table(o.sectionDynamic);
    const offset = place(body);
    const section = Buffer.alloc(64);
    section.writeUInt32LE(6, 4);
    section.writeBigUInt64LE(BigInt(offset), 24);
    section.writeBigUInt64LE(BigInt(body.byteLength), 32);
    head.writeBigUInt64LE(BigInt(place(section)), 40);
    head.writeUInt16LE(64, 58);
    head.writeUInt16LE(1, 60);
  }
  const bytes = Buffer.concat(parts);
  return o.cut === true ? bytes.subarray(0, 64 + 10) : bytes;
}

const DT_NEEDED = 1;
const DT_AUDIT = 0x6ffffefc;

describe('unikernel program check', () => {
  it('takes a statically linked program, a static PIE among them', () => {
    assert.doesNotThrow(() => checkProgram(elf()));
    assert.doesNotThrow(() => checkProgram(elf({ type: 3, dynamic: [7, 8] })), 'a static PIE: a dynamic table for its own relocations, no library');
    if (existsSync(BUSYBOX)) assert.doesNotThrow(() => checkProgram(new Uint8Array(readFileSync(BUSYBOX))), 'busybox-static');
  });

  it('refuses what is not a static 64-bit x86 executable, naming source and why', () => {
    const cases: Array<[Uint8Array, RegExp]> = [
      [new TextEncoder().encode('#!/bin/sh\necho hi\n'), /not an ELF file/],
      [elf({ machine: 183 }), /not a little-endian 64-bit x86 ELF/],
      [elf({ type: 1 }), /not an executable \(e_type 1/],
      [elf({ type: 4 }), /not an executable \(e_type 4/],
      [elf({ cut: true }), /program headers are missing or cut off/],
      // ops would run each of these on the host to list its libraries.
      [elf({ interp: '/lib64/ld-linux-x86-64.so.2' }), /dynamically linked \(its loader is "\/lib64\/ld-linux-x86-64.so.2"\); link it statically/],
      [new Uint8Array(readFileSync(process.execPath)), /dynamically linked/],
      [elf({ interp: '/bin/sh' }), /its loader is "\/bin\/sh"/],
      [elf({ dynamic: [DT_NEEDED] }), /names shared libraries to load; link it statically/],
      [elf({ sectionDynamic: [DT_NEEDED] }), /names shared libraries to load/],
      [elf({ type: 3, dynamic: [DT_AUDIT] }), /names shared libraries to load/],
    ];
    for (const [code, why] of cases) {
      assert.throws(() => checkProgram(code), (err: Error & { field?: string }) => err.field === 'source' && why.test(err.message) && /^source: a unikernel runs a statically linked 64-bit x86 Linux ELF program; /.test(err.message), `${why}`);
    }
  });
});

const closed = (properties: Record<string, TSchema>) =>
  Type.Object(Object.fromEntries(Object.entries(properties).map(([k, v]) => [k, Type.Optional(v)])), { additionalProperties: false });
const strings = Type.Array(Type.String());
const stringMap = Type.Record(Type.String(), Type.String());

/** ops 0.1.46's config (types/config.go), the keys it has, with their Go types; RunConfig in part. */
const OPS_CONFIG = closed({
  Args: strings,
  BaseVolumeSz: Type.String({ pattern: '^[0-9]+[kmgKMG]?$' }),
  Boot: Type.String(),
  BuildDir: Type.String(),
  CloudConfig: Type.Object({}),
  Debugflags: strings,
  Description: Type.String(),
  Dirs: strings,
  DisableArgsCopy: Type.Boolean(),
  Env: stringMap,
  Files: strings,
  Force: Type.Boolean(),
  Kernel: Type.String(),
  KlibDir: Type.String(),
  Klibs: strings,
  Language: Type.String(),
  LocalFilesParentDirectory: Type.String(),
  ManifestPassthrough: Type.Record(Type.String(), Type.Unknown()),
  MapDirs: stringMap,
  Mounts: stringMap,
  NameServers: strings,
  NanosVersion: Type.String(),
  NightlyBuild: Type.Boolean(),
  NoTrace: strings,
  Program: Type.String(),
  ProgramPath: Type.String(),
  RebootOnExit: Type.Boolean(),
  RunConfig: closed({
    Accel: Type.Boolean(),
    CPUs: Type.Integer(),
    Gateway: Type.String(),
    ImageName: Type.String(),
    IPAddress: Type.String(),
    IPv6Address: Type.String(),
    Memory: Type.String(),
    NetMask: Type.String(),
    Ports: strings,
    Verbose: Type.Boolean(),
  }),
  TargetConfig: stringMap,
  TargetRoot: Type.String(),
  TFSv4: Type.Boolean(),
  UefiBoot: Type.String(),
  Uefi: Type.Boolean(),
  Version: Type.String(),
  VolumesDir: Type.String(),
});
const OPS_CONFIG_CHECK = Compile(OPS_CONFIG);

const resources: ResolvedResources = { vcpus: 1, memoryMiB: 128, diskMiB: 16, timeoutMs: 30_000, network: { egressMbps: 0, ingressMbps: 0 } };
const { sink } = testOutputs();
let seq = 0;
function request(workload: Partial<Workload>, extra: Partial<SandboxRequest> = {}): SandboxRequest {
  return {
    runId: `nanos${++seq}`,
    workload: { kind: 'unikernel', source: { inline: 'x' }, ...workload } as Workload,
    code: elf(),
    resources,
    outputCapBytes: 65536,
    outputs: sink,
    ...extra,
  };
}

describe('unikernel config for ops', () => {
  it('carries args, env, input files, the disk size and debug_exit, in keys ops knows', () => {
    const config = opsConfig(
      request({ args: ['--port', '80'], env: { GREETING: 'hi=there', EMPTY: '' } }, { inputs: [{ path: 'data/a.txt', bytes: 2, data: new Uint8Array([104, 105]) }] }),
    );
    assert.deepEqual(config, {
      Args: ['--port', '80'],
      Env: { GREETING: 'hi=there', EMPTY: '' },
      Files: ['in/data/a.txt'],
      BaseVolumeSz: '16m',
      ManifestPassthrough: { debug_exit: 't' },
    });
    assert.equal(OPS_CONFIG_CHECK.Check(JSON.parse(JSON.stringify(config))), true, 'ops 0.1.46 reads every key');
    assert.equal(OPS_CONFIG_CHECK.Check({ ...config, Argz: [] }), false, 'the schema is closed, as ops is');
    const withOutputs = opsConfig(request({ outputs: ['result.txt'] }));
    assert.deepEqual(withOutputs.Dirs, ['out'], 'an empty /out for the outputs');
    assert.equal(OPS_CONFIG_CHECK.Check(withOutputs), true);
  });

  it('passes the run\'s Nanos options into the manifest, debug_exit staying vmesh\'s', () => {
    const config = opsConfig(request({ unikernel: { manifest: { expected_exit_code: '7', exec_protection: 't' } } }));
    assert.deepEqual(config.ManifestPassthrough, { expected_exit_code: '7', exec_protection: 't', debug_exit: 't' });
    assert.equal(OPS_CONFIG_CHECK.Check(config), true);
  });

  it('gives a sandbox on a network its address, netmask, gateway and name servers', () => {
    const link = { sandboxAddress: '10.89.0.6', hostAddress: '10.89.0.5', prefixLength: 30 };
    const config = opsConfig(request({}), { link, nameservers: ['10.0.0.53'] } as unknown as SandboxNetwork);
    assert.deepEqual([config.RunConfig, config.NameServers], [{ IPAddress: '10.89.0.6', NetMask: '255.255.255.252', Gateway: '10.89.0.5' }, ['10.0.0.53']]);
    assert.equal(OPS_CONFIG_CHECK.Check(config), true, 'ops 0.1.46 reads every key');
    assert.deepEqual([0, 8, 16, 24, 30, 32].map(netmaskOf), ['0.0.0.0', '255.0.0.0', '255.255.0.0', '255.255.255.0', '255.255.255.252', '255.255.255.255']);
    assert.deepEqual(opsConfig(request({}), { link, nameservers: [] } as unknown as SandboxNetwork).NameServers, [], 'none, not ops\'s 8.8.8.8, without egress');
  });
});

describe('unikernel QEMU command line and exit', () => {
  const base = { outputs: NO_OUTPUTS, usage: {} };

  it('boots the image on virtio-scsi with isa-debug-exit, QMP and no reboot', () => {
    const args = unikernelArgs({ accel: 'tcg', vcpus: 1.5, memoryMiB: 96, image: '/s/a,b.raw', qmpSocket: '/s/qmp.sock', pidFile: '/s/qemu.pid', disk: { bps: 1000 } });
    const joined = args.join(' ');
    for (const part of ['-machine q35,accel=tcg', '-cpu max', '-smp 2', '-m 96M', '-nodefaults', '-no-reboot', '-serial stdio', '-device isa-debug-exit', '-pidfile /s/qemu.pid']) {
      assert.ok(joined.includes(part), `${part} in ${joined}`);
    }
    assert.ok(args.includes('id=hd0,file=/s/a,,b.raw,format=raw,if=none,throttling.bps-total=1000'), 'the image, its comma doubled, throttled');
    assert.equal(joined.includes('-netdev'), false, 'no network unless asked');
    const tap = unikernelArgs({ accel: 'tcg', vcpus: 1, memoryMiB: 64, image: 'i', qmpSocket: 'q', pidFile: 'p', tap: 'vm0' }).join(' ');
    assert.ok(tap.includes('-netdev tap,id=net0,ifname=vm0,script=no,downscript=no -device virtio-net-pci,netdev=net0'), tap);
    assert.equal(unikernelArgs({ accel: 'kvm', vcpus: 1, memoryMiB: 64, image: 'i', qmpSocket: 'q', pidFile: 'p' }).join(' ').includes('-cpu host'), true);
  });

  it('reads the program\'s exit code from QEMU\'s status, and tells QEMU\'s own failures apart', () => {
    assert.deepEqual(unikernelExit(15, '', '', base), { ...base, outcome: 'exited', exitCode: 7 });
    assert.deepEqual(unikernelExit(1, '', 'hello\n', base), { ...base, outcome: 'exited', exitCode: 0 });
    const cases: Array<[number | null, string, RegExp]> = [
      [1, 'qemu-system-x86_64: -drive id=hd0: Could not open image', /without an exit code \(qemu exited with 1\): qemu-system-x86_64: -drive/],
      [(0x7e << 1) | 1, '', /the program faulted; its console ended: boot \| boom/],
      [(0x7f << 1) | 1, '', /halted/],
      [0, '', /without an exit code \(qemu exited with 0\)/],
      [null, 'spawn qemu ENOENT', /qemu exited with null\): spawn qemu ENOENT/],
    ];
    // Nanos ends a program killed by signal 11 with code 11, as exit(11) would; its console says which.
    const killed = unikernelExit(23, '', 'x\n*** signal 11 received by tid 2, errno 0, code 1\n    fault address 0x0\n', base);
    assert.deepEqual([killed.outcome, killed.reason], ['crashed', 'the program was killed by signal 11: *** signal 11 received by tid 2, errno 0, code 1']);
    assert.deepEqual(unikernelExit(23, '', 'it printed: signal 9 received\n', base).exitCode, 11, 'a program that merely prints about a signal exits with its code');
    assert.deepEqual(unikernelExit(1, 'qemu-system-x86_64: warning: host doesn\'t support requested feature\n', '', base).exitCode, 0, 'a warning from QEMU is not a failure');
    for (const [status, errors, why] of cases) {
      const exit = unikernelExit(status, errors, 'boot\nboom\n', base);
      assert.equal(exit.outcome, 'crashed', `${status}`);
      assert.match(exit.reason ?? '', why);
    }
  });
});

describe('nanos driver without ops', () => {
  const tmp = tempDir('vmesh-nanos-');
  after(() => tmp.remove());

  it('says what to install when ops is missing, and when it holds no Nanos kernel', async () => {
    const missing = await new NanosDriver({ sandboxRoot: tmp.dir, ops: path.join(tmp.dir, 'no-ops') }).probe();
    assert.equal(missing.available, false);
    assert.match(missing.reason ?? '', /not found: install ops \(https:\/\/ops\.city\), then run `ops update`/);
    // An ops that answers `version` as one with no kernel does (it prints 0.0 then).
    const bare = path.join(tmp.dir, 'ops-without-kernel');
    writeFileSync(bare, '#!/bin/sh\necho "Ops version: 0.1.46"\necho "Nanos version: 0.0"\n');
    chmodSync(bare, 0o755);
    const empty = await new NanosDriver({ sandboxRoot: tmp.dir, ops: bare }).probe();
    if (empty.reason?.includes('qemu')) return; // no QEMU here: the ops check comes after it
    assert.equal(empty.available, false);
    assert.match(empty.reason ?? '', /ops 0\.1\.46 holds no Nanos kernel: run `ops update` once/);
  });

  it('refuses what a unikernel cannot do yet, naming the field, before anything is made', async () => {
    const driver = new NanosDriver({ sandboxRoot: tmp.dir, ops: path.join(tmp.dir, 'no-ops') });
    const cases: Array<[SandboxRequest, string, RegExp]> = [
      [request({ command: ['sh'] }), 'command', /give the program as source/],
      [request({ stdin: 'x' }), 'stdin', /no stdin/],
      [request({ workdir: '/srv' }), 'workdir', /runs in \//],
      [request({ network: { egress: 'internet' } }), 'network.egress', /no sandbox networking/],
      [request({}, { resources: { ...resources, memoryMiB: 32 } }), 'resources.memoryMiB', /at least 64 MiB/],
      [request({}, { code: new Uint8Array(0) }), 'source', /give its ELF as source/],
      [request({}, { code: new TextEncoder().encode('MZ') }), 'source', /not an ELF file/],
      [request({}, { restoreFrom: tmp.dir }), 'source', /cannot be restored/],
      [request({ unikernel: { manifest: { debug_exit: 'f' } } }), 'unikernel.manifest.debug_exit', /set by vmesh itself/],
      [request({ unikernel: { manifest: { mounts: '(x:/y)' } } }), 'unikernel.manifest.mounts', /set by vmesh itself/],
    ];
    for (const [req, field, why] of cases) {
      await assert.rejects(driver.validate(req), (err: Error & { field?: string }) => err.field === field && why.test(err.message), `${field}: ${why}`);
      await assert.rejects(driver.prepare(req), (err: Error & { field?: string }) => err.field === field, `prepare refuses ${field} too`);
    }
    assert.deepEqual(readdirSync(tmp.dir).filter((n) => n.startsWith('nanos-')), [], 'no sandbox directory was made');
    assert.equal(driver.liveSandboxes(), 0);
  });
});
