import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { BlobStore } from '../src/blobs/blob-store.ts';
import { loadOrCreateIdentity } from '../src/mesh/identity.ts';
import { Mesh, type NodeDescription } from '../src/mesh/mesh.ts';
import { loadConfig } from '../src/node/config.ts';
import { VMESH_VERSION } from '../src/version.ts';
import { Hosts, type Host } from '../test/hosts/harness.ts';
import { mib, ms } from './lib/format.ts';
import { collectGarbage, readCpu, readMemory } from './lib/proc.ts';

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
  /** From the first node's start until the last one's `Mesh.start` returned. */
  upMs: number;
  /** From then until every node held every other node's advert. */
  formedMs: number;
  /** Once formed (or after 60 s): every node publishes a new advert at once; until all are held by all that knew their senders (the slowest of three rounds). */
  updateMs: number;
  /** Then one more node joins: until it holds every advert and every node holds its. */
  joinMs: number;
  /** JS heap and buffers the nodes hold, per node, after a full collection. */
  heapPerNodeMiB: number;
  /** CPU time the whole process spent per node per second of wall time, once formed (or after 60 s). */
  cpuMsPerNodeSecond: number;
  seen: string;
  /** (node, known node) pairs when every node re-advertised: count × (count - 1) once formed. */
  pairs: number;
}

/** `count` nodes in this process, each its own libp2p host on loopback, with vmesh's default timers. */
export async function inProcessConvergence(count: number, log: (l: string) => void): Promise<InProcessConvergence> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'vmesh-bench-mesh-'));
  const meshes: Mesh[] = [];
  const logger = pino({ level: 'silent' });
  const describe = (): NodeDescription => ({
    version: VMESH_VERSION,
    drivers: [{ name: 'wasm', kinds: ['function'], isolation: 'language', available: true }],
    capacity: { vcpus: 2, memoryMiB: 4096, diskMiB: 10_000, egressMbps: 1000, ingressMbps: 1000 },
    free: { vcpus: 2, memoryMiB: 4096, diskMiB: 10_000, egressMbps: 1000, ingressMbps: 1000 },
    runs: { queued: 0, active: 0 },
  });
  try {
    await collectGarbage();
    // What the nodes hold: JS heap and buffers after a full collection. The process's RSS moved by more
    // than that with what earlier benchmarks had freed (allocator slack), and read negative per node.
    const held = () => {
      const m = process.memoryUsage();
      return m.heapUsed + m.external;
    };
    const heldBefore = held();
    const start = performance.now();
    for (let i = 0; i < count; i++) {
      const home = path.join(root, `n${i}`);
      await fs.mkdir(home);
      // Default timers; all peers share 127.0.0.1, so libp2p's 5 new connections per second per IP would throttle the start.
      const config = loadConfig(home, { mesh: { listen: ['/ip4/127.0.0.1/tcp/0'], join: i === 0 ? [] : meshes[0]!.addresses(), inboundConnectionsPerSecond: 1000 } }).mesh;
      meshes.push(await Mesh.start({ identity: await loadOrCreateIdentity(home), config, logger, describe, blobs: new BlobStore(path.join(home, 'blobs')), maxBlobBytes: 2 ** 30 }));
    }
    const upMs = performance.now() - start;
    const full = () => meshes.every((m) => m.membership.size === count - 1);
    while (!full() && performance.now() - start < upMs + 60_000) await new Promise((r) => setTimeout(r, 20));
    const formedMs = full() ? performance.now() - start : Number.POSITIVE_INFINITY;
    const sizes = meshes.map((m) => m.membership.size).sort((x, y) => x - y);
    const seen = `min ${sizes[0]}, median ${sizes[Math.floor(count / 2)]}, max ${sizes.at(-1)} of ${count - 1}`;
    log(`mesh: ${count} nodes up in ${ms(upMs)}: ${Number.isFinite(formedMs) ? `every one held ${count - 1} adverts ${ms(formedMs - upMs)} after the last was up` : `not converged 60 s after the last was up (members seen per node: ${seen})`}`);
    // Every node's news at once (each publishes an advert with a new seq), three times 3 s apart: until
    // every node holds every new advert of the nodes it knows. The mesh's own convergence, with no
    // connection left to make; the slowest of the three counts.
    let updateMs = 0;
    let pairs = 0;
    for (let round = 0; round < 3; round++) {
      await new Promise((r) => setTimeout(r, 3000));
      const known = meshes.flatMap((m) => meshes.filter((o) => o !== m && m.membership.get(o.id) !== undefined).map((o) => ({ m, o, seq: m.membership.get(o.id)!.advert.seq })));
      pairs = known.length;
      const t = performance.now();
      await Promise.all(meshes.map((m) => m.publish()));
      const allHeard = () => known.every(({ m, o, seq }) => (m.membership.get(o.id)?.advert.seq ?? 0) > seq);
      while (!allHeard() && performance.now() - t < 30_000) await new Promise((r) => setTimeout(r, 5));
      updateMs = Math.max(updateMs, allHeard() ? performance.now() - t : Number.POSITIVE_INFINITY);
    }
    log(`mesh: ${count} new adverts at once reached every node that knew their senders (${pairs} of ${count * (count - 1)} pairs) within ${ms(updateMs)}, the slowest of 3 rounds`);
    // One more node joins, through a node in the middle: until it holds every advert and every node holds its.
    const home = path.join(root, 'joining');
    await fs.mkdir(home);
    const t = performance.now();
    const config = loadConfig(home, { mesh: { listen: ['/ip4/127.0.0.1/tcp/0'], join: meshes[Math.floor(count / 2)]!.addresses(), inboundConnectionsPerSecond: 1000 } }).mesh;
    const joining = await Mesh.start({ identity: await loadOrCreateIdentity(home), config, logger, describe, blobs: new BlobStore(path.join(home, 'blobs')), maxBlobBytes: 2 ** 30 });
    meshes.push(joining);
    const joined = () => joining.membership.size === count && meshes.every((m) => m === joining || m.membership.get(joining.id) !== undefined);
    while (!joined() && performance.now() - t < 30_000) await new Promise((r) => setTimeout(r, 5));
    const joinMs = joined() ? performance.now() - t : Number.POSITIVE_INFINITY;
    log(`mesh: a node joining ${count}: it held every advert, and every node its, ${ms(joinMs)} after it started`);
    // What keeping the mesh costs once it stands: adverts every 10 s, pings every 5 s, libp2p's own upkeep.
    const cpuBefore = process.cpuUsage();
    const wallBefore = performance.now();
    await new Promise((r) => setTimeout(r, 10_000));
    const cpu = process.cpuUsage(cpuBefore);
    const cpuMsPerNodeSecond = (cpu.user + cpu.system) / 1000 / meshes.length / ((performance.now() - wallBefore) / 1000);
    await collectGarbage();
    const heapPerNodeMiB = (held() - heldBefore) / meshes.length / 2 ** 20;
    log(`mesh: ${mib(heapPerNodeMiB)} of JS heap and buffers and ${cpuMsPerNodeSecond.toFixed(1)} ms CPU per second per node`);
    return { count, upMs, formedMs: formedMs - upMs, updateMs, joinMs, heapPerNodeMiB, cpuMsPerNodeSecond, seen, pairs };
  } finally {
    for (const m of meshes) await m.stop();
    await fs.rm(root, { recursive: true, force: true });
  }
}
