import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Type, { type Static } from 'typebox';
import type { JailerOptions } from '../drivers/firecracker/jailer.ts';
import type { IdMap } from '../drivers/oci/user-namespace.ts';
import { DEFAULT_SANDBOX_RANGE } from '../net/host.ts';
import { DEFAULT_MESH_PORT, DEFAULT_PORT, defaultHome } from './home.ts';
import { InvalidInputError, NodeLabels, NodeLocation, PlacementStrategy, PlacementWeights, validator, type ResolvedResources, type Workload, type WorkloadKind } from '../spec/index.ts';
import { DEFAULT_POLICY, type PlacementPolicy } from '../placement/policy.ts';

const MeshSettings = Type.Object(
  {
    enabled: Type.Optional(Type.Boolean({ description: 'join a mesh at all (default true); false keeps the node to itself' })),
    listen: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 256 }), { maxItems: 16, description: 'multiaddrs to listen on, e.g. /ip4/0.0.0.0/tcp/7421' })),
    join: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 512 }), { maxItems: 64, description: 'bootstrap peers: multiaddrs ending in /p2p/<node id>' })),
    mdns: Type.Optional(Type.Boolean({ description: 'find peers on the local network by multicast DNS (default false)' })),
    advertIntervalMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 3_600_000, description: 'how often the node re-publishes its advert' })),
    peerTtlMs: Type.Optional(Type.Integer({ minimum: 300, maximum: 86_400_000, description: 'a peer whose adverts stop for this long leaves the membership' })),
    pingIntervalMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 3_600_000, description: 'how often each peer\'s round-trip time is measured' })),
    banMs: Type.Optional(Type.Integer({ minimum: 1000, maximum: 30 * 86_400_000, description: 'how long a peer that broke the protocol is refused' })),
    keepCopiesForMs: Type.Optional(
      Type.Integer({ minimum: 1000, maximum: 365 * 86_400_000, description: 'how long a copy that another node asked this node to keep is safe from eviction (default 7 days)' }),
    ),
    // At most half of the 60 s an executing node waits on a stream for its next run (SERVER_IDLE_MS).
    keepRunStreamsMs: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 30_000, description: 'how long a stream to another node is kept between runs for the next run there (0: closed after each run)' }),
    ),
    stateBatchMs: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 1000, description: 'how long a run this node executes for another holds its state changes to send them together (default 20; a run that ends sooner sends only its end)' }),
    ),
    inboundConnectionsPerSecond: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 100_000, description: 'new connections taken per second from one IP address (libp2p refuses the rest)' }),
    ),
    blobLane: Type.Optional(
      Type.Boolean({ description: 'send and take blobs over the blob lane, TLS on a port of its own beside the mesh connection (default true); false: over the mesh connection only' }),
    ),
    blobLanePort: Type.Optional(Type.Integer({ minimum: 0, maximum: 65_535, description: 'the blob lane\'s TCP port on each address in listen (default 0: any free port)' })),
    labels: Type.Optional(NodeLabels),
    location: Type.Optional(NodeLocation),
  },
  { additionalProperties: false },
);

export interface MeshConfig {
  enabled: boolean;
  listen: string[];
  join: string[];
  mdns: boolean;
  advertIntervalMs: number;
  peerTtlMs: number;
  pingIntervalMs: number;
  banMs: number;
  keepCopiesForMs: number;
  keepRunStreamsMs: number;
  inboundConnectionsPerSecond: number;
  stateBatchMs: number;
  blobLane: boolean;
  blobLanePort: number;
  labels: Record<string, string>;
  location?: Static<typeof NodeLocation>;
}

const CapacityOverrides = Type.Object(
  {
    vcpus: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
    memoryMiB: Type.Optional(Type.Integer({ minimum: 1 })),
    diskMiB: Type.Optional(Type.Integer({ minimum: 0 })),
    egressMbps: Type.Optional(Type.Number({ minimum: 0 })),
    ingressMbps: Type.Optional(Type.Number({ minimum: 0 })),
  },
  { additionalProperties: false },
);

