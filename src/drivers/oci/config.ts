import type { ResolvedResources } from '../../spec/index.ts';
import { CONTAINER_SECCOMP, type SeccompProfile } from './seccomp.ts';
import type { IdMap } from './user-namespace.ts';

/**
 * The OCI runtime configuration (config.json of a bundle) that vmesh writes for every container, after
 * the OCI runtime specification 1.0.2. Only the fields vmesh sets are typed here.
 */
export interface RuntimeConfig {
  ociVersion: string;
  process: {
    terminal: boolean;
    user: { uid: number; gid: number };
    args: string[];
    env: string[];
    cwd: string;
    capabilities: Record<'bounding' | 'effective' | 'permitted' | 'inheritable' | 'ambient', string[]>;
    rlimits: Array<{ type: string; hard: number; soft: number }>;
    noNewPrivileges: boolean;
  };
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: Array<{ destination: string; type: string; source: string; options: string[] }>;
  linux: {
    cgroupsPath: string;
    resources: {
      devices: Array<{ allow: boolean; access: string }>;
      memory: { limit: number; swap: number };
      cpu: { quota: number; period: number };
      pids: { limit: number };
    };
    namespaces: Array<{ type: string; path?: string }>;
    uidMappings?: Array<{ containerID: number; hostID: number; size: number }>;
    gidMappings?: Array<{ containerID: number; hostID: number; size: number }>;
    seccomp: SeccompProfile;
    maskedPaths: string[];
    readonlyPaths: string[];
  };
}

/**
 * Capabilities a container keeps: binding ports below 1024 (services publish them). Everything else a
 * root process would have is dropped, and `noNewPrivileges` stops setuid binaries from gaining any.
 */
export const CONTAINER_CAPABILITIES = ['CAP_NET_BIND_SERVICE'] as const;

export const CPU_PERIOD_US = 100_000;
export const DEFAULT_PIDS_LIMIT = 256;
const NOFILE = 1024;

export interface ContainerSpec {
  /** Absolute path of the container's own root file system (its writable layer over the image). */
  rootfs: string;
  /** Mount / read-only; /tmp is then a tmpfs of its own, capped at the run's disk. */
  readOnlyRoot: boolean;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  hostname: string;
  resources: ResolvedResources;
  cgroupsPath: string;
  /** Host directory mounted read-write at /out: where declared outputs are collected from. */
  outputsDir?: string;
  /** Host directory mounted read-only at /in: the run's input files. */
  inputsDir?: string;
  /** Host file bound read-only at /etc/resolv.conf (a sandbox network's name servers). */
  resolvConf?: string;
  /** A network namespace made by src/net to join; without one the container gets an empty one of its own. */
  netnsPath?: string;
  pidsLimit?: number;
  /** A user namespace of its own, with container ids mapped onto these host ids; without, container root is host root. */
  idMap?: IdMap;
}

/**
 * /sys, read-only. A container in a user namespace of its own that joins a network namespace made
 * outside it (src/net's) may not mount a sysfs (the kernel ties sysfs to the network namespace's
 * owner): it gets the host's /sys bound read-only, submounts too, with the host's cgroup tree masked,
 * as a fresh sysfs would not show one.
 */
function sysMount(spec: ContainerSpec): RuntimeConfig['mounts'][number] {
  if (spec.idMap !== undefined && spec.netnsPath !== undefined) return { destination: '/sys', type: 'bind', source: '/sys', options: ['rbind', 'nosuid', 'noexec', 'nodev', 'rro'] };
  return { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] };
}

function idMappings(map: IdMap): Pick<RuntimeConfig['linux'], 'uidMappings' | 'gidMappings'> {
  const range = [{ containerID: 0, hostID: map.hostId, size: map.size }];
  return { uidMappings: range, gidMappings: range };
}

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export function runtimeConfig(spec: ContainerSpec): RuntimeConfig {
  const caps = [...CONTAINER_CAPABILITIES];
  const memory = spec.resources.memoryMiB * 2 ** 20;
  const env = { PATH: DEFAULT_PATH, HOME: '/tmp', ...spec.env };
  const sys = sysMount(spec);
  const mounts: RuntimeConfig['mounts'] = [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
    { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    sys,
  ];
  if (spec.readOnlyRoot) {
    // The only writable place inside a read-only root: capped at the run's scratch disk.
    mounts.push({ destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777', `size=${Math.max(1, spec.resources.diskMiB)}m`] });
  }
  if (spec.outputsDir !== undefined) {
    mounts.push({ destination: '/out', type: 'bind', source: spec.outputsDir, options: ['rbind', 'rw', 'nosuid', 'nodev'] });
  }
  if (spec.resolvConf !== undefined) {
    mounts.push({ destination: '/etc/resolv.conf', type: 'bind', source: spec.resolvConf, options: ['rbind', 'ro', 'nosuid', 'nodev', 'noexec'] });
  }
  if (spec.inputsDir !== undefined) {
    mounts.push({ destination: '/in', type: 'bind', source: spec.inputsDir, options: ['rbind', 'ro', 'nosuid', 'nodev'] });
  }
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: spec.args,
      env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
      cwd: spec.cwd,
      capabilities: { bounding: caps, effective: caps, permitted: caps, inheritable: [], ambient: [] },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: NOFILE, soft: NOFILE }],
      noNewPrivileges: true,
    },
    root: { path: spec.rootfs, readonly: spec.readOnlyRoot },
    hostname: spec.hostname,
    mounts,
    linux: {
      cgroupsPath: spec.cgroupsPath,
      resources: {
        devices: [{ allow: false, access: 'rwm' }],
        // swap = limit: no swap beyond the memory limit (cgroup v1 memsw semantics; runc maps it for v2).
        memory: { limit: memory, swap: memory },
        cpu: { quota: Math.max(1000, Math.round(spec.resources.vcpus * CPU_PERIOD_US)), period: CPU_PERIOD_US },
        pids: { limit: spec.pidsLimit ?? DEFAULT_PIDS_LIMIT },
      },
      // Without a network from src/net: a namespace of its own with nothing but loopback in it.
      seccomp: CONTAINER_SECCOMP,
      namespaces: [
        ...(spec.idMap === undefined ? [] : [{ type: 'user' }]),
        { type: 'pid' },
        spec.netnsPath === undefined ? { type: 'network' } : { type: 'network', path: spec.netnsPath },
        { type: 'ipc' },
        { type: 'uts' },
        { type: 'mount' },
      ],
      ...(spec.idMap === undefined ? {} : idMappings(spec.idMap)),
      maskedPaths: [
        ...(sys.type === 'bind' ? ['/sys/fs/cgroup'] : []),
        '/proc/acpi',
        '/proc/asound',
        '/proc/kcore',
        '/proc/keys',
        '/proc/latency_stats',
        '/proc/timer_list',
        '/proc/timer_stats',
        '/proc/sched_debug',
        '/sys/firmware',
        '/proc/scsi',
      ],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  };
}
