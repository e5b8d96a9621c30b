import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { GuestImage } from '../../guest/image.ts';
import { InvalidInputError } from '../../spec/index.ts';
import type { SandboxRequest } from '../driver.ts';
import { ApiVmmDriver, guestDiskLimits, guestNic, SANDBOX_FILES, type ApiVmmOptions, type VmmSandbox } from '../vmm/api-vmm-driver.ts';
import type { ApiCall } from '../vmm/unix-http.ts';
import { findCommand, run } from '../../util/exec.ts';
import { chrootDir, jailedSocket, JAILED_API_SOCKET, jailerArgs, jailerVersion, jailOwnerProblem, stageJail, type JailerOptions, type JailFile } from './jailer.ts';
import {
  FIRECRACKER_API_VERSION,
  FIRECRACKER_DESCRIBE,
  FIRECRACKER_MAX_VCPUS,
  FIRECRACKER_PAUSE,
  FIRECRACKER_RESUME,
  FIRECRACKER_SNAPSHOT_FILES,
  firecrackerBootArgs,
  firecrackerBootCalls,
  firecrackerId,
  firecrackerRestoreCalls,
  firecrackerSnapshotCalls,
} from './requests.ts';

export interface FirecrackerOptions extends ApiVmmOptions {
  /**
   * The guest kernel: an uncompressed vmlinux built with Firecracker's recommended guest config (virtio
   * and the serial console built in), which the operator provides. Firecracker cannot boot Debian's
   * compressed bzImage, so there is no default.
   */
  kernel?: string;
  /**
   * Run each Firecracker under its jailer: in a chroot of its own inside the sandbox directory, as this
   * unprivileged uid:gid, in a mount namespace of its own. The node must be root.
   */
  jailer?: JailerOptions;
}

const LOG_FILE = 'firecracker.log';
const METRICS_FILE = 'metrics.json';
/** Inside a jail: the chroot base (in the sandbox directory), the kernel's name, where a snapshot is written. */
const JAIL = { base: 'jail', kernel: 'vmlinux', snapshot: 'snapshot' } as const;

/**
 * MicroVMs with Firecracker: `firecracker --api-sock`, configured through its REST API (machine, boot
 * source, the outputs drive, the NIC with rx/tx rate limiters from the bandwidth channel, a balloon, the
 * logger and metrics) and started with InstanceStart; pause and resume by PATCH /vm; a full snapshot by
 * PUT /snapshot/create, loaded into a new Firecracker by PUT /snapshot/load. Files are named relative to
 * the sandbox directory, Firecracker's working directory, so that a restored VM finds its drives in the
 * new sandbox.
 *
 * Under the jailer (`jailer`), the jailer is spawned instead and execs Firecracker in the same process: the
 * chroot is `<sandbox>/jail/<firecracker>/<id>/root`, where the run's files are hard-linked under the same
 * names (the kernel as `vmlinux`) and given to the jail's user, the API socket is reached through a link
 * in the sandbox directory, the tap is made the jail user's, and a snapshot is written inside the chroot
 * and moved out.
 */
export class FirecrackerDriver extends ApiVmmDriver {
  readonly name = 'firecracker';
  readonly pinnedVersion = FIRECRACKER_API_VERSION;
  protected readonly installHint = `a release binary of Firecracker ${FIRECRACKER_API_VERSION} from github.com/firecracker-microvm/firecracker/releases as firecracker on PATH; Debian has no package`;
  protected readonly finish = 'reboot' as const;
  protected readonly readyCall = FIRECRACKER_DESCRIBE;
  protected readonly pauseCall = FIRECRACKER_PAUSE;
  protected readonly resumeCall = FIRECRACKER_RESUME;

  /** The firecracker binary's absolute path, for the jailer (found by the probe). */
  private execFile: string | undefined;

  constructor(private readonly fc: FirecrackerOptions = {}) {
    super(fc);
  }

  protected vmmBinary(): string {
    return 'firecracker';
  }

  protected parseVersion(printed: string): string | undefined {
    return /^Firecracker v(\d+\.\d+\.\d+\S*)/m.exec(printed)?.[1];
  }

  protected async hostProblem(): Promise<string | undefined> {
    return (await this.jailerProblem()) ?? (await this.kernelProblem());
  }

