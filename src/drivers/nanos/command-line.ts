// The QEMU command line of a Nanos unikernel, and how its end reads.
import type { SandboxExit } from '../driver.ts';
import { driveThrottle, qemuOption } from '../qemu/command-line.ts';

export interface UnikernelSpec {
  accel: 'kvm' | 'tcg';
  vcpus: number;
  memoryMiB: number;
  /** The image ops built: boot sector, kernel and the program's filesystem on one raw disk. */
  image: string;
  /** Disk I/O limits (QEMU's block throttling). */
  disk?: { bps?: number; iops?: number };
  qmpSocket: string;
  pidFile: string;
  /** The tap in the sandbox's network namespace that the guest's virtio-net device sits on. */
  tap?: string;
}

/**
 * Much as ops starts an image (ops 0.1.46, qemu/qemu_unix.go): a q35 machine, the image on virtio-scsi,
 * an isa-debug-exit port for the exit code, a random-number device; the serial console on stdout. vmesh
 * drops every default device and adds QMP, a pid file and `-no-reboot`, so that a triple fault ends
 * the machine rather than booting it again.
 */
export function unikernelArgs(spec: UnikernelSpec): string[] {
  return [
    '-machine', `q35,accel=${spec.accel}`,
    '-cpu', spec.accel === 'kvm' ? 'host' : 'max',
    '-smp', String(Math.max(1, Math.ceil(spec.vcpus))),
    '-m', `${Math.max(1, Math.round(spec.memoryMiB))}M`,
    '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
    '-serial', 'stdio',
    '-device', 'virtio-scsi-pci,id=scsi0',
    '-drive', [`id=hd0,file=${qemuOption(spec.image)},format=raw,if=none`, ...driveThrottle(spec.disk)].join(','),
    '-device', 'scsi-hd,bus=scsi0.0,drive=hd0',
    '-device', 'isa-debug-exit',
    '-device', 'virtio-rng-pci',
    '-qmp', `unix:${qemuOption(spec.qmpSocket)},server=on,wait=off`,
    '-pidfile', spec.pidFile,
    ...(spec.tap === undefined ? [] : ['-netdev', `tap,id=net0,ifname=${spec.tap},script=no,downscript=no`, '-device', 'virtio-net-pci,netdev=net0']),
  ];
}

/** Exit codes Nanos reserves for its own ends (src/runtime/runtime.h: VM_EXIT_GDB, VM_EXIT_FAULT, VM_EXIT_HALT). */
const NANOS_FAULT = 0x7e;
const NANOS_HALT = 0x7f;

/**
 * How a unikernel ended, from QEMU's exit status: with `debug_exit` Nanos writes the program's exit code
 * N to the isa-debug-exit port and QEMU exits with (N << 1) | 1. QEMU's own failures exit 1 as well,
 * which is also how N = 0 reads: they are told apart by what QEMU printed on stderr. A program killed by
 * a signal ends with the signal's number as its code (Nanos's VM_EXIT_SIGNAL), as an exit(11) would:
 * Nanos's console line for the signal tells them apart. A machine that never started its program
 * (a triple fault, under `-no-reboot`) exits 0. A process's status keeps 8 bits, so exit codes 0–125
 * come back as they are; 126 and 127 are Nanos's own, and a code above 127 loses its top bit.
 */
export function unikernelExit(status: number | null, qemuErrors: string, consoleTail: string, base: Pick<SandboxExit, 'outputs' | 'usage'>): SandboxExit {
  const said = () => {
    const last = consoleTail.trim().split('\n').slice(-5).join(' | ');
    return qemuErrors.trim() ? `: ${qemuErrors.trim()}` : last ? `; its console ended: ${last}` : '';
  };
  const failed = qemuErrors.split('\n').some((l) => /qemu-system/.test(l) && !/warning:/i.test(l));
  if (status === null || status % 2 === 0 || (status === 1 && failed)) {
    return { ...base, outcome: 'crashed', exitCode: null, reason: `the unikernel ended without an exit code (qemu exited with ${status})${said()}` };
  }
  const code = status >> 1;
  const signal = /\*\*\* signal (\d+) received[^\n]*/.exec(consoleTail);
  if (signal !== null && Number(signal[1]) === code) return { ...base, outcome: 'crashed', exitCode: null, reason: `the program was killed by signal ${code}: ${signal[0].trim()}` };
  if (code === NANOS_FAULT) return { ...base, outcome: 'crashed', exitCode: null, reason: `the program faulted${said()}` };
  if (code === NANOS_HALT) return { ...base, outcome: 'crashed', exitCode: null, reason: `the unikernel halted${said()}` };
  return { ...base, outcome: 'exited', exitCode: code };
}
