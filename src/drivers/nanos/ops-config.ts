// The config.json vmesh hands `ops build` for one run. Written against ops 0.1.46 (types/config.go): the
// JSON keys are the Go field names, and ops refuses a key it does not know.
import type { SandboxNetwork } from '../../net/sandbox-network.ts';
import { outputPaths } from '../../spec/index.ts';
import type { SandboxRequest } from '../driver.ts';

/** The program's name in the image: ops puts it at /<name> and hands the name as argv[0]. */
export const PROGRAM = 'program';

/** The fields of ops's config that vmesh sets. */
export interface OpsConfig {
  /** The program's arguments after argv[0]. */
  Args: string[];
  Env: Record<string, string>;
  /** Files copied into the image, each at "/" + its path (relative to the directory ops runs in). */
  Files: string[];
  /** Directories copied into the image, each at "/" + its path: an empty `out` for a run that declares outputs. */
  Dirs?: string[];
  /** The image's size ("<n>m"): room for what the program writes beside what it came with. */
  BaseVolumeSz: string;
  /**
   * Copied into the image's root manifest. `debug_exit`: Nanos ends the machine through QEMU's
   * isa-debug-exit port with the program's exit code, which QEMU exits with as (code << 1) | 1;
   * without it Nanos powers off through ACPI and every run would look like a success.
   */
  ManifestPassthrough: Record<string, string> & { debug_exit: 't' };
  /**
   * The sandbox's address on its link: ops writes them into the manifest's root (`ipaddr`, `netmask`,
   * `gateway`; lepton/image.go), where Nanos takes its first interface's static address from (src/net/net.c).
   */
  RunConfig?: { IPAddress: string; NetMask: string; Gateway: string };
  /** /etc/resolv.conf's name servers (ops's default is 8.8.8.8: set even when empty, to none). */
  NameServers?: string[];
}

/**
 * Manifest keys a run's `unikernel.manifest` may not set: what vmesh or ops set themselves (the program,
 * its arguments, environment and files, the address, the klibs) and what reaches outside the image (mounts).
 */
export const RESERVED_MANIFEST_KEYS: ReadonlySet<string> = new Set([
  'arguments', 'boot', 'children', 'debug_exit', 'environment', 'gateway', 'ip6addr', 'ipaddr', 'klibs', 'mounts', 'netmask', 'program',
]);

/** A prefix length as a dotted netmask: 24 → 255.255.255.0. */
export function netmaskOf(prefixLength: number): string {
  const bits = prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
  return [24, 16, 8, 0].map((shift) => (bits >>> shift) & 0xff).join('.');
}

/**
 * The config for `request`: its args and env, its input files (staged at in/<path>), an empty /out for
 * its outputs (staged at out), an image of `diskMiB`, and the sandbox's address when it has a network.
 */
export function opsConfig(request: SandboxRequest, network?: SandboxNetwork): OpsConfig {
  const w = request.workload;
  const link = network?.link;
  return {
    Args: [...(w.args ?? [])],
    Env: { ...(w.env ?? {}) },
    Files: (request.inputs ?? []).map((input) => `in/${input.path}`),
    ...(outputPaths(w).length === 0 ? {} : { Dirs: ['out'] }),
    BaseVolumeSz: `${Math.max(1, request.resources.diskMiB)}m`,
    // The run's own options first: debug_exit is vmesh's (the exit code depends on it).
    ManifestPassthrough: { ...w.unikernel?.manifest, debug_exit: 't' },
    ...(link === undefined
      ? {}
      : {
          RunConfig: { IPAddress: link.sandboxAddress, NetMask: netmaskOf(link.prefixLength), Gateway: link.hostAddress },
          NameServers: [...network!.nameservers],
        }),
  };
}
