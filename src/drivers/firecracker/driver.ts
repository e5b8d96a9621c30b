import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { GuestImage } from '../../guest/image.ts';
import { InvalidInputError } from '../../spec/index.ts';
import type { SandboxRequest } from '../driver.ts';
import { ApiVmmDriver, guestDiskLimits, guestNic, SANDBOX_FILES, type ApiVmmOptions, type VmmSandbox } from '../vmm/api-vmm-driver.ts';
import type { ApiCall } from '../vmm/unix-http.ts';
import {
  FIRECRACKER_API_VERSION,
  FIRECRACKER_DESCRIBE,
  FIRECRACKER_MAX_VCPUS,
  FIRECRACKER_PAUSE,
  FIRECRACKER_RESUME,
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
}

const LOG_FILE = 'firecracker.log';
const METRICS_FILE = 'metrics.json';

/**
 * MicroVMs with Firecracker: `firecracker --api-sock`, configured through its REST API (machine, boot
 * source, the outputs drive, the NIC with rx/tx rate limiters from the bandwidth channel, a balloon, the
 * logger and metrics) and started with InstanceStart; pause and resume by PATCH /vm; a full snapshot by
 * PUT /snapshot/create, loaded into a new Firecracker by PUT /snapshot/load. Files are named relative to
 * the sandbox directory, Firecracker's working directory, so that a restored VM finds its drives in the
 * new sandbox.
 */
export class FirecrackerDriver extends ApiVmmDriver {
  readonly name = 'firecracker';
  readonly pinnedVersion = FIRECRACKER_API_VERSION;
  protected readonly installHint = `a release binary of Firecracker ${FIRECRACKER_API_VERSION} from github.com/firecracker-microvm/firecracker/releases as firecracker on PATH; Debian has no package`;
  protected readonly finish = 'reboot' as const;
  protected readonly readyCall = FIRECRACKER_DESCRIBE;
  protected readonly pauseCall = FIRECRACKER_PAUSE;
  protected readonly resumeCall = FIRECRACKER_RESUME;

  constructor(private readonly fc: FirecrackerOptions = {}) {
    super(fc);
  }

  protected vmmBinary(): string {
    return 'firecracker';
  }

  protected parseVersion(printed: string): string | undefined {
    return /^Firecracker v(\d+\.\d+\.\d+\S*)/m.exec(printed)?.[1];
  }

  protected async guestProblem(): Promise<string | undefined> {
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
  }

  protected vmmArgs(p: VmmSandbox): string[] {
    return ['--api-sock', path.join(p.dir, SANDBOX_FILES.socket), '--id', firecrackerId(p.request.runId)];
  }

  protected bootCalls(p: VmmSandbox): ApiCall[] {
    return firecrackerBootCalls({
      vcpus: p.vcpus,
      memoryMiB: p.memoryMiB,
      kernel: p.kernel,
      initrd: SANDBOX_FILES.initrd,
      bootArgs: firecrackerBootArgs(),
      logFile: LOG_FILE,
      metricsFile: METRICS_FILE,
      ...(p.outputsDisk === undefined ? {} : { outputsDisk: SANDBOX_FILES.disk }),
      ...guestNic(p),
      ...guestDiskLimits(p),
    });
  }

  protected snapshotCalls(dir: string): ApiCall[] {
    return firecrackerSnapshotCalls(dir);
  }

  protected restoreCalls(dir: string): ApiCall[] {
    return firecrackerRestoreCalls(dir);
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
