import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ResourceLimits } from 'node:worker_threads';
import { outputPaths, type IsolationLevel, type Workload, type WorkloadKind } from '../../spec/index.ts';
import type {
  Driver,
  DriverProbe,
  PreparedSandbox,
  RunningSandbox,
  SandboxExit,
  SandboxIO,
  SandboxRequest,
  StopReason,
} from '../driver.ts';
import { packOutputs } from '../../outputs/pack.ts';
import { WorkerPool, type PooledWorker, type WorkerPoolOptions } from './pool.ts';
import type { WorkerMessage, WorkerResult } from './protocol.ts';

export interface WorkerDriverOptions {
  /** Parent of the per-run scratch directories. */
  sandboxRoot?: string;
  /** Most sandboxes running at once (worker threads). */
  workers?: number;
  /** Threads kept booted however long they sit idle (default 0: booted on demand). */
  idleWorkers?: number;
  /** An idle thread beyond `idleWorkers` ends after this long (default 30 s). */
  workerIdleTimeoutMs?: number;
}

export interface WorkerPrepared extends PreparedSandbox {
  /** The run's private scratch directory. */
  readonly scratch: string;
}

interface WorkerRunning extends RunningSandbox {
  readonly prepared: WorkerPrepared;
  readonly worker: PooledWorker;
  readonly ended: Promise<SandboxExit>;
  stopReason?: StopReason;
  stop(reason: StopReason): Promise<void>;
}

/**
 * The shared machinery of drivers that run a workload inside a pooled worker thread (wasm, quickjs):
 * scratch directories, the pool, streaming, timeouts and kills, output collection, cleanup.
 * A subclass says how to prepare its code, what task to send, and how to read the worker's verdict.
 */
export abstract class WorkerSandboxDriver<P extends WorkerPrepared, Task> implements Driver {
  abstract readonly name: string;
  abstract readonly kinds: readonly WorkloadKind[];
  abstract readonly isolation: IsolationLevel;
  protected readonly sandboxRoot: string;
  private readonly pool: WorkerPool;
  private readonly live = new Set<WorkerRunning>();
  private readonly prepared = new Set<WorkerPrepared>();
  private rootReady: Promise<void> | undefined;

  constructor(entry: URL, options: WorkerDriverOptions, resourceLimits: ResourceLimits) {
    this.sandboxRoot = options.sandboxRoot ?? path.join(os.tmpdir(), 'vmesh-sandboxes');
    const size = options.workers ?? Math.max(2, os.availableParallelism());
    const pool: WorkerPoolOptions = { entry, size, idle: Math.min(options.idleWorkers ?? 0, size), resourceLimits };
    if (options.workerIdleTimeoutMs !== undefined) pool.idleTimeoutMs = options.workerIdleTimeoutMs;
    this.pool = new WorkerPool(pool);
  }

  abstract accepts(workload: Workload, code: Uint8Array): boolean;
  abstract probe(signal?: AbortSignal): Promise<DriverProbe>;
  abstract validate(request: SandboxRequest, signal?: AbortSignal): Promise<void>;
  /** Validates and stages the code; `scratch` already exists. Throws typed errors on bad input. */
  protected abstract stage(request: SandboxRequest, scratch: string, signal?: AbortSignal): Promise<P>;
  protected abstract task(prepared: P): Task;
  /** Maps the worker's own account of the run (or its death) to the sandbox exit. */
  protected abstract verdict(prepared: P, result: WorkerResult): Pick<SandboxExit, 'outcome' | 'exitCode' | 'reason' | 'output'>;

  async prepare(request: SandboxRequest, signal?: AbortSignal): Promise<P> {
    this.rootReady ??= fs.mkdir(this.sandboxRoot, { recursive: true, mode: 0o700 }).then(() => undefined);
    await this.rootReady;
    const scratch = await fs.mkdtemp(path.join(this.sandboxRoot, `${this.name}-${request.runId}-`));
    try {
      const prepared = await this.stage(request, scratch, signal);
      this.prepared.add(prepared);
      return prepared;
    } catch (err) {
      await fs.rm(scratch, { recursive: true, force: true });
      throw err;
    }
  }

