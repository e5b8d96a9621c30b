import { spawn, type ChildProcess } from 'node:child_process';

import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ensureGuestImage, type GuestImage } from '../../guest/image.ts';
import { ConsoleParser } from '../../guest/console.ts';
import { runArchive } from '../../guest/agent.ts';
import type { Progress } from '../../guest/kernel.ts';
import { NO_OUTPUTS, packOutputs, type CollectedOutputs } from '../../outputs/pack.ts';
import { AbortedError, InvalidInputError, InvalidSourceError, UnsupportedError, type Workload } from '../../spec/index.ts';
import { run } from '../../util/exec.ts';
import type { Driver, DriverProbe, PreparedSandbox, RunningSandbox, SandboxExit, SandboxIO, SandboxRequest, StopReason } from '../driver.ts';
import { applyLayer } from '../oci/image/unpack.ts';
import type { NetworkManager, SandboxNetwork } from '../../net/sandbox-network.ts';
import { networkSpec, wantsNetwork } from '../sandbox-network.ts';
import { checkInitrd, checkKernel } from './boot-files.ts';
import { microVmArgs } from './command-line.ts';
import { QmpClient } from './qmp.ts';
import { captureMachine, readSnapshot, SNAPSHOT_FILES, type SnapshotManifest } from './snapshot.ts';

export type Accel = 'kvm' | 'tcg';

export interface QemuDriverOptions {
  sandboxRoot?: string;
  /** Where guest kernels and images are cached (shared by nodes; content-addressed). */
  guestCacheDir?: string;
  /** `auto` (default) uses KVM only where /dev/kvm is usable and `kvmBoots` is set; TCG otherwise. */
  accel?: Accel | 'auto';
  binary?: string;
  busybox?: string;
  progress?: Progress;
  /** Sandbox networking; without it, microVMs that ask for egress or ports are refused. */
  networks?: NetworkManager;
}

/** A guest needs this much memory to boot the Debian kernel and the agent (64 MiB died in early boot). */
export const MIN_GUEST_MEMORY_MIB = 96;
/** A user's own kernel may be smaller; below this QEMU's own firmware does not fit. */
export const MIN_OWN_KERNEL_MEMORY_MIB = 16;

interface QemuPrepared extends PreparedSandbox {
  readonly dir: string;
  readonly kernel: string;
  readonly initrd?: string;
  /** The user's own kernel: no agent, the console is the run's stdout, powering off ends the run. */
  readonly ownKernel?: boolean;
  readonly outputsDisk?: string;
  readonly vcpus: number;
  readonly memoryMiB: number;
  /** The declared outputs the agent writes (a restored guest's come from its snapshot). */
  readonly outputs: readonly string[];
  /** Restore: the machine state to load instead of booting. */
  readonly incoming?: string;
  /** The guest's network: a namespace whose veth end is bridged with the tap QEMU opens. */
  network?: SandboxNetwork;
}

interface QemuRunning extends RunningSandbox {
  readonly prepared: QemuPrepared;
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  readonly console: ConsoleParser;
  exitCode?: number;
  /** Processes the guest kernel's OOM killer ended during the run. */
  oomKills: number;
  outputsWritten: boolean;
  /** What QEMU itself printed on stderr (capped): why it refused to start, if it did. */
  qemuErrors: string;
  stopReason?: StopReason;
  qmp?: Promise<QmpClient>;
  /** The end of a user kernel's console, for telling a panic from a power-off. */
  rawTail: string;
}

/**
 * MicroVMs with QEMU: `-M microvm`, the default vmesh guest (a Debian kernel and a busybox initramfs with
 * the agent), the run's inputs appended as a second initramfs archive, its outputs as a tar on a raw
 * virtio-blk disk, stdout/stderr and the exit code framed on the serial console.
 */
