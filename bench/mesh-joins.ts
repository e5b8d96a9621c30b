// Nodes joining a standing in-process mesh one after another, optionally beside a busy loop that takes
// one core: how long until each holds every advert and every node holds its. Not part of `npm run bench`;
// it is the case that showed connections torn down under load (docs/development.md, session 22).
//
//   node --import tsx bench/mesh-joins.ts
//   BENCH_JOINS_NODES (50)  BENCH_JOINS (4)  BENCH_JOINS_GAP_MS (5000)  BENCH_JOINS_BUSY (1: a busy loop on one core)
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { envFlag, envNumber } from './lib/env.ts';
import { ms } from './lib/format.ts';
import { until } from './mesh-converge.ts';
import { MeshThreads } from './mesh-threads.ts';

const count = envNumber('BENCH_JOINS_NODES', 50, { min: 2, integer: true });
const joins = envNumber('BENCH_JOINS', 4, { min: 1, integer: true });
const gapMs = envNumber('BENCH_JOINS_GAP_MS', 5000);
const busy = envFlag('BENCH_JOINS_BUSY', true);
const sleep = (t: number) => new Promise((r) => setTimeout(r, t));

const root = await fs.mkdtemp(path.join(os.tmpdir(), 'vmesh-bench-joins-'));
const threads = new MeshThreads(os.availableParallelism());
// A child that spins until it is killed: load that is not the mesh's, on one core.
const spinner = busy ? spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }) : undefined;
try {
  const nodes = [await threads.start(0, root, [])];
  for (let i = 1; i < count; i++) nodes.push(await threads.start(i, root, nodes[0]!.addresses));
  const formedMs = await until(threads, (v) => [...v.values()].every((m) => m.size === v.size - 1), 120_000);
  console.log(`${count} nodes${busy ? ' beside a busy loop' : ''}: every one held every advert ${ms(formedMs)} after the last was up`);
  const closedBefore = await threads.closed();
  for (let j = 0; j < joins; j++) {
    await sleep(gapMs);
    const t = performance.now();
    const joiner = await threads.start(count + j, root, nodes[Math.floor(count / 2)]!.addresses);
    const total = count + j;
    const took = await until(threads, (v) => v.get(joiner.id)?.size === total && [...v].every(([id, m]) => id === joiner.id || m.has(joiner.id)), 60_000);
    console.log(`join ${j + 1}: it held all ${total} adverts, and all held its, ${Number.isFinite(took) ? ms(performance.now() - t) : 'not within 60 s'} after it started`);
    nodes.push(joiner);
  }
  console.log(`connections closed meanwhile: ${(await threads.closed()) - closedBefore}`);
} finally {
  spinner?.kill('SIGKILL');
  await threads.stop();
  await fs.rm(root, { recursive: true, force: true });
}
process.exit(0);
