import type { Logger } from 'pino';
import { CappedStream } from '../drivers/capture.ts';
import type { Driver, RunningSandbox, SandboxExit, SandboxNetworkInfo, SandboxRequest, StreamName } from '../drivers/driver.ts';
import { runInSandbox } from '../drivers/lifecycle.ts';
import {
  AbortedError,
  canTransition,
  isTerminal,
  outputReplicas,
  QueueFullError,
  RunStateError,
  UnsupportedError,
  type Run,
  type OutputsArchive,
  type RunResult,
  type RunState,
  type TerminalState,
} from '../spec/index.ts';
import type { RunPatch, RunRecord, Store } from '../store/store.ts';
import type { RemoteFeed } from './remote.ts';
import type { NodeEvents } from './events.ts';
import type { Ledger } from './ledger.ts';
import type { NodeMetrics } from './metrics.ts';
import type { CopiesPlaced } from './remote.ts';
import { abortReason, corrupted, runResult, terminalOf } from './run-result.ts';
import type { Envelope } from '../trust/envelope.ts';
import type { ReceiptContext } from '../trust/receipt.ts';

export interface ExecutorOptions {
  /** This node's id, as the first holder of what its runs make. */
  nodeId: string;
  store: Store;
  ledger: Ledger;
  events: NodeEvents;
  metrics: NodeMetrics;
  logger: Logger;
  maxConcurrent: number;
  queueLimit: number;
  queueTimeoutMs: number;
  /** Places `copies` more copies of a blob on other nodes (a run's outputs archive, for `outputs.replicas`). */
  keepCopies?(hash: string, copies: number, signal: AbortSignal): Promise<CopiesPlaced>;
  /** TEST ONLY (config testing.corruptResults): change every result before it is signed, as a dishonest node would. */
  corruptResults?: boolean;
  /** Signs the receipt of a run this node executed, as it ends. */
  signReceipt?(run: Run, context: ReceiptContext): Envelope;
}

/** What the executor tracks of any run, local or remote. */
interface Tracked {
  record: RunRecord;
  runningAt?: number;
  /** Resolves with the final record once the run is over and everything it held is released. */
  settled: Promise<RunRecord>;
  settle: () => void;
}

interface Followed extends Tracked {
  feed: RemoteFeed;
  /** Its place in the queue of the node it waits on, as that node last said. */
  position?: number;
}

interface Job extends Tracked {
  driver: Driver;
  request: SandboxRequest;
  controller: AbortController;
  submittedAt: number;
  placedAt?: number;
  queueTimer?: NodeJS.Timeout;
  /** How long it may wait in the queue: `placement.queueTimeoutMs`, or the node's. */
  queueTimeoutMs: number;
  /** The driver's handle on the started sandbox, while it runs. */
  sandbox?: RunningSandbox;
  /** An operation on the sandbox (pause, resume, snapshot) is under way: one at a time. */
  busy?: boolean;
  /** What the run's receipt says it was asked (its spec's hash, its blobs, who asked). */
  receipt?: ReceiptContext;
}

/**
 * Runs admitted work: a FIFO queue in front of the ledger, bounded concurrency, cancel, and the one
 * place that moves a run through its states (store, event stream and metrics together). A run's
 * reservation is released on every exit path.
 */
export class Executor {
  private readonly queue: Job[] = [];
  private readonly active = new Map<string, Job>();
  /** Runs this node asked another node to execute. */
  private readonly followed = new Map<string, Followed>();
  private stopping = false;

  constructor(private readonly o: ExecutorOptions) {}

  get queued(): number {
    return this.queue.length;
  }

  get running(): number {
    return this.active.size;
  }

  /** The executor's own record of a live (queued or started) run. */
  record(id: string): RunRecord | undefined {
    return this.live(id)?.record;
  }

  private live(id: string): Tracked | undefined {
    return this.active.get(id) ?? this.followed.get(id) ?? this.queue.find((j) => j.record.id === id);
  }