export class QemuDriver implements Driver {
  readonly name = 'qemu';
  readonly inputFiles = true;
  readonly kinds = ['microvm'] as const;
  readonly isolation = 'vm' as const;
  private readonly sandboxRoot: string;
  private readonly cacheDir: string;
  private readonly binary: string;
  private accel: Accel = 'tcg';
  private version = '';
  private tscKhz: number | undefined;
  private image: Promise<GuestImage> | undefined;
  private readonly prepared = new Set<QemuPrepared>();
  private readonly running = new Set<QemuRunning>();

  constructor(private readonly options: QemuDriverOptions = {}) {
    this.sandboxRoot = options.sandboxRoot ?? path.join(os.tmpdir(), 'vmesh-sandboxes');
    this.cacheDir = options.guestCacheDir ?? defaultGuestCache();
    this.binary = options.binary ?? 'qemu-system-x86_64';
  }

  accepts(workload: Workload): boolean {
    return workload.kind === 'microvm';
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
    const accel = this.chooseAccel();
    if (typeof accel !== 'string') return { available: false, reason: `VMESH_QEMU_ACCEL is ${JSON.stringify(accel.invalid)}; expected kvm, tcg or auto` };
    this.accel = accel;
    this.version = version;
    this.tscKhz = await hostTscKhz();
    return { available: true, version, details: { accel: this.accel, machine: 'microvm' } };
  }

  /**
   * KVM only when asked for (VMESH_QEMU_ACCEL or the options): nested KVM on some hosts (these machines)
   * hangs an ordinary guest, and telling that apart needs a boot probe that is not written yet, so `auto`
   * means TCG for now.
   */
  private chooseAccel(): Accel | { invalid: string } {
    const wanted = process.env.VMESH_QEMU_ACCEL || this.options.accel || 'auto';
    if (wanted === 'kvm' || wanted === 'tcg') return wanted;
    return wanted === 'auto' ? 'tcg' : { invalid: wanted };
  }

  async validate(request: SandboxRequest): Promise<void> {
    const w = request.workload;
    if (request.restoreFrom !== undefined) {
      await readSnapshot(request.restoreFrom, { qemuVersion: this.version, accel: this.accel });
      return;
    }
    if (request.kernel !== undefined) return this.validateOwnKernel(request, request.kernel);
    wantsNetwork(request, this.options.networks);
    if (!('guest' in w.source)) {
      throw new InvalidSourceError('source: a microvm runs in the default guest (source { "guest": "default" } with a command), from its own kernel (source { "kernel", "initrd" }) or from a snapshot (source { "snapshot" })', { field: 'source' });
    }
    if ([...(w.command ?? []), ...(w.args ?? [])].length === 0) {
      throw new InvalidInputError('command: a microvm in the default guest needs a command (e.g. ["sh", "-c", "echo hi"])', { field: 'command' });
    }
    if (request.resources.memoryMiB < MIN_GUEST_MEMORY_MIB) {
      throw new InvalidInputError(`resources.memoryMiB: a microvm needs at least ${MIN_GUEST_MEMORY_MIB} MiB to boot its kernel`, { field: 'resources.memoryMiB' });
    }
    // Input files ride in the initramfs, which lives in the guest's memory beside the kernel and the program.
    const inputBytes = (request.inputs ?? []).reduce((sum, input) => sum + input.bytes, 0);
    const roomMiB = (request.resources.memoryMiB - MIN_GUEST_MEMORY_MIB) / 2;
    if (inputBytes > roomMiB * 2 ** 20) {
      throw new InvalidInputError(
        `inputs: ${(inputBytes / 2 ** 20).toFixed(1)} MiB of input files do not fit in a ${request.resources.memoryMiB} MiB microvm (they travel in its memory; allow twice their size above ${MIN_GUEST_MEMORY_MIB} MiB)`,
        { field: 'inputs' },
      );
    }
  }

