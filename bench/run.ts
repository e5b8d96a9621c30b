// `npm run bench`: runs the benchmarks, prints their results and records them in docs/benchmarks.md.
//
// Environment:
//   BENCH_ONLY              comma-separated benchmark names to run (default: all)
//   BENCH_DOCS              0 to leave docs/benchmarks.md alone (default: 1)
//   BENCH_DURATION_S        length of each measured phase (default: 5)
//   BENCH_WARMUP_S          unmeasured run before each phase (default: 1)
//   BENCH_CONCURRENCY       loops / connections of the throughput phases (default: 32)
//   BENCH_WORKERS           worker threads of the wasm driver, in-process and in the node (default: 2)
//   BENCH_IDLE_S            quiet time before each memory reading of the node (default: 2)
//   BENCH_SETTLE_S          after the load, how long to wait at most for the node's RSS to settle (default: 60)
//   BENCH_CONTAINER_RUNS    measured container runs of each way (default: 40)
//   BENCH_CONTAINER_WARMUP  unmeasured container runs of each way first (default: 5)
//   BENCH_MICROVM_RUNS      measured microVM runs of each way (default: 5)
//   BENCH_MESH_RUNS         measured remote and local runs of the mesh benchmark (default: 200)
//   BENCH_MESH_NODES        in-process nodes whose adverts converge (default: 50)
//   BENCH_PLACEMENT_NODES   synthetic nodes placement chooses among (default: 10000)
//   BENCH_PLACEMENT_DECISIONS / BENCH_PLACEMENT_REFERENCE  decisions timed on the fast path / by brute force (20000 / 300)
//   BENCH_NODE_ARGS         Node.js flags for node processes the benchmarks start, e.g. `--cpu-prof --cpu-prof-dir=DIR`
import { fileURLToPath } from 'node:url';
import type { Benchmark } from './lib/benchmark.ts';
import { upsertSection } from './lib/docs.ts';
import { envFlag } from './lib/env.ts';
import { describeMachine, type Machine } from './lib/machine.ts';
import { quietWasiWarning } from './lib/quiet-wasi.ts';
import { containersBenchmark } from './containers.ts';
import { functionsBenchmark } from './functions.ts';
import { meshBenchmark } from './mesh.ts';
import { microvmsBenchmark } from './microvms.ts';
import { placementBenchmark } from './placement.ts';

const BENCHMARKS: readonly Benchmark[] = [functionsBenchmark, containersBenchmark, microvmsBenchmark, meshBenchmark, placementBenchmark];
const DOCS = fileURLToPath(new URL('../docs/benchmarks.md', import.meta.url));
const COMMAND = 'npm run bench';

quietWasiWarning();
const machine = describeMachine();
const log = (line: string) => process.stderr.write(`${line}\n`);
log(`${COMMAND} on ${machine.cpu} x ${machine.cores} cores, node ${machine.node}`);

for (const benchmark of selected()) {
  const unavailable = await benchmark.unavailable?.();
  if (unavailable !== undefined) {
    log(`${benchmark.name}: skipped, ${unavailable}`);
    continue;
  }
  const report = await benchmark.run(log);
  process.stdout.write(`\n== ${report.heading} ==\n\n${machineText(machine)}\n\n${report.text}\n`);
  if (envFlag('BENCH_DOCS', true)) {
    upsertSection(DOCS, report.heading, `${machineMarkdown(machine)}\n\n${report.markdown}`);
    log(`wrote "${report.heading}" to docs/benchmarks.md`);
  }
}

function selected(): readonly Benchmark[] {
  const only = process.env.BENCH_ONLY?.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (only === undefined || only.length === 0) return BENCHMARKS;
  const unknown = only.filter((name) => !BENCHMARKS.some((b) => b.name === name));
  if (unknown.length > 0) throw new Error(`BENCH_ONLY: no benchmark named ${unknown.join(', ')} (there are: ${BENCHMARKS.map((b) => b.name).join(', ')})`);
  return BENCHMARKS.filter((b) => only.includes(b.name));
}

function machineText(m: Machine): string {
  return `${m.date}  \`${COMMAND}\`  node ${m.node}  ${m.cpu} x ${m.cores} cores  ${m.os}`;
}

function machineMarkdown(m: Machine): string {
  return [`- Date: ${m.date}`, `- Command: \`${COMMAND}\``, `- Node: ${m.node}`, `- CPU: ${m.cpu}, ${m.cores} cores`, `- OS: ${m.os}`].join('\n');
}