  /**
   * Resolves with its final record once a run is over and everything it held is released (at once, with
   * nothing, for one that is not live).
   */
  async settled(id: string): Promise<RunRecord | undefined> {
    return this.live(id)?.settled;
  }

  /** 1-based place in the queue, or undefined when the run is not queued. */
  position(id: string): number | undefined {
    const followed = this.followed.get(id);
    if (followed !== undefined) return followed.record.state === 'queued' ? followed.position : undefined;
    const i = this.queue.findIndex((j) => j.record.id === id);
    return i < 0 ? undefined : i + 1;
  }

  /** Stores the run as queued and starts it as soon as it fits. */
  submit(record: RunRecord, driver: Driver, request: SandboxRequest, receipt?: ReceiptContext): void {
    if (this.queue.length >= this.o.queueLimit) {
      throw new QueueFullError(`the queue is full (${this.o.queueLimit} runs); try again later`);
    }
    const job = { record, driver, request, controller: new AbortController(), submittedAt: performance.now() } as Job;
    if (receipt !== undefined) job.receipt = receipt;
    settleable(job);
    this.o.store.insertRun(record);
    this.emitState(record, undefined, record.createdAt);
    this.o.metrics.runsSubmitted.inc({ kind: record.kind });
    this.queue.push(job);
    job.queueTimeoutMs = record.spec.placement?.queueTimeoutMs ?? this.o.queueTimeoutMs;
    job.queueTimer = setTimeout(() => this.expire(job), job.queueTimeoutMs);
    job.queueTimer.unref();
    this.pump();
  }

  /**
   * Tracks a run that executes on another node: it is stored here like any other run, and its states and
   * logs arrive from that node (no reservation here). If contact is lost before it ends, it ends `failed`.
   */
  follow(record: RunRecord, feed: RemoteFeed): void {
    const job = { record, feed } as Followed;
    settleable(job);
    this.o.store.insertRun(record);
    this.emitState(record, undefined, record.createdAt);
    this.o.metrics.runsSubmitted.inc({ kind: record.kind });
    this.followed.set(record.id, job);
    void this.track(job);
  }

  private async track(job: Followed): Promise<void> {
    const id = job.record.id;
    try {
      for await (const u of job.feed.updates) {
        if (u.type === 'log') {
          const eventId = this.o.store.appendEvent(id, u.stream, u.data, u.ts);
          this.o.events.emit('log', { runId: id, eventId, stream: u.stream, data: u.data, ts: u.ts });
        } else if (u.type === 'position') {
          job.position = u.position;
        } else if (u.type === 'patch') {
          Object.assign(job.record, u.patch);
          this.o.store.updateRun(id, u.patch);
        } else if (u.type === 'state') {
          if (!isTerminal(u.state) && u.state !== job.record.state && canTransition(job.record.state, u.state)) this.transition(job, u.state, u.patch);
        } else {
          const { state, reason, result, driver, startedAt, endedAt } = u.run;
          if (!isTerminal(state)) throw new Error(`node ${job.feed.node} ended the run in state ${state}`);
          const patch: RunPatch = {};
          if (driver !== undefined) patch.driver = driver;
          if (startedAt !== undefined) patch.startedAt = startedAt;
          if (endedAt !== undefined) patch.endedAt = endedAt;
          if (u.run.receipt !== undefined) patch.receipt = u.run.receipt;
          if (u.run.verification !== undefined) patch.verification = u.run.verification;
          if (u.run.attempts !== undefined) patch.attempts = u.run.attempts;
          if (u.run.nodeId !== job.record.nodeId) patch.nodeId = u.run.nodeId;
          // A node that ends a run it never said it started (it was quick, or it skips steps) still ends it here.
          for (const step of ['placed', 'starting', 'running'] as const) {
            if (!canTransition(job.record.state, state) && canTransition(job.record.state, step)) this.transition(job, step);
          }
          this.finish(job, state, reason, result, patch);
          break;
        }
      }
      if (!isTerminal(job.record.state)) this.finish(job, 'failed', `node ${job.feed.node} closed the run's stream before it ended`);
    } catch (err) {
      if (err instanceof AbortedError) this.finish(job, 'cancelled', err.message);
      else {
        this.o.logger.warn({ runId: id, node: job.feed.node, err }, 'lost contact with the node running a remote run');
        this.finish(job, 'failed', `lost contact with node ${job.feed.node}: ${(err as Error).message}`);
      }
    } finally {
      this.followed.delete(id);
      job.settle();
    }
  }