const DriverSettings = Type.Object(
  {
    preference: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 64 }), {
        maxItems: 32,
        description: 'drivers to try first, in order, among those that run a kind (default firecracker, cloud-hypervisor, qemu); the rest keep their order after them',
      }),
    ),
    firecracker: Type.Optional(
      Type.Object(
        {
          binary: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: 'the firecracker binary (default: firecracker on PATH)' })),
          kernel: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: 'an uncompressed vmlinux built with Firecracker\'s recommended guest config; relative to the node\'s home' })),
          jailer: Type.Optional(
            Type.Object(
              {
                binary: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: 'the jailer binary of the same release as firecracker (default: jailer on PATH)' })),
                uid: Type.Integer({ minimum: 1, maximum: 2 ** 32 - 2, description: 'the first of the unprivileged users jailed Firecrackers run as, one per live jail' }),
                gid: Type.Integer({ minimum: 1, maximum: 2 ** 32 - 2, description: 'the first of their groups' }),
                ids: Type.Optional(Type.Integer({ minimum: 1, maximum: 65536, description: 'how many users and groups from uid and gid (default 256): how many jailed VMs at once' })),
              },
              { additionalProperties: false, description: 'run each Firecracker under its jailer (a chroot, a mount namespace and a user of its own); the node must be root' },
            ),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    cloudHypervisor: Type.Optional(
      Type.Object(
        { binary: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: 'the cloud-hypervisor binary (default: cloud-hypervisor on PATH)' })) },
        { additionalProperties: false },
      ),
    ),
    nanos: Type.Optional(
      Type.Object(
        { ops: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: 'the ops binary that builds unikernel images (default: ops on PATH)' })) },
        { additionalProperties: false },
      ),
    ),
    oci: Type.Optional(
      Type.Object(
        {
          userNamespace: Type.Optional(
            Type.Union(
              [
                Type.Literal(false),
                Type.Object(
                  {
                    hostId: Type.Integer({ minimum: 1, maximum: 2 ** 32 - 2, description: 'the host id that container root (id 0) maps onto' }),
                    size: Type.Integer({ minimum: 1, maximum: 2 ** 31, description: 'how many ids the range holds (65536 covers what images use)' }),
                  },
                  { additionalProperties: false },
                ),
              ],
              {
                description:
                  'each container\'s user namespace: its ids onto host ids hostId..hostId+size-1 (default 1610612736, 65536 ids, where the host allows), or false for none',
              },
            ),
          ),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
);

/** The microVM drivers in the order a microvm run tries them unless the operator says otherwise. */
export const DEFAULT_DRIVER_PREFERENCE = ['firecracker', 'cloud-hypervisor', 'qemu'] as const;

export interface DriversConfig {
  preference: string[];
  firecracker: { binary?: string; kernel?: string; jailer?: JailerOptions };
  cloudHypervisor: { binary?: string };
  nanos: { ops?: string };
  oci: { userNamespace?: IdMap | false };
}

/** `$VMESH_HOME/config.json`: every field optional; command-line flags override it. */
export const ConfigFile = Type.Object(
  {
    api: Type.Optional(
      Type.Object(
        { host: Type.Optional(Type.String()), port: Type.Optional(Type.Integer({ minimum: 0, maximum: 65535 })) },
        { additionalProperties: false },
      ),
    ),
    capacity: Type.Optional(CapacityOverrides),
    executor: Type.Optional(
      Type.Object(
        {
          maxConcurrent: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
          queueLimit: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000_000 })),
          queueTimeoutMs: Type.Optional(Type.Integer({ minimum: 1 })),
        },
        { additionalProperties: false },
      ),
    ),
    limits: Type.Optional(
      Type.Object(
        {
          outputBytes: Type.Optional(Type.Integer({ minimum: 1, maximum: 256 * 2 ** 20, description: 'bytes kept of each of stdout and stderr' })),
          inlineOutputBytes: Type.Optional(
            Type.Integer({ minimum: 0, maximum: 64 * 2 ** 20, description: 'output files returned inline in the result, in total' }),
          ),
          outputsArchiveBytes: Type.Optional(
            Type.Integer({ minimum: 1024, maximum: 4 * 2 ** 30, description: 'cap on the tar of a run\'s declared outputs' }),
          ),
          requestBytes: Type.Optional(Type.Integer({ minimum: 1024, maximum: 1024 * 2 ** 20 })),
          blobBytes: Type.Optional(Type.Integer({ minimum: 1024, maximum: 2 ** 50, description: 'the largest blob this node takes from a client or a peer' })),
          blobStoreBytes: Type.Optional(
            Type.Integer({ minimum: 1024, maximum: 2 ** 50, description: 'the most bytes the blob store keeps; least recently used blobs are evicted beyond it' }),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    workers: Type.Optional(Type.Integer({ minimum: 1, maximum: 256, description: 'worker threads per function driver' })),
    workerIdleMs: Type.Optional(Type.Integer({ minimum: 1, description: 'an idle worker thread ends after this long' })),
    fileRoots: Type.Optional(Type.Array(Type.String({ minLength: 1 }))),
    network: Type.Optional(
      Type.Object(
        {
          range: Type.Optional(Type.String({ pattern: '^(\\d{1,3}\\.){3}\\d{1,3}/\\d{1,2}$', description: 'IPv4 range sandbox links are cut from' })),
          dns: Type.Optional(
            Type.Array(Type.String({ pattern: '^(\\d{1,3}\\.){3}\\d{1,3}$' }), {
              maxItems: 3,
              description: "IPv4 name servers of sandboxes that have egress (default: the host's resolv.conf, without loopback ones)",
            }),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    mesh: Type.Optional(MeshSettings),
    drivers: Type.Optional(DriverSettings),
    placement: Type.Optional(
      Type.Object(
        {
          strategy: Type.Optional(PlacementStrategy),
          weights: Type.Optional(PlacementWeights),
          minReputation: Type.Optional(Type.Number({ minimum: 0, maximum: 1, description: 'nodes held below this reputation get no work' })),
          jitter: Type.Optional(Type.Number({ minimum: 0, maximum: 1, description: 'size of the random tie-break between nodes that score alike' })),
          attempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 64, description: 'nodes asked in turn before a run is refused, and nodes a run may go to when it loses one' })),
          heartbeatMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 600_000, description: 'how often the node running a placed run says it is there' })),
          heartbeatTimeoutMs: Type.Optional(Type.Integer({ minimum: 200, maximum: 3_600_000, description: 'a node silent this long is taken for gone and its run placed again' })),
          backoffMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 600_000, description: 'wait before placing a run again (doubled each time)' })),
        },
        { additionalProperties: false },
      ),
    ),
    trust: Type.Optional(
      Type.Object(
        {
          reputationHalfLifeMs: Type.Optional(Type.Integer({ minimum: 1000, description: 'what a node observed of a peer counts half as much after this long' })),
          reportIntervalMs: Type.Optional(Type.Integer({ minimum: 500, maximum: 86_400_000, description: 'how often the node publishes its signed reputation report' })),
        },
        { additionalProperties: false },
      ),
    ),
    testing: Type.Optional(
      Type.Object(
        {
          corruptResults: Type.Optional(
            Type.Boolean({ description: 'TEST ONLY: this node lies about every result it returns (and signs the lie), so that tests can show verification catching it' }),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    logLevel: Type.Optional(
      Type.Union([
        Type.Literal('fatal'),
        Type.Literal('error'),
        Type.Literal('warn'),
        Type.Literal('info'),
        Type.Literal('debug'),
        Type.Literal('trace'),
        Type.Literal('silent'),
      ]),
    ),
  },
  { additionalProperties: false },
);
export type ConfigFile = Static<typeof ConfigFile>;
export { DEFAULT_PORT, defaultHome } from './home.ts';

export interface NodeConfig {
  home: string;
  api: { host: string; port: number };
  capacity: Static<typeof CapacityOverrides>;
  executor: { maxConcurrent: number; queueLimit: number; queueTimeoutMs: number };
  limits: { outputBytes: number; inlineOutputBytes: number; outputsArchiveBytes: number; requestBytes: number; blobBytes: number; blobStoreBytes: number };
  workers: number;
  workerIdleMs: number;
  fileRoots: string[];
  network: { range: string; dns?: string[] };
  mesh: MeshConfig;
  drivers: DriversConfig;
  placement: PlacementPolicy & { attempts: number; heartbeatMs: number; heartbeatTimeoutMs: number; backoffMs: number };
  trust: { reputationHalfLifeMs: number; reportIntervalMs: number };
  testing: { corruptResults: boolean };
  logLevel: string;
}

/** Resources a run gets for each field it leaves out. Functions are small by default. */
export function defaultResources(kind: WorkloadKind): ResolvedResources {
  return kind === 'function'
    ? { vcpus: 0.1, memoryMiB: 64, diskMiB: 16, timeoutMs: 30_000, network: { egressMbps: 0, ingressMbps: 0 } }
    : { vcpus: 1, memoryMiB: 256, diskMiB: 1024, timeoutMs: 300_000, network: { egressMbps: 0, ingressMbps: 0 } };
}

const parseConfigFile = validator(ConfigFile, 'config');

/** Reads `$home/config.json` (if any) and applies `overrides` on top. */
export function loadConfig(home: string = defaultHome(), overrides: ConfigFile = {}): NodeConfig {
  const file = path.join(home, 'config.json');
  let fromFile: ConfigFile = {};
  if (existsSync(file)) {
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new InvalidInputError(`${file} is not valid JSON: ${(err as Error).message}`, { field: 'config' });
    }
    fromFile = parseConfigFile(raw);
  }
  parseConfigFile(overrides);
  const pick = <K extends keyof ConfigFile>(k: K): ConfigFile[K] => overrides[k] ?? fromFile[k];
  return {
    home,
    api: { host: '127.0.0.1', port: DEFAULT_PORT, ...fromFile.api, ...overrides.api },
    capacity: { ...fromFile.capacity, ...overrides.capacity },
    executor: { maxConcurrent: 256, queueLimit: 10_000, queueTimeoutMs: 60_000, ...fromFile.executor, ...overrides.executor },
    limits: { outputBytes: 1 * 2 ** 20, inlineOutputBytes: 1 * 2 ** 20, outputsArchiveBytes: 256 * 2 ** 20, requestBytes: 48 * 2 ** 20, blobBytes: 16 * 2 ** 30, blobStoreBytes: 64 * 2 ** 30, ...fromFile.limits, ...overrides.limits },
    workers: pick('workers') ?? Math.max(2, os.availableParallelism()),
    workerIdleMs: pick('workerIdleMs') ?? 30_000,
    fileRoots: (pick('fileRoots') ?? []).map((r) => path.resolve(home, r)),
    network: { range: DEFAULT_SANDBOX_RANGE, ...fromFile.network, ...overrides.network },
    mesh: meshConfig({ ...fromFile.mesh, ...overrides.mesh }),
    drivers: driversConfig(home, { ...fromFile.drivers, ...overrides.drivers }),
    placement: placementConfig({ ...fromFile.placement, ...overrides.placement }),
    trust: { reputationHalfLifeMs: 24 * 3600 * 1000, reportIntervalMs: 60_000, ...fromFile.trust, ...overrides.trust },
    testing: { corruptResults: false, ...fromFile.testing, ...overrides.testing },
    logLevel: pick('logLevel') ?? 'info',
  };
}

function driversConfig(home: string, d: Static<typeof DriverSettings>): DriversConfig {
  const kernel = d.firecracker?.kernel;
  return {
    preference: d.preference ?? [...DEFAULT_DRIVER_PREFERENCE],
    firecracker: { ...d.firecracker, ...(kernel === undefined ? {} : { kernel: path.resolve(home, kernel) }) },
    cloudHypervisor: { ...d.cloudHypervisor },
    nanos: { ...d.nanos },
    oci: { ...d.oci },
  };
}

function placementConfig(p: NonNullable<ConfigFile['placement']>): NodeConfig['placement'] {
  return {
    strategy: p.strategy ?? DEFAULT_POLICY.strategy,
    weights: { ...DEFAULT_POLICY.weights, ...p.weights },
    minReputation: p.minReputation ?? DEFAULT_POLICY.minReputation,
    jitter: p.jitter ?? DEFAULT_POLICY.jitter,
    attempts: p.attempts ?? 3,
    heartbeatMs: p.heartbeatMs ?? 2000,
    heartbeatTimeoutMs: p.heartbeatTimeoutMs ?? 10_000,
    backoffMs: p.backoffMs ?? 500,
  };
}

function meshConfig(m: Static<typeof MeshSettings>): MeshConfig {
  const { location, ...rest } = m;
  const config: MeshConfig = {
    enabled: true,
    listen: [`/ip4/127.0.0.1/tcp/${DEFAULT_MESH_PORT}`],
    join: [],
    mdns: false,
    advertIntervalMs: 10_000,
    peerTtlMs: 35_000,
    pingIntervalMs: 5_000,
    banMs: 3_600_000,
    keepCopiesForMs: 7 * 86_400_000,
    keepRunStreamsMs: 20_000,
    inboundConnectionsPerSecond: 5,
    // A short run's three state frames spared for 20 ms of delay on a longer run's states (src/mesh/run-server.ts).
    stateBatchMs: 20,
    blobLane: true,
    blobLanePort: 0,
    labels: {},
    ...rest,
  };
  if (location !== undefined) config.location = location;
  return config;
}

/** Fills every resource the workload left out with its kind's default. */
export function resolveResources(w: Workload): ResolvedResources {
  const d = defaultResources(w.kind);
  const r = w.resources ?? {};
  return {
    vcpus: r.vcpus ?? d.vcpus,
    memoryMiB: r.memoryMiB ?? d.memoryMiB,
    diskMiB: r.diskMiB ?? d.diskMiB,
    timeoutMs: r.timeoutMs ?? d.timeoutMs,
    network: {
      egressMbps: r.network?.egressMbps ?? d.network.egressMbps,
      ingressMbps: r.network?.ingressMbps ?? d.network.ingressMbps,
    },
    ...(r.disk === undefined || (r.disk.bps === undefined && r.disk.iops === undefined) ? {} : { disk: { ...r.disk } }),
  };
}