  protected override probeDetails(): Record<string, string> {
    const j = this.fc.jailer;
    return j === undefined ? {} : { jailer: `uid ${j.uid}, gid ${j.gid}` };
  }

  /** With a jailer configured: whether it is Firecracker's own release, and whether the node can run it. */
  private async jailerProblem(): Promise<string | undefined> {
    const j = this.fc.jailer;
    if (j === undefined) return undefined;
    const owner = jailOwnerProblem(j);
    if (owner !== undefined) return owner;
    if (process.getuid?.() !== 0) return 'the jailer (drivers.firecracker.jailer) must be started as root: run the node as root, or leave the jailer out';
    const binary = j.binary ?? 'jailer';
    let printed: string;
    try {
      printed = (await run(binary, ['--version'], { timeoutMs: 10_000 })).stdout;
    } catch {
      return `the jailer ${binary} was not found (it ships in Firecracker's release archive beside firecracker)`;
    }
    const version = jailerVersion(printed);
    if (version !== this.version) return `the jailer ${binary} is ${version === undefined ? 'not Firecracker\'s jailer' : `v${version}`}, not v${this.version} like firecracker: use the two binaries of one release`;
    try {
      await this.firecrackerPath();
    } catch (err) {
      return (err as Error).message;
    }
    return undefined;
  }

  /** The firecracker binary as the jailer names it: absolute, its links resolved (the chroot is named after it). */
  private async firecrackerPath(): Promise<string> {
    if (this.execFile === undefined) {
      const found = await findCommand(this.binary);
      if (found === undefined) throw new Error(`the firecracker binary ${this.binary} could not be found for the jailer`);
      this.execFile = await fs.realpath(found);
    }
    return this.execFile;
  }

  private async kernelProblem(): Promise<string | undefined> {
    const kernel = this.fc.kernel;
    const hint = 'set drivers.firecracker.kernel to an uncompressed vmlinux built with Firecracker\'s recommended guest config';
    if (kernel === undefined) return `no guest kernel: ${hint}`;
    const head = await readHead(kernel, 4);
    if (head === undefined) return `the guest kernel ${kernel} cannot be read: ${hint}`;
    if (head.toString('latin1') !== '\x7fELF') return `the guest kernel ${kernel} is not an ELF vmlinux (a bzImage?): ${hint}`;
    return undefined;
  }

  protected guestKernel(_image: GuestImage): { kernel: string; modules: string[] } {
    // The operator's kernel has its drivers built in; the image's modules belong to Debian's kernel.
    return { kernel: this.fc.kernel!, modules: [] };
  }

  protected validateMachine(request: SandboxRequest): void {
    if (request.resources.vcpus > FIRECRACKER_MAX_VCPUS) {
      throw new InvalidInputError(`resources.vcpus: Firecracker gives a microVM at most ${FIRECRACKER_MAX_VCPUS} vCPUs`, { field: 'resources.vcpus' });
    }
  }

  protected override async stageFiles(p: VmmSandbox): Promise<void> {
    await fs.writeFile(path.join(p.dir, LOG_FILE), '', { mode: 0o600 });
    await fs.writeFile(path.join(p.dir, METRICS_FILE), '', { mode: 0o600 });
    if (this.fc.jailer !== undefined) await this.stageJail(p, this.fc.jailer);
  }

  /**
   * The chroot, made before the jailer runs (it leaves an existing one as it is), with every file the
   * API will name; the API socket's link in the sandbox directory (a Unix socket's path is limited to 107
   * bytes, which the chroot's path can pass).
   */
  private async stageJail(p: VmmSandbox, j: JailerOptions): Promise<void> {
    await this.firecrackerPath();
    const chroot = this.chroot(p);
    const owned = (name: string): JailFile => ({ source: path.join(p.dir, name), name, owned: true });
    const files: JailFile[] = [owned(LOG_FILE), owned(METRICS_FILE), owned(SANDBOX_FILES.initrd), { source: p.kernel, name: JAIL.kernel, owned: false }];
    if (p.outputsDisk !== undefined) files.push(owned(SANDBOX_FILES.disk));
    if (p.restoreFrom !== undefined) {
      // Copied, not linked: the jail's user may write what it is given, and the snapshot may be restored again.
      for (const f of Object.values(FIRECRACKER_SNAPSHOT_FILES)) {
        await run('cp', ['--sparse=always', path.join(p.restoreFrom, f), path.join(p.dir, f)]);
        files.push(owned(f));
      }
    }
    await stageJail(chroot, j, files, [JAIL.snapshot]);
    await fs.symlink(path.relative(p.dir, jailedSocket(chroot)), path.join(p.dir, SANDBOX_FILES.socket));
  }