  /**
   * Cancels a live run: a queued one ends at once, a started one is stopped and ends `cancelled` when
   * its sandbox is gone, a remote one is cancelled by the node running it. Returns false when the run is
   * not live here.
   */
  cancel(id: string, reason = 'cancelled by request'): boolean {
    const remote = this.followed.get(id);
    if (remote !== undefined) {
      remote.feed.cancel(reason);
      return true;
    }
    const i = this.queue.findIndex((j) => j.record.id === id);
    if (i >= 0) {
      const [job] = this.queue.splice(i, 1);
      clearTimeout(job!.queueTimer);
      this.finish(job!, 'cancelled', reason);
      job!.settle();
      return true;
    }
    const job = this.active.get(id);
    if (job === undefined) return false;
    job.controller.abort(new AbortedError(reason));
    return true;
  }

  /** Freezes a running run's sandbox; the run is `paused` until resumed (its timeout keeps counting). */
  async pause(id: string): Promise<RunRecord> {
    return this.operate(id, 'running', 'pause', async (job, driver, sandbox) => {
      await driver.pause!(sandbox);
      if (job.record.state === 'running') this.transition(job, 'paused'); // unless it ended meanwhile
    });
  }

  async resume(id: string): Promise<RunRecord> {
    return this.operate(id, 'paused', 'resume', async (job, driver, sandbox) => {
      await driver.resume!(sandbox);
      if (job.record.state === 'paused') this.transition(job, 'running');
    });
  }

  /** Captures a running or paused run's sandbox into `dir`; the run is left `paused`. */
  async snapshot(id: string, dir: string, signal?: AbortSignal): Promise<RunRecord> {
    return this.operate(id, ['running', 'paused'], 'snapshot', async (job, driver, sandbox) => {
      await driver.snapshot!(sandbox, dir, signal);
      if (job.record.state === 'running') this.transition(job, 'paused');
    });
  }

  private async operate(
    id: string,
    states: RunState | RunState[],
    op: 'pause' | 'resume' | 'snapshot',
    act: (job: Job, driver: Driver, sandbox: RunningSandbox) => Promise<void>,
  ): Promise<RunRecord> {
    if (this.followed.has(id)) throw new UnsupportedError(`run ${id} runs on node ${this.followed.get(id)!.feed.node}: ask that node`, { field: 'id' });
    const job = this.active.get(id) ?? this.queue.find((j) => j.record.id === id);
    if (job === undefined || isTerminal(job.record.state)) throw new RunStateError(`run ${id} is not live on this node`, { field: 'id' });
    if (job.driver[op] === undefined) throw new UnsupportedError(`run ${id}: the ${job.driver.name} driver cannot ${op} a sandbox`, { field: 'id' });
    const wanted = ([] as RunState[]).concat(states);
    if (!wanted.includes(job.record.state) || job.sandbox === undefined) {
      throw new RunStateError(`run ${id} is ${job.record.state}; ${op} needs it ${wanted.join(' or ')}`, { field: 'id' });
    }
    if (job.busy) throw new RunStateError(`run ${id}: another pause, resume or snapshot is under way`, { field: 'id' });
    job.busy = true;
    try {
      await act(job, job.driver, job.sandbox);
      return job.record;
    } finally {
      job.busy = false;
    }
  }

  /** Refuses new work, cancels everything live, and waits until every sandbox is cleaned up. */
  async stop(): Promise<void> {
    this.stopping = true;
    for (const job of [...this.queue]) this.cancel(job.record.id, 'the node is shutting down');
    const live = [...this.active.values()];
    for (const job of live) job.controller.abort(new AbortedError('the node is shutting down'));
    const remote = [...this.followed.values()];
    for (const job of remote) job.feed.cancel('the requesting node is shutting down');
    await Promise.all([...live, ...remote].map((j) => j.settled));
  }

