import { Hosts, type Host } from '../test/hosts/harness.ts';
import { mib, ms } from './lib/format.ts';
import { readCpu, readMemory } from './lib/proc.ts';

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
