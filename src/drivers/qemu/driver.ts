import { constants, promises as fs } from 'node:fs';
import path from 'node:path';
import { copySparse } from '../../util/files.ts';
import { AbortedError, outputPaths, UnsupportedError } from '../../spec/index.ts';
import { run } from '../../util/exec.ts';
import type { Driver, DriverProbe, PreparedSandbox, RunningSandbox, SandboxExit, SandboxIO, SandboxRequest } from '../driver.ts';
import { SANDBOX_TAP } from '../../net/sandbox-network.ts';
import { wantsNetwork } from '../sandbox-network.ts';
import { microVmArgs } from './command-line.ts';
import { validateGuestRun } from '../guest-vm/default-guest.ts';
import { agentExit, stoppedExit } from '../guest-vm/session.ts';
import { GuestVmDriver, type GuestVmOptions, type VmProcess, type VmSandbox } from '../guest-vm/vm-driver.ts';
import { hostTscKhz } from './host.ts';
import { kvmHostKey, probeKvmBoot, readKvmVerdict, writeKvmVerdict } from './kvm-probe.ts';
import { defaultGuestCache, type GuestImage } from '../../guest/image.ts';
import { killLeftoverVms } from '../vmm/leftovers.ts';
import { ownKernelExit, validateOwnKernel } from './own-kernel.ts';
import { closeQmp, QMP_SOCKET, qmpOf, type QmpClient } from './qmp.ts';
import { captureMachine, readSnapshot, SNAPSHOT_FILES, type SnapshotManifest } from './snapshot.ts';

export type Accel = 'kvm' | 'tcg';

export interface QemuDriverOptions extends GuestVmOptions {
  /**
   * `auto` (default): KVM where /dev/kvm is usable and a guest really boots with it (a boot probe on the
   * first microVM run, its verdict kept per host in `kvmVerdictFile`); TCG otherwise.
   */
  accel?: Accel | 'auto';
  binary?: string;
  /** The KVM device (default /dev/kvm). */
  kvmDevice?: string;
  /** Where the KVM boot probe's verdict is kept (default `<guest cache>/kvm-verdict.json`). */
  kvmVerdictFile?: string;
  /** How long the probe's guest may take to report under KVM (default 20 s). */
  kvmProbeTimeoutMs?: number;
}

/** A staged QEMU microVM; its declared outputs are a restored guest's from its snapshot. */
interface QemuPrepared extends VmSandbox {
  readonly kernel: string;
  readonly initrd?: string;
  /** A user's root disk image (used in place, never written). */
  readonly rootDisk?: string;
  readonly vcpus: number;
  readonly memoryMiB: number;
  /** Restore: the machine state to load instead of booting. */
  readonly incoming?: string;
}

interface QemuRunning extends VmProcess {
  readonly prepared: QemuPrepared;
  qmp?: Promise<QmpClient>;
  /** The end of a user kernel's console, for telling a panic from a power-off. */
  rawTail: string;
}

/**
 * MicroVMs with QEMU: `-M microvm`, the default vmesh guest (a Debian kernel and a busybox initramfs with
 * the agent), the run's inputs appended as a second initramfs archive, its outputs as a tar on a raw
 * virtio-blk disk, stdout/stderr and the exit code framed on the serial console.
 */
export class QemuDriver extends GuestVmDriver<QemuPrepared, QemuRunning> implements Driver {
  readonly name = 'qemu';
  private readonly binary: string;
  private accel: Accel = 'tcg';
  private version = '';
  private tscKhz: number | undefined;
  /** What is known of KVM here, for `vmesh drivers`. */
  private kvmNote = '';
  /** Set while `auto` waits for the boot probe: the host key its verdict will be kept under. */
  private kvmUnknown: string | undefined;
  private kvmSettling: Promise<void> | undefined;
  private readonly kvmVerdictFile: string;

  constructor(private readonly options: QemuDriverOptions = {}) {
    super(options);
    this.binary = options.binary ?? 'qemu-system-x86_64';
    this.kvmVerdictFile = options.kvmVerdictFile ?? path.join(options.guestCacheDir ?? defaultGuestCache(), 'kvm-verdict.json');
  }