  /** A user's own kernel: a real bzImage and initramfs, and nothing that needs vmesh's agent inside. */
  private async validateOwnKernel(request: SandboxRequest, files: { kernel: string; initrd?: string }): Promise<void> {
    const w = request.workload;
    for (const [field, given] of [['command', w.command], ['args', w.args], ['stdin', w.stdin], ['outputs', w.outputs], ['inputs', request.inputs]] as const) {
      if (given !== undefined && (!Array.isArray(given) || given.length > 0)) {
        throw new InvalidInputError(`${field}: a microvm with its own kernel runs what its initramfs runs; ${field} needs the default guest's agent (source { "guest": "default" })`, { field });
      }
    }
    if ((w.network?.egress ?? 'none') !== 'none' || (w.network?.ports?.length ?? 0) > 0) {
      throw new InvalidInputError('network: a microvm with its own kernel gets no network yet (the default guest does)', { field: 'network' });
    }
    if (request.resources.memoryMiB < MIN_OWN_KERNEL_MEMORY_MIB) {
      throw new InvalidInputError(`resources.memoryMiB: a microvm needs at least ${MIN_OWN_KERNEL_MEMORY_MIB} MiB`, { field: 'resources.memoryMiB' });
    }
    await checkKernel(files.kernel);
    if (files.initrd !== undefined) await checkInitrd(files.initrd);
  }

  /** The default guest image, built once per driver (and cached on disk across nodes). */
  private guestImage(signal?: AbortSignal): Promise<GuestImage> {
    if (this.image === undefined) {
      this.image = ensureGuestImage({
        cacheDir: this.cacheDir,
        ...(this.options.busybox ? { busybox: this.options.busybox } : {}),
        ...(this.options.progress ? { progress: this.options.progress } : {}),
        ...(signal ? { signal } : {}),
      });
      this.image.catch(() => (this.image = undefined)); // a failed build is tried again next time
    }
    return this.image;
  }

  async prepare(request: SandboxRequest, signal?: AbortSignal): Promise<QemuPrepared> {
    await this.validate(request);
    if (request.restoreFrom !== undefined) return this.prepareRestore(request, request.restoreFrom);
    if (request.kernel !== undefined) {
      await fs.mkdir(this.sandboxRoot, { recursive: true, mode: 0o700 });
      const prepared: QemuPrepared = {
        request,
        dir: await fs.mkdtemp(path.join(this.sandboxRoot, `qemu-${request.runId}-`)),
        kernel: request.kernel.kernel,
        ...(request.kernel.initrd === undefined ? {} : { initrd: request.kernel.initrd }),
        ownKernel: true,
        vcpus: request.resources.vcpus,
        memoryMiB: request.resources.memoryMiB,
        outputs: [],
      };
      this.prepared.add(prepared);
      return prepared;
    }
    const image = await this.guestImage(signal);
    await fs.mkdir(this.sandboxRoot, { recursive: true, mode: 0o700 });
    const dir = await fs.mkdtemp(path.join(this.sandboxRoot, `qemu-${request.runId}-`));
    const w = request.workload;
    const outputs = w.outputs ?? [];
    const prepared: QemuPrepared = {
      request,
      dir,
      kernel: image.kernel,
      initrd: path.join(dir, 'initrd.cpio'),
      vcpus: request.resources.vcpus,
      memoryMiB: request.resources.memoryMiB,
      outputs,
      ...(outputs.length > 0 ? { outputsDisk: path.join(dir, 'outputs.img') } : {}),
    };
    this.prepared.add(prepared);
    try {
      if (wantsNetwork(request, this.options.networks)) {
        prepared.network = await this.options.networks!.create(networkSpec(request), signal);
        await this.options.networks!.bridgeTap(prepared.network, signal);
      }
      const link = prepared.network?.link;
      const inputs = runArchive({
        ...(link === undefined
          ? {}
          : { network: { address: link.sandboxAddress, prefixLength: link.prefixLength, ...((w.network?.egress ?? 'none') === 'none' ? {} : { gateway: link.hostAddress }) } }),
        args: [...(w.command ?? []), ...(w.args ?? [])],
        env: w.env ?? {},
        workdir: w.workdir ?? '/',
        ...(w.stdin === undefined ? {} : { stdin: w.stdin }),
        outputs,
        modules: image.modules,
        files: await Promise.all((request.inputs ?? []).map(async (input) => ({ path: input.path, data: input.data ?? (await fs.readFile(input.file!)) }))),
      });
      await fs.copyFile(image.initrd, prepared.initrd!);
      await fs.appendFile(prepared.initrd!, inputs);
      if (prepared.outputsDisk !== undefined) {
        // Sparse: the tar takes only what the guest writes, up to diskMiB.
        const disk = await fs.open(prepared.outputsDisk, 'w', 0o600);
        await disk.truncate(Math.max(1, request.resources.diskMiB) * 2 ** 20);
        await disk.close();
      }
      return prepared;
    } catch (err) {
      await this.cleanup(prepared);
      throw err;
    }
  }

