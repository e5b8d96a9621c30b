/**
 * The seccomp filter every container gets: everything is allowed but the system calls that reach
 * kernel surfaces a sandboxed workload has no business with — above all the ones an unprivileged
 * process can still use to widen its powers (new user namespaces through unshare, clone or clone3;
 * keyrings; bpf; userfaultfd; perf). Capabilities already stop most of the rest; this is the second
 * wall. Refused calls fail with EPERM (clone3 with ENOSYS, so that libc falls back to clone, which is
 * filtered by its flags).
 */
const EPERM = 1;
const ENOSYS = 38;
const CLONE_NEWUSER = 0x10000000;

const REFUSED = [
  'acct', 'add_key', 'bpf', 'clock_adjtime', 'clock_settime', 'create_module', 'delete_module', 'fanotify_init',
  'finit_module', 'get_kernel_syms', 'init_module', 'ioperm', 'iopl', 'kexec_file_load', 'kexec_load', 'keyctl',
  'lookup_dcookie', 'mount', 'name_to_handle_at', 'nfsservctl', 'open_by_handle_at', 'perf_event_open', 'pivot_root',
  'process_vm_readv', 'process_vm_writev', 'ptrace', 'query_module', 'quotactl', 'reboot', 'request_key', 'setns',
  'settimeofday', 'swapoff', 'swapon', 'sysfs', '_sysctl', 'umount2', 'unshare', 'uselib', 'userfaultfd', 'ustat',
  'vm86', 'vm86old',
];

export interface SeccompProfile {
  defaultAction: string;
  architectures: string[];
  syscalls: Array<{
    names: string[];
    action: string;
    errnoRet?: number;
    args?: Array<{ index: number; value: number; valueTwo: number; op: string }>;
  }>;
}

export const CONTAINER_SECCOMP: SeccompProfile = {
  defaultAction: 'SCMP_ACT_ALLOW',
  architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32', 'SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM'],
  syscalls: [
    { names: REFUSED, action: 'SCMP_ACT_ERRNO', errnoRet: EPERM },
    { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS },
    {
      names: ['clone'],
      action: 'SCMP_ACT_ERRNO',
      errnoRet: EPERM,
      args: [{ index: 0, value: CLONE_NEWUSER, valueTwo: CLONE_NEWUSER, op: 'SCMP_CMP_MASKED_EQ' }],
    },
  ],
};
