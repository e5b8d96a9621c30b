import { constants, promises as fs } from 'node:fs';
import path from 'node:path';
import { copySparse } from '../../util/files.ts';
import type { GuestFinish } from '../../guest/agent.ts';
import type { GuestImage } from '../../guest/image.ts';
import { SANDBOX_TAP } from '../../net/sandbox-network.ts';
import { AbortedError, outputPaths, UnsupportedError } from '../../spec/index.ts';
import { run } from '../../util/exec.ts';
import type { Driver, DriverProbe, PreparedSandbox, RunningSandbox, SandboxExit, SandboxIO, SandboxRequest } from '../driver.ts';
import { validateGuestRun } from '../guest-vm/default-guest.ts';
import { agentExit, stoppedExit } from '../guest-vm/session.ts';
import { GuestVmDriver, type GuestVmOptions, type VmProcess, type VmSandbox as GuestVmSandbox } from '../guest-vm/vm-driver.ts';
import { wantsNetwork } from '../sandbox-network.ts';
import { killLeftoverVms } from './leftovers.ts';
import { callApi, type ApiCall } from './unix-http.ts';
import { completeVmmSnapshot, readVmmSnapshot, VMM_SNAPSHOT_FILES, type VmmSnapshotManifest } from './vmm-snapshot.ts';

export interface ApiVmmOptions extends GuestVmOptions {
  /** The VMM's binary (default: its usual name on PATH). */
  binary?: string;
  /** The KVM device the VMM opens (default /dev/kvm). */
  kvmDevice?: string;
  /** How long the VMM may take to answer its API after it starts (default 5 s). */
  apiTimeoutMs?: number;
}

/** One staged microVM: what it boots. */
export interface VmmSandbox extends GuestVmSandbox {
  /** The guest kernel (absolute). */
  readonly kernel: string;
  /** This run's initramfs: the guest image's, with the run's archive appended (absolute, inside `dir`). */
  readonly initrd: string;
  readonly vcpus: number;
  readonly memoryMiB: number;
  /** A snapshot directory (checked) that this sandbox continues, instead of booting. */
  readonly restoreFrom?: string;
}

interface VmmRunning extends VmProcess {
  readonly prepared: VmmSandbox;
  readonly socket: string;
}

/** Writing or loading a snapshot moves the guest's whole memory through a file: more than an API call's usual 10 s. */
const SNAPSHOT_CALL_TIMEOUT_MS = 300_000;

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
export abstract class ApiVmmDriver extends GuestVmDriver<VmmSandbox, VmmRunning> implements Driver {
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
  /** The version `probe` found: a snapshot loads only into the version that took it. */
  protected version = '';

  protected readonly binary: string;

  constructor(protected readonly options: ApiVmmOptions = {}) {
    super(options);
    this.binary = options.binary ?? this.vmmBinary();
  }