  /** A sandbox that continues a snapshot: its kernel, initramfs and disk copied out of it, its machine as it was. */
  private async prepareRestore(request: SandboxRequest, snapshot: string): Promise<QemuPrepared> {
    const manifest = await readSnapshot(snapshot, { qemuVersion: this.version, accel: this.accel });
    await fs.mkdir(this.sandboxRoot, { recursive: true, mode: 0o700 });
    const dir = await fs.mkdtemp(path.join(this.sandboxRoot, `qemu-${request.runId}-`));
    const prepared: QemuPrepared = {
      request,
      dir,
      kernel: path.join(dir, 'kernel'),
      initrd: path.join(dir, 'initrd.cpio'),
      vcpus: manifest.vcpus,
      memoryMiB: manifest.memoryMiB,
      outputs: manifest.outputs,
      incoming: path.join(snapshot, SNAPSHOT_FILES.memory),
      ...(manifest.files.disk === undefined ? {} : { outputsDisk: path.join(dir, 'outputs.img') }),
    };
    this.prepared.add(prepared);
    try {
      await fs.copyFile(path.join(snapshot, SNAPSHOT_FILES.kernel), prepared.kernel);
      await fs.copyFile(path.join(snapshot, SNAPSHOT_FILES.initrd), prepared.initrd!);
      if (prepared.outputsDisk !== undefined) await run('cp', ['--sparse=always', path.join(snapshot, SNAPSHOT_FILES.disk), prepared.outputsDisk]);
      return prepared;
    } catch (err) {
      await this.cleanup(prepared);
      throw err;
    }
  }