  async probe(signal?: AbortSignal): Promise<DriverProbe> {
    if (process.platform !== 'linux') return { available: false, reason: 'microVMs need Linux' };
    let version: string;
    try {
      const { stdout } = await run(this.binary, ['--version'], { timeoutMs: 10_000, ...(signal ? { signal } : {}) });
      version = /version ([\d.]+)/.exec(stdout)?.[1] ?? stdout.split('\n')[0]!.trim();
    } catch {
      return { available: false, reason: `${this.binary} not found (apt-get install qemu-system-x86)` };
    }
    const wanted = process.env.VMESH_QEMU_ACCEL || this.options.accel || 'auto';
    if (wanted !== 'kvm' && wanted !== 'tcg' && wanted !== 'auto') return { available: false, reason: `VMESH_QEMU_ACCEL is ${JSON.stringify(wanted)}; expected kvm, tcg or auto` };
    this.version = version;
    this.tscKhz = await hostTscKhz();
    if (wanted === 'auto') await this.autoAccel(version);
    else [this.accel, this.kvmNote] = [wanted, `${wanted} as configured`];
    return this.status();
  }

  /** The accelerator microVMs run with now (TCG until the KVM boot probe says a guest boots under KVM). */
  get accelerator(): Accel {
    return this.accel;
  }

  /** The probe's answer as it stands: the accelerator changes once the KVM boot probe has run. */
  status(): DriverProbe {
    return { available: true, version: this.version, details: { accel: this.accel, machine: 'microvm', kvm: this.kvmNote } };
  }

  /**
   * `auto`: TCG unless /dev/kvm is usable and a guest boots under it. Nested KVM on some hosts (these
   * machines) starts QEMU and then hangs the guest, so only a boot tells: the verdict kept for this host
   * decides, and without one the first microVM run boots a probe guest first (`settleKvm`).
   */
  private async autoAccel(version: string): Promise<void> {
    this.accel = 'tcg';
    const device = this.options.kvmDevice ?? '/dev/kvm';
    try {
      await fs.access(device, constants.R_OK | constants.W_OK);
    } catch {
      this.kvmNote = `no usable ${device}`;
      return;
    }
    const key = await kvmHostKey(version);
    const verdict = await readKvmVerdict(this.kvmVerdictFile, key);
    if (verdict !== undefined) {
      [this.accel, this.kvmNote] = [verdict.boots ? 'kvm' : 'tcg', verdict.reason];
      return;
    }
    this.kvmUnknown = key;
    this.kvmNote = 'not probed yet: the first microVM run boots a guest under KVM once';
  }

  /** Runs the KVM boot probe once (every run that needs it waits for it), keeps its verdict, and takes KVM if it boots. */
  private settleKvm(signal?: AbortSignal): Promise<void> {
    const key = this.kvmUnknown;
    if (key === undefined) return Promise.resolve();
    this.kvmSettling ??= (async () => {
      const image = await this.guestImage(signal);
      // A `qemu-` directory with a pid file: a node that crashes mid-probe has its QEMU killed by `recover`.
      await fs.mkdir(this.sandboxRoot, { recursive: true, mode: 0o700 });
      const dir = await fs.mkdtemp(path.join(this.sandboxRoot, 'qemu-kvmprobe-'));
      const result = await probeKvmBoot({ binary: this.binary, image, dir, timeoutMs: this.options.kvmProbeTimeoutMs ?? 20_000 });
      await writeKvmVerdict(this.kvmVerdictFile, { key, ...result, at: new Date().toISOString() });
      [this.accel, this.kvmNote, this.kvmUnknown] = [result.boots ? 'kvm' : 'tcg', result.reason, undefined];
    })().finally(() => (this.kvmSettling = undefined));
    return this.kvmSettling;
  }

  /**
   * Three ways to a microVM: a snapshot to continue, the user's own kernel (no agent: the console is the
   * run's stdout, powering off ends the run), or a command in the default guest.
   */
  async validate(request: SandboxRequest): Promise<void> {
    if (request.restoreFrom !== undefined) {
      await readSnapshot(request.restoreFrom, { qemuVersion: this.version, accel: this.accel });
    } else if (request.kernel !== undefined) {
      wantsNetwork(request, this.options.networks);
      await validateOwnKernel(request, request.kernel);
    } else {
      wantsNetwork(request, this.options.networks);
      validateGuestRun(request);
    }
  }