  private pump(): void {
    while (!this.stopping && this.queue.length > 0 && this.active.size < this.o.maxConcurrent) {
      const job = this.queue[0]!;
      if (!this.o.ledger.tryReserve(job.record.id, job.record.resources)) break; // strict FIFO: no overtaking
      this.queue.shift();
      clearTimeout(job.queueTimer);
      this.active.set(job.record.id, job);
      void this.execute(job);
    }
    this.o.metrics.queueLength.set(this.queue.length);
    this.o.metrics.running.set(this.active.size);
  }

  private expire(job: Job): void {
    const i = this.queue.indexOf(job);
    if (i < 0) return;
    this.queue.splice(i, 1);
    const free = this.o.ledger.free();
    this.finish(
      job,
      'failed',
      `waited ${job.queueTimeoutMs} ms in the queue without room (free now: ${free.vcpus} vcpus, ${free.memoryMiB} MiB memory, ${free.diskMiB} MiB disk)`,
    );
    job.settle();
    this.pump();
  }

  private async execute(job: Job): Promise<void> {
    const id = job.record.id;
    const cap = job.request.outputCapBytes;
    const captured: Record<StreamName, CappedStream> = { stdout: new CappedStream(cap), stderr: new CappedStream(cap) };
    let exit: SandboxExit | undefined;
    /** The run's end, once its sandbox has ended: at once, or after its outputs' copies are placed. */
    let ending: Promise<void> | undefined;
    try {
      job.placedAt = performance.now();
      this.transition(job, 'placed', { driver: job.driver.name });
      this.transition(job, 'starting');
      const io = {
        write: (stream: StreamName, chunk: Uint8Array) => {
          const kept = captured[stream].append(chunk);
          if (kept.byteLength === 0) return;
          const ts = new Date().toISOString();
          const eventId = this.o.store.appendEvent(id, stream, kept, ts);
          this.o.events.emit('log', { runId: id, eventId, stream, data: kept, ts });
        },
        total: (stream: StreamName, bytes: number) => captured[stream].noteTotal(bytes),
        network: (network: SandboxNetworkInfo) => {
          job.record.network = network;
          this.o.store.updateRun(id, { network });
        },
      };
      // The result goes out as soon as the sandbox has ended; its resources are freed after the cleanup.
      const publish = (ended: SandboxExit) => {
        exit = ended;
        delete job.sandbox;
        const [state, reason] = terminalOf(ended);
        const why = state === 'cancelled' ? abortReason(job.controller.signal) : reason;
        const result = this.result(job, ended, captured);
        const copies = outputReplicas(job.request.workload);
        if (copies > 1 && result.outputsArchive !== undefined && state !== 'cancelled') {
          ending = this.keepOutputs(job, result.outputsArchive, copies).then(() => this.finish(job, state, why, result));
        } else this.finish(job, state, why, result);
      };
      await runInSandbox(job.driver, job.request, io, job.controller.signal, {
        onRunning: (sandbox) => {
          job.sandbox = sandbox;
          job.runningAt = performance.now();
          this.transition(job, 'running', { startedAt: new Date().toISOString() });
        },
        onExit: publish,
      });
      await ending;
    } catch (err) {
      await ending;
      const cancelled = err instanceof AbortedError || job.controller.signal.aborted;
      const reason = cancelled ? abortReason(job.controller.signal) : `the driver failed: ${(err as Error).message}`;
      if (!cancelled) this.o.logger.warn({ runId: id, err }, 'run failed in its driver');
      this.finish(job, cancelled ? 'cancelled' : 'failed', reason, this.result(job, exit, captured));
    } finally {
      this.o.ledger.release(id);
      this.active.delete(id);
      job.settle();
      this.pump();
    }
  }