  private chroot(p: VmmSandbox): string {
    if (this.execFile === undefined) throw new Error('firecracker: the jail was not staged');
    return chrootDir(path.join(p.dir, JAIL.base), this.execFile, firecrackerId(p.request.runId));
  }

  protected vmmArgs(p: VmmSandbox): string[] {
    return ['--api-sock', path.join(p.dir, SANDBOX_FILES.socket), '--id', firecrackerId(p.request.runId)];
  }

  protected override vmmCommand(p: VmmSandbox): { command: string; args: string[]; joinsNetwork?: boolean } {
    const j = this.fc.jailer;
    if (j === undefined) return super.vmmCommand(p);
    if (this.execFile === undefined) throw new Error('firecracker: the jail was not staged');
    const args = jailerArgs({
      id: firecrackerId(p.request.runId),
      execFile: this.execFile,
      uid: j.uid,
      gid: j.gid,
      chrootBase: path.join(p.dir, JAIL.base),
      ...(p.network === undefined ? {} : { netns: p.network.netnsPath }),
      firecrackerArgs: ['--api-sock', JAILED_API_SOCKET],
    });
    return { command: j.binary ?? 'jailer', args, joinsNetwork: true };
  }

  /** A jailed Firecracker's command line names only its id (`--id=<id>`); the directory is `firecracker-<run>-XXXXXX`. */
  protected override leftoverMarks(dirName: string): string[] {
    const runId = dirName.slice(`${this.name}-`.length, -'-XXXXXX'.length);
    return runId === '' ? [] : [`--id=${firecrackerId(runId)}`];
  }

  protected override tapOwner(): { uid: number; gid: number } | undefined {
    const j = this.fc.jailer;
    return j === undefined ? undefined : { uid: j.uid, gid: j.gid };
  }

  protected bootCalls(p: VmmSandbox): ApiCall[] {
    return firecrackerBootCalls({
      vcpus: p.vcpus,
      memoryMiB: p.memoryMiB,
      kernel: this.fc.jailer === undefined ? p.kernel : JAIL.kernel,
      initrd: SANDBOX_FILES.initrd,
      bootArgs: firecrackerBootArgs(),
      logFile: LOG_FILE,
      metricsFile: METRICS_FILE,
      ...(p.outputsDisk === undefined ? {} : { outputsDisk: SANDBOX_FILES.disk }),
      ...guestNic(p),
      ...guestDiskLimits(p),
    });
  }

  /** Jailed, Firecracker writes the snapshot into the chroot's `snapshot` directory (relative to its `/`). */
  protected snapshotCalls(_p: VmmSandbox, dir: string): ApiCall[] {
    return firecrackerSnapshotCalls(this.fc.jailer === undefined ? dir : JAIL.snapshot);
  }

  /** Moves a jailed snapshot's files out of the chroot into `dir`, the node's again (root's, and out of the jail's reach). */
  protected override async collectSnapshot(p: VmmSandbox, dir: string): Promise<void> {
    if (this.fc.jailer === undefined) return;
    for (const f of Object.values(FIRECRACKER_SNAPSHOT_FILES)) {
      const from = path.join(this.chroot(p), JAIL.snapshot, f);
      const to = path.join(dir, f);
      try {
        await fs.rename(from, to);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
        await run('cp', ['--sparse=always', from, to]);
        await fs.rm(from);
      }
      await fs.chown(to, 0, 0);
      await fs.chmod(to, 0o600);
    }
  }

  protected restoreCalls(_p: VmmSandbox, dir: string): ApiCall[] {
    // Jailed, the snapshot's files are at the chroot's top (stageJail).
    return firecrackerRestoreCalls(this.fc.jailer === undefined ? dir : '.');
  }
}

async function readHead(file: string, bytes: number): Promise<Buffer | undefined> {
  try {
    const handle = await fs.open(file, 'r');
    try {
      const buf = Buffer.alloc(bytes);
      const { bytesRead } = await handle.read(buf, 0, bytes, 0);
      return buf.subarray(0, bytesRead);
    } finally {
      await handle.close();
    }
  } catch {
    return undefined;
  }
}
