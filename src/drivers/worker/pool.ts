import { Worker, type ResourceLimits } from 'node:worker_threads';
import { AbortedError, SandboxFaultError } from '../../spec/index.ts';

const BOOT = new URL('./boot.mjs', import.meta.url);

export interface WorkerPoolOptions {
  /** The module the worker runs (a .ts file under tsx, or .js). */
  entry: URL;
  /** Most workers alive at once; a run beyond that waits for one to come free. */
  size: number;
  /** Workers kept booted however long they sit idle (default 0). */
  idle?: number;
  /** A worker idle this long is ended, down to `idle` workers (default 30 s): an idle node stays small. */
  idleTimeoutMs?: number;
  resourceLimits?: ResourceLimits;
}

/** One worker thread of a pool. `ready` settles once the worker has booted and said so. */
export class PooledWorker {
  readonly ready: Promise<void>;
  idleTimer: NodeJS.Timeout | undefined;
  private exited = false;

  constructor(readonly thread: Worker) {
    this.ready = new Promise<void>((resolve, reject) => {
      const onMessage = (msg: { type?: string }) => {
        if (msg?.type !== 'ready') return;
        cleanupListeners();
        resolve();
      };
      const onError = (err: Error) => {
        cleanupListeners();
        reject(new SandboxFaultError(`worker failed to boot: ${err.message}`, { cause: err }));
      };
      const onExit = (code: number) => {
        cleanupListeners();
        reject(new SandboxFaultError(`worker exited with code ${code} while booting`));
      };
      const cleanupListeners = () => {
        thread.off('message', onMessage);
        thread.off('error', onError);
        thread.off('exit', onExit);
      };
      thread.on('message', onMessage);
      thread.on('error', onError);
      thread.on('exit', onExit);
    });
    thread.once('exit', () => {
      this.exited = true;
    });
  }

  get alive(): boolean {
    return !this.exited;
  }
}

/**
 * A bounded pool of worker threads that boot once and serve many short runs. A worker whose run was
 * killed (timeout, cancel, out of memory) is terminated and replaced, never reused.
 */
export class WorkerPool {
  private readonly idleWorkers: PooledWorker[] = [];
  private readonly waiters: Array<{ resolve: (w: PooledWorker) => void; reject: (e: unknown) => void; signal?: AbortSignal; onAbort?: () => void }> = [];
  private readonly all = new Set<PooledWorker>();
  private busyCount = 0;
  private closed = false;

  constructor(private readonly options: WorkerPoolOptions) {}

  get busy(): number {
    return this.busyCount;
  }

  get threads(): number {
    return this.all.size;
  }

  async acquire(signal?: AbortSignal): Promise<PooledWorker> {
    if (this.closed) throw new SandboxFaultError('worker pool is closed');
    if (signal?.aborted) throw new AbortedError();
    for (;;) {
      const w = this.idleWorkers.pop();
      if (w === undefined) break;
      clearTimeout(w.idleTimer);
      if (w.alive) {
        this.busyCount++;
        w.thread.ref();
        return w;
      }
      this.forget(w);
    }
    if (this.all.size < this.options.size) {
      const w = this.spawn();
      this.busyCount++;
      w.thread.ref();
      try {
        await w.ready;
      } catch (err) {
        this.busyCount--;
        this.forget(w);
        throw err;
      }
      return w;
    }
    return new Promise<PooledWorker>((resolve, reject) => {
      const waiter: (typeof this.waiters)[number] = { resolve, reject };
      if (signal !== undefined) {
        waiter.signal = signal;
        waiter.onAbort = () => {
          const i = this.waiters.indexOf(waiter);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(new AbortedError());
        };
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      this.waiters.push(waiter);
    });
  }

  /** Returns a worker whose run ended normally, for the next run. */
  release(w: PooledWorker): void {
    this.busyCount--;
    if (!w.alive || this.closed) {
      this.forget(w);
      this.replenish();
      return;
    }
    this.giveBack(w);
  }

  /** Terminates a worker whose run was killed or faulted; a fresh one takes its place when needed. */
  async discard(w: PooledWorker): Promise<void> {
    this.busyCount--;
    this.forget(w);
    await w.thread.terminate();
    this.replenish();
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const waiter of this.waiters.splice(0)) waiter.reject(new SandboxFaultError('worker pool is closed'));
    const threads = [...this.all];
    for (const w of threads) clearTimeout(w.idleTimer);
    this.all.clear();
    this.idleWorkers.length = 0;
    await Promise.all(threads.map((w) => w.thread.terminate()));
  }

  private spawn(): PooledWorker {
    const thread = new Worker(BOOT, {
      workerData: { entry: this.options.entry.href },
      resourceLimits: this.options.resourceLimits,
      stdout: false,
      stderr: false,
    });
    thread.unref();
    const w = new PooledWorker(thread);
    w.ready.catch(() => {
      /* reported to whoever awaits it */
    });
    this.all.add(w);
    thread.once('exit', () => this.forget(w));
    return w;
  }

  private giveBack(w: PooledWorker): void {
    const waiter = this.waiters.shift();
    if (waiter !== undefined) {
      if (waiter.onAbort !== undefined) waiter.signal?.removeEventListener('abort', waiter.onAbort);
      this.busyCount++;
      w.thread.ref();
      waiter.resolve(w);
      return;
    }
    w.thread.unref();
    this.idleWorkers.push(w);
    w.idleTimer = setTimeout(() => this.reap(w), this.options.idleTimeoutMs ?? 30_000);
    w.idleTimer.unref();
  }

  /** Ends a worker that has sat idle past the timeout, unless it is one of the `idle` kept warm. */
  private reap(w: PooledWorker): void {
    const i = this.idleWorkers.indexOf(w);
    if (i < 0 || this.all.size <= (this.options.idle ?? 0)) return;
    this.idleWorkers.splice(i, 1);
    this.forget(w);
    void w.thread.terminate();
  }

  private forget(w: PooledWorker): void {
    this.all.delete(w);
    const i = this.idleWorkers.indexOf(w);
    if (i >= 0) this.idleWorkers.splice(i, 1);
  }

  /** After a worker died, start another if runs are waiting for one. */
  private replenish(): void {
    if (this.closed || this.waiters.length === 0 || this.all.size >= this.options.size) return;
    const w = this.spawn();
    w.ready.then(
      () => this.giveBack(w),
      (err) => {
        this.forget(w);
        this.waiters.shift()?.reject(err);
      },
    );
  }
}
