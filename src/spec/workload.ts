import Type, { type Static } from 'typebox';

/** What a user asks to run. See ../shared/DESIGN.md, "Words". */
export const WorkloadKind = Type.Union(
  [Type.Literal('function'), Type.Literal('container'), Type.Literal('microvm'), Type.Literal('unikernel')],
  { description: 'function (wasm or js), container (OCI), microvm (kernel + rootfs), unikernel' },
);
export type WorkloadKind = Static<typeof WorkloadKind>;

/** The language of a `function` workload; inferred from the source bytes when absent. */
export const FunctionRuntime = Type.Union([Type.Literal('wasm'), Type.Literal('js')]);
export type FunctionRuntime = Static<typeof FunctionRuntime>;

/** Isolation levels, weakest first. A request for one level is met by that level or a stronger one. */
export const ISOLATION_LEVELS = ['language', 'process', 'container', 'vm'] as const;
export type IsolationLevel = (typeof ISOLATION_LEVELS)[number];
export const IsolationLevel = Type.Union([Type.Literal('language'), Type.Literal('process'), Type.Literal('container'), Type.Literal('vm')], {
  description: 'the least isolation acceptable: language < process < container < vm',
});

export const SHA256_PATTERN = '^sha256:[0-9a-f]{64}$';

/** Upper bound for inline sources and stdin that travel inside a JSON request (base64 grows 4/3). */
export const MAX_INLINE_BYTES = 32 * 1024 * 1024;

export const Source = Type.Union(
  [
    Type.Object(
      {
        inline: Type.String({ maxLength: Math.ceil((MAX_INLINE_BYTES * 4) / 3) + 4 }),
        encoding: Type.Optional(Type.Union([Type.Literal('utf8'), Type.Literal('base64')])),
      },
      { additionalProperties: false, description: 'the bytes themselves (utf8 text by default)' },
    ),
    Type.Object(
      { file: Type.String({ minLength: 1, maxLength: 4096 }) },
      { additionalProperties: false, description: "a path under one of the node's file roots" },
    ),
    Type.Object(
      { blob: Type.String({ pattern: SHA256_PATTERN }) },
      { additionalProperties: false, description: 'a content hash in the blob store' },
    ),
    Type.Object(
      {
        kernel: Type.String({ minLength: 1, maxLength: 4096, description: "a Linux bzImage under one of the node's file roots" }),
        initrd: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: "its initramfs (cpio, or compressed cpio) under one of the node's file roots" })),
        append: Type.Optional(Type.String({ maxLength: 2048, pattern: '^[ -~]*$', description: 'kernel arguments after vmesh\'s own (console=ttyS0 reboot=t panic=-1)' })),
        rootfs: Type.Optional(
          Type.String({
            minLength: 1,
            maxLength: 4096,
            description:
              "a raw disk image under one of the node's file roots, the guest's first disk (/dev/vda): writable, its writes kept in a copy-on-write layer that goes with the run (the file itself is never written); at most resources.diskMiB",
          }),
        ),
      },
      { additionalProperties: false, description: "microvm: the user's own kernel, initramfs and root disk; the console is the run's stdout, and powering off ends it" },
    ),
    Type.Object(
      { snapshot: Type.String({ pattern: SHA256_PATTERN }) },
      { additionalProperties: false, description: 'microvm: continue a captured microVM (`vmesh vm snapshot`) from its snapshot in the blob store' },
    ),
    Type.Object(
      { guest: Type.Literal('default') },
      { additionalProperties: false, description: "microvm: run `command` inside the node's default vmesh guest (kernel + busybox initramfs)" },
    ),
  ],
  { description: 'where the workload code comes from' },
);
export type Source = Static<typeof Source>;

export const NetworkResources = Type.Object(
  {
    egressMbps: Type.Optional(Type.Number({ minimum: 0, maximum: 400_000 })),
    ingressMbps: Type.Optional(Type.Number({ minimum: 0, maximum: 400_000 })),
  },
  { additionalProperties: false },
);