  async prepare(request: SandboxRequest, signal?: AbortSignal): Promise<QemuPrepared> {
    if (request.restoreFrom !== undefined) return this.prepareRestore(request, request.restoreFrom);
    await this.settleKvm(signal);
    await this.validate(request);
    const machine = { vcpus: request.resources.vcpus, memoryMiB: request.resources.memoryMiB };
    if (request.kernel !== undefined) {
      const { kernel, initrd, rootfs } = request.kernel;
      const describe = () => ({ ...machine, kernel, ...(initrd === undefined ? {} : { initrd }), ...(rootfs === undefined ? {} : { rootDisk: rootfs }), outputs: [] });
      return this.stage(request, describe, (p) => this.attachNetwork(p, signal));
    }
    const image = await this.guestImage(signal);
    const outputs = outputPaths(request.workload);
    const describe = (dir: string) => ({
      ...machine,
      kernel: this.guestKernelFile(image),
      initrd: path.join(dir, 'initrd.cpio'),
      outputs,
      ...(outputs.length > 0 ? { outputsDisk: path.join(dir, 'outputs.img') } : {}),
    });
    return this.stage(request, describe, (p) => this.fillDefaultGuest(p, p.initrd!, image, image.modules, 'reboot', signal));
  }

  /**
   * Under TCG the unpacked kernel, which skips the bzImage's decompression in the guest (11 of 15 s to
   * the agent here); under KVM, where that takes a fraction of a second, the bzImage, whose copy QEMU
   * holds is 8 MiB, not 39.
   */
  private guestKernelFile(image: GuestImage): string {
    return this.accel === 'tcg' ? (image.vmlinux ?? image.kernel) : image.kernel;
  }

  /** A sandbox that continues a snapshot (checked here): its files copied out of it, its machine as it was. */
  private async prepareRestore(request: SandboxRequest, snapshot: string): Promise<QemuPrepared> {
    const manifest = await readSnapshot(snapshot, { qemuVersion: this.version, accel: this.accel });
    const describe = (dir: string) => ({
      kernel: path.join(dir, 'kernel'),
      initrd: path.join(dir, 'initrd.cpio'),
      vcpus: manifest.vcpus,
      memoryMiB: manifest.memoryMiB,
      outputs: manifest.outputs,
      incoming: path.join(snapshot, SNAPSHOT_FILES.memory),
      ...(manifest.files.disk === undefined ? {} : { outputsDisk: path.join(dir, 'outputs.img') }),
    });
    return this.stage(request, describe, async (p) => {
      await fs.copyFile(path.join(snapshot, SNAPSHOT_FILES.kernel), p.kernel);
      await fs.copyFile(path.join(snapshot, SNAPSHOT_FILES.initrd), p.initrd!);
      if (p.outputsDisk !== undefined) await copySparse(path.join(snapshot, SNAPSHOT_FILES.disk), p.outputsDisk);
    });
  }

  async start(prepared: PreparedSandbox, io: SandboxIO, signal?: AbortSignal): Promise<QemuRunning> {
    const p = prepared as QemuPrepared;
    const append = ownKernelAppend(p);
    const args = microVmArgs({
      accel: this.accel,
      vcpus: p.vcpus,
      memoryMiB: p.memoryMiB,
      kernel: p.kernel,
      ...(p.initrd === undefined ? {} : { initrd: p.initrd }),
      ...(p.rootDisk === undefined ? {} : { rootDisk: p.rootDisk }),
      ...(p.incoming === undefined ? {} : { incoming: p.incoming }),
      ...(append === '' ? {} : { append }),
      qmpSocket: path.join(p.dir, QMP_SOCKET),
      pidFile: path.join(p.dir, 'qemu.pid'),
      ...(this.tscKhz === undefined ? {} : { tscKhz: this.tscKhz }),
      ...(p.outputsDisk === undefined ? {} : { outputsDisk: p.outputsDisk }),
      ...(p.request.resources.disk === undefined ? {} : { disk: p.request.resources.disk }),
    });
    if (p.network !== undefined) args.push('-netdev', `tap,id=net0,ifname=${SANDBOX_TAP},script=no,downscript=no`, '-device', 'virtio-net-device,netdev=net0');
    // A user's own kernel has no agent and no frames: its console is the run's output.
    const raw = (chunk: Buffer) => {
      io.write('stdout', chunk);
      running.rawTail = (running.rawTail + chunk.toString('latin1')).slice(-4096);
    };
    // The process object itself, not a copy: its stderr keeps landing in `errors`.
    const opts = {
      ...(p.request.kernel === undefined ? {} : { onStdout: raw }),
      // Where QEMU keeps a root disk's copy-on-write layer (snapshot=on): the sandbox's directory.
      ...(p.rootDisk === undefined ? {} : { env: { TMPDIR: p.dir } }),
    };
    const running: QemuRunning = Object.assign(this.spawnVm(p, this.binary, args, io, opts), { prepared: p, rawTail: '' });
    this.running.add(running);
    if (p.incoming !== undefined) await this.resumeIncoming(running, signal);
    return running;
  }

