import { defaultResources } from '../../src/node/config.ts';
import type { ResolvedResources } from '../../src/spec/index.ts';
import type { PhaseResult } from '../lib/load.ts';

/** Every run of both ways runs this in the busybox root file system and is checked for exactly this output. */
export const COMMAND = ['sh', '-c', 'echo hello'];
export const EXPECTED_STDOUT = 'hello\n';
/** The scratch disk the workload asks for: room for the unpacked busybox image (a container gets 1 GiB by default). */
export const DISK_MIB = 64;
/** The cgroup vmesh's containers go under (src/drivers/oci/driver.ts), and their names in it: vmesh-<run id>. */
export const NODE_CGROUP_PARENT = 'vmesh';
export const NODE_CONTAINER_PREFIX = 'vmesh-';

export interface Settings {
  /** Measured runs of each way. */
  runs: number;
  /** Unmeasured runs of each way before them (after the first vmesh run, which unpacks the image). */
  warmupRuns: number;
  /** Worker threads of the node's function drivers (idle here). */
  workers: number;
  cores: number;
}

/** The busybox root file system and the OCI image made of it. */
export interface ImageInfo {
  /** Files, directories and symlinks in the root file system. */
  entries: number;
  /** Bytes of its regular files. */
  rootfsBytes: number;
  /** Bytes of the image layout's blobs (one gzipped layer, its config and manifest). */
  layoutBytes: number;
}

/** What a run left behind once it had ended, counted after the last one. */
export interface Leftovers {
  containers: number;
  cgroups: number;
  /** Directories per container: the runtime's state entries (bare), the node's sandbox directories (vmesh). */
  directories: number;
}

/** The node's own account of a run (result.timings), in milliseconds. */
export interface NodeTimings {
  queuedMs: number;
  startMs: number;
  runMs: number;
  totalMs: number;
}

export interface RuncResult {
  /** The runtime both ways use (vmesh picks it by the same rule), and its version. */
  runtime: string;
  version: string;
  /** The bare containers' user namespace, worded as the oci driver words its own. */
  userNamespace: string;
  phase: PhaseResult;
  leftovers: Leftovers;
}

export interface VmeshResult {
  code: string;
  startupMs: number;
  /** The runtime the node's oci driver reported. */
  runtime: string;
  /** The first run, which unpacks the image into the node's cache: client wall time and the node's timings. */
  first: { wallMs: number; node: NodeTimings };
  phase: PhaseResult;
  /** Node-side timings of the measured runs that succeeded, and the client wall time of each. */
  node: NodeTimings[];
  wallMs: number[];
  fds: { afterFirst: number; afterRuns: number };
  leftovers: Leftovers;
}

/** How busy the machine was when the benchmark began and after its last run. */
export interface MachineLoad {
  loadBefore: number;
  loadAfter: number;
  /** Processes of containers under the node's cgroup parent that this benchmark did not start. */
  otherContainersBefore: number;
  otherContainersAfter: number;
}

export interface ContainersResults {
  settings: Settings;
  image: ImageInfo;
  cgroups: string;
  load: MachineLoad;
  runc: RuncResult;
  vmesh: VmeshResult;
}

/** What the node resolves for a container that asks for DISK_MIB of disk and nothing else: both ways run with it. */
export const RESOURCES: ResolvedResources = { ...defaultResources('container'), diskMiB: DISK_MIB };
