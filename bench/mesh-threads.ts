import { Worker } from 'node:worker_threads';

/** What the in-process mesh benchmark asks of one of its threads (bench/mesh-node-thread.ts). */
export type ThreadRequest =
  | { op: 'start'; root: string; index: number; join: string[] }
  | { op: 'state' }
  | { op: 'publish' }
  | { op: 'held' }
  | { op: 'stop' };

export type ThreadAnswer =
  | { op: 'started'; id: string; addresses: string[] }
  | { op: 'state'; nodes: Array<{ id: string; members: Array<[string, number]> }>; closed: number }
  | { op: 'held'; bytes: number }
  | { op: 'done' };

/** The sandbox workers' boot module registers tsx in the thread where the entry is TypeScript. */
const BOOT = new URL('../src/drivers/worker/boot.mjs', import.meta.url);
const ENTRY = new URL('./mesh-node-thread.ts', import.meta.url);

class NodeThread {
  private readonly worker = new Worker(BOOT, { workerData: { entry: ENTRY.href } });
  private readonly pending = new Map<number, { resolve(a: ThreadAnswer): void; reject(e: Error): void }>();
  private seq = 0;

  constructor() {
    this.worker.on('message', (msg: { seq: number; answer?: ThreadAnswer; error?: string }) => {
      const p = this.pending.get(msg.seq);
      this.pending.delete(msg.seq);
      if (msg.error !== undefined) p?.reject(new Error(`mesh thread: ${msg.error}`));
      else p?.resolve(msg.answer!);
    });
    this.worker.on('error', (err) => {
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    });
  }

  ask(req: ThreadRequest): Promise<ThreadAnswer> {
    const seq = this.seq++;
    return new Promise((resolve, reject) => {
      this.pending.set(seq, { resolve, reject });
      this.worker.postMessage({ seq, req });
    });
  }

  terminate(): Promise<number> {
    return this.worker.terminate();
  }
}

/**
 * Mesh nodes in this process, spread over worker threads (node i on thread i mod n), so that a benchmark
 * of many nodes can use every core of the machine, as nodes on machines of their own would: on one event
 * loop, 50 nodes' upkeep alone took more than the one core it has.
 */
export class MeshThreads {
  private readonly threads: NodeThread[];

  constructor(count: number) {
    this.threads = Array.from({ length: count }, () => new NodeThread());
  }

  async start(index: number, root: string, join: string[]): Promise<{ id: string; addresses: string[] }> {
    const a = await this.threads[index % this.threads.length]!.ask({ op: 'start', root, index, join });
    if (a.op !== 'started') throw new Error(`mesh thread: started expected, got ${a.op}`);
    return { id: a.id, addresses: a.addresses };
  }

  /** Every node's view: node id → member id → seq of the advert held. */
  async views(): Promise<Map<string, Map<string, number>>> {
    const views = new Map<string, Map<string, number>>();
    for (const a of await Promise.all(this.threads.map((t) => t.ask({ op: 'state' })))) {
      if (a.op === 'state') for (const n of a.nodes) views.set(n.id, new Map(n.members));
    }
    return views;
  }

  /** Connections the nodes have closed since they started, each counted once (at the end that dialled it). */
  async closed(): Promise<number> {
    const answers = await Promise.all(this.threads.map((t) => t.ask({ op: 'state' })));
    return answers.reduce((sum, a) => sum + (a.op === 'state' ? a.closed : 0), 0);
  }

  /** Every node publishes a new advert, at once. */
  async publishAll(): Promise<void> {
    await Promise.all(this.threads.map((t) => t.ask({ op: 'publish' })));
  }

  /** JS heap and buffers of every thread, after a full collection in each. */
  async held(): Promise<number> {
    const answers = await Promise.all(this.threads.map((t) => t.ask({ op: 'held' })));
    return answers.reduce((sum, a) => sum + (a.op === 'held' ? a.bytes : 0), 0);
  }

  async stop(): Promise<void> {
    await Promise.all(this.threads.map((t) => t.ask({ op: 'stop' }).catch(() => undefined)));
    await Promise.all(this.threads.map((t) => t.terminate()));
  }
}