  /** A restored machine starts paused (`-S`) and loads its state; once loaded, it goes on. */
  private async resumeIncoming(r: QemuRunning, signal?: AbortSignal): Promise<void> {
    const qmp = await this.qmp(r, signal);
    for (;;) {
      const { status } = (await qmp.execute('query-status')) as { status: string };
      if (status !== 'inmigrate') break;
      if (signal?.aborted) throw new AbortedError('the restore was aborted');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const migration = (await qmp.execute('query-migrate')) as { status?: string };
    if (migration.status === 'failed') throw new Error(`qemu could not load the snapshot: ${r.errors.trim() || 'the migration failed'}`);
    await qmp.execute('cont');
  }

  private qmp(r: QemuRunning, signal?: AbortSignal): Promise<QmpClient> {
    return qmpOf(r, path.join(r.prepared.dir, QMP_SOCKET), signal);
  }

  /** Pauses the guest's vCPUs (its clock stops with them); `resume` goes on. */
  async pause(sandbox: RunningSandbox): Promise<void> {
    await (await this.qmp(sandbox as QemuRunning)).execute('stop');
  }

  async resume(sandbox: RunningSandbox): Promise<void> {
    await (await this.qmp(sandbox as QemuRunning)).execute('cont');
  }

  /**
   * Captures the running microVM into `dir` (which must not exist yet): its memory and device state, its
   * kernel, initramfs and outputs disk. The guest is left paused; resume it to go on, or stop it.
   */
  async snapshot(sandbox: RunningSandbox, dir: string, signal?: AbortSignal): Promise<SnapshotManifest> {
    const r = sandbox as QemuRunning;
    const p = r.prepared;
    if (p.request.kernel !== undefined || p.initrd === undefined) {
      throw new UnsupportedError('snapshot: only a microvm in the default guest can be captured yet, not one with its own kernel', { field: 'id' });
    }
    if (p.network !== undefined) throw new UnsupportedError('snapshot: a microvm with a network cannot be captured yet', { field: 'id' });
    return captureMachine(
      await this.qmp(r, signal),
      {
        qemuVersion: this.version,
        accel: this.accel,
        vcpus: p.vcpus,
        memoryMiB: p.memoryMiB,
        ...(this.tscKhz === undefined ? {} : { tscKhz: this.tscKhz }),
        kernel: p.kernel,
        initrd: p.initrd,
        ...(p.outputsDisk === undefined ? {} : { disk: p.outputsDisk }),
        outputs: [...p.outputs],
      },
      dir,
      signal,
    );
  }

  async wait(sandbox: RunningSandbox): Promise<SandboxExit> {
    const r = sandbox as QemuRunning;
    try {
      const code = await r.exited;
      const p = r.prepared;
      const base = { outputs: await this.guestOutputs(r), usage: {} };
      const stopped = stoppedExit(r.stopReason, p.request, base);
      if (stopped !== undefined) return stopped;
      if (p.request.kernel !== undefined) return ownKernelExit(r.rawTail, r.errors, code, base);
      return agentExit(r.session, p.request, { name: 'qemu', errors: r.errors }, base);
    } finally {
      this.running.delete(r);
    }
  }

  protected override releaseVm(r: QemuRunning): void {
    closeQmp(r);
  }

  /** Kills the QEMU processes a previous node left (found by their pid files) and removes their directories. */
  recover(): Promise<number> {
    return killLeftoverVms({ sandboxRoot: this.sandboxRoot, prefix: 'qemu-', pidFile: 'qemu.pid', binary: 'qemu-system' });
  }
}

/**
 * The kernel arguments of a guest with its own kernel: where it has a network, its address as vmesh.address
 * (and, when it may leave its link, vmesh.gateway and vmesh.nameservers) for its init to set up, which
 * has no agent to do it; then the user's `append`.
 */
function ownKernelAppend(p: QemuPrepared): string {
  const source = p.request.workload.source;
  if (!('kernel' in source)) return '';
  const net = p.network;
  const words: string[] = [];
  if (net !== undefined) {
    words.push(`vmesh.address=${net.link.sandboxAddress}/${net.link.prefixLength}`);
    if ((p.request.workload.network?.egress ?? 'none') !== 'none') {
      words.push(`vmesh.gateway=${net.link.hostAddress}`);
      if (net.nameservers.length > 0) words.push(`vmesh.nameservers=${net.nameservers.join(',')}`);
    }
  }
  if (source.append !== undefined && source.append !== '') words.push(source.append);
  return words.join(' ');
}