/** A sandbox's disk I/O limits: what its virtual disks may move per second, reads and writes together. */
export const DiskResources = Type.Object(
  {
    bps: Type.Optional(Type.Integer({ minimum: 65_536, maximum: 2 ** 40, description: 'bytes per second, reads and writes together (at least 64 KiB/s)' })),
    iops: Type.Optional(Type.Integer({ minimum: 10, maximum: 100_000_000, description: 'I/O operations per second, reads and writes together' })),
  },
  { additionalProperties: false, description: 'disk I/O limits of a microVM\'s virtual disks (drivers that have none refuse them)' },
);
export type DiskResources = Static<typeof DiskResources>;

export const LIMITS = {
  vcpus: { minimum: 0.01, maximum: 1024 },
  memoryMiB: { minimum: 1, maximum: 4 * 1024 * 1024 },
  diskMiB: { minimum: 0, maximum: 64 * 1024 * 1024 },
  timeoutMs: { minimum: 1, maximum: 7 * 24 * 3600 * 1000 },
} as const;

export const Resources = Type.Object(
  {
    vcpus: Type.Optional(Type.Number({ ...LIMITS.vcpus, description: 'virtual CPUs (fractions allowed)' })),
    memoryMiB: Type.Optional(Type.Integer({ ...LIMITS.memoryMiB, description: 'memory limit in MiB' })),
    diskMiB: Type.Optional(Type.Integer({ ...LIMITS.diskMiB, description: 'scratch disk in MiB' })),
    timeoutMs: Type.Optional(Type.Integer({ ...LIMITS.timeoutMs, description: 'wall-clock limit of the run' })),
    network: Type.Optional(NetworkResources),
    disk: Type.Optional(DiskResources),
  },
  { additionalProperties: false },
);
export type Resources = Static<typeof Resources>;

/** Resources with every field filled in: what the ledger reserves. */
export interface ResolvedResources {
  vcpus: number;
  memoryMiB: number;
  diskMiB: number;
  timeoutMs: number;
  network: { egressMbps: number; ingressMbps: number };
  /** Disk I/O limits, when the workload set any (not a ledger resource: nothing is reserved for them). */
  disk?: DiskResources;
}

/** How placement weighs its score terms; every weight 0..100, a term with weight 0 is left out. */
export const PlacementWeights = Type.Object(
  {
    resources: Type.Optional(Type.Number({ minimum: 0, maximum: 100, description: 'resource fit (bin-pack or spread)' })),
    proximity: Type.Optional(Type.Number({ minimum: 0, maximum: 100, description: 'measured round-trip time (or distance between declared locations)' })),
    reputation: Type.Optional(Type.Number({ minimum: 0, maximum: 100, description: 'the reputation this node holds of the candidate' })),
    load: Type.Optional(Type.Number({ minimum: 0, maximum: 100, description: 'runs active and queued per vCPU' })),
  },
  { additionalProperties: false },
);
export type PlacementWeights = Static<typeof PlacementWeights>;

export const PlacementStrategy = Type.Union([Type.Literal('binpack'), Type.Literal('spread')], {
  description: 'binpack: fill the fullest node that fits (keeps whole nodes free); spread: the emptiest',
});
export type PlacementStrategy = Static<typeof PlacementStrategy>;

const RegionName = Type.String({ minLength: 1, maxLength: 64 });

export const PlacementHints = Type.Object(
  {
    node: Type.Optional(Type.String({ minLength: 1, maxLength: 128, description: 'run on exactly this node' })),
    labels: Type.Optional(
      Type.Record(Type.String({ maxLength: 64 }), Type.String({ maxLength: 256 }), { maxProperties: 32, description: 'the node must carry each of these labels' }),
    ),
    region: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'the node must declare this region' })),
    regions: Type.Optional(Type.Array(RegionName, { minItems: 1, maxItems: 64, description: 'the node must declare one of these regions' })),
    excludeRegions: Type.Optional(Type.Array(RegionName, { minItems: 1, maxItems: 64, description: 'the node must not declare any of these regions' })),
    minReputation: Type.Optional(Type.Number({ minimum: 0, maximum: 1, description: "the least reputation (0..1) the requesting node must hold of the node" })),
    maxRttMs: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 60_000, description: 'the most round-trip time from the requesting node' })),
    strategy: Type.Optional(PlacementStrategy),
    weights: Type.Optional(PlacementWeights),
    queueTimeoutMs: Type.Optional(
      Type.Integer({ ...LIMITS.timeoutMs, description: "when no node has room free now: how long the run may wait in the queue of the node it goes to (default: that node's executor.queueTimeoutMs)" }),
    ),
  },
  { additionalProperties: false },
);
export type PlacementHints = Static<typeof PlacementHints>;

