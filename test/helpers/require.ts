import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/**
 * Host tools a test may need. A test whose tool is missing skips with `reason` (which says how to
 * install it) unless `VMESH_REQUIRE` names the tool (comma-separated, or `all`; see OUTSIDE_ALL): then it fails, so that
 * CI cannot pass by skipping.
 */
export function required(tool: string): boolean {
  const names = (process.env.VMESH_REQUIRE ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  return names.includes(tool) || (names.includes('all') && !OUTSIDE_ALL.has(tool));
}

/**
 * Tools that `all` leaves out, because no Debian package gives them (and Firecracker and Cloud Hypervisor
 * need a KVM that boots a guest, which these machines and CI do not have): a host that has them names them to require them
 * (`VMESH_REQUIRE=all,firecracker,cloud-hypervisor`).
 */
export const OUTSIDE_ALL: ReadonlySet<string> = new Set(['firecracker', 'cloud-hypervisor', 'kvm', 'jailer', 'ops', 'nanos-tools']);

/** True when this kernel lets processes make user namespaces (what containers' own ones need). */
export function userNamespacesAllowed(): boolean {
  try {
    return Number(readFileSync('/proc/sys/user/max_user_namespaces', 'utf8').trim()) > 0;
  } catch {
    return false;
  }
}

export const USERNS_HINT = 'sysctl -w user.max_user_namespaces=15000 (this kernel has user namespaces switched off)';

/** True when `command --version` (or the given args) runs. */
export function hasCommand(command: string, args: string[] = ['--version']): boolean {
  try {
    execFileSync(command, args, { stdio: 'ignore', timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}

/**
 * The `skip` option for a node:test `it`/`describe`: false when the tool is here; the install hint when
 * it is missing; and a thrown error when it is missing but required.
 */
export function skipUnless(tool: string, present: boolean, installHint: string): false | string {
  if (present) return false;
  const reason = `${tool} is missing: ${installHint}`;
  if (required(tool)) throw new Error(`VMESH_REQUIRE names ${tool}, but ${reason}`);
  return reason;
}
