// The requests that describe and boot a Cloud Hypervisor VM, written against the documented API of one
// release (its OpenAPI, vmm/src/api/openapi/cloud-hypervisor.yaml at the tag below). Pure: tested
// against that schema in test/drivers/cloud-hypervisor-requests.test.ts.
import { bandwidthLimiter, diskLimiter } from '../vmm/rate-limit.ts';
import type { ApiCall } from '../vmm/unix-http.ts';

export const CLOUD_HYPERVISOR_API_VERSION = 'v53.0';
const API = '/api/v1';

export interface CloudHypervisorMachine {
  vcpus: number;
  memoryMiB: number;
  /** A bzImage or a PVH vmlinux: Debian's kernel boots as it is. */
  kernel: string;
  initramfs: string;
  cmdline: string;
  /** A raw disk for the outputs tar (the guest's /dev/vda). */
  outputsDisk?: string;
  /** The run's disk I/O limits, on every disk. */
  disk?: { bps?: number; iops?: number };
  /** The guest's NIC: a tap in the VMM's network namespace, shaped by the run's bandwidth channel. */
  network?: { tap: string; mac: string; egressMbps: number; ingressMbps: number };
}

/**
 * Kernel arguments for the default guest: the serial console (the agent's channel) and a panic that
 * halts: Cloud Hypervisor reboots a guest that resets, so a panic that rebooted would run the command
 * again; a halted guest ends at the run's timeout instead. The agent ends a run with `poweroff -f`.
 */
export function cloudHypervisorCmdline(): string {
  return 'console=ttyS0 panic=0 quiet loglevel=1';
}

/** VmConfig for vm.create. */
export function cloudHypervisorVmConfig(m: CloudHypervisorMachine): Record<string, unknown> {
  const config: Record<string, unknown> = {
    cpus: { boot_vcpus: m.vcpus, max_vcpus: m.vcpus },
    memory: { size: m.memoryMiB * 2 ** 20 },
    payload: { kernel: m.kernel, initramfs: m.initramfs, cmdline: m.cmdline },
    serial: { mode: 'Tty' },
    console: { mode: 'Off' },
    rng: { src: '/dev/urandom' },
  };
  if (m.outputsDisk !== undefined) {
    const limiter = diskLimiter(m.disk);
    config.disks = [{ id: 'outputs', path: m.outputsDisk, readonly: false, ...(limiter ? { rate_limiter_config: limiter } : {}) }];
  }
  if (m.network !== undefined) {
    // One limiter shapes both queues of a Cloud Hypervisor NIC (its io_throttling doc), so it can only
    // carry a rate that holds both ways: set when both directions have a channel, at the larger; the tc
    // buckets on the sandbox's veth pair hold each direction to its own rate.
    const { egressMbps, ingressMbps } = m.network;
    const limiter = egressMbps > 0 && ingressMbps > 0 ? bandwidthLimiter(Math.max(egressMbps, ingressMbps)) : undefined;
    config.net = [{ id: 'eth0', tap: m.network.tap, mac: m.network.mac, ...(limiter ? { rate_limiter_config: limiter } : {}) }];
  }
  return config;
}

/** vm.create with the machine, then vm.boot. */
export function cloudHypervisorBootCalls(m: CloudHypervisorMachine): ApiCall[] {
  return [
    { method: 'PUT', path: `${API}/vm.create`, body: cloudHypervisorVmConfig(m) },
    { method: 'PUT', path: `${API}/vm.boot` },
  ];
}

/** vm.snapshot of the paused VM into `dir` (VmSnapshotConfig): Cloud Hypervisor writes its config, state and memory there. */
export function cloudHypervisorSnapshotCalls(dir: string): ApiCall[] {
  return [{ method: 'PUT', path: `${API}/vm.snapshot`, body: { destination_url: `file://${dir}` } }];
}

/**
 * vm.restore from `dir` (RestoreConfig) into a Cloud Hypervisor that has no VM yet, then vm.resume: a
 * restored VM starts paused. Its disks are opened again at the paths in the snapshot's config, relative
 * to the VMM's working directory: the new sandbox's copies.
 */
export function cloudHypervisorRestoreCalls(dir: string): ApiCall[] {
  return [
    { method: 'PUT', path: `${API}/vm.restore`, body: { source_url: `file://${dir}`, prefault: false } },
    { method: 'PUT', path: `${API}/vm.resume` },
  ];
}

export const CLOUD_HYPERVISOR_PING: ApiCall = { method: 'GET', path: `${API}/vmm.ping` };
export const CLOUD_HYPERVISOR_PAUSE: ApiCall = { method: 'PUT', path: `${API}/vm.pause` };
export const CLOUD_HYPERVISOR_RESUME: ApiCall = { method: 'PUT', path: `${API}/vm.resume` };
