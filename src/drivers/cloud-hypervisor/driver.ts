import path from 'node:path';
import type { GuestImage } from '../../guest/image.ts';
import type { SandboxRequest } from '../driver.ts';
import { ApiVmmDriver, guestDiskLimits, guestNic, SANDBOX_FILES, type ApiVmmOptions, type VmmSandbox } from '../vmm/api-vmm-driver.ts';
import type { ApiCall } from '../vmm/unix-http.ts';
import {
  CLOUD_HYPERVISOR_API_VERSION,
  CLOUD_HYPERVISOR_PAUSE,
  CLOUD_HYPERVISOR_PING,
  CLOUD_HYPERVISOR_RESUME,
  cloudHypervisorBootCalls,
  cloudHypervisorCmdline,
  cloudHypervisorRestoreCalls,
  cloudHypervisorSnapshotCalls,
} from './requests.ts';

/**
 * MicroVMs with Cloud Hypervisor: `cloud-hypervisor --api-socket`, then vm.create (vCPUs, memory, the
 * default guest's Debian kernel and initramfs, the outputs disk, the NIC with its rate limiter, the serial
 * console on stdout) and vm.boot; pause and resume by vm.pause / vm.resume; vm.snapshot into a
 * directory, and vm.restore from it into a new Cloud Hypervisor. The files in the sandbox are named
 * relative to it (the VMM's working directory), so that a restored VM finds its disks in the new
 * sandbox. Its devices are virtio-pci,
 * which the guest image's virtio_pci module drives; the agent ends the run with an ACPI power-off, on
 * which Cloud Hypervisor exits.
 */
export class CloudHypervisorDriver extends ApiVmmDriver {
  readonly name = 'cloud-hypervisor';
  readonly pinnedVersion = CLOUD_HYPERVISOR_API_VERSION;
  protected readonly installHint = `a release binary of Cloud Hypervisor ${CLOUD_HYPERVISOR_API_VERSION} from github.com/cloud-hypervisor/cloud-hypervisor/releases as cloud-hypervisor on PATH; Debian bookworm has no package`;
  protected readonly finish = 'poweroff' as const;
  protected readonly readyCall = CLOUD_HYPERVISOR_PING;
  protected readonly pauseCall = CLOUD_HYPERVISOR_PAUSE;
  protected readonly resumeCall = CLOUD_HYPERVISOR_RESUME;

  constructor(options: ApiVmmOptions = {}) {
    super(options);
  }

  protected vmmBinary(): string {
    return 'cloud-hypervisor';
  }

  protected parseVersion(printed: string): string | undefined {
    return /cloud-hypervisor v?(\d+\.\d+(?:\.\d+)?\S*)/.exec(printed)?.[1];
  }

  protected async hostProblem(): Promise<string | undefined> {
    return undefined; // the default guest's Debian bzImage boots as it is
  }

  protected guestKernel(image: GuestImage): { kernel: string; modules: string[] } {
    // Its documented direct boot takes a PVH vmlinux (and a bzImage).
    return { kernel: image.vmlinux ?? image.kernel, modules: image.modules };
  }

  protected validateMachine(_request: SandboxRequest): void {}

  protected vmmArgs(p: VmmSandbox): string[] {
    return ['--api-socket', `path=${path.join(p.dir, SANDBOX_FILES.socket)}`];
  }

  protected bootCalls(p: VmmSandbox): ApiCall[] {
    return cloudHypervisorBootCalls({
      vcpus: p.vcpus,
      memoryMiB: p.memoryMiB,
      kernel: p.kernel,
      initramfs: SANDBOX_FILES.initrd,
      cmdline: cloudHypervisorCmdline(),
      ...(p.outputsDisk === undefined ? {} : { outputsDisk: SANDBOX_FILES.disk }),
      ...guestNic(p),
      ...guestDiskLimits(p),
    });
  }

  protected snapshotCalls(dir: string): ApiCall[] {
    return cloudHypervisorSnapshotCalls(dir);
  }

  protected restoreCalls(dir: string): ApiCall[] {
    return cloudHypervisorRestoreCalls(dir);
  }
}
