import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { BlobStore } from '../blobs/blob-store.ts';
import { sha256 } from '../blobs/blob-store.ts';
import type { SandboxRequest } from '../drivers/driver.ts';
import type { DriverRegistry } from '../drivers/registry.ts';
import type { OutputSink } from '../outputs/pack.ts';
import { materializeSnapshot, readSnapshotIndex, SNAPSHOT_WORK, type SnapshotIndex } from '../snapshots/snapshots.ts';
import { InvalidInputError, isVmeshError, NoRoomError, RunExistsError, type Run, type Workload } from '../spec/index.ts';
import type { Store, RunRecord } from '../store/store.ts';
import { canonicalHash } from '../trust/canonical.ts';
import type { ReceiptContext } from '../trust/receipt.ts';
import { resolveResources, type NodeConfig } from './config.ts';
import type { Executor } from './executor.ts';
import { resolveInputs, storedInputs } from './inputs.ts';
import type { Ledger } from './ledger.ts';
import type { NodeMetrics } from './metrics.ts';
import { blobsOf } from './remote.ts';
import { newRunId } from './run-id.ts';
import { resolveSource } from './source.ts';
import type { SubmitOptions } from './submit-options.ts';

/** What admitting a run needs of the node. */
export interface AdmissionContext {
  readonly id: string;
  readonly config: NodeConfig;
  readonly store: Store;
  readonly blobs: BlobStore;
  readonly ledger: Ledger;
  readonly registry: DriverRegistry;
  readonly executor: Executor;
  readonly metrics: NodeMetrics;
  readonly outputSink: OutputSink;
  afterSettled(id: string, work: (ended: RunRecord | undefined) => Promise<void> | void): void;
  toPublic(record: RunRecord): Run;
}

/**
 * Admits a validated workload as a run of this node: a snapshot's driver and resources, the ledger's
 * verdict, the source and input files resolved, the driver chosen and asked, the spec stored by hash,
 * and the run handed to the executor. Everything it held (blobs, a restore directory) is let go when
 * the run has settled, or at once when it is refused; a refusal is counted by its code.
 */
export async function admitRun(node: AdmissionContext, submitted: Workload, options: SubmitOptions): Promise<Run> {
  const specHash = canonicalHash(submitted);
  // What the run reads from the blob store stays there until its cleanup is over.
  const holds = [await node.blobs.hold(blobsOf(submitted))];
  let restoreDir: string | undefined;
  try {
    let workload = submitted;
    let snapshot: SnapshotIndex | undefined;
    if ('snapshot' in workload.source) {
      // A restore runs on the driver that took the snapshot, with what its run had reserved.
      snapshot = await readSnapshotIndex(workload.source.snapshot, node.blobs);
      holds.push(await node.blobs.hold(Object.values(snapshot.files)));
      if (workload.kind !== snapshot.kind) throw new InvalidInputError(`kind: the snapshot is of a ${snapshot.kind}, not a ${workload.kind}`, { field: 'kind' });
      if (workload.driver !== undefined && workload.driver !== snapshot.driver) {
        throw new InvalidInputError(`driver: the snapshot was taken by the ${snapshot.driver} driver and only it can load it`, { field: 'driver' });
      }
      const timeoutMs = workload.resources?.timeoutMs ?? snapshot.resources.timeoutMs;
      workload = { ...workload, driver: snapshot.driver, resources: { ...snapshot.resources, timeoutMs } };
    }
    const resources = resolveResources(workload);
    node.ledger.checkFits(resources);
    if (options.mustFitNow === true && (!node.ledger.fitsNow(resources) || node.executor.queued > 0)) {
      const free = node.ledger.free();
      throw new NoRoomError(`no room free now (${free.vcpus} vCPUs, ${free.memoryMiB} MiB memory, ${free.diskMiB} MiB disk free; ${node.executor.queued} queued)`);
    }
    // Containers use their image where it lies (a directory, an archive, an archive blob); functions need the bytes.
    const inPlace = workload.kind === 'container';
    const { code, dir, path: file, kernel, initrd, rootfs } = await resolveSource(workload.source, { blobs: node.blobs, fileRoots: node.config.fileRoots }, { inPlace });
    const driver = node.registry.choose(workload, code);
    const id = options.id ?? newRunId();
    if (options.id !== undefined && node.store.getRun(id) !== undefined) throw new RunExistsError(`run ${id} already exists on this node`, { field: 'id' });
    const codeHash = 'blob' in workload.source ? workload.source.blob : sha256(code);
    const request: SandboxRequest = { runId: id, workload, code, codeHash, resources, outputCapBytes: node.config.limits.outputBytes, outputs: node.outputSink };
    if (dir !== undefined) request.sourceDir = dir;
    if (file !== undefined) request.sourceFile = file;
    if (kernel !== undefined) request.kernel = { kernel, ...(initrd === undefined ? {} : { initrd }), ...(rootfs === undefined ? {} : { rootfs }) };
    if (resources.disk !== undefined && driver.diskLimits !== true) {
      throw new InvalidInputError(`resources.disk: the ${driver.name} driver has no virtual disk to throttle; disk I/O limits apply to microvms`, { field: 'resources.disk' });
    }
    const inputs = await resolveInputs(workload.inputs, node.blobs, resources.diskMiB);
    if (inputs.length > 0) {
      if (driver.inputFiles !== true) {
        throw new InvalidInputError(`inputs: the ${driver.name} driver takes no input files; use a container or a microvm, or pass the data as stdin`, { field: 'inputs' });
      }
      request.inputs = inputs;
    }
    if (snapshot !== undefined) {
      restoreDir = path.join(node.config.home, SNAPSHOT_WORK, `restore-${id}`);
      await fs.mkdir(path.dirname(restoreDir), { recursive: true, mode: 0o700 });
      await materializeSnapshot(snapshot, node.blobs, restoreDir);
      request.restoreFrom = restoreDir;
    }
    await driver.validate(request);
    // The store keeps the code and the inline inputs once, by hash, not inside every run's spec.
    let spec: Workload = 'inline' in workload.source ? { ...workload, source: { blob: await node.blobs.put(code, codeHash) } } : workload;
    if (inputs.length > 0) spec = { ...spec, inputs: await storedInputs(inputs, node.blobs) };
    const now = new Date().toISOString();
    const record: RunRecord = { id, state: 'queued', kind: workload.kind, nodeId: node.id, spec, resources, createdAt: now, updatedAt: now };
    if (workload.name !== undefined) record.name = workload.name;
    if (options.placement !== undefined) record.placement = options.placement;
    const receipt: ReceiptContext = { specHash, inputs: [codeHash, ...blobsOf(spec)] };
    if (options.requester !== undefined) receipt.requester = options.requester;
    node.executor.submit(record, driver, request, receipt);
    const restored = restoreDir;
    restoreDir = undefined;
    node.afterSettled(id, async () => {
      for (const release of holds.splice(0)) release();
      if (restored !== undefined) await fs.rm(restored, { recursive: true, force: true });
    });
    return node.toPublic(record);
  } catch (err) {
    for (const release of holds) release();
    if (restoreDir !== undefined) await fs.rm(restoreDir, { recursive: true, force: true });
    node.metrics.runsRejected.inc({ code: isVmeshError(err) ? err.code : 'internal' });
    throw err;
  }
}