const IPV4_CIDR = '^(\\d{1,3}\\.){3}\\d{1,3}/\\d{1,2}$';

export const EgressRule = Type.Object(
  {
    cidr: Type.String({ pattern: IPV4_CIDR, description: 'IPv4 destination, e.g. 203.0.113.7/32' }),
    ports: Type.Optional(Type.Array(Type.Integer({ minimum: 1, maximum: 65_535 }), { minItems: 1, maxItems: 64 })),
    protocol: Type.Optional(Type.Union([Type.Literal('tcp'), Type.Literal('udp')])),
  },
  { additionalProperties: false },
);

export const PublishedPort = Type.Object(
  {
    guest: Type.Integer({ minimum: 1, maximum: 65_535, description: 'the port the workload listens on' }),
    protocol: Type.Optional(Type.Union([Type.Literal('tcp'), Type.Literal('udp')])),
  },
  { additionalProperties: false },
);

export const NetworkPolicy = Type.Object(
  {
    ports: Type.Optional(
      Type.Array(PublishedPort, { maxItems: 16, description: "ports reachable on the node's addresses (not 127.0.0.1) at host ports the run reports" }),
    ),
    egress: Type.Optional(
      Type.Union([Type.Literal('none'), Type.Literal('internet'), Type.Array(EgressRule, { maxItems: 256 })], {
        description: 'none (default): no network; internet: anything but other sandboxes and the host, behind NAT; or an allowlist',
      }),
    ),
  },
  { additionalProperties: false },
);

const EnvName = '^[A-Za-z_][A-Za-z0-9_]*$';
const RelativePath = '^(?!/)(?!.*(^|/)\\.\\.(/|$)).+$';

/** Caps on input files: how many, and how many bytes inline (blobs are capped by the run's diskMiB). */
export const MAX_INPUT_FILES = 256;

/** One input file. Exactly one of `inline` and `blob` (checked by the node, which names the field). */
export const InputFile = Type.Object(
  {
    path: Type.String({ pattern: RelativePath, minLength: 1, maxLength: 1024, description: 'where the file appears, relative to /in' }),
    inline: Type.Optional(Type.String({ maxLength: Math.ceil((MAX_INLINE_BYTES * 4) / 3) + 4, description: 'the bytes themselves' })),
    encoding: Type.Optional(Type.Union([Type.Literal('utf8'), Type.Literal('base64')], { description: 'of inline: utf8 text (default) or base64' })),
    blob: Type.Optional(Type.String({ pattern: SHA256_PATTERN, description: 'a content hash in the blob store' })),
  },
  { additionalProperties: false, description: 'a file the workload reads from /in (read-only)' },
);
export type InputFile = Static<typeof InputFile>;

/** The most nodes one verified run executes on. */
export const MAX_VERIFY_REPLICAS = 7;

/** The most nodes one run's outputs archive can be kept on. */
export const MAX_OUTPUT_REPLICAS = 8;

const OutputPaths = Type.Array(Type.String({ pattern: RelativePath, maxLength: 1024 }), {
  maxItems: 64,
  description: 'files or directories (relative to the sandbox scratch directory) returned as a tar with the result',
});

