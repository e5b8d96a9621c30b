import { parentPort } from 'node:worker_threads';
import type { StreamName } from '../driver.ts';

/** Messages a sandbox worker sends to the node while it runs one workload. */
export type WorkerMessage =
  | { type: 'ready' }
  | { type: 'stream'; stream: StreamName; data: Uint8Array }
  | { type: 'done'; result: WorkerResult };

/** How the workload inside the worker ended, as the worker saw it. */
export interface WorkerResult {
  outcome: 'exited' | 'oom' | 'timeout' | 'crashed';
  exitCode: number | null;
  reason?: string;
  output?: unknown;
  memoryPeakBytes?: number;
  diskBytes?: number;
  /** Bytes written to each stream, including those past the cap that were not sent. */
  streamBytes?: Record<StreamName, number>;
  /** The worker should not serve another run (its state may be damaged): the pool ends it. */
  retire?: boolean;
}

/**
 * The worker side of one run's stdout/stderr: forwards bytes to the node until `capBytes` per stream
 * have gone, then only counts. A flood therefore costs the node no messages.
 */
export class WorkerStreams {
  readonly totals: Record<StreamName, number> = { stdout: 0, stderr: 0 };

  constructor(private readonly capBytes: number) {}

  write(stream: StreamName, data: Uint8Array): void {
    const room = this.capBytes - this.totals[stream];
    this.totals[stream] += data.byteLength;
    if (room <= 0 || data.byteLength === 0) return;
    post({ type: 'stream', stream, data: data.slice(0, room) });
  }
}

export function post(msg: WorkerMessage): void {
  parentPort?.postMessage(msg);
}

/** Registers the run handler of a worker and tells the pool that the worker is ready. */
export function serve<T>(handler: (task: T) => Promise<WorkerResult>): void {
  const port = parentPort;
  if (port === null) throw new Error('sandbox worker started outside a worker thread');
  port.on('message', (task: T) => {
    handler(task).then(
      (result) => post({ type: 'done', result }),
      (err: unknown) =>
        post({ type: 'done', result: { outcome: 'crashed', exitCode: null, reason: err instanceof Error ? err.message : String(err), retire: true } }),
    );
  });
  post({ type: 'ready' });
}
