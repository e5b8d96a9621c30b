import { promises as fs } from 'node:fs';
import path from 'node:path';
import { copySparse } from '../../util/files.ts';
import type { GuestImage } from '../../guest/image.ts';
import { InvalidInputError } from '../../spec/index.ts';
import type { PreparedSandbox, SandboxRequest } from '../driver.ts';
import { ApiVmmDriver, guestDiskLimits, guestNic, SANDBOX_FILES, type ApiVmmOptions, type VmmSandbox } from '../vmm/api-vmm-driver.ts';
import type { ApiCall } from '../vmm/unix-http.ts';
import type { JailerOptions, JailFile } from './jailer.ts';
import { Jails } from './jails.ts';
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
  snapshotPathsIn,
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
/** Names inside a jail: the operator's kernel, and the copies of a snapshot being restored (apart from those a new snapshot writes). */
const JAILED = { kernel: 'vmlinux', restore: { state: 'restore-vmstate', memory: 'restore-memory' } } as const;

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

  /** The jails, when Firecracker runs under its jailer. */
  private readonly jails: Jails | undefined;

  constructor(private readonly fc: FirecrackerOptions = {}) {
    super(fc);
    this.jails = fc.jailer === undefined ? undefined : new Jails(fc.jailer, this.binary, this.sandboxRoot);
  }

  protected vmmBinary(): string {
    return 'firecracker';
  }

  protected parseVersion(printed: string): string | undefined {
    return /^Firecracker v(\d+\.\d+\.\d+\S*)/m.exec(printed)?.[1];
  }

  protected async hostProblem(): Promise<string | undefined> {
    return (await this.jails?.problem(this.version)) ?? (await this.kernelProblem());
  }

  protected override probeDetails(): Record<string, string> {
    return this.jails === undefined ? {} : { jailer: this.jails.describe() };
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
    if (this.jails === undefined) return;
    // Every file the requests name, under that name in the chroot; a snapshot to restore is copied in,
    // not linked: the jail's user may write what it is given, and the snapshot may be restored again.
    const given = (name: string): JailFile => ({ source: path.join(p.dir, name), name, owned: true });
    const files = [given(LOG_FILE), given(METRICS_FILE), given(SANDBOX_FILES.initrd), { source: p.kernel, name: JAILED.kernel, owned: false }];
    if (p.outputsDisk !== undefined) files.push(given(SANDBOX_FILES.disk));
    if (p.restoreFrom !== undefined) {
      for (const [key, name] of Object.entries(FIRECRACKER_SNAPSHOT_FILES)) {
        const copy = JAILED.restore[key as keyof typeof FIRECRACKER_SNAPSHOT_FILES];
        await copySparse(path.join(p.restoreFrom, name), path.join(p.dir, copy));
        files.push(given(copy));
      }
    }
    await this.jails.stage(p, files, path.join(p.dir, SANDBOX_FILES.socket));
  }

  protected vmmArgs(p: VmmSandbox): string[] {
    return ['--api-sock', path.join(p.dir, SANDBOX_FILES.socket), '--id', firecrackerId(p.request.runId)];
  }

  protected override vmmCommand(p: VmmSandbox): { command: string; args: string[]; joinsNetwork?: boolean } {
    return this.jails?.command(p) ?? super.vmmCommand(p);
  }

  protected override tapOwner(p: VmmSandbox): { uid: number; gid: number } | undefined {
    return this.jails?.owner(p);
  }

  protected override async checkApi(p: VmmSandbox): Promise<void> {
    await this.jails?.checkSocket(p);
  }

  override async cleanup(prepared: PreparedSandbox): Promise<void> {
    await super.cleanup(prepared);
    this.jails?.release(prepared as VmmSandbox);
  }

  protected override async leftoverBinary(): Promise<string> {
    return (await this.jails?.leftoverBinary()) ?? super.leftoverBinary();
  }

  protected override leftoverMarks(dirName: string): string[] {
    return this.jails?.leftoverMarks(dirName, this.name) ?? [];
  }

  protected bootCalls(p: VmmSandbox): ApiCall[] {
    return firecrackerBootCalls({
      vcpus: p.vcpus,
      memoryMiB: p.memoryMiB,
      kernel: this.jails === undefined ? p.kernel : JAILED.kernel,
      initrd: SANDBOX_FILES.initrd,
      bootArgs: firecrackerBootArgs(),
      logFile: LOG_FILE,
      metricsFile: METRICS_FILE,
      ...(p.outputsDisk === undefined ? {} : { outputsDisk: SANDBOX_FILES.disk }),
      ...guestNic(p),
      ...guestDiskLimits(p),
    });
  }

  /** Jailed, Firecracker writes the snapshot at its chroot's top (names relative to its `/`), and it is taken out from there. */
  protected snapshotCalls(dir: string): ApiCall[] {
    return firecrackerSnapshotCalls(this.jails === undefined ? snapshotPathsIn(dir) : FIRECRACKER_SNAPSHOT_FILES);
  }

  protected override async collectSnapshot(p: VmmSandbox, dir: string): Promise<void> {
    await this.jails?.takeSnapshot(p, Object.values(FIRECRACKER_SNAPSHOT_FILES), dir);
  }

  protected restoreCalls(dir: string): ApiCall[] {
    return firecrackerRestoreCalls(this.jails === undefined ? snapshotPathsIn(dir) : JAILED.restore);
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
