import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { GuestFinish } from '../../guest/agent.ts';
import { defaultGuestCache, ensureGuestImage, type GuestImage } from '../../guest/image.ts';
import type { Progress } from '../../guest/kernel.ts';
import type { NetworkManager, SandboxNetwork } from '../../net/sandbox-network.ts';
import { NO_OUTPUTS, type CollectedOutputs } from '../../outputs/pack.ts';
import type { Workload, WorkloadKind } from '../../spec/index.ts';
import type { PreparedSandbox, RunningSandbox, SandboxIO, SandboxRequest, StopReason } from '../driver.ts';
import { networkSpec, wantsNetwork } from '../sandbox-network.ts';
import { guestRunArchive } from './default-guest.ts';
import { collectGuestOutputs, createOutputsDisk, guestSession, type GuestSession } from './session.ts';

export interface GuestVmOptions {
  sandboxRoot?: string;
  /** Where the default guest image is cached (shared by nodes; content-addressed). */
  guestCacheDir?: string;
  busybox?: string;
  progress?: Progress;
  /** Sandbox networking; without it, microVMs that ask for egress or ports are refused. */
  networks?: NetworkManager;
}

/** One staged microVM: its own directory, the outputs it declared, and its network. */
export interface VmSandbox extends PreparedSandbox {
  readonly dir: string;
  /** The raw disk the agent writes the outputs tar onto, when the run declares outputs. */
  readonly outputsDisk?: string;
  readonly outputs: readonly string[];
  network?: SandboxNetwork;
}

/** One started microVM: its VMM process, which is the VM. */
export interface VmProcess extends RunningSandbox {
  readonly prepared: VmSandbox;
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  readonly session: GuestSession;
  /** What the VMM printed on stderr (capped): why it refused to start, if it did. */
  errors: string;
  stopReason?: StopReason;
}

/**
 * What every driver that runs microVMs as a VMM process shares (QEMU, Firecracker, Cloud Hypervisor):
 * the default guest image, a sandbox directory per run with the run's initramfs, outputs disk and network,
 * the VMM spawned (inside the sandbox's network namespace when it has one), stop by killing it, and
 * cleanup that leaves nothing. Drivers add how their VMM is told what to boot.
 */
export abstract class GuestVmDriver<P extends VmSandbox, R extends VmProcess> {
  abstract readonly name: string;
  readonly kinds: readonly WorkloadKind[] = ['microvm'];
  readonly isolation = 'vm' as const;
  readonly inputFiles = true;
  readonly diskLimits = true;
  protected readonly sandboxRoot: string;
  private readonly cacheDir: string;
  private image: Promise<GuestImage> | undefined;
  protected readonly prepared = new Set<P>();
  protected readonly running = new Set<R>();

  constructor(protected readonly vmOptions: GuestVmOptions) {
    this.sandboxRoot = vmOptions.sandboxRoot ?? path.join(os.tmpdir(), 'vmesh-sandboxes');
    this.cacheDir = vmOptions.guestCacheDir ?? defaultGuestCache();
  }

  accepts(workload: Workload): boolean {
    return this.kinds.includes(workload.kind);
  }

  /** The default guest image, built once per driver (and cached on disk across nodes). */
  protected guestImage(signal?: AbortSignal): Promise<GuestImage> {
    if (this.image === undefined) {
      this.image = ensureGuestImage({
        cacheDir: this.cacheDir,
        ...(this.vmOptions.busybox ? { busybox: this.vmOptions.busybox } : {}),
        ...(this.vmOptions.progress ? { progress: this.vmOptions.progress } : {}),
        ...(signal ? { signal } : {}),
      });
      this.image.catch(() => (this.image = undefined)); // a failed build is tried again next time
    }
    return this.image;
  }

  /** A sandbox directory of its own (`<driver>-<run>-*`), the sandbox as `describe` lays it out there, filled by `fill`; undone if that fails. */
  protected async stage(request: SandboxRequest, describe: (dir: string) => Omit<P, 'request' | 'dir'>, fill?: (prepared: P) => Promise<void>): Promise<P> {
    await fs.mkdir(this.sandboxRoot, { recursive: true, mode: 0o700 });
    const dir = await fs.mkdtemp(path.join(this.sandboxRoot, `${this.name}-${request.runId}-`));
    const prepared = { request, dir, ...describe(dir) } as P;
    this.prepared.add(prepared);
    try {
      await fill?.(prepared);
      return prepared;
    } catch (err) {
      await this.cleanup(prepared);
      throw err;
    }
  }

