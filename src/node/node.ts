import { randomBytes } from 'node:crypto';
import { mkdirSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { pino, type Logger } from 'pino';
import { BlobStore } from '../blobs/blob-store.ts';
import type { OutputSink } from '../outputs/pack.ts';
import { blobSink } from '../outputs/sink.ts';
import type { Driver } from '../drivers/driver.ts';
import { DriverRegistry, type DriverStatus } from '../drivers/registry.ts';
import {
  isTerminal,
  NodeStoppingError,
  OutputsNotFoundError,
  parseWorkload,
  RunFinishedError,
  RunNotFoundError,
  isVmeshError,
  outputPaths,
  ADVERT_FORMAT,
  type NodeAdvert,
  type NodeDescription,
  type Run,
  type Workload,
} from '../spec/index.ts';
import type { PlacementExplanation } from '../placement/index.ts';
import { signReceipt } from '../trust/receipt.ts';
import { Reputation } from '../trust/reputation.ts';
import { ReportBook, signReport, type CombinedReputation } from '../trust/reports.ts';
import { EnvelopeSigner } from '../trust/signer.ts';
import type { Envelope } from '../trust/envelope.ts';
import { startHostNetworking } from '../net/host.ts';
import type { NetworkManager } from '../net/sandbox-network.ts';
import { Store, type ListRunsQuery, type RunRecord } from '../store/store.ts';
import { hostCapacity } from './capacity.ts';
import { type NodeConfig } from './config.ts';
import { NodeEvents, type StateEvent } from './events.ts';
import { Executor } from './executor.ts';
import { Ledger, type Capacity } from './ledger.ts';
import { NodeMetrics } from './metrics.ts';
import { reconcile, type ReconcileReport } from './reconcile.ts';
import { type CopiesPlaced, type RemoteDispatch } from './remote.ts';
import { Dispatch } from './dispatch.ts';
import type { SubmitOptions } from './submit-options.ts';
import { admitRun } from './admission.ts';
export type { SubmitOptions } from './submit-options.ts';
import { loadOrCreateIdentity, type NodeIdentity } from '../mesh/identity.ts';
import { SNAPSHOT_WORK, storeSnapshot, type SnapshotInfo } from '../snapshots/snapshots.ts';
export type { SnapshotInfo } from '../snapshots/snapshots.ts';

import { VMESH_VERSION } from '../version.ts';
import { defaultDrivers, type DriverContext } from './default-drivers.ts';
export type { DriverContext } from './default-drivers.ts';

export interface NodeInfo {
  id: string;
  version: string;
  startedAt: string;
  capacity: Capacity;
  free: Capacity;
  reserved: Capacity;
  runs: { queued: number; active: number };
  drivers: DriverStatus[];
  /** Sandbox networking: whether this node has it, its address range, and if not, why not. */
  network: { available: boolean; range: string; reason?: string };
}

export interface NodeOptions {
  config: NodeConfig;
  logger?: Logger;
  /** Drivers in preference order; the default set is wasm and quickjs. */
  drivers?: (context: DriverContext) => Driver[];
}

/**
 * One vmesh node: drivers, ledger, executor and store behind a small API that the HTTP layer (and the
 * mesh, later) call. `start` reconciles what a previous process left before it takes new work.
 */
export class VmeshNode {
  readonly startedAt = new Date().toISOString();
  private stopping = false;
  /** Where every run's declared outputs are archived. */
  readonly outputSink: OutputSink;
  /** Work that follows a run's cleanup (removing a restored snapshot's files), awaited by `settled`. */
  private readonly afterRun = new Map<string, Promise<void>>();
  private remote: RemoteDispatch | undefined;
  /** How runs go to other nodes: placement, remote runs, failover, verification. */
  private dispatch: Dispatch;
  /** Signs this node's receipts. */
  private readonly signer: EnvelopeSigner;
  /** What this node has seen of its peers' work. */
  readonly reputation: Reputation;
  /** What other nodes report they have seen (the mesh fills it). */
  readonly reports = new ReportBook();

  readonly id: string;

  private constructor(
    readonly identity: NodeIdentity,
    readonly config: NodeConfig,
    readonly logger: Logger,
    readonly store: Store,
    readonly blobs: BlobStore,
    readonly ledger: Ledger,
    readonly registry: DriverRegistry,
    readonly executor: Executor,
    readonly events: NodeEvents,
    readonly metrics: NodeMetrics,
    readonly reconciled: ReconcileReport,
    private readonly networks: NetworkManager | undefined,
    private readonly networkReason: string | undefined,
  ) {
    this.id = identity.id;
    this.signer = new EnvelopeSigner(identity.privateKey, identity.id);
    this.reputation = new Reputation(store, config.trust.reputationHalfLifeMs, Date.now, identity.id);
    this.dispatch = new Dispatch(this, undefined);
    this.outputSink = blobSink(blobs, { maxBytes: config.limits.outputsArchiveBytes, inlineBytes: config.limits.inlineOutputBytes });
  }

  static async start(options: NodeOptions): Promise<VmeshNode> {
    const { config } = options;
    const logger = options.logger ?? pino({ level: config.logLevel });
    mkdirSync(config.home, { recursive: true, mode: 0o700 });
    const sandboxRoot = path.join(config.home, 'sandboxes');
    mkdirSync(sandboxRoot, { recursive: true, mode: 0o700 });
    const store = new Store(path.join(config.home, 'vmesh.db'), (err) => logger.error({ err }, 'a store write failed'));
    try {
      const identity = await loadOrCreateIdentity(config.home);
      const id = identity.id;
      const previous = store.getConfig('node_id');
      if (previous !== id) {
        if (previous !== undefined) logger.warn({ previous, nodeId: id }, 'the store belonged to another node id; it now takes the id of identity.key');
        store.setConfig('node_id', id);
      }
      const host = await startHostNetworking(id, config.network.range, store, logger, config.network.dns);
      if (host.reason !== undefined) logger.info({ reason: host.reason }, 'sandboxes get no network on this node');
      const registry = new DriverRegistry((options.drivers ?? defaultDrivers)({ nodeId: id, config, sandboxRoot, networks: host.networks }), config.drivers.preference);
      await registry.probeAll();
      // Drivers first (containers hold mounts inside sandbox directories), then the runs and directories.
      const recovered = await registry.recoverAll();
      const reconciled = await reconcile(store, sandboxRoot);
      if (reconciled.lost.length > 0 || recovered > 0) {
        logger.warn({ lost: reconciled.lost, recovered }, 'runs left live by the previous process are now lost');
      }
      const ledger = new Ledger(hostCapacity(config.home, config.capacity));
      const metrics = new NodeMetrics();
      const events = new NodeEvents();
      const executor = new Executor({
        nodeId: id,
        store,
        ledger,
        events,
        metrics,
        logger,
        maxConcurrent: config.executor.maxConcurrent,
        queueLimit: config.executor.queueLimit,
        queueTimeoutMs: config.executor.queueTimeoutMs,
        signReceipt: (run, context): Envelope => signReceipt(node.signer, run, context),
        corruptResults: config.testing.corruptResults,
        // Called only after a run, by which time `node` exists and the mesh, if any, is attached.
        keepCopies: async (hash, copies, signal): Promise<CopiesPlaced> => {
          if (node.remote === undefined) throw new Error('this node is in no mesh (started with --no-mesh)');
          return node.remote.keepCopies(hash, copies, signal);
        },
      });
      const blobs = new BlobStore(path.join(config.home, 'blobs'), { maxBytes: config.limits.blobStoreBytes });
      await blobs.clearIncoming();
      await fs.rm(path.join(config.home, SNAPSHOT_WORK), { recursive: true, force: true });
      const node = new VmeshNode(identity, config, logger, store, blobs, ledger, registry, executor, events, metrics, reconciled, host.networks, host.reason);
      node.refreshGauges();
      logger.info({ nodeId: id, capacity: ledger.capacity, drivers: registry.list().map((d) => `${d.name}:${d.probe.available ? 'ok' : 'no'}`) }, 'node started');
      return node;
    } catch (err) {
      store.close();
      throw err;
    }
  }

  /**
   * Validates a workload and queues it as a run. Everything that can be known to be wrong is refused
   * here with a typed error (nothing is created): the spec, the resources against the node's capacity,
   * the source, and whether any driver can run it.
   */
  async submit(input: unknown): Promise<Run> {
    let workload: Workload;
    try {
      workload = parseWorkload(input);
    } catch (err) {
      this.metrics.runsRejected.inc({ code: isVmeshError(err) ? err.code : 'internal' });
      throw err;
    }
    return this.submitValid(workload);
  }

  /**
   * `submit` for a workload already checked against the Workload schema (the API validates bodies with
   * it). `placement.node` naming another node sends the run there; otherwise, in a mesh, placement chooses
   * the node (this one included). Either way this node stores the run and follows it.
   */
  async submitValid(submitted: Workload, options: SubmitOptions = {}): Promise<Run> {
    if (this.stopping) throw new NodeStoppingError('the node is shutting down');
    const target = submitted.placement?.node;
    if (options.local !== true) {
      if (target !== undefined && target !== this.id) {
        return this.dispatch.sendTo(target, submitted, { placement: { node: target, summary: 'named by placement.node', tried: [] } });
      }
      if (submitted.verify !== undefined) return this.dispatch.verified(submitted, options);
      // A node alone runs everything itself, and says exactly why it cannot (no_driver, capacity_exceeded).
      // Restores stay where they are asked for: a snapshot loads only under the QEMU and accelerator that took it.
      if (target === undefined && !('snapshot' in submitted.source) && this.dispatch.hasPeers) return this.dispatch.placed(submitted, options);
    }
    if (options.explain === true && options.placement === undefined) {
      // Nothing to choose between, but the caller asked why: this node is the only candidate.
      const explanation = this.dispatch.explain(submitted);
      return this.submitHere(submitted, { ...options, placement: { node: this.id, summary: explanation.summary, tried: [], explanation } });
    }
    return this.submitHere(submitted, options);
  }

  /** Validates and queues a run on this node (the dispatch calls it for the runs placement puts here). */
  submitHere(submitted: Workload, options: SubmitOptions): Promise<Run> {
    return admitRun(this, submitted, options);
  }

  /** Lets the node send runs to, and fetch blobs from, other nodes (the mesh calls this once it is up). */
  attachRemote(remote: RemoteDispatch): void {
    this.remote = remote;
    this.dispatch = new Dispatch(this, remote);
  }

  /** Where placement would put a workload, and why: every node, every filter's verdict, every score term. */
  explainPlacement(workload: Workload): PlacementExplanation {
    return this.dispatch.explain(workload);
  }

  /** The reputation this node holds of a peer: its own observations, with the reports of peers it trusts. */
  peerReputation(peer: string): CombinedReputation {
    return this.dispatch.peerReputation(peer);
  }

  /** Signs this node's reputation report (the mesh publishes it). */
  signReport(seq: number): Envelope {
    return signReport(this.signer, this.reputation, seq);
  }

  /** Freezes a running run's sandbox (its resources stay reserved; its timeout keeps counting). */
  async pause(id: string): Promise<Run> {
    this.getRecord(id);
    return this.toPublic(await this.executor.pause(id));
  }

  async resume(id: string): Promise<Run> {
    this.getRecord(id);
    return this.toPublic(await this.executor.resume(id));
  }

  /**
   * Captures a running or paused run's whole sandbox into the blob store and leaves the run paused (resume
   * it to go on, or cancel it). The snapshot's id is the hash of its index; `source: { snapshot: id }`
   * continues it, on this node or on any node that holds its blobs.
   */
  async snapshot(id: string, signal?: AbortSignal): Promise<SnapshotInfo> {
    const record = this.getRecord(id);
    const dir = path.join(this.config.home, SNAPSHOT_WORK, `capture-${id}-${randomBytes(4).toString('hex')}`);
    await fs.mkdir(path.dirname(dir), { recursive: true, mode: 0o700 });
    try {
      const started = performance.now();
      const run = await this.executor.snapshot(id, dir, signal);
      const stored = await storeSnapshot(dir, this.blobs, { driver: run.driver ?? '', kind: record.spec.kind, run: id, resources: record.resources });
      this.logger.info({ runId: id, snapshot: stored.id, bytes: stored.index.bytes, ms: Math.round(performance.now() - started) }, 'snapshot taken');
      return { snapshot: stored.id, run: this.toPublic(run), bytes: stored.index.bytes, files: stored.index.files };
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  }

  /** Where the tar of a run's declared outputs lies in the blob store, once the run has ended. */
  async outputsArchive(id: string): Promise<{ file: string; blob: string; bytes: number }> {
    const run = this.store.getRun(id);
    if (run === undefined) throw new RunNotFoundError(id);
    const archive = run.result?.outputsArchive;
    if (archive === undefined) {
      const why = !isTerminal(run.state) ? `it is ${run.state}` : outputPaths(run.spec).length > 0 ? 'its sandbox ended before they were collected' : 'it declared no outputs';
      throw new OutputsNotFoundError(`run ${id} has no outputs archive: ${why}`, { field: 'id' });
    }
    // Not here (the run executed elsewhere, or this copy was evicted): fetch it from the mesh, asking the
    // node that ran it and those that keep copies first.
    if (this.remote !== undefined && !(await this.blobs.has(archive.blob))) {
      const hints = [run.nodeId, ...(archive.copies?.nodes ?? [])].filter((n): n is string => n !== undefined && n !== this.id);
      await this.remote.fetchBlob(archive.blob, [...new Set(hints)]).catch(() => undefined);
    }
    const file = await this.blobs.fileOf(archive.blob);
    if (file === undefined) throw new OutputsNotFoundError(`run ${id}: this node no longer holds its outputs archive ${archive.blob}`, { field: 'id' });
    return { file, blob: archive.blob, bytes: archive.bytes };
  }

  getRun(id: string): Run {
    const record = this.store.getRun(id);
    if (record === undefined) throw new RunNotFoundError(id);
    return this.toPublic(record);
  }

  getRecord(id: string): RunRecord {
    const record = this.store.getRun(id);
    if (record === undefined) throw new RunNotFoundError(id);
    return record;
  }

  listRuns(query: ListRunsQuery = {}): Run[] {
    return this.store.listRuns(query).map((r) => this.toPublic(r));
  }

  /** Resolves with the run once it has reached a terminal state. */
  async waitFor(id: string, signal?: AbortSignal): Promise<Run> {
    const current = this.executor.record(id) ?? this.getRecord(id);
    if (isTerminal(current.state)) return this.toPublic(current);
    return new Promise<Run>((resolve, reject) => {
      const onState = (e: StateEvent) => {
        if (e.runId !== id || !isTerminal(e.state)) return;
        done();
        resolve(e.run === undefined ? this.getRun(id) : this.toPublic(e.run));
      };
      const onAbort = () => {
        done();
        reject(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
      };
      const done = () => {
        this.events.off('state', onState);
        signal?.removeEventListener('abort', onAbort);
      };
      this.events.on('state', onState);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Runs `work` once the run's sandbox is cleaned up, with its final record; `settled` waits for it too. */
  afterSettled(id: string, work: (ended: RunRecord | undefined) => Promise<void> | void): void {
    this.afterRun.set(id, this.executor.settled(id).then(work).finally(() => this.afterRun.delete(id)));
  }

  /** Resolves once a run is over and every resource it held is released (results come out before that). */
  async settled(id: string): Promise<void> {
    await this.executor.settled(id);
    await this.afterRun.get(id);
  }

  cancel(id: string): Run {
    const run = this.getRun(id);
    if (isTerminal(run.state)) throw new RunFinishedError(`run ${id} has already ended (${run.state}); there is nothing to cancel`, { field: 'id' });
    this.executor.cancel(id);
    return this.getRun(id);
  }

  /** What this node says about itself in its adverts. */
  describe(): NodeDescription {
    const info = this.info();
    return {
      version: info.version,
      drivers: info.drivers.map((d) => ({
        name: d.name,
        kinds: d.kinds as NodeDescription['drivers'][number]['kinds'],
        isolation: d.isolation,
        available: d.probe.available,
        ...(d.probe.version === undefined ? {} : { version: d.probe.version.slice(0, 128) }),
      })),
      capacity: info.capacity,
      free: info.free,
      runs: info.runs,
    };
  }

  /** This node's advert as it stands, unsigned (what placement knows of this node, and `vmesh nodes` without a mesh). */
  soloAdvert(): NodeAdvert {
    const now = Date.now();
    const advert: NodeAdvert = { format: ADVERT_FORMAT, node: this.id, seq: now, issuedAt: new Date(now).toISOString(), addresses: [], labels: this.config.mesh.labels, ...this.describe() };
    if (this.config.mesh.location !== undefined) advert.location = this.config.mesh.location;
    return advert;
  }

  info(): NodeInfo {
    this.refreshGauges();
    return {
      id: this.id,
      version: VMESH_VERSION,
      startedAt: this.startedAt,
      capacity: this.ledger.capacity,
      free: this.ledger.free(),
      reserved: this.ledger.reserved(),
      runs: { queued: this.executor.queued, active: this.executor.running },
      drivers: this.registry.list(),
      network: {
        available: this.networks !== undefined,
        range: this.config.network.range,
        ...(this.networkReason === undefined ? {} : { reason: this.networkReason }),
      },
    };
  }

  refreshGauges(): void {
    const free = this.ledger.free();
    for (const [k, v] of Object.entries(this.ledger.capacity)) this.metrics.capacity.set({ resource: k }, v);
    for (const [k, v] of Object.entries(free)) this.metrics.free.set({ resource: k }, v);
  }

  /** Stops taking work, cancels what is live and waits until every sandbox is cleaned up. */
  async drain(): Promise<void> {
    this.stopping = true;
    await this.executor.stop();
  }

  /** Drains, then releases the drivers and closes the store. */
  async stop(): Promise<void> {
    if (this.store.db.open === false) return;
    await this.drain();
    await this.registry.close();
    await this.networks?.close();
    this.store.close();
  }

  /** A stored run as the API shows it: without its spec, with its queue position while queued. */
  toPublic(record: RunRecord): Run {
    const { spec: _spec, ...run } = record;
    if (record.state === 'queued') {
      const position = this.executor.position(record.id);
      if (position !== undefined) (run as Run).queuePosition = position;
    }
    return run;
  }
}