export const Workload = Type.Object(
  {
    kind: WorkloadKind,
    runtime: Type.Optional(FunctionRuntime),
    source: Source,
    entry: Type.Optional(
      Type.String({ minLength: 1, maxLength: 256, description: 'exported entry (wasm: _start, js: default)' }),
    ),
    name: Type.Optional(Type.String({ maxLength: 256, description: 'a human label shown by ps' })),
    command: Type.Optional(
      Type.Array(Type.String({ maxLength: 65_536 }), {
        minItems: 1,
        maxItems: 1024,
        description: 'container: the program and its arguments (replaces the image entrypoint and cmd)',
      }),
    ),
    workdir: Type.Optional(Type.String({ pattern: '^/', maxLength: 4096, description: 'container: working directory' })),
    args: Type.Optional(Type.Array(Type.String({ maxLength: 65_536 }), { maxItems: 1024 })),
    env: Type.Optional(
      Type.Record(Type.String({ pattern: EnvName, maxLength: 256 }), Type.String({ maxLength: 65_536 }), {
        maxProperties: 1024,
        additionalProperties: false,
      }),
    ),
    stdin: Type.Optional(Type.String({ maxLength: MAX_INLINE_BYTES, description: 'utf8 text fed to stdin' })),
    input: Type.Optional(Type.Unknown({ description: 'JSON input passed to a js function' })),
    inputs: Type.Optional(
      Type.Array(InputFile, { maxItems: MAX_INPUT_FILES, description: 'container, microvm, unikernel: files placed read-only under /in before the workload starts' }),
    ),
    readOnlyRoot: Type.Optional(
      Type.Boolean({ description: 'container: mount / read-only (only /tmp and /out writable); by default / is writable, through a layer of its own' }),
    ),
    unikernel: Type.Optional(
      Type.Object(
        {
          manifest: Type.Optional(
            Type.Record(Type.String({ pattern: '^[a-z][a-z0-9_]{0,63}$' }), Type.String({ maxLength: 1024 }), {
              maxProperties: 32,
              additionalProperties: false,
              description: 'options for the Nanos kernel, into the image\'s manifest (e.g. expected_exit_code, readonly_rootfs, exec_protection)',
            }),
          ),
        },
        { additionalProperties: false, description: 'unikernel: how its Nanos image is built' },
      ),
    ),
    resources: Type.Optional(Resources),
    isolation: Type.Optional(IsolationLevel),
    network: Type.Optional(NetworkPolicy),
    driver: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'use exactly this driver' })),
    placement: Type.Optional(PlacementHints),
    verify: Type.Optional(
      Type.Object(
        {
          replicas: Type.Optional(
            Type.Integer({
              minimum: 2,
              maximum: MAX_VERIFY_REPLICAS,
              description: 'run on this many distinct nodes and compare their results; the majority wins and a dissenter loses reputation',
            }),
          ),
          spotCheck: Type.Optional(
            Type.Boolean({
              description:
                'run on the best node and, as often as that node is new or little trusted (always below 3 outcomes seen, else 1 - reputation, at least 5%), on a second one too; a disagreement is settled by a third',
            }),
          ),
        },
        { additionalProperties: false, description: 'for deterministic workloads: how the result is verified (replicas or spotCheck)' },
      ),
    ),
    outputs: Type.Optional(
      Type.Union([
        OutputPaths,
        Type.Object(
          {
            paths: OutputPaths,
            replicas: Type.Optional(
              Type.Integer({
                minimum: 1,
                maximum: MAX_OUTPUT_REPLICAS,
                description: 'how many nodes keep the outputs archive, the executing node included (default 1); the run ends once they have it',
              }),
            ),
          },
          { additionalProperties: false },
        ),
      ]),
    ),
  },
  { additionalProperties: false },
);
export type Workload = Static<typeof Workload>;

/** The paths a workload declares as outputs, in either form of `outputs`. */
export function outputPaths(w: Pick<Workload, 'outputs'>): string[] {
  const o = w.outputs;
  return o === undefined ? [] : Array.isArray(o) ? o : o.paths;
}

/** How many nodes are to keep the workload's outputs archive (1: the executing node alone). */
export function outputReplicas(w: Pick<Workload, 'outputs'>): number {
  const o = w.outputs;
  return o === undefined || Array.isArray(o) ? 1 : (o.replicas ?? 1);
}
