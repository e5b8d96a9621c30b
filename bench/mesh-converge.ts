import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Hosts, type Host } from '../test/hosts/harness.ts';
import { mib, ms } from './lib/format.ts';
import { readCpu, readMemory } from './lib/proc.ts';
import { MeshThreads } from './mesh-threads.ts';

export interface ProcessConvergence {
  count: number;
  /** From the moment the last node's API answered until every node held every other node's advert. */
  formedMs: number;
  /** Members seen per node when it stopped (min, median, max). */
  seen: string;
  /** How long starting every node took (each a real `vmesh up`, five at a time). */
  startMs: number;
  rssPerNodeMiB: number;
  /** CPU time per node per second of wall time, over 10 s once formed. */
  cpuMsPerNodeSecond: number;
}

/**
 * `count` real node processes, one per namespace host with its own address, default mesh timers, every
 * one joining through the first: how long after the last one is up until every node lists all the
 * others (each node's own `GET /v1/nodes`), and what a node costs in memory and idle CPU.
 */
export async function processConvergence(count: number, log: (l: string) => void): Promise<ProcessConvergence> {
  const net = await Hosts.create({ tag: 'bcv', subnet: '10.234.0', count, config: { logLevel: 'warn' } });
  try {
    const started = performance.now();
    const first = await net.start(0);
    const hosts: Host[] = [first];
    for (let i = 1; i < count; i += 5) {
      const batch = Array.from({ length: Math.min(5, count - i) }, (_, k) => net.start(i + k, [first.meshAddress]));
      hosts.push(...(await Promise.all(batch)));
    }
    const startMs = performance.now() - started;
    log(`mesh: ${count} node processes up in ${ms(startMs)}`);
    const t0 = performance.now();
    let seen: number[] = [];
    const members = async (h: Host) => ((await h.client.nodes().catch(() => ({ nodes: [] }))).nodes.length || 1) - 1;
    for (;;) {
      seen = await Promise.all(hosts.map(members));
      if (seen.every((n) => n === count - 1) || performance.now() - t0 > 60_000) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const formed = seen.every((n) => n === count - 1);
    const formedMs = formed ? performance.now() - t0 : Number.POSITIVE_INFINITY;
    const sorted = [...seen].sort((a, b) => a - b);
    const seenText = `min ${sorted[0]}, median ${sorted[Math.floor(count / 2)]}, max ${sorted.at(-1)} of ${count - 1}`;
    log(`mesh: ${count} node processes: ${formed ? `every one listed the other ${count - 1} ${ms(formedMs)} after the last was up` : `not converged after 60 s (${seenText})`}`);
    const pids = hosts.map((h) => h.process?.pid ?? 0);
    const before = pids.map((p) => readCpu(p).totalMs);
    const wall = performance.now();
    await new Promise((r) => setTimeout(r, 10_000));
    const seconds = (performance.now() - wall) / 1000;
    const cpu = pids.map((p, i) => readCpu(p).totalMs - before[i]!);
    const cpuMsPerNodeSecond = cpu.reduce((a, b) => a + b, 0) / count / seconds;
    const rssPerNodeMiB = pids.map((p) => readMemory(p).rssMiB).reduce((a, b) => a + b, 0) / count;
    log(`mesh: ${mib(rssPerNodeMiB)} RSS and ${cpuMsPerNodeSecond.toFixed(1)} ms CPU per second per node process, idle`);
    return { count, formedMs, seen: seenText, startMs, rssPerNodeMiB, cpuMsPerNodeSecond };
  } finally {
    await net.remove();
  }
}

export interface InProcessConvergence {
  count: number;
  /** Worker threads the nodes were spread over. */
  threads: number;
  /** From the first node's start until the last one's `Mesh.start` returned. */
  upMs: number;
  /** From then until every node held every other node's advert. */
  formedMs: number;
  /** Once formed (or after 60 s): every node publishes a new advert at once; until all are held by all that knew their senders (the slowest of three rounds). */
  updateMs: number;
  /** Then one more node joins: until it holds every advert and every node holds its. */
  joinMs: number;
  /** Connections closed between the mesh forming and the end of the join, each counted once. */
  lostConnections: number;
  /** JS heap and buffers the nodes hold, per node, after a full collection. */
  heapPerNodeMiB: number;
  /** CPU time the whole process spent per node per second of wall time, once formed (or after 60 s). */
  cpuMsPerNodeSecond: number;
  seen: string;
  /** (node, known node) pairs when every node re-advertised: count × (count - 1) once formed. */
  pairs: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `done` (every node's view in hand) every 20 ms until it holds or `ms` pass; the time it took, or Infinity. */
export async function until(threads: MeshThreads, done: (views: Map<string, Map<string, number>>) => boolean, ms: number): Promise<number> {
  const t = performance.now();
  for (;;) {
    if (done(await threads.views())) return performance.now() - t;
    if (performance.now() - t > ms) return Number.POSITIVE_INFINITY;
    await sleep(20);
  }
}

/**
 * `count` nodes in this process, each its own libp2p host on loopback with vmesh's default timers, spread
 * over `threadCount` worker threads, every one joining through the first: how long after the last one is
 * up until every node holds every advert (a cold start); then, in the mesh so formed, how long every
 * node's new advert takes to reach all, and one more node to join; and what a node costs.
 */
export async function inProcessConvergence(count: number, threadCount: number, log: (l: string) => void): Promise<InProcessConvergence> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'vmesh-bench-mesh-'));
  const threads = new MeshThreads(threadCount);
  try {
    const heldBefore = await threads.held();
    const start = performance.now();
    const nodes = [await threads.start(0, root, [])];
    for (let i = 1; i < count; i++) nodes.push(await threads.start(i, root, nodes[0]!.addresses));
    const upMs = performance.now() - start;
    const full = (views: Map<string, Map<string, number>>) => [...views.values()].every((v) => v.size === views.size - 1);
    const formedMs = await until(threads, full, 60_000);
    const sizes = [...(await threads.views()).values()].map((v) => v.size).sort((x, y) => x - y);
    const seen = `min ${sizes[0]}, median ${sizes[Math.floor(count / 2)]}, max ${sizes.at(-1)} of ${count - 1}`;
    log(`mesh: ${count} nodes on ${threadCount} thread(s) up in ${ms(upMs)}: ${Number.isFinite(formedMs) ? `every one held ${count - 1} adverts ${ms(formedMs)} after the last was up` : `not converged 60 s after the last was up (members seen per node: ${seen})`}`);
    // A mesh that stands closes no connection: one that does (a ping timed out under load, say) pays for a
    // new one at both ends, noise handshake and all, when it can least afford it.
    const closedBefore = await threads.closed();
    // Every node's news at once (each publishes an advert with a new seq), three times 3 s apart: until
    // every node holds every new advert of the nodes it knows. The mesh's own convergence, with no
    // connection left to make; the slowest of the three counts.
    let updateMs = 0;
    let pairs = 0;
    for (let round = 0; round < 3; round++) {
      await sleep(3000);
      const before = await threads.views();
      pairs = [...before.values()].reduce((n, v) => n + v.size, 0);
      await threads.publishAll();
      const newer = (views: Map<string, Map<string, number>>) =>
        [...before].every(([node, members]) => [...members].every(([member, seq]) => (views.get(node)?.get(member) ?? 0) > seq));
      updateMs = Math.max(updateMs, await until(threads, newer, 30_000));
    }
    log(`mesh: ${count} new adverts at once reached every node that knew their senders (${pairs} of ${count * (count - 1)} pairs) within ${ms(updateMs)}, the slowest of 3 rounds`);
    // One more node joins, through a node in the middle: until it holds every advert and every node holds its.
    const t = performance.now();
    const joining = await threads.start(count, root, nodes[Math.floor(count / 2)]!.addresses);
    const joined = (views: Map<string, Map<string, number>>) => views.get(joining.id)?.size === count && [...views].every(([id, v]) => id === joining.id || v.has(joining.id));
    const joinMs = Number.isFinite(await until(threads, joined, 30_000)) ? performance.now() - t : Number.POSITIVE_INFINITY;
    log(`mesh: a node joining ${count}: it held every advert, and every node its, ${ms(joinMs)} after it started`);
    const lostConnections = (await threads.closed()) - closedBefore;
    log(`mesh: ${lostConnections} connections closed between the mesh forming and the join`);
    // What keeping the mesh costs once it stands: adverts every 10 s, pings every 5 s, libp2p's own upkeep.
    const cpuBefore = process.cpuUsage();
    const wallBefore = performance.now();
    await sleep(10_000);
    const cpu = process.cpuUsage(cpuBefore);
    const cpuMsPerNodeSecond = (cpu.user + cpu.system) / 1000 / (count + 1) / ((performance.now() - wallBefore) / 1000);
    const heapPerNodeMiB = ((await threads.held()) - heldBefore) / (count + 1) / 2 ** 20;
    log(`mesh: ${mib(heapPerNodeMiB)} of JS heap and buffers and ${cpuMsPerNodeSecond.toFixed(1)} ms CPU per second per node`);
    return { count, threads: threadCount, upMs, formedMs, updateMs, joinMs, lostConnections, heapPerNodeMiB, cpuMsPerNodeSecond, seen, pairs };
  } finally {
    await threads.stop();
    await fs.rm(root, { recursive: true, force: true });
  }
}