  async start(prepared: PreparedSandbox, io: SandboxIO, signal?: AbortSignal): Promise<QemuRunning> {
    const p = prepared as QemuPrepared;
    const args = microVmArgs({
      accel: this.accel,
      vcpus: p.vcpus,
      memoryMiB: p.memoryMiB,
      kernel: p.kernel,
      ...(p.initrd === undefined ? {} : { initrd: p.initrd }),
      ...(p.incoming === undefined ? {} : { incoming: p.incoming }),
      ...(p.ownKernel && 'kernel' in p.request.workload.source && p.request.workload.source.append ? { append: p.request.workload.source.append } : {}),
      qmpSocket: path.join(p.dir, 'qmp.sock'),
      pidFile: path.join(p.dir, 'qemu.pid'),
      ...(this.tscKhz === undefined ? {} : { tscKhz: this.tscKhz }),
      ...(p.outputsDisk === undefined ? {} : { outputsDisk: p.outputsDisk }),
    });
    if (p.network !== undefined) args.push('-netdev', 'tap,id=net0,ifname=tap0,script=no,downscript=no', '-device', 'virtio-net-device,netdev=net0');
    // A networked VM's QEMU runs in the sandbox's network namespace, where its tap is (nsenter execs it: the pid is QEMU's).
    const [command, argv] = p.network === undefined ? [this.binary, args] : ['nsenter', [`--net=${p.network.netnsPath}`, '--', this.binary, ...args]];
    const child = spawn(command, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    const running: QemuRunning = {
      prepared: p,
      child,
      outputsWritten: false,
      oomKills: 0,
      qemuErrors: '',
      rawTail: '',
      console: new ConsoleParser((e) => {
        if (e.type === 'output') io.write(e.stream, e.data);
        else if (e.type === 'exit') running.exitCode = e.code;
        else if (e.type === 'outputs') running.outputsWritten = true;
        else if (e.type === 'oom') running.oomKills += e.kills;
      }),
      exited: new Promise((resolve) => {
        child.once('error', () => resolve(null));
        child.once('close', (code) => resolve(code));
      }),
    };
    child.stdout!.on('data', (chunk: Buffer) => {
      if (!p.ownKernel) return running.console.feed(chunk);
      io.write('stdout', chunk); // no agent, no frames: the console is the output
      running.rawTail = (running.rawTail + chunk.toString('latin1')).slice(-4096);
    });
    child.stderr!.on('data', (chunk: Buffer) => {
      if (running.qemuErrors.length < 4096) running.qemuErrors += chunk.toString();
    });
    this.running.add(running);
    if (p.network !== undefined) {
      io.network?.({ address: p.network.link.sandboxAddress, ports: p.network.ports.map(({ guest, host, protocol }) => ({ guest, host, protocol })) });
    }
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
    if (migration.status === 'failed') throw new Error(`qemu could not load the snapshot: ${r.qemuErrors.trim() || 'the migration failed'}`);
    await qmp.execute('cont');
  }

  private qmp(r: QemuRunning, signal?: AbortSignal): Promise<QmpClient> {
    r.qmp ??= QmpClient.connect(path.join(r.prepared.dir, 'qmp.sock'), signal === undefined ? {} : { signal });
    r.qmp.catch(() => (r.qmp = undefined));
    return r.qmp;
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
    if (p.ownKernel || p.initrd === undefined) {
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
      const outputs = r.outputsWritten ? await this.collectOutputs(r.prepared) : NO_OUTPUTS;
      const base = { outputs, usage: {} };
      const timeoutMs = r.prepared.request.resources.timeoutMs;
      if (r.stopReason === 'timeout') return { ...base, outcome: 'timeout', exitCode: null, reason: `the microVM was stopped after the ${timeoutMs} ms timeout` };
      if (r.stopReason === 'cancelled') return { ...base, outcome: 'cancelled', exitCode: null, reason: 'cancelled' };
      if (r.prepared.ownKernel) return ownKernelExit(r, code, base);
      if (r.exitCode === undefined) {
        const tail = r.qemuErrors.trim() ? `qemu: ${r.qemuErrors.trim()}` : r.console.tail().split('\n').slice(-5).join(' | ');
        return { ...base, outcome: 'crashed', exitCode: null, reason: `the guest ended without reporting an exit code${tail ? `: ${tail}` : ''}` };
      }
      if (r.oomKills > 0) {
        const n = r.oomKills;
        return { ...base, outcome: 'oom', exitCode: r.exitCode, reason: `the guest ran out of its ${r.prepared.request.resources.memoryMiB} MiB (its kernel killed ${n} process${n === 1 ? '' : 'es'})` };
      }
      return { ...base, outcome: 'exited', exitCode: r.exitCode };
    } finally {
      this.running.delete(r);
    }
  }

  /** The guest's tar, read from its disk into a scratch directory (refusing escapes), then packed like any sandbox's outputs. */
  private async collectOutputs(p: QemuPrepared): Promise<CollectedOutputs> {
    const scratch = path.join(p.dir, 'outputs');
    await fs.mkdir(scratch);
    const budget = { usedBytes: 0, maxBytes: Math.max(1, p.request.resources.diskMiB) * 2 ** 20 };
    try {
      await applyLayer(scratch, p.outputsDisk!, 'none', budget, 'the outputs disk');
    } catch (err) {
      return { files: [], skipped: p.outputs.map((o) => ({ path: o, reason: `the guest's outputs tar was refused: ${(err as Error).message}` })) };
    }
    return packOutputs(scratch, [...p.outputs], p.request.outputs);
  }

  async stop(sandbox: RunningSandbox, reason: StopReason): Promise<void> {
    const r = sandbox as QemuRunning;
    if (r.stopReason !== undefined || r.child.exitCode !== null) return;
    r.stopReason = reason;
    r.child.kill('SIGKILL'); // the VM is this process: nothing of it outlives it
  }

  async cleanup(prepared: PreparedSandbox): Promise<void> {
    const p = prepared as QemuPrepared;
    for (const r of this.running) {
      if (r.prepared !== p) continue;
      void r.qmp?.then((q) => q.close()).catch(() => {});
      if (r.child.exitCode === null && r.child.signalCode === null) {
        r.child.kill('SIGKILL');
        await r.exited;
      }
    }
    if (p.network !== undefined) await this.options.networks?.destroy(p.network);
    await fs.rm(p.dir, { recursive: true, force: true }).catch(() => {});
    this.prepared.delete(p);
  }

  /** Kills the QEMU processes a previous node left (found by their pid files) and removes their directories. */
  async recover(): Promise<number> {
    const entries = await fs.readdir(this.sandboxRoot).catch(() => [] as string[]);
    let n = 0;
    for (const e of entries.filter((name) => name.startsWith('qemu-'))) {
      const dir = path.join(this.sandboxRoot, e);
      const pid = Number((await fs.readFile(path.join(dir, 'qemu.pid'), 'utf8').catch(() => '')).trim());
      if (pid > 0 && (await isQemu(pid, dir))) {
        try {
          process.kill(pid, 'SIGKILL');
          n++;
        } catch {
          /* already gone */
        }
      }
      await fs.rm(dir, { recursive: true, force: true });
    }
    return n;
  }

  liveSandboxes(): number {
    return this.prepared.size + this.running.size;
  }

  async close(): Promise<void> {
    await Promise.all([...this.running].map(async (r) => {
      await this.stop(r, 'cancelled');
      await r.exited;
    }));
  }
}

/**
 * How a user's own kernel ended: powering off (QEMU exits 0 under `-no-reboot` with `reboot=t`) is
 * success, a panic (which `panic=-1` also turns into a reboot) is a crash, and so is QEMU failing.
 */
function ownKernelExit(r: QemuRunning, code: number | null, base: Pick<SandboxExit, 'outputs' | 'usage'>): SandboxExit {
  const panic = /Kernel panic[^\n]*/.exec(r.rawTail)?.[0];
  if (panic !== undefined) return { ...base, outcome: 'crashed', exitCode: null, reason: `the guest kernel panicked: ${panic.trim()}` };
  if (code !== 0) return { ...base, outcome: 'crashed', exitCode: null, reason: `qemu exited with ${code}${r.qemuErrors.trim() ? `: ${r.qemuErrors.trim()}` : ''}` };
  return { ...base, outcome: 'exited', exitCode: 0 };
}

/** Only a QEMU started for that sandbox directory is killed: a recycled pid is left alone. */
async function isQemu(pid: number, dir: string): Promise<boolean> {
  const cmdline = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return cmdline.includes('qemu-system') && cmdline.includes(dir);
}

/** The host CPU's clock in kHz from /proc/cpuinfo (what TCG's guest TSC runs at), if it says. */
export async function hostTscKhz(): Promise<number | undefined> {
  const info = await fs.readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const mhz = Number(/^cpu MHz\s*:\s*([\d.]+)/m.exec(info)?.[1]);
  return mhz > 0 ? Math.round(mhz * 1000) : undefined;
}

/** `$XDG_CACHE_HOME/vmesh/guest`, else `~/.cache/vmesh/guest`. */
export function defaultGuestCache(): string {
  return path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'vmesh', 'guest');
}