  /** The binary's usual name (a method, so that the constructor can ask before subclass fields exist). */
  protected abstract vmmBinary(): string;
  /** The version in what `--version` printed, or undefined when it is not this VMM. */
  protected abstract parseVersion(printed: string): string | undefined;
  /** Why this host cannot run the VMM beyond the binary and KVM (a missing kernel, a jailer), or undefined. */
  protected abstract hostProblem(): Promise<string | undefined>;
  /** The kernel this VMM boots and the modules the agent loads for it. */
  protected abstract guestKernel(image: GuestImage): { kernel: string; modules: string[] };
  /** The VMM's command line (its API socket inside the sandbox directory). */
  protected abstract vmmArgs(p: VmmSandbox): string[];
  /**
   * What is spawned: the VMM itself by default; a launcher (Firecracker's jailer) that execs it in the
   * same process, joining the sandbox's network namespace itself (`joinsNetwork`), when a driver says so.
   */
  protected vmmCommand(p: VmmSandbox): { command: string; args: string[]; joinsNetwork?: boolean } {
    return { command: this.binary, args: this.vmmArgs(p) };
  }
  /** The requests that describe the machine and boot it, in order. */
  protected abstract bootCalls(p: VmmSandbox): ApiCall[];
  /** The requests that write a snapshot of the paused VM into `dir` (absolute). */
  protected abstract snapshotCalls(dir: string): ApiCall[];
  /** Moves what `snapshotCalls` wrote elsewhere (inside a jail) into `dir`. */
  protected async collectSnapshot(_p: VmmSandbox, _dir: string): Promise<void> {}
  /** The requests that load the snapshot in `dir` into a VMM that has no VM yet, and let it run. */
  protected abstract restoreCalls(dir: string): ApiCall[];
  /** What `probe` shows beside the API version (a jailer's user). */
  protected probeDetails(): Record<string, string> {
    return {};
  }
  /** Checks of the resources that this VMM limits further than vmesh does (e.g. a vCPU maximum). */
  protected abstract validateMachine(request: SandboxRequest): void;
  /** Files the VMM expects to exist before it is told about them (a log it appends to). */
  protected async stageFiles(_p: VmmSandbox): Promise<void> {}

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
    this.version = version;
    const kvm = this.options.kvmDevice ?? '/dev/kvm';
    try {
      await fs.access(kvm, constants.R_OK | constants.W_OK);
    } catch {
      return { available: false, version, reason: `${this.name} needs KVM and ${kvm} is not there or not writable (load kvm_intel or kvm_amd; nested virtualization on a VM)` };
    }
    const problem = await this.hostProblem();
    if (problem !== undefined) return { available: false, version, reason: problem };
    return { available: true, version, details: { api: `written against ${this.pinnedVersion}`, ...this.probeDetails() } };
  }

  /** The VMM's version, as `probe` found it (probing now if it has not yet). */
  private async vmmVersion(signal?: AbortSignal): Promise<string> {
    if (this.version === '') await this.probe(signal);
    if (this.version === '') throw new Error(`${this.name}: cannot tell the version of ${this.binary}, which a snapshot records`);
    return this.version;
  }

  async validate(request: SandboxRequest): Promise<void> {
    if (request.restoreFrom !== undefined) {
      await readVmmSnapshot(request.restoreFrom, { driver: this.name, vmmVersion: await this.vmmVersion() });
      return;
    }
    if (request.kernel !== undefined) {
      throw new UnsupportedError(`source.kernel: the ${this.name} driver runs only the default vmesh guest yet (the qemu driver boots your own kernel: --driver qemu)`, { field: 'source' });
    }
    wantsNetwork(request, this.options.networks);
    validateGuestRun(request);
    this.validateMachine(request);
  }

  async prepare(request: SandboxRequest, signal?: AbortSignal): Promise<VmmSandbox> {
    // A restore's whole check is its snapshot's, which prepareRestore reads once.
    if (request.restoreFrom !== undefined) return this.prepareRestore(request, request.restoreFrom, signal);
    await this.validate(request);
    const image = await this.guestImage(signal);
    const { kernel, modules } = this.guestKernel(image);
    const outputs = outputPaths(request.workload);
    const describe = (dir: string) => ({
      kernel,
      initrd: path.join(dir, SANDBOX_FILES.initrd),
      outputs,
      vcpus: Math.max(1, Math.ceil(request.resources.vcpus)),
      memoryMiB: Math.max(1, Math.round(request.resources.memoryMiB)),
      ...(outputs.length > 0 ? { outputsDisk: path.join(dir, SANDBOX_FILES.disk) } : {}),
    });
    return this.stage(request, describe, async (p) => {
      await this.fillDefaultGuest(p, p.initrd, image, modules, this.finish, signal);
      await this.stageFiles(p);
    });
  }

  /** A sandbox that continues a snapshot: its initramfs and outputs disk copied out of it, its machine as it was. */
  private async prepareRestore(request: SandboxRequest, snapshot: string, signal?: AbortSignal): Promise<VmmSandbox> {
    const manifest = await readVmmSnapshot(snapshot, { driver: this.name, vmmVersion: await this.vmmVersion(signal) });
    // Not booted (the snapshot's memory holds it), but part of the machine's description.
    const { kernel } = this.guestKernel(await this.guestImage(signal));
    const disk = VMM_SNAPSHOT_FILES.disk in manifest.files;
    const describe = (dir: string) => ({
      kernel,
      initrd: path.join(dir, SANDBOX_FILES.initrd),
      outputs: manifest.outputs,
      vcpus: manifest.vcpus,
      memoryMiB: manifest.memoryMiB,
      restoreFrom: snapshot,
      ...(disk ? { outputsDisk: path.join(dir, SANDBOX_FILES.disk) } : {}),
    });
    return this.stage(request, describe, async (p) => {
      await fs.copyFile(path.join(snapshot, VMM_SNAPSHOT_FILES.initrd), p.initrd);
      if (p.outputsDisk !== undefined) await copySparse(path.join(snapshot, VMM_SNAPSHOT_FILES.disk), p.outputsDisk);
      await this.stageFiles(p);
    });
  }

  async start(prepared: PreparedSandbox, io: SandboxIO, signal?: AbortSignal): Promise<VmmRunning> {
    const p = prepared as VmmSandbox;
    // The process object itself, not a copy: its stderr keeps landing in `errors`.
    const { command, args, joinsNetwork } = this.vmmCommand(p);
    const vm = this.spawnVm(p, command, args, io, { cwd: p.dir, ...(joinsNetwork ? { joinsNetwork } : {}) });
    const r: VmmRunning = Object.assign(vm, { prepared: p, socket: path.join(p.dir, SANDBOX_FILES.socket) });
    this.running.add(r);
    if (r.child.pid !== undefined) await fs.writeFile(path.join(p.dir, SANDBOX_FILES.pid), `${r.child.pid}\n`);
    await this.untilApiAnswers(r, signal);
    const options = { ...(p.restoreFrom === undefined ? {} : { timeoutMs: SNAPSHOT_CALL_TIMEOUT_MS }), ...(signal === undefined ? {} : { signal }) };
    for (const call of p.restoreFrom === undefined ? this.bootCalls(p) : this.restoreCalls(p.restoreFrom)) await callApi(r.socket, call, options);
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
    const r = sandbox as VmmRunning;
    await this.checkApi(r.prepared);
    await callApi(r.socket, this.pauseCall);
  }

  async resume(sandbox: RunningSandbox): Promise<void> {
    const r = sandbox as VmmRunning;
    await this.checkApi(r.prepared);
    await callApi(r.socket, this.resumeCall);
  }

  /**
   * Captures the running microVM into `dir` (which must not exist yet): the VMM pauses it and writes its
   * memory and device state, and vmesh copies the run's initramfs and outputs disk beside them. The guest
   * is left paused; resume it to go on, or stop it.
   */
  async snapshot(sandbox: RunningSandbox, dir: string, signal?: AbortSignal): Promise<VmmSnapshotManifest> {
    const r = sandbox as VmmRunning;
    const p = r.prepared;
    if (p.network !== undefined) throw new UnsupportedError('snapshot: a microvm with a network cannot be captured yet', { field: 'id' });
    await fs.mkdir(dir, { mode: 0o700 });
    await this.checkApi(p);
    await callApi(r.socket, this.pauseCall, signal === undefined ? {} : { signal });
    for (const call of this.snapshotCalls(path.resolve(dir))) await callApi(r.socket, call, { timeoutMs: SNAPSHOT_CALL_TIMEOUT_MS, ...(signal === undefined ? {} : { signal }) });
    await this.collectSnapshot(p, dir);
    return completeVmmSnapshot(dir, {
      driver: this.name,
      vmmVersion: await this.vmmVersion(signal),
      vcpus: p.vcpus,
      memoryMiB: p.memoryMiB,
      initrd: p.initrd,
      ...(p.outputsDisk === undefined ? {} : { disk: p.outputsDisk }),
      outputs: [...p.outputs],
    });
  }

  async wait(sandbox: RunningSandbox): Promise<SandboxExit> {
    const r = sandbox as VmmRunning;
    try {
      await r.exited;
      const base = { outputs: await this.guestOutputs(r), usage: {} };
      return stoppedExit(r.stopReason, r.prepared.request, base) ?? agentExit(r.session, r.prepared.request, { name: this.name, errors: r.errors }, base);
    } finally {
      this.running.delete(r);
    }
  }

  /** Kills the VMMs a previous node left (found by their pid files) and removes their directories. */
  async recover(): Promise<number> {
    return killLeftoverVms({ sandboxRoot: this.sandboxRoot, prefix: `${this.name}-`, pidFile: SANDBOX_FILES.pid, binary: await this.leftoverBinary(), marks: (d) => this.leftoverMarks(d) });
  }

  /** The name a leftover VMM's command line holds. */
  protected async leftoverBinary(): Promise<string> {
    return path.basename(this.binary);
  }

  /** Runs of arguments (NUL-joined) of a VMM's command line that tie it to the sandbox directory `dirName`, besides its path. */
  protected leftoverMarks(_dirName: string): string[] {
    return [];
  }

  /** Checked before vmesh speaks to a VM whose guest has run (a jail's socket that its user could have replaced). */
  protected async checkApi(_p: VmmSandbox): Promise<void> {}
}

/** The run's disk I/O limits, for both VMMs' drive descriptions. */
export function guestDiskLimits(p: VmmSandbox): { disk?: { bps?: number; iops?: number } } {
  return p.request.resources.disk === undefined ? {} : { disk: p.request.resources.disk };
}

/** The guest's NIC as both VMMs describe it: the sandbox's tap, a MAC from the run id, the run's bandwidth channel. */
export function guestNic(p: VmmSandbox): { network?: { tap: string; mac: string; egressMbps: number; ingressMbps: number } } {
  if (p.network === undefined) return {};
  return { network: { tap: SANDBOX_TAP, mac: guestMac(p.request.runId), ...p.request.resources.network } };
}

/** A locally administered MAC address for a run's guest NIC, stable for the run (from its id). */
export function guestMac(runId: string): string {
  let h = 0x811c9dc5;
  for (const c of runId) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193) >>> 0;
  const bytes = [0x06, 0x00, (h >>> 24) & 0xff, (h >>> 16) & 0xff, (h >>> 8) & 0xff, h & 0xff];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}
