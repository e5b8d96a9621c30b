import type { OutputSink, CollectedOutputs } from '../outputs/pack.ts';
import type { IsolationLevel, ResolvedResources, Usage, Workload, WorkloadKind } from '../spec/index.ts';

/** What a driver found on this host: whether it can run, its version, and if not, why not. */
export interface DriverProbe {
  available: boolean;
  version?: string;
  /** Why the driver cannot run here, phrased so that the operator knows what to install or change. */
  reason?: string;
  /** Facts the probe found that explain later choices (e.g. `accel: tcg`). */
  details?: Record<string, string>;
}

/** Everything a driver needs to run one workload; built by the node from a validated spec. */
export interface SandboxRequest {
  runId: string;
  workload: Workload;
  /** The workload's code, resolved from inline / file / blob. */
  code: Uint8Array;
  /** `sha256:<hex>` of `code`, when the caller knows it (drivers may key caches by it). */
  codeHash?: string;
  /** When the source is a directory (a container rootfs or image layout): its real path; `code` is empty. */
  sourceDir?: string;
  /** When the source is a file used in place (a container image archive): its real path; `code` is empty. */
  sourceFile?: string;
  /** A microVM's own kernel (and initramfs and root disk), from `source.kernel`: real paths under the node's file roots. */
  kernel?: { kernel: string; initrd?: string; rootfs?: string };
  resources: ResolvedResources;
  /** Bytes kept of each of stdout and stderr; beyond it the stream is counted but dropped. */
  outputCapBytes: number;
  /** Where the declared outputs are archived when the sandbox ends. */
  outputs: OutputSink;
  /**
   * Continue a captured sandbox instead of starting the workload: a snapshot directory written by this
   * driver's `snapshot` (here or on another node). The driver checks that it can load it.
   */
  restoreFrom?: string;
  /** Files the workload reads under /in, checked by the node (plain relative paths, no clashes, within diskMiB). */
  inputs?: readonly SandboxInput[];
}

/** One input file: its bytes in memory (inline inputs) or a file to copy (a blob in the store). */
export interface SandboxInput {
  /** A plain relative path under /in. */
  path: string;
  bytes: number;
  data?: Uint8Array;
  file?: string;
  /** The blob the bytes came from, when they came from one. */
  hash?: string;
}

export type StreamName = 'stdout' | 'stderr';

/** Where a running sandbox sends its output as it is produced. */
export interface SandboxIO {
  write(stream: StreamName, chunk: Uint8Array): void;
  /** The total a stream reached, counting bytes past the cap that were dropped at the source. */
  total(stream: StreamName, bytes: number): void;
  /** The sandbox's network, once it has one: its address and published ports. */
  network?(info: SandboxNetworkInfo): void;
}

export interface SandboxNetworkInfo {
  address: string;
  ports: Array<{ guest: number; host: number; protocol: string }>;
}

/** How a sandbox ended, as the driver saw it. The executor maps this to the run's terminal state. */
export type SandboxOutcome = 'exited' | 'timeout' | 'oom' | 'cancelled' | 'crashed';

export interface SandboxExit {
  outcome: SandboxOutcome;
  /** The workload's exit code; null when it did not exit by itself. */
  exitCode: number | null;
  /** A sentence for the user when the outcome is not a plain exit. */
  reason?: string;
  /** The JSON value returned by a function workload (js). */
  output?: unknown;
  outputs: CollectedOutputs;
  usage: Usage;
}

export type StopReason = 'timeout' | 'cancelled';

/** A driver's handle on one prepared (not yet started) sandbox. Drivers extend it with their own state. */
export interface PreparedSandbox {
  readonly request: SandboxRequest;
}

/** A driver's handle on one started sandbox. */
export interface RunningSandbox {
  readonly prepared: PreparedSandbox;
}

/**
 * One isolation technology behind one interface. The life of a sandbox is
 *   prepare → start → wait → (stop) → cleanup
 * and `cleanup` is called on every path once `prepare` has returned, including failures and cancels.
 * Every long call takes an AbortSignal.
 */
export interface Driver {
  readonly name: string;
  readonly kinds: readonly WorkloadKind[];
  readonly isolation: IsolationLevel;
  /** Whether the driver places `inputs` under /in; the node refuses input files for drivers that do not. */
  readonly inputFiles?: boolean;
  /** Whether the driver holds its sandbox's disks to `resources.disk`; the node refuses the limits for drivers that do not. */
  readonly diskLimits?: boolean;
  /** Can this driver run this particular workload (e.g. the right function runtime)? */
  accepts(workload: Workload, code: Uint8Array): boolean;
  probe(signal?: AbortSignal): Promise<DriverProbe>;
  /** The probe's answer as it stands now, for a driver whose answer changes after start (QEMU's accelerator). */
  status?(): DriverProbe;
  /**
   * Cheap checks of a workload at submission, before anything is created: a source that this driver
   * could never run is refused here (a 4xx for the caller) rather than becoming a failed run.
   */
  validate(request: SandboxRequest, signal?: AbortSignal): Promise<void>;
  /** Validates and stages the workload (compile, scratch directory). Throws typed errors on bad input. */
  prepare(request: SandboxRequest, signal?: AbortSignal): Promise<PreparedSandbox>;
  start(prepared: PreparedSandbox, io: SandboxIO, signal?: AbortSignal): Promise<RunningSandbox>;
  /** Resolves when the sandbox has ended, however it ended. Never rejects for a workload's own failure. */
  wait(sandbox: RunningSandbox, signal?: AbortSignal): Promise<SandboxExit>;
  /** Ends a running sandbox; its `wait` then resolves with the given reason as outcome. Idempotent. */
  stop(sandbox: RunningSandbox, reason: StopReason): Promise<void>;
  /** Freezes a running sandbox (its processes or vCPUs stop; its resources stay held). Optional. */
  pause?(sandbox: RunningSandbox): Promise<void>;
  /** Lets a paused sandbox go on. */
  resume?(sandbox: RunningSandbox): Promise<void>;
  /**
   * Captures the whole sandbox into the files of `dir` (which must not exist yet), leaving it paused, so
   * that a request with `restoreFrom` continues it here or on another node. Optional.
   */
  snapshot?(sandbox: RunningSandbox, dir: string, signal?: AbortSignal): Promise<unknown>;
  /** Removes everything `prepare` and `start` made. Idempotent; never throws. */
  cleanup(prepared: PreparedSandbox): Promise<void>;
  /**
   * Removes what a previous node process left behind in this driver's own domain (containers, mounts,
   * VMs) after a crash. Called once at start, after `probe` and before the node reconciles its runs.
   */
  recover?(): Promise<number>;
  /** Live sandboxes this driver holds right now (the compliance suite checks it drops to zero). */
  liveSandboxes(): number;
  /** Releases long-lived resources (worker pools). */
  close(): Promise<void>;
}
