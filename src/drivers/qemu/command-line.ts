import { shellQuote } from '../../guest/agent.ts';

/** What one microVM is started with. */
export interface MicroVmSpec {
  accel: 'kvm' | 'tcg';
  vcpus: number;
  memoryMiB: number;
  kernel: string;
  /** The initramfs; a user's own kernel may boot without one. */
  initrd?: string;
  /**
   * A user's root disk image, the first disk (/dev/vda): QEMU's `snapshot=on` keeps the guest's writes in
   * a temporary copy-on-write file (in $TMPDIR, unlinked at once), so the image itself is never written.
   */
  rootDisk?: string;
  /** Extra kernel arguments after vmesh's own. */
  append?: string;
  /**
   * TCG: the host's TSC rate in kHz, handed to the guest kernel. Without it the kernel calibrates its TSC
   * against the emulated PIT, which fails when the host is busy (three guests at once on two cores), and
   * the guest then hangs in early boot.
   */
  tscKhz?: number;
  /** A raw disk the agent writes the outputs tar onto (virtio-blk). */
  outputsDisk?: string;
  /** Disk I/O limits, on every drive (QEMU's block throttling). */
  disk?: { bps?: number; iops?: number };
  /** QMP's Unix socket: status, pause/resume, quit. */
  qmpSocket: string;
  pidFile: string;
  /** Restore: the machine state (a QMP `migrate` stream in a file) to load instead of booting; starts paused. */
  incoming?: string;
}

/**
 * The qemu-system-x86_64 command line of a microVM: `-M microvm` (its virtio-mmio devices described by
 * ACPI), no default devices, the serial console on stdout (the agent's channel), no reboot (the agent's
 * `reboot -f` with `reboot=t` ends QEMU), QMP on a Unix socket.
 */
export function microVmArgs(spec: MicroVmSpec): string[] {
  const tsc = spec.accel === 'tcg' && spec.tscKhz !== undefined ? `tsc_early_khz=${Math.round(spec.tscKhz)}` : '';
  const append = ['console=ttyS0', 'reboot=t', 'panic=-1', 'quiet', 'loglevel=1', tsc, spec.append ?? ''].filter(Boolean).join(' ');
  const args = [
    '-M', `microvm,accel=${spec.accel}`,
    '-cpu', spec.accel === 'kvm' ? 'host' : 'max',
    '-smp', String(Math.max(1, Math.ceil(spec.vcpus))),
    '-m', `${Math.max(1, Math.round(spec.memoryMiB))}M`,
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    '-serial', 'stdio',
    '-kernel', spec.kernel,
    ...(spec.initrd === undefined ? [] : ['-initrd', spec.initrd]),
    '-append', append,
    '-qmp', `unix:${qemuOption(spec.qmpSocket)},server=on,wait=off`,
    '-pidfile', spec.pidFile,
  ];
  if (spec.incoming !== undefined) args.push('-S', '-incoming', `exec:cat ${shellQuote(spec.incoming)}`);
  const throttle = driveThrottle(spec.disk);
  if (spec.rootDisk !== undefined) {
    args.push('-drive', [`id=root,file=${qemuOption(spec.rootDisk)},format=raw,if=none,snapshot=on`, ...throttle].join(','), '-device', 'virtio-blk-device,drive=root');
  }
  if (spec.outputsDisk !== undefined) {
    args.push('-drive', [`id=outputs,file=${qemuOption(spec.outputsDisk)},format=raw,if=none,cache=unsafe`, ...throttle].join(','), '-device', 'virtio-blk-device,drive=outputs');
  }
  return args;
}

/** QEMU's block throttling options for a drive, from a run's disk limits (bytes and operations per second, reads and writes together). */
export function driveThrottle(disk: { bps?: number; iops?: number } | undefined): string[] {
  return [...(disk?.bps === undefined ? [] : [`throttling.bps-total=${disk.bps}`]), ...(disk?.iops === undefined ? [] : [`throttling.iops-total=${disk.iops}`])];
}

/** A value inside a QEMU `key=value,...` option: a comma is written twice. */
export function qemuOption(value: string): string {
  return value.replace(/,/g, ',,');
}
