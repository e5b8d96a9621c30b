import { promises as fs, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { outputPaths, type Workload } from '../../spec/index.ts';
import { run } from '../../util/exec.ts';
import { Spawner, type SpawnedProgram } from '../../util/spawner.ts';
import { DEFAULT_BUSYBOX } from '../../guest/image.ts';
import { placeInputs } from '../inputs.ts';
import { networkSpec, wantsNetwork } from '../sandbox-network.ts';
import type { Driver, DriverProbe, PreparedSandbox, RunningSandbox, SandboxExit, SandboxIO, SandboxRequest, StopReason } from '../driver.ts';
import { NO_OUTPUTS, packOutputs } from '../../outputs/pack.ts';
import { cgroupVersion, childCgroups, killCgroup, readCgroupStats, removeCgroup, type CgroupVersion } from './cgroups.ts';
import { resolvConf } from '../../net/nameservers.ts';
import type { NetworkManager, SandboxNetwork } from '../../net/sandbox-network.ts';
import { runtimeConfig } from './config.ts';
import { ContainerPlans } from './container-plan.ts';
import { ContainerRoots } from './container-roots.ts';
import {
  launchCommand,
  makeMountPoints,
  mountScratch,
  sandboxFilesystem,
  setupFailure,
  unmountScratch,
  type LaunchTools,
  type SandboxFilesystem,
  type WritableLayerMethod,
} from './sandbox-fs.ts';
import { BundleArea } from './bundle-area.ts';
import { findRuntime, type OciRuntime, type RuntimeName } from './runtime.ts';
import type { IdMap } from './user-namespace.ts';

const CONTAINER_PREFIX = 'vmesh-';
/** Under crun, the container's cgroup inside the one named for it (OciPrepared.statsCgroup). */
const CRUN_CONTAINER_CGROUP = 'container';

export interface OciDriverOptions {
  /** Parent of the per-run bundle directories. */
  sandboxRoot?: string;
  /** Where unpacked images are kept, shared by runs (content-addressed by manifest digest). */
  imageRoot?: string;
  /** Sandbox networking; without it, containers that ask for egress are refused. */
  networks?: NetworkManager;
  /** The cgroup every container of this driver goes under (default `/vmesh`); one per node. */
  cgroupParent?: string;
  /** The runtime's own state directory (`--root`): holds only vmesh's containers. */
  stateDir?: string;
  /** Force one runtime; by default crun on cgroup v2, runc otherwise. */
  runtime?: RuntimeName;
  /** How each container's writable layer is made: an overlay where the kernel allows one (default), or a copy. */
  writableLayer?: WritableLayerMethod | 'auto';
  /** Whose tools make each container's file system; by default a static busybox where there is one. */
  launchTools?: LaunchTools;
  /**
   * Each container's own user namespace, with its ids mapped onto these host ids (default
   * DEFAULT_ID_MAP where the host allows one, else none); `false` for none: container root is then
   * host root, without capabilities. A range given here that the host cannot use makes the driver
   * unavailable rather than run containers without it.
   */
  userNamespace?: IdMap | false;
  /**
   * Where each container's root is mounted (default: a directory of its own in /run/vmesh): with a user
   * namespace, the containers' root must be able to pass through every directory above it.
   */
  rootsDir?: string;
}

interface OciPrepared extends PreparedSandbox {
  readonly bundle: string;
  readonly containerId: string;
  /** The container's cgroup, as the runtime is given it. */
  readonly cgroupsPath: string;
  /**
   * The cgroup whose counters (OOM kills, memory peak, CPU time) are read after the container ended: its
   * own under runc, which keeps it (`run --keep`); its parent under crun, which has no `--keep` and removes
   * the container's cgroup as it ends (cgroup v2 counts a child's events and usage in its parent).
   */
  readonly statsCgroup: string;
  /** The container's own file system (writable layer, /out, /in). */
  readonly fs: SandboxFilesystem;
  /** The image's (or the user's) root directory: the lower layer of the container's root. */
  readonly lower: string;
  /** The scratch tmpfs is mounted on the host (the node collects /out from it after the run). */
  scratchMounted: boolean;
  network?: SandboxNetwork;
  /** The runtime was started: there is a container (and a cgroup) to remove. */
  created: boolean;
  /** The runtime process ended by itself after running the container (exit code known). */
  runtimeExited?: boolean;
}

interface OciRunning extends RunningSandbox {
  readonly prepared: OciPrepared;
  /** The launch (then the runtime, then the container's first process), started by the spawner. */
  readonly program: SpawnedProgram;
  readonly exited: Promise<number | null>;
  stopReason?: StopReason;
  /** Frozen by `pause` (the cgroup freezer): a kill lands only once it is thawed. */
  paused?: boolean;
}

/**
 * OCI containers through runc or crun. vmesh writes the runtime configuration itself: its own pid,
 * mount, ipc, uts and network namespaces, every capability dropped but CAP_NET_BIND_SERVICE, no new
 * privileges, memory/CPU/pids limits in a cgroup under /vmesh. Each container writes only into a tmpfs
 * of its own capped at the run's disk: its layer over the shared image (or nothing, with `readOnlyRoot`),
 * /out, from which declared outputs are collected, and the read-only input files at /in.
 */
export class OciDriver implements Driver {
  readonly name = 'oci';
  readonly inputFiles = true;
  readonly kinds = ['container'] as const;
  readonly isolation = 'container' as const;
  private readonly sandboxRoot: string;
  private readonly stateDir: string;
  /** Where containers' roots are mounted, and in which user namespace (decided by the probe). */
  private readonly roots: ContainerRoots;
  /** The tmpfs the bundles are made in. */
  private readonly bundles: BundleArea;
  /** What each request's container runs, and the image cache behind it. */
  private readonly plans: ContainerPlans;
  private readonly cgroupParent: string;
  private runtime: OciRuntime | undefined;
  private cgroups: CgroupVersion = cgroupVersion();
  private readonly prepared = new Set<OciPrepared>();
  private readonly running = new Set<OciRunning>();
  /** Starts each container's launch, so that the node's own (large) process never forks per run. */
  private readonly spawner: Spawner;

  constructor(private readonly options: OciDriverOptions = {}) {
    this.sandboxRoot = options.sandboxRoot ?? path.join(os.tmpdir(), 'vmesh-sandboxes');
    this.stateDir = options.stateDir ?? path.join(os.tmpdir(), 'vmesh-oci-state');
    this.roots = new ContainerRoots(options.userNamespace, this.sandboxRoot, options.rootsDir);
    this.bundles = new BundleArea(`${this.roots.dir}.bundles`);
    this.spawner = new Spawner(`${this.roots.dir}.spawner`, Spawner.defaultShell(DEFAULT_BUSYBOX));
    this.plans = new ContainerPlans(options.imageRoot ?? path.join(os.tmpdir(), 'vmesh-images'));
    this.cgroupParent = options.cgroupParent ?? '/vmesh';
    if (!/^(\/[A-Za-z0-9_.-]+)+$/.test(this.cgroupParent)) throw new Error(`cgroup parent ${JSON.stringify(this.cgroupParent)} is not an absolute cgroup path`);
  }

  accepts(workload: Workload): boolean {
    return workload.kind === 'container';
  }

  /** The tmpfs the containers' bundles are made in (see BundleArea). */
  get bundlesDir(): string {
    return this.bundles.dir;
  }

  async probe(signal?: AbortSignal): Promise<DriverProbe> {
    if (process.platform !== 'linux') return { available: false, reason: 'containers need Linux' };
    if (process.getuid?.() !== 0) return { available: false, reason: 'containers need the node to run as root (rootless containers are not supported yet)' };
    this.cgroups = cgroupVersion();
    const found = await findRuntime(this.cgroups, this.options.runtime, signal);
    if ('missing' in found) return { available: false, reason: found.missing, details: { cgroups: this.cgroups } };
    this.runtime = found;
    const users = await this.roots.choose();
    if ('unavailable' in users) return { available: false, reason: users.unavailable, details: { cgroups: this.cgroups } };
    if (users.changed) this.plans.useIdMap(this.roots.idMap);
    return { available: true, version: found.version, details: { runtime: found.name, cgroups: this.cgroups, userNamespace: users.shown } };
  }

  async validate(request: SandboxRequest): Promise<void> {
    wantsNetwork(request, this.options.networks);
    await this.plans.plan(request);
  }

  async prepare(request: SandboxRequest): Promise<OciPrepared> {
    this.requireRuntime();
    const { rootfs, args, env, cwd } = await this.plans.plan(request);
    await this.roots.ensure();
    await this.bundles.ensure();
    // The bundle's few small files and directories are made synchronously: each async fs call waited 0.5 to
    // 0.6 ms for the thread pool here (by timestamps over 100 runs), tens of µs as a plain system call,
    // and they are all on the run's path.
    const bundle = mkdtempSync(path.join(this.bundles.dir, `oci-${request.runId}-`));
    const containerId = `${CONTAINER_PREFIX}${request.runId}`;
    const sfs = sandboxFilesystem(bundle, this.roots.rootOf(containerId), path.join(this.sandboxRoot, `in-${containerId}`));
    const cgroups = this.cgroupsOf(containerId);
    const prepared: OciPrepared = { request, bundle, containerId, ...cgroups, created: false, fs: sfs, lower: rootfs, scratchMounted: false };
    this.prepared.add(prepared);
    try {
      makeMountPoints(sfs);
      if (outputPaths(request.workload).length > 0) {
        await mountScratch(sfs, request.resources.diskMiB);
        prepared.scratchMounted = true;
      }
      if (request.inputs !== undefined) {
        mkdirSync(this.sandboxRoot, { recursive: true, mode: 0o700 });
        await placeInputs(sfs.inputsDir, request.inputs);
      }
      if (wantsNetwork(request, this.options.networks)) prepared.network = await this.options.networks!.create(networkSpec(request));
      const nameservers = prepared.network?.nameservers ?? [];
      if (nameservers.length > 0) writeFileSync(path.join(bundle, 'resolv.conf'), resolvConf(nameservers), { mode: 0o644 });
      const config = runtimeConfig({
        rootfs: sfs.root,
        readOnlyRoot: request.workload.readOnlyRoot ?? false,
        outputsDir: sfs.outputsDir,
        ...(request.inputs === undefined ? {} : { inputsDir: sfs.inputsDir }),
        args,
        env,
        cwd,
        hostname: request.runId.slice(0, 63),
        resources: request.resources,
        cgroupsPath: prepared.cgroupsPath,
        ...(prepared.network === undefined ? {} : { netnsPath: prepared.network.netnsPath }),
        ...(nameservers.length === 0 ? {} : { resolvConf: path.join(bundle, 'resolv.conf') }),
        ...(this.roots.idMap === undefined ? {} : { idMap: this.roots.idMap }),
      });
      writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(config));
      return prepared;
    } catch (err) {
      await this.cleanup(prepared);
      throw err;
    }
  }

  async start(prepared: PreparedSandbox, io: SandboxIO): Promise<OciRunning> {
    const p = prepared as OciPrepared;
    const runtime = this.requireRuntime();
    const stdin = p.request.workload.stdin;
    const [command, args] = launchCommand(
      p.fs,
      {
        lower: p.lower,
        diskMiB: p.request.resources.diskMiB,
        method: this.options.writableLayer ?? 'auto',
        scratchMounted: p.scratchMounted,
        ...(this.options.launchTools ? { tools: this.options.launchTools } : {}),
        skeleton: this.roots.skeleton,
        resolvConf: (p.network?.nameservers.length ?? 0) > 0,
      },
      runtime.command,
      ['--root', this.stateDir, 'run', ...(runtime.name === 'runc' ? ['--keep'] : []), '--bundle', p.bundle, p.containerId],
    );
    p.created = true;
    const program = await this.spawner.run(p.bundle, [command, ...args], stdin === undefined ? undefined : Buffer.from(stdin));
    program.stdout.on('data', (chunk: Buffer) => io.write('stdout', chunk));
    program.stderr.on('data', (chunk: Buffer) => io.write('stderr', chunk));
    // null: the spawner went away before it could say how the launch ended.
    const exited = program.exited.then((code) => {
      p.runtimeExited = code !== null;
      return code;
    });
    const running: OciRunning = { prepared: p, program, exited };
    this.running.add(running);
    if (p.network !== undefined) {
      io.network?.({ address: p.network.link.sandboxAddress, ports: p.network.ports.map(({ guest, host, protocol }) => ({ guest, host, protocol })) });
    }
    return running;
  }

  async wait(sandbox: RunningSandbox): Promise<SandboxExit> {
    const r = sandbox as OciRunning;
    const p = r.prepared;
    try {
      const code = await r.exited;
      const stats = await readCgroupStats(this.cgroups, p.statsCgroup);
      const declared = outputPaths(p.request.workload);
      const setupFailed = code !== 0 && r.stopReason === undefined ? await setupFailure(p.fs) : undefined;
      const outputs = !p.scratchMounted || declared.length === 0 || setupFailed !== undefined ? NO_OUTPUTS : await packOutputs(p.fs.outputsDir, declared, p.request.outputs);
      const usage: SandboxExit['usage'] = {};
      if (stats.memoryPeakBytes !== undefined) usage.memoryPeakBytes = stats.memoryPeakBytes;
      if (stats.cpuMs !== undefined) usage.cpuMs = Math.round(stats.cpuMs * 1000) / 1000;
      const base = { outputs, usage };
      if (r.stopReason === 'timeout') {
        return { ...base, outcome: 'timeout', exitCode: null, reason: `killed after the ${p.request.resources.timeoutMs} ms timeout` };
      }
      if (r.stopReason === 'cancelled') return { ...base, outcome: 'cancelled', exitCode: null, reason: 'cancelled' };
      if (setupFailed !== undefined) return { ...base, outcome: 'crashed', exitCode: null, reason: `the container's file system could not be made: ${setupFailed}` };
      if (stats.oomKills > 0) {
        return { ...base, outcome: 'oom', exitCode: code, reason: `memory limit of ${p.request.resources.memoryMiB} MiB reached (the kernel killed ${stats.oomKills} process${stats.oomKills === 1 ? '' : 'es'})` };
      }
      if (code === null) return { ...base, outcome: 'crashed', exitCode: null, reason: `${this.requireRuntime().name} could not run the container` };
      return { ...base, outcome: 'exited', exitCode: code };
    } finally {
      this.running.delete(r);
    }
  }

  /** Freezes every process of the container (`runc pause`, the cgroup freezer). */
  async pause(sandbox: RunningSandbox): Promise<void> {
    const r = sandbox as OciRunning;
    await this.runtimeCall(['pause', r.prepared.containerId]);
    r.paused = true;
  }

  async resume(sandbox: RunningSandbox): Promise<void> {
    const r = sandbox as OciRunning;
    await this.runtimeCall(['resume', r.prepared.containerId]);
    r.paused = false;
  }

  async stop(sandbox: RunningSandbox, reason: StopReason): Promise<void> {
    const r = sandbox as OciRunning;
    if (r.stopReason !== undefined || r.program.ended) return;
    r.stopReason = reason;
    // A frozen process does not die until thawed: kill, then thaw, so it never runs another instruction.
    if (r.paused) {
      await this.runtimeCall(['kill', r.prepared.containerId, 'KILL']).catch(() => {});
      await this.runtimeCall(['resume', r.prepared.containerId]).catch(() => {});
    }
    // Never kill the runtime process itself: the container would live on without it. A kill that comes
    // before the runtime has registered the container fails; try again until one lands or it has exited.
    let exited = false;
    void r.exited.then(() => (exited = true));
    while (!exited) {
      try {
        await this.runtimeCall(['kill', r.prepared.containerId, 'KILL']);
        return;
      } catch {
        await killCgroup(this.cgroups, r.prepared.cgroupsPath);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
  }

  async cleanup(prepared: PreparedSandbox): Promise<void> {
    const p = prepared as OciPrepared;
    if (p.created) {
      // A container that ran to its end under `run --keep` is stopped: all that is left of it is its state
      // directory and its cgroup (crun removed both itself). Removing them here is what `delete` would do,
      // without starting a runtime process per run. Anything else (a runtime that died, a start that failed)
      // goes through `delete --force`.
      if (p.runtimeExited && (await killCgroup(this.cgroups, p.cgroupsPath)) === 0) {
        await fs.rm(path.join(this.stateDir, p.containerId), { recursive: true, force: true });
      } else {
        await this.runtimeCall(['delete', '--force', p.containerId]).catch(() => {});
        await killCgroup(this.cgroups, p.cgroupsPath);
      }
      await removeCgroup(this.cgroups, p.cgroupsPath);
      if (p.statsCgroup !== p.cgroupsPath) await removeCgroup(this.cgroups, p.statsCgroup);
    }
    if (p.scratchMounted) await unmountScratch(p.fs);
    if (p.network !== undefined) await this.options.networks?.destroy(p.network);
    await fs.rm(p.bundle, { recursive: true, force: true }).catch(() => {});
    if (p.request.inputs !== undefined) await fs.rm(p.fs.inputsDir, { recursive: true, force: true }).catch(() => {});
    // Only a mount point: its mount lived in the launch's own mount namespace. rmdir, never rm -r.
    await fs.rmdir(p.fs.root).catch(() => {});
    this.prepared.delete(p);
  }

  /**
   * Removes what a previous node process left behind: its containers (killed and deleted, which also
   * removes their cgroups) and the output mounts under the sandbox root. Returns how many containers.
   */
  async recover(): Promise<number> {
    if (this.runtime === undefined) return 0;
    let ids: string[] = [];
    try {
      const { stdout } = await run(this.runtime.command, ['--root', this.stateDir, 'list', '--quiet']);
      ids = stdout.split('\n').filter((id) => id.startsWith(CONTAINER_PREFIX));
    } catch {
      /* no state directory yet: nothing to recover */
    }
    for (const id of ids) await this.runtimeCall(['delete', '--force', id]).catch(() => {});
    // Containers the runtime lost track of (its state went with the crash) still have their cgroups.
    for (const id of await childCgroups(this.cgroups, this.cgroupParent)) {
      if (!id.startsWith(CONTAINER_PREFIX)) continue;
      // The container's own cgroup first: under crun it is inside the one named for it.
      for (const cgroup of [`${this.cgroupParent}/${id}/${CRUN_CONTAINER_CGROUP}`, `${this.cgroupParent}/${id}`]) {
        await killCgroup(this.cgroups, cgroup);
        await removeCgroup(this.cgroups, cgroup);
      }
      if (!ids.includes(id)) ids.push(id);
    }
    await this.plans.removeIncomplete();
    for (const dir of [this.sandboxRoot, this.bundles.dir]) {
      for (const mount of await mountsUnder(dir)) await run('umount', ['--lazy', mount]).catch(() => {});
    }
    await this.bundles.removeLeftovers('oci-');
    for (const entry of await fs.readdir(this.sandboxRoot).catch(() => [] as string[])) {
      if (entry.startsWith(`in-${CONTAINER_PREFIX}`)) await fs.rm(path.join(this.sandboxRoot, entry), { recursive: true, force: true });
    }
    await this.roots.removeLeftovers(CONTAINER_PREFIX);
    return ids.length;
  }

  /** Where a container's cgroup goes, and where its counters are read once it has ended (see OciPrepared). */
  private cgroupsOf(containerId: string): { cgroupsPath: string; statsCgroup: string } {
    const own = `${this.cgroupParent}/${containerId}`;
    return this.requireRuntime().name === 'runc' ? { cgroupsPath: own, statsCgroup: own } : { cgroupsPath: `${own}/${CRUN_CONTAINER_CGROUP}`, statsCgroup: own };
  }

  liveSandboxes(): number {
    return this.prepared.size + this.running.size;
  }

  async close(): Promise<void> {
    await Promise.all([...this.running].map((r) => this.stop(r, 'cancelled')));
    await Promise.all([...this.running].map((r) => r.exited));
    await this.spawner.close();
    if (this.runtime !== undefined && this.prepared.size === 0) {
      await removeCgroup(this.cgroups, this.cgroupParent);
      await this.bundles.remove();
      await this.roots.remove();
    }
  }

  private requireRuntime(): OciRuntime {
    if (this.runtime === undefined) throw new Error('the oci driver was used before a successful probe');
    return this.runtime;
  }

  private async runtimeCall(args: string[]): Promise<void> {
    await run(this.requireRuntime().command, ['--root', this.stateDir, ...args]);
  }
}

/** Mount points at or below `dir`, deepest first (from /proc/self/mountinfo). */
async function mountsUnder(dir: string): Promise<string[]> {
  const info = await fs.readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  const prefix = path.resolve(dir) + path.sep;
  return info
    .split('\n')
    .map((line) => line.split(' ')[4]?.replace(/\\040/g, ' '))
    .filter((m): m is string => m !== undefined && m.startsWith(prefix))
    .sort((a, b) => b.length - a.length);
}