  /** The sandbox's network, when the run asks for one, with a tap bridged into it for the VMM. */
  protected async attachNetwork(p: P, signal?: AbortSignal): Promise<void> {
    const networks = this.vmOptions.networks;
    if (!wantsNetwork(p.request, networks)) return;
    p.network = await networks!.create(networkSpec(p.request), signal);
    await networks!.bridgeTap(p.network, signal, this.tapOwner(p));
  }

  /** The user the VMM opens its tap as, when it is not root (a jailed Firecracker): the tap is made theirs. */
  protected tapOwner(_p: P): { uid: number; gid: number } | undefined {
    return undefined;
  }

  /**
   * Fills a default-guest sandbox: its network (when the run asks for one) with a tap for the VMM, the
   * image's initramfs with the run's archive appended at `initrd`, and a sparse outputs disk.
   */
  protected async fillDefaultGuest(p: P, initrd: string, image: GuestImage, modules: readonly string[], finish: GuestFinish, signal?: AbortSignal): Promise<void> {
    await this.attachNetwork(p, signal);
    await fs.copyFile(image.initrd, initrd);
    await fs.appendFile(initrd, await guestRunArchive(p.request, modules, p.network, finish));
    if (p.outputsDisk !== undefined) await createOutputsDisk(p.outputsDisk, p.request);
  }

  /**
   * Starts the VMM, in the sandbox's network namespace when it has one (nsenter execs it: the pid is the
   * VMM's; a launcher that joins it itself, `joinsNetwork`, is not wrapped). Its stdout is the guest's serial console, fed to the agent's session unless `onStdout` takes it.
   * The returned object is updated as the process runs (`errors`): extend it with Object.assign, never a copy.
   */
  protected spawnVm(
    p: P,
    binary: string,
    args: readonly string[],
    io: SandboxIO,
    opts: { cwd?: string; env?: Record<string, string>; onStdout?: (chunk: Buffer) => void; joinsNetwork?: boolean } = {},
  ): VmProcess {
    const wrap = p.network !== undefined && !opts.joinsNetwork;
    const [command, argv] = wrap ? ['nsenter', [`--net=${p.network!.netnsPath}`, '--', binary, ...args]] : [binary, [...args]];
    const child = spawn(command, argv, {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }),
      ...(opts.env === undefined ? {} : { env: { ...process.env, ...opts.env } }),
    });
    const vm: VmProcess = {
      prepared: p,
      child,
      session: guestSession(io),
      errors: '',
      exited: new Promise((resolve) => {
        child.once('error', (err) => {
          vm.errors += `${err.message}\n`;
          resolve(null);
        });
        child.once('close', (code) => resolve(code));
      }),
    };
    child.stdout!.on('data', opts.onStdout ?? ((chunk: Buffer) => vm.session.console.feed(chunk)));
    child.stderr!.on('data', (chunk: Buffer) => {
      if (vm.errors.length < 4096) vm.errors += chunk.toString();
    });
    if (p.network !== undefined) {
      io.network?.({ address: p.network.link.sandboxAddress, ports: p.network.ports.map(({ guest, host, protocol }) => ({ guest, host, protocol })) });
    }
    return vm;
  }

  /** The outputs the agent wrote onto the guest's disk, once the VM has ended. */
  protected guestOutputs(r: R): Promise<CollectedOutputs> {
    const p = r.prepared;
    return r.session.outputsWritten && p.outputsDisk !== undefined ? collectGuestOutputs(p.request, p.dir, p.outputsDisk, p.outputs) : Promise.resolve(NO_OUTPUTS);
  }

  async stop(sandbox: RunningSandbox, reason: StopReason): Promise<void> {
    const r = sandbox as R;
    if (r.stopReason !== undefined || r.child.exitCode !== null) return;
    r.stopReason = reason;
    r.child.kill('SIGKILL'); // the VM is this process: nothing of it outlives it
  }

  /** Called for each of a sandbox's VMs before cleanup kills it (a QMP connection to close). */
  protected releaseVm(_r: R): void {}

  async cleanup(prepared: PreparedSandbox): Promise<void> {
    const p = prepared as P;
    for (const r of this.running) {
      if (r.prepared !== p) continue;
      this.releaseVm(r);
      if (r.child.exitCode === null && r.child.signalCode === null) {
        r.child.kill('SIGKILL');
        await r.exited;
      }
      this.running.delete(r);
    }
    if (p.network !== undefined) await this.vmOptions.networks?.destroy(p.network);
    await fs.rm(p.dir, { recursive: true, force: true }).catch(() => {});
    this.prepared.delete(p);
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
