import { spawn, type ChildProcess } from 'node:child_process';
import { constants, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { GuestFinish } from '../../guest/agent.ts';
import { defaultGuestCache, ensureGuestImage, type GuestImage } from '../../guest/image.ts';
import type { Progress } from '../../guest/kernel.ts';
import type { NetworkManager, SandboxNetwork } from '../../net/sandbox-network.ts';
import { NO_OUTPUTS } from '../../outputs/pack.ts';
import { AbortedError, outputPaths, UnsupportedError, type Workload } from '../../spec/index.ts';
import { run } from '../../util/exec.ts';
import type { Driver, DriverProbe, PreparedSandbox, RunningSandbox, SandboxExit, SandboxIO, SandboxRequest, StopReason } from '../driver.ts';
import { guestRunArchive, validateGuestRun } from '../guest-vm/default-guest.ts';
import { agentExit, collectGuestOutputs, createOutputsDisk, guestSession, stoppedExit, type GuestSession } from '../guest-vm/session.ts';
import { networkSpec, wantsNetwork } from '../sandbox-network.ts';
import { killLeftoverVms } from './leftovers.ts';
import { callApi, type ApiCall } from './unix-http.ts';

export interface ApiVmmOptions {
  sandboxRoot?: string;
  /** Where the default guest image is cached (shared by nodes; content-addressed). */
  guestCacheDir?: string;
  /** The VMM's binary (default: its usual name on PATH). */
  binary?: string;
  busybox?: string;
  progress?: Progress;
  /** Sandbox networking; without it, microVMs that ask for egress or ports are refused. */
  networks?: NetworkManager;
  /** The KVM device the VMM opens (default /dev/kvm). */
  kvmDevice?: string;
  /** How long the VMM may take to answer its API after it starts (default 5 s). */
  apiTimeoutMs?: number;
}

/** One staged microVM: its directory, what it boots, and its network. */
export interface VmmSandbox extends PreparedSandbox {
  readonly dir: string;
  /** The guest kernel (absolute). */
  readonly kernel: string;
  /** This run's initramfs: the guest image's, with the run's archive appended (absolute, inside `dir`). */
  readonly initrd: string;
  /** The raw disk the agent writes the outputs tar onto, when the run declares outputs. */
  readonly outputsDisk?: string;
  readonly outputs: readonly string[];
  readonly vcpus: number;
  readonly memoryMiB: number;
  network?: SandboxNetwork;
}

interface VmmRunning extends RunningSandbox {
  readonly prepared: VmmSandbox;
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  readonly session: GuestSession;
  readonly socket: string;
  /** What the VMM printed on stderr (capped): why it refused to start, if it did. */
  errors: string;
  stopReason?: StopReason;
}

/** The file names inside a sandbox directory: fixed, so that requests can name them relative to it. */
export const SANDBOX_FILES = { socket: 'api.sock', pid: 'vmm.pid', initrd: 'initrd.cpio', disk: 'outputs.img' } as const;

/**
 * A VMM driven through a REST API on a Unix socket (Firecracker, Cloud Hypervisor), booting the default
 * vmesh guest: the run's command, inputs and outputs ride exactly as they do under QEMU (a second
 * initramfs archive, a raw outputs disk, `@vmesh:` frames on the serial console), so only the machine's
 * description differs. A subclass says how its VMM is started, what it is sent to boot, and how it pauses.
 *
 * The VMM runs with its sandbox directory as working directory (in the sandbox's network namespace when
 * the run has a network), its pid in a file there, and is the VM: killing it ends the run.
 */
export abstract class ApiVmmDriver implements Driver {
  abstract readonly name: string;
  readonly kinds = ['microvm'] as const;
  readonly isolation = 'vm' as const;
  readonly inputFiles = true;
  /** The release whose documented API the requests were written against. */
  abstract readonly pinnedVersion: string;
  /** How to get the binary, for a probe that did not find it. */
  protected abstract readonly installHint: string;
  /** How the agent ends the VM so that this VMM exits. */
  protected abstract readonly finish: GuestFinish;
  /** Asked until it answers, once the VMM is started: the API is up. */
  protected abstract readonly readyCall: ApiCall;
  protected abstract readonly pauseCall: ApiCall;
  protected abstract readonly resumeCall: ApiCall;

  protected readonly sandboxRoot: string;
  protected readonly binary: string;
  protected version = '';
  private readonly cacheDir: string;
  private image: Promise<GuestImage> | undefined;
  private readonly prepared = new Set<VmmSandbox>();
  private readonly running = new Set<VmmRunning>();

  constructor(protected readonly options: ApiVmmOptions = {}) {
    this.sandboxRoot = options.sandboxRoot ?? path.join(os.tmpdir(), 'vmesh-sandboxes');
    this.cacheDir = options.guestCacheDir ?? defaultGuestCache();
    this.binary = options.binary ?? this.vmmBinary();
  }

  /** The binary's usual name (a method, so that the constructor can ask before subclass fields exist). */
  protected abstract vmmBinary(): string;
  /** The version in what `--version` printed, or undefined when it is not this VMM. */
  protected abstract parseVersion(printed: string): string | undefined;
  /** Why this host cannot boot the guest beyond the binary and KVM (a missing kernel), or undefined. */
  protected abstract guestProblem(): Promise<string | undefined>;
  /** The kernel this VMM boots and the modules the agent loads for it. */
  protected abstract guestKernel(image: GuestImage): { kernel: string; modules: string[] };
  /** The VMM's command line (its API socket inside the sandbox directory). */
  protected abstract vmmArgs(p: VmmSandbox): string[];
  /** The requests that describe the machine and boot it, in order. */
  protected abstract bootCalls(p: VmmSandbox): ApiCall[];
  /** Checks of the resources that this VMM limits further than vmesh does (e.g. a vCPU maximum). */
  protected abstract validateMachine(request: SandboxRequest): void;
  /** Files the VMM expects to exist before it is told about them (a log it appends to). */
  protected async stageFiles(_p: VmmSandbox): Promise<void> {}

  accepts(workload: Workload): boolean {
    return workload.kind === 'microvm';
  }

  async probe(signal?: AbortSignal): Promise<DriverProbe> {
    if (process.platform !== 'linux') return { available: false, reason: 'microVMs need Linux' };
    let printed: string;
    try {
      printed = (await run(this.binary, ['--version'], { timeoutMs: 10_000, ...(signal ? { signal } : {}) })).stdout;
    } catch {
      return { available: false, reason: `${this.binary} not found (${this.installHint})` };
    }
    const version = this.parseVersion(printed);
    if (version === undefined) return { available: false, reason: `${this.binary} --version printed ${JSON.stringify(printed.trim().slice(0, 80))}, not a ${this.name} version` };
    const kvm = this.options.kvmDevice ?? '/dev/kvm';
    try {
      await fs.access(kvm, constants.R_OK | constants.W_OK);
    } catch {
      return { available: false, version, reason: `${this.name} needs KVM and ${kvm} is not there or not writable (load kvm_intel or kvm_amd; nested virtualization on a VM)` };
    }
    const problem = await this.guestProblem();
    if (problem !== undefined) return { available: false, version, reason: problem };
    this.version = version;
    return { available: true, version, details: { api: `written against ${this.pinnedVersion}` } };
  }

  async validate(request: SandboxRequest): Promise<void> {
    if (request.restoreFrom !== undefined) {
      throw new UnsupportedError(`source.snapshot: the ${this.name} driver cannot restore snapshots yet (the qemu driver can: --driver qemu)`, { field: 'source' });
    }
    if (request.kernel !== undefined) {
      throw new UnsupportedError(`source.kernel: the ${this.name} driver runs only the default vmesh guest yet (the qemu driver boots your own kernel: --driver qemu)`, { field: 'source' });
    }
    wantsNetwork(request, this.options.networks);
    validateGuestRun(request);
    this.validateMachine(request);
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

  async prepare(request: SandboxRequest, signal?: AbortSignal): Promise<VmmSandbox> {
    await this.validate(request);
    const image = await this.guestImage(signal);
    const { kernel, modules } = this.guestKernel(image);
    await fs.mkdir(this.sandboxRoot, { recursive: true, mode: 0o700 });
    const dir = await fs.mkdtemp(path.join(this.sandboxRoot, `${this.name}-${request.runId}-`));
    const outputs = outputPaths(request.workload);
    const p: VmmSandbox = {
      request,
      dir,
      kernel,
      initrd: path.join(dir, SANDBOX_FILES.initrd),
      outputs,
      vcpus: Math.max(1, Math.ceil(request.resources.vcpus)),
      memoryMiB: Math.max(1, Math.round(request.resources.memoryMiB)),
      ...(outputs.length > 0 ? { outputsDisk: path.join(dir, SANDBOX_FILES.disk) } : {}),
    };
    this.prepared.add(p);
    try {
      if (wantsNetwork(request, this.options.networks)) {
        p.network = await this.options.networks!.create(networkSpec(request), signal);
        await this.options.networks!.bridgeTap(p.network, signal);
      }
      await fs.copyFile(image.initrd, p.initrd);
      await fs.appendFile(p.initrd, await guestRunArchive(request, modules, p.network?.link, this.finish));
      if (p.outputsDisk !== undefined) await createOutputsDisk(p.outputsDisk, request);
      await this.stageFiles(p);
      return p;
    } catch (err) {
      await this.cleanup(p);
      throw err;
    }
  }

  async start(prepared: PreparedSandbox, io: SandboxIO, signal?: AbortSignal): Promise<VmmRunning> {
    const p = prepared as VmmSandbox;
    const args = this.vmmArgs(p);
    // A networked VM's VMM runs in the sandbox's network namespace, where its tap is (nsenter execs it: the pid is the VMM's).
    const [command, argv] = p.network === undefined ? [this.binary, args] : ['nsenter', [`--net=${p.network.netnsPath}`, '--', this.binary, ...args]];
    const child = spawn(command, argv, { cwd: p.dir, stdio: ['ignore', 'pipe', 'pipe'] });
    const r: VmmRunning = {
      prepared: p,
      child,
      socket: path.join(p.dir, SANDBOX_FILES.socket),
      session: guestSession(io),
      errors: '',
      exited: new Promise((resolve) => {
        child.once('error', (err) => {
          r.errors += `${err.message}\n`;
          resolve(null);
        });
        child.once('close', (code) => resolve(code));
      }),
    };
    child.stdout!.on('data', (chunk: Buffer) => r.session.console.feed(chunk));
    child.stderr!.on('data', (chunk: Buffer) => {
      if (r.errors.length < 4096) r.errors += chunk.toString();
    });
    this.running.add(r);
    if (child.pid !== undefined) await fs.writeFile(path.join(p.dir, SANDBOX_FILES.pid), `${child.pid}\n`);
    if (p.network !== undefined) {
      io.network?.({ address: p.network.link.sandboxAddress, ports: p.network.ports.map(({ guest, host, protocol }) => ({ guest, host, protocol })) });
    }
    await this.untilApiAnswers(r, signal);
    for (const call of this.bootCalls(p)) await callApi(r.socket, call, signal === undefined ? {} : { signal });
    return r;
  }

  /** Asks `readyCall` every 10 ms until the VMM answers; fails at once if it exits, and after `apiTimeoutMs`. */
  private async untilApiAnswers(r: VmmRunning, signal?: AbortSignal): Promise<void> {
    const deadline = Date.now() + (this.options.apiTimeoutMs ?? 5000);
    let exited = false;
    void r.exited.then(() => (exited = true));
    for (;;) {
      if (signal?.aborted) throw new AbortedError(`${this.name}: the start was aborted`);
      if (exited) throw new Error(`${this.name} exited before its API answered: ${r.errors.trim() || 'it said nothing'}`);
      try {
        await callApi(r.socket, this.readyCall, { timeoutMs: 1000 });
        return;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`${this.name}'s API did not answer within ${this.options.apiTimeoutMs ?? 5000} ms: ${(err as Error).message}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  async pause(sandbox: RunningSandbox): Promise<void> {
    await callApi((sandbox as VmmRunning).socket, this.pauseCall);
  }

  async resume(sandbox: RunningSandbox): Promise<void> {
    await callApi((sandbox as VmmRunning).socket, this.resumeCall);
  }

  async wait(sandbox: RunningSandbox): Promise<SandboxExit> {
    const r = sandbox as VmmRunning;
    try {
      await r.exited;
      const p = r.prepared;
      const outputs = r.session.outputsWritten && p.outputsDisk !== undefined ? await collectGuestOutputs(p.request, p.dir, p.outputsDisk, p.outputs) : NO_OUTPUTS;
      const base = { outputs, usage: {} };
      return stoppedExit(r.stopReason, p.request, base) ?? agentExit(r.session, p.request, { name: this.name, errors: r.errors }, base);
    } finally {
      this.running.delete(r);
    }
  }

  async stop(sandbox: RunningSandbox, reason: StopReason): Promise<void> {
    const r = sandbox as VmmRunning;
    if (r.stopReason !== undefined || r.child.exitCode !== null) return;
    r.stopReason = reason;
    r.child.kill('SIGKILL'); // the VM is this process: nothing of it outlives it
  }

  async cleanup(prepared: PreparedSandbox): Promise<void> {
    const p = prepared as VmmSandbox;
    for (const r of this.running) {
      if (r.prepared !== p) continue;
      if (r.child.exitCode === null && r.child.signalCode === null) {
        r.child.kill('SIGKILL');
        await r.exited;
      }
      this.running.delete(r);
    }
    if (p.network !== undefined) await this.options.networks?.destroy(p.network);
    await fs.rm(p.dir, { recursive: true, force: true }).catch(() => {});
    this.prepared.delete(p);
  }

  /** Kills the VMMs a previous node left (found by their pid files) and removes their directories. */
  recover(): Promise<number> {
    return killLeftoverVms({ sandboxRoot: this.sandboxRoot, prefix: `${this.name}-`, pidFile: SANDBOX_FILES.pid, binary: path.basename(this.binary) });
  }

  liveSandboxes(): number {
    return this.prepared.size + this.running.size;
  }

  async close(): Promise<void> {
    await Promise.all(
      [...this.running].map(async (r) => {
        await this.stop(r, 'cancelled');
        await r.exited;
      }),
    );
  }
}

/** A locally administered MAC address for a run's guest NIC, stable for the run (from its id). */
export function guestMac(runId: string): string {
  let h = 0x811c9dc5;
  for (const c of runId) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193) >>> 0;
  const bytes = [0x06, 0x00, (h >>> 24) & 0xff, (h >>> 16) & 0xff, (h >>> 8) & 0xff, h & 0xff];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}
