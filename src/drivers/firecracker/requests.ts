// The requests that describe and boot a Firecracker microVM, written against the documented API of one
// release (its swagger, src/firecracker/swagger/firecracker.yaml at the tag below). Pure: tested against
// that schema in test/drivers/firecracker-requests.test.ts.
import { bandwidthLimiter, diskLimiter } from '../vmm/rate-limit.ts';
import type { ApiCall } from '../vmm/unix-http.ts';

export const FIRECRACKER_API_VERSION = 'v1.16.1';

/** Firecracker's MachineConfiguration allows 1 to 32 vCPUs. */
export const FIRECRACKER_MAX_VCPUS = 32;

export interface FirecrackerMachine {
  vcpus: number;
  memoryMiB: number;
  /** An uncompressed vmlinux (Firecracker boots ELF kernels, not bzImage). */
  kernel: string;
  initrd: string;
  bootArgs: string;
  /** A raw disk for the outputs tar (the guest's /dev/vda). */
  outputsDisk?: string;
  /** The run's disk I/O limits, on every drive. */
  disk?: { bps?: number; iops?: number };
  /** The guest's NIC: a tap in the VMM's network namespace, shaped by the run's bandwidth channel. */
  network?: { tap: string; mac: string; egressMbps: number; ingressMbps: number };
  /** Firecracker's own log (the file must exist) and its metrics file. */
  logFile: string;
  metricsFile: string;
}

/**
 * Kernel arguments for the default guest: the serial console (the agent's channel), `reboot=k` so that
 * the agent's `reboot -f` goes through the keyboard controller, which Firecracker takes as "exit", and
 * a panic that reboots (so ends) at once. No PCI: Firecracker's devices are virtio-mmio, declared on
 * the command line by Firecracker itself.
 */
export function firecrackerBootArgs(): string {
  return 'console=ttyS0 reboot=k panic=1 pci=off quiet loglevel=1';
}

/** The pre-boot requests, in order, ending with InstanceStart. */
export function firecrackerBootCalls(m: FirecrackerMachine): ApiCall[] {
  const calls: ApiCall[] = [
    { method: 'PUT', path: '/logger', body: { log_path: m.logFile, level: 'Warning', show_level: true, show_log_origin: false } },
    { method: 'PUT', path: '/metrics', body: { metrics_path: m.metricsFile } },
    { method: 'PUT', path: '/machine-config', body: { vcpu_count: m.vcpus, mem_size_mib: m.memoryMiB, smt: false, track_dirty_pages: false } },
    { method: 'PUT', path: '/boot-source', body: { kernel_image_path: m.kernel, initrd_path: m.initrd, boot_args: m.bootArgs } },
  ];
  if (m.outputsDisk !== undefined) {
    const limiter = diskLimiter(m.disk);
    calls.push({
      method: 'PUT',
      path: '/drives/outputs',
      body: { drive_id: 'outputs', path_on_host: m.outputsDisk, is_root_device: false, is_read_only: false, ...(limiter ? { rate_limiter: limiter } : {}) },
    });
  }
  if (m.network !== undefined) {
    // rx is what the guest receives (the channel's ingress), tx what it sends (egress).
    const rx = bandwidthLimiter(m.network.ingressMbps);
    const tx = bandwidthLimiter(m.network.egressMbps);
    calls.push({
      method: 'PUT',
      path: '/network-interfaces/eth0',
      body: { iface_id: 'eth0', host_dev_name: m.network.tap, guest_mac: m.network.mac, ...(rx ? { rx_rate_limiter: rx } : {}), ...(tx ? { tx_rate_limiter: tx } : {}) },
    });
  }
  // A balloon that starts deflated: memory can be reclaimed from an idle guest later; it gives way under OOM.
  calls.push({ method: 'PUT', path: '/balloon', body: { amount_mib: 0, deflate_on_oom: true, stats_polling_interval_s: 0 } });
  calls.push({ method: 'PUT', path: '/actions', body: { action_type: 'InstanceStart' } });
  return calls;
}

export const FIRECRACKER_PAUSE: ApiCall = { method: 'PATCH', path: '/vm', body: { state: 'Paused' } };
export const FIRECRACKER_RESUME: ApiCall = { method: 'PATCH', path: '/vm', body: { state: 'Resumed' } };

/** The files a Firecracker snapshot is made of, inside the snapshot's directory. */
export const FIRECRACKER_SNAPSHOT_FILES = { state: 'vmstate', memory: 'memory' } as const;

/** Where a snapshot's two files are (or go), as Firecracker is told them. */
export interface FirecrackerSnapshotPaths {
  state: string;
  memory: string;
}

/** The snapshot's files inside the directory `dir`. */
export function snapshotPathsIn(dir: string): FirecrackerSnapshotPaths {
  return { state: `${dir}/${FIRECRACKER_SNAPSHOT_FILES.state}`, memory: `${dir}/${FIRECRACKER_SNAPSHOT_FILES.memory}` };
}

/** A full snapshot of the paused microVM into those files (SnapshotCreateParams). */
export function firecrackerSnapshotCalls(to: FirecrackerSnapshotPaths): ApiCall[] {
  return [{ method: 'PUT', path: '/snapshot/create', body: { snapshot_type: 'Full', snapshot_path: to.state, mem_file_path: to.memory } }];
}

/**
 * Loads a snapshot from those files into a Firecracker that has been configured with nothing (SnapshotLoadParams:
 * the memory from a file, the microVM resumed once loaded). The drives it had are opened again at the
 * paths they were given, relative to Firecracker's working directory: the new sandbox's copies.
 */
export function firecrackerRestoreCalls(from: FirecrackerSnapshotPaths): ApiCall[] {
  return [{ method: 'PUT', path: '/snapshot/load', body: { snapshot_path: from.state, mem_backend: { backend_type: 'File', backend_path: from.memory }, resume_vm: true } }];
}

/** GET / answers InstanceInfo once the API server is up. */
export const FIRECRACKER_DESCRIBE: ApiCall = { method: 'GET', path: '/' };

/** Firecracker's `--id`: alphanumerics and dashes, at most 64 characters. */
export function firecrackerId(runId: string): string {
  return runId.replace(/[^A-Za-z0-9-]/g, '-').slice(0, 64) || 'vmesh';
}