  async start(prepared: PreparedSandbox, io: SandboxIO, signal?: AbortSignal): Promise<RunningSandbox> {
    const p = prepared as P;
    const worker = await this.pool.acquire(signal);
    const thread = worker.thread;
    let settle!: (exit: SandboxExit) => void;
    const ended = new Promise<SandboxExit>((resolve) => (settle = resolve));
    let done = false;

    const running: WorkerRunning = {
      prepared: p,
      worker,
      ended,
      stop: async (reason) => {
        if (done || running.stopReason !== undefined) return;
        running.stopReason = reason;
        await thread.terminate(); // the 'exit' listener below settles the run
      },
    };

    const finish = async (result: WorkerResult, reusable: boolean) => {
      if (done) return;
      done = true;
      detach();
      if (reusable) this.pool.release(worker);
      else await this.pool.discard(worker);
      if (result.streamBytes !== undefined) {
        io.total('stdout', result.streamBytes.stdout);
        io.total('stderr', result.streamBytes.stderr);
      }
      const verdict = this.verdict(p, result);
      const outputs = await packOutputs(p.scratch, outputPaths(p.request.workload), p.request.outputs);
      const usage: SandboxExit['usage'] = {};
      if (result.memoryPeakBytes !== undefined) usage.memoryPeakBytes = result.memoryPeakBytes;
      if (result.diskBytes !== undefined) usage.diskBytes = result.diskBytes;
      settle({ ...verdict, outputs, usage });
    };

    const onMessage = (msg: WorkerMessage) => {
      if (msg.type === 'stream') io.write(msg.stream, msg.data);
      else if (msg.type === 'done') void finish(msg.result, msg.result.retire !== true);
    };
    const onError = (err: Error & { code?: string }) => {
      const oom = err.code === 'ERR_WORKER_OUT_OF_MEMORY';
      void finish({ outcome: oom ? 'oom' : 'crashed', exitCode: null, reason: err.message }, false);
    };
    const onExit = (code: number) => {
      const reason = running.stopReason;
      void finish(
        reason === undefined
          ? { outcome: 'crashed', exitCode: null, reason: `the sandbox worker exited unexpectedly (code ${code})` }
          : { outcome: reason === 'timeout' ? 'timeout' : 'crashed', exitCode: null, reason: reason },
        false,
      );
    };
    const detach = () => {
      thread.off('message', onMessage);
      thread.off('error', onError);
      thread.off('exit', onExit);
    };
    thread.on('message', onMessage);
    thread.on('error', onError);
    thread.on('exit', onExit);
    this.live.add(running);
    ended.finally(() => this.live.delete(running)).catch(() => {});
    thread.postMessage(this.task(p));
    return running;
  }

  async wait(sandbox: RunningSandbox): Promise<SandboxExit> {
    const running = sandbox as WorkerRunning;
    const exit = await running.ended;
    if (running.stopReason === 'cancelled') {
      return { ...exit, outcome: 'cancelled', exitCode: null, reason: 'cancelled' };
    }
    if (running.stopReason === 'timeout') {
      const ms = running.prepared.request.resources.timeoutMs;
      return { ...exit, outcome: 'timeout', exitCode: null, reason: `killed after the ${ms} ms timeout` };
    }
    return exit;
  }

  async stop(sandbox: RunningSandbox, reason: StopReason): Promise<void> {
    await (sandbox as WorkerRunning).stop(reason);
  }

  async cleanup(prepared: PreparedSandbox): Promise<void> {
    const p = prepared as WorkerPrepared;
    this.prepared.delete(p);
    // Most runs leave their scratch directory empty: one rmdir, and the tree walk only when it is not.
    await fs.rmdir(p.scratch).catch(() => fs.rm(p.scratch, { recursive: true, force: true })).catch(() => {});
  }

  liveSandboxes(): number {
    return this.live.size + this.prepared.size;
  }

  async close(): Promise<void> {
    await Promise.all([...this.live].map((r) => r.stop('cancelled')));
    await this.pool.close();
  }
}