  /**
   * Puts copies of a run's outputs archive on `copies - 1` other nodes and records where they went in
   * `archive.copies`; never throws (a shortfall is said in `missing`). A cancel stops it.
   */
  private async keepOutputs(job: Job, archive: OutputsArchive, copies: number): Promise<void> {
    const nodes = [this.o.nodeId];
    let missing: string | undefined;
    try {
      if (this.o.keepCopies === undefined) throw new Error('this node cannot place copies');
      const placed = await this.o.keepCopies(archive.blob, copies - 1, job.controller.signal);
      nodes.push(...placed.nodes);
      if (nodes.length < copies) {
        const asked = placed.nodes.length + placed.refused.length;
        const refusals = placed.refused.map((r) => `${r.node}: ${r.reason}`).join('; ');
        missing = `asked ${asked} other nodes and ${placed.nodes.length} took a copy: ${nodes.length} of the ${copies} wanted${refusals === '' ? '' : ` (${refusals})`}`;
      }
    } catch (err) {
      missing = (err as Error).message;
    }
    if (job.controller.signal.aborted) missing = `stopped: ${abortReason(job.controller.signal)}`;
    archive.copies = { wanted: copies, nodes, ...(missing === undefined ? {} : { missing: missing.slice(0, 4096) }) };
    if (missing !== undefined) this.o.logger.warn({ runId: job.record.id, blob: archive.blob, copies: nodes.length, wanted: copies, missing }, 'outputs kept on fewer nodes than asked');
  }

  private result(job: Job, exit: SandboxExit | undefined, captured: Record<StreamName, CappedStream>): RunResult {
    const result = runResult({ submitted: job.submittedAt, placed: job.placedAt, running: job.runningAt, ended: performance.now() }, exit, captured);
    return this.o.corruptResults === true ? corrupted(result) : result;
  }

  private transition(job: Tracked, state: RunState, patch: RunPatch = {}): void {
    const from = job.record.state;
    if (!canTransition(from, state)) throw new Error(`run ${job.record.id}: illegal transition ${from} → ${state}`);
    const ts = new Date().toISOString();
    Object.assign(job.record, patch, { state, updatedAt: ts });
    this.o.store.updateRun(job.record.id, { ...patch, state }, ts);
    this.emitState(job.record, patch.reason, ts);
  }

  private finish(job: Job | Followed, state: TerminalState, reason: string | undefined, result?: RunResult, extra: RunPatch = {}): void {
    if (isTerminal(job.record.state)) return;
    const patch: RunPatch = { endedAt: new Date().toISOString(), ...extra };
    if (reason !== undefined) patch.reason = reason;
    if (result !== undefined) patch.result = result;
    if ('receipt' in job && job.receipt !== undefined && this.o.signReceipt !== undefined) {
      const { spec: _spec, ...ended } = { ...job.record, ...patch, state };
      patch.receipt = this.o.signReceipt(ended, job.receipt);
    }
    this.transition(job, state, patch);
    const driver = 'driver' in job ? job.driver.name : 'remote';
    this.o.logger.debug({ runId: job.record.id, driver, state, reason, totalMs: result?.timings.totalMs }, 'run ended');
    this.o.metrics.runsEnded.inc({ driver, state });
    if (job.runningAt !== undefined) {
      this.o.metrics.runDuration.observe({ driver }, (performance.now() - job.runningAt) / 1000);
    }
  }

  private emitState(run: RunRecord, reason: string | undefined, ts: string): void {
    const { id: runId, state } = run;
    const data = JSON.stringify(reason === undefined ? { state } : { state, reason });
    const eventId = this.o.store.appendEvent(runId, 'state', data, ts);
    this.o.events.emit('state', reason === undefined ? { runId, eventId, state, ts, run } : { runId, eventId, state, reason, ts, run });
  }
}

/** Gives a tracked run its `settled` promise, resolved by `settle` with the run's final record. */
function settleable(job: Tracked): void {
  job.settled = new Promise<RunRecord>((resolve) => (job.settle = () => resolve(job.record)));
}
